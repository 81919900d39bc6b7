"""The on-disk format of multi-view datasets (format ``persp3d-multiview``, version 1).

Where generated and imported data rests between :mod:`~persp3d.datasets.procedural` /
:mod:`~persp3d.datasets.meshfolder` (writers) and the ``Dataset`` classes (readers).

Layout of a dataset folder ``DIR``::

    DIR/manifest.json                  what is there (written atomically, see below)
    DIR/items/<category>/<id>.npz      one object: arrays only, no pickles

``manifest.json`` holds ``format`` (``"persp3d-multiview"``), ``version`` (1),
``created_with`` (the persp3d version), ``kind``
(``"procedural"`` or ``"meshes"``), ``config`` (every parameter of the generator, so the same
call regenerates the same bytes), ``complete`` (false while being written), ``items`` (one
entry per object: ``id``, ``category``, ``split``, ``file`` relative to ``DIR``, ``sha256``
and ``bytes`` of the file, ``null`` until it is written), ``skipped`` (inputs left out, with
the reason) and ``summary`` (counts).

Each ``.npz`` is a zip of ``.npy`` arrays written with fixed timestamps, so the same content
gives the same bytes:

    ``images``       uint8 ``(V, 3, H, W)``, RGB in [0, 255]
    ``silhouettes``  uint8 ``(V, 1, H, W)``, in [0, 255] (255 = covered)
    ``depth``        float16 ``(V, 1, H, W)``, camera-space z, 0 where empty (optional)
    ``K``, ``R``     float32 ``(V, 3, 3)``; ``t`` float32 ``(V, 3)``: persp3d cameras
    ``voxels_<R>``   uint8 ``(1, R, R, R)`` in [0, 255] (255 = occupied), one per resolution
    ``category``, ``id``  0-d unicode arrays

Convention: cameras as in :mod:`persp3d.cameras` (``X_cam = R X + t``, OpenCV axes, pixel
centres at +0.5); voxels ``(1, D, H, W)`` with D <-> z, H <-> y, W <-> x in ``VolumeBox()``.

Writing is atomic item by item: each file goes to a temporary name in the same folder and is
``os.replace``-d into place, so a file under its final name is always whole; the manifest
is rewritten the same way at most once a second and at the end. An interrupted run resumes:
items whose file exists with the manifest's checksum are kept, the rest are written again.
Reading checks every file's SHA-256 against the manifest: a corrupt item raises
:class:`CorruptCacheError` naming the file (procedural data rebuilds it instead). An item
whose arrays disagree (fewer silhouettes or cameras than images, NaN or infinite cameras)
is refused the same way, even when its checksum matches.

Safety: an item's ``file`` must be a relative path below ``DIR`` (no absolute path, no
``..``, no symbolic link leading out of ``DIR``); :func:`read_manifest`,
:func:`write_manifest` and :func:`item_path` refuse anything else, so a hostile manifest can
neither read nor overwrite files outside its folder. Files are created with the permissions
the umask gives (typically 0644), so a shared dataset is readable by others.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CorruptCacheError",
    "Manifest",
    "atomic_write_bytes",
    "check_item_arrays",
    "check_item_file",
    "file_sha256",
    "item_path",
    "npz_bytes",
    "read_item",
    "read_manifest",
    "write_item",
    "write_manifest",
]

FORMAT_NAME = "persp3d-multiview"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class CorruptCacheError(ValueError):
    """A dataset folder's manifest or item is missing, unreadable or fails its checksum."""


# -- bytes -----------------------------------------------------------------------------------
def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of an ``.npz`` of ``arrays``, identical for identical content.

    ``np.savez_compressed`` stamps each member with the current time; this writes the same
    zip structure with a fixed date, sorted names and deflate level 6. ``np.load`` reads it.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in sorted(arrays):
            arr = np.asarray(arrays[name])
            if arr.dtype == object:
                raise TypeError(f"array {name!r} has dtype object; only plain arrays are stored")
            member = io.BytesIO()
            arr = arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=6)
    return buf.getvalue()


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: a reader sees
    the old file or the whole new one, never a part. The file gets the permissions an
    ordinary ``open`` would (``0o666`` less the umask), not ``mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_item(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> tuple[str, int]:
    """Write one item atomically; returns ``(sha256, bytes)`` of the file."""
    data = npz_bytes(arrays)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)


def read_item(path: str | os.PathLike, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read an item's arrays, checking its SHA-256 first when given.

    Raises:
        CorruptCacheError: the file is missing, fails the checksum or is not a valid npz.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorruptCacheError(f"{path}: cannot read item ({err.strerror or err})") from err
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CorruptCacheError(f"{path}: checksum mismatch (the file is corrupt or was changed)")
    _check_npz_sizes(path, data)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, EOFError, zlib.error ...
        raise CorruptCacheError(f"{path}: not a readable npz ({err})") from err
    check_item_arrays(arrays, path)
    return arrays


# Largest item read (uncompressed): a zip bomb or a lying .npy header is refused before
# anything is allocated. Real items are a few MiB (a 49-view 1600 x 1200 capture ~300 MiB).
MAX_ITEM_BYTES = 4 << 30


def _check_npz_sizes(path: Path, data: bytes) -> None:
    """Refuse an ``.npz`` whose members would decompress to more than :data:`MAX_ITEM_BYTES`,
    whose ``.npy`` headers promise more bytes than the member holds, or hold objects."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            total = sum(info.file_size for info in infos)
            if total > MAX_ITEM_BYTES:
                raise CorruptCacheError(
                    f"{path}: would decompress to {total / 2**20:.0f} MiB, more than the "
                    f"{MAX_ITEM_BYTES / 2**20:.0f} MiB an item may hold (a zip bomb?)"
                )
            for info in infos:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    raise CorruptCacheError(
                        f"{path}: {info.filename} holds Python objects (a pickle); refused"
                    )
                need = math.prod(shape) * dtype.itemsize
                if need > info.file_size:
                    raise CorruptCacheError(
                        f"{path}: {info.filename} claims shape {shape} ({need} bytes) but "
                        f"stores {info.file_size} bytes"
                    )
    except CorruptCacheError:
        raise
    except Exception as err:  # BadZipFile, a bad .npy header, ...
        raise CorruptCacheError(f"{path}: not a readable npz ({err})") from err


def check_item_arrays(arrays: dict[str, np.ndarray], path: str | os.PathLike = "item") -> None:
    """Check that a stored item's arrays agree with each other (format in the module docstring).

    Only the arrays present are checked: ``images (V, 3, H, W)``, ``silhouettes
    (V, 1, H, W)``, ``K``/``R`` ``(V, 3, 3)`` and ``t (V, 3)`` with one ``V``, finite
    cameras, and ``voxels_<R>`` of shape ``(1, R, R, R)``.

    Raises:
        CorruptCacheError: naming ``path`` and the array at fault.
    """
    views: dict[str, int] = {}
    expected = {
        "images": (None, 3, None, None),
        "silhouettes": (None, 1, None, None),
        "depth": (None, 1, None, None),
        "K": (None, 3, 3),
        "R": (None, 3, 3),
        "t": (None, 3),
    }
    for name, shape in expected.items():
        if name not in arrays:
            continue
        a = arrays[name]
        if a.ndim != len(shape) or any(e is not None and e != n for e, n in zip(shape, a.shape)):
            pretty = "(" + ", ".join("V" if e is None and i == 0 else "?" if e is None else str(e)
                                     for i, e in enumerate(shape)) + ")"  # fmt: skip
            raise CorruptCacheError(f"{path}: {name} must be {pretty}; got shape {a.shape}")
        views[name] = a.shape[0]
    if len(set(views.values())) > 1:
        counts = ", ".join(f"{n} {name}" for name, n in views.items())
        raise CorruptCacheError(f"{path}: the arrays disagree on the number of views ({counts})")
    if "images" in arrays and "silhouettes" in arrays:
        if arrays["images"].shape[-2:] != arrays["silhouettes"].shape[-2:]:
            raise CorruptCacheError(
                f"{path}: images are {arrays['images'].shape[-2:]} pixels but silhouettes "
                f"{arrays['silhouettes'].shape[-2:]}"
            )
    for name in ("K", "R", "t"):
        if name in arrays:
            a = arrays[name]
            if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
                raise CorruptCacheError(f"{path}: camera {name} holds NaN or infinite values")
    for name, a in arrays.items():
        if name.startswith("voxels_"):
            try:
                res = int(name.split("_", 1)[1])
            except ValueError:
                raise CorruptCacheError(f"{path}: bad voxel array name {name!r}") from None
            if a.shape != (1, res, res, res):
                raise CorruptCacheError(
                    f"{path}: {name} must be (1, {res}, {res}, {res}); got shape {a.shape}"
                )


def check_item_file(file: object, where: str = "manifest") -> str:
    """Check a manifest item's ``file``: a relative POSIX path below the dataset folder.

    Raises:
        CorruptCacheError: ``file`` is not a string, is empty, absolute, holds ``..``, a
            backslash or a NUL byte.
    """
    if not isinstance(file, str) or not file:
        raise CorruptCacheError(f"{where}: item file must be a relative path; got {file!r}")
    if "\\" in file or "\x00" in file:
        raise CorruptCacheError(f"{where}: item file {file!r} holds a backslash or NUL byte")
    if file.startswith("/") or Path(file).is_absolute() or (len(file) > 1 and file[1] == ":"):
        raise CorruptCacheError(
            f"{where}: item file {file!r} is an absolute path; it must lie inside the folder"
        )
    if ".." in file.split("/"):
        raise CorruptCacheError(
            f"{where}: item file {file!r} climbs out of the dataset folder ('..')"
        )
    return file


def item_path(root: str | os.PathLike, file: object) -> Path:
    """``root / file`` for a manifest item's ``file``, refusing anything outside ``root``
    (absolute paths, ``..``, symbolic links that lead out of it).

    Raises:
        CorruptCacheError: naming the file and why.
    """
    root = Path(root)
    check_item_file(file, str(root / MANIFEST))
    path = root / str(file)
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise CorruptCacheError(
            f"{root / MANIFEST}: item file {file!r} resolves to {resolved}, outside the "
            "dataset folder (a symbolic link?)"
        )
    return path


# -- manifest --------------------------------------------------------------------------------
Manifest = dict
"""The parsed ``manifest.json``: a plain ``dict`` with the keys listed in the module docstring."""


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``root/manifest.json`` atomically (sorted keys, 1-space indent)."""
    for item in manifest.get("items", []):
        item_path(root, item.get("file") if isinstance(item, dict) else None)
    data = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    atomic_write_bytes(Path(root) / MANIFEST, data)


def read_manifest(root: str | os.PathLike, kind: str | None = None) -> Manifest:
    """Parse and check ``root/manifest.json``.

    Raises:
        FileNotFoundError: there is no manifest.
        CorruptCacheError: it is not valid JSON, not this format, another version, or lacks
            fields (the message names the file and the problem).
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; not a persp3d dataset folder")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCacheError(f"{path}: unreadable manifest ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise CorruptCacheError(f"{path}: not a {FORMAT_NAME} manifest")
    if data.get("version") != FORMAT_VERSION:
        raise CorruptCacheError(
            f"{path}: format version {data.get('version')!r}; this persp3d reads version "
            f"{FORMAT_VERSION}"
        )
    missing = {"kind", "config", "items", "complete"} - set(data)
    if missing:
        raise CorruptCacheError(f"{path}: manifest misses {sorted(missing)}")
    if kind is not None and data["kind"] != kind:
        raise CorruptCacheError(f"{path}: holds {data['kind']!r} data, expected {kind!r}")
    if not isinstance(data["items"], list) or not isinstance(data["config"], dict):
        raise CorruptCacheError(f"{path}: items must be a list and config a mapping")
    for i, item in enumerate(data["items"]):
        if not isinstance(item, dict) or not {"id", "category", "split", "file"} <= set(item):
            raise CorruptCacheError(f"{path}: item {i} lacks id/category/split/file")
        item_path(root, item["file"])
    return Manifest(data)


def new_manifest(kind: str, config: dict[str, Any], items: Iterable[dict[str, Any]]) -> Manifest:
    """A manifest planning ``items`` (none written yet)."""
    from persp3d import __version__

    return Manifest(
        format=FORMAT_NAME,
        version=FORMAT_VERSION,
        created_with=f"persp3d {__version__}",
        kind=kind,
        config=config,
        complete=False,
        items=[dict(it, sha256=None, bytes=None) for it in items],
        skipped=[],
    )


class ManifestWriter:
    """Keeps a manifest on disk up to date while items are written (at most once a second)."""

    def __init__(self, root: str | os.PathLike, manifest: Manifest, interval: float = 1.0) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.interval = interval
        self._index = {(it["category"], it["id"]): it for it in manifest["items"]}
        self._last = 0.0

    def record(self, category: str, item_id: str, sha256: str, n_bytes: int) -> None:
        item = self._index[(category, item_id)]
        item["sha256"], item["bytes"] = sha256, n_bytes
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        write_manifest(self.root, self.manifest)
        self._last = time.monotonic()

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        self.manifest["complete"] = all(it.get("sha256") for it in self.manifest["items"])
        if summary is not None:
            self.manifest["summary"] = summary
        self.flush()


def verify_items(root: str | os.PathLike, manifest: Manifest) -> list[dict[str, Any]]:
    """Items of ``manifest`` whose file is missing or fails its checksum."""
    bad = []
    for item in manifest["items"]:
        path = item_path(root, item["file"])
        if not item.get("sha256") or not path.is_file():
            bad.append(item)
        elif path.stat().st_size != item.get("bytes") or file_sha256(path) != item["sha256"]:
            bad.append(item)
    return bad
