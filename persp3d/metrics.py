"""Metrics for volumes and silhouettes: 3D IoU, 2D IoU / precision / recall / boundary
F-score, and Chamfer distance between surfaces.

Checking sits after projection: volume -> project -> silhouettes -> **metrics** vs ground
truth. Every metric returns per-item values (no reduction) so callers can average over
views, objects or categories as they need.

Inputs are checked where they enter: occupancies and silhouettes must be finite and lie in
``[0, 1]`` (a rounding slack of ``1e-4`` is allowed), so silhouettes stored as 0..255 or
holding NaN raise ``ValueError`` instead of being scored; thresholds lie in ``[0, 1)``; point
sets are finite ``(N, 3)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from persp3d._checks import check_tensor
from persp3d.volume import VolumeBox

__all__ = [
    "boundary_fscore",
    "chamfer_distance",
    "iou_3d",
    "silhouette_scores",
    "volume_surface_points",
]


# Squared distances of float32 coordinates below this stay finite (3.4e38 is float32's max).
_MAX_COORDINATE = 1e18
_SLACK = 1e-4  # rounding allowed outside [0, 1] (trilinear weights, float16 storage)


def _check_unit(x: object, name: str, min_ndim: int = 0) -> torch.Tensor:
    """``x`` as a tensor of values in ``[0, 1]`` (bool and integer 0/1 tensors allowed)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions; got shape {tuple(x.shape)}"
        )
    if x.dtype == torch.bool or x.numel() == 0:
        return x
    if not x.is_floating_point():
        x = x.float()
    detached = x.detach()
    if not bool(torch.isfinite(detached).all()):
        n_nan = int(torch.isnan(detached).sum())
        raise ValueError(
            f"{name} must be finite; got {n_nan} NaN and "
            f"{int(torch.isinf(detached).sum())} infinite values"
        )
    lo, hi = (float(v) for v in torch.aminmax(detached))
    if lo < -_SLACK or hi > 1.0 + _SLACK:
        hint = " (silhouettes stored as 0..255? divide by 255)" if hi > 1.5 else ""
        raise ValueError(
            f"{name} must hold values in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]{hint}"
        )
    return x


def _check_threshold(threshold: object, name: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1); got {threshold!r}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {threshold!r}")
    return float(threshold)


def iou_3d(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of occupancy volumes ``(B, 1, R, R, R)`` -> ``(B,)``.

    ``pred`` is thresholded at ``threshold`` (occupancy, not logits); ``target`` at 0.5.
    Ground truth at another resolution is resampled to ``pred``'s (trilinear, then 0.5).
    Two empty volumes have IoU 1.

    Raises:
        ValueError: a volume is not ``(B, ...)`` with 3 spatial axes, holds values outside
            ``[0, 1]`` or NaN, the batch sizes differ, or ``threshold`` is not in ``[0, 1)``.
    """
    pred = _check_unit(pred, "pred", 4)
    target = _check_unit(target, "target", 4)
    threshold = _check_threshold(threshold)
    if pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"pred and target must hold the same number of volumes; got shapes "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if target.shape[-3:] != pred.shape[-3:]:
        target = F.interpolate(
            target.float(), size=pred.shape[-3:], mode="trilinear", align_corners=False
        )
    p = pred.reshape(pred.shape[0], -1) > threshold
    t = target.reshape(target.shape[0], -1) > 0.5
    inter = (p & t).sum(-1).float()
    union = (p | t).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def silhouette_scores(
    pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5
) -> dict[str, torch.Tensor]:
    """IoU, precision and recall of silhouettes ``(..., H, W)`` -> each ``(...)``.

    Empty prediction and target give 1 for all three.

    Raises:
        ValueError: the shapes differ, a tensor holds values outside ``[0, 1]`` (0..255
            silhouettes) or NaN, or ``threshold`` is not in ``[0, 1)``.
    """
    pred = _check_unit(pred, "pred", 2)
    target = _check_unit(target, "target", 2)
    threshold = _check_threshold(threshold)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have one shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    p = pred > threshold
    t = target > 0.5
    inter = (p & t).sum(dim=(-2, -1)).float()
    union = (p | t).sum(dim=(-2, -1)).float()
    n_p = p.sum(dim=(-2, -1)).float()
    n_t = t.sum(dim=(-2, -1)).float()
    one = torch.ones_like(inter)
    return {
        "iou": torch.where(union > 0, inter / union.clamp_min(1), one),
        "precision": torch.where(
            n_p > 0, inter / n_p.clamp_min(1), torch.where(n_t > 0, 0 * one, one)
        ),
        "recall": torch.where(n_t > 0, inter / n_t.clamp_min(1), one),
    }


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of a boolean mask ``(N, H, W)`` with a 4-neighbour outside the mask."""
    m = mask.float().unsqueeze(1)
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return mask & (eroded[:, 0] < 0.5)


def boundary_fscore(
    pred: torch.Tensor, target: torch.Tensor, tolerance: int = 1, threshold: float = 0.5
) -> torch.Tensor:
    """Boundary F-score of silhouettes ``(..., H, W)`` -> ``(...)``.

    A boundary pixel counts as matched if a boundary pixel of the other mask lies within
    ``tolerance`` pixels (Chebyshev distance), as in the DAVIS benchmark's F measure.

    Raises:
        ValueError: as :func:`silhouette_scores`, or ``tolerance`` is not an int >= 0.
    """
    pred = _check_unit(pred, "pred", 2)
    target = _check_unit(target, "target", 2)
    threshold = _check_threshold(threshold)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have one shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0; got {tolerance!r}")
    if pred.numel() == 0:
        return torch.ones(pred.shape[:-2])
    shape = pred.shape[:-2]
    p = (pred > threshold).reshape(-1, *pred.shape[-2:])
    t = (target > 0.5).reshape(-1, *target.shape[-2:])
    bp, bt = _boundary(p), _boundary(t)
    k = 2 * tolerance + 1
    near_t = F.max_pool2d(bt.float().unsqueeze(1), k, stride=1, padding=tolerance)[:, 0] > 0
    near_p = F.max_pool2d(bp.float().unsqueeze(1), k, stride=1, padding=tolerance)[:, 0] > 0
    n_bp = bp.sum(dim=(-2, -1)).float()
    n_bt = bt.sum(dim=(-2, -1)).float()
    precision = torch.where(
        n_bp > 0, (bp & near_t).sum(dim=(-2, -1)) / n_bp.clamp_min(1), (n_bt == 0).float()
    )
    recall = torch.where(
        n_bt > 0, (bt & near_p).sum(dim=(-2, -1)) / n_bt.clamp_min(1), (n_bp == 0).float()
    )
    f = torch.where(
        precision + recall > 0,
        2 * precision * recall / (precision + recall).clamp_min(1e-12),
        torch.zeros_like(precision),
    )
    return f.reshape(shape)


def volume_surface_points(
    volume: torch.Tensor,
    box: VolumeBox | None = None,
    threshold: float = 0.5,
    n_points: int = 10000,
    seed: int = 0,
) -> torch.Tensor:
    """Points sampled uniformly on the ``threshold`` isosurface of a volume ``(R, R, R)``
    (marching cubes from PyTorch3D) -> ``(n_points, 3)`` world coordinates (empty ``(0, 3)``
    when the surface is empty)."""
    from pytorch3d.ops import sample_points_from_meshes
    from pytorch3d.ops.marching_cubes import marching_cubes
    from pytorch3d.structures import Meshes

    box = box if box is not None else VolumeBox()
    check_tensor(volume, "volume")
    if volume.ndim != 3:
        raise ValueError(f"volume must be (D, H, W); got shape {tuple(volume.shape)}")
    _check_unit(volume, "volume")
    threshold = _check_threshold(threshold)
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be an int >= 1; got {n_points!r}")
    vol = volume.detach().float().cpu()
    if not bool((vol > threshold).any()) or bool((vol > threshold).all()):
        return torch.zeros(0, 3)
    # Pad with empty space so surfaces at the box faces close.
    padded = F.pad(vol, (1, 1, 1, 1, 1, 1), value=0.0)
    verts, faces = marching_cubes(padded[None], isolevel=threshold, return_local_coords=False)
    if len(faces[0]) == 0:
        return torch.zeros(0, 3)
    D, H, W = vol.shape
    # marching_cubes returns (x, y, z) = (W, H, D) voxel indices of the padded volume.
    idx = verts[0] - 1.0
    size = torch.tensor(box.size)
    lo = torch.tensor(box.min)
    res = torch.tensor([W, H, D], dtype=torch.float32)
    points = lo + (idx + 0.5) / res * size
    mesh = Meshes(verts=[points], faces=[faces[0]])
    torch.manual_seed(seed)
    return sample_points_from_meshes(mesh, n_points)[0]


def chamfer_distance(points_a: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance (mean of squared nearest-neighbour distances both ways,
    PyTorch3D's ``chamfer_distance``) between point sets ``(N, 3)`` and ``(M, 3)``.
    Returns ``inf`` when exactly one set is empty and 0 when both are.

    Raises:
        ValueError: a point set is not ``(N, 3)``, holds NaN or infinite coordinates, or
            coordinates of 1e18 or more (their squared distances overflow float32).
    """
    for name, pts in (("points_a", points_a), ("points_b", points_b)):
        check_tensor(pts, name)
        if pts.ndim != 2 or pts.shape[-1] != 3:
            raise ValueError(f"{name} must be (N, 3); got shape {tuple(pts.shape)}")
        if not bool(torch.isfinite(pts.detach()).all()):
            raise ValueError(f"{name} holds NaN or infinite coordinates")
        if len(pts) and float(pts.detach().abs().max()) >= _MAX_COORDINATE:
            raise ValueError(
                f"{name} has coordinates up to {float(pts.detach().abs().max()):.3g}; "
                f"chamfer_distance works in float32 and needs |coordinates| < {_MAX_COORDINATE:.0e}"
            )
    if len(points_a) == 0 or len(points_b) == 0:
        return torch.tensor(0.0 if len(points_a) == len(points_b) else float("inf"))
    from pytorch3d.loss import chamfer_distance as p3d_chamfer

    dist, _ = p3d_chamfer(points_a[None].float(), points_b[None].float())
    return dist
