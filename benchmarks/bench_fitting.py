"""Shape from silhouettes on the procedural shapes: the targets of ``persp3d fit``.

Two tables, in one run or apart:

* **per category** (default): for one object per category (24 views at 64 x 64, the
  procedural default), a 64^3 volume fitted with the true cameras: its 3D IoU against the
  voxel-centre visual hull of the same views and against the exact ground-truth voxels (next
  to the hull's), and the wall-clock time. With ``--refine``: cameras disturbed by
  ``--rotation-px`` / ``--translation-px`` pixels of image motion; the mean silhouette IoU of
  a joint volume + camera fit (its first start, and the better of two by misfit, as
  ``fit_volume(..., restarts=2)``), of a fit with the disturbed cameras kept fixed, and of a
  fit with the true cameras on the same schedule.
* **per scale** (``--scales``): camera refinement with default settings on the same object
  seen at two scales: ``unit`` (a unit box at the origin, cameras at distance 2 with a 40
  degree field of view) and ``metric`` (the object 0.1 m across, centred away from the origin
  at ``(0.31, -0.12, 0.74)`` m, cameras at 0.65 m with an 11 degree field of view: a
  tabletop capture in metres). Both get the same disturbance in pixels at the fit's image
  size (by default 4.6 px of rotation and 1.8 px of centre motion: 3 degrees and 2 % of the
  distance in the unit scene; the object moves 2-7 px). Prints the train-view silhouette IoU
  of the fit with the true cameras, with the disturbed ones kept fixed, with refinement
  (against its own refined cameras, and its volume seen through the true cameras), and the
  gap true - refined.

Prints the tables and writes JSON.

    python benchmarks/bench_fitting.py [--categories car chair] [--refine] [--elevation 30]
        [--threads 2] [--json fitting.json]
    python benchmarks/bench_fitting.py --scales [--categories car] [--resolution 64]
        [--views 12] [--image-size 64] [--set camera_prior=1e-4 ...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

# name: (box side, box centre, camera distance, vertical fov in degrees)
SCALES: dict[str, tuple[float, tuple[float, float, float], float, float]] = {
    "unit": (1.0, (0.0, 0.0, 0.0), 2.0, 40.0),
    "metric": (0.1, (0.31, -0.12, 0.74), 0.65, 11.0),
}


def similarity_cameras(cameras, scale: float, offset):
    """The cameras of a scene scaled by ``scale`` about the origin and then moved by
    ``offset``: ``X' = scale * X + offset`` gives ``R' = R``, ``t' = scale * t - R @ offset``
    (the camera frame is scaled too, which leaves every pixel where it was)."""
    from persp3d.cameras import Cameras

    offset_t = cameras.t.new_tensor(offset)
    t = scale * cameras.t - (cameras.R @ offset_t[:, None])[..., 0]  # (V, 3)
    return Cameras(cameras.K, cameras.R, t, cameras.image_size)


def scaled_scene(category: str, scale_name: str, views: int, image_size: int, resolution: int):
    """One procedural object at the scale ``scale_name``: ``(cameras, silhouettes, box)``."""
    from persp3d.datasets.procedural import ProceduralConfig, procedural_item
    from persp3d.datasets.sample import decode_item
    from persp3d.volume import VolumeBox

    size, centre, distance, fov = SCALES[scale_name]
    config = ProceduralConfig(
        categories=(category,), per_category=1, n_views=views, image_size=image_size,
        distance=distance / size, fov=fov, voxel_resolutions=(resolution,), store_depth=False,
    )  # fmt: skip
    item = decode_item(procedural_item(config, category, 0))
    cams = similarity_cameras(item["cameras"], size, centre)
    return cams, item["silhouettes"], VolumeBox(center=centre, size=size)


def disturbance(cameras, image_size, rotation_px: float, translation_px: float):
    """``perturb_cameras`` arguments (degrees, fraction of the distance) that move the image
    by ``rotation_px`` and ``translation_px`` pixels at ``image_size``."""
    from persp3d.fitting import pixel_angles

    pixel = float(pixel_angles(cameras, image_size).mean())  # radians per pixel
    return math.degrees(rotation_px * pixel), translation_px * pixel


def per_scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    from persp3d.checking import check_projections
    from persp3d.fitting import FitConfig, fit_volume, perturb_cameras

    rows = []
    header = (
        f"{'scale':7} {'category':10} {'px':>4} {'true':>7} {'fixed':>7} {'refined':>7} "
        f"{'@true':>7} {'gap':>7} {'rot deg':>7} {'shift':>9} {'seconds':>7}"
    )
    print(header, flush=True)
    for scale_name in args.scale_names:
        for category in args.categories:
            cams, sil, box = scaled_scene(
                category, scale_name, args.views, args.image_size, args.resolution
            )
            rotation, translation = disturbance(
                cams, sil.shape[-2:], args.rotation_px, args.translation_px
            )
            wrong = perturb_cameras(cams, rotation, translation, target=box.center, seed=0)
            refine = FitConfig(resolution=args.resolution, refine_cameras=True, **args.set)
            # the fits without refinement run the same schedule on every view
            same = FitConfig(
                resolution=args.resolution, steps=tuple(refine.stage_steps()), views_per_step=0
            )
            results = {
                "true": fit_volume(cams, sil, box=box, config=same),
                "fixed": fit_volume(wrong, sil, box=box, config=same),
                "refined": fit_volume(wrong, sil, box=box, config=refine),
            }
            row: dict[str, Any] = {
                "scale": scale_name,
                "category": category,
                "rotation_deg": rotation,
                "translation_of_distance": translation,
                "rotation_px": args.rotation_px,
                "translation_px": args.translation_px,
            }
            for name, result in results.items():
                score = check_projections(result.occupancy, result.cameras, sil, box).mean
                row[f"silhouette_iou_{name}"] = score["iou"]
            refined = results["refined"]
            row["silhouette_iou_refined_true_cameras"] = check_projections(
                refined.occupancy, cams, sil, box
            ).mean["iou"]
            row["gap"] = row["silhouette_iou_true"] - row["silhouette_iou_refined"]
            row["correction"] = refined.correction.summary()
            row["seconds_refined"] = refined.seconds
            shift = row["correction"]["translation_mean"]
            rows.append(row)
            print(
                f"{scale_name:7} {category:10} {args.rotation_px + args.translation_px:4.1f} "
                f"{row['silhouette_iou_true']:7.4f} {row['silhouette_iou_fixed']:7.4f} "
                f"{row['silhouette_iou_refined']:7.4f} "
                f"{row['silhouette_iou_refined_true_cameras']:7.4f} {row['gap']:+7.4f} "
                f"{row['correction']['rotation_deg_mean']:7.3f} {shift:9.2e} "
                f"{refined.seconds:7.1f}",
                flush=True,
            )
    return rows


def per_category(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    from persp3d.checking import check_projections
    from persp3d.datasets.procedural import ProceduralConfig, procedural_item
    from persp3d.datasets.sample import decode_item
    from persp3d.fitting import FitConfig, fit_volume, perturb_cameras, visual_hull
    from persp3d.metrics import iou_3d

    R = args.resolution
    views = {} if args.elevation is None else {"elevation": args.elevation, "elevation_range": None}
    config = ProceduralConfig(
        categories=tuple(args.categories), per_category=1, voxel_resolutions=(R,), **views
    )
    rows = []
    header = f"{'category':11} {'vs hull':>8} {'fit/GT':>7} {'hull/GT':>7} {'seconds':>7}"
    if args.refine:
        header += (
            f" {'sil true':>8} {'fixed':>7} {'1 start':>7} {'gap':>7} {'best/2':>7} {'gap':>7}"
            f" {'rot deg':>7}"
        )
    print(header, flush=True)
    for category in args.categories:
        item = decode_item(procedural_item(config, category, 0))
        cams, sil, gt = item["cameras"], item["silhouettes"], item["voxels"][None]
        hull = visual_hull(cams, sil, R)
        fit = fit_volume(cams, sil, R)
        row = {
            "category": category,
            "iou_vs_visual_hull": iou_3d(fit.occupancy, hull).item(),
            "iou_3d_fit": iou_3d(fit.occupancy, gt).item(),
            "iou_3d_visual_hull": iou_3d(hull, gt).item(),
            "seconds": fit.seconds,
        }
        line = (
            f"{category:11} {row['iou_vs_visual_hull']:8.4f} {row['iou_3d_fit']:7.4f} "
            f"{row['iou_3d_visual_hull']:7.4f} {row['seconds']:7.1f}"
        )
        if args.refine:
            rotation, translation = disturbance(
                cams, sil.shape[-2:], args.rotation_px, args.translation_px
            )
            wrong = perturb_cameras(cams, rotation, translation, seed=0)
            refine = FitConfig(resolution=R, refine_cameras=True)
            same = FitConfig(resolution=R, steps=tuple(refine.stage_steps()), views_per_step=0)
            # The starts of fit_volume(..., restarts=2), run one by one to report both.
            starts = [fit_volume(wrong, sil, config=refine, lr=refine.lr / 2**k) for k in range(2)]
            results = {
                "true": fit_volume(cams, sil, config=same),
                "fixed": fit_volume(wrong, sil, config=same),
                "refined_1": starts[0],
                "refined": min(starts, key=lambda r: r.misfit),
            }
            for name, result in results.items():
                score = check_projections(result.occupancy, result.cameras, sil).mean["iou"]
                row[f"silhouette_iou_{name}"] = score
            row["silhouette_iou_gap_1"] = (
                row["silhouette_iou_true"] - row["silhouette_iou_refined_1"]
            )
            row["silhouette_iou_gap"] = row["silhouette_iou_true"] - row["silhouette_iou_refined"]
            row["refine_seconds"] = sum(r.seconds for r in starts)
            row["correction"] = results["refined"].correction.summary()
            line += (
                f" {row['silhouette_iou_true']:8.4f} {row['silhouette_iou_fixed']:7.4f} "
                f"{row['silhouette_iou_refined_1']:7.4f} {row['silhouette_iou_gap_1']:+7.4f} "
                f"{row['silhouette_iou_refined']:7.4f} {row['silhouette_iou_gap']:+7.4f} "
                f"{row['correction']['rotation_deg_mean']:7.2f}"
            )
        rows.append(row)
        print(line, flush=True)

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    summary = {k: mean(k) for k in rows[0] if isinstance(rows[0][k], float)}
    line = (
        f"{'mean':11} {summary['iou_vs_visual_hull']:8.4f} {summary['iou_3d_fit']:7.4f} "
        f"{summary['iou_3d_visual_hull']:7.4f} {summary['seconds']:7.1f}"
    )
    if args.refine:
        line += (
            f" {summary['silhouette_iou_true']:8.4f} {summary['silhouette_iou_fixed']:7.4f} "
            f"{summary['silhouette_iou_refined_1']:7.4f} {summary['silhouette_iou_gap_1']:+7.4f} "
            f"{summary['silhouette_iou_refined']:7.4f} {summary['silhouette_iou_gap']:+7.4f}"
        )
    print(line)
    return rows, summary


def _option(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    parsed: Any = value
    for kind in (int, float):
        try:
            parsed = kind(value)
            break
        except ValueError:
            pass
    return name, {"true": True, "false": False}.get(value.lower(), parsed)


def main(argv: list[str] | None = None) -> int:
    # persp3d before torch, so that torch's idle OpenMP threads do not spin
    from persp3d.datasets.shapes import CATEGORIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--categories", nargs="+", help="default: all (per category), car")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--refine", action="store_true", help="also measure camera refinement")
    parser.add_argument(
        "--scales", action="store_true", help="camera refinement at each scale instead"
    )
    parser.add_argument("--scale-names", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--views", type=int, default=12, help="views per scene (--scales)")
    parser.add_argument("--image-size", type=int, default=64, help="image side (--scales)")
    parser.add_argument("--rotation-px", type=float, default=4.6, help="disturbance, pixels")
    parser.add_argument("--translation-px", type=float, default=1.8, help="disturbance, pixels")
    parser.add_argument(
        "--elevation",
        type=float,
        help="views on one ring at this elevation (default: the procedural default's "
        "elevations drawn from [-30, 30] degrees)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="FitConfig fields of the refining fit (--scales), e.g. camera_prior=1e-4",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="fitting.json")
    args = parser.parse_args(argv)
    args.set = dict(_option(text) for text in args.set)
    import torch

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"threads": args.threads}
    if args.scales:
        args.categories = args.categories or ["car"]
        out["scales"] = {k: SCALES[k] for k in args.scale_names}
        out["rows"] = per_scale(args)
    else:
        args.categories = args.categories or list(CATEGORIES)
        out["rows"], out["mean"] = per_category(args)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
