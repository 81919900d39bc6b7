"""Exporting what the viewer shows: isosurfaces as PLY / OBJ / GLB / STL / OFF meshes
(trimesh), in world coordinates.

Beside the viewers in the data path: volume -> **mesh files** another tool opens in the
right place. Meshes are written in world coordinates (persp3d's world is right-handed, as
glTF's), so they need no metadata to sit where the volume was. Volumes themselves (``.npz``
with box and cameras, ``.binvox``) are written and read by :mod:`persp3d.datasets.volumes`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from persp3d.viewers.scene import isosurface
from persp3d.volume import VolumeBox

__all__ = ["MESH_FORMATS", "export_isosurface", "export_mesh"]

MESH_FORMATS = (".ply", ".obj", ".glb", ".stl", ".off")


def _out(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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
