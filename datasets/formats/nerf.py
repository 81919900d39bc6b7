"""NeRF-synthetic / Blender and nerfstudio / instant-ngp ``transforms*.json`` -> :class:`CaptureScene`.

A reader of the capture path: ``transforms_{train,val,test}.json`` (or one
``transforms.json``) + images -> :func:`read_nerf` ->
:func:`persp3d.datasets.captures.import_capture` -> persp3d dataset folder.

The format (read from the NeRF-synthetic files, nerfstudio's "Data conventions" page and its
``blender_dataparser.py`` / ``nerfstudio_dataparser.py``):

- ``frames``: a list; each frame has ``file_path`` (relative to the folder of the json file;
  NeRF-synthetic writes it without extension, ``"./train/r_0"`` for ``train/r_0.png``) and
  ``transform_matrix``, the 4 x 4 **camera-to-world** matrix with **OpenGL camera axes** (+x
  right, +y up, looking down -z), as Blender writes it. nerfstudio frames may also hold
  ``mask_path`` (nerfstudio: white = pixels to use, black = pixels to ignore; for an
  object capture, the object's mask), which becomes :attr:`CaptureView.mask_path`.
- Intrinsics, at the top level or per frame (a frame's value wins), either
  ``camera_angle_x`` (NeRF-synthetic: the horizontal field of view in radians;
  ``fx = fy = W / (2 tan(camera_angle_x / 2))``, principal point at the image centre;
  ``camera_angle_y`` gives ``fy`` from ``H`` when present), or nerfstudio / instant-ngp's
  ``fl_x``, ``fl_y``, ``cx``, ``cy`` in pixels, with ``w``, ``h`` the image size they refer
  to (``fl_y`` defaults to ``fl_x``; ``cx``, ``cy`` to the centre).
- Pixel centres: nerfstudio states that "coordinates correspond to the centers of pixels"
  and casts the ray of pixel ``(i, j)`` through ``(i + 0.5, j + 0.5)`` (its
  ``get_image_coords(pixel_offset=0.5)``), and its Blender parser puts a centred principal
  point at ``(W / 2, H / 2)``: the same convention as persp3d, so ``cx``, ``cy`` are taken
  as written.
- Distortion (``k1 k2 k3 k4 p1 p2``) must be zero, and ``camera_model`` a pinhole one
  (absent, ``PINHOLE``, ``SIMPLE_PINHOLE``, ``OPENCV``, ``PERSPECTIVE``): fisheye or
  equirectangular captures, or nonzero distortion, are refused with an error naming the
  file, the frame and the field (undistort the images first, e.g. with COLMAP's
  ``image_undistorter``).
- World: NeRF-synthetic scenes are z-up, so with split files :attr:`CaptureScene.up` is
  ``(0, 0, 1)``. A single ``transforms.json`` (nerfstudio, instant-ngp) is meant z-up too,
  but nerfstudio orients its worlds only when it loads them (``ns-process-data`` keeps
  COLMAP's arbitrary world): there the up axis is estimated from the cameras
  (:func:`~persp3d.datasets.formats.scene.estimate_up`) and snapped to ``(0, 0, 1)`` when
  within 30 degrees of it. Units are the scene's own.
- Images: the size is read from each image file. When ``w``, ``h`` are given and the file
  has another size (a downscaled copy), the intrinsics are scaled to the file (rows of ``K``
  by ``W / w`` and ``H / h``, exact in the pixel-edge convention). Frames whose image is
  missing are skipped with a :class:`~persp3d.datasets.multiview.DataWarning` (NeRF-synthetic
  folders in the wild often hold fewer images than their json lists). Masks come from the
  images' alpha channel downstream (:mod:`persp3d.datasets.captures`); this reader only
  names the files.
- Splits: ``transforms_train.json`` etc. set :attr:`CaptureView.split`; a single
  ``transforms.json`` gives ``split=None``. View names are the image file stems, prefixed
  with the split (``test_r_0``) when stems repeat across splits.

The camera conversion is :meth:`persp3d.Cameras.from_opengl` (``R = diag(1, -1, -1)
R_c2w^T``, ``t = -R c``), used through :func:`opengl_c2w_to_opencv`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from persp3d.datasets.formats.scene import CaptureScene, CaptureView, estimate_up, image_size_of

__all__ = ["NERF_SPLITS", "opengl_c2w_to_opencv", "read_nerf"]

NERF_SPLITS = ("train", "val", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
_PINHOLE_MODELS = {"PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "PERSPECTIVE"}
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def opengl_c2w_to_opencv(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World->camera ``R, t`` (OpenCV axes) of a camera-to-world matrix with OpenGL axes.

    Args:
        c2w: ``(4, 4)`` or ``(3, 4)`` camera-to-world, camera axes +x right, +y up, -z
            forward (Blender, NeRF's ``transform_matrix``).

    Returns:
        ``R (3, 3)``, ``t (3,)`` float64 with ``X_cam = R @ X_world + t``, camera axes +x
        right, +y down, +z forward.

    Convention: :meth:`persp3d.Cameras.from_opengl` does the conversion (one place).
    """
    import torch

    from persp3d.cameras import Cameras

    c2w_t = torch.as_tensor(np.asarray(c2w, dtype=np.float64))
    cams = Cameras.from_opengl(c2w_t, torch.eye(3, dtype=torch.float64), (1, 1))
    return cams.R.numpy().copy(), cams.t.numpy().copy()


class _Frame:
    """One frame's fields, read with the top-level values as defaults."""

    def __init__(self, path: Path, index: int, frame: Any, meta: dict) -> None:
        if not isinstance(frame, dict):
            raise ValueError(
                f"{path}: frames[{index}] must be an object; got {type(frame).__name__}"
            )
        self.path, self.index, self.frame, self.meta = path, index, frame, meta

    def where(self, key: str) -> str:
        return f"{self.path}: frames[{self.index}]" + ("" if key in self.frame else " (top level)")

    def has(self, key: str) -> bool:
        return key in self.frame or key in self.meta

    def number(self, key: str) -> float:
        value = self.frame.get(key, self.meta.get(key))
        try:
            out = float(value)
        except (TypeError, ValueError):
            out = float("nan")
        if not math.isfinite(out):
            raise ValueError(
                f"{self.where(key)}: field '{key}' must be a finite number; got {value!r}"
            )
        return out


def _c2w(fr: _Frame) -> np.ndarray:
    if "transform_matrix" not in fr.frame:
        raise ValueError(f"{fr.path}: frames[{fr.index}] has no 'transform_matrix'")
    try:
        m = np.asarray(fr.frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape not in ((4, 4), (3, 4)) or not np.isfinite(m).all():
        raise ValueError(
            f"{fr.path}: frames[{fr.index}]: field 'transform_matrix' must be 4 x 4 finite "
            f"numbers; got shape {m.shape}"
        )
    if m.shape == (4, 4) and not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise ValueError(
            f"{fr.path}: frames[{fr.index}]: field 'transform_matrix' must have a last row "
            f"0 0 0 1; got {m[3].tolist()}"
        )
    rot = m[:3, :3]
    err = float(np.abs(rot @ rot.T - np.eye(3)).max())
    if err > 1e-3 or np.linalg.det(rot) < 0:
        raise ValueError(
            f"{fr.path}: frames[{fr.index}]: field 'transform_matrix' is not a rigid camera "
            f"pose (rotation part off by {err:.2g}, det {np.linalg.det(rot):.3f})"
        )
    u, _, vt = np.linalg.svd(rot)  # nearest rotation: removes float32 rounding
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = u @ vt, m[:3, 3]
    return out


def _intrinsics(fr: _Frame, file_size: tuple[int, int]) -> np.ndarray:
    """``K`` (persp3d convention) for the image file of ``file_size = (H, W)``."""
    model = fr.frame.get("camera_model", fr.meta.get("camera_model"))
    if model is not None and str(model).upper() not in _PINHOLE_MODELS:
        raise ValueError(
            f"{fr.where('camera_model')}: field 'camera_model' is {model!r}; only pinhole "
            f"cameras ({', '.join(sorted(_PINHOLE_MODELS))}) are read; undistort the images first"
        )
    for key in _DISTORTION_KEYS:
        if fr.has(key) and fr.number(key) != 0.0:
            raise ValueError(
                f"{fr.where(key)}: field '{key}' = {fr.number(key):g}: distorted images are not "
                "read; undistort them first (e.g. COLMAP's image_undistorter)"
            )
    H, W = file_size
    if fr.has("w") != fr.has("h"):
        missing = "h" if fr.has("w") else "w"
        raise ValueError(
            f"{fr.path}: frames[{fr.index}]: field '{missing}' is missing (both w and h are needed)"
        )
    Wc, Hc = (fr.number("w"), fr.number("h")) if fr.has("w") else (float(W), float(H))
    if Wc <= 0 or Hc <= 0:
        raise ValueError(f"{fr.where('w')}: fields 'w', 'h' must be positive; got {Wc:g}, {Hc:g}")
    if fr.has("fl_x"):
        fx = fr.number("fl_x")
    elif fr.has("camera_angle_x"):
        angle = fr.number("camera_angle_x")
        if not 0 < angle < math.pi:
            raise ValueError(
                f"{fr.where('camera_angle_x')}: field 'camera_angle_x' must be in (0, pi) radians; got {angle}"
            )
        fx = Wc / (2.0 * math.tan(angle / 2.0))
    else:
        raise ValueError(
            f"{fr.path}: frames[{fr.index}]: no intrinsics: field 'fl_x' or 'camera_angle_x' "
            "is missing (neither in the frame nor at the top level)"
        )
    if fr.has("fl_y"):
        fy = fr.number("fl_y")
    elif fr.has("camera_angle_y") and not fr.has("fl_x"):
        fy = Hc / (2.0 * math.tan(fr.number("camera_angle_y") / 2.0))
    else:
        fy = fx
    if fx <= 0 or fy <= 0:
        raise ValueError(f"{fr.where('fl_x')}: focal lengths must be positive; got {fx:g}, {fy:g}")
    cx = fr.number("cx") if fr.has("cx") else Wc / 2.0
    cy = fr.number("cy") if fr.has("cy") else Hc / 2.0
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    # the calibration's image size -> the file's (pixel-edge convention: rows scale exactly)
    return np.diag([W / Wc, H / Hc, 1.0]) @ K


def _find_image(root: Path, file_path: str) -> Path | None:
    path = root / file_path
    if path.is_file():
        return path
    for suffix in _IMAGE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from err
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with 'frames'; got {type(meta).__name__}")
    if "frames" not in meta:
        raise ValueError(f"{path}: field 'frames' is missing")
    if not isinstance(meta["frames"], list):
        raise ValueError(
            f"{path}: field 'frames' must be a list; got {type(meta['frames']).__name__}"
        )
    return meta


def _json_files(root: Path, splits: Sequence[str]) -> list[tuple[Path, str | None]]:
    if root.is_file():
        split = root.stem[len("transforms_") :] if root.stem.startswith("transforms_") else None
        return [(root, split)]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    found = [(root / f"transforms_{s}.json", s) for s in splits]
    present = [(p, s) for p, s in found if p.is_file()]
    if present:
        for p, s in found:
            if not p.is_file():
                warnings.warn(f"{p}: missing; split {s!r} not read", _data_warning(), stacklevel=3)
        return present
    if (root / "transforms.json").is_file():
        return [(root / "transforms.json", None)]
    raise FileNotFoundError(
        f"{root}: no {', '.join(p.name for p, _ in found)} and no transforms.json"
    )


def _data_warning() -> type[Warning]:
    from persp3d.datasets.multiview import DataWarning

    return DataWarning


def read_nerf(root: str | os.PathLike, splits: Sequence[str] = NERF_SPLITS) -> CaptureScene:
    """Read a NeRF-synthetic / Blender scene, or a nerfstudio / instant-ngp ``transforms.json``.

    Args:
        root: the scene folder (holding ``transforms_{split}.json``, or ``transforms.json``
            when there is no split file), or one such json file.
        splits: the splits to read (their ``transforms_<split>.json``).

    Returns:
        A :class:`CaptureScene` named after the folder, source ``"nerf"``, ``up = (0, 0, 1)``,
        views in the order of the splits and the frames.

    Convention: ``K``, ``R``, ``t`` in persp3d's (see the module docstring for the format's).

    Raises:
        FileNotFoundError: no json file, or none of the frames' images exists.
        ValueError: malformed json, naming the file, the frame and the field.
    """
    root = Path(root)
    files = _json_files(root, tuple(splits))
    folder = root.parent if root.is_file() else root
    records: list[dict[str, Any]] = []
    missing = 0
    for path, split in files:
        meta = _read_json(path)
        for index, frame in enumerate(meta["frames"]):
            fr = _Frame(path, index, frame, meta)
            file_path = frame.get("file_path")
            if not isinstance(file_path, str) or not file_path:
                raise ValueError(
                    f"{path}: frames[{index}]: field 'file_path' is missing or not a string"
                )
            c2w = _c2w(fr)
            image = _find_image(path.parent, file_path)
            if image is None:
                missing += 1
                warnings.warn(
                    f"{path}: frames[{index}]: image {file_path!r} not found; frame skipped",
                    _data_warning(),
                    stacklevel=2,
                )
                continue
            size = image_size_of(image)
            K = _intrinsics(fr, size)
            R, t = opengl_c2w_to_opencv(c2w)
            mask = None
            if frame.get("mask_path"):
                mask = path.parent / str(frame["mask_path"])
                if not mask.is_file():
                    warnings.warn(
                        f"{path}: frames[{index}]: mask {frame['mask_path']!r} not found; ignored",
                        _data_warning(),
                        stacklevel=2,
                    )
                    mask = None
            records.append(
                {"image": image, "K": K, "R": R, "t": t, "size": size, "mask": mask, "split": split}
            )
    if not records:
        raise FileNotFoundError(
            f"{root}: none of the {missing} frames listed has its image; nothing to read"
        )
    names = _view_names(records, folder)
    views = [
        CaptureView(
            name=name,
            image_path=r["image"],
            K=r["K"],
            R=r["R"],
            t=r["t"],
            image_size=r["size"],
            mask_path=r["mask"],
            split=r["split"],
        )
        for name, r in zip(names, records)
    ]
    name = (root.parent if root.is_file() else root).resolve().name
    z_up = np.array([0.0, 0.0, 1.0])
    up = z_up
    if all(r["split"] is None for r in records):  # transforms.json: not necessarily z-up
        estimate = estimate_up([v.R for v in views])
        up = z_up if estimate @ z_up > math.cos(math.radians(30.0)) else estimate
    return CaptureScene(name=name, source="nerf", views=views, up=up)


def _view_names(records: list[dict[str, Any]], folder: Path) -> list[str]:
    """Image stems; ``<split>_<stem>`` if stems repeat; else the path below ``folder``."""
    stems = [r["image"].stem for r in records]
    if len(set(stems)) == len(stems):
        return stems
    split_stems = [f"{r['split']}_{s}" if r["split"] else s for r, s in zip(records, stems)]
    if len(set(split_stems)) == len(split_stems):
        return split_stems
    out = []
    for r in records:
        try:
            rel = r["image"].relative_to(folder)
        except ValueError:
            rel = Path(r["image"].name)
        out.append(str(rel.with_suffix("")).replace(os.sep, "_").replace("/", "_"))
    return out
