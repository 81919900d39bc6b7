"""COLMAP sparse models (text or binary) -> :class:`CaptureScene`.

A reader of the capture path: ``cameras``, ``images`` and ``points3D`` of a sparse model +
the image folder -> :func:`read_colmap` -> :func:`persp3d.datasets.captures.import_capture`
-> persp3d dataset folder.

The format (COLMAP's documentation, ``doc/format.rst`` "Output Format" and
``doc/database.rst``, and its ``scripts/python/read_write_model.py``, read, not copied):

- A model folder holds ``cameras``, ``images`` and ``points3D`` as ``.bin`` (default,
  little-endian) or ``.txt``; COLMAP prefers the binary files when both exist, and so does
  this reader (file by file). Newer COLMAP also writes ``rigs`` and ``frames``; the
  ``cameras`` and ``images`` files stay compatible and are all that is read here.
- ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``; ``cameras.bin``: ``uint64``
  count, then per camera ``int32 id, int32 model_id, uint64 width, uint64 height,
  float64 params[n(model)]``.
- ``images.txt``: two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then
  ``POINTS2D[] as (X, Y, POINT3D_ID)`` (possibly empty); ``images.bin``: ``uint64`` count,
  then per image ``int32 id, float64 qw qx qy qz tx ty tz, int32 camera_id``, the name as a
  NUL-terminated string, ``uint64`` number of 2-D points and that many
  ``(float64 x, float64 y, int64 point3D_id)``.
- ``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)``;
  ``points3D.bin``: ``uint64`` count, then per point ``uint64 id, float64 x y z, uint8 r g
  b, float64 error, uint64 track length`` and that many ``(int32, int32)``. The points
  become :attr:`CaptureScene.points`; the file is optional.
- Pose: "the projection from world to the camera coordinate system" as a Hamilton
  quaternion ``(QW, QX, QY, QZ)`` and ``T``: ``X_cam = R(q) X_world + T``, camera centre
  ``-R^T T``; camera axes "X to the right, Y to the bottom, Z to the front": persp3d's
  (OpenCV) convention, so ``R``, ``t`` are taken as they are.
- Pixels: "the upper left image corner has coordinate (0, 0) and the center of the upper
  left most pixel has coordinate (0.5, 0.5)": persp3d's convention, so ``cx``, ``cy`` are
  taken as written (no half-pixel shift).
- Camera models: ``SIMPLE_PINHOLE (f cx cy)`` and ``PINHOLE (fx fy cx cy)`` are read
  directly; ``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV`` and ``FULL_OPENCV`` are read when all
  their distortion parameters are zero and refused otherwise, with an error naming the file,
  the camera and the model (undistort with ``colmap image_undistorter`` and read the model
  it writes, which is ``PINHOLE``); fisheye and other models are refused.
- Images: ``NAME`` is relative to the image folder. The size is read from each file; when it
  differs from the camera's ``WIDTH x HEIGHT`` (a downscaled copy) the intrinsics are scaled
  to it. Images that are missing are skipped with a
  :class:`~persp3d.datasets.multiview.DataWarning`. COLMAP's own mask convention (a mask
  folder with ``NAME.png`` for image ``NAME``) is followed when ``masks_dir`` is given.
- World: COLMAP's world has no fixed up axis; :attr:`CaptureScene.up` is estimated from the
  cameras (:func:`~persp3d.datasets.formats.scene.estimate_up`). Units are arbitrary.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from persp3d.datasets.formats.scene import CaptureScene, CaptureView, estimate_up, image_size_of

__all__ = ["COLMAP_CAMERA_MODELS", "colmap_pose_to_opencv", "read_colmap"]

COLMAP_CAMERA_MODELS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("SIMPLE_PINHOLE", ("f", "cx", "cy")),
    1: ("PINHOLE", ("fx", "fy", "cx", "cy")),
    2: ("SIMPLE_RADIAL", ("f", "cx", "cy", "k")),
    3: ("RADIAL", ("f", "cx", "cy", "k1", "k2")),
    4: ("OPENCV", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    5: ("OPENCV_FISHEYE", ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    6: ("FULL_OPENCV", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
    7: ("FOV", ("fx", "fy", "cx", "cy", "omega")),
    8: ("SIMPLE_RADIAL_FISHEYE", ("f", "cx", "cy", "k")),
    9: ("RADIAL_FISHEYE", ("f", "cx", "cy", "k1", "k2")),
    10: ("THIN_PRISM_FISHEYE", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "sx1", "sy1")),
}  # fmt: skip
"""COLMAP's camera model ids -> (name, parameter names), as its documentation orders them."""

_BY_NAME = {name: params for name, params in COLMAP_CAMERA_MODELS.values()}
_PERSPECTIVE = {"SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV"}


def colmap_pose_to_opencv(qvec: np.ndarray, tvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R, t`` (world->camera, OpenCV axes) of a COLMAP image pose.

    Args:
        qvec: ``(4,)`` Hamilton quaternion ``(qw, qx, qy, qz)`` of the world->camera
            rotation (normalised here).
        tvec: ``(3,)`` translation.

    Returns:
        ``R (3, 3)``, ``t (3,)`` float64, ``X_cam = R @ X_world + t``.

    Convention: COLMAP's camera axes are OpenCV's, so no axis changes; only the quaternion
    becomes a matrix.
    """
    q = np.asarray(qvec, dtype=np.float64).reshape(4)
    norm = float(np.linalg.norm(q))
    if not norm > 1e-12:
        raise ValueError(f"quaternion must be non-zero; got {q.tolist()}")
    w, x, y, z = q / norm
    R = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    return R, np.asarray(tvec, dtype=np.float64).reshape(3).copy()


# -- cameras ----------------------------------------------------------------------------------
def _camera_K(where: str, cam_id: int, model: str, params: list[float]) -> np.ndarray:
    """Pinhole ``K`` of a camera, or a ValueError naming it when it is not a pinhole one."""
    names = _BY_NAME[model]
    values = dict(zip(names, params))
    if model not in _PERSPECTIVE:
        raise ValueError(
            f"{where}: camera {cam_id} uses model {model}, which is not a pinhole camera; "
            "undistort the images with 'colmap image_undistorter' and read the model it writes"
        )
    distortion = {k: v for k, v in values.items() if k not in ("f", "fx", "fy", "cx", "cy")}
    nonzero = {k: v for k, v in distortion.items() if v != 0.0}
    if nonzero:
        listed = ", ".join(f"{k}={v:g}" for k, v in nonzero.items())
        raise ValueError(
            f"{where}: camera {cam_id} ({model}) has lens distortion ({listed}); persp3d reads "
            "pinhole cameras only: undistort the images with 'colmap image_undistorter' and "
            "read the PINHOLE model it writes"
        )
    fx = values.get("fx", values.get("f"))
    fy = values.get("fy", values.get("f"))
    if not (fx > 0 and fy > 0):
        raise ValueError(f"{where}: camera {cam_id}: focal length must be positive; got {fx}, {fy}")
    return np.array([[fx, 0.0, values["cx"]], [0.0, fy, values["cy"]], [0.0, 0.0, 1.0]])


def _read_cameras_text(path: Path) -> dict[int, dict[str, Any]]:
    cameras = {}
    for lineno, parts in _text_lines(path):
        where = f"{path}:{lineno}"
        if len(parts) < 4:
            raise ValueError(
                f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]'; got {' '.join(parts)!r}"
            )
        cam_id = _int(where, "CAMERA_ID", parts[0])
        model = parts[1]
        if model not in _BY_NAME:
            raise ValueError(
                f"{where}: field 'MODEL' {model!r} is not a COLMAP camera model ({', '.join(_BY_NAME)})"
            )
        width, height = _int(where, "WIDTH", parts[2]), _int(where, "HEIGHT", parts[3])
        names = _BY_NAME[model]
        if len(parts) - 4 != len(names):
            raise ValueError(
                f"{where}: camera {cam_id} ({model}) needs {len(names)} PARAMS "
                f"({' '.join(names)}); got {len(parts) - 4}"
            )
        params = [_float(where, f"PARAMS[{n}]", p) for n, p in zip(names, parts[4:])]
        cameras[cam_id] = {
            "model": model,
            "size": (height, width),
            "params": params,
            "where": where,
        }
    return cameras


def _read_cameras_binary(path: Path) -> dict[int, dict[str, Any]]:
    buf = _Binary(path)
    cameras = {}
    for k in range(buf.count("cameras")):
        cam_id, model_id, width, height = buf.unpack("<iiQQ", f"camera record {k}")
        if model_id not in COLMAP_CAMERA_MODELS:
            raise ValueError(
                f"{path}: camera {cam_id}: unknown model_id {model_id} (byte {buf.pos - 24})"
            )
        model, names = COLMAP_CAMERA_MODELS[model_id]
        params = list(buf.unpack("<" + "d" * len(names), f"PARAMS of camera {cam_id}"))
        cameras[cam_id] = {
            "model": model,
            "size": (height, width),
            "params": params,
            "where": str(path),
        }
    buf.end()
    return cameras


# -- images -----------------------------------------------------------------------------------
def _read_images_text(path: Path) -> list[dict[str, Any]]:
    images = []
    lines = _raw_lines(path)
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        where = f"{path}:{lineno}"
        if len(parts) < 10:
            raise ValueError(
                f"{where}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'; got "
                f"{len(parts)} fields"
            )
        fields = ("QW", "QX", "QY", "QZ", "TX", "TY", "TZ")
        values = [_float(where, f, p) for f, p in zip(fields, parts[1:8])]
        images.append(
            {
                "id": _int(where, "IMAGE_ID", parts[0]),
                "q": values[:4],
                "t": values[4:],
                "camera": _int(where, "CAMERA_ID", parts[8]),
                "name": " ".join(parts[9:]),
                "where": where,
            }
        )
        if i < len(lines):  # the POINTS2D line (may be empty)
            points_no, points_line = lines[i]
            tokens = points_line.split()
            if _is_points_line(tokens):
                i += 1
            elif len(tokens) < 10:  # not the next image's line either
                raise ValueError(
                    f"{path}:{points_no}: expected the POINTS2D line of image {images[-1]['id']} "
                    f"(X Y POINT3D_ID triples); got {points_line.strip()[:60]!r}"
                )
            # else: a file without POINTS2D lines; this line is the next image's
    return images


def _is_points_line(tokens: list[str]) -> bool:
    if len(tokens) % 3:
        return False
    try:
        [float(x) for x in tokens]
    except ValueError:
        return False
    return True


def _read_images_binary(path: Path) -> list[dict[str, Any]]:
    buf = _Binary(path)
    images = []
    for k in range(buf.count("images")):
        image_id, *pose, cam_id = buf.unpack("<idddddddi", f"image record {k}")
        name = buf.cstring(f"NAME of image {image_id}")
        n_points = buf.unpack("<Q", f"number of POINTS2D of image {image_id}")[0]
        buf.skip(24 * n_points, f"POINTS2D of image {image_id}")
        images.append(
            {"id": image_id, "q": pose[:4], "t": pose[4:], "camera": cam_id, "name": name,
             "where": f"{path} (image {image_id})"}
        )  # fmt: skip
    buf.end()
    return images


# -- points -----------------------------------------------------------------------------------
def _read_points_text(path: Path) -> np.ndarray:
    points = []
    for lineno, parts in _text_lines(path):
        where = f"{path}:{lineno}"
        if len(parts) < 8 or (len(parts) - 8) % 2:
            raise ValueError(
                f"{where}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]' with pairs in the "
                f"track; got {len(parts)} fields"
            )
        points.append([_float(where, f, p) for f, p in zip("XYZ", parts[1:4])])
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def _read_points_binary(path: Path) -> np.ndarray:
    buf = _Binary(path)
    n = buf.count("points")
    points = np.zeros((n, 3))
    for k in range(n):
        point_id, x, y, z, _r, _g, _b, _err = buf.unpack("<QdddBBBd", f"point record {k}")
        track = buf.unpack("<Q", f"TRACK length of point {point_id}")[0]
        buf.skip(8 * track, f"TRACK of point {point_id}")
        points[k] = (x, y, z)
    buf.end()
    return points


# -- the reader -------------------------------------------------------------------------------
def _model_file(model_dir: Path, stem: str, required: bool) -> Path | None:
    for suffix in (".bin", ".txt"):
        path = model_dir / f"{stem}{suffix}"
        if path.is_file():
            return path
    if required:
        raise FileNotFoundError(
            f"{model_dir}: no {stem}.bin or {stem}.txt (not a COLMAP sparse model)"
        )
    return None


def _find_model_dir(model_dir: Path) -> Path:
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such folder")
    for candidate in (model_dir, model_dir / "sparse" / "0", model_dir / "0", model_dir / "sparse"):
        if _model_file(candidate, "cameras", False) and _model_file(candidate, "images", False):
            return candidate
    raise FileNotFoundError(
        f"{model_dir}: no cameras.bin/.txt and images.bin/.txt here (nor in sparse/0, 0 or sparse)"
    )


def read_colmap(
    model_dir: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    *,
    masks_dir: str | os.PathLike | None = None,
) -> CaptureScene:
    """Read a COLMAP sparse model (text or binary) and its images.

    Args:
        model_dir: the model folder (``cameras``, ``images``, ``points3D``), or a COLMAP
            workspace holding it in ``sparse/0``, ``0`` or ``sparse``.
        images_dir: the folder the image names are relative to (default: ``images`` beside
            the model folder or beside its parent, as in a COLMAP workspace).
        masks_dir: optional masks, COLMAP's convention: ``masks_dir / (NAME + ".png")``
            (``masks_dir / NAME`` with a ``.png`` suffix is also tried).

    Returns:
        A :class:`CaptureScene` named after the workspace folder, source ``"colmap"``, views
        in the order of the images file, ``points`` from ``points3D`` (None without it) and
        ``up`` estimated from the cameras.

    Convention: see the module docstring; ``K``, ``R``, ``t`` are persp3d's.

    Raises:
        FileNotFoundError: no model files, no image folder, or no image of the model found.
        ValueError: a malformed or truncated file, an unknown camera, or a camera with lens
            distortion (the message names the file, the record and the field).
    """
    model = _find_model_dir(Path(model_dir))
    cameras_path = _model_file(model, "cameras", True)
    images_path = _model_file(model, "images", True)
    points_path = _model_file(model, "points3D", False)
    cameras = (_read_cameras_binary if cameras_path.suffix == ".bin" else _read_cameras_text)(
        cameras_path
    )
    images = (_read_images_binary if images_path.suffix == ".bin" else _read_images_text)(
        images_path
    )
    points = None
    if points_path is not None:
        points = (_read_points_binary if points_path.suffix == ".bin" else _read_points_text)(
            points_path
        )
    image_root = _images_root(model, images_dir)
    mask_root = Path(masks_dir) if masks_dir is not None else None

    records = []
    Ks: dict[int, np.ndarray] = {}
    for image in images:
        cam = cameras.get(image["camera"])
        if cam is None:
            raise ValueError(
                f"{image['where']}: image {image['id']} ({image['name']!r}) refers to camera "
                f"{image['camera']}, which {cameras_path} does not define"
            )
        if image["camera"] not in Ks:
            Ks[image["camera"]] = _camera_K(
                cam["where"], image["camera"], cam["model"], cam["params"]
            )
        path = image_root / image["name"]
        if not path.is_file():
            warnings.warn(
                f"{path}: image {image['id']} of {images_path} not found; skipped",
                _data_warning(),
                stacklevel=2,
            )
            continue
        H, W = image_size_of(path)
        Hc, Wc = cam["size"]
        if Hc <= 0 or Wc <= 0:
            raise ValueError(
                f"{cam['where']}: camera {image['camera']}: WIDTH and HEIGHT must be positive"
            )
        K = np.diag([W / Wc, H / Hc, 1.0]) @ Ks[image["camera"]]  # to the file's size
        try:
            R, t = colmap_pose_to_opencv(np.array(image["q"]), np.array(image["t"]))
        except ValueError as err:
            raise ValueError(f"{image['where']}: fields QW QX QY QZ: {err}") from err
        records.append({"name": image["name"], "path": path, "K": K, "R": R, "t": t, "size": (H, W),
                        "mask": _mask(mask_root, image["name"])})  # fmt: skip
    if not records:
        raise FileNotFoundError(
            f"{image_root}: none of the {len(images)} images of {images_path} found"
        )
    names = _view_names([r["name"] for r in records])
    views = [
        CaptureView(
            name=n,
            image_path=r["path"],
            K=r["K"],
            R=r["R"],
            t=r["t"],
            image_size=r["size"],
            mask_path=r["mask"],
        )
        for n, r in zip(names, records)
    ]
    resolved = model.resolve()
    if resolved.parent.name == "sparse":  # WORKSPACE/sparse/0
        scene_name = resolved.parent.parent.name
    elif resolved.name == "sparse":  # WORKSPACE/sparse
        scene_name = resolved.parent.name
    else:
        scene_name = resolved.name
    return CaptureScene(
        name=scene_name,
        source="colmap",
        views=views,
        up=estimate_up([v.R for v in views]),
        points=points,
    )


def _images_root(model: Path, images_dir: str | os.PathLike | None) -> Path:
    if images_dir is not None:
        root = Path(images_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: image folder not found")
        return root
    for candidate in (model.parent / "images", model.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{model}: no images folder beside the model; pass images_dir")


def _mask(mask_root: Path | None, name: str) -> Path | None:
    if mask_root is None:
        return None
    for candidate in (mask_root / f"{name}.png", (mask_root / name).with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


def _view_names(names: list[str]) -> list[str]:
    stems = [Path(n).stem for n in names]
    if len(set(stems)) == len(stems):
        return stems
    return [str(Path(n).with_suffix("")).replace("/", "_").replace("\\", "_") for n in names]


def _data_warning() -> type[Warning]:
    from persp3d.datasets.multiview import DataWarning

    return DataWarning


# -- parsing helpers --------------------------------------------------------------------------
def _raw_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from err
    return list(enumerate(text.splitlines(), start=1))


def _text_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty, non-comment lines as ``(line number, fields)``."""
    return [
        (n, ln.split())
        for n, ln in _raw_lines(path)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]


def _int(where: str, field: str, token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{where}: field '{field}' must be an integer; got {token!r}") from None


def _float(where: str, field: str, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"{where}: field '{field}' must be a finite number; got {token!r}")
    return value


class _Binary:
    """A little-endian reader over a file's bytes that names what it was reading when the
    file ends early."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as err:
            raise ValueError(f"{path}: cannot read ({err})") from err
        self.pos = 0

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated: file ends at byte {len(self.data)} while reading {what} "
                f"(byte {self.pos})"
            )
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def count(self, what: str) -> int:
        n = self.unpack("<Q", f"the number of {what}")[0]
        if n > len(self.data):  # each record takes at least one byte
            raise ValueError(f"{self.path}: the number of {what} ({n}) exceeds the file size")
        return int(n)

    def skip(self, size: int, what: str) -> None:
        if self.pos + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated: file ends at byte {len(self.data)} while reading {what} "
                f"(byte {self.pos})"
            )
        self.pos += size

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: truncated: no NUL ending {what} (byte {self.pos})")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{self.path}: {what} is not UTF-8 ({err})") from err

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(
                f"{self.path}: {len(self.data) - self.pos} bytes after the last record (the "
                "record count does not match the file)"
            )
