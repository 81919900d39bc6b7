"""Exporting what the viewer shows: isosurfaces as PLY / OBJ / GLB / STL / OFF meshes
(trimesh), volumes as ``.npz`` (with their box and conventions) and ``.binvox``; and
reading volumes back.

Beside the viewers in the data path: volume -> **files** another tool opens in the right
place. Meshes are written in world coordinates (persp3d's world is +y up and right-handed,
as glTF's), so they need no metadata to sit where the volume was.

Convention:
    ``.npz`` (``format = "persp3d-volume"``, no pickled objects): ``volume (D, H, W)``
    float32 occupancy; ``box_center``, ``box_size``, ``box_min``, ``voxel_size`` as
    ``(x, y, z)`` float64; ``axes = "D,H,W = z,y,x"``; ``convention`` (the sentence of
    :data:`VOLUME_CONVENTION`). Voxel ``(k, j, i)``'s centre is
    ``box_min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size``.

    ``.binvox``: occupancy above the threshold, ``dim d d d``, ``translate = box.min``,
    ``scale = box`` side, so the standard reading (binvox's documentation, and
    binvox-rw-py: ``x = translate + scale * (i + 0.5) / d``) puts each voxel centre where
    persp3d has it. The box must be a cube and the volume ``R^3``. trimesh's binvox loader
    reads ``scale`` differently (``scale / (d - 1)`` per voxel), so it places the grid
    about half a voxel off at the far faces.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from persp3d.viewers.scene import _as_volume, isosurface
from persp3d.volume import VolumeBox

__all__ = [
    "MESH_FORMATS",
    "VOLUME_CONVENTION",
    "export_isosurface",
    "export_mesh",
    "load_volume",
    "load_volume_binvox",
    "load_volume_npz",
    "save_volume_binvox",
    "save_volume_npz",
]

MESH_FORMATS = (".ply", ".obj", ".glb", ".stl", ".off")
NPZ_FORMAT = "persp3d-volume"
NPZ_VERSION = 1
AXES = "D,H,W = z,y,x"
VOLUME_CONVENTION = (
    "persp3d volume: array (D, H, W) with axis W along world x, H along y, D along z; world "
    "right-handed, +y up; the volume fills the axis-aligned box [box_min, box_min + box_size]; "
    "voxel (k, j, i) has its centre at box_min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size, "
    "voxel_size = box_size / (W, H, D); values are occupancy in [0, 1]; sampled trilinearly "
    "with align_corners=False, 0 outside the box"
)


def _volume_np(volume: np.ndarray | torch.Tensor) -> np.ndarray:
    return _as_volume(volume, "volume")


def _out(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------
# Volumes
def save_volume_npz(
    path: str | os.PathLike, volume: np.ndarray | torch.Tensor, box: VolumeBox | None = None
) -> Path:
    """Write a volume ``(D, H, W)`` (or ``(1, 1, D, H, W)``) with its box and conventions
    as a compressed ``.npz`` that ``np.load(..., allow_pickle=False)`` reads."""
    box = box if box is not None else VolumeBox()
    vol = _volume_np(volume)
    D, H, W = vol.shape
    path = _out(path)
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            volume=vol.astype(np.float32),
            box_center=np.asarray(box.center, dtype=np.float64),
            box_size=np.asarray(box.size, dtype=np.float64),
            box_min=np.asarray(box.min, dtype=np.float64),
            voxel_size=np.asarray(box.voxel_size((D, H, W)), dtype=np.float64),
            axes=np.array(AXES),
            convention=np.array(VOLUME_CONVENTION),
            format=np.array(NPZ_FORMAT),
            version=np.array(NPZ_VERSION, dtype=np.int64),
        )
    return path


def load_volume_npz(path: str | os.PathLike) -> tuple[np.ndarray, VolumeBox]:
    """Read a volume from ``.npz``: one written by :func:`save_volume_npz` (with its box),
    or any archive holding a ``volume`` / ``occupancy`` / ``voxels`` array or a single
    array (placed in ``VolumeBox()``).

    Returns:
        ``volume (D, H, W)`` float32 and its box.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    if "format" in arrays and str(arrays["format"]) == NPZ_FORMAT:
        box = VolumeBox(center=arrays["box_center"].tolist(), size=arrays["box_size"].tolist())
        return np.asarray(arrays["volume"], dtype=np.float32), box
    for key in ("volume", "occupancy", "voxels"):
        if key in arrays:
            return np.asarray(arrays[key], dtype=np.float32), VolumeBox()
    if len(arrays) == 1:
        return np.asarray(next(iter(arrays.values())), dtype=np.float32), VolumeBox()
    raise ValueError(
        f"{path}: no volume in the archive (arrays {sorted(arrays)}; expected 'volume', "
        "'occupancy', 'voxels' or a single array)"
    )


def save_volume_binvox(
    path: str | os.PathLike,
    volume: np.ndarray | torch.Tensor,
    box: VolumeBox | None = None,
    threshold: float = 0.5,
) -> Path:
    """Write the voxels of ``volume`` ``(R, R, R)`` above ``threshold`` as ``.binvox``, with
    ``translate = box.min`` and ``scale = box`` side (see the module docstring)."""
    from persp3d.datasets.binvox import volume_to_binvox, write_binvox

    box = box if box is not None else VolumeBox()
    vol = _volume_np(volume)
    if len(set(vol.shape)) != 1:
        raise ValueError(f"binvox needs a cubic volume (R, R, R); got shape {vol.shape}")
    if len(set(box.size)) != 1:
        raise ValueError(f"binvox needs a cubic box (one scale); got size {box.size}")
    path = _out(path)
    write_binvox(path, volume_to_binvox(vol > threshold), translate=box.min, scale=box.size[0])
    return path


def load_volume_binvox(path: str | os.PathLike) -> tuple[np.ndarray, VolumeBox]:
    """Read a ``.binvox`` as ``volume (D, H, W)`` float32 in {0, 1} and the box of its
    header (the standard reading: the grid fills ``[translate, translate + scale]``)."""
    from persp3d.datasets.binvox import binvox_to_volume, read_binvox

    vox = read_binvox(path)  # raises ValueError naming the file
    if len(set(vox.data.shape)) != 1:
        raise ValueError(f"{path}: binvox dims must be equal; got {vox.data.shape}")
    volume = np.ascontiguousarray(binvox_to_volume(vox.data)).astype(np.float32)
    center = np.asarray(vox.translate, dtype=np.float64) + vox.scale / 2.0
    return volume, VolumeBox(center=center.tolist(), size=vox.scale)


def load_volume(path: str | os.PathLike) -> tuple[np.ndarray, VolumeBox]:
    """A volume and its box from ``.npz``, ``.npy``, ``.binvox`` or a ``.pt`` / ``.pth``
    file holding a tensor (or a dict with a ``volume`` tensor); leading 1-sized axes are
    dropped. Raises ``ValueError`` naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        volume, box = load_volume_npz(path)
    elif suffix == ".binvox":
        volume, box = load_volume_binvox(path)
    elif suffix == ".npy":
        try:
            volume, box = np.load(path, allow_pickle=False).astype(np.float32), VolumeBox()
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from err
    elif suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds on bad input
            raise ValueError(f"{path}: not a readable torch file ({err})") from err
        if isinstance(obj, dict) and isinstance(obj.get("volume"), torch.Tensor):
            obj = obj["volume"]
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{path}: holds a {type(obj).__name__}, not a volume tensor")
        volume, box = obj.detach().float().cpu().numpy(), VolumeBox()
    else:
        raise ValueError(f"{path}: unknown volume format {suffix!r} (.npz, .npy, .binvox, .pt)")
    while volume.ndim > 3 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected a (D, H, W) volume; got shape {volume.shape}")
    return volume, box


# ---------------------------------------------------------------------------------------
# Meshes
def export_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None = None,
) -> Path:
    """Write a triangle mesh (world coordinates) as PLY, OBJ, GLB, STL or OFF (by suffix).

    Args:
        vertices: ``(N, 3)`` world ``(x, y, z)``.
        faces: ``(F, 3)`` vertex indices, counter-clockwise from outside.
        vertex_colors: ``(N, 3)`` RGB in [0, 1], or None.
    """
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in MESH_FORMATS:
        raise ValueError(f"mesh path must end in one of {MESH_FORMATS}; got {str(path)!r}")
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise ValueError(f"{path}: nothing to write (the surface is empty)")
    colors = None
    if vertex_colors is not None:
        colors = (np.clip(np.asarray(vertex_colors, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
    path = _out(path)
    mesh.export(path)
    return path


def export_isosurface(
    path: str | os.PathLike,
    volume: np.ndarray | torch.Tensor,
    box: VolumeBox | None = None,
    threshold: float = 0.5,
    color: Sequence[float] | None = None,
) -> Path:
    """Write the ``threshold`` isosurface of ``volume`` ``(D, H, W)`` (world coordinates of
    ``box``) as a mesh file; see :func:`export_mesh` for the formats."""
    vertices, faces = isosurface(volume, box, threshold)
    if len(faces) == 0:
        raise ValueError(
            f"{path}: the volume has no surface at threshold {threshold} (nothing to write)"
        )
    colors = (
        None if color is None else np.tile(np.asarray(color, dtype=np.float64), (len(vertices), 1))
    )
    return export_mesh(path, vertices, faces, colors)
