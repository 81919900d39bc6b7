"""Volume files: one reader and one writer for occupancy volumes with their box, their
logits and the cameras they were made for (``.npz``), ``.binvox``, ``.npy`` and meshes.

Where volumes leave and re-enter the data path: ``persp3d fit`` writes them, ``check``,
``view``, ``eval`` and the report read them, always through :func:`save_volume` and
:func:`load_volume`.

Convention:
    A volume is ``(D, H, W)`` float32 occupancy in [0, 1] filling a :class:`~persp3d.VolumeBox`:
    axis W along world x, H along y, D along z; voxel ``(k, j, i)`` has its centre at
    ``box.min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size`` (DESIGN.md).

    ``.npz`` (``format = "persp3d-volume"``, ``version = 2``; read with
    ``np.load(path, allow_pickle=False)``, nothing is pickled): ``occupancy (D, H, W)``
    float32; optional ``logits (D, H, W)`` float32; ``box_center``, ``box_size``,
    ``box_min``, ``voxel_size`` as ``(x, y, z)`` float64; ``axes`` and ``convention``
    (sentences); when the cameras are known ``K (V, 3, 3)``, ``R (V, 3, 3)``, ``t (V, 3)``
    float64 (``X_cam = R X + t``, OpenCV axes, pixel centres at ``+0.5``) and
    ``image_size (2,)`` = ``(H, W)``; ``meta_json``, a JSON object (e.g. ``"up": [0, 0, 1]``,
    the capture's up direction, used by the viewer to stand the object upright).
    Older layouts still read: version 1 written by ``persp3d view --export`` (``volume``
    instead of ``occupancy``), the layout ``persp3d fit`` wrote before this module
    (``occupancy``, ``logits``, ``box_center``, ``box_size``, ``K``, ``R``, ``t``,
    ``image_size`` without ``format``), dataset items (``voxels_<R>``, the highest
    resolution) and any archive with one ``volume``/``occupancy``/``voxels``/``logits``
    array or a single 3D array (placed in ``VolumeBox()``).

    ``.npy``: one array ``(D, H, W)`` (or with leading 1-sized axes), placed in
    ``VolumeBox()``; :func:`save_volume` refuses ``.npy`` (it cannot hold the box).

    ``.binvox`` (Patrick Min's format; ShapeNetVox32): voxels above ``threshold``,
    ``dim R R R`` and the header's normalisation. Per binvox's documentation ``scale`` is the
    side of the voxel cube and ``translate`` the minimum of the voxelised model's bounding
    box (binvox's own output puts the model at the cube's minimum corner; ShapeNetVox32
    centres it in a cube of side ``scale``, DESIGN.md). So the cube is placed where the
    voxels put the model's minimum at ``translate``: along each axis with occupied cells
    ``a .. b``, the model starts ``o`` voxels into the cube, with ``o = (a + R - 1 - b) / 2``
    when the cells are centred to within a voxel (ShapeNetVox32) and ``o = a`` otherwise;
    the cube spans ``[translate - o * scale / R, translate - o * scale / R + scale]``
    (:func:`_model_offset`). This is exact for files this module writes (it writes
    ``translate = box.min + o * scale / R``, ``scale`` = the box side, so a volume comes back
    in its own box), within half a voxel for ShapeNetVox32 and binvox files, and checked by
    projecting ShapeNetVox32-style files onto their renders. A reader that takes
    ``translate`` for the cube's corner misplaces ShapeNetVox32 files and these alike, by
    ``o`` voxels. ``persp3d.datasets.r2n2`` puts ShapeNetVox32's
    cube at the origin (ShapeNet v1 centres its models there), which agrees with this
    reading to within half a voxel.

    Meshes (``.obj .off .ply .stl .glb .gltf``): voxelised by
    :func:`persp3d.datasets.voxelize.voxelize_mesh` in ``VolumeBox()`` when the mesh fits it,
    else in the cube around its bounding box (:func:`mesh_box`).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.cameras import Cameras
from persp3d.volume import VolumeBox

__all__ = [
    "AXES",
    "MESH_SUFFIXES",
    "NPZ_FORMAT",
    "NPZ_VERSION",
    "VOLUME_CONVENTION",
    "VOLUME_SUFFIXES",
    "VolumeFile",
    "as_occupancy",
    "load_volume",
    "mesh_box",
    "save_volume",
]

NPZ_FORMAT = "persp3d-volume"
NPZ_VERSION = 2
AXES = "D,H,W = z,y,x"
VOLUME_CONVENTION = (
    "persp3d volume: array (D, H, W) with axis W along world x, H along y, D along z; world "
    "right-handed; the volume fills the axis-aligned box [box_min, box_min + box_size]; "
    "voxel (k, j, i) has its centre at box_min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size, "
    "voxel_size = box_size / (W, H, D); occupancy in [0, 1] (logits: its log-odds); sampled "
    "trilinearly with align_corners=False, 0 outside the box; cameras X_cam = R X + t, "
    "OpenCV axes, pixel centres at +0.5, image_size = (H, W)"
)
MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
VOLUME_SUFFIXES = (".npz", ".npy", ".binvox", ".pt", ".pth")
_NPZ_KEYS = ("occupancy", "volume", "voxels")
# Values this far outside [0, 1] are taken for rounding and clipped; farther is an error
# (the viewers' persp3d.viewers.scene.OCCUPANCY_TOLERANCE is the same).
_OCCUPANCY_TOLERANCE = 1e-5


@dataclass
class VolumeFile:
    """A volume as read from a file.

    Attributes:
        occupancy: ``(D, H, W)`` float32 in [0, 1].
        box: the world box it fills.
        logits: ``(D, H, W)`` float32 log-odds when the file holds them, else None.
        cameras: the ``Cameras`` (batch shape ``(V,)``) it was made for, else None.
        meta: what else the file says (``"up"``: ``[x, y, z]`` the capture's up direction;
            ``"format"``: the layout read, e.g. ``"persp3d-volume-2"``, ``"fit-v0"``,
            ``"binvox"``, ``"npy"``, ``"mesh"``; ``"box_from_file"``: whether the file stated
            its box).
    """

    occupancy: np.ndarray
    box: VolumeBox = field(default_factory=VolumeBox)
    logits: np.ndarray | None = None
    cameras: Cameras | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def up(self) -> np.ndarray | None:
        """``(3,)`` the capture's up direction when the file says it, else None."""
        up = self.meta.get("up")
        return None if up is None else np.asarray(up, dtype=np.float64)

    def tensor(self) -> torch.Tensor:
        """``(1, 1, D, H, W)`` float32 occupancy, as :func:`persp3d.project` takes it."""
        return torch.from_numpy(np.ascontiguousarray(self.occupancy))[None, None]


# -- values ---------------------------------------------------------------------------------
def _array(value: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"{name} must be (D, H, W) (or (1, 1, D, H, W)); got shape {arr.shape}")
    return arr


def as_occupancy(value: np.ndarray | torch.Tensor, name: str = "occupancy") -> np.ndarray:
    """``(D, H, W)`` float32 occupancy in [0, 1] from an array or tensor.

    Leading 1-sized axes are dropped; bool becomes {0, 1}; uint8 with values above 1 is read
    as 0..255; float values within ``1e-5`` of [0, 1] are clipped into it.

    Raises:
        ValueError: not one 3D volume, not numeric, non-finite, or values outside [0, 1]
            (``name`` and the range found are in the message).
    """
    arr = _array(value, name)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / (255.0 if arr.max(initial=0) > 1 else 1.0)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} holds non-finite values")
    lo, hi = float(out.min()), float(out.max())
    if lo < -_OCCUPANCY_TOLERANCE or hi > 1.0 + _OCCUPANCY_TOLERANCE:
        raise ValueError(
            f"{name} must hold occupancy in [0, 1]; got values in [{lo:.4g}, {hi:.4g}] "
            "(logits? store them as logits, or apply a sigmoid)"
        )
    return np.clip(out, 0.0, 1.0)


def _logits(value: np.ndarray | torch.Tensor, name: str = "logits") -> np.ndarray:
    arr = _array(value, name)
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if np.isnan(out).any():
        raise ValueError(f"{name} holds NaN")
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))).astype(np.float32)


def _camera_arrays(cameras: Cameras) -> dict[str, np.ndarray]:
    cams = cameras.detach().cpu().double()
    if cams.ndim != 1:
        raise ValueError(f"cameras must have batch shape (V,); got {tuple(cams.batch_shape)}")
    return {
        "K": cams.K.expand(*cams.batch_shape, 3, 3).numpy(),
        "R": cams.R.expand(*cams.batch_shape, 3, 3).numpy(),
        "t": cams.t.expand(*cams.batch_shape, 3).numpy(),
        "image_size": np.asarray(cams.image_size, dtype=np.int64),
    }


def _json_value(value: Any) -> Any:
    """NumPy and torch values as plain JSON values (for ``json.dumps(default=...)``)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _meta_json(meta: dict[str, Any] | None) -> str:
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict; got {type(meta).__name__}")
    try:
        return json.dumps({str(k): v for k, v in (meta or {}).items()}, default=_json_value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"meta must hold JSON values (numbers, strings, lists); {err}") from err


# -- writing --------------------------------------------------------------------------------
def save_volume(
    path: str | os.PathLike,
    occupancy: np.ndarray | torch.Tensor | None,
    box: VolumeBox | None = None,
    *,
    logits: np.ndarray | torch.Tensor | None = None,
    cameras: Cameras | None = None,
    meta: dict[str, Any] | None = None,
    threshold: float = 0.5,
) -> Path:
    """Write a volume as ``.npz`` (everything) or ``.binvox`` (voxels above ``threshold``).

    Args:
        path: ``*.npz`` or ``*.binvox`` (``.npy`` is refused: it cannot hold the box).
        occupancy: ``(D, H, W)`` (or ``(1, 1, D, H, W)``) in [0, 1]; None with ``logits``
            given writes ``sigmoid(logits)``.
        box: the world box the volume fills (default ``VolumeBox()``).
        logits: ``(D, H, W)`` log-odds to keep beside the occupancy (``.npz`` only).
        cameras: ``Cameras`` of batch shape ``(V,)`` the volume was made for (``.npz`` only).
        meta: JSON-able extras (``.npz`` only), e.g. ``{"up": [0, 0, 1]}``.
        threshold: occupancy above which a voxel is set (``.binvox`` only).

    Returns:
        ``path`` (parent folders are made; the file is replaced atomically).

    Raises:
        ValueError: a bad argument, or a format that cannot hold what was given (the message
            says which and what to use instead).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    box = box if box is not None else VolumeBox()
    if not isinstance(box, VolumeBox):
        raise ValueError(f"box must be a persp3d.VolumeBox; got {type(box).__name__}")
    logit_arr = None if logits is None else _logits(logits)
    if occupancy is None:
        if logit_arr is None:
            raise ValueError("save_volume needs occupancy or logits; got neither")
        occ = _sigmoid(logit_arr)
    else:
        occ = as_occupancy(occupancy)
    if logit_arr is not None and logit_arr.shape != occ.shape:
        raise ValueError(
            f"logits must have the occupancy's shape {occ.shape}; got {logit_arr.shape}"
        )
    if suffix == ".npz":
        return _save_npz(path, occ, box, logit_arr, cameras, meta)
    if suffix == ".binvox":
        dropped = [n for n, v in (("logits", logits), ("cameras", cameras), ("meta", meta)) if v]
        if dropped:
            raise ValueError(
                f"{path}: .binvox holds voxels and a box only, not {', '.join(dropped)}; "
                "write .npz to keep them"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1]; got {threshold}")
        return _save_binvox(path, occ, box, threshold)
    if suffix == ".npy":
        raise ValueError(
            f"{path}: save_volume does not write .npy (it cannot hold the box or cameras); "
            "write .npz (np.load(path)['occupancy'] is the plain array)"
        )
    raise ValueError(f"{path}: unknown volume format {suffix!r}; use .npz or .binvox")


def _atomic_write(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _save_npz(path, occ, box, logit_arr, cameras, meta) -> Path:
    arrays: dict[str, np.ndarray] = {
        "format": np.array(NPZ_FORMAT),
        "version": np.array(NPZ_VERSION, dtype=np.int64),
        "occupancy": occ,
        "box_center": np.asarray(box.center, dtype=np.float64),
        "box_size": np.asarray(box.size, dtype=np.float64),
        "box_min": np.asarray(box.min, dtype=np.float64),
        "voxel_size": np.asarray(box.voxel_size(occ.shape), dtype=np.float64),
        "axes": np.array(AXES),
        "convention": np.array(VOLUME_CONVENTION),
        "meta_json": np.array(_meta_json(meta)),
    }
    if logit_arr is not None:
        arrays["logits"] = logit_arr
    if cameras is not None:
        if not isinstance(cameras, Cameras):
            raise ValueError(f"cameras must be persp3d.Cameras; got {type(cameras).__name__}")
        arrays.update(_camera_arrays(cameras))
    return _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _save_binvox(path: Path, occ: np.ndarray, box: VolumeBox, threshold: float) -> Path:
    from persp3d.datasets.binvox import volume_to_binvox, write_binvox

    if len(set(occ.shape)) != 1:
        raise ValueError(f"{path}: binvox needs a cubic volume (R, R, R); got shape {occ.shape}")
    if len(set(box.size)) != 1:
        raise ValueError(f"{path}: binvox needs a cubic box (one scale); got size {box.size}")
    grid = occ > threshold  # (D, H, W)
    R, side = occ.shape[0], float(box.size[0])
    offset = _model_offset(grid) * side / R  # (x, y, z) model minimum - cube minimum
    translate = tuple(float(m + o) for m, o in zip(box.min, offset))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_binvox(tmp, volume_to_binvox(grid), translate=translate, scale=side)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _model_offset(grid: np.ndarray) -> np.ndarray:
    """``(3,)`` ``(x, y, z)`` where the voxelised model's bounding box starts in a ``(R, R, R)``
    bool grid, in voxels from the cube's minimum face: the reading of a binvox header.

    Along each axis with occupied cells ``a .. b``, the model's minimum lies within half a
    voxel of ``a`` (cells are set where the model covers their centre). When the occupied
    cells are centred in the cube to within a voxel (``|a - (R - 1 - b)| <= 1``, as
    ShapeNetVox32 centres its models) the model is taken as centred: ``(a + R - 1 - b) / 2``;
    else (binvox's own output, the model at the cube's minimum corner) ``a``. An empty grid
    gives 0.
    """
    R = grid.shape[0]
    offset = np.zeros(3)
    if not grid.any():
        return offset
    for n, axis in enumerate((2, 1, 0)):  # x, y, z
        other = tuple(x for x in range(3) if x != axis)
        cells = np.flatnonzero(grid.any(axis=other))
        a, mirrored = int(cells[0]), R - 1 - int(cells[-1])
        offset[n] = (a + mirrored) / 2 if abs(a - mirrored) <= 1 else a
    return offset


# -- reading --------------------------------------------------------------------------------
def load_volume(
    path: str | os.PathLike, *, resolution: int = 64, logits: bool = False
) -> VolumeFile:
    """Read a volume file: ``.npz`` (persp3d-volume, and the older layouts), ``.npy``,
    ``.binvox``, a ``.pt``/``.pth`` tensor, or a mesh (voxelised at ``resolution``); see the
    module docstring for each layout and where it is placed.

    With ``logits`` the array of a ``.npy``, a ``.pt`` or an ``.npz`` without ``occupancy``
    holds log-odds: it is returned as ``logits`` and its sigmoid as ``occupancy``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read as a volume (the message names the file and
            what was wrong).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            return _load_npz(path, logits)
        if suffix == ".npy":
            return _load_npy(path, logits)
        if suffix == ".binvox":
            return _load_binvox(path)
        if suffix in (".pt", ".pth"):
            return _load_torch(path, logits)
        if suffix in MESH_SUFFIXES:
            return _load_mesh(path, resolution)
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from err
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot read a volume ({type(err).__name__}: {err})") from err
    raise ValueError(
        f"{path}: unknown volume format {suffix!r}; expected {', '.join(VOLUME_SUFFIXES)} "
        f"or a mesh ({', '.join(MESH_SUFFIXES)})"
    )


def _string(value: np.ndarray) -> str:
    return str(np.asarray(value).reshape(()).item()) if np.asarray(value).size == 1 else ""


def _box_of(arrays: dict[str, np.ndarray]) -> VolumeBox | None:
    if "box_center" not in arrays or "box_size" not in arrays:
        return None
    try:
        return VolumeBox(
            np.asarray(arrays["box_center"], dtype=np.float64).reshape(-1).tolist(),
            np.asarray(arrays["box_size"], dtype=np.float64).reshape(-1).tolist(),
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"bad box_center / box_size ({err})") from err


def _cameras_of(arrays: dict[str, np.ndarray]) -> Cameras | None:
    keys = ("K", "R", "t", "image_size")
    present = [k for k in keys if k in arrays]
    if not present:
        return None
    if len(present) != len(keys):
        missing = sorted(set(keys) - set(present))
        raise ValueError(f"cameras are incomplete: {missing} missing")
    size = np.asarray(arrays["image_size"]).reshape(-1)
    if size.size != 2 or not np.issubdtype(size.dtype, np.number) or (size < 1).any():
        raise ValueError(f"image_size must be (H, W) positive; got {size.tolist()}")
    try:
        K, R, t = (torch.from_numpy(np.asarray(arrays[k], dtype=np.float64)) for k in keys[:3])
        cams = Cameras(K.float(), R.float(), t.float(), (int(size[0]), int(size[1])))
    except (ValueError, TypeError, RuntimeError) as err:
        raise ValueError(f"bad cameras K, R, t ({err})") from err
    if cams.ndim != 1:
        raise ValueError(f"cameras must have batch shape (V,); got {tuple(cams.batch_shape)}")
    return cams


def _values(array, name: str, logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(occupancy, logits or None)`` of a stored array."""
    if logits:
        raw = _logits(array, name)
        return _sigmoid(raw), raw
    return as_occupancy(array, name), None


def _load_npz(path: Path, as_logits: bool = False) -> VolumeFile:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as err:  # object arrays need pickles: refused
        raise ValueError(f"{path}: not a plain .npz (pickled objects are refused: {err})") from err
    fmt = _string(arrays["format"]) if "format" in arrays else ""
    if fmt and fmt != NPZ_FORMAT:
        raise ValueError(f"{path}: format {fmt!r} is not {NPZ_FORMAT!r}")
    meta: dict[str, Any] = {}
    if "meta_json" in arrays:
        try:
            meta = json.loads(_string(arrays["meta_json"]) or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: meta_json is not JSON ({err})") from err
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: meta_json must be a JSON object")
    logits = _logits(arrays["logits"], f"{path}[logits]") if "logits" in arrays else None
    key = next((k for k in _NPZ_KEYS if k in arrays), None)
    if as_logits and "occupancy" not in arrays and logits is None:
        key = key or next(
            (k for k, v in arrays.items() if v.ndim >= 3 and k not in ("K", "R", "t")), None
        )
        if key is not None:
            logits = _logits(arrays[key], f"{path}[{key}]")
            arrays = {k: v for k, v in arrays.items() if k != key}
            key = None
    if key is None:
        res = sorted(int(k[7:]) for k in arrays if k.startswith("voxels_") and k[7:].isdigit())
        key = f"voxels_{res[-1]}" if res else None
    if key is not None:
        occupancy = as_occupancy(arrays[key], f"{path}[{key}]")
    elif logits is not None:
        key, occupancy = "logits", _sigmoid(logits)
    else:
        volumes = [k for k, v in arrays.items() if v.ndim >= 3 and k not in ("K", "R", "t")]
        if len(volumes) != 1:
            raise ValueError(
                f"{path}: cannot tell which array is the volume (arrays {sorted(arrays)}); "
                "store it as 'occupancy'"
            )
        key = volumes[0]
        occupancy = as_occupancy(arrays[key], f"{path}[{key}]")
    if logits is not None and logits.shape != occupancy.shape:
        raise ValueError(f"{path}: logits {logits.shape} and {key} {occupancy.shape} differ")
    box = _box_of(arrays)
    if fmt:
        version = int(arrays["version"]) if "version" in arrays else 1
        layout = f"{NPZ_FORMAT}-{version}"
    elif "K" in arrays:
        layout = "fit-v0"
    else:
        layout = f"npz:{key}"
    meta.update({"format": layout, "box_from_file": box is not None})
    return VolumeFile(occupancy, box or VolumeBox(), logits, _cameras_of(arrays), meta)


def _load_npy(path: Path, as_logits: bool = False) -> VolumeFile:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a plain .npy array ({err})") from err
    occupancy, logits = _values(array, str(path), as_logits)
    meta = {"format": "npy", "box_from_file": False}
    return VolumeFile(occupancy, VolumeBox(), logits, meta=meta)


def _load_binvox(path: Path) -> VolumeFile:
    from persp3d.datasets.binvox import binvox_to_volume, read_binvox

    vox = read_binvox(path)  # ValueError naming the file
    if len(set(vox.data.shape)) != 1:
        raise ValueError(f"{path}: binvox dims must be equal (a cube); got {vox.data.shape}")
    if not np.isfinite(vox.scale) or vox.scale <= 0 or not np.isfinite(vox.translate).all():
        raise ValueError(
            f"{path}: binvox scale must be positive and translate finite; got scale "
            f"{vox.scale}, translate {vox.translate}"
        )
    grid = np.ascontiguousarray(binvox_to_volume(vox.data))  # (D, H, W) bool
    R, side = grid.shape[0], float(vox.scale)
    box_min = np.asarray(vox.translate, dtype=np.float64) - _model_offset(grid) * side / R
    box = VolumeBox((box_min + side / 2).tolist(), side)
    meta = {
        "format": "binvox",
        "box_from_file": True,
        "binvox_translate": list(vox.translate),
        "binvox_scale": side,
    }
    return VolumeFile(grid.astype(np.float32), box, meta=meta)


def _load_torch(path: Path, as_logits: bool = False) -> VolumeFile:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds on bad input
        raise ValueError(f"{path}: not a readable torch file ({err})") from err
    if isinstance(obj, dict) and isinstance(obj.get("volume"), torch.Tensor):
        obj = obj["volume"]
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a volume tensor")
    occupancy, logits = _values(obj.float(), str(path), as_logits)
    meta = {"format": "torch", "box_from_file": False}
    return VolumeFile(occupancy, VolumeBox(), logits, meta=meta)


def mesh_box(vertices: np.ndarray) -> VolumeBox:
    """The box a mesh is voxelised in: ``VolumeBox()`` when the mesh fits it, else the cube
    around its bounding box, 2% larger."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    box = VolumeBox()
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    if (lo < np.asarray(box.min)).any() or (hi > np.asarray(box.max)).any():
        box = VolumeBox(center=((lo + hi) / 2).tolist(), size=float((hi - lo).max()) * 1.02)
    return box


def _load_mesh(path: Path, resolution: int) -> VolumeFile:
    from persp3d.datasets.meshfolder import load_mesh
    from persp3d.datasets.voxelize import voxelize_mesh

    if int(resolution) < 1:
        raise ValueError(f"resolution must be positive; got {resolution}")
    vertices, faces, _colors = load_mesh(path)  # ValueError naming the file
    box = mesh_box(vertices)
    grid = voxelize_mesh(vertices, faces, int(resolution), box)[0]  # (R, R, R)
    occupancy = as_occupancy(np.asarray(grid, dtype=np.float32), str(path))
    meta = {"format": "mesh", "box_from_file": True, "resolution": int(resolution)}
    return VolumeFile(occupancy, box, meta=meta)
