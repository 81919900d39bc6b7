"""DTU / IDR scan reader: ``cameras.npz`` + ``image/`` + ``mask/`` -> :class:`CaptureScene`.

First reader of the capture path: scan folder -> :func:`read_dtu` ->
:func:`persp3d.datasets.captures.import_capture` -> persp3d dataset folder.

The layout is IDR's (Yariv et al. 2020, ``DATA_CONVENTION.md`` and
``code/datasets/scene_dataset.py`` of lioryariv/idr; VolSDF and NeuS use the same)::

    scanN/image/000.png ...     RGB images, sorted by name
    scanN/mask/000.png ...      object masks (white = object), sorted by name
    scanN/cameras.npz           world_mat_i, scale_mat_i for image i (i = 0 .. n-1)

``world_mat_i`` is the ``3 x 4`` projection ``P = K [R | t]`` (stored ``4 x 4`` with a last
row ``0 0 0 1``): ``d [x, y, 1]^T = P [X, Y, Z, 1]^T`` in the scan's world units (DTU:
millimetres). :func:`~persp3d.datasets.formats.scene.decompose_projection` splits it by an
RQ decomposition (positive ``diag(K)``, ``det R = +1``, ``K[2, 2] = 1``). ``scale_mat_i``
(the same for every ``i``) maps the unit sphere onto the region of the object (IDR trains
in ``P @ scale_mat``); here the world stays the scan's and the sphere
``center = scale_mat[:3, 3]``, ``radius = scale_mat[0, 0]`` becomes the scene's box: the
cube of side ``2 * radius`` around it.

Pixel centres: IDR casts the ray of pixel ``(row j, column i)`` through ``uv = (i, j)``
(``np.mgrid`` over the image, fed to ``rend_util.get_camera_params`` with these ``K``), i.e.
pixel centres at integers; persp3d puts them at ``+0.5``, so ``0.5`` is added to ``cx, cy``.

Up: DTU's world is the robot's frame; :func:`~persp3d.datasets.formats.scene.estimate_up`
takes the up direction the cameras' images agree on.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from persp3d.datasets.formats.scene import (
    CaptureScene,
    CaptureView,
    decompose_projection,
    estimate_up,
    image_size_of,
)

__all__ = ["IMAGE_SUFFIXES", "read_dtu"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and p.is_file())


def read_dtu(
    scan_dir: str | os.PathLike,
    *,
    cameras_file: str | None = None,
    integer_pixel_centers: bool = True,
) -> CaptureScene:
    """Read a DTU / IDR scan folder.

    Args:
        scan_dir: the folder with ``image/``, ``cameras.npz`` and optionally ``mask/``.
        cameras_file: the cameras' file name in ``scan_dir``; default ``cameras.npz``
            (IDR, VolSDF), else ``cameras_sphere.npz`` (NeuS, same keys and conventions).
            IDR also ships ``cameras_linear_init.npz``.
        integer_pixel_centers: ``K`` puts pixel centres at integers, as IDR's ray casting
            does (default): ``0.5`` is added to ``cx, cy``.

    Returns:
        A :class:`CaptureScene` (source ``"dtu"``) with each view's ``mask_path`` when
        ``mask/`` exists, and ``box`` from ``scale_mat_0`` when present.

    Convention: see the module docstring; world units are the scan's.

    Raises:
        FileNotFoundError: no ``image/`` folder or cameras file.
        ValueError: a missing or malformed ``world_mat_i`` / ``scale_mat_i`` (naming the
            file and the key), or masks that do not match the images.
    """
    root = Path(scan_dir)
    image_dir = root / "image"
    if cameras_file is None:
        cameras_file = "cameras.npz"
        if not (root / cameras_file).is_file() and (root / "cameras_sphere.npz").is_file():
            cameras_file = "cameras_sphere.npz"
    cam_path = root / cameras_file
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: no image folder (IDR/DTU layout: image/, mask/)")
    if not cam_path.is_file():
        raise FileNotFoundError(f"{cam_path}: cameras file not found")
    images = _images(image_dir)
    if not images:
        raise FileNotFoundError(f"{image_dir}: no .png/.jpg images")
    masks: list[Path | None] = [None] * len(images)
    mask_dir = root / "mask"
    if mask_dir.is_dir():
        found = _images(mask_dir)
        by_stem = {p.stem: p for p in found}
        if all(p.stem in by_stem for p in images):
            masks = [by_stem[p.stem] for p in images]
        elif len(found) == len(images):  # IDR pairs them by sorted order
            masks = list(found)
        else:
            raise ValueError(
                f"{mask_dir}: {len(found)} masks for {len(images)} images, and their names "
                "do not match the images'"
            )
    try:
        with np.load(cam_path, allow_pickle=False) as npz:
            data = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{cam_path}: not a readable .npz ({err})") from err
    views = []
    for i, (image, mask) in enumerate(zip(images, masks)):
        key = f"world_mat_{i}"
        if key not in data:
            raise ValueError(
                f"{cam_path}: field {key} missing ({len(images)} images in {image_dir})"
            )
        P = np.asarray(data[key], dtype=np.float64)
        if P.shape not in ((3, 4), (4, 4)) or not np.isfinite(P).all():
            raise ValueError(
                f"{cam_path}: field {key} must be a finite 3 x 4 or 4 x 4 projection; "
                f"got shape {P.shape}"
            )
        try:
            K, R, t = decompose_projection(P)
        except ValueError as err:
            raise ValueError(f"{cam_path}: field {key}: {err}") from err
        if integer_pixel_centers:
            K[0, 2] += 0.5
            K[1, 2] += 0.5
        views.append(
            CaptureView(
                name=image.stem,
                image_path=image,
                K=K,
                R=R,
                t=t,
                image_size=image_size_of(image),
                mask_path=mask,
            )
        )
    box = None
    if "scale_mat_0" in data:
        S = np.asarray(data["scale_mat_0"], dtype=np.float64)
        if S.shape != (4, 4) or not np.isfinite(S).all() or not S[0, 0] > 0:
            raise ValueError(
                f"{cam_path}: field scale_mat_0 must be a finite 4 x 4 similarity with a "
                f"positive scale; got shape {S.shape}"
            )
        box = (S[:3, 3].copy(), 2.0 * float(S[0, 0]))
    return CaptureScene(
        name=root.name,
        source="dtu",
        views=views,
        up=estimate_up([v.R for v in views]),
        box=box,
    )
