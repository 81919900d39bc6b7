"""Folders of meshes (ShapeNetCore v1 / v2, or any folder of OBJ/OFF/PLY/STL/GLB) as datasets.

Data path for real shapes: mesh file -> trimesh -> normalised into ``VolumeBox()`` ->
rendered from orbit cameras (:mod:`persp3d.datasets.render`) and voxelised
(:mod:`persp3d.datasets.voxelize`) -> a sample, on the fly (:class:`MeshFolder`) or once into
a dataset folder (:func:`import_mesh_folder`, read back by :class:`MultiViewFolder`).

Layouts recognised (see :mod:`persp3d.datasets.shapenet`): ShapeNetCore v1
(``<synset>/<model>/model.obj``) and v2 (``<synset>/<model>/models/model_normalized.obj``),
a single synset folder of either, and any other folder: every mesh file below it, with the
first sub-folder as the category (files directly in ``root`` take ``root``'s name).

Convention: the mesh's own axes are kept (ShapeNet's are y-up, as persp3d's); its bounding
box is centred on the box and scaled uniformly (:func:`persp3d.datasets.shapes.
normalization_transform`). Ground-truth voxels use :func:`voxelize_mesh` (method ``"auto"``
by default: exact for watertight pieces, surface band + exterior flood fill for open ones).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.datasets.cache import (
    CorruptCacheError,
    Manifest,
    ManifestWriter,
    item_path,
    new_manifest,
    read_manifest,
    verify_items,
    write_item,
)
from persp3d.datasets.multiview import (
    DataError,
    RenderConfig,
    SkipLog,
    assign_splits,
    remove_stale_temporaries,
    resolve_workers,
    torch_threads,
    view_cameras,
    worker_init,
)
from persp3d.datasets.render import render_mesh
from persp3d.datasets.sample import decode_item, encode_item
from persp3d.datasets.shapenet import category_name, is_synset
from persp3d.datasets.shapes import normalization_transform
from persp3d.datasets.voxelize import VOXELIZE_METHODS, voxelize_mesh
from persp3d.volume import VolumeBox

__all__ = [
    "MESH_EXTENSIONS",
    "MeshEntry",
    "MeshFolder",
    "find_meshes",
    "import_mesh_folder",
    "load_mesh",
]

MESH_EXTENSIONS = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
KIND = "meshes"
_SHAPENET_FILES = ("model.obj", "models/model_normalized.obj")


@dataclass(frozen=True)
class MeshEntry:
    """One mesh file found in a folder."""

    path: Path
    category: str
    id: str
    layout: str  # "shapenet-v1", "shapenet-v2" or "files"


def _shapenet_model_file(model_dir: Path) -> tuple[Path, str] | None:
    for rel, layout in zip(_SHAPENET_FILES, ("shapenet-v1", "shapenet-v2")):
        if (model_dir / rel).is_file():
            return model_dir / rel, layout
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "mesh"


def find_meshes(root: str | os.PathLike) -> list[MeshEntry]:
    """Every mesh below ``root``, with its category and id (sorted, deterministic).

    ShapeNet layouts give ``category`` = the synset's name (``"chair"``) and ``id`` = the
    model folder; other folders give every file with a mesh extension, ``category`` = the
    first sub-folder (or ``root``'s name) and ``id`` = the file's path below it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    entries: list[MeshEntry] = []
    if subdirs and all(is_synset(d.name) for d in subdirs):
        for synset_dir in subdirs:
            for model_dir in sorted(p for p in synset_dir.iterdir() if p.is_dir()):
                found = _shapenet_model_file(model_dir)
                if found is not None:
                    entries.append(
                        MeshEntry(
                            found[0], category_name(synset_dir.name), model_dir.name, found[1]
                        )
                    )
        return entries
    models = [(d, _shapenet_model_file(d)) for d in subdirs]
    if is_synset(root.name) and models and all(m is not None for _, m in models):
        return [
            MeshEntry(m[0], category_name(root.name), d.name, m[1])  # type: ignore[index]
            for d, m in models
        ]
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in MESH_EXTENSIONS or not path.is_file():
            continue
        rel = path.relative_to(root)
        category = rel.parts[0] if len(rel.parts) > 1 else root.name
        rest = Path(*rel.parts[1:]) if len(rel.parts) > 1 else rel
        entries.append(
            MeshEntry(path, _safe(category), _safe(str(rest).replace(os.sep, "__")), "files")
        )
    return entries


def load_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Load a mesh file with trimesh (scenes are flattened into one mesh).

    Returns:
        ``vertices (N, 3) float64``, ``faces (F, 3) int64``, ``face_colors (F, 3)`` in [0, 1]
        or ``None`` when the file has no colours.

    Raises:
        ValueError: naming the file and the problem (empty, unreadable, not a triangle mesh,
            no faces, non-finite or degenerate vertices).
    """
    import trimesh

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from err
    if size == 0:
        raise ValueError(f"{path}: empty file")
    try:
        mesh = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    except Exception as err:  # trimesh raises many kinds on bad input
        raise ValueError(f"{path}: not a readable mesh ({type(err).__name__}: {err})") from err
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"{path}: not a triangle mesh (trimesh gave {type(mesh).__name__})")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0 or len(vertices) == 0:
        raise ValueError(f"{path}: no triangles")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{path}: non-finite vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"{path}: faces index missing vertices")
    if float(np.ptp(vertices[faces.reshape(-1)], axis=0).max()) <= 0:
        raise ValueError(f"{path}: degenerate mesh (zero extent)")
    return vertices, faces, _face_colors(mesh)


def _face_colors(mesh: Any) -> np.ndarray | None:
    visual = getattr(mesh, "visual", None)
    kind = getattr(visual, "kind", None)
    try:
        if kind == "face":
            return np.asarray(visual.face_colors[:, :3], dtype=np.float64) / 255.0
        if kind == "vertex":
            vc = np.asarray(visual.vertex_colors[:, :3], dtype=np.float64) / 255.0
            return vc[np.asarray(mesh.faces)].mean(axis=1)
    except (AttributeError, IndexError, ValueError):
        return None
    return None


def _item_seed(seed: int, category: str, item_id: str) -> int:
    digest = hashlib.sha256(f"{seed}/{category}/{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def mesh_item(
    entry: MeshEntry,
    config: RenderConfig,
    *,
    voxel_method: str = "auto",
    seed: int = 0,
    normalize: bool = True,
) -> dict[str, np.ndarray]:
    """The stored arrays of one mesh (see :mod:`persp3d.datasets.cache`).

    Raises:
        ValueError: the mesh cannot be used (see :func:`load_mesh`).
    """
    vertices, faces, colors = load_mesh(entry.path)
    if normalize:
        scale, offset = normalization_transform(
            vertices[np.unique(faces)], VolumeBox(), config.fill, config.max_radius
        )
        vertices = vertices * scale + offset
    cameras = view_cameras(config, _item_seed(seed, entry.category, entry.id))
    with torch_threads(1):
        out = render_mesh(vertices, faces, cameras, colors, background=config.background)
    voxels = {
        r: voxelize_mesh(vertices, faces, r, VolumeBox(), method=voxel_method)
        for r in config.voxel_resolutions
    }
    return encode_item(
        images=out.images,
        silhouettes=out.silhouettes,
        cameras=cameras,
        category=entry.category,
        item_id=entry.id,
        voxels=voxels,
        depth=out.depth.numpy() if config.store_depth else None,
    )


class MeshFolder(torch.utils.data.Dataset):
    """A folder of meshes rendered and voxelised on the fly.

    Args:
        root: the folder (see the module docstring for the layouts).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (splits by
            :func:`assign_splits` with ``seed`` and ``fractions``).
        config: views, image size, voxel resolutions (default :class:`RenderConfig`).
        voxel_resolution: which resolution to return (default the config's first; 0: none).
        voxel_method: see :func:`voxelize_mesh`.
        check: ``"load"`` loads every mesh once up front and skips bad ones (each named in
            a :class:`DataWarning`, then a summary count); ``"quick"`` only skips empty
            files, and a bad mesh raises :class:`DataError` when it is read.
        strict: raise :class:`DataError` on the first bad file instead of skipping it.

    For large folders, :func:`import_mesh_folder` (``persp3d data import``) renders and
    voxelises once into a dataset folder.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "all",
        config: RenderConfig | None = None,
        *,
        voxel_resolution: int | None = None,
        voxel_method: str = "auto",
        check: str = "load",
        strict: bool = False,
        seed: int = 0,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> None:
        if voxel_method not in VOXELIZE_METHODS:
            raise ValueError(
                f"voxel_method must be one of {VOXELIZE_METHODS}; got {voxel_method!r}"
            )
        if check not in ("load", "quick"):
            raise ValueError(f"check must be 'load' or 'quick'; got {check!r}")
        self.root = Path(root)
        self.config = RenderConfig() if config is None else config
        res = self.config.voxel_resolutions
        self.voxel_resolution = (
            (res[0] if res else 0) if voxel_resolution is None else voxel_resolution
        )
        self.voxel_method = voxel_method
        self.seed = seed
        self.skipped = SkipLog(strict, "mesh files")
        found = find_meshes(self.root)
        good = []
        for entry in found:
            try:
                if check == "load":
                    load_mesh(entry.path)
                elif entry.path.stat().st_size == 0:
                    raise ValueError(f"{entry.path}: empty file")
            except ValueError as err:
                self.skipped.skip(entry.path, str(err).split(": ", 1)[-1])
                continue
            good.append(entry)
        self.skipped.summary(len(found))
        splits = assign_splits([(e.category, e.id) for e in good], fractions, seed)
        self.entries = [e for e in good if split == "all" or splits[(e.category, e.id)] == split]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        config = self.config
        if self.voxel_resolution:
            config = RenderConfig.from_dict(
                {**config.to_dict(), "voxel_resolutions": [self.voxel_resolution]}
            )
        else:
            config = RenderConfig.from_dict({**config.to_dict(), "voxel_resolutions": []})
        try:
            arrays = mesh_item(entry, config, voxel_method=self.voxel_method, seed=self.seed)
        except ValueError as err:
            raise DataError(str(err)) from err
        return decode_item(arrays, voxel_resolution=self.voxel_resolution or 0, with_depth=False)


# -- import into a dataset folder ------------------------------------------------------------
def _import_one(
    entry: MeshEntry, config_dict: dict, voxel_method: str, seed: int, root: str, file: str
) -> tuple[str, str, str | None, int | str]:
    try:
        arrays = mesh_item(
            entry, RenderConfig.from_dict(config_dict), voxel_method=voxel_method, seed=seed
        )
    except ValueError as err:
        return entry.category, entry.id, None, str(err).split(": ", 1)[-1]
    sha, n_bytes = write_item(item_path(root, file), arrays)  # never outside root
    return entry.category, entry.id, sha, n_bytes


def import_mesh_folder(
    source: str | os.PathLike,
    out: str | os.PathLike,
    config: RenderConfig | None = None,
    *,
    voxel_method: str = "auto",
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Render and voxelise every mesh of ``source`` into the dataset folder ``out``.

    Bad files (empty, unreadable, not a mesh, no triangles) are skipped, each with a
    :class:`DataWarning` naming it, then a summary count, and listed in the manifest's
    ``skipped``; ``strict`` raises :class:`DataError` on the first instead. Items are written
    atomically; an interrupted import resumes. Read the result with
    :class:`persp3d.datasets.MultiViewFolder` or :func:`persp3d.datasets.load_dataset`.

    Raises:
        ValueError: ``out`` holds other data or an import with other parameters (and not
            ``overwrite``).
    """
    from tqdm.auto import tqdm

    source, out = Path(source).resolve(), Path(out)
    config = RenderConfig() if config is None else config
    render_dict = config.to_dict()
    params = {
        **render_dict,
        "source": str(source),
        "voxel_method": voxel_method,
        "seed": int(seed),
        "splits": [float(f) for f in fractions],
    }
    existing = None
    try:
        existing = read_manifest(out)
    except FileNotFoundError:
        pass
    except CorruptCacheError:
        existing = None
    if existing is not None and (existing["kind"] != KIND or existing["config"] != params):
        if not overwrite:
            raise ValueError(
                f"{out} already holds a dataset made otherwise; use another folder or --overwrite"
            )
        existing = None
    entries = find_meshes(source)
    ids: dict[tuple[str, str], MeshEntry] = {}
    for e in entries:
        ids.setdefault((e.category, e.id), e)
    splits = assign_splits(list(ids), fractions, seed)
    plan = [
        {
            "id": e.id,
            "category": e.category,
            "split": splits[key],
            "file": f"items/{_safe(e.category)}/{_safe(e.id)}.npz",
            "source": str(e.path.relative_to(source)),
        }
        for key, e in ids.items()
    ]
    manifest = new_manifest(KIND, params, plan)
    skips = SkipLog(strict, "mesh files")
    todo = list(manifest["items"])
    if existing is not None:
        old = {(it["category"], it["id"]): it for it in existing["items"]}
        for item in manifest["items"]:
            prev = old.get((item["category"], item["id"]))
            if prev and prev.get("sha256"):
                item["sha256"], item["bytes"] = prev["sha256"], prev.get("bytes")
        bad = {(it["category"], it["id"]) for it in verify_items(out, manifest)}
        todo = [it for it in manifest["items"] if (it["category"], it["id"]) in bad]
        for item in todo:
            item["sha256"] = item["bytes"] = None
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    writer = ManifestWriter(out, manifest)
    writer.flush()
    workers = resolve_workers(workers, len(todo))
    args = [(ids[(it["category"], it["id"])], it) for it in todo]
    try:
        with tqdm(
            total=len(args), desc=f"meshes -> {out}", unit="mesh", disable=not progress
        ) as bar:
            if workers <= 1:
                results = (
                    _import_one(e, render_dict, voxel_method, seed, str(out), it["file"])
                    for e, it in args
                )
                for result in results:
                    _record(result, ids, skips, writer)
                    bar.update(1)
            else:
                with ProcessPoolExecutor(
                    max_workers=workers, mp_context=get_context("spawn"), initializer=worker_init
                ) as pool:
                    futures = [
                        pool.submit(
                            _import_one, e, render_dict, voxel_method, seed, str(out), it["file"]
                        )
                        for e, it in args
                    ]
                    try:
                        for fut in as_completed(futures):
                            _record(fut.result(), ids, skips, writer)
                            bar.update(1)
                    except BaseException:
                        for fut in futures:
                            fut.cancel()
                        raise
    finally:
        bad_ids = {(s.get("category"), s.get("id")) for s in skips.entries}
        manifest["items"] = [
            it for it in manifest["items"] if (it["category"], it["id"]) not in bad_ids
        ]
        manifest["skipped"] = skips.entries
        writer.finish(
            {
                "items": sum(1 for it in manifest["items"] if it.get("sha256")),
                "skipped": len(skips.entries),
            }
        )
    skips.summary(len(ids))
    return manifest


def _record(result, ids, skips: SkipLog, writer: ManifestWriter) -> None:
    category, item_id, sha, info = result
    if sha is None:
        skips.skip(ids[(category, item_id)].path, str(info))
        skips.entries[-1].update(category=category, id=item_id)
        return
    writer.record(category, item_id, sha, int(info))
