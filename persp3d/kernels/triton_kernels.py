"""The fused GPU projection: Triton ray walkers for max and absorption, with exact backward
passes, wrapped in a ``torch.autograd.Function``.

Projection stage (cameras -> frustum -> sampling -> **projection**): called by
:func:`persp3d.project` with ``backend="fused"`` (or ``"auto"``) for CUDA tensors. Triton is
imported lazily, on the first call. One program handles ``BLOCK`` rays; each lane walks its
ray once, computing positions from the frustum and keeping a running max with its first
argmax and tie count (or the transmittance). The forward pass stores only that per-ray
state; the backward pass re-samples the argmax sample (tied rays and absorption walk the
ray again) and scatters the volume gradient with atomic adds.

Convention:
    Inputs are a :class:`persp3d.Frustum`'s tensors flattened to ``G`` cameras:
    ``origins (G, 3)``, ``directions (G, h, w, 3)``, ``depths (G, Dz)`` in ``grid_sample``
    coordinates ``(x, y, z)`` of the box; the sample at depth index ``d`` is
    ``origin + depths[d] * direction``. Trilinear sampling follows ``grid_sample``
    (``align_corners=False``, zeros outside the box): ``x = ((g + 1) * W - 1) / 2``.
    Ray ``r`` of the kernels is ``((k * G + g) * h + j) * w + i`` for volume ``k`` of camera
    ``g``'s group (``B * C`` volumes share views, or the ``C`` channels of one volume).
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

__all__ = ["fused_project_triton", "unavailable_reason"]

MODES = ("max", "absorption")
BLOCK = 128
NUM_WARPS = 4
# Ray states (as in persp3d.kernels._numba_cpu): tied maximum, and no sample inside the box.
TIED = -1
MISSED = -2


@functools.cache
def unavailable_reason() -> str | None:
    """Why the Triton kernels cannot run here, or None."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return f"triton is not importable ({err}); it ships with CUDA builds of torch"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def _kernels():
    """The Triton module and its two kernels (imports triton on the first call)."""
    import triton

    from persp3d.kernels import _triton_impl

    return triton, _triton_impl.forward_kernel, _triton_impl.backward_kernel


def _to_rays(x: torch.Tensor, B: int, C: int, per_volume: bool) -> torch.Tensor:
    """``(B, C, V, h, w)`` -> the kernels' ``(NV, G, h, w)`` layout (contiguous)."""
    V, h, w = x.shape[2:]
    if per_volume:
        return x.permute(1, 0, 2, 3, 4).reshape(C, B * V, h, w).contiguous()
    return x.reshape(B * C, V, h, w).contiguous()


def _from_rays(x: torch.Tensor, B: int, C: int, per_volume: bool) -> torch.Tensor:
    """The kernels' ``(NV, G, h, w)`` layout -> ``(B, C, V, h, w)``."""
    G, h, w = x.shape[1:]
    if per_volume:
        return x.reshape(C, B, G // B, h, w).permute(1, 0, 2, 3, 4)
    return x.reshape(B, C, G, h, w)


class _TritonProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume, origins, directions, depths, n_views, per_volume, mode):
        triton, forward_kernel, _ = _kernels()
        B, C, D, H, W = volume.shape
        G, h, w = directions.shape[:3]
        Dz = depths.shape[1]
        nv = C if per_volume else B * C
        vol = volume.detach().contiguous()
        origins, directions, depths = (
            x.detach().contiguous() for x in (origins, directions, depths)
        )
        n_rays = nv * G * h * w
        out = vol.new_empty(nv, G, h, w)
        is_max = mode == "max"
        state = torch.empty((nv, G, h, w) if is_max else (1,), dtype=torch.int32, device=vol.device)
        grid = (triton.cdiv(n_rays, BLOCK),)
        forward_kernel[grid](
            vol,
            origins,
            directions,
            depths,
            out,
            state,
            n_rays,
            nv,
            G,
            h * w,
            n_views,
            Dz,
            D,
            H,
            W,
            IS_MAX=is_max,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
        ctx.meta = (n_views, per_volume, mode)
        ctx.save_for_backward(volume, origins, directions, depths, out, state)
        return _from_rays(out, B, C, per_volume)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        triton, _, backward_kernel = _kernels()
        n_views, per_volume, mode = ctx.meta
        volume, origins, directions, depths, out, state = ctx.saved_tensors
        need_vol, need_o, need_dir, need_z = ctx.needs_input_grad[:4]
        need_cam = need_o or need_dir or need_z
        B, C, D, H, W = volume.shape
        G, h, w = directions.shape[:3]
        Dz = depths.shape[1]
        nv = C if per_volume else B * C
        n_rays = nv * G * h * w
        vol = volume.detach().contiguous()
        grad_rays = _to_rays(grad.to(vol.dtype), B, C, per_volume)  # (NV, G, h, w)
        gvol = torch.zeros_like(vol)
        g_orig = torch.zeros_like(origins) if need_cam else vol.new_zeros(1)
        g_dir = torch.zeros_like(directions) if need_cam else vol.new_zeros(1)
        g_depth = torch.zeros_like(depths) if need_cam else vol.new_zeros(1)
        grid = (triton.cdiv(n_rays, BLOCK),)
        backward_kernel[grid](
            vol,
            origins,
            directions,
            depths,
            out,
            state,
            grad_rays,
            gvol,
            g_orig,
            g_dir,
            g_depth,
            n_rays,
            nv,
            G,
            h * w,
            n_views,
            Dz,
            D,
            H,
            W,
            IS_MAX=mode == "max",
            NEED_CAM=need_cam,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
        return (
            gvol if need_vol else None,
            g_orig if need_o else None,
            g_dir if need_dir else None,
            g_depth if need_z else None,
            None,
            None,
            None,
        )


def fused_project_triton(
    volume: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    depths: torch.Tensor,
    per_volume: bool,
    mode: str,
) -> torch.Tensor:
    """Project volumes along frustum rays with the Triton kernels.

    Args:
        volume: ``(B, C, D, H, W)`` float32 or float64 on a CUDA device.
        origins: ``(G, 3)`` ray origins (camera centres) in grid coordinates.
        directions: ``(G, h, w, 3)`` per-pixel directions scaled to camera depth 1.
        depths: ``(G, Dz)`` sample depths.
        per_volume: False for views shared by all volumes (``G = V``), True for per-volume
            views (``G = B * V``, volume-major).
        mode: ``"max"`` or ``"absorption"``.

    Returns:
        ``(B, C, V, h, w)``, differentiable with respect to all four tensors.

    Convention: see the module docstring.
    """
    if mode not in MODES:
        raise ValueError(f"the Triton kernels support modes {MODES}; got {mode!r}")
    B = volume.shape[0]
    G = origins.shape[0]
    n_views = G // B if per_volume else G
    dtype = volume.dtype
    origins, directions, depths = (x.to(dtype) for x in (origins, directions, depths))
    return _TritonProjection.apply(volume, origins, directions, depths, n_views, per_volume, mode)
