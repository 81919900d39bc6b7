"""``persp3d eval``: a trained model against ground truth.

    persp3d eval runs/default --split test
    persp3d eval runs/default/best.pt --data DIR --split test --out report/

The occupancy threshold is chosen on the validation split (the sweep is reported); on the
evaluated split each object gets its 3D IoU against the ground-truth voxels, the silhouette
IoU of its projections on all views, and the Chamfer distance between marching-cubes
surfaces of prediction and ground truth (PyTorch3D). Results per category and overall go to
``eval_<split>.json`` and ``eval_<split>.md``, with a figure of the best, median and worst
predictions (``eval_<split>.png``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from persp3d.metrics import chamfer_distance, iou_3d, silhouette_scores, volume_surface_points
from persp3d.train.trainer import THRESHOLDS
from persp3d.transformer import PerspectiveTransformer

__all__ = ["add_arguments", "evaluate", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (uses best.pt, else last.pt) or checkpoint file")
    parser.add_argument("--data", help="dataset folder (default: the run's dataset)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", help="report folder (default: the run folder)")
    parser.add_argument("--limit", type=int, help="evaluate at most this many objects")
    parser.add_argument("--chamfer-points", type=int, default=2000, help="points per surface")
    parser.add_argument("--depth-samples", type=int, default=64, help="samples per ray")


def _predict(model, data, input_kind: str, batch: int = 16) -> torch.Tensor:
    """Occupancy ``(N, 1, R, R, R)`` of every object of ``data`` (a MultiViewTensors) from a
    fixed input view per object (``7 i mod V``, as in validation)."""
    V = data.images.shape[1]
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            index = torch.arange(start, min(start + batch, len(data)))
            view = (index * 7) % V
            src = data.images if input_kind == "rgb" else data.silhouettes
            out.append(torch.sigmoid(model(src[index, view].float() / 255.0)))
    return torch.cat(out)


def evaluate(
    run: str,
    data_root: str | None = None,
    split: str = "test",
    out: str | None = None,
    limit: int | None = None,
    chamfer_points: int = 2000,
    depth_samples: int = 64,
) -> dict:
    """Evaluate a run or checkpoint; returns the report (also written to ``out``)."""
    from persp3d.train.trainer import MultiViewTensors, build_dataset, load_model

    model, config, state = load_model(run)
    if data_root is not None:
        config.data.root = data_root
        config.data.kind = "folder"
    val = MultiViewTensors.from_dataset(build_dataset(config.data, "val", progress=False), limit)
    test = MultiViewTensors.from_dataset(build_dataset(config.data, split, progress=False), limit)
    if val.voxels is None or test.voxels is None:
        raise ValueError("evaluation needs ground-truth voxels in the dataset")

    occ_val = _predict(model, val, config.data.input)
    sweep = {th: float(iou_3d(occ_val, val.voxels, th).mean()) for th in THRESHOLDS}
    threshold = max(sweep, key=sweep.get)

    occ = _predict(model, test, config.data.input)
    ious = iou_3d(occ, test.voxels, threshold)  # (N,)
    H, W = test.image_size
    transformer = PerspectiveTransformer(depth_samples=depth_samples, out_size=(H, W))
    V = test.images.shape[1]
    sil_iou, chamfer = [], []
    for i in range(len(test)):
        cams = test.cameras(torch.tensor([i]), torch.arange(V)[None])
        with torch.no_grad():
            sil = transformer(occ[i : i + 1], cams)  # (1, V, 1, H, W)
        gt = test.silhouettes[i : i + 1].float() / 255.0
        sil_iou.append(float(silhouette_scores(sil, gt, threshold)["iou"].mean()))
        pts_pred = volume_surface_points(occ[i, 0], threshold=threshold, n_points=chamfer_points)
        pts_gt = volume_surface_points(test.voxels[i, 0], threshold=0.5, n_points=chamfer_points)
        chamfer.append(float(chamfer_distance(pts_pred, pts_gt)))

    rows = [
        {
            "id": test.ids[i],
            "category": test.categories[i],
            "iou_3d": float(ious[i]),
            "sil_iou": sil_iou[i],
            "chamfer": chamfer[i],
        }
        for i in range(len(test))
    ]
    cats = sorted(set(test.categories))

    def summary(sel):
        finite = [r["chamfer"] for r in sel if r["chamfer"] != float("inf")]
        return {
            "n": len(sel),
            "iou_3d": sum(r["iou_3d"] for r in sel) / len(sel),
            "sil_iou": sum(r["sil_iou"] for r in sel) / len(sel),
            "chamfer": sum(finite) / len(finite) if finite else float("inf"),
        }

    report = {
        "run": str(run),
        "step": int(state.get("step", -1)),
        "split": split,
        "threshold": threshold,
        "threshold_sweep_val": sweep,
        "overall": summary(rows),
        "per_category": {c: summary([r for r in rows if r["category"] == c]) for c in cats},
        "objects": rows,
    }
    out_dir = Path(out) if out else (Path(run) if Path(run).is_dir() else Path(run).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"eval_{split}.json").write_text(json.dumps(report, indent=2))
    (out_dir / f"eval_{split}.md").write_text(_markdown(report))
    _figure(out_dir / f"eval_{split}.png", test, occ, ious, threshold, transformer)
    return report


def _markdown(report: dict) -> str:
    lines = [
        f"# persp3d eval: {report['run']} (step {report['step']}, split {report['split']})",
        "",
        f"Threshold {report['threshold']} chosen on val; sweep: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in report["threshold_sweep_val"].items()),
        "",
        "| category | n | 3D IoU | silhouette IoU | Chamfer (x1e3) |",
        "|---|---|---|---|---|",
    ]
    for name, s in [*report["per_category"].items(), ("**overall**", report["overall"])]:
        lines.append(
            f"| {name} | {s['n']} | {s['iou_3d']:.3f} | {s['sil_iou']:.3f} | {1e3 * s['chamfer']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _figure(path: Path, data, occ, ious, threshold, transformer) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.argsort(ious, descending=True).tolist()
    picks = [("best", order[0]), ("median", order[len(order) // 2]), ("worst", order[-1])]
    V = data.images.shape[1]
    views = [0, V // 4, V // 2]
    fig, axes = plt.subplots(
        len(picks), 1 + 2 * len(views), figsize=(2 * (1 + 2 * len(views)), 2.2 * len(picks))
    )
    for row, (name, i) in enumerate(picks):
        cams = data.cameras(torch.tensor([i]), torch.tensor([views]))
        with torch.no_grad():
            sil = transformer(occ[i : i + 1], cams)[0, :, 0]  # (3, H, W)
        axes[row, 0].imshow(data.images[i, (i * 7) % V].permute(1, 2, 0).numpy())
        axes[row, 0].set_title(
            f"{name}: {data.categories[i]}\nIoU {float(ious[i]):.2f}", fontsize=8
        )
        for k, v in enumerate(views):
            axes[row, 1 + 2 * k].imshow(data.silhouettes[i, v, 0].numpy(), cmap="gray")
            axes[row, 1 + 2 * k].set_title(f"view {v}: truth", fontsize=8)
            axes[row, 2 + 2 * k].imshow((sil[k] > threshold).numpy(), cmap="gray")
            axes[row, 2 + 2 * k].set_title(f"view {v}: predicted", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    report = evaluate(
        args.run,
        args.data,
        args.split,
        args.out,
        args.limit,
        args.chamfer_points,
        args.depth_samples,
    )
    print(json.dumps({"threshold": report["threshold"], **report["overall"]}, indent=2))
    return 0
