"""The main job end to end: ``make train`` on tiny settings trains, evaluates and writes the
report; the report's files exist, its figures are numbers in range and agree with an
independent recomputation, and its page opens offline in headless Chromium without console
errors. Also the report's pieces: curves, the headline lines, the self-contained page."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from persp3d.train.report import Headline, headline_lines, plot_curves, read_curves

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = [
    "--max-steps 8",
    "--no-progress",
    "--set model.image_size=32",
    "--set model.resolution=16",
    "--set model.width=8",
    "--set model.latent_dim=32",
    "--set model.decoder_width=16",
    "--set train.batch_size=4",
    "--set train.views_per_step=3",
    "--set train.projection_size=16",
    "--set train.depth_samples=16",
    "--set train.val_objects=4",
    "--set train.eval_every=4",
    "--set train.checkpoint_every=4",
    "--set train.threads=1",
    "--set data.voxel_resolution=16",
]
NUMBER = r"([0-9]+\.[0-9]+)"


@pytest.fixture(scope="module")
def main_job(tmp_path_factory) -> tuple[Path, str, Path]:
    """``make train`` with a tiny procedural default (3 categories x 10 objects, 8 views of
    32 x 32, 16^3 voxels) in a temporary ``PERSP3D_DATA_DIR``: ``(run, stdout, data)``."""
    from persp3d.datasets.procedural import ProceduralConfig, generate_procedural

    tmp = tmp_path_factory.mktemp("main_job")
    data = tmp / "data" / "procedural"  # where the default run looks: $PERSP3D_DATA_DIR/procedural
    config = ProceduralConfig(
        categories=("chair", "table", "mug"),
        per_category=10,
        n_views=8,
        image_size=32,
        voxel_resolutions=(16,),
        store_depth=False,
    )
    generate_procedural(data, config, workers=0, progress=False)
    run = tmp / "run"
    env = {**os.environ, "PERSP3D_DATA_DIR": str(tmp / "data"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["make", "-s", "-o", "setup", "-C", str(REPO), "train", f"RUN={run}",
         "TRAIN_ARGS=" + " ".join(TINY_TRAIN)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + "\n" + result.stderr[-3000:]
    return run, result.stdout, data


def test_main_job_ends_with_the_headline_figures_and_the_report_path(main_job):
    run, stdout, _ = main_job
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines[-1] == f"report: {run / 'report.html'}"
    tail = "\n".join(lines[-6:])
    for label in ("test 3D IoU", "silhouette IoU", "visual-hull bound"):
        match = re.search(rf"^{label}\s+{NUMBER}", tail, re.MULTILINE)
        assert match, f"no {label!r} line in\n{tail}"
        assert 0.0 <= float(match.group(1)) <= 1.0
    # every stage said what it does and how long it takes
    stages = re.findall(r"^\[report (\d)/(\d)\] .+ \(about [0-9.]+ (s|min)\)$", stdout, re.M)
    assert [int(k) for k, _, _ in stages] == list(range(1, int(stages[0][1]) + 1))
    assert stdout.startswith("make train: ")


def test_report_files_exist_and_links_resolve(main_job):
    run, _, _ = main_job
    files = run / "report_files"
    for name in ("report.html", "report.md", "report.json", "command.txt"):
        assert (run / name).is_file(), name
    for name in ("curves.png", "threshold_sweep.png", "sheet_best.png", "snapshot_worst.png"):
        assert (files / name).stat().st_size > 1000, name
    assert len(list(files.glob("view_*.html"))) == 3
    assert len(list(files.glob("*_prediction.npz"))) == 3
    assert list(files.glob("*_ground_truth.ply"))
    assert (run / "command.txt").read_text().startswith("persp3d train --out ")
    md = (run / "report.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", md)
    assert len(targets) >= 10
    for target in targets:
        assert (run / target).is_file(), target


def test_report_figures_are_in_range_and_match_an_independent_recount(main_job):
    run, _, data = main_job
    report = json.loads((run / "report.json").read_text())
    head = report["headline"]
    assert head["n"] == 3 and head["step"] == 8
    for key in ("iou_3d", "sil_iou", "hull_iou_3d"):
        assert 0.0 <= head[key] <= 1.0, key
    assert math.isfinite(head["chamfer"]) and head["chamfer"] >= 0
    assert set(report["per_category"]) <= {"chair", "table", "mug"}
    assert 0.05 <= head["threshold"] <= 0.98
    # the same numbers as the evaluation file written beside it
    evaluation = json.loads((run / "eval_test.json").read_text())
    assert evaluation["overall"]["iou_3d"] == pytest.approx(head["iou_3d"])

    # the hull bound, recounted here: carve the voxel centres by every view (naive loop)
    from persp3d.datasets.procedural import ProceduralShapes

    test = ProceduralShapes(data, "test", voxel_resolution=16)
    ious = []
    for i in range(len(test)):
        s = test[i]
        cams, sil = s["cameras"], s["silhouettes"][:, 0] > 0.5  # (V,), (V, H, W)
        centres = __import__("persp3d").VolumeBox().voxel_centers(16).reshape(-1, 3)
        keep = torch.ones(len(centres), dtype=torch.bool)
        for v in range(len(cams)):
            uv, depth = cams[v].project(centres.double())
            col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            ok = (
                (depth > 0)
                & (col >= 0)
                & (col < sil.shape[-1])
                & (row >= 0)
                & (row < sil.shape[-2])
            )
            keep &= ok & sil[v][row.clamp(0, sil.shape[-2] - 1), col.clamp(0, sil.shape[-1] - 1)]
        truth = s["voxels"][0].reshape(-1) > 0.5
        ious.append(float((keep & truth).sum()) / max(1, int((keep | truth).sum())))
    assert head["hull_iou_3d"] == pytest.approx(np.mean(ious), abs=1e-6)


def test_report_page_is_self_contained(main_job):
    run, _, _ = main_job
    page = (run / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    for href in re.findall(r'href="([^"]*)"', page):
        assert not re.match(r"[a-z]+:", href), href  # no http:, file: ...: anchors or beside
        assert href.startswith("#") or (run / href).is_file(), href


# -- the page in headless Chromium ------------------------------------------------------------
OFFLINE = [
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip
KEEP = os.environ.get("PERSP3D_KEEP_SCREENSHOTS")  # a folder: keep the screenshots there


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium found (Debian: apt-get install chromium; scripts/setup.sh does it)")


def _open(page: Path, size=(1200, 2400)) -> tuple[np.ndarray, list[str]]:
    """A screenshot ``(H, W, 3)`` of ``page`` and the console lines Chromium logged for it."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        result = subprocess.run(
            [_chromium(), *OFFLINE, f"--user-data-dir={profile}/p", f"--screenshot={shot}",
             f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert shot.is_file(), result.stderr[-2000:]
        picture = np.asarray(Image.open(shot).convert("RGB"))
    console = [
        line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line
    ]
    return picture, console


def test_console_capture_sees_a_failing_page(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<p>x</p><script>throw new Error('kaput')</script>")
    _, console = _open(page, (200, 100))
    assert any("Uncaught Error: kaput" in line for line in console)


def test_report_opens_in_headless_chromium_without_console_messages(main_job):
    run, _, _ = main_job
    picture, console = _open(run / "report.html")
    if KEEP:
        from PIL import Image

        Path(KEEP).mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(Path(KEEP) / "report.png")
    assert console == []
    assert picture.shape[:2] == (2400, 1200)
    gray = picture.mean(axis=2)
    assert gray.std() > 20  # text, tables and pictures, not a blank page
    dark_rows = (gray < 128).any(axis=1)
    assert dark_rows[:600].mean() > 0.2 and dark_rows[1200:].mean() > 0.2  # filled top to bottom


# -- pieces -----------------------------------------------------------------------------------
def test_read_curves_and_plot_without_validation(tmp_path):
    (tmp_path / "steps.csv").write_text("step,loss,sil_iou,seconds\n1,1.0,0.0,0.5\n2,0.5,nan,1.0\n")
    steps, val = read_curves(tmp_path)
    np.testing.assert_array_equal(steps["step"], [1.0, 2.0])
    assert math.isnan(steps["sil_iou"][1]) and val == []
    path = plot_curves(steps, val, tmp_path / "c.png", hull_iou_3d=0.7)
    assert path.stat().st_size > 1000
    assert read_curves(tmp_path / "missing") == ({}, [])


def test_headline_lines_end_with_the_report_path():
    head = Headline(0.5, 0.8, 0.001, 0.7, 0.4, 12, 100, baseline_iou_3d=0.6)
    head.paths = {"html": "runs/x/report.html"}
    lines = headline_lines(head)
    assert lines[-1] == "report: runs/x/report.html"
    assert lines[0].startswith("test 3D IoU        0.500")
    assert any(line.startswith("voxel baseline     0.600") for line in lines)


def test_quick_settings_yield_to_the_flags_given_with_them(tmp_path, monkeypatch):
    from persp3d.train.cli import build_parser
    from persp3d.train.commands import command_overrides
    from persp3d.train.config import load_config

    monkeypatch.setenv("PERSP3D_DATA_DIR", str(tmp_path))

    def config(*argv):
        return load_config(None, command_overrides(build_parser().parse_args(["train", *argv])))

    quick = config("--quick")
    assert quick.train.out == "runs/quick" and quick.train.max_minutes == 1.5
    assert quick.data.root == str(tmp_path / "procedural-quick") and quick.data.per_category == 20
    mine = config("--quick", "--out", "runs/mine", "--max-minutes", "3")
    assert mine.train.out == "runs/mine" and mine.train.max_minutes == 3.0
    assert config().train.out != "runs/quick"


def test_snapshot_falls_back_to_matplotlib_and_says_so(tmp_path, monkeypatch):
    import persp3d.viewers as viewers
    from persp3d.train.report import snapshot_3d
    from persp3d.volume import VolumeBox

    centres = VolumeBox().voxel_centers(12).numpy()
    ball = (np.linalg.norm(centres, axis=-1) < 0.3).astype(np.float32)

    def no_egl(*args, **kwargs):
        raise RuntimeError("Open3D could not create an off-screen OpenGL context (EGL)")

    monkeypatch.setattr(viewers, "snapshot", no_egl)
    how = snapshot_3d(ball, ball, VolumeBox(), 0.5, tmp_path / "s.png")
    assert how.startswith("matplotlib voxels") and "EGL" in how
    from PIL import Image

    picture = np.asarray(Image.open(tmp_path / "s.png").convert("RGB"))
    assert (picture.mean(axis=2) < 200).mean() > 0.01  # the voxels were drawn
