"""Shape from silhouettes on the procedural shapes: the targets of ``persp3d fit``.

For one object per category (24 views at 64 x 64, the procedural default), in one run:

* ``fit``: a 64^3 volume fitted with the true cameras; its 3D IoU against the voxel-centre
  visual hull of the same views and against the exact ground-truth voxels (next to the
  hull's), and the wall-clock time;
* ``refine`` (with ``--refine``): cameras turned by 3 degrees about a random axis and moved
  by 2 % of their distance; the mean silhouette IoU of a joint volume + camera fit (its
  first start, and the better of two by misfit, as ``fit_volume(..., restarts=2)``), of a
  fit with the disturbed cameras kept fixed, and of a fit with the true cameras on the same
  schedule (the gap the target is about).

Prints one table and writes JSON.

    python benchmarks/bench_fitting.py [--categories car chair] [--refine] [--elevation 30]
        [--threads 2] [--json fitting.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    from persp3d.checking import check_projections
    from persp3d.datasets.procedural import ProceduralConfig, procedural_item
    from persp3d.datasets.sample import decode_item
    from persp3d.datasets.shapes import CATEGORIES
    from persp3d.fitting import default_steps, fit_volume, perturb_cameras, visual_hull
    from persp3d.metrics import iou_3d

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--refine", action="store_true", help="also measure camera refinement")
    parser.add_argument("--rotation", type=float, default=3.0, help="degrees")
    parser.add_argument("--translation", type=float, default=0.02, help="of the distance")
    parser.add_argument(
        "--elevation",
        type=float,
        help="views on one ring at this elevation (default: the procedural default's "
        "elevations drawn from [-30, 30] degrees)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="fitting.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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
            wrong = perturb_cameras(cams, args.rotation, args.translation, seed=0)
            same = {"steps": default_steps(R, True, True), "views_per_step": 0}
            # The starts of fit_volume(..., restarts=2), run one by one to report both.
            starts = [
                fit_volume(wrong, sil, R, refine_cameras=True, lr=0.1 / 2**k, **same)
                for k in range(2)
            ]
            results = {
                "true": fit_volume(cams, sil, R, **same),
                "fixed": fit_volume(wrong, sil, R, **same),
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
    with open(args.json, "w") as f:
        json.dump({"threads": args.threads, "rows": rows, "mean": summary}, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
