"""The embedded default dataset: procedural shapes rendered from many views, cached on disk.

Start of the data path when no data is at hand: :func:`make_shape` -> mesh + exact voxels ->
:func:`render_mesh` from orbit cameras -> items on disk (:mod:`persp3d.datasets.cache`) ->
:class:`ProceduralShapes` samples.

Every item depends only on ``(config, category, index)``: the same config generates the same
bytes on every run, in any order, with any number of worker processes, and an item never
changes when ``per_category`` grows. Splits are assigned per category by
:func:`persp3d.datasets.multiview.assign_splits`.

Convention: cameras from :func:`persp3d.orbit_cameras` (default 24 equal azimuth steps, each
view at an elevation drawn uniformly from [-30, 30] degrees, distance 2, fov 40, 64 x 64);
voxels ``(1, R, R, R)`` in ``VolumeBox()``, exact occupancy of the voxel centres (see
:mod:`persp3d.datasets.shapes`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

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
    DataWarning,
    MultiViewFolder,
    RenderConfig,
    assign_splits,
    remove_stale_temporaries,
    resolve_workers,
    torch_threads,
    view_cameras,
    worker_init,
)
from persp3d.datasets.render import render_mesh
from persp3d.datasets.sample import encode_item
from persp3d.datasets.shapes import CATEGORIES, item_seed, make_shape

__all__ = [
    "DEFAULT_ELEVATION_RANGE",
    "DEFAULT_PER_CATEGORY",
    "ProceduralConfig",
    "ProceduralShapes",
    "default_data_dir",
    "generate_procedural",
    "procedural_item",
]

DEFAULT_PER_CATEGORY = 100
KIND = "procedural"
# Each view's elevation is drawn from this range (degrees): views from below as well as from
# above. The silhouettes of one ring at 30 degrees never show what lies under a table top,
# a car body or a chair seat; their visual hull scores 0.604 3D IoU against the 32^3 voxels
# (3 objects per category), the hull of views drawn from [-30, 30] 0.725.
DEFAULT_ELEVATION_RANGE = (-30.0, 30.0)


@dataclass
class ProceduralConfig(RenderConfig):
    """Parameters of a procedural dataset (all of :class:`RenderConfig`, plus these; unlike a
    :class:`RenderConfig`, views are at elevations drawn from :data:`DEFAULT_ELEVATION_RANGE`
    unless ``elevation_range`` is set otherwise or None for one ring at ``elevation``)."""

    elevation_range: tuple[float, float] | None = DEFAULT_ELEVATION_RANGE

    categories: tuple[str, ...] = field(default_factory=lambda: tuple(CATEGORIES))
    """Categories to generate, from :data:`persp3d.datasets.shapes.CATEGORIES`."""
    per_category: int = DEFAULT_PER_CATEGORY
    """Objects per category."""
    seed: int = 0
    """Seed of the whole dataset; item ``i`` of category ``c`` uses ``item_seed(seed, c, i)``."""
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train, val and test fractions per category."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.categories = tuple(self.categories)
        self.splits = tuple(float(s) for s in self.splits)  # type: ignore[assignment]
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown or not self.categories:
            raise ValueError(
                f"categories must be a non-empty subset of {sorted(CATEGORIES)}; got {unknown or '()'}"
            )
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories must not repeat; got {self.categories}")
        if self.per_category < 1:
            raise ValueError(f"per_category must be >= 1; got {self.per_category}")


def default_data_dir() -> Path:
    """Where named datasets live: ``$PERSP3D_DATA_DIR``, else ``~/.cache/persp3d``."""
    env = os.environ.get("PERSP3D_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "persp3d"


def _item_id(category: str, index: int) -> str:
    return f"{category}_{index:05d}"


def _plan(config: ProceduralConfig) -> list[dict[str, Any]]:
    keys = [(c, _item_id(c, i)) for c in config.categories for i in range(config.per_category)]
    splits = assign_splits(keys, config.splits, config.seed)
    return [
        {
            "id": _item_id(c, i),
            "category": c,
            "index": i,
            "split": splits[(c, _item_id(c, i))],
            "file": f"items/{c}/{_item_id(c, i)}.npz",
        }
        for c in config.categories
        for i in range(config.per_category)
    ]


def procedural_item(config: ProceduralConfig, category: str, index: int) -> dict[str, np.ndarray]:
    """The stored arrays of item ``index`` of ``category`` (see :mod:`persp3d.datasets.cache`)."""
    seed = item_seed(config.seed, category, index)
    shape = make_shape(category, seed, fill=config.fill, max_radius=config.max_radius)
    vertices, faces, colors = shape.mesh()
    with torch_threads(1):
        cameras = view_cameras(config, seed)
        out = render_mesh(vertices, faces, cameras, colors, background=config.background)
    voxels = {r: shape.voxels(r) for r in config.voxel_resolutions}
    return encode_item(
        images=out.images,
        silhouettes=out.silhouettes,
        cameras=cameras,
        category=category,
        item_id=_item_id(category, index),
        voxels=voxels,
        depth=out.depth.numpy() if config.store_depth else None,
    )


def _make_one(
    config_dict: dict[str, Any], root: str, item: dict[str, Any]
) -> tuple[str, str, str, int]:
    config = ProceduralConfig.from_dict(config_dict)
    arrays = procedural_item(config, item["category"], item["index"])
    sha, n_bytes = write_item(item_path(root, item["file"]), arrays)  # never outside root
    return item["category"], item["id"], sha, n_bytes


def generate_procedural(
    root: str | os.PathLike,
    config: ProceduralConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Generate (or finish, or repair) a procedural dataset in ``root``.

    Args:
        root: the dataset folder (created if needed).
        config: parameters; ``None`` takes those of an existing dataset in ``root``, else
            the defaults (an unreadable manifest then raises: its parameters are unknown).
        workers: processes to generate with; 0 or 1 generates in this process; default:
            one per core (up to 8) for 64 items or more, else this process (starting a
            worker costs seconds).
        progress: show a progress bar (tqdm).
        overwrite: replace a dataset of other parameters found in ``root`` instead of raising.

    Returns:
        The final manifest.

    A complete dataset with the same parameters is checked (SHA-256 of every item) and left
    as it is; an interrupted one resumes where it stopped; missing or corrupt items are
    written again; an unreadable manifest or another format version is rebuilt, with a
    :class:`DataWarning`.

    Raises:
        ValueError: ``root`` holds a dataset of other parameters (and not ``overwrite``),
            or other data.
        CorruptCacheError: the manifest is unreadable and no ``config`` was given.
    """
    root = Path(root)
    existing: Manifest | None = None
    try:
        existing = read_manifest(root)
    except FileNotFoundError:
        pass
    except CorruptCacheError as err:
        if config is None:
            raise CorruptCacheError(
                f"{err}; pass the dataset's config to rebuild it (or remove the folder)"
            ) from err
        warnings.warn(f"{err}; rebuilding the dataset", DataWarning, stacklevel=2)
    if existing is not None and existing["kind"] != KIND:
        raise ValueError(
            f"{root} holds {existing['kind']!r} data, not procedural shapes; choose another folder"
        )
    if config is None:
        config = ProceduralConfig.from_dict(existing["config"]) if existing else ProceduralConfig()
    config_dict = config.to_dict()
    if existing is not None and existing["config"] != config_dict:
        if not overwrite:
            diff = sorted(
                k
                for k in set(config_dict) | set(existing["config"])
                if config_dict.get(k) != existing["config"].get(k)
            )
            raise ValueError(
                f"{root} holds a procedural dataset made with other parameters ({', '.join(diff)}"
                "); use another folder or overwrite=True (--overwrite)"
            )
        existing = None
    manifest = new_manifest(KIND, config_dict, _plan(config))
    todo = manifest["items"]
    if existing is not None:
        old = {(it["category"], it["id"]): it for it in existing["items"]}
        for item in manifest["items"]:
            prev = old.get((item["category"], item["id"]))
            if prev is not None and prev.get("sha256"):
                item["sha256"], item["bytes"] = prev["sha256"], prev.get("bytes")
        bad = {(it["category"], it["id"]) for it in verify_items(root, manifest)}
        corrupt = [
            it for it in manifest["items"] if it.get("sha256") and (it["category"], it["id"]) in bad
        ]
        for item in corrupt:
            warnings.warn(
                f"{root / item['file']}: missing or corrupt item; rebuilding it",
                DataWarning,
                stacklevel=2,
            )
        todo = [it for it in manifest["items"] if (it["category"], it["id"]) in bad]
        for item in todo:
            item["sha256"] = item["bytes"] = None
        if not todo and existing["complete"]:
            return existing
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    writer = ManifestWriter(root, manifest)
    writer.flush()
    try:
        _run(root, config_dict, todo, writer, workers, progress)
    finally:
        counts: dict[str, dict[str, int]] = {}
        for it in manifest["items"]:
            if it.get("sha256"):
                counts.setdefault(it["split"], {}).setdefault(it["category"], 0)
                counts[it["split"]][it["category"]] += 1
        writer.finish(
            {
                "items": sum(1 for it in manifest["items"] if it.get("sha256")),
                "per_split": counts,
            }
        )
    return manifest


def _run(root: Path, config_dict: dict, todo: list, writer: ManifestWriter, workers, progress):
    from tqdm.auto import tqdm

    workers = resolve_workers(workers, len(todo))
    bar = tqdm(
        total=len(todo), desc=f"procedural shapes -> {root}", unit="obj", disable=not progress
    )
    with bar:
        if workers <= 1:
            for item in todo:
                writer.record(*_make_one(config_dict, str(root), item))
                bar.update(1)
            return
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=worker_init
        ) as pool:
            futures = [pool.submit(_make_one, config_dict, str(root), it) for it in todo]
            try:
                for fut in as_completed(futures):
                    writer.record(*fut.result())
                    bar.update(1)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise


class ProceduralShapes(MultiViewFolder):
    """The procedural shape set as a ``torch.utils.data.Dataset`` of samples.

    Args:
        root: dataset folder (default ``default_data_dir() / "procedural"``, holding the
            default configuration).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        config: generation parameters (default: those found in ``root``, else the defaults).
        generate: generate, finish or repair the data on first use (else it must exist).
        workers, progress, overwrite: see :func:`generate_procedural`.
        categories, voxel_resolution, views, with_depth: see :class:`MultiViewFolder`.

    An item that fails its checksum when read is regenerated in place (with a
    :class:`DataWarning`), since the same parameters give the same bytes.
    """

    kind = KIND

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        config: ProceduralConfig | None = None,
        *,
        generate: bool = True,
        workers: int | None = None,
        progress: bool = True,
        overwrite: bool = False,
        categories: Sequence[str] | None = None,
        voxel_resolution: int | None = None,
        views: Sequence[int] | None = None,
        with_depth: bool = False,
    ) -> None:
        if root is None:
            root = default_data_dir() / "procedural"
            config = ProceduralConfig() if config is None else config
        root = Path(root)
        if generate:
            generate_procedural(
                root, config, workers=workers, progress=progress, overwrite=overwrite
            )
        super().__init__(
            root,
            split,
            categories=categories,
            voxel_resolution=voxel_resolution,
            views=views,
            with_depth=with_depth,
        )
        self.config = ProceduralConfig.from_dict(self.manifest["config"])
        if config is not None and config.to_dict() != self.manifest["config"]:
            raise ValueError(f"{root} holds a procedural dataset made with other parameters")

    def _read(self, item: dict[str, Any]) -> dict[str, np.ndarray]:
        try:
            return super()._read(item)
        except CorruptCacheError as err:
            warnings.warn(f"{err}; regenerating the item", DataWarning, stacklevel=3)
            arrays = procedural_item(self.config, item["category"], int(item["index"]))
            write_item(item_path(self.root, item["file"]), arrays)
            return arrays
