"""The world box of a volume and the one place where world and grid coordinates meet.

Sits between the cameras and the sampler: the frustum grid is laid in world coordinates and
mapped here into ``grid_sample`` coordinates of the box.

Convention:
    A volume tensor is ``(B, C, D, H, W)``; axis W runs along world x, H along world y and
    D along world z, which is exactly the order ``grid_sample`` reads its last dimension in:
    ``grid[..., 0]`` indexes W, ``grid[..., 1]`` H and ``grid[..., 2]`` D. So world
    ``(x, y, z)`` maps to grid ``(x, y, z)`` with no reordering or flip, only an affine map.
    With ``align_corners=False`` grid coordinate -1 is the box's minimum face and +1 its
    maximum face; voxel ``(k, j, i)`` has its centre at
    ``box.min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from persp3d._checks import check_shape

__all__ = ["VolumeBox", "grid_to_world_coords", "world_to_grid_coords", "world_to_grid_vectors"]


class VolumeBox:
    """An axis-aligned box in world coordinates that a volume tensor fills.

    Args:
        center: ``(3,)`` world coordinates ``(x, y, z)`` of the box centre.
        size: edge length (a cube), or ``(3,)`` edge lengths along ``(x, y, z)``.

    ``VolumeBox()`` is the default cube ``[-0.5, 0.5]^3``.
    """

    def __init__(
        self,
        center: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),
        size: float | Sequence[float] | torch.Tensor = 1.0,
    ) -> None:
        center_t = torch.as_tensor(center, dtype=torch.float64).flatten()
        if center_t.numel() != 3:
            raise ValueError(f"center must be (x, y, z); got {tuple(center_t.shape)} values")
        size_t = torch.as_tensor(size, dtype=torch.float64).flatten()
        if size_t.numel() == 1:
            size_t = size_t.expand(3)
        if size_t.numel() != 3:
            raise ValueError(f"size must be a number or (sx, sy, sz); got {size!r}")
        if not bool(torch.isfinite(center_t).all()) or not bool(torch.isfinite(size_t).all()):
            raise ValueError(f"center and size must be finite; got {center!r}, {size!r}")
        if not bool((size_t > 0).all()):
            raise ValueError(f"size must be positive; got {size!r}")
        self.center: tuple[float, float, float] = tuple(center_t.tolist())  # type: ignore[assignment]
        self.size: tuple[float, float, float] = tuple(size_t.tolist())  # type: ignore[assignment]

    # -- geometry -------------------------------------------------------------------------
    @property
    def min(self) -> tuple[float, float, float]:
        """World coordinates of the box's minimum corner."""
        return tuple(c - s / 2 for c, s in zip(self.center, self.size))  # type: ignore[return-value]

    @property
    def max(self) -> tuple[float, float, float]:
        """World coordinates of the box's maximum corner."""
        return tuple(c + s / 2 for c, s in zip(self.center, self.size))  # type: ignore[return-value]

    @property
    def radius(self) -> float:
        """Radius of the circumscribed sphere (half the box diagonal)."""
        return 0.5 * math.sqrt(sum(s * s for s in self.size))

    def voxel_size(self, resolution: int | Sequence[int]) -> tuple[float, float, float]:
        """Edge lengths ``(x, y, z)`` of one voxel for ``resolution`` = R or ``(D, H, W)``."""
        d, h, w = _resolution(resolution)
        return (self.size[0] / w, self.size[1] / h, self.size[2] / d)

    def contains(self, points_world: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` world points -> ``(...)`` bool, True inside the closed box."""
        lo = points_world.new_tensor(self.min)
        hi = points_world.new_tensor(self.max)
        return ((points_world >= lo) & (points_world <= hi)).all(dim=-1)

    def world_to_grid(self, points_world: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` world ``(x, y, z)`` -> ``(..., 3)`` ``grid_sample`` coordinates."""
        return world_to_grid_coords(points_world, self)

    def grid_to_world(self, grid_coords: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` ``grid_sample`` coordinates -> ``(..., 3)`` world ``(x, y, z)``."""
        return grid_to_world_coords(grid_coords, self)

    def voxel_centers(
        self,
        resolution: int | Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """World coordinates of every voxel centre: ``(D, H, W, 3)`` in ``(x, y, z)`` order.

        ``out[k, j, i] = box.min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size``.
        """
        d, h, w = _resolution(resolution)
        lo = self.min
        vx, vy, vz = self.voxel_size((d, h, w))
        xs = lo[0] + (torch.arange(w, device=device, dtype=torch.float64) + 0.5) * vx
        ys = lo[1] + (torch.arange(h, device=device, dtype=torch.float64) + 0.5) * vy
        zs = lo[2] + (torch.arange(d, device=device, dtype=torch.float64) + 0.5) * vz
        z, y, x = torch.meshgrid(zs, ys, xs, indexing="ij")
        return torch.stack([x, y, z], dim=-1).to(dtype)  # (D, H, W, 3)

    # -- plumbing -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[float]]:
        return {"center": list(self.center), "size": list(self.size)}

    @classmethod
    def from_dict(cls, data: dict) -> VolumeBox:
        return cls(center=data["center"], size=data["size"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VolumeBox) and self.center == other.center and self.size == other.size
        )

    def __hash__(self) -> int:
        return hash((self.center, self.size))

    def __repr__(self) -> str:
        size = self.size[0] if len(set(self.size)) == 1 else self.size
        return f"VolumeBox(center={self.center}, size={size})"


def world_to_grid_coords(points_world: torch.Tensor, box: VolumeBox) -> torch.Tensor:
    """Map world points into the ``grid_sample`` coordinates of ``box``.

    Args:
        points_world: ``(..., 3)`` world ``(x, y, z)``.
        box: the volume's box.

    Returns:
        ``(..., 3)`` grid coordinates ``(x, y, z)`` in ``[-1, 1]`` inside the box.

    Convention:
        ``align_corners=False``: -1 and +1 are the box faces, not the outer voxel centres.
        The last dimension keeps the ``(x, y, z)`` order that ``grid_sample`` reads as
        ``(W, H, D)``; no axis is reordered or flipped.
    """
    check_shape(points_world, "... 3", "points_world")
    lo = points_world.new_tensor(box.min)
    size = points_world.new_tensor(box.size)
    return (points_world - lo) * (2.0 / size) - 1.0


def world_to_grid_vectors(vectors_world: torch.Tensor, box: VolumeBox) -> torch.Tensor:
    """The linear part of :func:`world_to_grid_coords`: ``(..., 3)`` world displacements
    (e.g. ray directions) -> ``(..., 3)`` displacements in grid coordinates.

    ``world_to_grid_coords(p + s * d) == world_to_grid_coords(p) + s * world_to_grid_vectors(d)``.
    """
    check_shape(vectors_world, "... 3", "vectors_world")
    return vectors_world * (2.0 / vectors_world.new_tensor(box.size))


def grid_to_world_coords(grid_coords: torch.Tensor, box: VolumeBox) -> torch.Tensor:
    """Inverse of :func:`world_to_grid_coords`: ``(..., 3)`` grid -> ``(..., 3)`` world."""
    check_shape(grid_coords, "... 3", "grid_coords")
    lo = grid_coords.new_tensor(box.min)
    size = grid_coords.new_tensor(box.size)
    return (grid_coords + 1.0) * (size / 2.0) + lo


def _resolution(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(resolution, int):
        resolution = (resolution,) * 3
    res = tuple(int(r) for r in resolution)
    if len(res) != 3 or min(res) < 1:
        raise ValueError(f"resolution must be R or (D, H, W) with sizes >= 1; got {resolution!r}")
    if res[0] * res[1] * res[2] > 1 << 30:
        raise ValueError(f"resolution must hold at most 1024^3 voxels; got {res}")
    return res  # type: ignore[return-value]
