"""Faults injected on purpose: SIGKILL at random moments during training and during dataset
generation, truncated and bit-flipped checkpoints and dataset items, a full disk while saving,
and hostile files (a pickle that would run code, a YAML tag that would). The target: nothing
is lost and nothing hostile runs.

Kill moments are drawn from a seeded generator (``PERSP3D_FAULT_SEED`` changes it), so a
failure can be replayed; the moments used are in the assertion messages.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from _robust_helpers import TINY_TRAIN, manifest_of

from persp3d.datasets.cache import CorruptCacheError
from persp3d.train.checkpoint import (
    CheckpointWarning,
    load_checkpoint,
    load_checkpoint_with_fallback,
    save_checkpoint,
)

SEED = int(os.environ.get("PERSP3D_FAULT_SEED", "18"))


def _popen(argv, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "persp3d.train.cli", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )


def _steps(run: Path) -> list[list[str]]:
    path = run / "steps.csv"
    if not path.exists():
        return []
    return [r.split(",")[:2] for r in path.read_text().splitlines()[1:] if r]


# -- SIGKILL during training ----------------------------------------------------------------
@pytest.mark.slow
def test_training_killed_at_random_moments_resumes_to_bit_identical_weights(
    tiny_data, full_run, tmp_path
):
    steps, full = 16, full_run

    killed = tmp_path / "killed"
    argv = ["train", "--data", tiny_data, "--out", killed, "--max-steps", steps, "--no-report"]
    argv += [a for o in TINY_TRAIN for a in ("--set", o)]
    rng = random.Random(SEED)
    # Three kills: two while training (after a random number of further steps plus a random
    # fraction of a step: inside a step, a validation or a checkpoint save), one during the
    # resumed process's start-up; then the last launch runs to the end.
    plan = ["training", "startup", "training"]
    kills, moments = 0, []
    for _attempt in range(8):
        resume = (killed / "last.pt").exists()
        proc = _popen([*argv, *(["--resume"] if resume else [])], tmp_path)
        if kills < len(plan):
            t0 = time.monotonic()
            if plan[kills] == "startup" and resume:
                moment = f"start-up +{rng.uniform(0.0, 1.0):.2f}s"
                time.sleep(float(moment.split("+")[1][:-1]))
            else:
                start = len(_steps(killed)) if resume else 0
                target = min(steps - 2, max(start, 2) + rng.randint(1, 3))
                while proc.poll() is None and time.monotonic() - t0 < 240:
                    if (killed / "last.pt").exists() and len(_steps(killed)) >= target:
                        break
                    time.sleep(0.005)
                pause = rng.uniform(0.0, 0.05)
                time.sleep(pause)
                moment = f"row {len(_steps(killed))} (target {target}) +{pause:.3f}s"
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                moments.append(moment)
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(f"training failed (kills at {moments}): {err.decode()[-2000:]}")
    assert proc.returncode == 0, f"never finished; kills at {moments}"
    assert kills >= 2, f"too few kills landed: {moments}"
    print(f"training killed {kills} times: {moments}")  # shown with pytest -s
    assert _steps(killed) == _steps(full), f"kills at {moments}"  # every step's loss
    a, b = load_checkpoint(full / "last.pt")["model"], load_checkpoint(killed / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kills at {moments}"


def test_disk_full_during_training_loses_nothing_but_the_unsaved_steps(
    cli, tiny_data, full_run, tmp_path, monkeypatch
):
    """The second checkpoint save hits ENOSPC: ``persp3d train`` stops with one error line,
    the first checkpoint is whole, and ``--resume`` finishes with the weights of an
    uninterrupted run."""
    import persp3d.train.checkpoint as ck

    monkeypatch.chdir(tmp_path)
    real_open, saves = open, []

    def full_after_one_save(path, mode="r", *args, **kwargs):
        if "w" in mode:
            saves.append(path)
            if len(saves) > 1:
                f = real_open(path, mode, *args, **kwargs)
                f.write(b"partial")
                f.close()
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    run = tmp_path / "run"
    argv = ["train", "--data", tiny_data, "--out", run, "--max-steps", "16", "--no-report"]
    argv += [a for o in TINY_TRAIN for a in ("--set", o)]
    monkeypatch.setattr(ck, "open", full_after_one_save, raising=False)
    status, err = cli(*argv)
    monkeypatch.undo()
    assert status == 2 and "No space left on device" in err.strip().splitlines()[-1], err
    assert "Traceback" not in err
    saved = load_checkpoint(run / "last.pt") if (run / "last.pt").exists() else None
    best = load_checkpoint(run / "best.pt") if (run / "best.pt").exists() else None
    assert saved is not None or best is not None  # the first save is whole
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no partial file left
    monkeypatch.chdir(tmp_path)
    status, err = cli(*argv, "--resume")
    assert status == 0, err
    a, b = load_checkpoint(full_run / "last.pt")["model"], load_checkpoint(run / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _steps(run) == _steps(full_run)


# -- SIGKILL during dataset generation -------------------------------------------------------
@pytest.mark.slow
def test_data_generation_killed_midway_resumes_to_identical_manifest_and_items(cli, tmp_path):
    argv = ["data", "make", "procedural", "--categories", "mug", "table", "--per-category", "8"]
    argv += ["--views", "3", "--image-size", "16", "--voxels", "8", "--no-depth"]
    argv += ["--workers", "0", "--no-progress"]
    reference = tmp_path / "reference"
    status, err = cli(*argv, "--out", reference)
    assert status == 0, err
    total = len(manifest_of(reference)["items"])

    def written() -> int:
        return len(list((out / "items").rglob("*.npz"))) if (out / "items").exists() else 0

    out = tmp_path / "killed"
    rng = random.Random(SEED + 1)
    kills, moments = 0, []
    for _ in range(6):
        start = written()
        proc = _popen([*argv, "--out", out], tmp_path)
        if kills < 2:
            # a random number of items into this run (each item is written in ~50 ms)
            target = min(total - 1, start + rng.randint(1, 4))
            t0 = time.monotonic()
            while proc.poll() is None and time.monotonic() - t0 < 120 and written() < target:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.03))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                moments.append(written())
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert proc.returncode == 0 and kills >= 1, moments
    print(f"data generation killed {kills} times, at {moments} of {total} items written")
    assert manifest_of(out) == manifest_of(reference), f"kills at {moments} items"
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    umask = os.umask(0)
    os.umask(umask)
    for path in (out / "manifest.json", *sorted((out / "items").rglob("*.npz"))[:3]):
        mode = path.stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, path  # the umask's permissions, not mkstemp's 0600


# -- damaged checkpoints --------------------------------------------------------------------
def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_truncation_and_bit_flip_of_a_checkpoint_is_refused(run_copy):
    original = (run_copy / "last.pt").read_bytes()
    n = len(original)
    rng = random.Random(SEED + 2)
    flips = sorted({0, 30, 70, n // 3, n // 2, n - 1, *(rng.randrange(n) for _ in range(12))})
    cuts = sorted({0, 1, 50, 98, n // 2, n - 1, *(rng.randrange(n) for _ in range(6))})
    faults = 0
    for offset in flips:
        (run_copy / "last.pt").write_bytes(original)
        _flip(run_copy / "last.pt", offset)
        with pytest.raises(ValueError, match="last.pt"):
            load_checkpoint(run_copy / "last.pt")
        faults += 1
    for cut in cuts:
        (run_copy / "last.pt").write_bytes(original[:cut])
        with pytest.raises(ValueError, match="last.pt"):
            load_checkpoint(run_copy / "last.pt")
        faults += 1
    assert faults >= 20


def test_a_corrupt_checkpoint_falls_back_to_the_other_with_a_warning(run_copy):
    best_step = load_checkpoint(run_copy / "best.pt")["step"]
    last_step = load_checkpoint(run_copy / "last.pt")["step"]
    _flip(run_copy / "last.pt", 5000)
    with pytest.warns(CheckpointWarning, match="using best.pt instead.*last.pt"):
        state, path = load_checkpoint_with_fallback(run_copy)
    assert path.name == "best.pt" and state["step"] == best_step
    (run_copy / "best.pt").write_bytes((run_copy / "best.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="no readable checkpoint.*last.pt.*best.pt"):
        load_checkpoint_with_fallback(run_copy)
    # evaluation prefers best.pt and falls back to last.pt the other way round
    save_checkpoint(run_copy / "last.pt", {"step": last_step})
    with pytest.warns(CheckpointWarning, match="using last.pt instead"):
        state, path = load_checkpoint_with_fallback(run_copy, prefer=("best.pt", "last.pt"))
    assert path.name == "last.pt"
    (run_copy / "last.pt").unlink()
    (run_copy / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint_with_fallback(run_copy)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import persp3d.train.checkpoint as ck

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(1000)})
    before = path.read_bytes()
    real_open = open

    class FullDisk:
        """A file whose writes fail with ENOSPC after ``room`` bytes."""

        def __init__(self, f, room):
            self.f, self.room = f, room

        def write(self, data):
            if len(data) > self.room:
                self.f.write(bytes(data[: self.room]))
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    for room in (0, 10, 100, 3000):
        monkeypatch.setattr(
            ck, "open", lambda p, m="r", room=room: FullDisk(real_open(p, m), room), raising=False
        )
        with pytest.raises(OSError, match="No space left"):
            save_checkpoint(path, {"step": 2, "w": torch.zeros(1000)})
        monkeypatch.undo()
        assert path.read_bytes() == before  # the previous checkpoint survives, whole
        assert load_checkpoint(path)["step"] == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_disk_full_while_writing_a_dataset_item_keeps_the_previous_one(tmp_path, monkeypatch):
    from persp3d.datasets import cache

    path = tmp_path / "items" / "a.npz"
    sha, _ = cache.write_item(path, {"x": torch.arange(10).numpy()})
    before = path.read_bytes()

    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *a, **k):
        f = real_fdopen(fd, mode, *a, **k)

        class Full:
            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return Full()

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match="No space left"):
        cache.write_item(path, {"x": torch.zeros(10).numpy()})
    monkeypatch.undo()
    assert path.read_bytes() == before and cache.file_sha256(path) == sha
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]


# -- damaged dataset items ------------------------------------------------------------------
def test_truncated_bit_flipped_and_tampered_items_are_refused_naming_the_file(data_copy):
    from persp3d.datasets.cache import npz_bytes, read_item, write_manifest
    from persp3d.datasets.multiview import MultiViewFolder

    manifest = manifest_of(data_copy)
    items = [it for it in manifest["items"] if it["split"] == "train"]
    faults = 0
    # truncation and bit flips: the checksum catches them
    for item, damage in zip(items, ("truncate", "flip", "flip_end", "empty")):
        path = data_copy / item["file"]
        raw = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(raw[: len(raw) // 2])
        elif damage == "flip":
            _flip(path, len(raw) // 2)
        elif damage == "flip_end":
            _flip(path, len(raw) - 3)
        else:
            path.write_bytes(b"")
        with pytest.raises(CorruptCacheError, match=item["file"].split("/")[-1]):
            read_item(path, item["sha256"])
        faults += 1
    ds = MultiViewFolder(data_copy, "train")
    with pytest.raises(CorruptCacheError, match="checksum mismatch|cannot read"):
        ds[0]
    # tampered on purpose, with the manifest's checksum updated to match: the arrays are checked
    victim = [it for it in manifest["items"] if it["split"] == "val"]
    for item, change in zip(victim, ("nan_cameras", "fewer_silhouettes")):
        path = data_copy / item["file"]
        arrays = read_item(path)
        if change == "nan_cameras":
            arrays["t"] = arrays["t"].copy()
            arrays["t"][0, 1] = float("nan")
        else:
            arrays["silhouettes"] = arrays["silhouettes"][:-1]
        data = npz_bytes(arrays)
        path.write_bytes(data)
        item["sha256"], item["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
        faults += 1
    write_manifest(data_copy, manifest)
    val = MultiViewFolder(data_copy, "val")
    messages = []
    for i in range(len(val)):
        with pytest.raises(CorruptCacheError) as info:
            val[i]
        messages.append(str(info.value))
    assert any("camera t holds NaN" in m for m in messages), messages
    assert any("disagree on the number of views" in m for m in messages), messages
    assert all(".npz" in m for m in messages)
    assert faults == 6


def test_hostile_manifest_cannot_read_or_write_outside_the_folder(data_copy, tmp_path):
    from persp3d.datasets.multiview import MultiViewFolder
    from persp3d.datasets.procedural import generate_procedural

    secret = tmp_path / "secret.npz"
    secret.write_bytes(b"do not touch")
    manifest = manifest_of(data_copy)
    for bad in (str(secret), "../secret.npz", "items/../../secret.npz"):
        tampered = json.loads(json.dumps(manifest))
        tampered["items"][0]["file"] = bad
        tampered["items"][0]["sha256"] = None  # "rebuild me"
        (data_copy / "manifest.json").write_text(json.dumps(tampered))
        with pytest.raises(CorruptCacheError, match="absolute path|climbs out"):
            MultiViewFolder(data_copy, "all")
        with pytest.raises(CorruptCacheError, match="absolute path|climbs out"):
            generate_procedural(data_copy, None, workers=0, progress=False)
    assert secret.read_bytes() == b"do not touch"


# -- hostile files --------------------------------------------------------------------------
class _Exploit:
    """Unpickling this would run ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    evil = {"model": {"w": torch.ones(1)}, "step": _Exploit(marker)}
    torch.save(evil, tmp_path / "bare.pt")  # the old layout, no checksum
    save_checkpoint(tmp_path / "signed.pt", evil)  # a valid checksum does not make it safe
    for name in ("bare.pt", "signed.pt"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CheckpointWarning)
            with pytest.raises(ValueError, match=f"{name} is not a readable persp3d checkpoint"):
                load_checkpoint(tmp_path / name)
    # a dataset item whose array is a pickle
    import io
    import zipfile

    import numpy as np

    from persp3d.datasets.cache import read_item

    buf, member = io.BytesIO(), io.BytesIO()
    np.save(member, np.array([_Exploit(marker)], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images.npy", member.getvalue())
    (tmp_path / "item.npz").write_bytes(buf.getvalue())
    with pytest.raises(CorruptCacheError, match="holds Python objects"):
        read_item(tmp_path / "item.npz")
    assert not marker.exists()


def test_a_malicious_yaml_config_never_runs(tmp_path, cli, monkeypatch):
    from persp3d.train.config import load_config

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    tags = [
        f"train: !!python/object/apply:os.system ['touch {marker}']\n",
        f"!!python/object/apply:subprocess.call [['touch', '{marker}']]\n",
        "train: !!python/name:os.system\n",
        f"data: {{root: !!python/object/new:os.system ['touch {marker}']}}\n",
    ]
    for i, text in enumerate(tags):
        path = tmp_path / f"evil{i}.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match="not a valid YAML"):
            load_config(path)
        status, err = cli("train", "--config", path, "--out", tmp_path / "r")
        assert status == 2 and "not a valid YAML" in err and "Traceback" not in err
    assert not marker.exists()


def test_resume_and_eval_fall_back_to_the_intact_checkpoint(cli, full_run, tiny_data, tmp_path):
    """A bit flip in ``last.pt``: ``--resume`` warns, starts from ``best.pt`` and still ends
    with the uninterrupted run's weights; a truncated ``best.pt``: the pipeline of ``eval``,
    ``check`` and ``view`` warns and uses ``last.pt``."""
    import shutil

    from persp3d.train.pipeline import Pipeline

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    best_step = load_checkpoint(run / "best.pt")["step"]
    _flip(run / "last.pt", 4000)
    argv = ["train", "--data", tiny_data, "--out", run, "--max-steps", "16", "--no-report"]
    argv += [a for o in TINY_TRAIN for a in ("--set", o)]
    status, err = cli(*argv, "--resume")
    assert status == 0, err
    assert "warning:" in err and "using best.pt instead" in err and "last.pt" in err
    assert "Traceback" not in err
    a, b = load_checkpoint(full_run / "last.pt")["model"], load_checkpoint(run / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), (
            f"{k} differs after resuming from best.pt (step {best_step})"
        )
    assert _steps(run) == _steps(full_run)

    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:777])
    with pytest.warns(CheckpointWarning, match="using last.pt instead"):
        pipeline = Pipeline.from_run(run)
    assert pipeline.state["step"] == 16
