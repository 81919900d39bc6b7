"""Reading and writing ``.binvox`` voxel files (ShapeNetVox32 of 3D-R2N2), and their axes.

Ground truth of the R2N2 data path: ``model.binvox`` -> dense grid in binvox order ->
:func:`binvox_to_volume` -> ``(1, D, H, W)`` voxels in persp3d's axes.

Format (Patrick Min's binvox): an ASCII header ``#binvox 1``, ``dim d d d``,
``translate tx ty tz``, ``scale s``, ``data``, then run-length encoded bytes: pairs
``(value, count)`` with ``count`` in 1..255. Voxels are stored with y running fastest, then
z, then x: the flat index of voxel ``(x, y, z)`` is ``(x * d + z) * d + y``. In ShapeNetVox32
``translate`` is the model's bounding-box minimum and ``scale`` its longest side, and the
voxels fill a cube of side ``scale`` centred on the model (ShapeNet v1 models are centred at
the origin), in ShapeNet's y-up frame.

Convention: binvox arrays here are ``(x, z, y)``-indexed as stored (``data[x, z, y]``);
persp3d volumes are ``(z, y, x)`` = ``(D, H, W)``. :func:`binvox_to_volume` and
:func:`volume_to_binvox` are the only places where one becomes the other.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_BINVOX_DIM",
    "Binvox",
    "binvox_to_volume",
    "read_binvox",
    "volume_to_binvox",
    "write_binvox",
]


# Largest side read or written: 1024^3 voxels is 1 GiB of bools; real files are 32-256.
MAX_BINVOX_DIM = 1024


@dataclass
class Binvox:
    """A dense binvox grid.

    Attributes:
        data: ``(d, d, d)`` bool indexed ``[x, z, y]`` as stored in the file.
        translate: ``(3,)`` header translation (ShapeNetVox32: bounding-box minimum).
        scale: header scale (ShapeNetVox32: the cube's side).
    """

    data: np.ndarray
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0


def binvox_to_volume(data: np.ndarray) -> np.ndarray:
    """Binvox order ``[x, z, y]`` -> persp3d order ``[z, y, x]`` (= ``(D, H, W)``).

    Args:
        data: ``(X, Z, Y)`` array as stored in a ``.binvox`` file.

    Returns:
        ``(Z, Y, X)`` array (a view).

    Convention: no axis is flipped; binvox's x, y, z are ShapeNet's, which share persp3d's
    y-up right-handed frame, so only the storage order changes.
    """
    return np.transpose(data, (1, 2, 0))  # [x, z, y] -> [z, y, x]


def volume_to_binvox(volume: np.ndarray) -> np.ndarray:
    """Inverse of :func:`binvox_to_volume`: ``[z, y, x]`` -> ``[x, z, y]``."""
    return np.transpose(volume, (2, 0, 1))  # [z, y, x] -> [x, z, y]


def read_binvox(path: str | os.PathLike) -> Binvox:
    """Read a ``.binvox`` file.

    Raises:
        ValueError: the file is not a valid binvox (the message names the file and why).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from err
    if not raw:
        raise ValueError(f"{path}: empty file, not a binvox")
    pos = 0
    header: dict[str, list[str]] = {}

    def line() -> str:
        nonlocal pos
        end = raw.find(b"\n", pos)
        if end < 0:
            raise ValueError(f"{path}: truncated binvox header")
        text = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        return text

    first = line()
    if not first.startswith("#binvox"):
        raise ValueError(f"{path}: not a binvox file (first line {first[:40]!r})")
    while True:
        text = line()
        if text == "data":
            break
        if text:
            key, *values = text.split()
            header[key] = values
        if len(header) > 16:
            raise ValueError(f"{path}: binvox header has no 'data' line")
    if "dim" not in header:
        raise ValueError(f"{path}: binvox header has no 'dim' line")
    try:
        dims = [int(v) for v in header["dim"]]
        translate = tuple(float(v) for v in header.get("translate", ["0", "0", "0"]))
        scale = float((header.get("scale") or ["1"])[0])
    except (KeyError, ValueError, IndexError) as err:
        raise ValueError(f"{path}: bad binvox header {header}") from err
    if len(dims) != 3 or min(dims) < 1 or len(translate) != 3:
        raise ValueError(f"{path}: bad binvox dims {dims} or translate {translate}")
    if max(dims) > MAX_BINVOX_DIM:
        raise ValueError(
            f"{path}: binvox dims {dims} exceed the largest supported side {MAX_BINVOX_DIM} "
            "(a corrupt header?)"
        )
    if not all(math.isfinite(v) for v in translate) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"{path}: binvox translate {translate} must be finite and scale {scale} positive"
        )
    body = np.frombuffer(raw, dtype=np.uint8, offset=pos)
    if len(body) % 2:
        raise ValueError(f"{path}: run-length data has an odd number of bytes")
    values, counts = body[0::2], body[1::2].astype(np.int64)
    n = math.prod(dims)  # Python ints: no overflow
    if int(counts.sum()) != n:
        raise ValueError(f"{path}: run lengths cover {int(counts.sum())} voxels, expected {n}")
    flat = np.repeat(values > 0, counts)
    return Binvox(flat.reshape(dims), translate, scale)  # type: ignore[arg-type]


def write_binvox(
    path: str | os.PathLike,
    data: np.ndarray,
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0),
    scale: float = 1.0,
) -> None:
    """Write a ``(d, d, d)`` grid indexed ``[x, z, y]`` (binvox order) as ``.binvox``."""
    grid = np.asarray(data)
    if grid.ndim != 3 or min(grid.shape) < 1:
        raise ValueError(f"data must be a non-empty (d, d, d) grid; got shape {grid.shape}")
    if max(grid.shape) > MAX_BINVOX_DIM:
        raise ValueError(f"data sides must be at most {MAX_BINVOX_DIM}; got shape {grid.shape}")
    if grid.dtype.kind == "f" and not np.isfinite(grid).all():
        raise ValueError("data holds NaN or infinite values")
    grid = grid.astype(bool)
    translate = tuple(float(v) for v in translate)
    if len(translate) != 3 or not all(math.isfinite(v) for v in translate):
        raise ValueError(f"translate must be 3 finite numbers; got {translate}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0; got {scale!r}")
    flat = grid.reshape(-1).astype(np.uint8)
    # Run-length encode: runs of equal values, split into chunks of at most 255.
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(flat)]]))
    pairs = []
    for start, length in zip(starts, lengths):
        value = flat[start]
        while length > 0:
            step = min(int(length), 255)
            pairs += [value, step]
            length -= step
    dims = " ".join(str(s) for s in grid.shape)
    header = (
        f"#binvox 1\ndim {dims}\ntranslate {translate[0]:.6g} {translate[1]:.6g} "
        f"{translate[2]:.6g}\nscale {scale:.6g}\ndata\n"
    ).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(header + np.asarray(pairs, dtype=np.uint8).tobytes())
