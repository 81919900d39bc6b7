"""persp3d.datasets: multi-view data for training and checking (procedural shapes, mesh
folders, 3D-R2N2), with ground-truth silhouettes and voxels made from meshes.

Every dataset yields the same sample (see :mod:`persp3d.datasets.sample`): ``images
(V, 3, H, W)``, ``silhouettes (V, 1, H, W)``, ``cameras`` (a ``Cameras`` of shape ``(V,)``),
``voxels (1, R, R, R)`` (or absent), ``category``, ``id``; :func:`collate` batches them.

    >>> import torch
    >>> from persp3d.datasets import load_dataset, collate
    >>> train = load_dataset("procedural", split="train")      # generated on first use
    >>> loader = torch.utils.data.DataLoader(train, batch_size=8, collate_fn=collate)

Open3D, trimesh and PyTorch3D are imported inside the functions that need them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from persp3d.datasets.cache import FORMAT_NAME, FORMAT_VERSION, CorruptCacheError, read_manifest
from persp3d.datasets.meshfolder import MeshFolder, find_meshes, import_mesh_folder, load_mesh
from persp3d.datasets.multiview import (
    DataError,
    DataWarning,
    MultiViewFolder,
    RenderConfig,
    assign_splits,
    view_cameras,
)
from persp3d.datasets.procedural import (
    ProceduralConfig,
    ProceduralShapes,
    default_data_dir,
    generate_procedural,
    procedural_item,
)
from persp3d.datasets.r2n2 import R2N2, cameras_to_box_frame, parse_rendering_metadata
from persp3d.datasets.render import RenderOutput, render_mesh, render_silhouettes_pytorch3d
from persp3d.datasets.sample import check_sample, collate
from persp3d.datasets.shapes import CATEGORIES, Shape, make_shape
from persp3d.datasets.voxelize import voxelize_mesh

__all__ = [
    "CATEGORIES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "R2N2",
    "CorruptCacheError",
    "DataError",
    "DataWarning",
    "MeshFolder",
    "MultiViewFolder",
    "ProceduralConfig",
    "ProceduralShapes",
    "RenderConfig",
    "RenderOutput",
    "Shape",
    "assign_splits",
    "cameras_to_box_frame",
    "check_sample",
    "collate",
    "default_data_dir",
    "find_meshes",
    "generate_procedural",
    "import_mesh_folder",
    "load_dataset",
    "load_mesh",
    "make_shape",
    "parse_rendering_metadata",
    "procedural_item",
    "render_mesh",
    "render_silhouettes_pytorch3d",
    "view_cameras",
    "voxelize_mesh",
]


def load_dataset(
    path_or_name: str | os.PathLike, split: str = "train", **kwargs: Any
) -> torch.utils.data.Dataset:
    """A torch ``Dataset`` of samples from a name or a folder.

    Args:
        path_or_name: ``"procedural"`` (the embedded default, generated on first use under
            :func:`default_data_dir`), or a folder: a persp3d dataset folder (with
            ``manifest.json``: made by ``persp3d data make`` / ``import``), a 3D-R2N2 folder
            (``ShapeNetRendering``, or one holding it), or a folder of meshes.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        **kwargs: passed to the dataset class (:class:`ProceduralShapes`,
            :class:`MultiViewFolder`, :class:`R2N2` or :class:`MeshFolder`).

    Raises:
        FileNotFoundError: ``path_or_name`` is neither a known name nor a folder.
    """
    if str(path_or_name) == "procedural":
        return ProceduralShapes(kwargs.pop("root", None), split, **kwargs)
    path = Path(path_or_name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: not a folder, nor a dataset name (known names: 'procedural')"
        )
    if (path / "manifest.json").is_file():
        kind = read_manifest(path)["kind"]
        if kind == "procedural":
            return ProceduralShapes(path, split, **kwargs)
        return MultiViewFolder(path, split, **kwargs)
    if path.name == "ShapeNetRendering" or (path / "ShapeNetRendering").is_dir():
        return R2N2(path, split, **kwargs)
    return MeshFolder(path, split, **kwargs)
