"""The sample every persp3d dataset yields, and ``collate`` for ``DataLoader`` batches.

Last step of the data path before training: dataset item -> sample dict -> batch dict
-> ``OccupancyPredictor`` + ``PerspectiveTransformer`` + silhouette loss.

A sample is a ``dict`` with

    ``images``       ``(V, 3, H, W)`` float32 RGB in [0, 1]
    ``silhouettes``  ``(V, 1, H, W)`` float32 in [0, 1]
    ``cameras``      :class:`persp3d.Cameras` of batch shape ``(V,)`` and ``image_size (H, W)``
    ``voxels``       ``(1, R, R, R)`` float32 occupancy in [0, 1] (evaluation only; absent
                     when the dataset has none)
    ``depth``        ``(V, 1, H, W)`` float32 camera-space z, 0 where empty (optional)
    ``category``     ``str``; ``id``: ``str`` unique within the category
    ``box``          :class:`persp3d.VolumeBox` the object fills, in the world of the
                     cameras (optional: imported captures keep their own world units;
                     absent means ``VolumeBox()``: use ``sample.get("box", VolumeBox())``)
    ``up``           ``(3,)`` float32 world up direction (optional; absent means ``+y``)

Convention: cameras as in :mod:`persp3d.cameras`; voxels ``(1, D, H, W)`` with D <-> z,
H <-> y, W <-> x, filling ``VolumeBox()`` (``[-0.5, 0.5]^3``), voxel ``(k, j, i)`` centred at
``-0.5 + (i + 0.5, j + 0.5, k + 0.5) / R``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from persp3d._checks import check_shape
from persp3d.cameras import Cameras
from persp3d.volume import VolumeBox

__all__ = ["check_sample", "collate", "decode_item", "encode_item"]

SAMPLE_KEYS = (
    "images",
    "silhouettes",
    "cameras",
    "voxels",
    "depth",
    "category",
    "id",
    "box",
    "up",
)


def check_sample(sample: dict[str, Any]) -> dict[str, int]:
    """Check a sample's keys, shapes and ranges; returns the sizes ``V, H, W`` (and ``R``).

    Raises:
        ValueError: naming the key and what is wrong.
    """
    for key in ("images", "silhouettes", "cameras", "category", "id"):
        if key not in sample:
            raise ValueError(f"sample misses {key!r}; it has {sorted(sample)}")
    sizes = check_shape(sample["images"], "V 3 H W", "images")
    sil = check_shape(sample["silhouettes"], "V 1 H W", "silhouettes")
    if (sil["V"], sil["H"], sil["W"]) != (sizes["V"], sizes["H"], sizes["W"]):
        raise ValueError(
            f"silhouettes {tuple(sample['silhouettes'].shape)} do not match images "
            f"{tuple(sample['images'].shape)}"
        )
    cams = sample["cameras"]
    if not isinstance(cams, Cameras) or tuple(cams.batch_shape) != (sizes["V"],):
        raise ValueError(f"cameras must be a Cameras of batch shape ({sizes['V']},); got {cams!r}")
    if cams.image_size != (sizes["H"], sizes["W"]):
        raise ValueError(
            f"cameras.image_size {cams.image_size} differs from the images' "
            f"{(sizes['H'], sizes['W'])}"
        )
    if "voxels" in sample:
        vox = check_shape(sample["voxels"], "1 R R R", "voxels")
        sizes["R"] = vox["R"]
    if "depth" in sample:
        check_shape(sample["depth"], f"{sizes['V']} 1 {sizes['H']} {sizes['W']}", "depth")
    if "box" in sample and not isinstance(sample["box"], VolumeBox):
        raise ValueError(f"box must be a VolumeBox; got {type(sample['box']).__name__}")
    if "up" in sample:
        check_shape(sample["up"], "3", "up")
    return sizes


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch for ``torch.utils.data.DataLoader(collate_fn=collate)``.

    Returns:
        ``images (B, V, 3, H, W)``, ``silhouettes (B, V, 1, H, W)``, ``cameras`` of batch
        shape ``(B, V)``, ``voxels (B, 1, R, R, R)`` and ``depth (B, V, 1, H, W)`` when every
        sample has them, ``category`` and ``id`` as lists of ``B`` strings; ``up (B, 3)``
        when every sample has one; ``box`` (one :class:`VolumeBox`) when every sample has
        the same box, else ``boxes`` (a list of ``B``, ``VolumeBox()`` where a sample has
        none).

    Raises:
        ValueError: if the samples differ in views, image size or voxel resolution.
    """
    if not batch:
        raise ValueError("batch must hold at least one sample")
    shapes = {(tuple(s["images"].shape), s["cameras"].image_size) for s in batch}
    if len(shapes) != 1:
        raise ValueError(
            f"samples must share (V, 3, H, W) and image size to be batched; got {sorted(shapes)}"
        )
    out: dict[str, Any] = {
        "images": torch.stack([s["images"] for s in batch]),  # (B, V, 3, H, W)
        "silhouettes": torch.stack([s["silhouettes"] for s in batch]),  # (B, V, 1, H, W)
        "cameras": Cameras.stack([s["cameras"] for s in batch]),  # (B, V)
        "category": [s["category"] for s in batch],
        "id": [s["id"] for s in batch],
    }
    for key in ("voxels", "depth"):
        if all(key in s for s in batch):
            sizes = {tuple(s[key].shape) for s in batch}
            if len(sizes) != 1:
                raise ValueError(
                    f"samples must share the {key} shape to be batched; got {sorted(sizes)}"
                )
            out[key] = torch.stack([s[key] for s in batch])
    if all("up" in s for s in batch):
        out["up"] = torch.stack([s["up"] for s in batch])  # (B, 3)
    if any("box" in s for s in batch):
        boxes = [s.get("box", VolumeBox()) for s in batch]
        if all(b == boxes[0] for b in boxes):
            out["box"] = boxes[0]
        else:
            out["boxes"] = boxes
    return out


# -- stored items (see persp3d.datasets.cache for the format) -------------------------------
def _to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] of values in [0, 1]; uint8 input is taken as already stored."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def encode_item(
    *,
    images: torch.Tensor,
    silhouettes: torch.Tensor,
    cameras: Cameras,
    category: str,
    item_id: str,
    voxels: dict[int, np.ndarray] | None = None,
    depth: torch.Tensor | None = None,
    box: VolumeBox | None = None,
    up: Sequence[float] | np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Arrays of one stored item (format of :mod:`persp3d.datasets.cache`).

    Args:
        images: ``(V, 3, H, W)`` in [0, 1]; silhouettes: ``(V, 1, H, W)`` in [0, 1] (or
            either as uint8 in [0, 255], stored as it is).
        cameras: batch shape ``(V,)``.
        voxels: resolution ``R`` -> ``(1, R, R, R)`` occupancy in [0, 1].
        depth: ``(V, 1, H, W)``.
        box: the object's box in the cameras' world (stored as float64 ``box_center (3,)``
            and ``box_size ()``, the cube's side); None: ``VolumeBox()`` is implied.
        up: ``(3,)`` world up direction (stored float64 ``up``); None: ``+y`` is implied.
        extra: more arrays stored as they are (e.g. ``view_names``); names must not clash.
    """
    cams = cameras.detach().cpu().float()
    arrays = {
        "images": _to_uint8(images),
        "silhouettes": _to_uint8(silhouettes),
        "K": cams.K.numpy().astype(np.float32),
        "R": cams.R.numpy().astype(np.float32),
        "t": cams.t.numpy().astype(np.float32),
        "category": np.array(str(category)),
        "id": np.array(str(item_id)),
    }
    if depth is not None:
        arrays["depth"] = np.asarray(depth, dtype=np.float16)
    for res, vox in (voxels or {}).items():
        arrays[f"voxels_{int(res)}"] = _to_uint8(vox)
    if box is not None:
        if len(set(box.size)) != 1:
            raise ValueError(f"box must be a cube to be stored; got size {box.size}")
        arrays["box_center"] = np.asarray(box.center, dtype=np.float64)
        arrays["box_size"] = np.asarray(box.size[0], dtype=np.float64)
    if up is not None:
        up_arr = np.asarray(up, dtype=np.float64).reshape(-1)
        if up_arr.shape != (3,) or not np.isfinite(up_arr).all() or not up_arr.any():
            raise ValueError(f"up must be a finite non-zero (3,) vector; got {up!r}")
        arrays["up"] = up_arr / np.linalg.norm(up_arr)
    for name, value in (extra or {}).items():
        if name in arrays:
            raise ValueError(f"extra array {name!r} clashes with a stored array")
        arrays[name] = np.asarray(value)
    return arrays


def voxel_resolutions(arrays: dict[str, np.ndarray] | Sequence[str]) -> list[int]:
    """The voxel resolutions stored in an item (sorted)."""
    names = arrays.keys() if isinstance(arrays, dict) else arrays
    return sorted(int(n.split("_", 1)[1]) for n in names if n.startswith("voxels_"))


def decode_item(
    arrays: dict[str, np.ndarray],
    *,
    voxel_resolution: int | None = None,
    views: Sequence[int] | None = None,
    with_depth: bool = True,
) -> dict[str, Any]:
    """A sample from stored arrays (``box`` and ``up`` included when stored).

    Args:
        voxel_resolution: which ``voxels_<R>`` to return (default: the lowest stored);
            0 leaves voxels out.
        views: indices of the views to keep (default all).
        with_depth: include ``depth`` if stored.
    """
    sel = slice(None) if views is None else np.asarray(list(views), dtype=np.int64)
    images = torch.from_numpy(arrays["images"][sel].astype(np.float32) / 255.0)
    H, W = images.shape[-2:]
    sample: dict[str, Any] = {
        "images": images,
        "silhouettes": torch.from_numpy(arrays["silhouettes"][sel].astype(np.float32) / 255.0),
        "cameras": Cameras(
            torch.from_numpy(np.array(arrays["K"][sel])),
            torch.from_numpy(np.array(arrays["R"][sel])),
            torch.from_numpy(np.array(arrays["t"][sel])),
            (int(H), int(W)),
            validate=False,
        ),
        "category": str(np.asarray(arrays["category"]).reshape(-1)[0]),
        "id": str(np.asarray(arrays["id"]).reshape(-1)[0]),
    }
    stored = voxel_resolutions(arrays)
    if voxel_resolution != 0 and stored:
        res = stored[0] if voxel_resolution is None else int(voxel_resolution)
        if res not in stored:
            raise ValueError(f"voxel_resolution {res} is not stored; available: {stored}")
        sample["voxels"] = torch.from_numpy(arrays[f"voxels_{res}"].astype(np.float32) / 255.0)
    if with_depth and "depth" in arrays:
        sample["depth"] = torch.from_numpy(arrays["depth"][sel].astype(np.float32))
    if "box_center" in arrays and "box_size" in arrays:
        sample["box"] = VolumeBox(
            center=np.asarray(arrays["box_center"], dtype=np.float64).reshape(3).tolist(),
            size=float(np.asarray(arrays["box_size"]).reshape(-1)[0]),
        )
    if "up" in arrays:
        sample["up"] = torch.from_numpy(np.asarray(arrays["up"], dtype=np.float32).reshape(3))
    return sample
