"""``persp3d data``: make, import and inspect multi-view datasets from the command line.

    persp3d data make procedural --out DIR [--categories ...] [--per-category N] [...]
    persp3d data make r2n2-layout --out DIR [--categories ...] [--per-category N] [--distinct K]
    persp3d data import MESH_DIR --out DIR [--strict] [...]
    persp3d data import-views SRC --format nerf|colmap|middlebury|dtu|r2n2 --out DIR [--masks DIR]
        [--key-color R,G,B --key-tolerance T] [--box cx,cy,cz,size] [--scale S] [--id NAME]
        [--split-from-format]
    persp3d data info DIR [--sheet PNG]

Plugged into ``persp3d`` by :mod:`persp3d.train.cli` (``add_arguments`` / ``run``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "contact_sheet", "dataset_info", "run"]


def _render_arguments(
    p: argparse.ArgumentParser,
    voxels_default: tuple[int, ...],
    elevation_range: tuple[float, float] | None = None,
) -> None:
    g = p.add_argument_group("views and ground truth")
    g.add_argument("--views", type=int, default=24, help="views per object (default 24)")
    g.add_argument("--image-size", type=int, default=64, help="square image side (default 64)")
    fixed = "" if elevation_range else " (default 30)"
    g.add_argument("--elevation", type=float, help=f"one elevation for every view, degrees{fixed}")
    drawn = f" (default {elevation_range[0]:g} {elevation_range[1]:g})" if elevation_range else ""
    g.add_argument(
        "--elevation-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help=f"draw each view's elevation uniformly from [LO, HI] degrees instead{drawn}",
    )
    p.set_defaults(default_elevation_range=elevation_range)
    g.add_argument("--jitter", type=float, default=0.0, help="azimuth/elevation noise, degrees")
    g.add_argument("--distance", type=float, default=2.0, help="camera distance (default 2)")
    g.add_argument("--fov", type=float, default=40.0, help="vertical fov, degrees (default 40)")
    g.add_argument(
        "--voxels",
        type=int,
        nargs="*",
        default=list(voxels_default),
        metavar="R",
        help=f"voxel resolutions to store (default {' '.join(map(str, voxels_default))})",
    )
    g.add_argument("--no-depth", action="store_true", help="do not store depth maps")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    p.add_argument("--overwrite", action="store_true", help="replace data made otherwise in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``make`` / ``import`` / ``info`` subcommands to ``parser``."""
    from persp3d.datasets.procedural import DEFAULT_ELEVATION_RANGE
    from persp3d.datasets.shapes import CATEGORIES

    sub = parser.add_subparsers(
        dest="data_command", metavar="{make,import,import-views,info}", required=True
    )
    make = sub.add_parser("make", help="generate a dataset (the procedural shapes)")
    make.add_argument(
        "kind", choices=["procedural", "r2n2-layout"],
        help="what to make: a persp3d dataset folder, or the procedural shapes in 3D-R2N2's "
        "ShapeNetRendering + ShapeNetVox32 layout (137 x 137, 24 views; only --categories, "
        "--per-category, --seed, --views, --distinct, --workers, --overwrite apply)",
    )  # fmt: skip
    make.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    make.add_argument(
        "--categories", nargs="+", choices=sorted(CATEGORIES), metavar="CAT",
        help=f"categories (default all: {', '.join(sorted(CATEGORIES))})",
    )  # fmt: skip
    make.add_argument(
        "--per-category", type=int, default=None, help="objects per category (default 100)"
    )
    make.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    make.add_argument(
        "--distinct", type=int, default=None, metavar="K",
        help="r2n2-layout: render K objects per category, write the rest as their copies "
        "(fast, for loading benchmarks; default: render every object)",
    )  # fmt: skip
    _render_arguments(make, (32, 64), DEFAULT_ELEVATION_RANGE)

    imp = sub.add_parser("import", help="render and voxelise a folder of meshes (ShapeNet or any)")
    imp.add_argument("mesh_dir", type=Path, help="ShapeNetCore v1/v2 folder or any mesh folder")
    imp.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    imp.add_argument(
        "--voxel-method", choices=["auto", "fill", "parity"], default="auto",
        help="ground-truth voxels (see persp3d.datasets.voxelize; default auto)",
    )  # fmt: skip
    imp.add_argument("--seed", type=int, default=0, help="seed of splits and view jitter")
    imp.add_argument("--strict", action="store_true", help="stop at the first bad file")
    _render_arguments(imp, (32,))

    _import_views_arguments(sub)

    info = sub.add_parser("info", help="counts, sizes and a contact sheet of a dataset")
    info.add_argument("dir", type=Path, help="dataset folder (or R2N2 / mesh folder)")
    info.add_argument(
        "--sheet", type=Path, default=None, help="contact sheet PNG (default DIR/contact_sheet.png)"
    )
    info.add_argument("--no-sheet", action="store_true", help="do not write a contact sheet")
    info.add_argument("--samples", type=int, default=8, help="samples on the sheet (default 8)")
    info.add_argument("--sheet-views", type=int, default=4, help="views per sample (default 4)")


def _floats(count: int | None, what: str):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if not values or (count is not None and len(values) != count):
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
        return values

    return parse


def _import_views_arguments(sub: Any) -> None:
    from persp3d.datasets.captures import CAPTURE_FORMATS, SILHOUETTE_MODES

    p = sub.add_parser(
        "import-views",
        help="import a calibrated capture (NeRF/Blender, COLMAP, Middlebury, DTU/IDR, R2N2 "
        "model) as one object of a persp3d dataset folder",
    )
    p.add_argument(
        "src", type=Path,
        help="nerf: scene folder (transforms_*.json); colmap: project folder (sparse/0 + "
        "images) or model folder; middlebury: *_par.txt or its folder; dtu: scan folder "
        "(image/, mask/, cameras.npz); r2n2: ShapeNetRendering/<synset>/<model> folder",
    )  # fmt: skip
    p.add_argument("--format", required=True, choices=CAPTURE_FORMATS, help="the capture's format")
    p.add_argument("--out", required=True, type=Path, help="dataset folder to write or extend")
    p.add_argument("--images", type=Path, default=None, help="image folder (colmap, middlebury)")
    g = p.add_argument_group(
        "silhouettes (default: masks, key colour, alpha, Middlebury threshold)"
    )
    g.add_argument("--silhouettes", choices=SILHOUETTE_MODES, default="auto", help="source")
    g.add_argument("--masks", type=Path, default=None, help="mask folder, matched by file stem")
    g.add_argument(
        "--key-color", type=_floats(3, "R,G,B"), default=None, metavar="R,G,B",
        help="background colour to key out (0-255)",
    )  # fmt: skip
    g.add_argument(
        "--key-tolerance", type=float, default=0.1, metavar="T",
        help="largest channel difference still background, 0-1 (default 0.1)",
    )  # fmt: skip
    g.add_argument(
        "--threshold", type=_floats(3, "GREY,DILATE,ERODE"), default=(0.19, 10, 7),
        metavar="GREY,DILATE,ERODE",
        help="threshold silhouettes: grey level, dilate and erode pixels (default 0.19,10,7)",
    )  # fmt: skip
    p.add_argument(
        "--box", type=_floats(4, "cx,cy,cz,size"), default=None, metavar="CX,CY,CZ,SIZE",
        help="the object's cube in the capture's world units (default: the format's bounds, "
        "else estimated from a coarse visual hull)",
    )  # fmt: skip
    p.add_argument("--margin", type=float, default=0.1, help="margin of an estimated box")
    p.add_argument("--scale", type=float, default=1.0, help="image scale factor (default 1)")
    p.add_argument("--id", default=None, dest="item_id", help="object id (default: scene name)")
    p.add_argument("--category", default="capture", help="category (default 'capture')")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="split")
    p.add_argument(
        "--split-from-format", action="store_true",
        help="one object per split the format gives its views (NeRF): ID, ID-val, ID-test",
    )  # fmt: skip
    p.add_argument("--no-sheet", action="store_true", help="do not write contact_sheet.png")


def _import_views(args: argparse.Namespace) -> int:
    from persp3d.datasets.captures import import_capture, read_capture

    scene = read_capture(args.src, args.format, images_dir=args.images)
    box = None if args.box is None else (args.box[:3], args.box[3])
    threshold = (args.threshold[0], int(args.threshold[1]), int(args.threshold[2]))
    result = import_capture(
        scene, args.out,
        silhouettes=args.silhouettes, mask_dir=args.masks, key_color=args.key_color,
        key_tolerance=args.key_tolerance, threshold=threshold, box=box, margin=args.margin,
        scale=args.scale, category=args.category, id=args.item_id, split=args.split,
        split_from_format=args.split_from_format, contact_sheet=not args.no_sheet,
    )  # fmt: skip
    H, W = result.image_size
    modes = ", ".join(sorted(set(result.silhouettes)))
    c, side = result.box.center, result.box.size[0]
    print(f"{args.out}: {scene.source} scene {scene.name!r}, {len(scene.views)} views of "
          f"{W}x{H}, silhouettes from {modes}")  # fmt: skip
    print(f"  box ({result.box_source}): centre ({c[0]:.4g}, {c[1]:.4g}, {c[2]:.4g}), "
          f"side {side:.4g}; up ({', '.join(f'{u:.3g}' for u in scene.up)})")  # fmt: skip
    for it in result.items:
        print(f"  object {it['category']}/{it['id']} ({it['split']}, {it['views']} views)")
    if result.contact_sheet is not None:
        print(f"  contact sheet: {result.contact_sheet} (check the masks and the box)")
    return 0


def _elevation_range(args: argparse.Namespace) -> tuple[float, float] | None:
    """``--elevation-range``, else None with ``--elevation``, else the command's default."""
    if args.elevation_range:
        return tuple(args.elevation_range)
    if args.elevation is not None:
        return None
    return args.default_elevation_range


def _render_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_views": args.views,
        "image_size": args.image_size,
        "elevation": 30.0 if args.elevation is None else args.elevation,
        "elevation_range": _elevation_range(args),
        "jitter": args.jitter,
        "distance": args.distance,
        "fov": args.fov,
        "voxel_resolutions": tuple(args.voxels or ()),
        "store_depth": not args.no_depth,
    }


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def run(args: argparse.Namespace) -> int:
    """Run ``persp3d data ...``; returns the exit status (0 ok, 1 bad input, 2 usage)."""
    from persp3d.datasets.cache import CorruptCacheError
    from persp3d.datasets.multiview import DataError, DataWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = _show_warning
        try:
            if args.data_command == "make":
                return _make(args)
            if args.data_command == "import":
                return _import(args)
            if args.data_command == "import-views":
                return _import_views(args)
            return _info(args)
        except (DataError, CorruptCacheError, FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted: what was written is whole; run the same command to resume",
                  file=sys.stderr)  # fmt: skip
            return 130


def _make(args: argparse.Namespace) -> int:
    import time

    if args.kind == "r2n2-layout":
        return _make_r2n2_layout(args)

    from persp3d.datasets.procedural import (
        DEFAULT_PER_CATEGORY,
        ProceduralConfig,
        generate_procedural,
    )
    from persp3d.datasets.shapes import CATEGORIES

    config = ProceduralConfig(
        categories=tuple(args.categories or CATEGORIES),
        per_category=DEFAULT_PER_CATEGORY if args.per_category is None else args.per_category,
        seed=args.seed,
        **_render_config_kwargs(args),
    )
    start = time.monotonic()
    manifest = generate_procedural(
        args.out,
        config,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    n = sum(1 for it in manifest["items"] if it.get("sha256"))
    print(f"{args.out}: {n} objects in {time.monotonic() - start:.1f} s")
    return 0


def _make_r2n2_layout(args: argparse.Namespace) -> int:
    from persp3d.datasets.r2n2_layout import write_r2n2_layout

    fixed = {"image_size": 64, "elevation": None, "elevation_range": None, "jitter": 0.0,
             "distance": 2.0, "fov": 40.0}  # fmt: skip
    given = [k for k, default in fixed.items() if getattr(args, k) != default]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(
            f"{flags}: not used by r2n2-layout (3D-R2N2's layout fixes 137 x 137 images and "
            "draws its viewpoints as 3D-R2N2 did)"
        )
    info = write_r2n2_layout(
        args.out,
        args.categories,
        4 if args.per_category is None else args.per_category,
        seed=args.seed,
        views=args.views,
        distinct=args.distinct,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"{args.out}: {info['models']} objects in 3D-R2N2's layout ({info['written']} written) "
          f"in {info['seconds']:.1f} s")  # fmt: skip
    return 0


def _import(args: argparse.Namespace) -> int:
    from persp3d.datasets.meshfolder import import_mesh_folder
    from persp3d.datasets.multiview import RenderConfig

    manifest = import_mesh_folder(
        args.mesh_dir,
        args.out,
        RenderConfig(**_render_config_kwargs(args)),
        voxel_method=args.voxel_method,
        seed=args.seed,
        strict=args.strict,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    n = sum(1 for it in manifest["items"] if it.get("sha256"))
    skipped = len(manifest.get("skipped", []))
    print(f"{args.out}: {n} meshes imported, {skipped} skipped")
    return 0


def dataset_info(path: str | Path) -> dict[str, Any]:
    """Counts and sizes of a dataset folder: ``{"kind", "items", "per_split", ...}``."""
    from persp3d.datasets.cache import read_manifest

    path = Path(path)
    manifest = read_manifest(path)
    per_split: dict[str, dict[str, int]] = {}
    n_bytes = 0
    for it in manifest["items"]:
        if it.get("sha256"):
            per_split.setdefault(it["split"], {}).setdefault(it["category"], 0)
            per_split[it["split"]][it["category"]] += 1
            n_bytes += int(it.get("bytes") or 0)
    config = manifest["config"]
    return {
        "kind": manifest["kind"],
        "format": f"{manifest['format']} v{manifest['version']}",
        "complete": manifest["complete"],
        "items": sum(sum(c.values()) for c in per_split.values()),
        "per_split": per_split,
        "views": config.get("n_views"),
        "image_size": config.get("image_size"),
        "voxel_resolutions": config.get("voxel_resolutions"),
        "bytes": n_bytes,
        "skipped": manifest.get("skipped", []),
    }


def contact_sheet(dataset: Any, path: str | Path, samples: int = 8, views: int = 4) -> Path:
    """Write a PNG with one row per sample: ``views`` images, then their silhouettes.

    Samples are spread over the dataset's categories (first items of each, in turn).
    """
    import numpy as np
    from PIL import Image

    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty; nothing to show")
    by_cat: dict[str, list[int]] = {}
    for i in range(n):
        by_cat.setdefault(_category(dataset, i), []).append(i)
    order: list[int] = []
    while len(order) < min(samples, n):
        for idx in by_cat.values():
            if idx and len(order) < min(samples, n):
                order.append(idx.pop(0))
    rows = []
    for i in order:
        s = dataset[i]
        V = s["images"].shape[0]
        pick = np.linspace(0, V - 1, min(views, V)).round().astype(int)
        tiles = [s["images"][v].permute(1, 2, 0).numpy() for v in pick]
        tiles += [np.repeat(s["silhouettes"][v].permute(1, 2, 0).numpy(), 3, axis=2) for v in pick]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=0.5) for r in rows]
    sheet = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path


def _category(dataset: Any, index: int) -> str:
    for attr in ("items", "entries", "models"):
        seq = getattr(dataset, attr, None)
        if isinstance(seq, list) and len(seq) == len(dataset):
            item = seq[index]
            return item["category"] if isinstance(item, dict) else getattr(item, "category", "")
    return ""


def _info(args: argparse.Namespace) -> int:
    from persp3d.datasets import load_dataset

    path = args.dir
    if (path / "manifest.json").is_file():
        info = dataset_info(path)
        print(f"{path}: {info['kind']} dataset, {info['format']}, "
              f"{'complete' if info['complete'] else 'INCOMPLETE'}")  # fmt: skip
        size = info["image_size"]
        size = f"{size[1]}x{size[0]}" if isinstance(size, list) else f"{size}x{size}"
        print(f"  objects: {info['items']} ({info['bytes'] / 2**20:.1f} MiB), "
              f"{info['views'] or 'various'} views of {size}, "
              f"voxels {info['voxel_resolutions']}")  # fmt: skip
        for split in ("train", "val", "test"):
            counts = info["per_split"].get(split, {})
            detail = ", ".join(f"{c} {k}" for c, k in sorted(counts.items()))
            print(f"  {split}: {sum(counts.values())}" + (f" ({detail})" if detail else ""))
        if info["skipped"]:
            print(f"  skipped inputs: {len(info['skipped'])}")
        extra = {"progress": False} if info["kind"] == "procedural" else {}
        dataset = load_dataset(path, split="all", **extra)
    else:
        dataset = load_dataset(path, split="all")
        print(f"{path}: {type(dataset).__name__}, {len(dataset)} objects")
    if not args.no_sheet and len(dataset):
        default = path / "contact_sheet.png"
        if (path / "manifest.json").is_file() and dataset_info(path)["kind"] == "capture":
            default = path / "info_sheet.png"  # contact_sheet.png is import-views' mask overlay
        sheet = contact_sheet(dataset, args.sheet or default, args.samples, args.sheet_views)
        print(f"  contact sheet: {sheet}")
    return 0
