"""Trilinear sampling of volumes at frustum grids, batched over volumes and views.

Third stage of the data path: cameras -> frustum grid -> **sampling** -> projection.

Convention:
    ``grid_sample`` with ``mode="bilinear"`` (trilinear on 5-D input), ``align_corners=False``
    and ``padding_mode="zeros"``: a volume is zero outside its box. Grid coordinates are
    ``(x, y, z)`` and index the volume's ``(W, H, D)`` axes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from persp3d._checks import check_shape, check_tensor

__all__ = ["check_volume", "sample_volume"]


def check_volume(volume: object, name: str = "volume") -> dict[str, int]:
    """Validate a ``(B, C, D, H, W)`` floating-point, finite volume; return its sizes."""
    check_tensor(volume, name)
    if volume.ndim != 5:  # type: ignore[union-attr]
        raise ValueError(
            f"{name} must be (B, C, D, H, W); got shape {tuple(volume.shape)}"  # type: ignore[union-attr]
        )
    sizes = check_shape(volume, "B C D H W", name)  # type: ignore[arg-type]
    if min(sizes.values()) < 1:
        raise ValueError(
            f"{name} must be non-empty (B, C, D, H, W); got shape {tuple(volume.shape)}"
        )  # type: ignore[union-attr]
    if not bool(torch.isfinite(volume.detach()).all()):  # type: ignore[union-attr]
        raise ValueError(f"{name} holds NaN or infinite values")
    return sizes


def sample_bcv(volume: torch.Tensor, grid: torch.Tensor, per_volume: bool) -> torch.Tensor:
    """Trilinear samples laid out ``(B, C, V, X, Y, Z)`` (no validation; internal).

    Args:
        volume: ``(B, C, D, H, W)``.
        grid: ``(V, X, Y, Z, 3)`` shared by all volumes, or ``(B, V, X, Y, Z, 3)``; e.g.
            ``(X, Y, Z) = (Dg, h, w)`` or ``(h, w, Dg)``.
        per_volume: whether ``grid`` has the leading ``B``.
    """
    B, C = volume.shape[:2]
    V, Dg, h, w = grid.shape[-5:-1]  # any three output axes after V
    if per_volume:
        out = F.grid_sample(
            volume,
            grid.reshape(B, V * Dg, h, w, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (B, C, V*Dg, h, w)
    else:
        # Shared views: fold the batch into channels so one grid serves every volume.
        out = F.grid_sample(
            volume.reshape(1, B * C, *volume.shape[2:]),
            grid.reshape(1, V * Dg, h, w, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (1, B*C, V*Dg, h, w)
    return out.reshape(B, C, V, Dg, h, w)


def sample_volume(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample volumes trilinearly along frustum grids.

    Args:
        volume: ``(B, C, D, H, W)``.
        grid: ``(Dg, h, w, 3)`` (one view), ``(V, Dg, h, w, 3)`` (views shared by every volume)
            or ``(B, V, Dg, h, w, 3)`` (each volume its own views), as made by
            :func:`persp3d.frustum_grid`.

    Returns:
        ``(B, C, Dg, h, w)`` for a single view, else ``(B, V, C, Dg, h, w)``.

    Convention: see the module docstring; outside the box the volume is 0.

    Raises:
        ValueError: a bad shape, a grid for another number of volumes, or NaN / infinite
            values in ``volume`` or ``grid``.
    """
    sizes = check_volume(volume)
    check_tensor(grid, "grid")
    if not bool(torch.isfinite(grid.detach()).all()):
        raise ValueError("grid holds NaN or infinite coordinates")
    if grid.shape[-1] != 3 or grid.ndim not in (4, 5, 6):
        raise ValueError(
            "grid must be (Dg, h, w, 3), (V, Dg, h, w, 3) or (B, V, Dg, h, w, 3); "
            f"got shape {tuple(grid.shape)}"
        )
    if grid.ndim == 6 and grid.shape[0] != sizes["B"]:
        raise ValueError(
            f"grid has {grid.shape[0]} volumes' views but volume has B={sizes['B']}; "
            "use a (V, Dg, h, w, 3) grid to share views"
        )
    single = grid.ndim == 4
    if single:
        grid = grid.unsqueeze(0)
    grid = grid.to(device=volume.device, dtype=volume.dtype)
    out = sample_bcv(volume, grid, per_volume=grid.ndim == 6)  # (B, C, V, Dg, h, w)
    if single:
        return out[:, :, 0]
    return out.permute(0, 2, 1, 3, 4, 5)
