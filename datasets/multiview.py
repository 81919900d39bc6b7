"""Shared pieces of the multi-view datasets: view settings, splits, and the folder reader.

Between the generators (procedural shapes, mesh folders) and training: a mesh and a
:class:`RenderConfig` become an item on disk; :class:`MultiViewFolder` reads items back as
samples (see :mod:`persp3d.datasets.sample`).

Convention: cameras from :func:`persp3d.orbit_cameras` (azimuth from +z toward +x about +y,
positive elevation looks down, ``fov`` vertical in degrees); voxels in ``VolumeBox()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.cameras import Cameras, orbit_cameras
from persp3d.datasets.cache import CorruptCacheError, Manifest, read_item, read_manifest
from persp3d.datasets.sample import decode_item

__all__ = [
    "SPLITS",
    "DataError",
    "DataWarning",
    "MultiViewFolder",
    "RenderConfig",
    "SkipLog",
    "assign_splits",
    "view_cameras",
]

SPLITS = ("train", "val", "test")


class DataWarning(UserWarning):
    """An input was skipped (bad file, missing metadata) or a cache was rebuilt."""


class DataError(ValueError):
    """A bad input in ``strict`` mode (the message names the file and the problem)."""


class SkipLog:
    """Collects skipped inputs: one :class:`DataWarning` per input naming the file and the
    problem, then a summary count (:meth:`summary`); with ``strict`` the first bad input
    raises :class:`DataError` instead."""

    def __init__(self, strict: bool = False, what: str = "inputs") -> None:
        self.strict = strict
        self.what = what
        self.entries: list[dict[str, str]] = []

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        message = f"{path}: {reason}"
        if self.strict:
            raise DataError(message)
        self.entries.append({"source": str(path), "reason": reason})
        warnings.warn(f"skipping {message}", DataWarning, stacklevel=3)

    def summary(self, total: int) -> str | None:
        """Warn ``skipped N of TOTAL <what>`` if anything was skipped; returns the line."""
        if not self.entries:
            return None
        line = (
            f"skipped {len(self.entries)} of {total} {self.what} "
            "(each named in a warning above; --strict makes them errors)"
        )
        warnings.warn(line, DataWarning, stacklevel=3)
        return line


@dataclass
class RenderConfig:
    """How each object is viewed, rendered and voxelised (saved in the manifest)."""

    n_views: int = 24
    """Views per object ``V``, at equal azimuth steps from ``azimuth_offset``."""
    elevation: float = 30.0
    """Elevation of every view in degrees (positive looks down from above)."""
    elevation_range: tuple[float, float] | None = None
    """If set, each view's elevation is drawn uniformly from this range instead."""
    jitter: float = 0.0
    """Half-width in degrees of uniform noise on each view's azimuth and elevation."""
    azimuth_offset: float = 0.0
    """Azimuth of view 0 in degrees."""
    distance: float = 2.0
    """Camera distance from the box centre."""
    fov: float = 40.0
    """Vertical field of view in degrees."""
    image_size: int = 64
    """Square image side in pixels."""
    background: float = 1.0
    """Grey level of the image background."""
    voxel_resolutions: tuple[int, ...] = (32, 64)
    """Ground-truth voxel grids stored per object (``()`` for none)."""
    fill: float = 0.9
    """Normalisation: the longest side of an object's bounding box, in box edges."""
    max_radius: float = 0.62
    """Normalisation: no vertex farther than this (in box edges) from the box centre, so the
    default cameras see every object whole."""
    store_depth: bool = True
    """Store per-view depth maps."""

    def __post_init__(self) -> None:
        if self.elevation_range is not None:
            self.elevation_range = tuple(float(e) for e in self.elevation_range)  # type: ignore[assignment]
        self.voxel_resolutions = tuple(int(r) for r in self.voxel_resolutions)
        if self.n_views < 1 or self.image_size < 1:
            raise ValueError(
                f"n_views and image_size must be positive; got {self.n_views}, {self.image_size}"
            )
        if any(r < 1 for r in self.voxel_resolutions):
            raise ValueError(f"voxel_resolutions must be positive; got {self.voxel_resolutions}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters (tuples become lists)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def view_cameras(config: RenderConfig, seed: int) -> Cameras:
    """The ``(V,)`` cameras of one object: an orbit, with random elevations and jitter drawn
    from ``seed`` when the config asks for them."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    if config.elevation_range is not None:
        lo, hi = config.elevation_range
        elevation: float | list[float] = rng.uniform(lo, hi, size=config.n_views).tolist()
    else:
        elevation = config.elevation
    return orbit_cameras(
        n_views=config.n_views,
        elevation=elevation,
        distance=config.distance,
        fov=config.fov,
        image_size=config.image_size,
        azimuth_offset=config.azimuth_offset,
        jitter=config.jitter if config.jitter else None,
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _split_key(seed: int, category: str, item_id: str) -> str:
    return hashlib.sha256(f"{seed}/{category}/{item_id}".encode()).hexdigest()


def assign_splits(
    items: Sequence[tuple[str, str]],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[tuple[str, str], str]:
    """Deterministic train/val/test split of ``(category, id)`` pairs, per category.

    Within a category, items are ordered by ``sha256(f"{seed}/{category}/{id}")`` and the
    first ``round(n * fractions[0])`` go to train, the next ``round(n * fractions[1])`` to
    val, the rest to test. The result depends only on the item names, the seed and the
    fractions: never on the order the items were found in, the machine or the run.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1; got {fractions}")
    by_cat: dict[str, list[str]] = {}
    for cat, item_id in items:
        by_cat.setdefault(cat, []).append(item_id)
    out: dict[tuple[str, str], str] = {}
    for cat, ids in by_cat.items():
        ids = sorted(set(ids), key=lambda i: _split_key(seed, cat, i))
        n = len(ids)
        n_train = round(n * f[0])
        n_val = min(round(n * f[1]), n - n_train)
        for k, item_id in enumerate(ids):
            out[(cat, item_id)] = (
                "train" if k < n_train else "val" if k < n_train + n_val else "test"
            )
    return out


class MultiViewFolder(torch.utils.data.Dataset):
    """A dataset folder in the ``persp3d-multiview`` format (see :mod:`persp3d.datasets.cache`).

    Args:
        root: the folder holding ``manifest.json``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        categories: keep only these categories (default all).
        voxel_resolution: which stored voxel grid to return (default the lowest; 0: none).
        views: indices of the views to return (default all).
        with_depth: include ``depth`` in samples.

    Each item's SHA-256 is checked when it is read; a mismatch raises
    :class:`~persp3d.datasets.cache.CorruptCacheError` naming the file.
    """

    kind: str | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        categories: Sequence[str] | None = None,
        voxel_resolution: int | None = None,
        views: Sequence[int] | None = None,
        with_depth: bool = False,
    ) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {(*SPLITS, 'all')}; got {split!r}")
        self.root = Path(root)
        self.split = split
        self.categories = None if categories is None else tuple(categories)
        self.voxel_resolution = voxel_resolution
        self.views = None if views is None else [int(v) for v in views]
        self.with_depth = with_depth
        self._load_manifest()

    def _load_manifest(self) -> None:
        manifest = read_manifest(self.root, kind=self.kind)
        if not manifest["complete"]:
            warnings.warn(
                f"{self.root / 'manifest.json'}: the dataset is incomplete (an interrupted "
                "generation?); reading the items written so far",
                DataWarning,
                stacklevel=3,
            )
        self.manifest: Manifest = manifest
        self.items = [
            it
            for it in manifest["items"]
            if it.get("sha256")
            and (self.split == "all" or it["split"] == self.split)
            and (self.categories is None or it["category"] in self.categories)
        ]
        res = manifest["config"].get("voxel_resolutions", [])
        if self.voxel_resolution not in (None, 0) and self.voxel_resolution not in res:
            raise ValueError(
                f"voxel_resolution {self.voxel_resolution} is not stored in {self.root}; "
                f"available: {res}"
            )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def category_names(self) -> list[str]:
        return sorted({it["category"] for it in self.items})

    def _read(self, item: dict[str, Any]) -> dict[str, np.ndarray]:
        return read_item(self.root / item["file"], item["sha256"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        arrays = self._read(item)
        try:
            return decode_item(
                arrays,
                voxel_resolution=self.voxel_resolution,
                views=self.views,
                with_depth=self.with_depth,
            )
        except (KeyError, ValueError, IndexError) as err:
            raise CorruptCacheError(f"{self.root / item['file']}: bad item ({err})") from err

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"items={len(self)})"
        )


# -- generation plumbing shared by the writers -----------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads. Open3D's ray caster and torch's thread pool
    fight over the cores when both spin; small tensor work is faster on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve_workers(workers: int | None, n_items: int) -> int:
    """Processes to use: ``workers`` if given (at least 1); by default one per core (up to
    8) for 64 items or more, else 1 (starting a worker process costs seconds)."""
    if workers is None:
        return min(8, os.cpu_count() or 1) if n_items >= 64 else 1
    return max(int(workers), 1)


def worker_init() -> None:
    """Initialiser of generation worker processes: one torch thread each."""
    torch.set_num_threads(1)


def remove_stale_temporaries(root: str | os.PathLike) -> int:
    """Delete temporary files a killed writer left in a dataset folder: ``.<item>.npz.*.tmp``
    under ``items/`` and ``.manifest.json.*.tmp``; returns how many."""
    root = Path(root)
    stale = [*root.glob(".manifest.json.*.tmp"), *(root / "items").rglob(".*.npz.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
