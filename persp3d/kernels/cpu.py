"""The fused CPU projection: ``torch.autograd.Function`` wrappers over the numba ray walkers.

Projection stage (cameras -> frustum -> sampling -> **projection**): called by
:func:`persp3d.project` with ``backend="fused"`` (or ``"auto"``) for CPU tensors. numba is
imported lazily, on the first call, which also loads the compiled kernels from numba's cache
next to :mod:`persp3d.kernels._numba_cpu` (about a second) or, the first time, compiles them
(10-20 s for float32 and float64).

The forward pass keeps per ray only its maximum and the depth index of the sample attaining
it (or a tie / miss marker), never the samples; the backward pass re-samples that one point
per ray (tied rays, and absorption, walk their ray again). One-volume absorption
(``NV == 1``, as ``fit_volume`` projects) that needs gradients keeps the factor ``1 - o`` of
each sample it reaches when its ``G * h * w * D`` slots take at most 128 MiB, so that the
backward pass walks each ray without sampling it again; the buffers are reused. The kernels run on
``torch.get_num_threads()`` threads (the caller's and a small pool; the kernels release the
GIL). Each thread accumulates the volume gradient of its own work items, so the backward
pass needs no atomics; the per-block buffers cost at most ``2 * threads`` volumes (capped at
256 MiB).

Performance note: after each parallel op, torch's idle OpenMP threads spin for a few
milliseconds before they sleep, and on a busy machine that spinning takes CPU from these
kernels' threads. ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep at once; on the shared 2-core
test machine it halved the fused forward + backward time and barely changed
``grid_sample``'s. torch's OpenMP runtime reads the variable once, when torch loads, so
``import persp3d`` sets it when torch is not loaded yet (and the environment does not choose
a policy): every entry point that imports persp3d first (the ``persp3d`` command, scripts
that import persp3d before torch) runs at full speed with no variable set. When torch was
imported first without a policy, the first multi-threaded fused call warns once
(:class:`ThreadingWarning`).

Convention:
    Inputs are a :class:`persp3d.Frustum`'s tensors, flattened to ``G`` cameras:
    ``origins (G, 3)``, ``directions (G, h, w, 3)``, ``depths (G, D)``, in ``grid_sample``
    coordinates ``(x, y, z)`` of the box; ``G = V`` for views shared by every volume,
    ``G = B * V`` (volume-major) for per-volume views. Sampling is trilinear with
    ``align_corners=False`` and zeros outside the box, exactly as ``grid_sample``.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.autograd.function import once_differentiable

__all__ = ["ThreadingWarning", "available", "fused_project_cpu", "unavailable_reason"]

MODES = ("max", "absorption")

# Most bytes the backward pass may spend on per-thread copies of the volume gradient.
_GRAD_BUFFER_BYTES = 256 << 20
# Most bytes a one-volume absorption forward pass may keep (one factor per sample slot) to
# spare its backward pass the sampling; larger calls sample again.
_FACTOR_BYTES = 128 << 20

_kernels = None
_import_error: str | None = None


def _load():
    """The numba kernels module, imported (and its kernels compiled or loaded) once."""
    global _kernels, _import_error
    if _kernels is None and _import_error is None:
        try:
            from persp3d.kernels import _numba_cpu
        except ImportError as err:  # pragma: no cover - depends on the environment
            _import_error = f"numba is not importable ({err}); pip install numba"
        else:
            _kernels = _numba_cpu
    return _kernels


def available() -> bool:
    """Whether the fused CPU kernels can run (numba imports)."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False, or None."""
    _load()
    return _import_error


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _reset_pool() -> None:
    """Forget the thread pool (its threads do not survive a fork)."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool)


class ThreadingWarning(RuntimeWarning):
    """torch was imported before persp3d without ``OMP_WAIT_POLICY``: its idle OpenMP
    threads spin and slow the fused CPU kernels on a busy machine."""


_warned_spinning = False


def _warn_spinning_openmp() -> None:
    global _warned_spinning
    import persp3d

    if _warned_spinning or not getattr(persp3d, "_OPENMP_SPINS", False):
        return
    _warned_spinning = True
    warnings.warn(
        "torch was imported before persp3d with OMP_WAIT_POLICY unset: torch's idle OpenMP "
        "threads spin after each op and take the cores the fused projection kernels need "
        "(up to 6x slower on a busy 2-core machine). Import persp3d before torch, or set "
        "OMP_WAIT_POLICY=PASSIVE in the environment before Python starts.",
        ThreadingWarning,
        stacklevel=5,
    )


def _run_threads(kernel, *args) -> None:
    """Run ``kernel(*args, start, step)`` on ``torch.get_num_threads()`` threads, the caller's
    included: thread ``t`` takes rows (or work items) ``t, t + n, t + 2n, ...``. The kernels
    release the GIL, so the threads run in parallel."""
    global _pool, _pool_size
    n = max(1, torch.get_num_threads())
    if n == 1:
        kernel(*args, 0, 1)
        return
    with _pool_lock:
        if _pool is None or _pool_size < n - 1:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="persp3d-kernel")
            _pool_size = n - 1
        pool = _pool
    futures = [pool.submit(kernel, *args, t, n) for t in range(1, n)]
    kernel(*args, 0, n)
    for future in futures:
        future.result()


# Factor buffers given back by backward passes, reused by later forward passes (a fresh
# buffer of tens of MiB costs its page faults again on every call).
_spare_factors: list[torch.Tensor] = []
_spare_lock = threading.Lock()


def _factor_buffer(ctx, slots: int, dtype: torch.dtype) -> torch.Tensor:
    """``(slots,)`` of a spare buffer or a new one, given back when ``ctx`` (the autograd
    node, alive as long as its graph) is freed: never while a backward pass may read it."""
    buffer = None
    with _spare_lock:
        for k, spare in enumerate(_spare_factors):
            if spare.dtype == dtype and spare.numel() >= slots:
                buffer = _spare_factors.pop(k)
                break
    if buffer is None:
        buffer = torch.empty(slots, dtype=dtype)
    weakref.finalize(ctx, _give_back, buffer)
    return buffer[:slots]


def _give_back(buffer: torch.Tensor) -> None:
    with _spare_lock:
        _spare_factors.append(buffer)
        del _spare_factors[:-2]  # keep the two latest


def _numpy(x: torch.Tensor):
    return x.detach().contiguous().numpy()


def _params(depths: torch.Tensor, dtype: torch.dtype):
    """The kernels' ``params``: the early-stop threshold of absorption (the unit roundoff),
    the magnitude below which ``1 - o`` rounds to 1 (half of that), ``-inf``, and whether
    every camera's ``depths (G, Dz)`` ascend (1 or 0)."""
    eps = torch.finfo(dtype).eps / 2  # 2**-24 in float32, 2**-53 in float64
    ascending = float(bool((depths[:, 1:] >= depths[:, :-1]).all()))
    return torch.tensor([eps, eps / 2, -math.inf, ascending], dtype=dtype).numpy()


def _bounds(kernels, packed, dtype: torch.dtype):
    """The bound pyramid of one-volume groups (``NV == 1``; else a dummy)."""
    nb, Dp, Hp, Wp, nv = packed.shape
    if nv != 1:
        return torch.zeros(1, 1, 1, 1, 2, dtype=dtype).numpy()
    S = 1 << kernels.BLOCK_SHIFT
    shape = (nb, -(-Dp // S), -(-Hp // S), -(-Wp // S), 2)
    bnd = torch.empty(shape, dtype=dtype).numpy()
    margin = torch.tensor(16 * torch.finfo(dtype).eps, dtype=dtype).numpy()[()]
    _run_threads(kernels.bounds, packed, bnd, margin)
    return bnd


def _pack(kernels, volume: torch.Tensor, per_volume: bool):
    """``(B, C, D, H, W)`` -> zero-padded channels-last ``(NB, D + 2, H + 2, W + 2, NV)``
    (a NumPy array), on the kernel threads."""
    B, C, D, H, W = volume.shape
    nb, nv = (B, C) if per_volume else (1, B * C)
    packed = torch.empty(nb, D + 2, H + 2, W + 2, nv, dtype=volume.dtype).numpy()
    _run_threads(kernels.pack, _numpy(volume).reshape(nb, nv, D, H, W), packed)
    return packed


class _FusedProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume, origins, directions, depths, n_views, per_volume, mode):
        kernels = _load()
        B, C, D, H, W = volume.shape
        G, h, w = directions.shape[:3]
        V = G // B if per_volume else G
        nv = C if per_volume else B * C
        packed = _pack(kernels, volume, per_volume)
        fsize = torch.tensor([W, H, D], dtype=volume.dtype).numpy()
        out = volume.new_empty(B, V, C, h, w)
        is_max = mode == "max"
        state = torch.empty((G, h, w, nv) if is_max else (1, 1, 1, 1), dtype=torch.int32)
        flags = torch.empty(G * h, dtype=torch.int8)
        geometry = (_numpy(origins), _numpy(directions), _numpy(depths), n_views, C, fsize)
        bnd = _bounds(kernels, packed, volume.dtype)
        slots = G * h * w * depths.shape[1]
        keep = (
            not is_max
            and nv == 1
            and any(ctx.needs_input_grad[:4])
            and slots * volume.element_size() <= _FACTOR_BYTES
        )
        factors = _factor_buffer(ctx, slots, volume.dtype) if keep else volume.new_empty(1)
        _run_threads(
            kernels.forward, packed, *geometry, out.view(-1).numpy(), state.numpy(),
            flags.numpy(), is_max, bnd, _params(depths, volume.dtype), factors.numpy(),
        )  # fmt: skip
        ctx.factors = factors
        ctx.meta = (n_views, per_volume, mode, bool(flags.any()) if is_max else True)
        ctx.save_for_backward(volume, origins, directions, depths, out, state)
        ctx.bounds = bnd
        # The backward pass reads the packed volume again unless max has no tie.
        ctx.packed = packed if (not is_max or ctx.meta[3]) else None
        return out.permute(0, 2, 1, 3, 4)  # (B, C, V, h, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        kernels = _load()
        n_views, per_volume, mode, needs_values = ctx.meta
        volume, origins, directions, depths, out, state = ctx.saved_tensors
        need_vol, need_o, need_dir, need_z = ctx.needs_input_grad[:4]
        need_cam = need_o or need_dir or need_z
        B, C, D, H, W = volume.shape
        G, h, w = directions.shape[:3]
        Dz = depths.shape[1]
        nbc = B * C
        nv = C if per_volume else nbc
        threads = max(1, torch.get_num_threads())
        gout = grad.permute(0, 2, 1, 3, 4)  # (B, V, C, h, w), like out
        gout = gout.to(volume.dtype).contiguous().view(-1).numpy()
        is_max = mode == "max"
        vox = (D + 2) * (H + 2) * (W + 2)
        # Work items: max, one per (row block, volume); absorption, one per row block (all
        # volumes). Each row block has its own copy of the (padded) volume gradients.
        # One-volume absorption interleaves its rows over the blocks, which then cost the
        # same: one block (one gradient buffer, kept in cache) per thread.
        if is_max:
            n_blocks = math.ceil(2 * threads / nbc)
        else:
            n_blocks = threads if nv == 1 else 2 * threads
        budget = _GRAD_BUFFER_BYTES // max(1, nbc * vox * volume.element_size())
        n_blocks = max(1, min(n_blocks, budget))
        gvol = torch.empty(n_blocks, nbc, D + 2, H + 2, W + 2, dtype=volume.dtype).numpy()
        items = n_blocks * nbc if is_max else n_blocks
        cam_shapes = ((items, G, 3), (items, G, Dz), (G, h, w, nv, 3))
        if not need_cam:
            cam_shapes = ((1, 1, 3), (1, 1, 1), (1, 1, 1, 1, 3))
        g_orig, g_depth, g_dir = (volume.new_zeros(shape) for shape in cam_shapes)
        fsize = torch.tensor([W, H, D], dtype=volume.dtype).numpy()
        if ctx.packed is not None:
            packed = ctx.packed
        elif needs_values or need_cam:
            packed = _pack(kernels, volume, per_volume)
        else:  # max without ties: the volume's values are never read
            packed = torch.zeros(1, 1, 1, 1, 1, dtype=volume.dtype).numpy()
        _run_threads(
            kernels.backward, packed, _numpy(origins), _numpy(directions), _numpy(depths),
            n_views, C, nv, fsize, out.view(-1).numpy(), state.numpy(), gout, n_blocks, gvol,
            need_cam, g_orig.numpy(), g_depth.numpy(), g_dir.numpy(), is_max, ctx.bounds,
            _params(depths, volume.dtype), ctx.factors.numpy(),
        )  # fmt: skip
        grad_volume = grad_o = grad_dir = grad_z = None
        if need_vol:
            grad_volume = volume.new_empty(B, C, D, H, W)
            _run_threads(kernels.unpad_sum, gvol, grad_volume.view(nbc, D, H, W).numpy())
        if need_o:
            grad_o = g_orig.sum(0)
        if need_dir:
            grad_dir = g_dir.sum(3)
        if need_z:
            grad_z = g_depth.sum(0)
        return grad_volume, grad_o, grad_dir, grad_z, None, None, None


def fused_project_cpu(
    volume: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    depths: torch.Tensor,
    per_volume: bool,
    mode: str,
) -> torch.Tensor:
    """Project volumes along frustum rays with the fused CPU kernels.

    Args:
        volume: ``(B, C, D, H, W)`` float32 or float64 on the CPU.
        origins: ``(G, 3)`` ray origins (camera centres) in grid coordinates.
        directions: ``(G, h, w, 3)`` per-pixel directions scaled to camera depth 1.
        depths: ``(G, Dz)`` sample depths.
        per_volume: False for views shared by all volumes (``G = V``), True for per-volume
            views (``G = B * V``, volume-major).
        mode: ``"max"`` or ``"absorption"``.

    Returns:
        ``(B, C, V, h, w)``, differentiable with respect to all four tensors: a permuted view
        of a contiguous ``(B, V, C, h, w)`` tensor, the layout :func:`persp3d.project`
        returns.

    Convention: see the module docstring.
    """
    if mode not in MODES:
        raise ValueError(f"the fused CPU kernels support modes {MODES}; got {mode!r}")
    if _load() is None:
        raise RuntimeError(f"the fused CPU backend is unavailable: {_import_error}")
    if torch.get_num_threads() > 1:
        _warn_spinning_openmp()  # stacklevel 5: the caller of persp3d.project
    B = volume.shape[0]
    G = origins.shape[0]
    n_views = G // B if per_volume else G
    dtype = volume.dtype
    origins, directions, depths = (x.to(dtype) for x in (origins, directions, depths))
    return _FusedProjection.apply(volume, origins, directions, depths, n_views, per_volume, mode)
