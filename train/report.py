"""``persp3d report``: one page about a training run, the end of the main job.

    persp3d report runs/default                        # RUN/report.html and RUN/report.md
    persp3d report runs/default --baseline runs/voxel  # beside a voxel-supervised run
    persp3d report runs/default --quick                # fewer objects, fewer pictures

Joins the library's three uses on one page: training (curves from ``steps.csv`` and
``val.jsonl``), evaluation (:func:`persp3d.train.evaluate.evaluate`: 3D IoU, silhouette IoU
and Chamfer per category, the threshold sweep), the bound that silhouettes allow (the visual
hull of the same views, :func:`persp3d.fitting.visual_hull`), checking projections against
ground-truth silhouettes (:mod:`persp3d.checking`) and looking at predictions in 3D
(:mod:`persp3d.viewers`: off-screen snapshots, the interactive web page, exported meshes).
Predictions come from the run's :class:`~persp3d.train.pipeline.Pipeline`, as in ``eval``.

``report.html`` is self-contained and works offline (pictures are embedded as ``data:``
URIs; no script, font or style sheet is fetched); the interactive 3D pages, meshes and
volumes it links to lie beside it in ``RUN/report_files/``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Headline", "add_arguments", "headline_lines", "read_curves", "run", "write_report"]

FILES = "report_files"
"""Folder beside ``report.html`` holding its pictures, 3D pages, meshes and volumes."""
N_PICKS_VIEWS = 4
"""Views shown per object on the contact sheets."""
MAX_HULL_OBJECTS = 300
"""The visual-hull bound is carved for at most this many objects, spread evenly over the
evaluated ones (splits are ordered by category)."""


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


# -- inputs -----------------------------------------------------------------------------------
def read_curves(run: str | Path) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    """The training curves of a run folder.

    Returns:
        ``(steps, val)``: ``steps`` maps the columns of ``steps.csv`` (``step``, ``loss``,
        ``sil_iou``, ``seconds``) to ``(N,)`` float arrays (empty when the file is missing);
        ``val`` is the list of ``val.jsonl`` records (each with ``step``, ``seconds``,
        ``val_sil_iou`` and, with ground-truth voxels, ``val_iou_3d``).
    """
    run = Path(run)
    steps: dict[str, np.ndarray] = {}
    path = run / "steps.csv"
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for key in rows[0] if rows else ():
            steps[key] = np.array([_float(r[key]) for r in rows], dtype=np.float64)
    val: list[dict[str, float]] = []
    path = run / "val.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                val.append(json.loads(line))
    return steps, val


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _run_dir(run: str | Path) -> Path:
    path = Path(run)
    if not path.exists():
        raise FileNotFoundError(f"run {str(path)!r}: no such folder or checkpoint")
    return path if path.is_dir() else path.parent


# -- the report's numbers --------------------------------------------------------------------
@dataclass
class Headline:
    """The figures the main job ends with (test split, overall)."""

    iou_3d: float
    """Mean 3D IoU of the predictions against the ground-truth voxels."""
    sil_iou: float
    """Mean silhouette IoU of the predictions' projections on all views."""
    chamfer: float
    """Mean Chamfer distance between predicted and true surfaces."""
    hull_iou_3d: float
    """Mean 3D IoU of the visual hull of the same views (what silhouettes alone allow)."""
    threshold: float
    """Occupancy threshold (chosen on the validation split)."""
    n: int
    """Objects evaluated."""
    step: int
    """Training step of the evaluated checkpoint."""
    baseline_iou_3d: float | None = None
    """Mean 3D IoU of the ``--baseline`` run, when given."""
    paths: dict[str, str] = field(default_factory=dict)
    """``html`` and ``md``: the report's files."""


def headline_lines(h: Headline) -> list[str]:
    """The closing lines of the main job: the headline figures, then the report's path."""
    lines = [
        f"test 3D IoU        {h.iou_3d:.3f}   ({h.n} objects, threshold {h.threshold:g}, "
        f"step {h.step})",
        f"silhouette IoU     {h.sil_iou:.3f}   (all views)",
        f"visual-hull bound  {h.hull_iou_3d:.3f}   (3D IoU of the hull of the same views)",
    ]
    if h.baseline_iou_3d is not None:
        lines.append(f"voxel baseline     {h.baseline_iou_3d:.3f}   (3D IoU)")
    lines.append(f"report: {h.paths.get('html', '')}")
    return lines


def _hull_scores(
    pipeline, dataset, indices: Sequence[int], chamfer_points: int
) -> list[dict[str, Any]]:
    """Per object of ``indices``: the visual hull of all its views, scored as the
    predictions are (3D IoU at 0.5, silhouette IoU on all views, Chamfer)."""
    from persp3d.fitting import visual_hull
    from persp3d.metrics import chamfer_distance, iou_3d, silhouette_scores, volume_surface_points
    from persp3d.volume import VolumeBox

    rows = []
    for i in indices:
        sample = dataset[i]
        box = sample.get("box", VolumeBox())
        voxels = sample["voxels"].float()[None]  # (1, 1, R, R, R)
        cams, sils = sample["cameras"], sample["silhouettes"].float()  # (V,), (V, 1, H, W)
        hull = visual_hull(cams, sils, resolution=voxels.shape[-1], box=box)  # (1, 1, R, R, R)
        with torch.no_grad():
            proj = pipeline.project(hull, cams, box=box)  # (1, V, 1, H, W)
        pts_hull = volume_surface_points(hull[0, 0], box, 0.5, chamfer_points)
        pts_gt = volume_surface_points(voxels[0, 0], box, 0.5, chamfer_points)
        rows.append(
            {
                "id": sample["id"],
                "category": sample["category"],
                "resolution": int(voxels.shape[-1]),
                "iou_3d": float(iou_3d(hull, voxels, 0.5)[0]),
                "sil_iou": float(silhouette_scores(proj, sils[None], 0.5)["iou"].mean()),
                "chamfer": float(chamfer_distance(pts_hull, pts_gt)),
            }
        )
    return rows


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    finite = [r["chamfer"] for r in rows if math.isfinite(r["chamfer"])]
    return {
        "n": len(rows),
        "iou_3d": float(np.mean([r["iou_3d"] for r in rows])) if rows else float("nan"),
        "sil_iou": float(np.mean([r["sil_iou"] for r in rows])) if rows else float("nan"),
        "chamfer": float(np.mean(finite)) if finite else float("inf"),
    }


# -- pictures ---------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average ignoring NaNs (the first values average what there is)."""
    if len(values) == 0 or window <= 1:
        return values
    ok = np.isfinite(values)
    v = np.where(ok, values, 0.0)
    c = np.cumsum(np.insert(v, 0, 0.0))
    k = np.cumsum(np.insert(ok.astype(np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c[idx] - c[lo]) / (k[idx] - k[lo])


def plot_curves(
    steps: dict[str, np.ndarray],
    val: list[dict[str, float]],
    path: Path,
    hull_iou_3d: float | None = None,
) -> Path:
    """Loss and IoU curves against steps (top) and minutes (bottom) as a PNG.

    Args:
        steps: columns of ``steps.csv`` (:func:`read_curves`).
        val: records of ``val.jsonl``.
        hull_iou_3d: the visual-hull bound, drawn as a level line on the IoU plots.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    n = len(steps.get("step", ()))
    window = max(1, n // 50)
    for row, (xkey, xlabel, scale) in enumerate(
        [("step", "training step", 1.0), ("seconds", "minutes of training", 1 / 60)]
    ):
        ax_loss, ax_iou = axes[row]
        if n and xkey in steps:
            x = steps[xkey] * scale
            if window > 1:
                ax_loss.plot(x, steps["loss"], color="#c8d3e6", lw=0.8, label="each step")
            ax_loss.plot(x, _smooth(steps["loss"], window), color="#1f4e9a", lw=1.6,
                         label=f"mean of {window} steps" if window > 1 else "each step")  # fmt: skip
            if "sil_iou" in steps:
                ax_iou.plot(x, _smooth(steps["sil_iou"], window), color="#7a9cd6", lw=1.2,
                            label="train silhouette IoU")  # fmt: skip
        if val:
            vx = np.array([r.get(xkey, np.nan) for r in val], dtype=np.float64) * scale
            vs = np.array([r.get("val_sil_iou", np.nan) for r in val], dtype=np.float64)
            ax_iou.plot(vx, vs, "o-", color="#1f4e9a", ms=3, lw=1.4, label="val silhouette IoU")
            v3 = np.array([r.get("val_iou_3d", np.nan) for r in val], dtype=np.float64)
            if np.isfinite(v3).any():
                ax_iou.plot(vx, v3, "s-", color="#d2601a", ms=3, lw=1.4, label="val 3D IoU")
        if hull_iou_3d is not None and math.isfinite(hull_iou_3d) and (n or val):
            ax_iou.axhline(hull_iou_3d, color="#d2601a", ls=":", lw=1.2,
                           label="visual-hull bound (3D IoU, test)")  # fmt: skip
        ax_loss.set_xlabel(xlabel)
        ax_loss.set_ylabel("training loss")
        ax_iou.set_xlabel(xlabel)
        ax_iou.set_ylabel("IoU")
        ax_iou.set_ylim(0, 1)
        for ax in (ax_loss, ax_iou):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_sweep(sweep: dict[Any, float], chosen: float, path: Path) -> Path:
    """Validation 3D IoU against the occupancy threshold, the chosen one marked."""
    plt = _pyplot()
    th = np.array([float(k) for k in sweep])
    iou = np.array([float(v) for v in sweep.values()])
    order = np.argsort(th)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(th[order], iou[order], "o-", color="#1f4e9a", ms=4)
    ax.axvline(chosen, color="#d2601a", ls="--", lw=1, label=f"chosen: {chosen:g}")
    ax.set_xlabel("occupancy threshold")
    ax.set_ylabel("val 3D IoU")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _image(t: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W, 3)`` for imshow."""
    a = t.detach().float().clamp(0, 1).cpu().numpy()
    return np.repeat(a, 3, 0).transpose(1, 2, 0) if a.shape[0] == 1 else a.transpose(1, 2, 0)


def plot_object_sheet(
    label: str,
    row: dict[str, Any],
    input_image: torch.Tensor,
    truth: torch.Tensor,
    projected: torch.Tensor,
    views: Sequence[int],
    threshold: float,
    path: Path,
) -> Path:
    """The input image, then per view the ground-truth and the predicted silhouette.

    Args:
        input_image: ``(C, H, W)`` what the network saw.
        truth: ``(k, 1, H, W)`` ground-truth silhouettes of ``views``.
        projected: ``(k, 1, H, W)`` projections of the predicted volume into ``views``.
    """
    from persp3d.metrics import silhouette_scores

    plt = _pyplot()
    k = len(views)
    ious = silhouette_scores(projected, truth, threshold)["iou"].reshape(-1)  # (k,)
    fig = plt.figure(figsize=(1.75 * (k + 2), 3.7))
    grid = fig.add_gridspec(2, k + 2)
    ax = fig.add_subplot(grid[:, :2])
    ax.imshow(_image(input_image), interpolation="nearest")
    ax.set_title(f"{label}: network input", fontsize=9)
    ax.axis("off")
    for j, v in enumerate(views):
        ax = fig.add_subplot(grid[0, j + 2])
        ax.imshow(_image(truth[j]), interpolation="nearest")
        ax.set_title(f"view {v}: truth", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, j + 2])
        ax.imshow(_image((projected[j] > threshold).float()), interpolation="nearest")
        ax.set_title(f"predicted, IoU {float(ious[j]):.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def snapshot_3d(
    prediction: np.ndarray,
    truth: np.ndarray,
    box,
    threshold: float,
    path: Path,
    title: str = "",
) -> str:
    """A picture of the predicted volume beside the ground truth; returns how it was drawn.

    Uses the Open3D off-screen renderer of :func:`persp3d.viewers.snapshot` (EGL, no display
    or GPU needed); where that cannot run, a matplotlib voxel picture.
    """
    from persp3d.viewers import ViewItem, ViewOptions, snapshot

    item = ViewItem(prediction, box=box, ground_truth=truth, title=title)
    options = ViewOptions(threshold=threshold, show_cameras=False, show_silhouettes=False)
    try:
        snapshot(item, path, options, image_size=(300, 480), azimuth=30.0, elevation=25.0)
        return "Open3D off-screen renderer"
    except (ImportError, RuntimeError, OSError) as err:
        _voxel_picture(prediction, truth, threshold, path)
        return f"matplotlib voxels (the Open3D snapshot failed: {str(err).splitlines()[0]})"


def _voxel_picture(prediction: np.ndarray, truth: np.ndarray, threshold: float, path: Path):
    plt = _pyplot()
    fig = plt.figure(figsize=(6.4, 3.2))
    for k, (name, vol, level, color) in enumerate(
        [("ground truth", truth, 0.5, "#9dd18c"), ("prediction", prediction, threshold, "#8cadE0")]
    ):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        # volume (D, H, W) = (z, y, x); matplotlib's voxels take (x, y, z) with z up: world y up
        filled = np.transpose(vol > level, (2, 0, 1))  # (x, z, y)
        ax.voxels(filled, facecolor=color, edgecolor="#55555530")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the page ---------------------------------------------------------------------------------
CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
margin:0;background:#f5f6f8}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:34px 0 8px;border-bottom:1px solid #dde;
padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}
.sub{color:#5a6272;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{flex:1 1 170px;border:1px solid #dfe3ea;border-radius:8px;padding:10px 14px;background:#fafbfd}
.card b{display:block;font-size:26px;color:#1f4e9a}.card span{color:#5a6272;font-size:13px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{padding:4px 10px;border-bottom:1px solid #e5e7ec;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f0f2f6}
tr.total td{font-weight:600;border-top:2px solid #ccd}
img{max-width:100%;height:auto}figure{margin:10px 0}figcaption{color:#5a6272;font-size:13px}
pre{background:#f3f4f7;padding:10px;overflow-x:auto;font-size:12.5px;border-radius:6px}
code{background:#f0f2f6;padding:1px 4px;border-radius:3px;font-size:13px}
.pick{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:8px 0 18px}
.pick img.sheet{flex:1 1 560px;max-width:640px}.pick img.snap{flex:0 1 380px;max-width:400px}
.muted{color:#5a6272}nav a{margin-right:12px}
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    value = float(value)
    if not math.isfinite(value):
        return "∞" if value > 0 else "–"
    return f"{value:.{digits}f}"


class _Page:
    """The report built once as blocks, written as both HTML and Markdown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.html: list[str] = []
        self.md: list[str] = []

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        attr = f' id="{anchor}"' if anchor else ""
        self.html.append(f"<h{level}{attr}>{_esc(text)}</h{level}>")
        self.md.append("#" * level + " " + text + "\n")

    def para(self, text_html: str, text_md: str | None = None) -> None:
        self.html.append(f"<p>{text_html}</p>")
        self.md.append((text_md if text_md is not None else text_html) + "\n")

    def code(self, text: str) -> None:
        self.html.append(f"<pre>{_esc(text)}</pre>")
        self.md.append(f"```\n{text.rstrip()}\n```\n")

    def details(self, summary: str, text: str) -> None:
        self.html.append(
            f"<details><summary>{_esc(summary)}</summary><pre>{_esc(text)}</pre></details>"
        )
        self.md.append(f"{summary}:\n\n```yaml\n{text.rstrip()}\n```\n")

    def table(
        self,
        head: Sequence[str],
        rows: Sequence[Sequence[str]],
        total: int = 0,
        text: Sequence[int] = (),
    ) -> None:
        """``rows`` of already formatted cells; the last ``total`` rows are summary rows;
        columns ``text`` hold prose (left-aligned)."""
        left = ' style="text-align:left"'

        def cell(tag: str, j: int, c: str) -> str:
            return f"<{tag}{left if j in text else ''}>{_esc(c)}</{tag}>"

        h = ["<table><thead><tr>", *(cell("th", j, c) for j, c in enumerate(head))]
        h.append("</tr></thead><tbody>")
        for k, row in enumerate(rows):
            cls = ' class="total"' if k >= len(rows) - total else ""
            h.append(f"<tr{cls}>" + "".join(cell("td", j, c) for j, c in enumerate(row)) + "</tr>")
        h.append("</tbody></table>")
        self.html.append("".join(h))
        md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k, row in enumerate(rows):
            cells = [f"**{c}**" if k >= len(rows) - total and c else c for c in row]
            md.append("| " + " | ".join(cells) + " |")
        self.md.append("\n".join(md) + "\n")

    def figure(self, path: Path, caption: str, alt: str = "", folded: str = "") -> None:
        """An embedded picture; ``folded``: shown closed under that summary line."""
        rel = path.relative_to(self.root).as_posix()
        fig = (
            f'<figure><img src="{_data_uri(path)}" alt="{_esc(alt or caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )
        if folded:
            fig = f"<details><summary>{_esc(folded)}</summary>{fig}</details>"
        self.html.append(fig)
        self.md.append(f"![{alt or caption}]({rel})\n\n*{caption}*\n")

    def raw(self, text_html: str, text_md: str) -> None:
        self.html.append(text_html)
        self.md.append(text_md)

    def write(self, title: str, subtitle: str, nav: Sequence[tuple[str, str]]) -> tuple[Path, Path]:
        links = "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in nav)
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>"
            f'<h1>{_esc(title)}</h1><p class="sub">{_esc(subtitle)}</p><nav>{links}</nav>'
            + "\n".join(self.html)
            + "</main></body></html>\n"
        )
        html_path, md_path = self.root / "report.html", self.root / "report.md"
        _atomic_write(html_path, page)
        _atomic_write(md_path, f"# {title}\n\n{subtitle}\n\n" + "\n".join(self.md))
        return html_path, md_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# -- the report -------------------------------------------------------------------------------
def _stage(log: Callable[[str], None], k: int, n: int, what: str, estimate: float) -> float:
    log(f"[report {k}/{n}] {what} (about {_duration(estimate)})")
    return time.perf_counter()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.1f} min"


def _data_root(config) -> str | None:
    """The dataset folder a run trained on (the procedural default's cache folder)."""
    if config.data.root:
        return str(config.data.root)
    if config.data.kind == "procedural":
        from persp3d.datasets.procedural import default_data_dir

        return str(default_data_dir() / "procedural")
    return None


def write_report(
    run: str | Path,
    baseline: str | Path | None = None,
    *,
    quick: bool = False,
    split: str = "test",
    limit: int | None = None,
    n_interactive: int = 3,
    chamfer_points: int | None = None,
    log: Callable[[str], None] = print,
) -> Headline:
    """Evaluate ``run`` and write ``report.html`` and ``report.md`` into its folder.

    Args:
        run: a run folder (``persp3d train --out``).
        baseline: another run (typically ``--supervision voxel``) shown beside it.
        quick: evaluate at most 24 objects and use fewer Chamfer points.
        split: the split evaluated (its threshold is chosen on ``val``).
        limit: evaluate at most this many objects of ``split`` (default all; 24 with quick).
        n_interactive: objects given an interactive 3D page, a mesh and a check summary
            (the best, median and worst, in that order).
        log: where the stage messages go.

    Returns:
        The :class:`Headline`, with ``paths`` naming the two files written.
    """
    from persp3d.train.data import build_dataset
    from persp3d.train.evaluate import evaluate
    from persp3d.train.pipeline import Pipeline

    root = _run_dir(run)
    started = time.perf_counter()
    if limit is None and quick:
        limit = 24
    chamfer_points = chamfer_points or (1000 if quick else 2000)
    files = root / FILES
    files.mkdir(parents=True, exist_ok=True)
    config_path = root / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: not a run folder (no config.yaml)")
    pipeline = Pipeline.from_run(root)
    config = pipeline.config
    dataset = build_dataset(config.data, split, progress=False, image_size=pipeline.image_size)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    n_val = len(build_dataset(config.data, "val", progress=False, image_size=pipeline.image_size))
    n_val = n_val if limit is None else min(limit, n_val)
    if n == 0:
        raise ValueError(f"the {split} split of {_data_root(config)} holds no objects")
    n_stages = 6 + (baseline is not None)
    stage = 0

    stage += 1
    t = _stage(log, stage, n_stages, f"evaluating {n} {split} objects and the val threshold sweep",
               2.0 + 0.5 * (n + n_val))  # fmt: skip
    protocol = "r2n2" if config.data.kind == "r2n2" else "default"
    report = evaluate(
        str(root), split=split, limit=limit, chamfer_points=chamfer_points, protocol=protocol
    )
    log(f"    done in {_duration(time.perf_counter() - t)}")
    rows = report["objects"]
    threshold = float(report["threshold"])

    baseline_report = None
    if baseline is not None:
        stage += 1
        b = _run_dir(baseline)
        t = _stage(log, stage, n_stages, f"evaluating the baseline {b} on the same objects",
                   2.0 + 0.5 * (n + n_val))  # fmt: skip
        baseline_report = evaluate(
            str(b),
            data_root=config.data.root,  # the same objects, whatever the baseline trained on
            split=split,
            limit=limit,
            chamfer_points=chamfer_points,
        )
        log(f"    done in {_duration(time.perf_counter() - t)}")

    stage += 1
    hull_index = _spread(n, MAX_HULL_OBJECTS)
    t = _stage(log, stage, n_stages, f"carving the visual hull of {len(hull_index)} objects from "
               "their views", 1.0 + 0.5 * len(hull_index))  # fmt: skip
    hull_rows = _hull_scores(pipeline, dataset, hull_index, chamfer_points)
    log(f"    done in {_duration(time.perf_counter() - t)}")

    stage += 1
    t = _stage(log, stage, n_stages, "plotting the training curves and the threshold sweep", 3)
    steps, val = read_curves(root)
    curves = plot_curves(steps, val, files / "curves.png", _summary(hull_rows)["iou_3d"])
    sweep = plot_sweep(report["threshold_sweep_val"], threshold, files / "threshold_sweep.png")

    stage += 1
    t = _stage(log, stage, n_stages, "contact sheets and 3D snapshots of the best, median and "
               "worst objects", 10)  # fmt: skip
    order = sorted(range(len(rows)), key=lambda k: rows[k]["iou_3d"], reverse=True)
    picks = [("best", order[0]), ("median", order[len(order) // 2]), ("worst", order[-1])]
    picked = []
    renderer = ""
    for label, k in picks:
        row = rows[k]
        i = int(row["index"]) if "index" in row else _index_of(dataset, row["id"], n)
        sample = dataset[i]
        picked.append(_pick(pipeline, label, row, sample, i, threshold, files))
        renderer = picked[-1]["renderer"]
    log(f"    done in {_duration(time.perf_counter() - t)}")

    stage += 1
    t = _stage(log, stage, n_stages, "checking projections, 3D pages and meshes of "
               f"{min(n_interactive, len(picked))} objects", 4 * min(n_interactive, len(picked)))  # fmt: skip
    data_root = _data_root(config)
    for p in picked[:n_interactive]:
        _inspect(pipeline, p, dataset[p["index"]], threshold, files, data_root)
    log(f"    done in {_duration(time.perf_counter() - t)}")

    stage += 1
    _stage(log, stage, n_stages, "writing report.html and report.md", 1)
    hull_all = _summary(hull_rows)
    head = Headline(
        iou_3d=float(report["overall"]["iou_3d"]),
        sil_iou=float(report["overall"]["sil_iou"]),
        chamfer=float(report["overall"]["chamfer"]),
        hull_iou_3d=hull_all["iou_3d"],
        threshold=threshold,
        n=int(report["overall"]["n"]),
        step=int(report.get("step", -1)),
        baseline_iou_3d=(
            float(baseline_report["overall"]["iou_3d"]) if baseline_report is not None else None
        ),
    )
    page = _Page(root)
    _write_sections(
        page, root, config, config_path, report, baseline_report, baseline, hull_rows, steps,
        val, curves, sweep, picked, renderer, head, data_root, split,
    )  # fmt: skip
    subtitle = (
        f"{root} · step {head.step} · {split} split, {head.n} objects · written "
        f"{time.strftime('%Y-%m-%d %H:%M')} in {_duration(time.perf_counter() - started)}"
    )
    nav = [("summary", "Summary"), ("curves", "Training"), ("table", "Per category"),
           ("sweep", "Threshold"), ("objects", "Objects"), ("check", "Check"),
           ("inspect", "3D"), ("config", "Command and config")]  # fmt: skip
    html_path, md_path = page.write(f"persp3d report: {root.name}", subtitle, nav)
    (root / "report.json").write_text(
        json.dumps(
            {
                "headline": {k: v for k, v in head.__dict__.items() if k != "paths"},
                "per_category": report["per_category"],
                "overall": report["overall"],
                "hull_per_category": {
                    c: _summary([r for r in hull_rows if r["category"] == c])
                    for c in report["per_category"]
                },
                "hull_overall": hull_all,
                "baseline_overall": baseline_report["overall"] if baseline_report else None,
                "threshold_sweep_val": report["threshold_sweep_val"],
                "picks": [{k: p[k] for k in ("label", "id", "category", "iou_3d")} for p in picked],
                "renderer": renderer,
            },
            indent=2,
        )
    )
    head.paths = {"html": str(html_path), "md": str(md_path)}
    return head


def _index_of(dataset, item_id: str, n: int) -> int:
    for i in range(n):
        if dataset[i]["id"] == item_id:
            return i
    raise ValueError(f"object {item_id!r} of the evaluation is not among the first {n} objects")


def _views(n_views: int, input_view: int, k: int = N_PICKS_VIEWS) -> list[int]:
    """``k`` views spread evenly around the object, starting with the input view."""
    k = min(k, n_views)
    return [(input_view + round(j * n_views / k)) % n_views for j in range(k)]


def _pick(pipeline, label, row, sample, index, threshold, files: Path) -> dict[str, Any]:
    """Predict one object, draw its contact sheet and its 3D snapshot."""
    from persp3d.train.pipeline import default_input_view
    from persp3d.volume import VolumeBox

    V = sample["silhouettes"].shape[0]
    input_view = default_input_view(index, V)
    box = sample.get("box", VolumeBox())
    with torch.no_grad():
        occ = pipeline.predict(sample, index=index)  # (1, 1, R, R, R)
    views = _views(V, input_view)
    cams = sample["cameras"][torch.tensor(views)]
    with torch.no_grad():
        proj = pipeline.project(occ, cams, box=box)[0]  # (k, 1, H, W)
    truth = sample["silhouettes"][views].float()  # (k, 1, H, W)
    src = sample["images"] if pipeline.config.data.input == "rgb" else sample["silhouettes"]
    sheet = plot_object_sheet(
        label, row, src[input_view], truth, proj, views, threshold, files / f"sheet_{label}.png"
    )
    prediction = occ[0, 0].numpy()
    truth_vol = sample["voxels"].float()[0].numpy()
    renderer = snapshot_3d(
        prediction, truth_vol, box, threshold, files / f"snapshot_{label}.png", row["id"]
    )
    return {
        "label": label,
        "id": row["id"],
        "category": row["category"],
        "iou_3d": row["iou_3d"],
        "sil_iou": row["sil_iou"],
        "index": index,
        "input_view": input_view,
        "occupancy": occ,
        "sheet": sheet,
        "snapshot": files / f"snapshot_{label}.png",
        "renderer": renderer,
    }


def _inspect(pipeline, p, sample, threshold, files: Path, data_root: str | None) -> None:
    """Check one prediction's projections, write its 3D page, mesh and volume file."""
    from persp3d.checking import check_projections, diagnose
    from persp3d.datasets.volumes import save_volume
    from persp3d.train.check import contact_sheet
    from persp3d.viewers import ViewItem, ViewOptions, export_isosurface, write_html
    from persp3d.volume import VolumeBox

    box = sample.get("box", VolumeBox())
    occ = p["occupancy"]
    cams, sils = sample["cameras"], sample["silhouettes"].float()
    depth = pipeline.config.train.depth_samples
    result = check_projections(occ, cams, sils, box, max(depth, 64), threshold=threshold)
    diagnosis = diagnose(occ, cams, sils, box, max(depth, 64), threshold=threshold)
    name = p["id"]
    contact_sheet(
        result,
        files / f"check_{name}.png",
        title=f"{name}: prediction from view {p['input_view']}, mean IoU {result.mean['iou']:.3f}",
        subtitle=diagnosis.verdict,
        panel_size=96,
    )
    p["check"] = result.to_dict()
    p["diagnosis"] = diagnosis.to_dict()
    p["check_sheet"] = files / f"check_{name}.png"
    volume_path = save_volume(
        files / f"{name}_prediction.npz",
        occ[0, 0],
        box,
        cameras=cams,
        meta={"run": str(files.parent), "id": name, "input_view": p["input_view"]},
    )
    p["volume_file"] = volume_path
    p["check_command"] = (
        f"persp3d check {volume_path} \\\n    --data {data_root} --id {name} --threshold {threshold:g}"
        if data_root
        else None
    )
    item = ViewItem(
        occ[0, 0].numpy(),
        box=box,
        ground_truth=sample["voxels"].float()[0].numpy(),
        cameras=cams,
        silhouettes=sils[:, 0].numpy(),
        input_view=p["input_view"],
        title=f"persp3d: {name} ({p['label']}, 3D IoU {p['iou_3d']:.3f})",
    )
    p["html"] = write_html(files / f"view_{name}.html", item, ViewOptions(threshold=threshold))
    meshes = []
    for suffix, volume, level in (
        ("prediction", occ[0, 0], threshold),
        ("ground_truth", sample["voxels"].float()[0], 0.5),
    ):
        try:
            meshes.append(export_isosurface(files / f"{name}_{suffix}.ply", volume, box, level))
        except ValueError:
            pass  # an empty surface: nothing to export (said in the report)
    p["meshes"] = meshes


def _r2n2_section(page: _Page, table: dict[str, Any]) -> None:
    """The 13-category table of the 3D-R2N2 papers (``evaluate(..., protocol="r2n2")``)."""
    page.heading("3D-R2N2 protocol", 3)
    rows = [
        [r["category"], str(r["n"]), _fmt(r["iou@0.5"]), _fmt(r["iou@val"])] for r in table["rows"]
    ]
    rows.append(["mean", "", _fmt(table["mean@0.5"]), _fmt(table["mean@val"])])
    page.table(["category", "n", "3D IoU at 0.5", "3D IoU at the val threshold"], rows, total=1)
    published = "; ".join(f"{k}: {v['mean']:.3f}" for k, v in table["published"].items())
    page.para(
        f"3D IoU at 32³ per category of the papers' table ({table['categories_present']} of 13 "
        f"present), mean over the categories present. Published class means, trained from "
        f"silhouettes: {_esc(published)}.",
        f"3D IoU at 32³ per category of the papers' table ({table['categories_present']} of 13 "
        f"present), mean over the categories present. Published class means, trained from "
        f"silhouettes: {published}.",
    )


def _supervision(run: str | Path) -> str:
    """How a run was supervised, in words (from its ``config.yaml``)."""
    import yaml

    path = _run_dir(run) / "config.yaml"
    kind = "silhouette"
    if path.is_file():
        kind = ((yaml.safe_load(path.read_text()) or {}).get("train") or {}).get(
            "supervision", kind
        )
    return {
        "voxel": "ground-truth voxels (3D supervision)",
        "both": "silhouettes and ground-truth voxels",
        "silhouette": "silhouettes only (no 3D labels)",
    }.get(kind, str(kind))


def _resolution(hull_rows: Sequence[dict[str, Any]]) -> int:
    return int(hull_rows[0].get("resolution", 0)) if hull_rows else 0


def _rel(path: Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def _write_sections(
    page: _Page, root, config, config_path, report, baseline_report, baseline, hull_rows, steps,
    val, curves, sweep, picked, renderer, head: Headline, data_root, split,
) -> None:  # fmt: skip
    # summary
    page.heading("Summary", anchor="summary")
    cards = [
        (_fmt(head.iou_3d), f"test 3D IoU at threshold {head.threshold:g}"),
        (_fmt(head.sil_iou), "silhouette IoU, all views"),
        (_fmt(head.hull_iou_3d), "visual-hull bound (3D IoU)"),
        (_fmt(1e3 * head.chamfer, 2), "Chamfer distance × 10³"),
    ]
    if head.baseline_iou_3d is not None:
        cards.append((_fmt(head.baseline_iou_3d), "voxel-supervised baseline (3D IoU)"))
    supervision = config.train.supervision
    page.raw(
        '<div class="cards">'
        + "".join(f"<div class=card><b>{_esc(v)}</b><span>{_esc(t)}</span></div>" for v, t in cards)
        + "</div>",
        "\n".join(f"- **{v}** {t}" for v, t in cards) + "\n",
    )
    page.para(
        f"A network trained with <b>{_esc(supervision)}</b> supervision predicts a "
        f"{config.model.resolution}³ occupancy volume from one "
        f"{'image' if config.data.input == 'rgb' else 'silhouette'} of each object. "
        "The visual hull, carved from the ground-truth silhouettes of all views, is the "
        "largest shape those silhouettes allow: its IoU is what silhouettes alone can tell.",
        f"A network trained with **{supervision}** supervision predicts a "
        f"{config.model.resolution}³ occupancy volume from one "
        f"{'image' if config.data.input == 'rgb' else 'silhouette'} of each object. "
        "The visual hull, carved from the ground-truth silhouettes of all views, is the "
        "largest shape those silhouettes allow: its IoU is what silhouettes alone can tell.",
    )

    # training curves
    page.heading("Training", anchor="curves")
    if len(steps.get("step", ())):
        took = f" in {_duration(float(steps['seconds'][-1]))}" if "seconds" in steps else ""
        best = max((r.get("val_iou_3d", -1.0) for r in val), default=-1.0)
        page.para(
            f"{int(steps['step'][-1])} steps{took}; {len(val)} validations"
            + (f", best val 3D IoU {best:.3f}." if best >= 0 else ".")
        )
    else:
        page.para("No <code>steps.csv</code> in the run folder: no curves to draw.",
                  "No `steps.csv` in the run folder: no curves to draw.")  # fmt: skip
    page.figure(curves, "Loss and IoU against training steps (top) and minutes (bottom). "
                "Training IoU is that of the supervising views; validation objects are "
                "predicted from one fixed view each.")  # fmt: skip

    # per-category table
    page.heading("Per category", anchor="table")
    hull_cat = {
        c: _summary([r for r in hull_rows if r["category"] == c]) for c in report["per_category"]
    }
    base_cat = baseline_report["per_category"] if baseline_report else {}
    head_cells = ["category", "n", "3D IoU", "sil. IoU", "Chamfer ×10³", "hull 3D IoU",
                  "hull sil. IoU", "hull Chamfer ×10³"]  # fmt: skip
    if baseline_report:
        head_cells += ["baseline 3D IoU", "baseline sil. IoU", "baseline Chamfer ×10³"]
    table_rows = []
    entries = [*report["per_category"].items(), ("overall", report["overall"])]
    for name, s in entries:
        h = hull_cat.get(name) if name != "overall" else _summary(hull_rows)
        cells = [name, str(s["n"]), _fmt(s["iou_3d"]), _fmt(s["sil_iou"]),
                 _fmt(1e3 * s["chamfer"], 2), _fmt(h["iou_3d"]), _fmt(h["sil_iou"]),
                 _fmt(1e3 * h["chamfer"], 2)]  # fmt: skip
        if baseline_report:
            b = baseline_report["overall"] if name == "overall" else base_cat.get(name)
            cells += (
                [_fmt(b["iou_3d"]), _fmt(b["sil_iou"]), _fmt(1e3 * b["chamfer"], 2)]
                if b
                else ["–"] * 3
            )
        table_rows.append(cells)
    page.table(head_cells, table_rows, total=1)
    hull_note = (
        f" The hull's silhouette IoU stays below 1 because its {_resolution(hull_rows)}³ voxels "
        "project blockily."
        if hull_rows
        else ""
    ) + (
        f" The hull is carved for {len(hull_rows)} of the {report['overall']['n']} objects, "
        "spread evenly over the split."
        if len(hull_rows) < report["overall"]["n"]
        else ""
    )
    baseline_text = (
        f" The baseline <code>{_esc(baseline)}</code> was trained with "
        f"{_esc(_supervision(baseline))} and is evaluated on the same objects the same way."
        if baseline_report
        else " Add <code>--baseline RUN</code> to show a voxel-supervised run beside it "
        "(<code>persp3d train --supervision voxel --out runs/voxel</code>)."
    )
    page.para(
        f"3D IoU against the ground-truth voxels at the threshold chosen on val; silhouette "
        f"IoU of the predicted volume's projections on all views; Chamfer distance between "
        f"the two surfaces (mean squared distance, box side 1). The hull columns score the "
        f"visual hull of the same views the same way.{hull_note}{baseline_text}",
        "3D IoU against the ground-truth voxels at the threshold chosen on val; silhouette "
        "IoU of the predicted volume's projections on all views; Chamfer distance between "
        "the two surfaces (mean squared distance, box side 1). The hull columns score the "
        "visual hull of the same views the same way."
        + hull_note
        + (
            f" The baseline `{baseline}` was trained with {_supervision(baseline)}."
            if baseline_report
            else " Add `--baseline RUN` to show a voxel-supervised run beside it."
        ),
    )

    if report.get("protocol"):
        lines = [f"{k}: {json.dumps(v) if not isinstance(v, str) else v}"
                 for k, v in report["protocol"].items()]  # fmt: skip
        page.details("The evaluation protocol", "\n".join(lines))
    if report.get("r2n2"):
        _r2n2_section(page, report["r2n2"])

    # threshold sweep
    page.heading("Threshold sweep", anchor="sweep")
    sweep_items = sorted((float(k), float(v)) for k, v in report["threshold_sweep_val"].items())
    page.table(
        ["threshold", *[f"{k:g}" for k, _ in sweep_items]],
        [["val 3D IoU", *[_fmt(v) for _, v in sweep_items]]],
    )
    page.figure(sweep, f"Validation 3D IoU per occupancy threshold; {head.threshold:g} is used "
                f"on the {split} split.")  # fmt: skip

    # objects
    page.heading("Best, median and worst objects", anchor="objects")
    page.para(
        "Each object: the network's input, then in four views around it the ground-truth "
        "silhouette (top) and the projection of the predicted volume (bottom). Beside it, "
        f"the predicted volume (blue) and the ground truth (green) in 3D, drawn by the "
        f"{_esc(renderer)}.",
        "Each object: the network's input, then in four views around it the ground-truth "
        "silhouette (top) and the projection of the predicted volume (bottom); then the "
        f"predicted volume (blue) beside the ground truth (green) in 3D, drawn by the {renderer}.",
    )
    for p in picked:
        page.heading(f"{p['label']}: {p['id']} ({p['category']}), 3D IoU {p['iou_3d']:.3f}", 3)
        sheet, snap = p["sheet"], p["snapshot"]
        page.raw(
            f'<div class="pick"><img class="sheet" src="{_data_uri(sheet)}" alt="silhouettes of '
            f'{_esc(p["id"])}"><img class="snap" src="{_data_uri(snap)}" alt="3D view of '
            f'{_esc(p["id"])}"></div>',
            f"![silhouettes of {p['id']}]({_rel(sheet, root)}) "
            f"![3D view of {p['id']}]({_rel(snap, root)})\n",
        )

    # check
    page.heading("Projections checked against the silhouettes", anchor="check")
    page.para(
        "What <code>persp3d check</code> reports for these predictions: per view the IoU "
        "of the projection with the ground-truth silhouette, and whether a classic convention "
        "slip (a camera-to-world pose, OpenGL camera axes, upside-down images, a half-pixel "
        "shift, swapped volume axes) would explain the mismatch.",
        "What `persp3d check` reports for these predictions: per view the IoU of the "
        "projection with the ground-truth silhouette, and whether a classic convention slip "
        "would explain the mismatch.",
    )
    checked = [p for p in picked if "check" in p]
    if checked:
        n_views = len(checked[0]["check"]["per_view"])
        rows = []
        for p in checked:
            ious = [r["iou"] for r in p["check"]["per_view"]]
            worst = int(np.argmin(ious))
            rows.append([p["id"], p["label"], _fmt(np.mean(ious)), f"{_fmt(min(ious))} ({worst})",
                         _fmt(p["check"]["mean"]["boundary_f"]), p["diagnosis"]["verdict"]])  # fmt: skip
        page.table(
            ["object", "", "mean IoU", "worst view", "boundary F", "diagnosis"], rows, text=(5,)
        )
        for start in range(0, n_views, 12):  # at most 12 views a table: it fits the page
            views = range(start, min(n_views, start + 12))
            per_view = [
                [p["id"], *[_fmt(p["check"]["per_view"][v]["iou"], 2) for v in views]]
                for p in checked
            ]
            page.table(["IoU in view", *[str(v) for v in views]], per_view)
        for p in checked:
            page.figure(
                p["check_sheet"],
                f"{p['id']}: per view the silhouette, the projection and their overlay (white "
                "both, red projection only, blue silhouette only).",
                folded=f"{p['id']} ({p['label']}): the contact sheet of persp3d check",
            )
        if checked[0].get("check_command"):
            page.para("The same from the command line (the volume file lies beside the report):",
                      "The same from the command line:")  # fmt: skip
            page.code(checked[0]["check_command"])

    # interactive
    page.heading("In 3D: interactive pages, meshes and volumes", anchor="inspect")
    page.para(
        "Open these pages beside the report (offline, any browser; drag to turn, wheel to "
        "zoom, with the cameras and silhouettes around the volume). The meshes are the "
        "isosurfaces at the report's threshold, in world coordinates (PLY).",
        "Open these pages beside the report (offline, any browser). The meshes are the "
        "isosurfaces at the report's threshold, in world coordinates (PLY).",
    )
    items_html, items_md = [], []
    for p in checked:
        links = [(p["html"], "3D page")] + [(m, m.name) for m in p["meshes"]]
        links.append((p["volume_file"], p["volume_file"].name))
        items_html.append(
            f"<li><b>{_esc(p['id'])}</b> ({_esc(p['label'])}): "
            + ", ".join(f'<a href="{_esc(_rel(f, root))}">{_esc(t)}</a>' for f, t in links)
            + ("" if len(p["meshes"]) == 2 else " (the prediction has no surface to export)")
            + "</li>"
        )
        items_md.append(
            f"- **{p['id']}** ({p['label']}): "
            + ", ".join(f"[{t}]({_rel(f, root)})" for f, t in links)
        )
    page.raw("<ul>" + "".join(items_html) + "</ul>", "\n".join(items_md) + "\n")
    page.para(
        f"Or in an Open3D window: <code>persp3d view {_esc(root)}"
        + (f" --data {_esc(data_root)}" if data_root else "")
        + "</code>.",
        f"Or in an Open3D window: `persp3d view {root}"
        + (f" --data {data_root}" if data_root else "")
        + "`.",
    )

    # command and config
    page.heading("Command and config", anchor="config")
    command_file = root / "command.txt"
    if command_file.exists():
        page.para("The run was started with:")
        page.code(command_file.read_text().strip())
    page.para("To train it again (the saved config holds every setting):")
    page.code(f"persp3d train --config {config_path} --out {root}-again")
    page.details("config.yaml", config_path.read_text())


# -- the command ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (persp3d train --out)")
    parser.add_argument(
        "--baseline",
        help="another run to show beside it (e.g. one trained with --supervision voxel)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="evaluate at most 24 objects (about a minute)"
    )
    parser.add_argument("--split", default="test", choices=["val", "test"], help="split evaluated")
    parser.add_argument("--limit", type=int, help="evaluate at most this many objects")


def run(args: argparse.Namespace) -> int:
    head = write_report(
        args.run, args.baseline, quick=args.quick, split=args.split, limit=args.limit
    )
    print()
    for line in headline_lines(head):
        print(line)
    return 0
