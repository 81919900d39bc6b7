"""Import a calibrated capture (a :class:`~persp3d.datasets.formats.CaptureScene`) into a
persp3d dataset folder: silhouettes, the object's box, a common image size, one item per scene.

Capture path: foreign folder -> reader (:mod:`persp3d.datasets.formats`) -> CaptureScene ->
:func:`import_capture` -> ``DIR/items/<category>/<id>.npz`` + ``manifest.json`` (format
``persp3d-multiview``, kind ``"capture"``) -> :class:`~persp3d.datasets.MultiViewFolder` ->
every command (``check``, ``fit``, ``view``, ``train`` with ``data.kind: folder``).

What the import does, in order:

1. **Silhouettes** per view (:func:`view_silhouette`): from the image's alpha channel, from a
   mask file (the format's own, or ``mask_dir`` matched by file stem), from a background
   colour key with a tolerance, or by thresholding the grey level then dilating and eroding
   (Middlebury's recipe). ``"auto"`` picks the first that applies, in that order of
   evidence: ``mask_dir``, the format's masks, ``key_color``, an alpha channel that is not
   all opaque, Middlebury's threshold.
2. **One image size**: every view is resized to the most common size times ``scale``
   (views of other sizes are resized to it too, each with its own intrinsics), with
   area averaging; the intrinsics follow exactly (:func:`scale_intrinsics`).
3. **The box**: ``box`` if given, else the format's own (DTU ``scale_mat``, R2N2's unit
   cube), else :func:`estimate_box`: the bounding cube of a coarse visual hull, plus a
   margin.
4. **Writing**: one item per scene (or one per format split with ``split_from_format``) with
   ``images``, ``silhouettes``, ``K``, ``R``, ``t``, ``box_center``, ``box_size``, ``up``,
   ``view_names`` (and ``view_splits`` when the format has them), appended to the folder's
   manifest (an item of the same category and id is replaced), and ``contact_sheet.png``:
   every view with its mask overlaid and the box drawn.

Convention: cameras as in :mod:`persp3d.cameras` (``X_cam = R X + t``, OpenCV axes, pixel
centres at ``+0.5``, image plane ``[0, W] x [0, H]``); the world keeps the capture's own
axes and units (the box and ``up`` say where the object is and which way is up).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persp3d.datasets.formats.scene import CaptureScene, CaptureView
from persp3d.volume import VolumeBox

__all__ = [
    "CAPTURE_FORMATS",
    "KIND",
    "SILHOUETTE_MODES",
    "CaptureImport",
    "capture_contact_sheet",
    "estimate_box",
    "find_mask",
    "import_capture",
    "key_silhouette",
    "load_image",
    "read_capture",
    "scale_intrinsics",
    "threshold_silhouette",
    "view_silhouette",
]

KIND = "capture"
CAPTURE_FORMATS = ("nerf", "colmap", "middlebury", "dtu", "r2n2")
SILHOUETTE_MODES = ("auto", "alpha", "masks", "key", "threshold")
_MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".PNG", ".JPG")


@dataclass
class CaptureImport:
    """What :func:`import_capture` wrote."""

    root: Path
    """The dataset folder."""
    items: list[dict[str, Any]]
    """One ``{"category", "id", "split", "views", "file"}`` per item written."""
    box: VolumeBox
    """The object's box in the capture's world."""
    box_source: str
    """Where the box came from: ``"given"``, ``"format"`` or ``"estimated"``."""
    image_size: tuple[int, int]
    """``(H, W)`` of the stored images."""
    silhouettes: list[str] = field(default_factory=list)
    """The silhouette mode used for each view."""
    contact_sheet: Path | None = None
    """The contact sheet PNG, if written."""


# -- reading ----------------------------------------------------------------------------------
def read_capture(
    src: str | os.PathLike, format: str, *, images_dir: str | os.PathLike | None = None
) -> CaptureScene:
    """Read a capture folder with the reader of ``format`` (one of :data:`CAPTURE_FORMATS`).

    ``src`` is, per format: ``nerf``: the scene folder (``transforms_*.json``); ``colmap``:
    a project folder holding ``sparse/0`` (or ``sparse``) and ``images``, or the model
    folder itself with ``images_dir``; ``middlebury``: the ``*_par.txt`` file or its folder;
    ``dtu``: the scan folder; ``r2n2``: one ``ShapeNetRendering/<synset>/<model>`` folder.

    Raises:
        ValueError: an unknown format, or one whose reader is not installed.
        FileNotFoundError: ``src`` does not exist.
    """
    from persp3d.datasets.formats import FORMATS

    if format not in CAPTURE_FORMATS:
        raise ValueError(f"format must be one of {CAPTURE_FORMATS}; got {format!r}")
    if format not in FORMATS:
        raise ValueError(f"the {format} reader is not available in this persp3d")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: capture folder not found")
    reader = FORMATS[format]
    if format == "middlebury":
        return reader(src, images_dir)
    if format != "colmap":
        if images_dir is not None:
            raise ValueError(f"--images applies to colmap and middlebury, not {format}")
        return reader(src)
    model = src
    for candidate in (src / "sparse" / "0", src / "sparse"):
        if candidate.is_dir() and any(candidate.glob("cameras.*")):
            model = candidate
            break
    if images_dir is None:
        for candidate in (src / "images", model.parent / "images", model.parent.parent / "images"):
            if candidate.is_dir():
                images_dir = candidate
                break
        else:
            raise FileNotFoundError(f"{src}: no images folder found; pass images_dir (--images)")
    return reader(model, images_dir)


# -- images and silhouettes --------------------------------------------------------------------
def load_image(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W, 3)`` float32 RGB in [0, 1] and ``(H, W)`` alpha (None without an alpha
    channel) of an image file.

    Raises:
        FileNotFoundError: no such file. ValueError: not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (
                img.mode == "P" and "transparency" in img.info
            )
            if img.mode.startswith("I;16") or img.mode == "I":
                arr = np.asarray(img, dtype=np.float32) / 65535.0
                return np.repeat(arr[..., None], 3, axis=2), None
            arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    arr = arr / 255.0
    return arr[..., :3], (arr[..., 3] if has_alpha else None)


def _read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1] of a mask file: its alpha if it has one that is not all
    opaque, else its grey level (white = object)."""
    rgb, alpha = load_image(path)
    if rgb.shape[:2] != tuple(size):
        raise ValueError(
            f"{path}: mask is {rgb.shape[1]}x{rgb.shape[0]} but its image is {size[1]}x{size[0]}"
        )
    if alpha is not None and alpha.min() < 1.0:
        return alpha.astype(np.float32)
    return rgb.mean(axis=2).astype(np.float32)


def find_mask(mask_dir: str | os.PathLike, view: CaptureView) -> Path:
    """The mask of ``view`` in ``mask_dir``, matched by name: ``<stem>.<ext>``,
    ``<stem>_mask.<ext>`` or ``<image file name>.<ext>`` (e.g. ``r_0.png.png``).

    Raises:
        FileNotFoundError: none of these exists (the message lists what was tried).
    """
    folder = Path(mask_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: mask folder not found")
    stems = (view.image_path.stem, f"{view.image_path.stem}_mask", view.image_path.name)
    for stem in stems:
        for suffix in _MASK_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{folder}: no mask for view {view.name!r} (looked for {', '.join(s + '.png' for s in stems)}"
        " and other image suffixes)"
    )


def _parse_color(key_color: Sequence[float]) -> np.ndarray:
    color = np.asarray(key_color, dtype=np.float64).reshape(-1)
    if color.shape != (3,) or not np.isfinite(color).all() or (color < 0).any():
        raise ValueError(f"key_color must be 3 non-negative numbers R,G,B; got {key_color!r}")
    if color.max() > 1.0:
        if color.max() > 255.0:
            raise ValueError(f"key_color must be in 0..255 (or 0..1); got {key_color!r}")
        color = color / 255.0
    return color


def key_silhouette(rgb: np.ndarray, key_color: Sequence[float], tolerance: float) -> np.ndarray:
    """``(H, W)`` float32 silhouette: 1 where a pixel differs from ``key_color`` by more than
    ``tolerance`` in some channel (max absolute difference), 0 on the background.

    Args:
        rgb: ``(H, W, 3)`` in [0, 1].
        key_color: background colour, ``R, G, B`` in 0..255 (any value above 1) or 0..1.
        tolerance: in [0, 1] of the full range (a value above 1 is taken in 0..255 levels).
    """
    color = _parse_color(key_color)
    tol = float(tolerance)
    if not math.isfinite(tol) or tol < 0 or tol > 255:
        raise ValueError(f"key_tolerance must be in [0, 1] (or 0..255 levels); got {tolerance!r}")
    if tol > 1.0:
        tol /= 255.0
    diff = np.abs(rgb.astype(np.float64) - color).max(axis=2)  # (H, W)
    return (diff > tol).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r


def threshold_silhouette(
    rgb: np.ndarray, threshold: float = 0.19, dilate: int = 10, erode: int = 7
) -> np.ndarray:
    """``(H, W)`` float32 silhouette of an object lit on a dark background: grey level (mean
    of R, G, B in [0, 1]) above ``threshold``, dilated by a disk of ``dilate`` px, then
    eroded by a disk of ``erode`` px (Middlebury's recipe: 0.19, 10, 7)."""
    from scipy import ndimage

    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold!r}")
    if int(dilate) < 0 or int(erode) < 0:
        raise ValueError(f"dilate and erode must be >= 0 pixels; got {dilate!r}, {erode!r}")
    mask = rgb.mean(axis=2) > float(threshold)
    if int(dilate) > 0:
        mask = ndimage.binary_dilation(mask, structure=_disk(dilate))
    if int(erode) > 0:
        mask = ndimage.binary_erosion(mask, structure=_disk(erode), border_value=1)
    return mask.astype(np.float32)


def view_silhouette(
    view: CaptureView,
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    mode: str,
    *,
    source: str = "",
    mask_dir: str | os.PathLike | None = None,
    key_color: Sequence[float] | None = None,
    key_tolerance: float = 0.1,
    threshold: tuple[float, int, int] = (0.19, 10, 7),
) -> tuple[np.ndarray, str]:
    """``(H, W)`` float32 silhouette of one view at its full size, and the mode used.

    Args:
        view: the view (its ``mask_path`` is the format's mask).
        rgb: ``(H, W, 3)`` and alpha ``(H, W)`` or None: the view's image.
        mode: one of :data:`SILHOUETTE_MODES` (see the module docstring for ``"auto"``).
        source: the scene's format (``"middlebury"`` makes ``"auto"`` threshold).
        mask_dir, key_color, key_tolerance, threshold: the inputs of each mode
            (``threshold`` is ``(grey level, dilate px, erode px)``).

    Raises:
        ValueError: the mode cannot apply (no alpha channel, no mask, no key colour), naming
            the view's file.
    """
    if mode not in SILHOUETTE_MODES:
        raise ValueError(f"silhouettes must be one of {SILHOUETTE_MODES}; got {mode!r}")
    size = rgb.shape[:2]
    if mode == "auto":
        if mask_dir is not None or view.mask_path is not None:
            mode = "masks"
        elif key_color is not None:
            mode = "key"
        elif alpha is not None and alpha.min() < 1.0:
            mode = "alpha"
        elif source == "middlebury":
            mode = "threshold"
        else:
            raise ValueError(
                f"{view.image_path}: no silhouette source: the image has no transparency and "
                "the format ships no masks; pass a mask folder (--masks DIR) or a background "
                "colour (--key-color R,G,B)"
            )
    if mode == "alpha":
        if alpha is None:
            raise ValueError(f"{view.image_path}: silhouettes='alpha' but the image has no alpha")
        return alpha.astype(np.float32), mode
    if mode == "masks":
        path = find_mask(mask_dir, view) if mask_dir is not None else view.mask_path
        if path is None:
            raise ValueError(
                f"{view.image_path}: silhouettes='masks' but the format has no mask for view "
                f"{view.name!r}; pass mask_dir (--masks DIR)"
            )
        return _read_mask(Path(path), size), mode
    if mode == "key":
        if key_color is None:
            raise ValueError("silhouettes='key' needs key_color (--key-color R,G,B)")
        return key_silhouette(rgb, key_color, key_tolerance), mode
    return threshold_silhouette(rgb, *threshold), mode


# -- image geometry ----------------------------------------------------------------------------
def scale_intrinsics(K: np.ndarray, old_size: tuple[int, int], new_size: tuple[int, int]):
    """``K`` of an image resized from ``old_size`` to ``new_size`` (both ``(H, W)``) over the
    same field of view: ``diag(w / W, h / H, 1) @ K``.

    Convention: exact when pixel centres are at ``+0.5`` (persp3d): the image plane
    ``[0, W] x [0, H]`` maps onto ``[0, w] x [0, h]`` by a pure scaling, so the centre of new
    pixel ``i`` at ``i + 0.5`` is old ``(i + 0.5) * W / w``, where area averaging puts it.
    (With pixel centres at integers the same resize would need
    ``c' = (c + 0.5) * s - 0.5``.)
    """
    (H, W), (h, w) = old_size, new_size
    return np.diag([w / W, h / H, 1.0]) @ np.asarray(K, dtype=np.float64)


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W)`` or ``(H, W, C)`` float32 to ``size = (h, w)``: box filter (area
    average) when shrinking, bilinear when growing."""
    from PIL import Image

    h, w = size
    if array.shape[:2] == (h, w):
        return array.astype(np.float32)
    shrink = h <= array.shape[0] and w <= array.shape[1]
    method = Image.BOX if shrink else Image.BILINEAR
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[2])]
    out = [
        np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), method))
        for c in channels
    ]
    return out[0] if array.ndim == 2 else np.stack(out, axis=2)


# -- the object's box --------------------------------------------------------------------------
def _project(K, R, t, points):  # points (N, 3) -> uv (N, 2), depth (N,)
    # elementwise, not ``points @ R.T``: tiny BLAS products with many rows are slow when the
    # BLAS threads compete for busy cores
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    cam = [R[r, 0] * x + R[r, 1] * y + R[r, 2] * z + t[r] for r in range(3)]  # 3 x (N,)
    pix = [K[r, 0] * cam[0] + K[r, 1] * cam[1] + K[r, 2] * cam[2] for r in range(3)]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([pix[0] / pix[2], pix[1] / pix[2]], axis=1)  # (N, 2)
    return uv, cam[2]


def _carve(cams, masks, center, side, res, min_seen):
    """Voxel centres (``(M, 3)`` world) of a ``res^3`` grid over the cube kept by carving:
    not outside the mask of any view that sees them, and seen (inside the frame, in front)
    by at least ``min_seen`` views."""
    g = (np.arange(res) + 0.5) / res - 0.5
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) * side + center
    seen = np.zeros(len(pts), dtype=np.int32)
    carved = np.zeros(len(pts), dtype=bool)
    for (K, R, t), mask in zip(cams, masks):
        H, W = mask.shape
        uv, z = _project(K, R, t, pts)
        i = np.floor(uv[:, 0])
        j = np.floor(uv[:, 1])
        ok = (z > 0) & (i >= 0) & (i < W) & (j >= 0) & (j < H)
        ii = np.where(ok, i, 0).astype(np.int64)
        jj = np.where(ok, j, 0).astype(np.int64)
        inside = mask[jj, ii] > 0.5
        seen += ok
        carved |= ok & ~inside
    return pts[~carved & (seen >= min_seen)]


def _initial_cube(cams, masks, points):
    """A generous cube around the object: from sparse points if any, else from the rays
    through the masks' centroids (their least-squares intersection) and the masks' extent
    seen at that depth."""
    if points is not None and len(points) >= 8:
        lo, hi = np.percentile(points, [2, 98], axis=0)
        return (lo + hi) / 2, 2.0 * float((hi - lo).max())
    A = np.zeros((3, 3))
    b = np.zeros(3)
    rays = []
    for (K, R, t), mask in zip(cams, masks):
        jj, ii = np.nonzero(mask > 0.5)
        if len(ii) == 0:
            continue
        uv = np.array([ii.mean() + 0.5, jj.mean() + 0.5, 1.0])
        d = R.T @ np.linalg.solve(K, uv)
        d /= np.linalg.norm(d)
        o = -R.T @ t
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ o
        extent_px = max(ii.max() - ii.min() + 1, jj.max() - jj.min() + 1)
        rays.append((K, R, t, extent_px))
    if len(rays) < 2 or np.linalg.cond(A) > 1e8:
        raise ValueError(
            "cannot place the object: fewer than two views with a non-empty silhouette, or "
            "their rays are parallel; give the box (--box cx,cy,cz,size)"
        )
    center = np.linalg.solve(A, b)
    extents = []
    for K, R, t, extent_px in rays:
        z = (R @ center + t)[2]
        if z > 0:
            extents.append(extent_px / min(K[0, 0], K[1, 1]) * z)
    if not extents:
        raise ValueError("the silhouettes' rays meet behind the cameras; give the box (--box)")
    return center, 2.0 * float(max(extents))


def estimate_box(
    cameras: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    masks: Sequence[np.ndarray],
    *,
    points: np.ndarray | None = None,
    margin: float = 0.1,
    resolution: int = 48,
) -> tuple[np.ndarray, float]:
    """The cube holding the object: the bounding box of a coarse visual hull, plus a margin.

    The hull is carved in a generous cube (from ``points``, or around the least-squares
    meeting point of the rays through the masks' centroids, twice the masks' largest extent
    at that depth): a voxel centre is kept unless it falls outside the mask of a view that
    sees it, and only if at least half the views see it (so views that leave part of the
    object outside the frame do not cut it, and corners that few views see do not count).
    If the hull touches the cube's faces the cube grows; then a second carving in a cube
    fitted to the hull refines the bounds.

    Args:
        cameras: ``(K, R, t)`` per view, for the masks' size (persp3d convention).
        masks: ``(H, W)`` silhouettes in [0, 1] (thresholded at 0.5).
        points: ``(N, 3)`` sparse world points on the object (optional).
        margin: fraction of the hull's largest side added to the cube's side.
        resolution: voxels per side of each carving.

    Returns:
        ``(center (3,), side)`` of an axis-aligned cube, in world units.

    Raises:
        ValueError: the hull is empty (masks and cameras disagree).
    """
    if len(cameras) != len(masks) or not masks:
        raise ValueError(
            f"need one mask per camera; got {len(masks)} masks, {len(cameras)} cameras"
        )
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0; got {margin!r}")
    min_seen = max(1, math.ceil(len(masks) / 2))
    center, side = _initial_cube(cameras, masks, points)
    for _ in range(4):
        kept = _carve(cameras, masks, center, side, resolution, min_seen)
        if len(kept) == 0:
            raise ValueError(
                "the visual hull of the silhouettes is empty: the masks and the cameras do not "
                "agree (look at contact_sheet.png), or give the box (--box cx,cy,cz,size)"
            )
        lo, hi = kept.min(axis=0), kept.max(axis=0)
        half_voxel = side / resolution / 2
        touches = (lo - half_voxel <= center - side / 2 + 1e-9 * side).any() or (
            hi + half_voxel >= center + side / 2 - 1e-9 * side
        ).any()
        if not touches:
            break
        center, side = (lo + hi) / 2, 2.0 * side
    fine_center = (lo + hi) / 2
    fine_side = float((hi - lo).max()) + 4 * side / resolution
    kept = _carve(cameras, masks, fine_center, fine_side, resolution, min_seen)
    if len(kept) == 0:
        kept_lo, kept_hi = lo, hi
        step = side / resolution
    else:
        kept_lo, kept_hi = kept.min(axis=0), kept.max(axis=0)
        step = fine_side / resolution
    lo, hi = kept_lo - step / 2, kept_hi + step / 2  # voxel centres -> voxel faces
    extent = float((hi - lo).max())
    return (lo + hi) / 2, extent * (1.0 + margin)


# -- the import ----------------------------------------------------------------------------------
def _common_size(sizes: list[tuple[int, int]], scale: float) -> tuple[int, int]:
    H, W = Counter(sizes).most_common(1)[0][0]
    return max(1, round(H * scale)), max(1, round(W * scale))


def _box_of(box: Any) -> VolumeBox:
    if isinstance(box, VolumeBox):
        if len(set(box.size)) != 1:
            raise ValueError(f"box must be a cube; got size {box.size}")
        return box
    try:
        center, size = box
        return VolumeBox(center=np.asarray(center, dtype=np.float64).tolist(), size=float(size))
    except (TypeError, ValueError) as err:
        raise ValueError(f"box must be (center (3,), size) or a VolumeBox; got {box!r}") from err


def import_capture(
    scene: CaptureScene,
    out: str | os.PathLike,
    *,
    silhouettes: str = "auto",
    mask_dir: str | os.PathLike | None = None,
    key_color: Sequence[float] | None = None,
    key_tolerance: float = 0.1,
    threshold: tuple[float, int, int] = (0.19, 10, 7),
    box: VolumeBox | tuple[Sequence[float], float] | None = None,
    margin: float = 0.1,
    scale: float = 1.0,
    category: str = "capture",
    id: str | None = None,
    split: str = "train",
    split_from_format: bool = False,
    background: float | None = None,
    contact_sheet: bool = True,
) -> CaptureImport:
    """Write ``scene`` into the persp3d dataset folder ``out`` (created or extended).

    Args:
        scene: from a reader of :mod:`persp3d.datasets.formats`.
        out: the dataset folder; one that holds other captures is extended (an item of the
            same ``category`` and ``id`` is replaced); one holding another kind of data is
            refused.
        silhouettes: ``"auto"``, ``"alpha"``, ``"masks"``, ``"key"`` or ``"threshold"``
            (see :func:`view_silhouette`).
        mask_dir: a folder of masks matched to the views by file stem (:func:`find_mask`).
        key_color: background colour ``R, G, B`` (0..255, or 0..1) for ``"key"``.
        key_tolerance: max channel difference still counted as background, in [0, 1].
        threshold: ``(grey level, dilate px, erode px)`` for ``"threshold"``.
        box: the object's cube, ``(center, side)`` in world units; default: the format's
            own bounds, else :func:`estimate_box`.
        margin: added to an estimated box (fraction of its side).
        scale: resize factor of the stored images (``0.25``: a quarter of the side); sizes
            are rounded to whole pixels and the intrinsics scaled by the exact ratio.
        category, id: the item's names (``id`` defaults to the scene's name).
        split: the dataset split of the item.
        split_from_format: write one item per split the format gives its views (NeRF's
            train/val/test): ``<id>`` (train views, split train), ``<id>-val``,
            ``<id>-test``.
        background: grey level composited under the alpha channel of RGBA images (default
            1.0, white, as the R2N2 dataset does); ignored for images without alpha.
        contact_sheet: write ``out/contact_sheet.png``.

    Returns:
        A :class:`CaptureImport` describing what was written.

    Convention: cameras as in :mod:`persp3d.cameras`; the world keeps the capture's axes
    and units; ``K`` of each view becomes ``diag(w/W, h/H, 1) @ K`` for its resized image
    (:func:`scale_intrinsics`).

    Raises:
        ValueError / FileNotFoundError: naming the file and what is wrong.
    """
    from persp3d.datasets.cache import (
        FORMAT_NAME,
        FORMAT_VERSION,
        new_manifest,
        read_manifest,
        write_item,
        write_manifest,
    )
    from persp3d.datasets.sample import encode_item

    if not isinstance(scene, CaptureScene):
        raise ValueError(f"scene must be a CaptureScene; got {type(scene).__name__}")
    if not scene.views:
        raise ValueError(f"scene {scene.name!r} has no views")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number; got {scale!r}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
    for name, value in (("category", category), ("id", id)):
        if value is not None and (not str(value) or "/" in str(value) or str(value) in ".."):
            raise ValueError(f"{name} must be a non-empty name without '/'; got {value!r}")
    item_id = str(id) if id is not None else scene.name
    view_splits = [v.split or "" for v in scene.views]
    if split_from_format and not any(view_splits):
        raise ValueError(
            f"scene {scene.name!r} ({scene.source}): the format gives no view splits; "
            "drop split_from_format (--split-from-format)"
        )
    root = Path(out)
    bg = 1.0 if background is None else float(background)

    # 1. images and silhouettes at full size, then the common size
    sizes = []
    for view in scene.views:
        sizes.append(view.image_size)
    size = _common_size(sizes, float(scale))
    images, masks, cams, modes = [], [], [], []
    full_cams, full_masks = [], []
    for view in scene.views:
        rgb, alpha = load_image(view.image_path)
        if rgb.shape[:2] != view.image_size:
            raise ValueError(
                f"{view.image_path}: image is {rgb.shape[1]}x{rgb.shape[0]} but the scene says "
                f"{view.image_size[1]}x{view.image_size[0]} (field image_size)"
            )
        sil, mode = view_silhouette(
            view,
            rgb,
            alpha,
            silhouettes,
            source=scene.source,
            mask_dir=mask_dir,
            key_color=key_color,
            key_tolerance=key_tolerance,
            threshold=threshold,
        )
        if alpha is not None:
            rgb = rgb * alpha[..., None] + bg * (1.0 - alpha[..., None])
        images.append(_to_uint8(_resize(rgb, size)))  # (h, w, 3) uint8: a quarter of float32
        masks.append(_to_uint8(_resize(sil, size)))  # (h, w) uint8
        cams.append((scale_intrinsics(view.K, view.image_size, size), view.R, view.t))
        modes.append(mode)
        # a small copy for the box estimate (at most ~256 px on the long side)
        f = min(1.0, 256.0 / max(view.image_size))
        small = (max(1, round(view.image_size[0] * f)), max(1, round(view.image_size[1] * f)))
        full_cams.append((scale_intrinsics(view.K, view.image_size, small), view.R, view.t))
        full_masks.append(_resize(sil, small))
    empty = [v.name for v, m in zip(scene.views, masks) if m.max() <= 127]
    if len(empty) == len(masks):
        raise ValueError(
            f"every silhouette of scene {scene.name!r} is empty ({modes[0]}); check the masks, "
            "the key colour or the tolerance"
        )
    if empty:
        warnings.warn(
            f"scene {scene.name!r}: empty silhouette in views {empty[:8]}",
            UserWarning,
            stacklevel=2,
        )

    # 2. the box
    if box is not None:
        vbox, box_source = _box_of(box), "given"
    elif scene.box is not None:
        vbox, box_source = _box_of(scene.box), "format"
    else:
        seen = [i for i, m in enumerate(full_masks) if m.max() > 0.5]  # empty views carve all
        center, side = estimate_box(
            [full_cams[i] for i in seen],
            [full_masks[i] for i in seen],
            points=scene.points,
            margin=margin,
        )
        vbox, box_source = _box_of((center, side)), "estimated"

    # 3. the items
    groups: list[tuple[str, str, list[int]]]
    if split_from_format:
        groups = []
        for part in ("train", "val", "test"):
            idx = [i for i, s in enumerate(view_splits) if s == part]
            if idx:
                groups.append((item_id if part == "train" else f"{item_id}-{part}", part, idx))
    else:
        groups = [(item_id, split, list(range(len(scene.views))))]

    existing = None
    if (root / "manifest.json").is_file():
        existing = read_manifest(root)
        if existing["kind"] != KIND:
            raise ValueError(
                f"{root}: holds {existing['kind']!r} data; import captures into an empty folder "
                "or one made by import-views"
            )
    import torch

    from persp3d.cameras import Cameras

    written = []
    for gid, gsplit, idx in groups:
        K = np.stack([cams[i][0] for i in idx])
        R = np.stack([cams[i][1] for i in idx])
        t = np.stack([cams[i][2] for i in idx])
        cameras = Cameras(
            torch.from_numpy(K), torch.from_numpy(R), torch.from_numpy(t), size, validate=False
        )
        extra = {"view_names": np.array([scene.views[i].name for i in idx])}
        if any(view_splits):
            extra["view_splits"] = np.array([view_splits[i] for i in idx])
        arrays = encode_item(
            images=np.stack([images[i] for i in idx]).transpose(0, 3, 1, 2),  # (V, 3, h, w)
            silhouettes=np.stack([masks[i] for i in idx])[:, None],  # (V, 1, h, w) uint8
            cameras=cameras,
            category=category,
            item_id=gid,
            box=vbox,
            up=scene.up,
            extra=extra,
        )
        rel = f"items/{category}/{gid}.npz"
        sha, n_bytes = write_item(root / rel, arrays)
        written.append(
            {
                "id": gid,
                "category": category,
                "split": gsplit,
                "file": rel,
                "sha256": sha,
                "bytes": n_bytes,
                "views": len(idx),
            }
        )

    record = {
        "source": scene.source,
        "scene": scene.name,
        "views": len(scene.views),
        "image_size": list(size),
        "scale": float(scale),
        "silhouettes": sorted(set(modes)),
        "box": {"center": list(vbox.center), "size": vbox.size[0], "from": box_source},
        "up": scene.up.tolist(),
    }
    if existing is None:
        manifest = new_manifest(KIND, {"voxel_resolutions": [], "captures": {}}, [])
    else:
        manifest = existing
        manifest.setdefault("config", {}).setdefault("captures", {})
    keys = {(w["category"], w["id"]) for w in written}
    manifest["items"] = [
        it for it in manifest["items"] if (it["category"], it["id"]) not in keys
    ] + written
    for w in written:
        manifest["config"]["captures"][f"{w['category']}/{w['id']}"] = record
    records = [r for k, r in manifest["config"]["captures"].items()
               if tuple(k.split("/", 1)) in {(it["category"], it["id"]) for it in manifest["items"]}]  # fmt: skip
    for key, name in (("image_size", "image_size"), ("views", "n_views")):
        values = {json.dumps(r[key]) for r in records}
        manifest["config"][name] = records[0][key] if len(values) == 1 else None
    manifest["format"], manifest["version"] = FORMAT_NAME, FORMAT_VERSION
    manifest["complete"] = all(it.get("sha256") for it in manifest["items"])
    manifest["summary"] = {"items": len(manifest["items"])}
    write_manifest(root, manifest)

    sheet = None
    if contact_sheet:
        sheet = capture_contact_sheet(
            images, masks, [c for c in cams], vbox, root / "contact_sheet.png",
            names=[v.name for v in scene.views],
        )  # fmt: skip
    return CaptureImport(
        root=root,
        items=[{k: w[k] for k in ("category", "id", "split", "views", "file")} for w in written],
        box=vbox,
        box_source=box_source,
        image_size=size,
        silhouettes=modes,
        contact_sheet=sheet,
    )


# -- the contact sheet ---------------------------------------------------------------------------
_BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]  # fmt: skip


def capture_contact_sheet(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    cameras: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    box: VolumeBox | None,
    path: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    max_views: int = 24,
    tile: int = 200,
    columns: int = 6,
) -> Path:
    """Write a PNG of the views: each image with its mask overlaid (the object tinted green,
    the background darkened, the mask's outline in red) and the box's edges projected in
    yellow, so a wrong mask or box shows at a glance.

    Args:
        images: ``(H, W, 3)``, masks: ``(H, W)``: floats in [0, 1] or uint8; cameras: ``(K, R, t)``
            per view for that size.
        box: drawn when given.
        max_views: views shown (evenly spaced).
        tile: the long side of a tile in pixels.
    """
    from PIL import Image, ImageDraw

    n = len(images)
    pick = np.unique(np.linspace(0, n - 1, min(max_views, n)).round().astype(int))
    H, W = images[0].shape[:2]
    f = tile / max(H, W)
    th, tw = max(1, round(H * f)), max(1, round(W * f))
    cols = min(columns, len(pick))
    rows = math.ceil(len(pick) / cols)
    sheet = Image.new("RGB", (cols * (tw + 4) + 4, rows * (th + 4) + 4), (60, 60, 60))
    corners = None
    if box is not None:
        lo, hi = np.asarray(box.min), np.asarray(box.max)
        corners = np.array([[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])  # fmt: skip
    for k, v in enumerate(pick):
        img = _as_unit(images[v])
        m = np.clip(_as_unit(masks[v]), 0, 1)[..., None]
        tint = img * (0.35 + 0.65 * m) + m * np.array([0.0, 0.25, 0.0])
        edge = (m[..., 0] > 0.5) != (_erode1(m[..., 0] > 0.5))
        tint[edge] = (1.0, 0.1, 0.1)
        pil = Image.fromarray((np.clip(tint, 0, 1) * 255).astype(np.uint8))
        pil = pil.resize((tw, th), Image.BILINEAR)
        draw = ImageDraw.Draw(pil)
        if corners is not None:
            K, R, t = cameras[v]
            uv, z = _project(scale_intrinsics(K, (H, W), (th, tw)), R, t, corners)
            for a, b in _BOX_EDGES:
                if z[a] > 0 and z[b] > 0:
                    draw.line([tuple(uv[a]), tuple(uv[b])], fill=(255, 220, 0), width=1)
        if names is not None:
            draw.text((3, 2), str(names[v]), fill=(255, 255, 255))
        r, c = divmod(k, cols)
        sheet.paste(pil, (4 + c * (tw + 4), 4 + r * (th + 4)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def _as_unit(array: np.ndarray) -> np.ndarray:
    """float64 in [0, 1] of a uint8 (0..255) or float image."""
    a = np.asarray(array)
    return a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)


def _erode1(mask: np.ndarray) -> np.ndarray:
    """One-pixel erosion (4-neighbourhood) of a boolean ``(H, W)`` mask."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out
