"""``persp3d fit``: shape from silhouettes, one object at a time.

    persp3d fit --data DIR --id ID [--resolution 64] [--refine-cameras] --out DIR

Fits a dense volume to the object's calibrated silhouettes by gradient descent through the
perspective transformer (:func:`persp3d.fitting.fit_volume`), computes the classical visual
hull of the same views as the reference, and reports the fitted volume's 3D IoU against the
ground truth next to the hull's, and against the hull itself. ``--perturb-rotation`` and
``--perturb-translation`` start from disturbed cameras (for demonstrations and tests);
``--refine-cameras`` corrects them jointly with the volume; ``--reference-fit`` also fits
with the true cameras, so that the silhouette IoU the refinement reaches can be compared
with what the true cameras give. Writes ``volume.npz`` (occupancy, logits, box, cameras),
``visual_hull.npz`` and ``report.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.cameras import Cameras
from persp3d.checking import check_projections
from persp3d.fitting import FitResult, default_steps, fit_volume, perturb_cameras, visual_hull
from persp3d.metrics import iou_3d
from persp3d.train.check import find_sample
from persp3d.volume import VolumeBox

__all__ = ["add_arguments", "camera_errors", "fit", "run", "save_volume"]


def camera_errors(cameras: Cameras, reference: Cameras) -> dict[str, float]:
    """Mean and largest rotation angle (degrees) and centre distance between two ``(V,)``
    camera sets (no alignment: a joint fit may also move the whole scene a little)."""
    with torch.no_grad():
        rel = cameras.R.double() @ reference.R.double().transpose(-1, -2)
        cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        angle = torch.rad2deg(torch.arccos(cos))
        shift = (cameras.centers.double() - reference.centers.double()).norm(dim=-1)
    return {
        "rotation_deg_mean": float(angle.mean()),
        "rotation_deg_max": float(angle.max()),
        "centre_mean": float(shift.mean()),
        "centre_max": float(shift.max()),
    }


def save_volume(path: str | Path, result: FitResult) -> Path:
    """Write a fit as ``.npz``: ``occupancy``, ``logits`` ``(R, R, R)``, ``box_center``,
    ``box_size``, and the cameras ``K``, ``R``, ``t``, ``image_size`` it was fitted with;
    ``persp3d check`` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cams = result.cameras.detach().cpu()
    np.savez_compressed(
        path,
        occupancy=result.occupancy[0, 0].cpu().numpy().astype(np.float32),
        logits=result.logits[0, 0].cpu().numpy().astype(np.float32),
        box_center=np.asarray(result.box.center, dtype=np.float64),
        box_size=np.asarray(result.box.size, dtype=np.float64),
        K=cams.K.numpy(),
        R=cams.R.numpy(),
        t=cams.t.numpy(),
        image_size=np.asarray(cams.image_size),
    )
    return path


def _silhouette_means(volume, cameras, silhouettes, box) -> dict[str, float]:
    return check_projections(volume, cameras, silhouettes, box).mean


def fit(
    data: str | Path,
    item_id: str,
    out: str | Path | None = None,
    *,
    resolution: int = 64,
    steps: list[int] | None = None,
    views_per_step: int | None = None,
    lr: float = 0.1,
    smoothness: float = 0.0,
    fill: float = 0.5,
    coarse_to_fine: bool = True,
    depth_samples: int | None = None,
    refine_cameras: bool = False,
    camera_lr: float = 5e-3,
    refine_focal: bool = False,
    perturb_rotation: float = 0.0,
    perturb_translation: float = 0.0,
    perturb_seed: int = 0,
    reference_fit: bool = False,
    time_limit: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    restarts: int = 1,
) -> dict[str, Any]:
    """Fit object ``item_id`` of ``data``; write the volume, the hull and the report to
    ``out`` (default ``fit-<id>``) and return the report."""
    if threads:
        torch.set_num_threads(threads)
    sample = find_sample(data, item_id)
    true_cams, sil = sample["cameras"], sample["silhouettes"]
    box = VolumeBox()
    cams = true_cams
    perturbed = bool(perturb_rotation or perturb_translation)
    if perturbed:
        cams = perturb_cameras(true_cams, perturb_rotation, perturb_translation, seed=perturb_seed)
    # fit_volume's defaults, made explicit so that the reference fit runs the same schedule
    if views_per_step is None:
        views_per_step = 0 if refine_cameras else 8
    if steps is None:
        steps = default_steps(resolution, coarse_to_fine, refine_cameras)
    settings = {
        "resolution": resolution,
        "steps": steps,
        "views_per_step": views_per_step,
        "lr": lr,
        "smoothness": smoothness,
        "fill": fill,
        "coarse_to_fine": coarse_to_fine,
        "depth_samples": depth_samples,
        "camera_lr": camera_lr,
        "refine_focal": refine_focal,
        "time_limit": time_limit,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "restarts": restarts,
    }
    fit_kwargs = {
        k: v
        for k, v in settings.items()
        if k not in ("resolution", "threads", "refine_focal", "restarts")
    }
    result = fit_volume(
        cams,
        sil,
        resolution,
        box=box,
        refine_cameras=refine_cameras,
        refine_focal=refine_focal,
        restarts=restarts,
        **fit_kwargs,
    )
    # The reference hull carves with the cameras the fit ended with (refined ones, if any).
    hull = visual_hull(result.cameras, sil, resolution, box)
    occupancy = result.occupancy
    report: dict[str, Any] = {
        "data": str(data),
        "id": item_id,
        "category": sample.get("category"),
        "views": int(sil.shape[0]),
        "image_size": list(sil.shape[-2:]),
        "settings": settings,
        "refine_cameras": refine_cameras,
        "seconds": result.seconds,
        "steps": len(result.history),
        "misfit": result.misfit,
        "iou_vs_visual_hull": float(iou_3d(occupancy, hull)[0]),
        "silhouettes": {
            "fit": _silhouette_means(occupancy, result.cameras, sil, box),
            "visual_hull": _silhouette_means(hull, result.cameras, sil, box),
        },
        "loss": [
            {"step": h["step"], "resolution": h["resolution"], "loss": h["loss"]}
            for h in result.history[:: max(1, len(result.history) // 50)]
        ],
    }
    if "voxels" in sample:
        gt = sample["voxels"][None]
        report["iou_3d"] = {
            "fit": float(iou_3d(occupancy, gt)[0]),
            "visual_hull": float(iou_3d(hull, gt)[0]),
            "ground_truth_resolution": int(gt.shape[-1]),
        }
    if perturbed:
        report["perturbation"] = {
            "rotation_deg": perturb_rotation,
            "translation": perturb_translation,
            "seed": perturb_seed,
            "start_error": camera_errors(cams, true_cams),
            "final_error": camera_errors(result.cameras, true_cams),
        }
        if result.correction is not None:
            report["perturbation"]["correction"] = result.correction.summary()
        if "voxels" in sample:
            # What the hull of the disturbed cameras would give, and the hull of the truth.
            for name, c in (
                ("visual_hull_start_cameras", cams),
                ("visual_hull_true_cameras", true_cams),
            ):
                report["iou_3d"][name] = float(iou_3d(visual_hull(c, sil, resolution, box), gt)[0])
    if reference_fit:
        ref = fit_volume(true_cams, sil, resolution, box=box, **fit_kwargs)
        ref_sil = _silhouette_means(ref.occupancy, true_cams, sil, box)
        report["reference_fit"] = {
            "seconds": ref.seconds,
            "silhouettes": ref_sil,
            "silhouette_iou_gap": ref_sil["iou"] - report["silhouettes"]["fit"]["iou"],
            **({"iou_3d": float(iou_3d(ref.occupancy, gt)[0])} if "voxels" in sample else {}),
        }
    out_dir = Path(out) if out is not None else Path(f"fit-{item_id}")
    save_volume(out_dir / "volume.npz", result)
    np.savez_compressed(
        out_dir / "visual_hull.npz",
        occupancy=hull[0, 0].numpy().astype(np.uint8),
        box_center=np.asarray(box.center),
        box_size=np.asarray(box.size),
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['id']}: fitted {report['settings']['resolution']}^3 in "
        f"{report['seconds']:.1f} s ({report['steps']} steps)",
        f"  3D IoU vs visual hull: {report['iou_vs_visual_hull']:.4f}",
    ]
    if "iou_3d" in report:
        lines.append(
            f"  3D IoU vs ground truth: fit {report['iou_3d']['fit']:.4f}, "
            f"visual hull {report['iou_3d']['visual_hull']:.4f}"
        )
    sil = report["silhouettes"]
    lines.append(
        f"  mean silhouette IoU: fit {sil['fit']['iou']:.4f}, "
        f"visual hull {sil['visual_hull']['iou']:.4f}"
    )
    if "perturbation" in report:
        p = report["perturbation"]
        lines.append(
            f"  cameras vs true: rotation {p['start_error']['rotation_deg_mean']:.2f} -> "
            f"{p['final_error']['rotation_deg_mean']:.2f} deg, centre "
            f"{p['start_error']['centre_mean']:.4f} -> {p['final_error']['centre_mean']:.4f}"
        )
    if "reference_fit" in report:
        r = report["reference_fit"]
        lines.append(
            f"  with the true cameras: silhouette IoU {r['silhouettes']['iou']:.4f} "
            f"(gap {r['silhouette_iou_gap']:+.4f})"
        )
    return "\n".join(lines)


def _steps(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers like 100,60; got {text!r}") from err
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"steps must be >= 0; got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder holding the object")
    parser.add_argument("--id", required=True, dest="item_id", help="the object's id")
    parser.add_argument("--out", help="output folder (default: fit-<ID>)")
    parser.add_argument("--resolution", type=int, default=64, help="voxel grid R (default 64)")
    parser.add_argument(
        "--steps", type=_steps, help="Adam steps per stage, e.g. 100,60 (coarse, fine)"
    )
    parser.add_argument(
        "--views-per-step",
        type=int,
        help="views per step (default 8, all with --refine-cameras; 0: all)",
    )
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate of the logits")
    parser.add_argument("--smoothness", type=float, default=0.0, help="smoothness prior weight")
    parser.add_argument("--fill", type=float, default=0.5, help="occupancy prior weight")
    parser.add_argument(
        "--no-coarse-to-fine", action="store_true", help="fit at the final grid only"
    )
    parser.add_argument("--depth-samples", type=int, help="samples per ray (default 1.5 R)")
    parser.add_argument(
        "--refine-cameras", action="store_true", help="also fit small camera corrections"
    )
    parser.add_argument("--camera-lr", type=float, default=5e-3, help="learning rate of them")
    parser.add_argument(
        "--refine-focal", action="store_true", help="with --refine-cameras, refine focals too"
    )
    parser.add_argument(
        "--perturb-rotation", type=float, default=0.0, help="disturb each camera by DEG degrees"
    )
    parser.add_argument(
        "--perturb-translation",
        type=float,
        default=0.0,
        help="move each camera centre by this fraction of its distance",
    )
    parser.add_argument("--perturb-seed", type=int, default=0, help="seed of the disturbance")
    parser.add_argument(
        "--reference-fit",
        action="store_true",
        help="also fit with the true cameras and report the silhouette IoU gap",
    )
    parser.add_argument(
        "--restarts",
        type=int,
        default=1,
        help="fit N times (learning rate halved each time) and keep the best fit to the "
        "silhouettes; 2 helps camera refinement out of local minima",
    )
    parser.add_argument("--time-limit", type=float, help="stop fitting after SECONDS")
    parser.add_argument("--seed", type=int, default=0, help="seed of the view subsets")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    try:
        report = fit(
            args.data,
            args.item_id,
            args.out,
            resolution=args.resolution,
            steps=args.steps,
            views_per_step=args.views_per_step,
            lr=args.lr,
            smoothness=args.smoothness,
            fill=args.fill,
            coarse_to_fine=not args.no_coarse_to_fine,
            depth_samples=args.depth_samples,
            refine_cameras=args.refine_cameras,
            camera_lr=args.camera_lr,
            refine_focal=args.refine_focal,
            perturb_rotation=args.perturb_rotation,
            perturb_translation=args.perturb_translation,
            perturb_seed=args.perturb_seed,
            reference_fit=args.reference_fit,
            time_limit=args.time_limit,
            seed=args.seed,
            threads=args.threads,
            restarts=args.restarts,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(_summary(report))
    out = Path(args.out) if args.out else Path(f"fit-{args.item_id}")
    print(f"wrote {out / 'volume.npz'}, {out / 'visual_hull.npz'} and {out / 'report.json'}")
    return 0
