"""``PerspectiveTransformer``: the perspective spatial transformer as an ``nn.Module``.

A thin shell over :func:`persp3d.project` that holds the projection's settings, the way
PyTorch3D's ``VolumeRenderer`` composes a raysampler and a raymarcher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from persp3d._checks import check_image_size
from persp3d.cameras import Cameras
from persp3d.grids import SAMPLINGS, _check_depth_samples
from persp3d.projection import BACKENDS, MODES, project
from persp3d.volume import VolumeBox

__all__ = ["PerspectiveTransformer"]


class PerspectiveTransformer(nn.Module):
    """Project occupancy volumes into silhouettes seen by cameras.

    Args:
        depth_samples: samples per ray.
        out_size: ``(h, w)`` of the silhouettes (default: the cameras' image size).
        mode: ``"max"``, ``"absorption"`` or ``"smooth"`` (see :mod:`persp3d.projection`).
        box: the volumes' world box (default ``VolumeBox()``).
        sampling: ``"depth"`` or ``"disparity"``.
        near, far: depth bounds (default: each camera's view of the box's bounding sphere).
        temperature: temperature of the ``"smooth"`` mode.
        backend: ``"auto"``, ``"fused"``, ``"reference"`` or ``"naive"`` (see :func:`persp3d.project`).

    Shape:
        ``forward(volume (B, C, D, H, W), cameras (V,) or (B, V)) -> (B, V, C, h, w)``.
    """

    def __init__(
        self,
        depth_samples: int = 64,
        out_size: int | Sequence[int] | None = None,
        mode: str = "max",
        box: VolumeBox | None = None,
        sampling: str = "depth",
        near: float | None = None,
        far: float | None = None,
        temperature: float = 0.05,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_depth_samples(depth_samples)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.depth_samples = depth_samples
        self.out_size = None if out_size is None else check_image_size(out_size, "out_size")
        self.mode = mode
        self.box = box if box is not None else VolumeBox()
        self.sampling = sampling
        self.near = near
        self.far = far
        self.temperature = temperature
        self.backend = backend

    def forward(self, volume: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        return project(
            volume,
            cameras,
            self.box,
            self.depth_samples,
            self.out_size,
            self.mode,
            sampling=self.sampling,
            near=self.near,
            far=self.far,
            temperature=self.temperature,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"depth_samples={self.depth_samples}, out_size={self.out_size}, mode={self.mode!r}, "
            f"box={self.box}, sampling={self.sampling!r}"
        )
