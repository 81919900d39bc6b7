"""``persp3d eval``: a trained run against ground truth, through the run's pipeline.

    persp3d eval runs/default --split test
    persp3d eval runs/default/best.pt --data DIR --split test --out report/
    persp3d eval runs/r2n2 --protocol r2n2          # the 3D-R2N2 table of the papers

Protocol (stated in every report): each object is predicted by the run's
:class:`~persp3d.train.pipeline.Pipeline` from its view ``(7 * index) % V`` (RGB or
silhouette input as the run was trained, area-resized to the network's input size); the
occupancy threshold is chosen on the validation split from a sweep (reported), and 3D IoU is
also given at 0.5 (Perspective Transformer Nets' code); 3D IoU is measured at the
ground-truth voxel resolution (the prediction resampled trilinearly when it differs); the
silhouette IoU projects the prediction into every view at the dataset's image size with the
run's projection mode and depth samples; Chamfer distance is between marching-cubes surfaces
(PyTorch3D). Samples are streamed (``data.workers`` processes), so memory does not grow with
the split. Results per category and overall go to ``eval_<split>.json`` and
``eval_<split>.md``, with a figure of the best, median and worst predictions
(``eval_<split>.png``); ``--protocol r2n2`` writes ``eval_<split>_r2n2.md`` with the
13-category table beside the published figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from persp3d.metrics import chamfer_distance, iou_3d, silhouette_scores, volume_surface_points
from persp3d.train.pipeline import Pipeline, default_input_view

__all__ = ["PUBLISHED_R2N2", "R2N2_TABLE", "add_arguments", "evaluate", "run"]

# The 13 categories of 3D-R2N2 in the order of the papers' tables (synset, table name).
R2N2_TABLE: tuple[tuple[str, str], ...] = (
    ("02691156", "airplane"),
    ("02828884", "bench"),
    ("02933112", "cabinet"),
    ("02958343", "car"),
    ("03001627", "chair"),
    ("03211117", "display"),
    ("03636649", "lamp"),
    ("03691459", "speaker"),
    ("04090263", "rifle"),
    ("04256520", "sofa"),
    ("04379243", "table"),
    ("04401088", "telephone"),
    ("04530566", "watercraft"),
)

# Mean 3D IoU over the 13 categories, single-view reconstruction trained from silhouettes,
# as reported (the figures issue 15 quotes; per-category figures are left out because they
# could not be checked against the papers here).
PUBLISHED_R2N2: dict[str, dict[str, Any]] = {
    "PTN (Yan et al. 2016)": {"mean": 0.5736},
    "NMR (Kato et al. 2018)": {"mean": 0.6031},
}

PROTOCOLS = ("default", "r2n2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (uses best.pt, else last.pt) or checkpoint file")
    parser.add_argument(
        "--data",
        help="dataset (default: the run's): a persp3d dataset folder, or a folder holding "
        "ShapeNetRendering + ShapeNetVox32",
    )
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", help="report folder (default: the run folder)")
    parser.add_argument("--limit", type=int, help="evaluate at most this many objects per split")
    parser.add_argument(
        "--chamfer-points", type=int, default=2000, help="points per surface (0: no Chamfer)"
    )
    parser.add_argument(
        "--depth-samples",
        type=int,
        help="samples per ray of the silhouette projection (default: the run's)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="default",
        help="r2n2: per-category 3D IoU at 32^3 in the 13-category layout of the papers",
    )
    parser.add_argument("--workers", type=int, help="data worker processes (default: the run's)")


class _EvalItems(torch.utils.data.Dataset):
    """Object ``i`` of a split with its input view ``(7 i) mod V`` (all views kept)."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset[i]
        sample.pop("depth", None)
        sample["index"] = i
        return sample


def _collate(batch):
    from persp3d.datasets.sample import collate

    out = collate(batch)
    out["index"] = torch.tensor([s["index"] for s in batch])
    return out


def _batches(dataset, n: int, workers: int, batch: int = 16, desc: str | None = None):
    loader = torch.utils.data.DataLoader(
        _EvalItems(dataset, n),
        batch_size=batch,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    if desc is None:
        yield from loader
        return
    from tqdm import tqdm

    with tqdm(total=n, desc=desc, unit="obj", dynamic_ncols=True) as bar:
        for b in loader:
            yield b
            bar.update(len(b["index"]))


def _at_resolution(occ: torch.Tensor, size) -> torch.Tensor:
    """Occupancy ``(B, 1, R, R, R)`` resampled to the voxel grid ``size`` when it differs."""
    if tuple(occ.shape[-3:]) == tuple(size):
        return occ
    return F.interpolate(occ, size=tuple(size), mode="trilinear", align_corners=False)


def _predict_batch(pipeline: Pipeline, batch) -> torch.Tensor:
    """Occupancy ``(B, 1, R, R, R)`` of a collated batch, each object from its default view."""
    views = batch["images"] if pipeline.config.data.input == "rgb" else batch["silhouettes"]
    V = views.shape[1]
    input_view = default_input_view(batch["index"], V)  # (B,)
    return pipeline.predict_views(views[torch.arange(len(input_view)), input_view])


def evaluate(
    run: str,
    data_root: str | None = None,
    split: str = "test",
    out: str | None = None,
    limit: int | None = None,
    chamfer_points: int = 2000,
    depth_samples: int | None = None,
    protocol: str = "default",
    workers: int | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate a run or checkpoint; returns the report (also written to ``out``).

    Args:
        run: run folder or checkpoint file.
        data_root: another dataset than the run's (a persp3d folder or R2N2 data).
        split: the evaluated split; the threshold is chosen on ``val``.
        limit: at most this many objects of each split.
        chamfer_points: points per surface for the Chamfer distance (0: skip it).
        depth_samples: samples per ray of the silhouette projection (default the run's).
        protocol: ``default`` or ``r2n2`` (adds the 13-category table of the papers).
        workers: data worker processes (default ``data.workers`` of the run).
        progress: show progress bars (on stderr).
    """
    from persp3d.train.data import build_dataset, infer_data_kind

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
    pipeline = Pipeline.from_run(run)
    if depth_samples is not None:
        pipeline.transformer.depth_samples = int(depth_samples)
    config = pipeline.config
    if data_root is not None:
        config.data.root = str(data_root)
        config.data.kind = infer_data_kind(data_root, "folder")
    if protocol == "r2n2":
        config.data.voxel_resolution = 32
    workers = config.data.workers if workers is None else int(workers)
    size = config.model.image_size
    val_set = build_dataset(config.data, "val", progress=False, image_size=size)
    test_set = build_dataset(config.data, split, progress=False, image_size=size)
    n_val = len(val_set) if limit is None else min(limit, len(val_set))
    n_test = len(test_set) if limit is None else min(limit, len(test_set))
    if n_val == 0 or n_test == 0:
        raise ValueError(f"evaluation needs objects in val and {split} (found {n_val}, {n_test})")

    from persp3d.train.trainer import THRESHOLDS

    # the threshold, chosen on val
    sums = dict.fromkeys(THRESHOLDS, 0.0)
    for batch in _batches(
        val_set, n_val, workers, desc="eval: val (threshold)" if progress else None
    ):
        if "voxels" not in batch:
            raise ValueError("evaluation needs ground-truth voxels in the dataset")
        occ = _at_resolution(_predict_batch(pipeline, batch), batch["voxels"].shape[-3:])
        for th in THRESHOLDS:
            sums[th] += float(iou_3d(occ, batch["voxels"], th).sum())
    sweep = {th: s / n_val for th, s in sums.items()}
    threshold = max(sweep, key=sweep.get)

    rows = []
    for batch in _batches(test_set, n_test, workers, desc=f"eval: {split}" if progress else None):
        if "voxels" not in batch:
            raise ValueError("evaluation needs ground-truth voxels in the dataset")
        occ = _at_resolution(_predict_batch(pipeline, batch), batch["voxels"].shape[-3:])
        ious = iou_3d(occ, batch["voxels"], threshold)  # (B,)
        ious_05 = iou_3d(occ, batch["voxels"], 0.5)
        with torch.no_grad():
            sil = pipeline.project(occ, batch["cameras"])  # (B, V, 1, H, W)
        sil_iou = silhouette_scores(sil, batch["silhouettes"], threshold)["iou"].mean(dim=(1, 2))
        for b in range(len(ious)):
            chamfer = float("nan")
            if chamfer_points > 0:
                pts_pred = volume_surface_points(
                    occ[b, 0], threshold=threshold, n_points=chamfer_points
                )
                pts_gt = volume_surface_points(
                    batch["voxels"][b, 0], threshold=0.5, n_points=chamfer_points
                )
                chamfer = float(chamfer_distance(pts_pred, pts_gt))
            rows.append(
                {
                    "index": int(batch["index"][b]),
                    "id": batch["id"][b],
                    "category": batch["category"][b],
                    "iou_3d": float(ious[b]),
                    "iou_3d@0.5": float(ious_05[b]),
                    "sil_iou": float(sil_iou[b]),
                    "chamfer": chamfer,
                }
            )

    cats = sorted({r["category"] for r in rows})
    voxel_res = int(batch["voxels"].shape[-1])
    H, W = batch["images"].shape[-2:]
    report = {
        "run": str(run),
        "step": int(pipeline.state.get("step", -1)),
        "split": split,
        "protocol": {
            "name": protocol,
            **pipeline.describe(),
            "depth_samples": pipeline.transformer.depth_samples,
            "threshold": f"chosen on val from {list(THRESHOLDS)}; also 0.5",
            "iou_resolution": voxel_res,
            "silhouette_size": [int(H), int(W)],
            "objects": {"val": n_val, split: n_test},
        },
        "threshold": threshold,
        "threshold_sweep_val": sweep,
        "overall": _summary(rows),
        "per_category": {c: _summary([r for r in rows if r["category"] == c]) for c in cats},
        "objects": rows,
    }
    if protocol == "r2n2":
        report["r2n2"] = _r2n2_table(report)
    out_dir = Path(out) if out else (Path(run) if Path(run).is_dir() else Path(run).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"eval_{split}.json").write_text(json.dumps(report, indent=2))
    (out_dir / f"eval_{split}.md").write_text(_markdown(report))
    if protocol == "r2n2":
        (out_dir / f"eval_{split}_r2n2.md").write_text(_r2n2_markdown(report))
    _figure(out_dir / f"eval_{split}.png", pipeline, test_set, rows, threshold)
    return report


def _summary(sel: list[dict]) -> dict[str, float]:
    finite = [
        r["chamfer"] for r in sel if r["chamfer"] == r["chamfer"] and r["chamfer"] != float("inf")
    ]
    return {
        "n": len(sel),
        "iou_3d": sum(r["iou_3d"] for r in sel) / len(sel),
        "iou_3d@0.5": sum(r["iou_3d@0.5"] for r in sel) / len(sel),
        "sil_iou": sum(r["sil_iou"] for r in sel) / len(sel),
        "chamfer": sum(finite) / len(finite) if finite else float("nan"),
    }


def _r2n2_table(report: dict) -> dict[str, Any]:
    """Rows of the 13 categories (missing ones as None) and the class means."""
    from persp3d.datasets.shapenet import category_name

    per = report["per_category"]
    rows = []
    for synset, name in R2N2_TABLE:
        s = per.get(synset) or per.get(category_name(synset)) or per.get(name)
        rows.append(
            {
                "synset": synset,
                "category": name,
                "n": s["n"] if s else 0,
                "iou@0.5": s["iou_3d@0.5"] if s else None,
                "iou@val": s["iou_3d"] if s else None,
            }
        )
    present = [r for r in rows if r["n"]]
    mean = lambda key: sum(r[key] for r in present) / len(present) if present else None  # noqa: E731
    return {
        "rows": rows,
        "mean@0.5": mean("iou@0.5"),
        "mean@val": mean("iou@val"),
        "categories_present": len(present),
        "published": PUBLISHED_R2N2,
    }


def _protocol_lines(report: dict) -> list[str]:
    p = report["protocol"]
    return [
        "Protocol: each object predicted by the run's pipeline from its view "
        f"`{p['input_view_rule']}` ({p['input']} input, area-resized to {p['input_size']}^2); "
        f"threshold {report['threshold']} chosen on val ({p['objects']['val']} objects), 3D "
        f"IoU also at 0.5; 3D IoU at {p['iou_resolution']}^3; silhouettes projected at "
        f"{p['silhouette_size'][0]}x{p['silhouette_size'][1]} with {p['projection_mode']} "
        f"projection and {p['depth_samples']} samples per ray.",
        "",
    ]


def _markdown(report: dict) -> str:
    lines = [
        f"# persp3d eval: {report['run']} (step {report['step']}, split {report['split']})",
        "",
        *_protocol_lines(report),
        f"Threshold {report['threshold']} chosen on val; sweep: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in report["threshold_sweep_val"].items()),
        "",
        "| category | n | 3D IoU | 3D IoU @0.5 | silhouette IoU | Chamfer (x1e3) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in [*report["per_category"].items(), ("**overall**", report["overall"])]:
        lines.append(
            f"| {name} | {s['n']} | {s['iou_3d']:.3f} | {s['iou_3d@0.5']:.3f} | "
            f"{s['sil_iou']:.3f} | {1e3 * s['chamfer']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _r2n2_markdown(report: dict) -> str:
    t = report["r2n2"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        f"# 3D-R2N2 protocol: {report['run']} (step {report['step']}, split {report['split']})",
        "",
        *_protocol_lines(report),
        f"| category | synset | n | 3D IoU @0.5 | 3D IoU @{report['threshold']} (val) |",
        "|---|---|---|---|---|",
    ]
    for r in t["rows"]:
        lines.append(
            f"| {r['category']} | {r['synset']} | {r['n']} | {fmt(r['iou@0.5'])} | "
            f"{fmt(r['iou@val'])} |"
        )
    lines.append(
        f"| **mean ({t['categories_present']} categories)** | | | {fmt(t['mean@0.5'])} | "
        f"{fmt(t['mean@val'])} |"
    )
    lines += ["", "As reported (mean over 13 categories, trained from silhouettes):", ""]
    for name, figures in t["published"].items():
        lines.append(f"- {name}: {figures['mean']:.4f}")
    return "\n".join(lines) + "\n"


def _figure(path: Path, pipeline: Pipeline, dataset, rows: list[dict], threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(rows)), key=lambda i: -rows[i]["iou_3d"])
    picks = [("best", order[0]), ("median", order[len(order) // 2]), ("worst", order[-1])]
    fig = None
    for row, (name, k) in enumerate(picks):
        index = rows[k]["index"]
        sample = dataset[index]
        V = sample["images"].shape[0]
        views = [0, V // 4, V // 2]
        if fig is None:
            fig, axes = plt.subplots(
                len(picks), 1 + 2 * len(views), figsize=(2 * (1 + 2 * len(views)), 2.2 * 3)
            )
        occ = pipeline.predict(sample, index=index)  # (1, 1, R, R, R)
        with torch.no_grad():
            sil = pipeline.project(occ, sample["cameras"][torch.tensor(views)])[0, :, 0]
        view = default_input_view(index, V)
        axes[row, 0].imshow(sample["images"][view].permute(1, 2, 0).numpy())
        axes[row, 0].set_title(
            f"{name}: {rows[k]['category']}\nIoU {rows[k]['iou_3d']:.2f}", fontsize=8
        )
        for j, v in enumerate(views):
            axes[row, 1 + 2 * j].imshow(sample["silhouettes"][v, 0].numpy(), cmap="gray")
            axes[row, 1 + 2 * j].set_title(f"view {v}: truth", fontsize=8)
            axes[row, 2 + 2 * j].imshow((sil[j] > threshold).numpy(), cmap="gray")
            axes[row, 2 + 2 * j].set_title(f"view {v}: predicted", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1; got {args.limit}")
    report = evaluate(
        args.run,
        args.data,
        args.split,
        args.out,
        args.limit,
        args.chamfer_points,
        args.depth_samples,
        getattr(args, "protocol", "default"),
        getattr(args, "workers", None),
        progress=True,
    )
    print(json.dumps({"threshold": report["threshold"], **report["overall"]}, indent=2))
    if "r2n2" in report:
        t = report["r2n2"]
        print(
            f"3D-R2N2 protocol: mean 3D IoU {t['mean@0.5']:.4f} at 0.5, {t['mean@val']:.4f} at "
            f"{report['threshold']} over {t['categories_present']} categories "
            "(as reported: PTN 0.5736, NMR 0.6031)"
        )
    return 0
