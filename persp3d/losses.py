"""Losses between projected and ground-truth silhouettes, and the 3D-supervised baseline.

End of the data path: projection -> silhouettes -> **loss**. All silhouette losses take
``(B, V, C, h, w)`` predictions in ``[0, 1]`` (the projections) and targets of the same
shape, and return a scalar averaged over everything. Both are checked where they enter:
finite, and in ``[0, 1]`` up to a rounding slack of ``1e-4`` (``ValueError`` otherwise, e.g.
for silhouettes stored as 0..255); voxel targets likewise, logits only for finiteness.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["silhouette_bce", "silhouette_l2", "soft_iou_loss", "voxel_bce"]

_EPS = 1e-6


_SLACK = 1e-4


def _check_values(x: torch.Tensor, what: str, name: str, unit: bool = True) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: {what} must be a torch.Tensor; got {type(x).__name__}")
    if x.numel() == 0 or x.dtype == torch.bool:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach().float()))
    if lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise ValueError(f"{name}: {what} must be finite; it holds NaN or infinite values")
    if unit and (lo < -_SLACK or hi > 1.0 + _SLACK):
        raise ValueError(f"{name}: {what} must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]")


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str, unit: bool = True) -> None:
    _check_values(pred, "prediction", name, unit)
    _check_values(target, "target", name)
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: prediction and target must have the same shape; got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )


def silhouette_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between silhouettes, the loss of Perspective Transformer Nets."""
    _check_pair(pred, target, "silhouette_l2")
    return F.mse_loss(pred, target.to(pred.dtype))


def silhouette_bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between silhouettes; predictions are clamped to
    ``[1e-6, 1 - 1e-6]`` so saturated projections keep finite gradients."""
    _check_pair(pred, target, "silhouette_bce")
    return F.binary_cross_entropy(pred.clamp(_EPS, 1 - _EPS), target.to(pred.dtype))


def soft_iou_loss(
    pred: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...] = (-2, -1)
) -> torch.Tensor:
    """``1 - sum(p t) / sum(p + t - p t)`` per image (summed over ``dims``), averaged."""
    _check_pair(pred, target, "soft_iou_loss")
    target = target.to(pred.dtype)
    inter = (pred * target).sum(dim=dims)
    union = (pred + target - pred * target).sum(dim=dims)
    return (1.0 - (inter + _EPS) / (union + _EPS)).mean()


def voxel_bce(logits: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of occupancy logits ``(B, 1, R, R, R)`` against ground-truth
    voxels (the 3D-supervised baseline). Voxels at another resolution are resampled with
    trilinear interpolation (``align_corners=False``, the volume convention)."""
    _check_values(voxels, "target", "voxel_bce")
    if logits.ndim != voxels.ndim or logits.shape[:-3] != voxels.shape[:-3]:
        raise ValueError(
            f"voxel_bce: logits and voxels must agree on (B, C); got {tuple(logits.shape)} "
            f"and {tuple(voxels.shape)}"
        )
    if voxels.shape[-3:] != logits.shape[-3:]:
        voxels = F.interpolate(
            voxels.to(logits.dtype), size=logits.shape[-3:], mode="trilinear", align_corners=False
        )
    _check_pair(logits, voxels, "voxel_bce", unit=False)
    return F.binary_cross_entropy_with_logits(logits, voxels.to(logits.dtype))
