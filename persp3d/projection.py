"""Projections of volumes into silhouettes: max, absorption and a smooth maximum.

Last stage of the data path: cameras -> frustum grid -> sampling -> **projection** -> loss.
``project`` samples each camera's frustum (see :mod:`persp3d.grids`) and reduces along
depth. By default a fused kernel (:mod:`persp3d.kernels`) walks each ray once, computing
sample positions on the fly; the pure-PyTorch reference path, the fallback, never holds the
``(B, V, C, D, h, w)`` samples either: it walks the depth in chunks, and its backward passes
recompute what they need. ``"smooth"`` always runs on the reference path.

Modes, for the samples ``o_1 .. o_D`` of one ray (nearest first):
    * ``"max"``: ``max_i o_i`` (Perspective Transformer Nets). Gradients equal those of
      ``amax`` on the full sample tensor, which splits the gradient evenly between tied
      maxima; without ties the gradient reaches only the sample that holds the maximum, so
      the backward pass re-samples one point per ray.
    * ``"absorption"``: ``1 - prod_i (1 - o_i)``, the probability that the ray is stopped when
      each sample stops it independently with probability ``o_i`` (differentiable ray
      consistency). **Step-size dependence:** each *sample* is one trial, so the result
      depends on ``D``: a segment of constant occupancy ``o`` covered by ``n`` samples gives
      ``1 - (1 - o)^n``, and doubling ``D`` makes the same volume more opaque. Keep ``D`` fixed
      between training and evaluation, or read ``o`` as a per-sample opacity.
    * ``"smooth"``: the softmax-weighted mean ``sum_i o_i softmax(o / T)_i`` with temperature
      ``T``; it lies between the mean and the max of the samples and tends to ``"max"`` as
      ``T -> 0``.

Convention: volumes ``(B, C, D, H, W)`` in the box's ``grid_sample`` axes; cameras ``(V,)``
shared by every volume or ``(B, V)`` per volume; silhouettes ``(B, V, C, h, w)``, row 0 at
the top (see :mod:`persp3d.cameras`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from persp3d.cameras import Cameras
from persp3d.grids import Frustum
from persp3d.kernels import FUSED_MODES, fused_project, fused_unavailable_reason
from persp3d.sampling import check_volume, sample_bcv
from persp3d.volume import VolumeBox

__all__ = ["BACKENDS", "BACKEND_ENV", "MODES", "naive_project", "project", "resolve_backend"]

MODES = ("max", "absorption", "smooth")
BACKENDS = ("auto", "fused", "reference", "naive")
# Environment variable naming the backend that backend="auto" stands for.
BACKEND_ENV = "PERSP3D_BACKEND"

# Elements of samples held at once by the chunked paths (8 MiB of float32).
DEFAULT_CHUNK_ELEMENTS = 1 << 21


def project(
    volume: torch.Tensor,
    cameras: Cameras,
    box: VolumeBox | None = None,
    depth_samples: int = 64,
    out_size: int | Sequence[int] | None = None,
    mode: str = "max",
    *,
    sampling: str = "depth",
    near: float | torch.Tensor | None = None,
    far: float | torch.Tensor | None = None,
    temperature: float = 0.05,
    chunk_size: int | None = None,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """Project volumes into the views of cameras.

    Args:
        volume: ``(B, C, D, H, W)`` occupancy (any float dtype), filling ``box``.
        cameras: ``Cameras`` of batch shape ``(V,)`` (shared by all volumes), ``(B, V)`` (per
            volume) or ``()`` (one view).
        box: the volume's world box (default ``VolumeBox()``, the cube ``[-0.5, 0.5]^3``).
        depth_samples: samples per ray.
        out_size: ``(h, w)`` of the silhouettes (default the cameras' ``image_size``).
        mode: ``"max"``, ``"absorption"`` or ``"smooth"`` (see the module docstring).
        sampling: ``"depth"`` or ``"disparity"`` spacing of the depth samples.
        near, far: depth bounds (default: the box's bounding sphere per camera).
        temperature: temperature of ``"smooth"``.
        chunk_size: depth samples per chunk of the reference path (default: about 2M
            samples at a time).
        backend: which implementation runs (all give the same values and gradients):

            * ``"auto"`` (default): the fused kernel when one can run the call, else the
              reference path; the environment variable ``PERSP3D_BACKEND`` (``auto``,
              ``fused``, ``reference`` or ``naive``) replaces this choice globally.
            * ``"fused"``: the fused ray-walking kernel (:mod:`persp3d.kernels`): numba on
              the CPU for float32/float64, Triton on CUDA. It walks each ray once, computing
              positions from the cameras and keeping a running max (and its argmax) or
              transmittance, and never holds the frustum grid or the samples. Modes
              ``"max"`` and ``"absorption"``; raises if no kernel can run the call.
            * ``"reference"``: chunked pure PyTorch (the reference and the fallback).
            * ``"naive"``: the full grid through ``grid_sample``, then a reduction.

            ``"auto"`` picks ``"fused"`` for ``"max"`` and ``"absorption"`` on CPU
            float32/float64 tensors when numba imports and on CUDA tensors when Triton
            imports; ``"smooth"``, other dtypes and other devices use ``"reference"``
            (also when ``PERSP3D_BACKEND=fused``). The first fused call of a process loads
            (or, once per installation, compiles) the numba kernels.
        validate: check that ``volume`` is an occupancy in ``[0, 1]`` (one min/max pass over
            it) and keep the silhouettes in ``[0, 1]``: trilinear weights summing to
            ``1 + 1.2e-7`` in float32 would otherwise let a binary volume project to
            ``1 + 1.2e-7``; the values are clamped, the gradients pass unchanged.
            ``validate=False`` skips both, for callers that know their volume (or project
            values that are not occupancies).

    Returns:
        ``(B, V, C, h, w)`` silhouettes, differentiable with respect to ``volume`` and to the
        cameras' ``K``, ``R``, ``t``.

    Raises:
        ValueError: a bad shape, mode, backend, size or sample count, non-finite values, or
            (``validate``) occupancy outside ``[0, 1]``.
    """
    if validate:
        _check_occupancy(volume)
    _check_output_size(volume, cameras, out_size, depth_samples, backend)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if mode == "smooth" and not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature!r}")
    frustum, per_volume = _prepare(
        volume, cameras, box, depth_samples, out_size, sampling, near, far
    )
    backend = resolve_backend(backend, mode, volume.device, volume.dtype)
    if backend == "fused":
        out = fused_project(
            volume,
            frustum.origins.reshape(-1, 3),  # (G, 3), G = V or B * V
            frustum.directions.reshape(-1, *frustum.directions.shape[-3:]),  # (G, h, w, 3)
            frustum.depths.reshape(-1, frustum.depth_samples),  # (G, D)
            per_volume,
            mode,
        )  # (B, C, V, h, w)
    elif backend == "naive":
        out = _naive(volume, frustum, per_volume, mode, temperature)
    else:
        chunk = _chunk_size(volume, frustum, chunk_size)
        needs_grad = torch.is_grad_enabled() and (
            volume.requires_grad
            or frustum.origins.requires_grad
            or frustum.directions.requires_grad
            or frustum.depths.requires_grad
        )
        if mode == "max":
            out = _max_reference(volume, frustum, per_volume, chunk, needs_grad)
        elif mode == "absorption":
            out = _absorption_reference(volume, frustum, per_volume, chunk, needs_grad)
        else:
            out = _smooth_reference(volume, frustum, per_volume, chunk, temperature, needs_grad)
    if validate:
        out = _clamp_unit(out)
    return out.permute(0, 2, 1, 3, 4)  # (B, C, V, h, w) -> (B, V, C, h, w)


# Largest number of elements an output or a naive sample tensor may hold (8 GiB of float32):
# a gigantic out_size is refused here, with its size, before it reaches the allocator.
MAX_ELEMENTS = 1 << 31


def _check_output_size(volume, cameras, out_size, depth_samples, backend) -> None:
    """``ValueError`` when the silhouettes (or the naive path's samples) would be gigantic."""
    from persp3d._checks import check_image_size

    if not isinstance(volume, torch.Tensor) or volume.ndim != 5 or not isinstance(cameras, Cameras):
        return  # the shape and type checks name these
    h, w = check_image_size(out_size if out_size is not None else cameras.image_size, "out_size")
    B, C = volume.shape[:2]
    views = cameras.batch_shape.numel() if cameras.ndim else 1
    if cameras.ndim == 2:
        views //= max(1, cameras.batch_shape[0])
    n = B * C * views * h * w
    if (
        backend == "naive"
        and isinstance(depth_samples, int)
        and not isinstance(depth_samples, bool)
    ):
        n *= max(1, depth_samples)
    if n > MAX_ELEMENTS:
        raise ValueError(
            f"out_size {(h, w)} for {B} volumes x {C} channels x {views} views needs {n:,} "
            f"elements ({n * volume.element_size() / 2**30:.0f} GiB), more than the "
            f"{MAX_ELEMENTS:,} persp3d allows in one call; project fewer views or smaller images"
        )


def _check_occupancy(volume: object) -> None:
    """``ValueError`` unless ``volume`` (a float tensor) holds values in ``[0, 1]``."""
    if not isinstance(volume, torch.Tensor) or not volume.is_floating_point():
        return  # check_volume names the type error
    if volume.numel() == 0:
        return
    lo, hi = torch.aminmax(volume.detach())
    lo, hi = float(lo), float(hi)
    if lo != lo or hi != hi:
        return  # NaN: check_volume says so
    if not (lo >= 0.0 and hi <= 1.0):
        raise ValueError(
            f"volume must be an occupancy in [0, 1]; got values in [{lo:.4g}, {hi:.4g}] "
            "(apply torch.sigmoid to logits, or pass validate=False to project other values)"
        )


def _clamp_unit(out: torch.Tensor) -> torch.Tensor:
    """``out`` clamped to ``[0, 1]`` in value, with the gradient of ``out`` (straight through)."""
    clamped = out.clamp(0.0, 1.0)
    if not out.requires_grad:
        return clamped
    return out + (clamped - out).detach()


def naive_project(
    volume: torch.Tensor,
    cameras: Cameras,
    box: VolumeBox | None = None,
    depth_samples: int = 64,
    out_size: int | Sequence[int] | None = None,
    mode: str = "max",
    **kwargs,
) -> torch.Tensor:
    """The baseline: ``grid_sample`` on the full frustum grid, then ``amax`` (or the mode's
    reduction) along depth. Same arguments and result as :func:`project`."""
    return project(volume, cameras, box, depth_samples, out_size, mode, backend="naive", **kwargs)


# -- dispatch ------------------------------------------------------------------------------
def resolve_backend(backend: str, mode: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that runs a call: ``"fused"``, ``"reference"`` or ``"naive"``.

    ``"auto"`` reads ``PERSP3D_BACKEND`` (default ``auto``), then picks ``"fused"`` when a
    fused kernel supports ``mode``, ``device`` and ``dtype``, else ``"reference"``. An
    explicit ``"fused"`` raises ``ValueError`` for modes the kernels lack and
    ``RuntimeError`` when no kernel can run on ``device``/``dtype``.
    """
    if backend == "auto":
        forced = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
        if forced not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV} must be one of {BACKENDS}; got {forced!r}")
        if forced in ("reference", "naive"):
            return forced
        if mode not in FUSED_MODES:
            return "reference"
        if forced == "auto":
            return "fused" if fused_unavailable_reason(device, dtype) is None else "reference"
        backend = forced
    if backend == "fused":
        if mode not in FUSED_MODES:
            raise ValueError(
                f"backend 'fused' supports modes {FUSED_MODES}, not {mode!r}; "
                "use backend='reference' (or 'auto')"
            )
        reason = fused_unavailable_reason(device, dtype)
        if reason is not None:
            raise RuntimeError(f"backend 'fused' cannot run this call: {reason}")
    return backend


# -- preparation ---------------------------------------------------------------------------
def _prepare(volume, cameras, box, depth_samples, out_size, sampling, near, far):
    sizes = check_volume(volume)
    if not isinstance(cameras, Cameras):
        raise TypeError(f"cameras must be persp3d.Cameras; got {type(cameras).__name__}")
    if cameras.ndim == 0:
        cameras = cameras.unsqueeze(0)
    if cameras.ndim > 2:
        raise ValueError(
            f"cameras must have batch shape (V,) or (B, V); got {tuple(cameras.batch_shape)}"
        )
    per_volume = cameras.ndim == 2
    if per_volume and cameras.batch_shape[0] != sizes["B"]:
        raise ValueError(
            f"cameras of batch shape {tuple(cameras.batch_shape)} give views for "
            f"{cameras.batch_shape[0]} volumes but volume has B={sizes['B']}"
        )
    if cameras.device != volume.device or cameras.dtype != volume.dtype:
        cameras = cameras.to(device=volume.device, dtype=volume.dtype)
    frustum = Frustum(cameras, depth_samples, box, out_size, sampling, near, far)
    return frustum, per_volume


def _chunk_size(volume: torch.Tensor, frustum: Frustum, chunk_size: int | None) -> int:
    D = frustum.depth_samples
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
        return min(chunk_size, D)
    B, C = volume.shape[:2]
    h, w = frustum.out_size
    views = frustum.batch_shape.numel() // (B if frustum.origins.ndim == 3 else 1)
    per_depth = B * C * views * h * w
    return max(1, min(D, DEFAULT_CHUNK_ELEMENTS // max(per_depth, 1)))


def _chunks(D: int, chunk: int):
    for start in range(0, D, chunk):
        yield start, min(D, start + chunk)


def _sampler(volume: torch.Tensor, frustum: Frustum, per_volume: bool) -> Callable:
    def sample(start: int, stop: int) -> torch.Tensor:
        grid = frustum.grid(start, stop, depth_last=True)  # (*batch, h, w, Dc, 3)
        return sample_bcv(volume, grid, per_volume)  # (B, C, V, h, w, Dc)

    return sample


# -- naive ---------------------------------------------------------------------------------
def _naive(volume, frustum, per_volume, mode, temperature):
    samples = sample_bcv(volume, frustum.grid(), per_volume)  # (B, C, V, D, h, w)
    if mode == "max":
        return samples.amax(dim=3)
    if mode == "absorption":
        return 1.0 - torch.prod(1.0 - samples, dim=3)
    weights = torch.softmax(samples / temperature, dim=3)
    return (samples * weights).sum(dim=3)


# -- max -----------------------------------------------------------------------------------
def _running_max(sample, D, chunk, with_ties: bool):
    """Max over depth, its first index and the number of samples equal to it."""
    vmax = index = count = None
    with torch.no_grad():
        for start, stop in _chunks(D, chunk):
            s = sample(start, stop)  # (B, C, V, h, w, Dc)
            cmax, cidx = s.max(dim=-1)
            cidx = cidx + start
            if with_ties:
                ccount = (s == cmax.unsqueeze(-1)).sum(dim=-1, dtype=torch.int32)
            if vmax is None:
                vmax, index = cmax, cidx
                if with_ties:
                    count = ccount
                continue
            greater = cmax > vmax
            if with_ties:
                equal = cmax == vmax
                count = torch.where(greater, ccount, torch.where(equal, count + ccount, count))
            index = torch.where(greater, cidx, index)
            vmax = torch.maximum(vmax, cmax)
    return vmax, index, count


def _sample_at_index(volume, frustum, index, per_volume):
    """Differentiable samples at one depth index per ray: index ``(B, C, V, h, w)``."""
    B, C, V, h, w = index.shape
    if per_volume:
        grid = frustum.grid_at(index.permute(0, 2, 1, 3, 4))  # (B, V, C, h, w, 3)
        grid = grid.permute(0, 2, 1, 3, 4, 5)  # (B, C, V, h, w, 3)
    else:
        grid = frustum.grid_at(index.reshape(B * C, V, h, w).transpose(0, 1))  # (V, BC, h, w, 3)
        grid = grid.transpose(0, 1)  # (BC, V, h, w, 3)
    out = torch.nn.functional.grid_sample(
        volume.reshape(B * C, 1, *volume.shape[2:]),
        grid.reshape(B * C, V, h, w, 3),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (BC, 1, V, h, w)
    return out.reshape(B, C, V, h, w)


def _max_reference(volume, frustum, per_volume, chunk, needs_grad):
    sample = _sampler(volume, frustum, per_volume)
    D = frustum.depth_samples
    vmax, index, count = _running_max(sample, D, chunk, with_ties=needs_grad)
    if not needs_grad:
        return vmax
    single = _sample_at_index(volume, frustum, index, per_volume)  # (B, C, V, h, w)
    # Tied maxima: amax splits the gradient evenly between them. Ties at 0 need no care when
    # the volume has no exact zeros: such samples lie outside the box, where every gradient
    # is zero, as it is for the single sample chosen.
    tied = count > 1
    if not bool((volume.detach() == 0).any()):
        tied &= vmax != 0
    if not bool(tied.any()):
        return single
    rays = tied.nonzero(as_tuple=True)  # 5 x (n,) indices (b, c, v, j, i)
    tie_values = _tied_ray_means(volume, frustum, per_volume, rays, vmax[rays], chunk)
    return torch.index_put(single, rays, tie_values)


def _tied_ray_means(volume, frustum, per_volume, rays, ray_max, chunk):
    """Differentiable mean of the samples equal to the maximum, for the rays with ties.

    Only these rays are re-sampled (all their depths), one (volume, channel) at a time, in
    checkpointed blocks, so the cost follows the number of tied rays.
    """
    b, c, v, j, i = rays
    grid = frustum.ray_grid((b, v, j, i) if per_volume else (v, j, i))  # (n, D, 3)
    D = grid.shape[1]
    tol = 8 * torch.finfo(volume.dtype).eps
    C = volume.shape[1]
    group = b * C + c
    out = torch.zeros_like(ray_max)
    block = max(1, (DEFAULT_CHUNK_ELEMENTS // 4) // D)

    def block_means(g: torch.Tensor, vol: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        s = torch.nn.functional.grid_sample(
            vol, g[None, :, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=False
        )[0, 0, :, :, 0]  # (m, D)
        # Exact ties, as amax sees them; a ray whose re-sampled values miss its maximum by
        # rounding (a different grid_sample code path) falls back to a few-ulp tolerance.
        tied = s == top[:, None]
        near = s >= (top - tol * top.abs().clamp_min(1.0))[:, None]
        tied = torch.where(tied.any(-1, keepdim=True), tied, near)
        return (s * tied).sum(-1) / tied.sum(-1).clamp_min(1)

    volumes = volume.reshape(-1, 1, *volume.shape[2:])  # (B*C, 1, D, H, W)
    for key in torch.unique(group).tolist():
        members = (group == key).nonzero(as_tuple=True)[0]
        for start in range(0, members.numel(), block):
            sel = members[start : start + block]
            means = checkpoint(
                block_means, grid[sel], volumes[key : key + 1], ray_max[sel], use_reentrant=False
            )
            out = out.index_put((sel,), means)
    return out


# -- absorption and smooth -----------------------------------------------------------------
def _absorption_reference(volume, frustum, per_volume, chunk, needs_grad):
    sample = _sampler(volume, frustum, per_volume)
    D = frustum.depth_samples
    if not needs_grad:
        with torch.no_grad():
            transmittance = None
            for start, stop in _chunks(D, chunk):
                t = torch.prod(1.0 - sample(start, stop), dim=-1)
                transmittance = t if transmittance is None else transmittance * t
        return 1.0 - transmittance

    def chunk_transmittance(start: int, stop: int, *_inputs) -> torch.Tensor:
        return torch.prod(1.0 - sample(start, stop), dim=-1)  # (B, C, V, h, w)

    inputs = (volume, frustum.origins, frustum.directions, frustum.depths)
    parts = [
        checkpoint(chunk_transmittance, start, stop, *inputs, use_reentrant=False)
        for start, stop in _chunks(D, chunk)
    ]
    return 1.0 - torch.stack(parts, dim=0).prod(dim=0)


def _smooth_reference(volume, frustum, per_volume, chunk, temperature, needs_grad):
    sample = _sampler(volume, frustum, per_volume)
    D = frustum.depth_samples
    shift, _, _ = _running_max(sample, D, chunk, with_ties=False)  # the ratio ignores the shift
    shift = shift.unsqueeze(-1)

    def chunk_sums(start: int, stop: int, *_inputs) -> torch.Tensor:
        s = sample(start, stop)
        e = torch.exp((s - shift) / temperature)
        return torch.stack([(s * e).sum(dim=-1), e.sum(dim=-1)], dim=0)  # (2, B, C, V, h, w)

    if not needs_grad:
        with torch.no_grad():
            sums = sum(chunk_sums(start, stop) for start, stop in _chunks(D, chunk))
    else:
        inputs = (volume, frustum.origins, frustum.directions, frustum.depths)
        sums = sum(
            checkpoint(chunk_sums, start, stop, *inputs, use_reentrant=False)
            for start, stop in _chunks(D, chunk)
        )
    return sums[0] / sums[1]
