"""The common scene model every capture reader returns: views (image, intrinsics, pose) in
persp3d's conventions, the capture's up axis, and optional bounds and sparse points.

Foreign capture folder -> reader (``persp3d.datasets.formats.<format>``) -> :class:`CaptureScene`
-> :func:`persp3d.datasets.captures.import_capture` -> persp3d dataset folder.

Convention (DESIGN.md): ``X_cam = R @ X_world + t`` with OpenCV camera axes (+x right,
+y down, +z forward); ``K`` in pixels for the image at full size, image plane
``[0, W] x [0, H]`` with pixel (row j, column i) centred at ``(i + 0.5, j + 0.5)``, so a
centred principal point is ``(W/2, H/2)``. World units and axes are the capture's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CaptureScene",
    "CaptureView",
    "decompose_projection",
    "estimate_up",
    "image_size_of",
]


@dataclass
class CaptureView:
    """One calibrated view of a capture.

    Convention: see the module docstring (persp3d pixel centres at ``+0.5``, OpenCV axes,
    world->camera).
    """

    name: str
    """Unique within the scene (the image file's stem)."""
    image_path: Path
    """The image file."""
    K: np.ndarray
    """``(3, 3)`` float64 pixel intrinsics for the image at full size, persp3d convention
    (image plane ``[0, W] x [0, H]``, pixel centres at ``+0.5``)."""
    R: np.ndarray
    """``(3, 3)`` float64 world->camera rotation, OpenCV axes."""
    t: np.ndarray
    """``(3,)`` float64 translation: ``X_cam = R @ X_world + t``."""
    image_size: tuple[int, int]
    """``(H, W)`` of the image file."""
    mask_path: Path | None = None
    """A mask shipped with the format (white = object), if any."""
    split: str | None = None
    """``"train"``, ``"val"`` or ``"test"`` if the format says so (NeRF json)."""

    def __post_init__(self) -> None:
        self.image_path = Path(self.image_path)
        if self.mask_path is not None:
            self.mask_path = Path(self.mask_path)
        self.K = np.asarray(self.K, dtype=np.float64)
        self.R = np.asarray(self.R, dtype=np.float64)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        for name, arr, shape in (("K", self.K, (3, 3)), ("R", self.R, (3, 3)), ("t", self.t, (3,))):
            if arr.shape != shape:
                raise ValueError(f"view {self.name!r}: {name} must be {shape}; got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"view {self.name!r}: {name} has non-finite values")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def center(self) -> np.ndarray:
        """``(3,)`` camera centre in world coordinates, ``-R^T t``."""
        return -self.R.T @ self.t

    @property
    def projection(self) -> np.ndarray:
        """``(3, 4)`` projection matrix ``K [R | t]`` (persp3d pixel convention)."""
        return self.K @ np.concatenate([self.R, self.t[:, None]], axis=1)


@dataclass
class CaptureScene:
    """A calibrated multi-view capture of one object, in persp3d's camera conventions."""

    name: str
    """The scene's name (default object id on import)."""
    source: str
    """The format it was read from: ``"nerf"``, ``"colmap"``, ``"middlebury"``, ``"dtu"``,
    ``"r2n2"``."""
    views: list[CaptureView]
    """The views, in the format's order."""
    up: np.ndarray
    """``(3,)`` the capture world's up direction (NeRF-synthetic: ``(0, 0, 1)``)."""
    box: tuple[np.ndarray, float] | None = None
    """``(center (3,), side)`` of an axis-aligned cube holding the object, from the format's
    own bounds (DTU ``scale_mat``), or None."""
    points: np.ndarray | None = None
    """``(N, 3)`` sparse world points if the format has them (COLMAP ``points3D``)."""

    def __post_init__(self) -> None:
        self.up = np.asarray(self.up, dtype=np.float64).reshape(-1)
        if self.up.shape != (3,) or not np.isfinite(self.up).all() or not np.any(self.up):
            raise ValueError(f"scene {self.name!r}: up must be a non-zero (3,) vector")
        self.up = self.up / np.linalg.norm(self.up)
        names = [v.name for v in self.views]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"scene {self.name!r}: view names must be unique; repeated {dup}")
        if self.box is not None:
            center = np.asarray(self.box[0], dtype=np.float64).reshape(3)
            side = float(self.box[1])
            if not side > 0:
                raise ValueError(f"scene {self.name!r}: box side must be > 0; got {side}")
            self.box = (center, side)
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)


# -- helpers the readers share ----------------------------------------------------------------
def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file, read from its header.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not an image PIL can read (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            W, H = img.size
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    return int(H), int(W)


def estimate_up(rotations: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """The world's up direction seen by a set of cameras.

    A camera held upright (no roll) has its image x axis horizontal, so the world's up is
    the direction perpendicular to every camera's x axis (``R[0, :]`` in world
    coordinates): the eigenvector of ``sum_v x_v x_v^T`` with the smallest eigenvalue. This
    is exact for any upright rig (a ring, or a cap of views all looking down, where the
    average of the cameras' up vectors would lean toward the cameras). When the x axes do
    not span a plane (every view from one azimuth), the cameras' mean up direction
    (``-R[1, :]``) is used instead. The sign is the one most cameras' up vectors agree
    with, so a few views rotated by 180 degrees in the image plane (Middlebury's
    negative-latitude views) do not flip it.

    Args:
        rotations: ``(V, 3, 3)`` world->camera rotations (OpenCV axes).

    Returns:
        ``(3,)`` unit vector in world coordinates.
    """
    R = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    rights = R[:, 0, :]  # (V, 3) image x axis in world coordinates
    ups = -R[:, 1, :]  # (V, 3) image up in world coordinates
    values, vecs = np.linalg.eigh(rights.T @ rights)  # ascending eigenvalues
    if values[1] > 1e-3 * len(R):
        up = vecs[:, 0]
    else:
        up = np.linalg.eigh(ups.T @ ups)[1][:, -1]
    if np.sum(np.sign(np.round(ups @ up, 12))) < 0:
        up = -up
    return up / np.linalg.norm(up)


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K, R, t`` of a ``3 x 4`` (or ``4 x 4``) projection matrix ``P ~ K [R | t]``.

    RQ decomposition of ``P[:, :3]`` with a positive diagonal of ``K`` and ``det R = +1``
    (``P`` is defined up to scale, so a negative overall scale is removed first), then
    ``K`` is normalised to ``K[2, 2] = 1`` and ``t = K^-1 P[:, 3]`` with the same scale.
    Pixel convention: whatever ``P``'s is (the caller converts).

    Raises:
        ValueError: ``P`` is not finite, has the wrong shape or a singular left 3 x 3 block.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.shape == (4, 4):
        P = P[:3]
    if P.shape != (3, 4) or not np.isfinite(P).all():
        raise ValueError(f"projection matrix must be finite 3 x 4 or 4 x 4; got shape {P.shape}")
    M = P[:, :3]
    det = np.linalg.det(M)
    norm = float(np.abs(M).max())
    if norm == 0.0 or abs(det) < 1e-12 * norm**3:
        raise ValueError("projection matrix has a singular left 3 x 3 block (not K [R | t])")
    if det < 0:  # P and -P project alike; keep the one with det(K R) > 0
        P = -P
        M = P[:, :3]
    flip = np.eye(3)[::-1]  # reverses rows / columns
    Q, U = np.linalg.qr((flip @ M).T)  # M^T flipped = Q U
    K = flip @ U.T @ flip  # upper triangular
    R = flip @ Q.T
    signs = np.diag(np.sign(np.diag(K)))  # make diag(K) positive: K S, S R (S^2 = I)
    K = K @ signs
    R = signs @ R
    t = np.linalg.solve(K, P[:, 3])
    K = K / K[2, 2]
    return K, R, t
