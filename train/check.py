"""``persp3d check``: a volume's projections against one object's observed silhouettes.

    persp3d check VOLUME --data DIR --id ID [--out DIR]

VOLUME is a volume file read by :mod:`persp3d.datasets.volumes` (``.npz`` with its box, as
``persp3d fit`` writes it; ``.npy``; ``.binvox``; a mesh, voxelised), or a training
checkpoint or run folder (its prediction from view ``--input-view`` of the object). The
volume fills ``--box`` when given, else the box its file states, else the object's box in
the dataset (imported captures have one), else ``VolumeBox()``. The volume is projected
with the object's cameras and compared with its silhouettes, view by view (IoU,
precision, recall, boundary F-score at 1 px); the convention slips of
:mod:`persp3d.checking` are tried; ``report.json`` and ``contact_sheet.png`` (per view: the
silhouette, the projection, and an overlay with false positives in red and false negatives
in blue) go to ``--out``, and a short table and the diagnosis are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.checking import (
    METRICS,
    CheckResult,
    Diagnosis,
    check_projections,
    default_depth_samples,
    diagnose,
)
from persp3d.volume import VolumeBox

__all__ = [
    "MESH_SUFFIXES",
    "add_arguments",
    "check",
    "contact_sheet",
    "find_sample",
    "load_volume",
    "parse_box",
    "resolve_box",
    "run",
]

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


# -- inputs ---------------------------------------------------------------------------------
def find_sample(data: str | Path, item_id: str) -> dict[str, Any]:
    """The sample ``item_id`` of the dataset folder ``data`` (any kind
    :func:`persp3d.datasets.load_dataset` reads), with its highest stored voxel grid.

    Raises:
        ValueError: no dataset in ``data``, or no object ``item_id`` in it (the message
            lists some of the ids there are).
    """
    from persp3d.datasets import load_dataset

    try:
        dataset = load_dataset(data, split="all")
    except FileNotFoundError as err:
        raise ValueError(f"--data {data}: {err}") from err
    ids = _dataset_ids(dataset)
    if item_id not in ids:
        shown = ", ".join(sorted(ids)[:8]) + (", ..." if len(ids) > 8 else "")
        raise ValueError(f"no object {item_id!r} in {data} ({len(ids)} objects: {shown})")
    index = ids.index(item_id)
    manifest = getattr(dataset, "manifest", None)
    stored = (manifest or {}).get("config", {}).get("voxel_resolutions") or []
    if stored and hasattr(dataset, "voxel_resolution"):
        dataset.voxel_resolution = max(stored)
    return dataset[index]


def _dataset_ids(dataset: Any) -> list[str]:
    for attr in ("items", "models", "entries"):
        entries = getattr(dataset, attr, None)
        if entries is not None:
            return [e["id"] if isinstance(e, dict) else e.id for e in entries]
    return [dataset[i]["id"] for i in range(len(dataset))]


def load_volume(
    path: str | Path,
    sample: dict[str, Any] | None = None,
    *,
    input_view: int = 0,
    resolution: int = 64,
) -> tuple[torch.Tensor, VolumeBox | None, str]:
    """Read a volume to check: a volume file through
    :func:`persp3d.datasets.volumes.load_volume` (``.npz`` with its box, ``.npy``,
    ``.binvox``, a mesh voxelised at ``resolution``), or a training checkpoint / run folder
    (its prediction from view ``input_view`` of ``sample``).

    Returns:
        ``(volume (1, 1, D, H, W) occupancy in [0, 1], box or None, kind)``; a box of None
        means the file does not say where the volume is (the sample's box applies, else
        ``VolumeBox()``).

    Raises:
        ValueError: a missing or unreadable file, or one of another kind.
    """
    from persp3d.datasets.volumes import load_volume as read_volume

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        try:
            return _predict_volume(path, sample, input_view), None, "checkpoint"
        except (OSError, EOFError, KeyError, RuntimeError) as err:
            raise ValueError(
                f"{path}: cannot predict a volume ({type(err).__name__}: {err})"
            ) from err
    volume_file = read_volume(path, resolution=resolution)
    kind = str(volume_file.meta.get("format", path.suffix.lstrip(".")))
    box = volume_file.box if volume_file.meta.get("box_from_file") else None
    return volume_file.tensor(), box, kind


def resolve_box(
    given: VolumeBox | None, file_box: VolumeBox | None, sample: dict[str, Any]
) -> tuple[VolumeBox, str]:
    """The box a checked volume fills, and where it came from: ``--box`` when given, else
    the volume file's own, else the sample's (imported captures carry one), else
    ``VolumeBox()``."""
    if given is not None:
        return given, "--box"
    if file_box is not None:
        return file_box, "file"
    if sample.get("box") is not None:
        return sample["box"], "sample"
    return VolumeBox(), "default"


def parse_box(values: Any) -> VolumeBox:
    """``--box CX CY CZ SIZE`` as a :class:`VolumeBox`.

    Raises:
        ValueError: not four finite numbers, or a size that is not positive.
    """
    numbers = [float(v) for v in values]
    if len(numbers) != 4:
        raise ValueError(f"--box takes CX CY CZ SIZE (4 numbers); got {len(numbers)}")
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"--box values must be finite; got {numbers}")
    if numbers[3] <= 0:
        raise ValueError(f"--box SIZE must be positive; got {numbers[3]:g}")
    return VolumeBox(numbers[:3], numbers[3])


def _predict_volume(path: Path, sample: dict[str, Any] | None, input_view: int) -> torch.Tensor:
    from persp3d.train.pipeline import Pipeline

    if sample is None:
        raise ValueError(f"{path}: a checkpoint needs the object's sample to predict from")
    n_views = sample["images"].shape[0]
    if not 0 <= input_view < n_views:
        raise ValueError(f"--input-view must be in [0, {n_views}); got {input_view}")
    return Pipeline.from_run(path).predict(sample, view=input_view)  # (1, 1, R, R, R)


# -- the contact sheet ----------------------------------------------------------------------
def _panel(mask: np.ndarray, scale: int) -> np.ndarray:
    return np.kron(mask, np.ones((scale, scale, 1), dtype=np.uint8))


def contact_sheet(
    result: CheckResult,
    path: str | Path,
    *,
    title: str = "",
    subtitle: str = "",
    views_per_row: int | None = None,
    panel_size: int = 128,
) -> Path:
    """Write a PNG with, per view, the observed silhouette, the projection, and an overlay.

    Overlay colours: white where both agree, red where only the projection covers (false
    positive), blue where only the silhouette does (false negative), black elsewhere.
    """
    from PIL import Image, ImageDraw, ImageFont

    sil = result.silhouettes[:, 0].cpu().numpy() > 0.5  # (V, H, W)
    proj_values = result.projections[:, 0].cpu().numpy()  # (V, H, W)
    proj = proj_values > result.threshold
    V, H, W = sil.shape
    scale = max(1, round(panel_size / max(H, W)))
    ph, pw = H * scale, W * scale
    per_row = views_per_row or max(1, min(V, math.ceil(math.sqrt(V * 1.5) / 1.5)))
    rows = math.ceil(V / per_row)
    gap, label_h = 6, 18
    cell_w, cell_h = 3 * pw + 2 * 2 + gap, ph + label_h + gap
    font = ImageFont.load_default(size=13)
    header = [line for line in (title, subtitle) if line]
    legend = "each view: silhouette | projection | overlay (white both, red projection only, blue silhouette only)"
    header_h = 8 + 18 * (len(header) + 1)
    width = max(per_row * cell_w + gap, 8 + 7 * len(legend))
    sheet = Image.new("RGB", (width, header_h + rows * cell_h + gap), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate([*header, legend]):
        draw.text((gap, 4 + 18 * k), line, fill=(235, 235, 235), font=font)
    for v in range(V):
        r, c = divmod(v, per_row)
        x0, y0 = gap + c * cell_w, header_h + r * cell_h
        iou = float(result.scores["iou"][v])
        draw.text((x0, y0), f"view {v}  IoU {iou:.3f}", fill=(235, 235, 235), font=font)
        gt = np.repeat(sil[v][..., None], 3, -1).astype(np.uint8) * 255
        pr = np.repeat((np.clip(proj_values[v], 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
        overlay = np.zeros((H, W, 3), dtype=np.uint8)
        overlay[sil[v] & proj[v]] = (255, 255, 255)
        overlay[proj[v] & ~sil[v]] = (230, 40, 40)
        overlay[sil[v] & ~proj[v]] = (40, 110, 255)
        for k, img in enumerate((gt, pr, overlay)):
            tile = Image.fromarray(_panel(img, scale))
            sheet.paste(tile, (x0 + k * (pw + 2), y0 + label_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# -- the command ----------------------------------------------------------------------------
def _table(result: CheckResult) -> str:
    head = f"{'view':>5} " + " ".join(f"{m:>10}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for v in range(result.n_views):
        lines.append(f"{v:>5} " + " ".join(f"{float(result.scores[m][v]):>10.3f}" for m in METRICS))
    lines.append("-" * len(head))
    lines.append(f"{'mean':>5} " + " ".join(f"{result.mean[m]:>10.3f}" for m in METRICS))
    return "\n".join(lines)


def _check_out(out_dir: Path) -> None:
    """Refuse an ``--out`` that cannot become a folder (it, or a parent, is a file) before
    any work is done."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"--out {out_dir}: {folder} is a file, not a folder")
            return


def check(
    volume_path: str | Path,
    data: str | Path,
    item_id: str,
    out: str | Path | None = None,
    *,
    depth_samples: int | None = None,
    input_view: int = 0,
    resolution: int = 64,
    threshold: float = 0.5,
    box: VolumeBox | None = None,
    run_diagnosis: bool = True,
) -> dict[str, Any]:
    """Check ``volume_path`` against object ``item_id`` of ``data``; write the report and
    the contact sheet to ``out`` (default ``check-<id>``) and return the report."""
    out_dir = Path(out) if out is not None else Path(f"check-{item_id}")
    _check_out(out_dir)
    sample = find_sample(data, item_id)
    volume, file_box, kind = load_volume(
        volume_path, sample, input_view=input_view, resolution=resolution
    )
    box, box_source = resolve_box(box, file_box, sample)
    depth_samples = depth_samples or default_depth_samples(volume.shape)
    cameras, silhouettes = sample["cameras"], sample["silhouettes"]
    result = check_projections(
        volume, cameras, silhouettes, box, depth_samples, threshold=threshold
    )
    diagnosis: Diagnosis | None = None
    if run_diagnosis:
        diagnosis = diagnose(volume, cameras, silhouettes, box, depth_samples, threshold=threshold)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"--out {out_dir}: cannot make the folder ({err.strerror or err})"
        ) from err
    report: dict[str, Any] = {
        "volume": str(volume_path),
        "volume_kind": kind,
        "volume_shape": list(volume.shape[-3:]),
        "box": box.to_dict(),
        "box_source": box_source,
        "data": str(data),
        "id": item_id,
        "category": sample.get("category"),
        "views": result.n_views,
        "image_size": list(silhouettes.shape[-2:]),
        "depth_samples": depth_samples,
        **({"input_view": input_view} if kind == "checkpoint" else {}),
        **result.to_dict(),
        "diagnosis": diagnosis.to_dict() if diagnosis else None,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    subtitle = diagnosis.verdict if diagnosis else ""
    contact_sheet(
        result,
        out_dir / "contact_sheet.png",
        title=f"{item_id}: {Path(volume_path).name}, mean IoU {result.mean['iou']:.3f}",
        subtitle=subtitle,
    )
    report["table"] = _table(result)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "volume", help="volume: .npy/.npz, .binvox, a mesh, or a checkpoint / run folder"
    )
    parser.add_argument("--data", required=True, help="dataset folder holding the object")
    parser.add_argument("--id", required=True, dest="item_id", help="the object's id")
    parser.add_argument("--out", help="report folder (default: check-<ID>)")
    parser.add_argument("--depth-samples", type=int, help="samples per ray (default 2 R, >= 64)")
    parser.add_argument(
        "--input-view", type=int, default=0, help="view a checkpoint predicts from (default 0)"
    )
    parser.add_argument(
        "--resolution", type=int, default=64, help="voxel grid of a mesh (default 64)"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="occupancy threshold (default 0.5)"
    )
    parser.add_argument(
        "--box",
        type=float,
        nargs=4,
        metavar=("CX", "CY", "CZ", "SIZE"),
        help="the volume's world box (default: the file's, else the object's in the dataset, "
        "else the unit cube at 0)",
    )
    parser.add_argument(
        "--no-diagnose", action="store_true", help="skip trying the convention slips"
    )


def run(args: argparse.Namespace) -> int:
    try:
        box = parse_box(args.box) if args.box else None
        report = check(
            args.volume,
            args.data,
            args.item_id,
            args.out,
            depth_samples=args.depth_samples,
            input_view=args.input_view,
            resolution=args.resolution,
            threshold=args.threshold,
            box=box,
            run_diagnosis=not args.no_diagnose,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report["table"])
    if report["diagnosis"]:
        print(f"diagnosis: {report['diagnosis']['verdict']}")
    out = Path(args.out) if args.out else Path(f"check-{args.item_id}")
    print(f"wrote {out / 'report.json'} and {out / 'contact_sheet.png'}")
    return 0
