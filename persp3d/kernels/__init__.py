"""Fast projection kernels: fused ray walkers for the CPU (numba) and CUDA (Triton).

Projection stage (cameras -> frustum -> sampling -> **projection**). Each kernel walks every
ray once, computing sample positions from the frustum on the fly, sampling trilinearly and
keeping a running max (with the argmax, for an exact backward) or transmittance; neither the
frustum grid nor the samples are ever held. The pure-PyTorch path of
:mod:`persp3d.projection` is the reference and the fallback; :func:`persp3d.project` picks
between them (see its ``backend`` argument). numba and Triton are imported lazily, inside
the functions that need them.

The CPU kernel has a fast path for one volume per camera group (one volume, or per-volume
views of one channel: ``fit_volume`` and training on per-object views): it computes each
ray's geometry in vectorised chunks and skips work that cannot change the result, using a
bound pyramid of the volume (blocks of 4 voxels). **max**: samples in blocks whose bound lies
below the running maximum are skipped; values and gradients (ties included) are exact.
**absorption**: samples in blocks where ``1 - o`` rounds to 1 are not sampled (exact), and a
ray stops once the product of its factors, the smallest left out, falls below the unit
roundoff ``eps`` (``2 ** -24`` in float32, ``2 ** -53`` in float64): the silhouette then
differs from the full product by less than ``eps`` and the derivative with respect to each
sample by less than ``eps`` times the incoming gradient; the backward pass stops at the same
sample, so the gradients are exactly those of the returned values. Several volumes per
camera group (shared views, ``B * C > 1``) take the general path, which computes every sample.
"""

from __future__ import annotations

import torch

__all__ = [
    "FUSED_MODES",
    "fused_available",
    "fused_project",
    "fused_unavailable_reason",
    "warm_up",
]

# Modes the fused kernels implement ("smooth" stays on the reference path).
FUSED_MODES = ("max", "absorption")
_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float64)


def fused_unavailable_reason(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why no fused kernel can project tensors of ``device`` and ``dtype`` (None if one can)."""
    device = torch.device(device)
    if device.type == "cpu":
        if dtype not in _CPU_DTYPES:
            return f"the fused CPU kernels support float32 and float64, not {dtype}"
        from persp3d.kernels import cpu

        return cpu.unavailable_reason()
    if device.type == "cuda":
        if dtype not in _CUDA_DTYPES:
            return f"the fused CUDA kernels support float32 and float64, not {dtype}"
        from persp3d.kernels import triton_kernels

        return triton_kernels.unavailable_reason()
    return f"no fused kernel for device type {device.type!r}"


def fused_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether a fused kernel can project tensors of ``device`` and ``dtype``."""
    return fused_unavailable_reason(device, dtype) is None


def warm_up() -> bool:
    """Compile the fused CPU kernels now (or load them from numba's cache), for float32 and
    float64, instead of on the first call; e.g. once after installing. Returns whether the
    CPU kernels are available."""
    from persp3d.kernels import cpu

    kernels = cpu._load()
    if kernels is None:
        return False
    kernels.warm_up()
    return True


def fused_project(
    volume: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    depths: torch.Tensor,
    per_volume: bool,
    mode: str,
) -> torch.Tensor:
    """Project volumes along frustum rays with the fused kernel of their device.

    Args:
        volume: ``(B, C, D, H, W)``.
        origins: ``(G, 3)`` ray origins (camera centres) in the box's grid coordinates.
        directions: ``(G, h, w, 3)`` per-pixel ray directions scaled to camera depth 1.
        depths: ``(G, Dz)`` sample depths (camera z).
        per_volume: False for views shared by every volume (``G = V``), True for per-volume
            views (``G = B * V``, volume-major).
        mode: ``"max"`` or ``"absorption"``.

    Returns:
        ``(B, C, V, h, w)``, differentiable with respect to all four tensors.

    Convention:
        The sample at depth index ``d`` of pixel ``(j, i)`` of camera ``g`` is
        ``origins[g] + depths[g, d] * directions[g, j, i]`` in ``grid_sample`` coordinates
        ``(x, y, z)``; sampling is trilinear, ``align_corners=False``, zero outside the box.
    """
    if mode not in FUSED_MODES:
        raise ValueError(f"the fused kernels support modes {FUSED_MODES}; got {mode!r}")
    reason = fused_unavailable_reason(volume.device, volume.dtype)
    if reason is not None:
        raise RuntimeError(f"no fused kernel for this call: {reason}")
    if volume.device.type == "cuda":
        from persp3d.kernels.triton_kernels import fused_project_triton

        return fused_project_triton(volume, origins, directions, depths, per_volume, mode)
    from persp3d.kernels.cpu import fused_project_cpu

    return fused_project_cpu(volume, origins, directions, depths, per_volume, mode)
