"""What ``persp3d view PATH`` opens: volume files, meshes, dataset samples and a run's
predictions, each turned into :class:`~persp3d.viewers.scene.ViewItem` s.

The front of the viewing path: **files on disk** -> items -> scene -> a window, a picture,
a page or an export. A source is a sequence of items, read lazily (one sample, one network
forward pass at a time), so a viewer can step through a whole dataset.

Convention: volumes are ``(D, H, W)`` occupancy in [0, 1] in a
:class:`~persp3d.VolumeBox` (W along world x, H along y, D along z); volume files are read
by :mod:`persp3d.datasets.volumes` (``.npz`` files carry their box, cameras and up
direction; plain arrays are placed in ``VolumeBox()``); dataset samples carry theirs in
``sample["box"]`` and ``sample["up"]`` when they have them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persp3d.viewers.scene import ViewItem
from persp3d.volume import VolumeBox

__all__ = [
    "MESH_SUFFIXES",
    "VOLUME_SUFFIXES",
    "ItemSource",
    "dataset_source",
    "load_mesh_item",
    "load_volume_item",
    "open_source",
    "run_source",
]

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")
VOLUME_SUFFIXES = (".npz", ".npy", ".binvox", ".pt", ".pth")


@dataclass
class ItemSource:
    """A lazily read sequence of :class:`ViewItem` s.

    Attributes:
        get: item of an index.
        count: number of items.
        keys: one name per item (e.g. ``"chair/chair_00003"``), for :meth:`index_of`.
        description: what the source is, for messages.
    """

    get: Callable[[int], ViewItem]
    count: int
    keys: list[str]
    description: str

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> ViewItem:
        if not -self.count <= index < self.count:
            raise IndexError(f"index must lie in [0, {self.count}); got {index}")
        return self.get(index % self.count)

    def index_of(self, key: str) -> int:
        """Index of the item named ``key`` (an id, or ``category/id``)."""
        for i, name in enumerate(self.keys):
            if key == name or name.endswith("/" + key):
                return i
        shown = ", ".join(self.keys[:8]) + (" ..." if len(self.keys) > 8 else "")
        raise ValueError(f"no item {key!r} in {self.description}; items: {shown}")


def _single(item: ViewItem, key: str, description: str) -> ItemSource:
    return ItemSource(lambda _i: item, 1, [key], description)


# ---------------------------------------------------------------------------------------
# Files
def load_volume_item(path: str | os.PathLike, logits: bool = False) -> ViewItem:
    """A volume file as an item, read by :func:`persp3d.datasets.volumes.load_volume`
    (``.npz`` with its box and, when the file has them, its cameras and up direction;
    ``.npy``, ``.binvox``, a ``.pt`` tensor). A file with cameras but no ``up`` is stood
    upright in the direction its cameras agree is up
    (:func:`persp3d.datasets.formats.scene.estimate_up`: upright cameras have horizontal
    image x axes). With ``logits`` the file's array holds log-odds and is passed through a
    sigmoid.

    Raises:
        ValueError: the file is unreadable or holds no ``(D, H, W)`` volume (the message
            names the file).
    """
    from persp3d.datasets.volumes import load_volume

    path = Path(path)
    vf = load_volume(path, logits=logits)
    up = vf.up
    if up is None and vf.cameras is not None:
        from persp3d.datasets.formats.scene import estimate_up

        up = estimate_up(
            vf.cameras.R.detach().double().expand(*vf.cameras.batch_shape, 3, 3).numpy()
        )
    try:
        return ViewItem(
            volume=vf.occupancy,
            box=vf.box,
            cameras=vf.cameras,
            up=None if up is None else tuple(float(u) for u in up),
            title=path.name + ("  with its cameras" if vf.cameras is not None else ""),
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def load_mesh_item(path: str | os.PathLike, resolution: int = 32) -> ViewItem:
    """A mesh file as an item: the mesh is the surface, and its voxelisation at
    ``resolution`` the volume (for the voxel views and exports), in the box of
    :func:`persp3d.datasets.volumes.mesh_box`."""
    from persp3d.datasets.meshfolder import load_mesh
    from persp3d.datasets.volumes import mesh_box
    from persp3d.datasets.voxelize import voxelize_mesh

    path = Path(path)
    vertices, faces, _colors = load_mesh(path)  # raises ValueError naming the file
    box = mesh_box(vertices)
    volume = voxelize_mesh(vertices, faces, resolution, box)[0]
    return ViewItem(volume=volume, box=box, mesh=(vertices, faces), title=path.name)


# ---------------------------------------------------------------------------------------
# Datasets and runs
def _sample_keys(dataset: Any) -> list[str]:
    items = getattr(dataset, "items", None)
    if isinstance(items, list) and items and isinstance(items[0], dict) and "id" in items[0]:
        return [f"{it.get('category', '')}/{it['id']}" for it in items]
    keys = []
    for i in range(len(dataset)):
        s = dataset[i]
        keys.append(f"{s.get('category', '')}/{s.get('id', i)}")
    return keys


def _sample_parts(sample: dict[str, Any]) -> dict[str, Any]:
    voxels = sample.get("voxels")
    up = sample.get("up")
    return {
        "voxels": None if voxels is None else voxels[0].float().numpy(),
        "cameras": sample["cameras"],
        "silhouettes": sample["silhouettes"][:, 0].float().numpy(),
        "name": f"{sample.get('category', '')}/{sample.get('id', '')}",
        "box": sample.get("box") or VolumeBox(),
        "up": None if up is None else tuple(float(u) for u in np.asarray(up).reshape(-1)),
    }


def _hull(parts: dict[str, Any], resolution: int = 48) -> np.ndarray:
    """``(R, R, R)`` visual hull of a sample's silhouettes in its box (a capture has no
    voxels; the hull shows where the silhouettes put the object)."""
    import torch

    from persp3d.fitting import visual_hull

    sils = torch.from_numpy(parts["silhouettes"])[:, None]  # (V, 1, H, W)
    with torch.no_grad():
        hull = visual_hull(parts["cameras"], sils, resolution, parts["box"])
    return hull.reshape(resolution, resolution, resolution).float().numpy()


def dataset_source(dataset: Any, description: str) -> ItemSource:
    """The samples of a dataset as items: the ground-truth voxels as the volume, with the
    cameras and their ground-truth silhouettes (the projected silhouettes are the voxels'
    own, so the picture checks the data's consistency), in the sample's box and upright in
    its ``up`` (imported captures carry both). A sample without voxels (a capture) shows
    the visual hull of its silhouettes instead."""
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{description} holds no samples")
    keys = _sample_keys(dataset)

    def get(i: int) -> ViewItem:
        parts = _sample_parts(dataset[i])
        voxels = parts["voxels"]
        title = f"{parts['name']}  ground truth"
        if voxels is None:
            voxels = _hull(parts)
            title = f"{parts['name']}  visual hull of its {len(parts['cameras'])} silhouettes"
        return ViewItem(
            volume=voxels,
            box=parts["box"],
            cameras=parts["cameras"],
            silhouettes=parts["silhouettes"],
            up=parts["up"],
            title=title,
        )

    return ItemSource(get, n, keys, description)


def run_source(
    run: str | os.PathLike,
    data: str | os.PathLike | None = None,
    split: str = "test",
    input_view: int | None = None,
) -> ItemSource:
    """A trained run's predictions on a split, with the ground truth beside them.

    Args:
        run: a run folder (its ``best.pt``, else ``last.pt``) or a checkpoint file.
        data: a dataset folder (default: the run's own dataset).
        split: ``train``, ``val``, ``test`` or ``all``.
        input_view: the view given to the network (default ``7 i mod V`` for object ``i``,
            the view ``persp3d eval`` uses).
    """
    from persp3d.train.data import build_dataset, infer_data_kind
    from persp3d.train.pipeline import Pipeline, default_input_view

    pipeline = Pipeline.from_run(run)
    config = pipeline.config
    if data is not None:
        config.data.root = str(data)
        config.data.kind = infer_data_kind(data)
    dataset = build_dataset(config.data, split, progress=False, image_size=config.model.image_size)
    description = f"run {run} on the {split} split of {config.data.root or 'procedural'}"
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{description}: the split holds no samples")
    keys = _sample_keys(dataset)

    def get(i: int) -> ViewItem:
        sample = dataset[i]
        parts = _sample_parts(sample)
        V = len(parts["cameras"])
        view = default_input_view(i, V) if input_view is None else input_view
        if not 0 <= view < V:
            raise ValueError(f"input_view must lie in [0, {V}); got {view}")
        occupancy = pipeline.predict(sample, view=view)[0, 0]  # (R, R, R)
        return ViewItem(
            volume=occupancy.numpy(),
            box=parts["box"],
            up=parts["up"],
            ground_truth=parts["voxels"],
            cameras=parts["cameras"],
            silhouettes=parts["silhouettes"],
            input_view=view,
            title=f"{parts['name']}  prediction from view {view}",
        )

    return ItemSource(get, n, keys, description)


def _is_run_dir(path: Path) -> bool:
    return (path / "best.pt").is_file() or (path / "last.pt").is_file()


def _is_checkpoint(path: Path) -> bool:
    if path.suffix not in (".pt", ".pth"):
        return False
    from persp3d.train.checkpoint import load_checkpoint

    try:
        state = load_checkpoint(path)
    except (ValueError, FileNotFoundError):
        return False
    return isinstance(state, dict) and "model" in state and "config" in state


def open_source(
    path: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    split: str | None = None,
    input_view: int | None = None,
    resolution: int = 32,
    logits: bool = False,
) -> ItemSource:
    """Open whatever ``path`` is: a volume file, a mesh, a dataset folder, or a run (a run
    folder or a checkpoint, with ``data`` to evaluate it on another dataset).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is of no kind the viewer reads (the message lists the kinds).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if _is_run_dir(path):
            return run_source(path, data, split or "test", input_view)
        from persp3d.datasets import load_dataset

        dataset = load_dataset(path, split or "all")
        return dataset_source(dataset, f"dataset {path} ({split or 'all'})")
    if data is not None and not _is_checkpoint(path):
        raise ValueError(f"--data goes with a run or checkpoint; {path} is not one")
    suffix = path.suffix.lower()
    if suffix in MESH_SUFFIXES:
        return _single(load_mesh_item(path, resolution), path.name, f"mesh {path}")
    if suffix in (".pt", ".pth") and _is_checkpoint(path):
        return run_source(path, data, split or "test", input_view)
    if suffix in VOLUME_SUFFIXES:
        return _single(load_volume_item(path, logits), path.name, f"volume {path}")
    raise ValueError(
        f"{path}: not a file the viewer reads; expected a volume ({', '.join(VOLUME_SUFFIXES)}), "
        f"a mesh ({', '.join(MESH_SUFFIXES)}), a dataset folder, or a run folder / checkpoint"
    )
