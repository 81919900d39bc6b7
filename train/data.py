"""Data into training: the configured dataset, the step sampler, and the streamed loader.

Between the datasets (:mod:`persp3d.datasets`) and the training loop: ``Config.data`` ->
:func:`build_dataset` -> :class:`StepSampler` (which objects each step and each process
sees) -> :class:`StepSamples` (each object's input view and supervising views of that step)
-> a ``DataLoader`` with ``data.workers`` processes -> :func:`collate_steps` batches.

Everything random in a step is a function of ``(seed, step, slot)`` (``slot``: the object's
place in the step's global batch), never of the process, the worker or the order batches
were read in, so a run resumed at any step, with any number of workers or processes, reads
the same data as the uninterrupted run. Nothing here holds a split in memory unless
:func:`choose_in_memory` decides the split is small (``data.in_memory``).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from persp3d.cameras import Cameras
from persp3d.train.config import DataConfig

__all__ = [
    "DATA_KINDS",
    "InMemorySplit",
    "StepSampler",
    "StepSamples",
    "build_dataset",
    "choose_in_memory",
    "collate_steps",
    "infer_data_kind",
    "load_views",
    "resolve_categories",
    "slot_generator",
    "train_batches",
]

DATA_KINDS = ("procedural", "folder", "r2n2", "meshes")


# -- which data --------------------------------------------------------------------------------
def resolve_categories(names: Sequence[str] | None, kind: str) -> list[str] | None:
    """Categories of ``data.categories`` as the dataset names them.

    For ShapeNet data (``r2n2``) each entry may be a synset id (``03001627``) or a name
    (``chair``; 3D-R2N2's tables also say ``speaker`` for loudspeaker, ``phone`` for telephone
    and ``vessel`` for watercraft); the result holds synset ids. Other kinds keep the names.

    Raises:
        ValueError: naming an entry that is neither a known synset id nor a category name.
    """
    if names is None:
        return None
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    names = [str(n) for n in names]
    if kind != "r2n2":
        return names
    from persp3d.datasets.shapenet import SYNSETS

    by_name = {v: k for k, v in SYNSETS.items()} | {
        "speaker": "03691459",
        "phone": "04401088",
        "vessel": "04530566",
        "monitor": "03211117",
    }
    out = []
    for name in names:
        key = name.strip().lower()
        if key.isdigit() and key not in SYNSETS:
            # YAML reads an unquoted 03001627 as the octal number 823191
            for guess in (f"{int(key):o}".zfill(8), key.zfill(8)):
                if guess in SYNSETS:
                    key = guess
                    break
        if key in SYNSETS:
            out.append(key)
        elif key in by_name:
            out.append(by_name[key])
        else:
            raise ValueError(
                f"data.categories: {name!r} is neither a ShapeNet synset id nor a category "
                "name (e.g. 03001627 or chair)"
            )
    return out


MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")


def infer_data_kind(root: str | os.PathLike, default: str = "folder") -> str:
    """The ``data.kind`` of a dataset folder: ``folder`` if it holds a persp3d
    ``manifest.json``, ``r2n2`` if it holds ``ShapeNetRendering`` (or is one), ``meshes`` if
    it holds mesh files, else ``default``."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return "folder"
    if (root / "ShapeNetRendering").is_dir() or root.name == "ShapeNetRendering":
        return "r2n2"
    if root.is_dir():
        for path in root.rglob("*"):
            if path.suffix.lower() in MESH_SUFFIXES:
                return "meshes"
    return default


def default_mesh_cache(root: str | os.PathLike) -> Path:
    """Where ``data.kind: meshes`` imports the mesh folder ``root`` when ``data.cache`` is
    not set: ``<persp3d data dir>/meshes/<folder name>-<hash of its absolute path>``."""
    from persp3d.datasets.procedural import default_data_dir

    source = Path(root).resolve()
    tag = hashlib.sha256(str(source).encode()).hexdigest()[:10]
    return default_data_dir() / "meshes" / f"{source.name}-{tag}"


def build_dataset(
    cfg: DataConfig, split: str, progress: bool = True, image_size: int | None = None
) -> torch.utils.data.Dataset:
    """The dataset of ``cfg`` for ``split``.

    Args:
        cfg: the data section of the run's config.
        split: ``train``, ``val``, ``test`` or ``all``.
        progress: show progress while generating or importing data.
        image_size: the network's input size, used by ``r2n2`` when ``cfg.image_size`` is 0.

    ``procedural`` generates the default set on first use; ``meshes`` imports the mesh
    folder into ``cfg.cache`` on first use (rendered and voxelised with the default
    :class:`~persp3d.datasets.multiview.RenderConfig`); ``r2n2`` reads ShapeNetRendering
    (+ ShapeNetVox32) directly, images resized to ``cfg.image_size`` (or ``image_size``).

    Raises:
        ValueError: an unknown kind or a missing ``data.root``.
        FileNotFoundError: ``data.root`` does not exist or lacks the expected layout.
    """
    from persp3d.datasets.multiview import MultiViewFolder
    from persp3d.datasets.procedural import ProceduralConfig, ProceduralShapes, default_data_dir

    if cfg.kind not in DATA_KINDS:
        raise ValueError(f"data.kind must be one of {DATA_KINDS}; got {cfg.kind!r}")
    categories = resolve_categories(cfg.categories, cfg.kind)
    if cfg.kind == "procedural":
        root = Path(cfg.root) if cfg.root else default_data_dir() / "procedural"
        config = (
            None
            if (root / "manifest.json").exists()
            else ProceduralConfig(per_category=cfg.per_category)
        )
        return ProceduralShapes(
            root,
            split,
            config,
            progress=progress,
            categories=categories,
            voxel_resolution=cfg.voxel_resolution,
        )
    if not cfg.root:
        raise ValueError(f"data.root must name the dataset folder when data.kind is {cfg.kind!r}")
    root = Path(cfg.root)
    if not root.exists():
        raise FileNotFoundError(f"data.root {root}: no such folder")
    if cfg.kind == "folder":
        voxel_resolution = cfg.voxel_resolution
        if not _stored_voxel_resolutions(root):
            voxel_resolution = 0  # imported captures: silhouettes only, no 3D ground truth
        return MultiViewFolder(
            root, split, categories=categories, voxel_resolution=voxel_resolution
        )
    if cfg.kind == "meshes":
        from persp3d.datasets.meshfolder import import_mesh_folder

        cache = Path(cfg.cache) if cfg.cache else default_mesh_cache(root)
        manifest = cache / "manifest.json"
        if not manifest.exists() or '"complete": false' in manifest.read_text():
            import_mesh_folder(root, cache, progress=progress)
        return MultiViewFolder(
            cache, split, categories=categories, voxel_resolution=cfg.voxel_resolution
        )
    return _r2n2(cfg, root, split, categories, image_size)


def _stored_voxel_resolutions(root: Path) -> list[int]:
    """The voxel grids a persp3d dataset folder stores (none for imported captures)."""
    from persp3d.datasets.cache import read_manifest

    return list(read_manifest(root)["config"].get("voxel_resolutions", []) or [])


def _r2n2(cfg: DataConfig, root: Path, split: str, categories, image_size: int | None):
    from persp3d.datasets.r2n2 import R2N2, find_r2n2_roots

    rendering, voxels = find_r2n2_roots(root)
    if not rendering.is_dir():
        raise FileNotFoundError(
            f"data.root {root}: no ShapeNetRendering folder (expected {root}/ShapeNetRendering/"
            "<synset>/<model>/rendering/NN.png, or data.root = the ShapeNetRendering folder)"
        )
    if voxels is None:
        raise FileNotFoundError(
            f"data.root {root}: no ShapeNetVox32 folder beside ShapeNetRendering (training "
            "and evaluation need the ground-truth voxels <synset>/<model>/model.binvox)"
        )
    synsets = sorted(p.name for p in rendering.iterdir() if p.is_dir())
    if not synsets:
        raise FileNotFoundError(f"{rendering}: holds no synset folders (e.g. 03001627/)")
    if categories is not None:
        missing = [c for c in categories if c not in synsets]
        if missing:
            raise FileNotFoundError(
                f"{rendering}: no folder for categories {missing}; found {synsets}"
            )
    if cfg.voxel_resolution != 32:
        raise ValueError(
            f"data.voxel_resolution must be 32 for r2n2 (ShapeNetVox32); got {cfg.voxel_resolution}"
        )
    size = cfg.image_size or image_size or 64
    dataset = R2N2(
        root,
        split,
        splits_file=cfg.splits_file,
        categories=categories,
        image_size=size,
        check_images=False,
    )
    if len(dataset) == 0 and split != "all":
        raise ValueError(
            f"data.root {root}: the {split!r} split of the r2n2 data is empty "
            f"(categories {categories or 'all'}; splits file {cfg.splits_file or 'none'})"
        )
    return dataset


# -- what each step reads ----------------------------------------------------------------------
def slot_generator(seed: int, step: int, slot: int) -> torch.Generator:
    """The generator of everything random about object ``slot`` of step ``step``."""
    key = (int(seed) * 1_000_003 + int(step)) * 4099 + int(slot)
    return torch.Generator().manual_seed(key % (2**63 - 1))


class StepSampler(torch.utils.data.Sampler):
    """Batches of ``(index, step, slot)`` keys: step ``s``'s global batch is the
    ``s mod E``-th run of ``batch_size`` objects of a permutation of ``range(n)`` seeded by
    ``(seed, epoch)`` (``E = max(1, n // batch_size)`` steps per epoch; the ``n mod
    batch_size`` objects left over change every epoch); process ``rank`` of ``world`` gets
    the slots ``rank, rank + world, ...`` of it.

    Args:
        n: objects in the split.
        batch_size: objects per step summed over all processes.
        seed: the run's seed.
        start: the first step to yield (resume: the checkpoint's step).
        stop: the step to stop before (None: never stop).
        rank, world: this process and the number of processes.

    Within one epoch the processes' objects are disjoint, and together they are every object
    when ``batch_size`` divides ``n``. A split smaller than a batch is repeated to fill it.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        start: int = 0,
        stop: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if n < 1:
            raise ValueError(f"the training split holds no objects (n = {n})")
        if batch_size < world or batch_size < 1:
            raise ValueError(
                f"train.batch_size ({batch_size}) must be at least the number of processes "
                f"({world})"
            )
        if not 0 <= rank < world:
            raise ValueError(f"rank must lie in [0, {world}); got {rank}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.start, self.stop, self.rank, self.world = int(start), stop, int(rank), int(world)
        self.per_epoch = max(1, self.n // self.batch_size)
        self._epoch: tuple[int, torch.Tensor] | None = None

    def _order(self, epoch: int) -> torch.Tensor:
        if self._epoch is None or self._epoch[0] != epoch:
            gen = slot_generator(self.seed, -1 - epoch, 0)
            self._epoch = (epoch, torch.randperm(self.n, generator=gen))
        return self._epoch[1]

    def global_batch(self, step: int) -> torch.Tensor:
        """``(batch_size,)`` object indices of step ``step`` (all processes)."""
        epoch, pos = divmod(int(step), self.per_epoch)
        order = self._order(epoch)
        index = order[pos * self.batch_size : (pos + 1) * self.batch_size]
        while len(index) < self.batch_size:  # a split smaller than a batch
            index = torch.cat([index, order[: self.batch_size - len(index)]])
        return index

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        """This process's ``(index, step, slot)`` keys of step ``step``."""
        index = self.global_batch(step)
        return [
            (int(index[s]), int(step), s) for s in range(self.rank, self.batch_size, self.world)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        step = self.start
        while self.stop is None or step < self.stop:
            yield self.keys(step)
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            return sys.maxsize
        return max(0, self.stop - self.start)


class InMemorySplit(torch.utils.data.Dataset):
    """A split held in memory: ``images (N, V, 3, H, W)`` and ``silhouettes (N, V, 1, H, W)``
    uint8, cameras ``K, R (N, V, 3, 3)``, ``t (N, V, 3)`` float32, ``voxels (N, 1, R, R, R)``
    uint8 (or None). Its items are samples as the source dataset's (see
    :mod:`persp3d.datasets.sample`), quantised to 8 bits like the stored datasets;
    ``indices (N,)`` are their indices in the source dataset."""

    def __init__(
        self, images, silhouettes, K, R, t, image_size, voxels, categories, ids, indices=None
    ) -> None:
        self.images, self.silhouettes = images, silhouettes
        n = images.shape[0]
        self.indices = torch.arange(n) if indices is None else torch.as_tensor(indices).long()
        self.K, self.R, self.t = K, R, t
        self.image_size = tuple(image_size)
        self.voxels = voxels
        self.categories, self.ids = list(categories), list(ids)

    @classmethod
    def from_dataset(
        cls,
        dataset,
        limit: int | None = None,
        say=None,
        what: str = "split",
        workers: int = 0,
        spread: bool = False,
    ) -> InMemorySplit:
        """``limit`` samples of ``dataset`` (all by default): the first ones, or with
        ``spread`` ones evenly spread over it (every category of a split sorted by category);
        read by ``workers`` processes (0: this one); ``say`` reports progress every 500."""
        n = len(dataset) if limit is None else min(int(limit), len(dataset))
        if n == 0:
            raise ValueError(f"{dataset!r} holds no samples")
        chosen = list(range(n))
        if spread and n < len(dataset):
            chosen = [(i * len(dataset)) // n for i in range(n)]
        samples = iter(chosen)
        if workers > 0 and n > 1:
            samples = iter(
                torch.utils.data.DataLoader(
                    torch.utils.data.Subset(dataset, chosen),
                    batch_size=None,
                    num_workers=int(workers),
                    worker_init_fn=_worker_init,
                )
            )
        to8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
        read = (
            (lambda: next(samples)) if workers > 0 and n > 1 else (lambda: dataset[next(samples)])
        )
        first = read()
        V, _, H, W = first["images"].shape
        images = torch.empty((n, V, 3, H, W), dtype=torch.uint8)
        sils = torch.empty((n, V, 1, H, W), dtype=torch.uint8)
        K = torch.empty((n, V, 3, 3))
        R = torch.empty((n, V, 3, 3))
        t = torch.empty((n, V, 3))
        voxels = None
        if "voxels" in first:
            voxels = torch.empty((n, *first["voxels"].shape), dtype=torch.uint8)
        cats, ids = [], []
        for i in range(n):
            s = in_unit_box(first if i == 0 else read())
            images[i], sils[i] = to8(s["images"]), to8(s["silhouettes"])
            cams = s["cameras"]
            K[i], R[i], t[i] = cams.K.float(), cams.R.float(), cams.t.float()
            if voxels is not None:
                voxels[i] = to8(s["voxels"])
            cats.append(s["category"])
            ids.append(s["id"])
            if say is not None and (i + 1) % 500 == 0:
                say(f"  read {i + 1}/{n} objects of the {what}")
        return cls(images, sils, K, R, t, cams.image_size, voxels, cats, ids, chosen)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def n_views(self) -> int:
        return self.images.shape[1]

    def cameras(self, index: torch.Tensor, views: torch.Tensor) -> Cameras:
        """Cameras of objects ``index (B,)`` and views ``views (B, k)`` -> batch ``(B, k)``."""
        rows = index[:, None].expand_as(views)
        return Cameras(
            self.K[rows, views],
            self.R[rows, views],
            self.t[rows, views],
            self.image_size,
            validate=False,
        )

    def sample_views(self, index: int, views: Sequence[int] | None = None) -> dict[str, Any]:
        sel = slice(None) if views is None else torch.as_tensor(list(views), dtype=torch.long)
        s: dict[str, Any] = {
            "images": self.images[index, sel].float() / 255.0,
            "silhouettes": self.silhouettes[index, sel].float() / 255.0,
            "cameras": Cameras(
                self.K[index, sel],
                self.R[index, sel],
                self.t[index, sel],
                self.image_size,
                validate=False,
            ),
            "category": self.categories[index],
            "id": self.ids[index],
        }
        if self.voxels is not None:
            s["voxels"] = self.voxels[index].float() / 255.0
        return s

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample_views(index)


def in_unit_box(sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` with its world moved and scaled so that its ``box`` becomes ``VolumeBox()``.

    The network predicts a volume filling ``VolumeBox()``; an imported capture keeps its own
    world units and carries the object's cube as ``sample["box"]``. Training and validation
    see every sample in the box's frame, ``X_box = (X - box.center) / box.side``
    (:func:`persp3d.datasets.r2n2.cameras_to_box_frame`): the images do not change and every
    world point projects to the pixel its image ``X_box`` does. Samples without a box (or
    with ``VolumeBox()``) come back unchanged; the box's ``up`` is kept.
    """
    from persp3d.datasets.r2n2 import cameras_to_box_frame
    from persp3d.volume import VolumeBox

    box = sample.get("box")
    if box is None or box == VolumeBox():
        return sample
    sizes = [float(v) for v in box.size]
    if max(sizes) - min(sizes) > 1e-9 * max(sizes):
        raise ValueError(f"sample {sample.get('id')!r}: training needs a cubic box; got {box}")
    out = dict(sample)
    center = [float(v) for v in box.center]
    out["cameras"] = cameras_to_box_frame(sample["cameras"], center, sizes[0])
    out["box"] = VolumeBox()
    return out


def load_views(
    dataset, index: int, views: Sequence[int], with_voxels: bool = True
) -> dict[str, Any]:
    """Sample ``index`` of ``dataset`` with only ``views`` (in that order, repeats allowed),
    reading no more than it must: a persp3d folder decodes only those views, R2N2 reads only
    their PNGs, other datasets load the whole sample and select."""
    from persp3d.datasets.multiview import MultiViewFolder
    from persp3d.datasets.r2n2 import R2N2
    from persp3d.datasets.sample import decode_item

    views = [int(v) for v in views]
    if isinstance(dataset, InMemorySplit):
        return dataset.sample_views(index, views)
    if isinstance(dataset, MultiViewFolder):
        item = dataset.items[index]
        res = dataset.voxel_resolution if with_voxels else 0
        arrays = _read_members(dataset, item, res)
        sample = decode_item(arrays, voxel_resolution=res, views=views, with_depth=False)
        return in_unit_box(sample)
    if isinstance(dataset, R2N2):
        return _r2n2_views(dataset, index, views, with_voxels)
    sample = in_unit_box(dataset[index])
    sel = torch.as_tensor(views, dtype=torch.long)
    out = dict(sample)
    out["images"] = sample["images"][sel]
    out["silhouettes"] = sample["silhouettes"][sel]
    out["cameras"] = sample["cameras"][sel]
    if not with_voxels:
        out.pop("voxels", None)
    out.pop("depth", None)
    return out


_MEMBERS = ("images", "silhouettes", "K", "R", "t")
_BOX_MEMBERS = ("box_center", "box_size")
_NPY_HEADER = re.compile(
    r"\{'descr': '(?P<descr>[<>|=][a-zA-Z]\d*)', 'fortran_order': False, "
    r"'shape': \((?P<shape>[\d, ]*)\), \}"
)


def _npy_array(raw: bytes) -> np.ndarray:
    """An array from the bytes of a ``.npy`` file (format 1.0, C order, plain dtype), as
    ``np.save`` writes them; anything else raises ``ValueError`` (the caller falls back to
    ``np.load``). Parsing the header with a regular expression instead of ``np.load``'s
    ``ast.literal_eval`` took a fifth off each item's reading time."""
    if raw[:8] != b"\x93NUMPY\x01\x00":
        raise ValueError("not a version 1.0 .npy")
    n = int.from_bytes(raw[8:10], "little")
    match = _NPY_HEADER.match(raw[10 : 10 + n].decode("latin1"))
    if match is None:
        raise ValueError("unexpected .npy header")
    shape = tuple(int(d) for d in match["shape"].replace(" ", "").split(",") if d)
    dtype = np.dtype(match["descr"])
    if dtype.hasobject or len(raw) - 10 - n != dtype.itemsize * int(np.prod(shape)):
        raise ValueError("the header does not describe the data")
    return np.frombuffer(raw, dtype=dtype, offset=10 + n).reshape(shape)


def _read_members(dataset, item: dict[str, Any], voxel_resolution: int | None) -> dict[str, Any]:
    """The arrays of a stored item that training reads: not its depth maps nor the voxel
    grids it does not use (decompressing those took about half of each read); category and
    id come from the manifest. The file's checksum is checked as
    :func:`persp3d.datasets.cache.read_item` does; on any problem the dataset's own reader
    takes over (it raises naming the file, or repairs the item)."""
    from persp3d.datasets.cache import MAX_ITEM_BYTES

    try:
        data = (dataset.root / item["file"]).read_bytes()
        if item.get("sha256") and hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise ValueError("checksum mismatch")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            files = {n[: -len(".npy")] for n in zf.namelist()}
            names = [*_MEMBERS, *(n for n in _BOX_MEMBERS if n in files)]
            stored = [n for n in files if n.startswith("voxels_")]
            if voxel_resolution != 0 and stored:
                res = voxel_resolution or min(int(n.split("_", 1)[1]) for n in stored)
                names.append(f"voxels_{res}")
            if sum(zf.getinfo(n + ".npy").file_size for n in names) > MAX_ITEM_BYTES:
                raise ValueError("too large")  # a zip bomb? read_item says so
            arrays: dict[str, Any] = {n: _npy_array(zf.read(n + ".npy")) for n in names}
        arrays["category"] = np.array(item["category"])
        arrays["id"] = np.array(item["id"])
        return arrays
    except Exception:  # the dataset's own reader says what is wrong
        return dataset._read(item)


def _r2n2_views(dataset, index: int, views: list[int], with_voxels: bool) -> dict[str, Any]:
    from persp3d.datasets.binvox import binvox_to_volume, read_binvox
    from persp3d.datasets.r2n2 import _load_rgba

    model = dataset.models[index]
    images, sils = [], []
    for v in views:
        rgb, alpha = _load_rgba(model["dir"] / f"{model['views'][v]:02d}.png", dataset.image_size)
        images.append(rgb * alpha + dataset.background * (1.0 - alpha))  # (H, W, 3)
        sils.append(alpha)  # (H, W, 1)
    sample: dict[str, Any] = {
        "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        "silhouettes": torch.from_numpy(np.stack(sils)).permute(0, 3, 1, 2).contiguous(),
        "category": model["category"],
        "id": model["id"],
    }
    scale = None
    if "binvox" in model:
        vox = read_binvox(model["binvox"])
        scale = vox.scale
        if with_voxels:
            volume = binvox_to_volume(vox.data)  # (D, H, W) = (z, y, x)
            sample["voxels"] = torch.from_numpy(volume.astype(np.float32))[None]
    sample["cameras"] = dataset._cameras(model, scale)[torch.as_tensor(views)]
    return sample


def n_views_of(dataset) -> int:
    """Views per object of a dataset (read from its first sample)."""
    if isinstance(dataset, InMemorySplit):
        return dataset.n_views
    if hasattr(dataset, "models") and dataset.models and "views" in dataset.models[0]:
        return len(dataset.models[0]["views"])  # R2N2: without reading images
    return int(dataset[0]["images"].shape[0])


class StepSamples(torch.utils.data.Dataset):
    """Training items keyed by ``(index, step, slot)`` (see :class:`StepSampler`).

    Object ``index``'s item for ``slot`` of ``step``: an input view and ``views_per_step``
    supervising views (all views if 0) drawn from :func:`slot_generator`, read with
    :func:`load_views`; the supervising silhouettes are area-resized to
    ``projection_size``.

    Item: ``input (C_in, H, W)`` float32 (RGB or silhouette, per ``input_kind``),
    ``silhouettes (k, 1, s, s)``, camera parameters ``K, R (k, 3, 3)``, ``t (k, 3)`` of the
    supervising views at image size ``(H, W)``, ``voxels (1, R, R, R)`` if ``with_voxels``,
    ``hull (1, R', R', R')`` if ``hull_resolution`` ``R'`` > 0: the visual hull carved from
    the silhouettes of all the object's views (:meth:`hull`; no 3D labels).
    """

    def __init__(
        self,
        dataset,
        *,
        seed: int,
        views_per_step: int,
        input_kind: str,
        projection_size: int,
        with_voxels: bool,
        n_views: int | None = None,
        hull_resolution: int = 0,
    ) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.n_views = n_views_of(dataset) if n_views is None else int(n_views)
        V = self.n_views
        self.k = V if views_per_step <= 0 else min(int(views_per_step), V)
        self.input_kind = input_kind
        self.projection_size = int(projection_size)
        self.with_voxels = with_voxels
        self.hull_resolution = int(hull_resolution)
        self._hulls: dict[int, np.ndarray] = {}  # index -> packed bits (per process)

    def __len__(self) -> int:
        return len(self.dataset)

    def hull(self, index: int) -> torch.Tensor:
        """``(1, R, R, R)`` float 0/1: the visual hull of object ``index`` carved at
        ``hull_resolution`` from the silhouettes of all its views
        (:func:`persp3d.fitting.visual_hull`; a view that does not see a point says nothing
        about it, as in the projection loss). Computed on first use and kept, a bit per
        voxel, by each process (4 KiB per object at 32^3)."""
        R = self.hull_resolution
        packed = self._hulls.get(index)
        if packed is None:
            from persp3d.fitting import visual_hull

            sample = load_views(self.dataset, index, range(self.n_views), with_voxels=False)
            sil = sample["silhouettes"].float()
            hull = visual_hull(sample["cameras"], sil, R, keep_outside=True)  # (1, 1, R, R, R)
            packed = np.packbits(hull.reshape(-1).numpy() > 0.5)
            self._hulls[index] = packed
        bits = np.unpackbits(packed, count=R**3).astype(np.float32)
        return torch.from_numpy(bits).reshape(1, R, R, R)

    def draw(self, step: int, slot: int) -> tuple[int, list[int]]:
        """The input view and the supervising views of ``slot`` at ``step``."""
        gen = slot_generator(self.seed, step, slot)
        input_view = int(torch.randint(self.n_views, (1,), generator=gen))
        views = torch.randperm(self.n_views, generator=gen)[: self.k].tolist()
        return input_view, views

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        index, step, slot = key
        input_view, views = self.draw(step, slot)
        sample = load_views(self.dataset, index, [input_view, *views], self.with_voxels)
        source = sample["images"] if self.input_kind == "rgb" else sample["silhouettes"]
        sil = sample["silhouettes"][1:]  # (k, 1, H, W)
        s = self.projection_size
        if tuple(sil.shape[-2:]) != (s, s):
            sil = F.adaptive_avg_pool2d(sil, s)  # (k, 1, s, s)
        cams = sample["cameras"][1:]
        item = {
            "input": source[0].contiguous(),  # (C_in, H, W)
            "silhouettes": sil.contiguous(),
            "K": cams.K.float(),
            "R": cams.R.float(),
            "t": cams.t.float(),
            "image_size": torch.tensor(cams.image_size),
        }
        if self.with_voxels:
            if "voxels" not in sample:
                raise ValueError("voxel supervision needs ground-truth voxels in the dataset")
            item["voxels"] = sample["voxels"]
        if self.hull_resolution:
            item["hull"] = self.hull(int(index))
        return item


def collate_steps(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack :class:`StepSamples` items: ``input (B, C_in, H, W)``, ``silhouettes
    (B, k, 1, s, s)``, ``K, R (B, k, 3, 3)``, ``t (B, k, 3)``, ``image_size (2,)``,
    ``voxels (B, 1, R, R, R)``."""
    out = {key: torch.stack([it[key] for it in items]) for key in items[0] if key != "image_size"}
    out["image_size"] = items[0]["image_size"]
    return out


def batch_cameras(batch: dict[str, torch.Tensor]) -> Cameras:
    """The ``(B, k)`` cameras of a collated batch."""
    H, W = (int(v) for v in batch["image_size"])
    return Cameras(batch["K"], batch["R"], batch["t"], (H, W), validate=False)


def choose_in_memory(cfg: DataConfig, dataset) -> tuple[bool, str]:
    """Whether to hold the training split in memory, and why (``data.in_memory``).

    ``auto`` streams whenever ``data.workers`` > 0: with workers, streaming trains as fast as
    the in-memory path (100-104% of its objects/s on the default, 2 quiet cores,
    ``benchmarks/bench_data.py --sizes 1000 --steps 20 --repeat 3``) in 400 MB less and
    without the 5 s read at start-up. Without workers the main process reads each item
    itself, 3% slower than from memory, so ``auto`` holds a split in memory when its 8-bit
    images, silhouettes and voxels take at most ``data.in_memory_mb`` MiB and streams above
    that, so memory does not grow with the data.
    """
    mode = str(cfg.in_memory).lower()
    if mode in ("true", "1", "yes"):
        return True, "data.in_memory is true"
    if mode in ("false", "0", "no"):
        return False, "data.in_memory is false"
    if mode != "auto":
        raise ValueError(f"data.in_memory must be auto, true or false; got {cfg.in_memory!r}")
    if cfg.workers > 0:
        return False, f"auto: data.workers is {cfg.workers} (streaming keeps pace)"
    first = load_views(dataset, 0, [0], with_voxels=True)
    _, _, H, W = first["images"].shape
    V = n_views_of(dataset)
    per_object = V * 4 * H * W + (first["voxels"].numel() if "voxels" in first else 0)
    mib = per_object * len(dataset) / 2**20
    if mib <= cfg.in_memory_mb:
        return (
            True,
            f"auto: the split takes {mib:.0f} MiB <= data.in_memory_mb {cfg.in_memory_mb:g}",
        )
    return False, f"auto: the split takes {mib:.0f} MiB > data.in_memory_mb {cfg.in_memory_mb:g}"


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def train_batches(
    samples: StepSamples,
    sampler: StepSampler,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of ``sampler``'s steps, read by ``workers`` processes (0: in this one).

    Workers are persistent, start with one torch thread each and prefetch two batches
    each; batches arrive in step order whatever the number of workers.
    """
    if workers <= 0:
        return (collate_steps([samples[k] for k in keys]) for keys in sampler)
    loader = torch.utils.data.DataLoader(
        samples,
        batch_sampler=sampler,
        num_workers=int(workers),
        collate_fn=collate_steps,
        pin_memory=pin_memory,
        persistent_workers=True,
        worker_init_fn=_worker_init,
        prefetch_factor=2,
    )
    return iter(loader)
