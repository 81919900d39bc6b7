"""Middlebury multi-view stereo reader: ``<name>_par.txt`` -> :class:`CaptureScene`.

First reader of the capture path: ``*_par.txt`` + images -> :func:`read_middlebury` ->
:func:`persp3d.datasets.captures.import_capture` -> persp3d dataset folder.

The format (the dataset's README, e.g. ``templeSparseRing/README.txt``): the first line is
the number of images, then one line per image
``imgname.png k11 k12 k13 k21 k22 k23 k31 k32 k33 r11 r12 r13 r21 r22 r23 r31 r32 r33 t1 t2 t3``;
"the projection matrix for that image is given by K*[R t]" and "the image origin is
top-left, with x increasing horizontally, y vertically". So ``X_cam = R X_world + t`` with
OpenCV camera axes (+y down, as the top-left origin implies), which is persp3d's.

Pixel centres: the README does not say where a pixel's centre lies. The calibration is a
standard computer-vision one (image origin = top-left pixel, pixel coordinates index pixel
centres, as OpenCV and Bouguet's toolbox write them), so by default ``0.5`` is added to
``cx, cy`` to reach persp3d's convention (pixel centres at ``+0.5``);
``integer_pixel_centers=False`` keeps ``K`` as written. The difference is half a pixel:
below the calibration's own error at the dataset's 640 x 480.

No masks ship. The dataset's README derives silhouettes from the images (the object is lit
on a black background): grey level above 0.19, then a dilation by 10 px and an erosion by
7 px. :func:`persp3d.datasets.captures.import_capture` does this for Middlebury scenes
(``silhouettes="auto"`` -> ``"threshold"``; see :data:`MIDDLEBURY_THRESHOLD`).

Units are the dataset's (metres; the temple is about 10 cm across). The world's up is not
stated; :func:`~persp3d.datasets.formats.scene.estimate_up` takes it from the cameras (the
images' up direction that most views agree on).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from persp3d.datasets.formats.scene import CaptureScene, CaptureView, estimate_up, image_size_of

__all__ = ["MIDDLEBURY_FIELDS", "MIDDLEBURY_THRESHOLD", "read_middlebury"]

MIDDLEBURY_FIELDS = (
    "name",
    *(f"k{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3)),
    *(f"r{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3)),
    "t1",
    "t2",
    "t3",
)
"""The 22 fields of a ``*_par.txt`` camera line."""

MIDDLEBURY_THRESHOLD = {"threshold": 0.19, "dilate": 10, "erode": 7}
"""The silhouette recipe of the dataset's README: grey > 0.19, dilate 10 px, erode 7 px."""


def read_middlebury(
    par_file: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    *,
    integer_pixel_centers: bool = True,
) -> CaptureScene:
    """Read a Middlebury multi-view ``*_par.txt`` and its images.

    Args:
        par_file: the ``<name>_par.txt`` file, or a folder holding exactly one.
        images_dir: where the images are (default: the folder of ``par_file``).
        integer_pixel_centers: ``K`` puts pixel centres at integers (default, see the
            module docstring): ``0.5`` is added to ``cx, cy``.

    Returns:
        A :class:`CaptureScene` named after the file (``templeSR_par.txt`` -> ``templeSR``),
        source ``"middlebury"``, views in the file's order.

    Convention: ``K`` as in :class:`CaptureView` (pixel centres at ``+0.5``); ``R, t``
    world->camera, OpenCV axes, the dataset's world units.

    Raises:
        FileNotFoundError: no such file, or an image it lists is missing.
        ValueError: a malformed line, naming the file, the line and the field.
    """
    path = Path(par_file)
    if path.is_dir():
        found = sorted(path.glob("*_par.txt"))
        if len(found) != 1:
            raise FileNotFoundError(
                f"{path}: expected one *_par.txt in the folder; found {[p.name for p in found]}"
            )
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Middlebury camera file not found")
    image_root = Path(images_dir) if images_dir is not None else path.parent
    try:
        lines = [(n, ln.split()) for n, ln in enumerate(path.read_text().splitlines(), 1)]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from err
    lines = [(n, parts) for n, parts in lines if parts]
    if not lines:
        raise ValueError(f"{path}: empty file; expected the image count on line 1")
    first_no, first = lines[0]
    if len(first) != 1 or not first[0].isdigit():
        raise ValueError(
            f"{path}: line {first_no}: field 'count' must be the number of images; "
            f"got {' '.join(first)!r}"
        )
    count = int(first[0])
    rows = lines[1:]
    if len(rows) != count:
        raise ValueError(
            f"{path}: field 'count' says {count} images but {len(rows)} camera lines follow"
        )
    views = []
    for lineno, parts in rows:
        if len(parts) != len(MIDDLEBURY_FIELDS):
            raise ValueError(
                f"{path}: line {lineno}: expected {len(MIDDLEBURY_FIELDS)} fields "
                f"'name k11..k33 r11..r33 t1 t2 t3'; got {len(parts)}"
            )
        values = []
        for field, token in zip(MIDDLEBURY_FIELDS[1:], parts[1:]):
            try:
                value = float(token)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value):
                raise ValueError(
                    f"{path}: line {lineno}: field {field} is not a finite number ({token!r})"
                )
            values.append(value)
        K = np.array(values[0:9]).reshape(3, 3)
        R = np.array(values[9:18]).reshape(3, 3)
        t = np.array(values[18:21])
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise ValueError(
                f"{path}: line {lineno}: fields r11..r33 are not a rotation "
                f"(R R^T - I up to {np.abs(R @ R.T - np.eye(3)).max():.2g}, "
                f"det {np.linalg.det(R):.3f})"
            )
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-6):
            raise ValueError(
                f"{path}: line {lineno}: fields k11..k33 are not pixel intrinsics "
                "(need k11 > 0, k22 > 0 and a last row 0 0 1)"
            )
        if integer_pixel_centers:
            K[0, 2] += 0.5
            K[1, 2] += 0.5
        name = parts[0]
        image_path = image_root / name
        views.append(
            CaptureView(
                name=Path(name).stem,
                image_path=image_path,
                K=K,
                R=R,
                t=t,
                image_size=image_size_of(image_path),
            )
        )
    if not views:
        raise ValueError(f"{path}: no camera lines")
    scene_name = path.name[: -len("_par.txt")] if path.name.endswith("_par.txt") else path.stem
    return CaptureScene(
        name=scene_name,
        source="middlebury",
        views=views,
        up=estimate_up([v.R for v in views]),
    )
