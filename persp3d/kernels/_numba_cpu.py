"""Fused CPU ray walkers (numba): per ray, sample positions from the frustum, trilinear
sampling and a running max / transmittance, and the exact backward passes.

Projection stage (cameras -> frustum -> sampling -> **projection**); called only by
:mod:`persp3d.kernels.cpu`, which lays the tensors out and wraps these functions in a
``torch.autograd.Function``. This module imports numba at import time: import it lazily.

Convention:
    * Geometry is a :class:`persp3d.Frustum` flattened to ``G`` cameras: ``origins (G, 3)``,
      ``dirs (G, h, w, 3)`` and ``depths (G, Dz)`` in ``grid_sample`` coordinates
      ``(x, y, z)`` of the box; the sample at depth index ``d`` of pixel ``(j, i)`` is
      ``origins[g] + depths[g, d] * dirs[g, j, i]``, evaluated as ``o + (z * d)``.
    * Trilinear sampling reproduces ``grid_sample(align_corners=False,
      padding_mode="zeros")`` operation for operation: voxel coordinate
      ``x = ((g + 1) * W - 1) / 2``, corner weights as products of the same factors in the
      same order, summed from 0 in ``grid_sample``'s corner order (tnw, tne, tsw, tse, bnw,
      bne, bsw, bse). Sample values, and therefore maxima and ties, are the same bits as the
      reference path's.
    * Volumes are padded with one voxel of zeros on every side and stored channels-last:
      ``vol (NB, D + 2, H + 2, W + 2, NV)``. The ``NV`` volumes that share one camera
      geometry (``B * C`` for shared views, ``C`` for per-volume views) are contiguous, so
      one sample position serves all of them. Camera ``g`` belongs to group ``g // n_views``.
    * A sample is computed when ``-1 <= x < W`` on every axis (its corners then lie in the
      padded volume). Any other sample is exactly 0 with zero gradient, as in
      ``grid_sample``. Each ray is first clipped analytically to the depths where every
      voxel coordinate lies in ``[-1.5, W + 0.5]``, so most of those samples cost one
      comparison.
    * The kernels are serial and release the GIL; :mod:`persp3d.kernels.cpu` runs them on
      several Python threads, each taking every ``step``-th row (or work item).

One-volume fast path (``NV == 1``: one volume, or per-volume views of one channel, the case
of ``fit_volume`` and of training on per-object views): the walkers consult a bound pyramid
(:func:`bounds`) of blocks of ``2 ** BLOCK_SHIFT`` padded voxels and skip what cannot
matter, computing only the voxel coordinates of such samples:

    * **max**: a sample whose block bound lies strictly below the running maximum cannot
      change the maximum, its first index or the tie count: skipped, values and gradients
      exact (the same bits as before).
    * **absorption**: a sample whose block magnitude bound lies below half an ulp of 1
      (``2 ** -25`` in float32, ``2 ** -54`` in float64; blocks of zeros among them) has
      ``1 - o`` exactly 1: its value is not computed (its gradient still is). A ray stops
      early once the product of its factors ``1 - o``, all in ``[0, 1]`` so far, with the
      smallest one left out, falls below ``eps`` (the unit roundoff: ``2 ** -24`` in
      float32, ``2 ** -53`` in float64). **Tolerance**: the silhouette then differs from
      the full product by less than ``eps`` (absolute) and the derivative with respect to
      each sample's value by less than ``eps`` times the incoming gradient; the backward
      pass stops each ray at the same sample, so the gradients are the exact gradients of
      the values returned. Rays with a factor outside ``[0, 1]`` (values outside
      ``[0, 1]``) never stop early.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "BLOCK_SHIFT",
    "MISSED",
    "TIED",
    "backward",
    "bounds",
    "forward",
    "pack",
    "unpad_sum",
    "warm_up",
]

# Voxels of slack of the analytic ray/box clip; the samples it keeps are checked exactly.
_CLIP_MARGIN = 0.5
# State of a ray whose maximum is tied, and of a ray that computes no sample at all.
TIED = -1
MISSED = -2
# Blocks of the bound pyramid: 2 ** BLOCK_SHIFT padded voxels a side.
BLOCK_SHIFT = 2


def _jit(**options):
    """``njit`` with an on-disk cache when a cache directory can be written, else without."""

    def wrap(fn):
        try:
            return njit(cache=True, fastmath=False, **options)(fn)
        except RuntimeError:  # no writable cache location: compile in memory only
            return njit(cache=False, fastmath=False, **options)(fn)

    return wrap


# -- geometry ------------------------------------------------------------------------------
@_jit()
def _axis_clip(o, d, size, lo, hi):
    """Intersect ``[lo, hi]`` with the depths ``z`` at which the voxel coordinate
    ``((o + z d + 1) size - 1) / 2`` lies in ``[-1 - m, size + m]`` (float64)."""
    a = ((o + 1.0) * size - 1.0) * 0.5
    b = d * size * 0.5
    vmin = -1.0 - _CLIP_MARGIN
    vmax = size + _CLIP_MARGIN
    if abs(b) < 1e-300:
        if a < vmin or a > vmax:
            return 1.0, -1.0
        return lo, hi
    z1 = (vmin - a) / b
    z2 = (vmax - a) / b
    if z1 > z2:
        z1, z2 = z2, z1
    return max(lo, z1), min(hi, z2)


@_jit()
def _ray_clip(ox, oy, oz, dx, dy, dz, fW, fH, fD):
    """Depths ``[zlo, zhi]`` (float64) outside which every sample of the ray is exactly 0."""
    lo, hi = -np.inf, np.inf
    lo, hi = _axis_clip(float(ox), float(dx), float(fW), lo, hi)
    lo, hi = _axis_clip(float(oy), float(dy), float(fH), lo, hi)
    lo, hi = _axis_clip(float(oz), float(dz), float(fD), lo, hi)
    return lo, hi


@_jit()
def _axis(g, size_f, one, half):
    """``grid_sample``'s voxel coordinate of grid coordinate ``g`` along one axis:
    ``(computed, floor index, weight of the floor corner, weight of the ceil corner)``."""
    x = ((g + one) * size_f - one) * half  # == (...) / 2 exactly
    inside = x >= -one and x < size_f
    x0 = np.floor(x) if inside else x - x
    return inside, int(x0), (x0 + one) - x, x - x0


@_jit()
def _geometry(ox, oy, oz, dx, dy, dz, z, fW, fH, fD, one, half):
    """One sample: ``(computed, xi, yi, zi, ax0, ax1, ay0, ay1, az0, az1)``, with ``xi`` the
    floor voxel index along x (``-1 <= xi < W``) and ``ax0``, ``ax1`` the weights of the
    floor and ceil corners, formed as ``grid_sample`` forms them."""
    inx, xi, ax0, ax1 = _axis(ox + z * dx, fW, one, half)
    iny, yi, ay0, ay1 = _axis(oy + z * dy, fH, one, half)
    inz, zi, az0, az1 = _axis(oz + z * dz, fD, one, half)
    return inx and iny and inz, xi, yi, zi, ax0, ax1, ay0, ay1, az0, az1


@_jit()
def _walk(origins, dirs, depths, g, j, i, fsize, Hp, Wp, base, wts, didx):
    """Fill the sample table of one ray; returns ``(n, n_zero)``.

    ``base[q]`` is the padded flat voxel index of the floor corner of the ``q``-th computed
    sample, ``wts[q]`` its eight corner weights in ``grid_sample``'s order and ``didx[q]``
    its depth index; ``n_zero`` samples were not computed (they are exactly 0).
    """
    fW, fH, fD = fsize[0], fsize[1], fsize[2]
    one = fW / fW
    half = one / (one + one)
    ox, oy, oz = origins[g, 0], origins[g, 1], origins[g, 2]
    dx, dy, dz = dirs[g, j, i, 0], dirs[g, j, i, 1], dirs[g, j, i, 2]
    zlo, zhi = _ray_clip(ox, oy, oz, dx, dy, dz, fW, fH, fD)
    n = 0
    n_zero = 0
    for d in range(depths.shape[1]):
        z = depths[g, d]
        if z < zlo or z > zhi:
            n_zero += 1
            continue
        inside, xi, yi, zi, ax0, ax1, ay0, ay1, az0, az1 = _geometry(
            ox, oy, oz, dx, dy, dz, z, fW, fH, fD, one, half
        )
        if not inside:
            n_zero += 1
            continue
        base[n] = ((zi + 1) * Hp + (yi + 1)) * Wp + (xi + 1)
        wxy00 = ax0 * ay0
        wxy10 = ax1 * ay0
        wxy01 = ax0 * ay1
        wxy11 = ax1 * ay1
        wts[n, 0] = wxy00 * az0
        wts[n, 1] = wxy10 * az0
        wts[n, 2] = wxy01 * az0
        wts[n, 3] = wxy11 * az0
        wts[n, 4] = wxy00 * az1
        wts[n, 5] = wxy10 * az1
        wts[n, 6] = wxy01 * az1
        wts[n, 7] = wxy11 * az1
        didx[n] = d
        n += 1
    return n, n_zero


# Samples per chunk of the one-volume walks: the geometry is vectorised chunk by chunk (a
# ray that stops early wastes at most one chunk of it).
_CHUNK = 32


@_jit()
def _padded_depths(zs, out):
    """``out[:Dz] = zs``, the rest the last depth (room for a whole last chunk)."""
    n = zs.shape[0]
    for d in range(n):
        out[d] = zs[d]
    for d in range(n, out.shape[0]):
        out[d] = zs[n - 1]


@_jit()
def _ray_table(zs, d0, ox, oy, oz, dx, dy, dz, fW, fH, fD, Hp, Wp, nby, nbx, base, blk, wts):
    """The geometry of the ``_CHUNK`` samples ``d0 <= d < d0 + _CHUNK`` of one ray with
    depths ``zs`` (padded to hold them), in a loop the compiler vectorises: ``base[d]``, the padded flat index of the floor corner (-1 when the
    sample is not computed: it is exactly 0), ``blk[d]`` its block of the bound pyramid and
    ``wts[:, d]`` its eight corner weights, formed as :func:`_geometry` and
    :func:`_forward_row` form them (the same bits)."""
    one = fW / fW
    half = one / (one + one)
    zero = one - one
    # Unsigned indices spare numba's negative-index wrap-around, which blocks vectorising;
    # a constant trip count leaves no scalar remainder loop.
    for t in range(_CHUNK):
        d = np.uint64(d0) + np.uint64(t)
        z = zs[d]
        x = ((ox + z * dx + one) * fW - one) * half
        y = ((oy + z * dy + one) * fH - one) * half
        w = ((oz + z * dz + one) * fD - one) * half
        inside = (x >= -one) & (x < fW) & (y >= -one) & (y < fH) & (w >= -one) & (w < fD)
        x0 = np.floor(x)
        y0 = np.floor(y)
        z0 = np.floor(w)
        ax0 = (x0 + one) - x
        ax1 = x - x0
        ay0 = (y0 + one) - y
        ay1 = y - y0
        az0 = (z0 + one) - w
        az1 = w - z0
        xc = x0 + one if inside else zero  # padded floor corner
        yc = y0 + one if inside else zero
        zc = z0 + one if inside else zero
        xp = np.int32(xc)
        yp = np.int32(yc)
        zp = np.int32(zc)
        base[d] = np.int32((zp * Hp + yp) * Wp + xp) if inside else np.int32(-1)
        blk[d] = ((zp >> BLOCK_SHIFT) * nby + (yp >> BLOCK_SHIFT)) * nbx + (xp >> BLOCK_SHIFT)
        wxy00 = ax0 * ay0
        wxy10 = ax1 * ay0
        wxy01 = ax0 * ay1
        wxy11 = ax1 * ay1
        wts[0, d] = wxy00 * az0
        wts[1, d] = wxy10 * az0
        wts[2, d] = wxy01 * az0
        wts[3, d] = wxy11 * az0
        wts[4, d] = wxy00 * az1
        wts[5, d] = wxy10 * az1
        wts[6, d] = wxy01 * az1
        wts[7, d] = wxy11 * az1
    return zero


@_jit(error_model="numpy")
def _slab(o, d, size, lo, hi):
    """:func:`_axis_clip` without branches (it vectorises): a direction ``|d| < 1e-300`` is
    replaced by 1e-300, which keeps or empties the whole ray as :func:`_axis_clip` does (a
    ray exactly on the slab's outer plane lies outside the box either way)."""
    a = ((o + 1.0) * size - 1.0) * 0.5
    b = d * size * 0.5
    b = b if abs(b) >= 1e-300 else 1e-300
    z1 = (-1.0 - _CLIP_MARGIN - a) / b
    z2 = (size + _CLIP_MARGIN - a) / b
    return max(lo, min(z1, z2)), min(hi, max(z1, z2))


@_jit(error_model="numpy")
def _row_clip(ox, oy, oz, drow, fW, fH, fD, zlo, zhi):
    """:func:`_ray_clip` of the ``w`` rays of one image row (directions ``drow (w, 3)``)
    into ``zlo``, ``zhi (w,)`` (float64), with :func:`_slab`."""
    for i in range(drow.shape[0]):
        lo, hi = _slab(float(ox), float(drow[i, 0]), float(fW), -np.inf, np.inf)
        lo, hi = _slab(float(oy), float(drow[i, 1]), float(fH), lo, hi)
        lo, hi = _slab(float(oz), float(drow[i, 2]), float(fD), lo, hi)
        zlo[i] = lo
        zhi[i] = hi


@_jit()
def _count_range(zs, zlo, zhi):
    """``(d0, d1)`` for ascending depths ``zs``: ``d0`` depths lie below ``zlo`` and the
    depths from ``d1`` on above ``zhi`` (branch-free counts)."""
    below = 0
    above = 0
    for d in range(zs.shape[0]):
        z = float(zs[d])
        below += 1 if z < zlo else 0
        above += 1 if z > zhi else 0
    return below, max(below, zs.shape[0] - above)


@_jit()
def _depth_range(zs, zlo, zhi, ascending):
    """``(d0, d1)``: the samples before ``d0`` and from ``d1`` on lie outside the clip
    ``[zlo, zhi]`` (they are exactly 0). Counts when the depths ``zs`` are ascending (as
    :func:`persp3d.depth_schedule` makes them), else scans from both ends."""
    d0 = 0
    d1 = zs.shape[0]
    if not zlo <= zhi:
        return 0, 0
    if ascending:
        return _count_range(zs, zlo, zhi)
    while d0 < d1 and not zs[d0] >= zlo:
        d0 += 1
    while d1 > d0 and not zs[d1 - 1] <= zhi:
        d1 -= 1
    return d0, d1


@_jit()
def _table_value(flat, c, sx, sy, sz, wts, q, zero):
    """Value of table sample ``q`` of the volume whose floor corner is at ``flat[c]``."""
    s = zero + flat[c] * wts[q, 0]
    s += flat[c + sx] * wts[q, 1]
    s += flat[c + sy] * wts[q, 2]
    s += flat[c + sy + sx] * wts[q, 3]
    s += flat[c + sz] * wts[q, 4]
    s += flat[c + sz + sx] * wts[q, 5]
    s += flat[c + sz + sy] * wts[q, 6]
    s += flat[c + sz + sy + sx] * wts[q, 7]
    return s


@_jit()
def _sample_value(flat, b, sy, sz, wts, d, zero):
    """Value of ray sample ``d`` (weights ``wts[:, d]``) of the volume whose floor corner is
    at ``flat[b]`` (x stride 1)."""
    s = zero + flat[b] * wts[0, d]
    s += flat[b + 1] * wts[1, d]
    s += flat[b + sy] * wts[2, d]
    s += flat[b + sy + 1] * wts[3, d]
    s += flat[b + sz] * wts[4, d]
    s += flat[b + sz + 1] * wts[5, d]
    s += flat[b + sz + sy] * wts[6, d]
    s += flat[b + sz + sy + 1] * wts[7, d]
    return s


@_jit()
def _plane(g, k, n_views, C, NV):
    """Index of image ``(b, v, c)`` in the ``(B, V, C)`` images of ray ``(g, k)``."""
    if NV == C:  # per-volume views (g = b * V + v, k = c), or a single volume
        return g * C + k
    b = k // C  # shared views: g = v, k = b * C + c
    return (b * n_views + g) * C + (k - b * C)


# -- forward -------------------------------------------------------------------------------
@_jit()
def _forward_row(item, vol, origins, dirs, depths, n_views, C, fsize, out, state, flags, is_max):
    """One image row ``(g, j)`` of every volume of camera ``g``'s group: max (with argmax and
    tie state) or transmittance, walking each ray once for all ``NV`` volumes."""
    Dp, Hp, Wp, NV = vol.shape[1], vol.shape[2], vol.shape[3], vol.shape[4]
    h, w = dirs.shape[1], dirs.shape[2]
    Dz = depths.shape[1]
    flat = vol.reshape(-1)  # voxel v of volume k at flat[v * NV + k]
    sy = Wp
    sz = Hp * Wp
    fW, fH, fD = fsize[0], fsize[1], fsize[2]
    one = fW / fW
    half = one / (one + one)
    zero = one - one
    g = item // h
    j = item - g * h
    offset = (g // n_views) * Dp * Hp * Wp
    nv_u = np.uint64(NV)
    sy_u = np.uint64(sy * NV)
    sz_u = np.uint64(sz * NV)
    one32 = np.int32(1)
    acc = np.empty(NV, vol.dtype)  # running max, or transmittance
    arg = np.empty(NV, np.int32)
    count = np.empty(NV, np.int32)
    ox, oy, oz = origins[g, 0], origins[g, 1], origins[g, 2]
    for i in range(w):
        dx, dy, dz = dirs[g, j, i, 0], dirs[g, j, i, 1], dirs[g, j, i, 2]
        zlo, zhi = _ray_clip(ox, oy, oz, dx, dy, dz, fW, fH, fD)
        for k in range(NV):
            acc[k] = -np.inf if is_max else one
            arg[k] = -1
            count[k] = 0
        m = acc[0]  # NV == 1 keeps its running state in registers
        a = -1
        cnt = 0
        n = 0
        n_zero = 0
        first_zero = -1
        for d in range(Dz):
            z = depths[g, d]
            inside = False
            if z >= zlo and z <= zhi:
                inside, xi, yi, zi, ax0, ax1, ay0, ay1, az0, az1 = _geometry(
                    ox, oy, oz, dx, dy, dz, z, fW, fH, fD, one, half
                )
            if not inside:
                n_zero += 1
                if first_zero < 0:
                    first_zero = d
                continue
            n += 1
            b = offset + ((zi + 1) * Hp + (yi + 1)) * Wp + (xi + 1)
            wxy00 = ax0 * ay0
            wxy10 = ax1 * ay0
            wxy01 = ax0 * ay1
            wxy11 = ax1 * ay1
            w0 = wxy00 * az0
            w1 = wxy10 * az0
            w2 = wxy01 * az0
            w3 = wxy11 * az0
            w4 = wxy00 * az1
            w5 = wxy10 * az1
            w6 = wxy01 * az1
            w7 = wxy11 * az1
            if NV == 1:
                s = zero + flat[b] * w0
                s += flat[b + 1] * w1
                s += flat[b + sy] * w2
                s += flat[b + sy + 1] * w3
                s += flat[b + sz] * w4
                s += flat[b + sz + 1] * w5
                s += flat[b + sz + sy] * w6
                s += flat[b + sz + sy + 1] * w7
                if not is_max:
                    m *= one - s
                elif s > m:
                    m = s
                    a = d
                    cnt = 1
                elif s == m:
                    cnt += 1
                continue
            # Unsigned offsets spare numba's negative-index wrap-around in the inner loop,
            # which then vectorises over the NV volumes.
            c0 = np.uint64(b) * nv_u
            c1 = c0 + nv_u
            c2 = c0 + sy_u
            c3 = c2 + nv_u
            c4 = c0 + sz_u
            c5 = c4 + nv_u
            c6 = c4 + sy_u
            c7 = c6 + nv_u
            if is_max:
                d32 = np.int32(d)
                for k in range(nv_u):
                    s = zero + flat[c0 + k] * w0
                    s += flat[c1 + k] * w1
                    s += flat[c2 + k] * w2
                    s += flat[c3 + k] * w3
                    s += flat[c4 + k] * w4
                    s += flat[c5 + k] * w5
                    s += flat[c6 + k] * w6
                    s += flat[c7 + k] * w7
                    mk = acc[k]
                    gt = s > mk
                    acc[k] = s if gt else mk
                    arg[k] = d32 if gt else arg[k]
                    count[k] = one32 if gt else (count[k] + one32 if s == mk else count[k])
            else:
                for k in range(nv_u):
                    s = zero + flat[c0 + k] * w0
                    s += flat[c1 + k] * w1
                    s += flat[c2 + k] * w2
                    s += flat[c3 + k] * w3
                    s += flat[c4 + k] * w4
                    s += flat[c5 + k] * w5
                    s += flat[c6 + k] * w6
                    s += flat[c7 + k] * w7
                    acc[k] *= one - s
        if NV == 1:
            acc[0] = m
            arg[0] = a
            count[0] = cnt
        for k in range(NV):
            o = _plane(g, k, n_views, C, NV) * h * w + j * w + i
            if not is_max:
                out[o] = one - acc[k]
                continue
            if n_zero > 0:  # the samples not computed are zeros
                if zero > acc[k]:
                    acc[k] = zero
                    arg[k] = first_zero
                    count[k] = n_zero
                elif zero == acc[k]:
                    count[k] += n_zero
            out[o] = acc[k]
            if n == 0:
                state[g, j, i, k] = MISSED
            elif count[k] == 1:
                state[g, j, i, k] = arg[k]
            else:
                state[g, j, i, k] = TIED
                flags[item] = 1


@_jit()
def _forward_row1(item, vol, origins, dirs, depths, n_views, fsize, out, state, flags, is_max, bnd,
                  params, zpad, base, blk, wts, zlo_row, zhi_row, factors):  # fmt: skip
    """:func:`_forward_row` for one volume per camera group (``NV == 1``), with the skips of
    the module docstring: samples in blocks that cannot matter are not computed, and an
    absorption ray stops once it is opaque to ``params[0]``. The geometry of each chunk of
    samples is computed in a vectorised loop (:func:`_ray_table`), the values one by one."""
    Dp, Hp, Wp = vol.shape[1], vol.shape[2], vol.shape[3]
    nbz, nby, nbx = bnd.shape[1], bnd.shape[2], bnd.shape[3]
    h, w = dirs.shape[1], dirs.shape[2]
    Dz = depths.shape[1]
    flat = vol.reshape(-1)  # voxel v of group nb at flat[nb * Dp * Hp * Wp + v]
    bflat = bnd.reshape(-1)
    sy = Wp
    sz = Hp * Wp
    fW, fH, fD = fsize[0], fsize[1], fsize[2]
    one = fW / fW
    zero = one - one
    eps_stop, tau, lowest = params[0], params[1], params[2]
    ascending = params[3] > 0
    g = item // h
    j = item - g * h
    nb = g // n_views
    offset = nb * Dp * Hp * Wp
    boff = nb * nbz * nby * nbx
    zs = depths[g]
    _padded_depths(zs, zpad)  # zpad, base, blk, wts, zlo_row, zhi_row: scratch (forward's)
    Hp32, Wp32, nby32, nbx32 = np.int32(Hp), np.int32(Wp), np.int32(nby), np.int32(nbx)
    store = factors.shape[0] > 1  # keep each factor 1 - o for the backward pass
    ox, oy, oz = origins[g, 0], origins[g, 1], origins[g, 2]
    _row_clip(ox, oy, oz, dirs[g, j], fW, fH, fD, zlo_row, zhi_row)
    for i in range(w):
        dx, dy, dz = dirs[g, j, i, 0], dirs[g, j, i, 1], dirs[g, j, i, 2]
        d_lo, d_hi = _depth_range(zs, zlo_row[i], zhi_row[i], ascending)
        m = lowest if is_max else one  # running max, or transmittance
        a = -1
        cnt = 0
        n = 0
        first_zero = 0 if d_lo > 0 else -1
        rest = one  # absorption: the product of the factors but the smallest (fmin)
        fmin = one
        bounded = True  # every factor so far lies in [0, 1]
        stop = False
        fbase = ((g * h + j) * w + i) * Dz
        for c0 in range(d_lo, d_hi, _CHUNK):
            c1 = min(c0 + _CHUNK, d_hi)
            _ray_table(zpad, c0, ox, oy, oz, dx, dy, dz, fW, fH, fD, Hp32, Wp32, nby32, nbx32,
                       base, blk, wts)  # fmt: skip
            for d in range(c0, c1):
                bd = base[d]
                if bd < 0:
                    if first_zero < 0:
                        first_zero = d
                    continue
                n += 1
                if is_max:
                    if bflat[(boff + blk[d]) * 2] < m:  # cannot reach the running max
                        continue
                elif bflat[(boff + blk[d]) * 2 + 1] < tau:  # 1 - o rounds to 1
                    if store:
                        factors[fbase + d] = one
                    continue
                s = _sample_value(flat, offset + bd, sy, sz, wts, d, zero)
                if is_max:
                    if s > m:
                        m = s
                        a = d
                        cnt = 1
                    elif s == m:
                        cnt += 1
                    continue
                f = one - s
                if store:
                    factors[fbase + d] = f
                m *= f
                if f < fmin:
                    rest *= fmin
                    fmin = f
                else:
                    rest *= f
                if not (f >= zero and f <= one):
                    bounded = False
                if bounded and rest < eps_stop:
                    stop = True
                    break
            if stop:
                break
        o = g * h * w + j * w + i  # image (b, v, 0) of ray (g, 0): plane g
        if not is_max:
            out[o] = one - m
            continue
        n_zero = Dz - n
        if first_zero < 0 and d_hi < Dz:
            first_zero = d_hi
        if n_zero > 0:  # the samples not computed are zeros
            if zero > m:
                m = zero
                a = first_zero
                cnt = n_zero
            elif zero == m:
                cnt += n_zero
        out[o] = m
        if n == 0:
            state[g, j, i, 0] = MISSED
        elif cnt == 1:
            state[g, j, i, 0] = a
        else:
            state[g, j, i, 0] = TIED
            flags[item] = 1


@_jit(nogil=True)
def forward(vol, origins, dirs, depths, n_views, C, fsize, out, state, flags, is_max, bnd, params,
            factors, start, step):  # fmt: skip
    """Max (``is_max``) or ``1 - prod (1 - o)`` along every ray of image rows
    ``start, start + step, ...`` (of ``G * h``); one thread's share of the work.

    Args:
        vol: ``(NB, D + 2, H + 2, W + 2, NV)`` padded channels-last volumes.
        origins, dirs, depths: ``(G, 3)``, ``(G, h, w, 3)``, ``(G, Dz)``; ``G = NB * n_views``.
        n_views: cameras per volume group (``V``).
        C: channels per volume.
        fsize: ``(3,)`` ``(W, H, D)`` of the unpadded volume, in the volume's dtype.
        out: ``(B * V * C * h * w,)``: the flat ``(B, V, C, h, w)`` silhouettes it fills.
        state: ``(G, h, w, NV)`` int32 receives, for max, the depth index of the maximum
            when one sample attains it, ``TIED`` (-1) when several do (the backward pass
            walks those rays again) and ``MISSED`` (-2) when the ray computes no sample (all
            its samples and gradients are 0). Unused for absorption.
        flags: ``(G * h,)`` int8 receives 1 for the rows with a tied ray, else 0.
        is_max: max (else absorption).
        bnd: for ``NV == 1``, :func:`bounds` of ``vol``; else unused.
        params: ``(4,)`` in the volume's dtype: the early-stop threshold ``eps``, the
            magnitude below which ``1 - o`` rounds to 1, ``-inf``, and 1 when every
            camera's depths ascend (else 0).
        factors: absorption with ``NV == 1``: ``(G * h * w * Dz,)`` receives the factor
            ``1 - o`` of each sample the walk reaches (the other slots are left alone),
            which spares the backward pass the sampling; else ``(1,)`` (nothing kept).
        start, step: this thread's rows.
    """
    G, h, w = dirs.shape[0], dirs.shape[1], dirs.shape[2]
    Dz = depths.shape[1]
    one_volume = vol.shape[4] == 1
    # Scratch of the one-volume walk, allocated once per thread.
    zpad = np.empty(Dz + _CHUNK, vol.dtype)
    base = np.empty(Dz + _CHUNK, np.int32)
    blk = np.empty(Dz + _CHUNK, np.int32)
    wts = np.empty((8, Dz + _CHUNK), vol.dtype)
    zlo_row = np.empty(w, np.float64)
    zhi_row = np.empty(w, np.float64)
    for item in range(start, G * h, step):
        flags[item] = 0
        if one_volume:
            _forward_row1(
                item, vol, origins, dirs, depths, n_views, fsize, out, state, flags, is_max, bnd,
                params, zpad, base, blk, wts, zlo_row, zhi_row, factors,
            )  # fmt: skip
        else:
            _forward_row(
                item, vol, origins, dirs, depths, n_views, C, fsize, out, state, flags, is_max
            )


# -- backward ------------------------------------------------------------------------------
@_jit()
def _scatter(gflat, gb, Hp, Wp, flat, c, sx, ox, oy, oz, dx, dy, dz, z, fsize, grad, need_cam):
    """Backward of one sample at depth ``z`` of a ray, scaled by ``grad``.

    Adds ``grad * d sample / d volume`` into the padded gradient volume at ``gflat[gb:]``
    and returns ``grad * d sample / d position`` in grid coordinates (zeros unless
    ``need_cam``); ``flat[c:]`` is the volume (channels-last, stride ``sx`` per voxel).
    """
    fW, fH, fD = fsize[0], fsize[1], fsize[2]
    one = fW / fW
    half = one / (one + one)
    zero = one - one
    inside, xi, yi, zi, ax0, ax1, ay0, ay1, az0, az1 = _geometry(
        ox, oy, oz, dx, dy, dz, z, fW, fH, fD, one, half
    )
    if not inside:
        return zero, zero, zero
    vox = ((zi + 1) * Hp + (yi + 1)) * Wp + (xi + 1)
    sy = Wp
    sz = Hp * Wp
    b = gb + vox
    wxy00 = ax0 * ay0
    wxy10 = ax1 * ay0
    wxy01 = ax0 * ay1
    wxy11 = ax1 * ay1
    gflat[b] += wxy00 * az0 * grad
    gflat[b + 1] += wxy10 * az0 * grad
    gflat[b + sy] += wxy01 * az0 * grad
    gflat[b + sy + 1] += wxy11 * az0 * grad
    gflat[b + sz] += wxy00 * az1 * grad
    gflat[b + sz + 1] += wxy10 * az1 * grad
    gflat[b + sz + sy] += wxy01 * az1 * grad
    gflat[b + sz + sy + 1] += wxy11 * az1 * grad
    if not need_cam:
        return zero, zero, zero
    cb = c + vox * sx
    vy = sy * sx
    vz = sz * sx
    v000 = flat[cb]
    v100 = flat[cb + sx]
    v010 = flat[cb + vy]
    v110 = flat[cb + vy + sx]
    v001 = flat[cb + vz]
    v101 = flat[cb + vz + sx]
    v011 = flat[cb + vz + vy]
    v111 = flat[cb + vz + vy + sx]
    gix = (
        (v100 - v000) * (ay0 * az0)
        + (v110 - v010) * (ay1 * az0)
        + (v101 - v001) * (ay0 * az1)
        + (v111 - v011) * (ay1 * az1)
    )
    giy = (
        (v010 - v000) * (ax0 * az0)
        + (v110 - v100) * (ax1 * az0)
        + (v011 - v001) * (ax0 * az1)
        + (v111 - v101) * (ax1 * az1)
    )
    giz = (
        (v001 - v000) * (ax0 * ay0)
        + (v101 - v100) * (ax1 * ay0)
        + (v011 - v010) * (ax0 * ay1)
        + (v111 - v110) * (ax1 * ay1)
    )
    return gix * (fW * half) * grad, giy * (fH * half) * grad, giz * (fD * half) * grad


@_jit()
def _scatter_table(gflat, b, Hp, Wp, wts, q, grad):
    """Add ``grad`` times the eight weights of table sample ``q`` at padded floor corner
    ``gflat[b]`` (the volume gradient of one sample, without recomputing its geometry)."""
    sy = Wp
    sz = Hp * Wp
    gflat[b] += wts[q, 0] * grad
    gflat[b + 1] += wts[q, 1] * grad
    gflat[b + sy] += wts[q, 2] * grad
    gflat[b + sy + 1] += wts[q, 3] * grad
    gflat[b + sz] += wts[q, 4] * grad
    gflat[b + sz + 1] += wts[q, 5] * grad
    gflat[b + sz + sy] += wts[q, 6] * grad
    gflat[b + sz + sy + 1] += wts[q, 7] * grad


@_jit()
def _chain(g_orig, g_depth, g_dir, item, g, j, i, k, d, z, dx, dy, dz, px, py, pz):
    """Chain rule of ``position = origin + z * direction`` for one sample's gradient."""
    g_orig[item, g, 0] += px
    g_orig[item, g, 1] += py
    g_orig[item, g, 2] += pz
    g_dir[g, j, i, k, 0] += z * px
    g_dir[g, j, i, k, 1] += z * py
    g_dir[g, j, i, k, 2] += z * pz
    g_depth[item, g, d] += dx * px + dy * py + dz * pz


@_jit()
def _tied_walk1(flat, c, Hp, Wp, origins, dirs, depths, g, j, i, fsize, top, bnd, nb, didx):
    """Depth indices (into ``didx``) of the samples of one ray of a one-volume group
    (``NV == 1``, values at ``flat[c + voxel]``) equal to ``top``, skipping blocks whose
    bound lies below it; returns ``(n_tied, n_zero)``, ``n_zero`` samples not computed
    (zeros). The values are formed as :func:`_forward_row1` forms them: the same bits."""
    fW, fH, fD = fsize[0], fsize[1], fsize[2]
    one = fW / fW
    half = one / (one + one)
    zero = one - one
    sy = Wp
    sz = Hp * Wp
    ox, oy, oz = origins[g, 0], origins[g, 1], origins[g, 2]
    dx, dy, dz = dirs[g, j, i, 0], dirs[g, j, i, 1], dirs[g, j, i, 2]
    zlo, zhi = _ray_clip(ox, oy, oz, dx, dy, dz, fW, fH, fD)
    n_tied = 0
    n_zero = 0
    for d in range(depths.shape[1]):
        z = depths[g, d]
        inside = False
        if z >= zlo and z <= zhi:
            inside, xi, yi, zi, ax0, ax1, ay0, ay1, az0, az1 = _geometry(
                ox, oy, oz, dx, dy, dz, z, fW, fH, fD, one, half
            )
        if not inside:
            n_zero += 1
            continue
        bz = (zi + 1) >> BLOCK_SHIFT
        by = (yi + 1) >> BLOCK_SHIFT
        bx = (xi + 1) >> BLOCK_SHIFT
        if bnd[nb, bz, by, bx, 0] < top:
            continue
        b = c + ((zi + 1) * Hp + (yi + 1)) * Wp + (xi + 1)
        wxy00 = ax0 * ay0
        wxy10 = ax1 * ay0
        wxy01 = ax0 * ay1
        wxy11 = ax1 * ay1
        s = zero + flat[b] * (wxy00 * az0)
        s += flat[b + 1] * (wxy10 * az0)
        s += flat[b + sy] * (wxy01 * az0)
        s += flat[b + sy + 1] * (wxy11 * az0)
        s += flat[b + sz] * (wxy00 * az1)
        s += flat[b + sz + 1] * (wxy10 * az1)
        s += flat[b + sz + sy] * (wxy01 * az1)
        s += flat[b + sz + sy + 1] * (wxy11 * az1)
        if s == top:
            didx[n_tied] = d
            n_tied += 1
    return n_tied, n_zero


@_jit()
def _max_backward_item(
    item, vol, origins, dirs, depths, n_views, C, NV, fsize, out, state, gout, n_blocks, gvol,
    need_cam, g_orig, g_depth, g_dir, bnd,
):  # fmt: skip
    """Max backward of one volume over one block of its cameras' pixel rows (work ``item``
    = ``p * NBC + volume``; block ``p`` holds rows ``p, p + n_blocks, ...``): the gradient
    goes to the sample holding the maximum, or is split evenly between the tied samples
    (``amax``'s rule)."""
    NBC, Dp, Hp, Wp = gvol.shape[1], gvol.shape[2], gvol.shape[3], gvol.shape[4]
    h, w = dirs.shape[1], dirs.shape[2]
    Dz = depths.shape[1]
    flat = vol.reshape(-1)
    gflat = gvol.reshape(-1)
    vox = Dp * Hp * Wp
    sx = NV
    sy = Wp * NV
    sz = Hp * Wp * NV
    one = fsize[0] / fsize[0]
    zero = one - one
    p = item // NBC
    vb = item - p * NBC
    nb = vb // NV
    k = vb - nb * NV
    gb = (p * NBC + vb) * vox  # this block's gradient of volume vb
    for q in range(vox):
        gflat[gb + q] = zero
    c = nb * vox * NV + k  # volume vb's values: flat[c + voxel * NV]
    base = np.empty(Dz, np.int64)
    wts = np.empty((Dz, 8), vol.dtype)
    didx = np.empty(Dz, np.int32)
    rows = n_views * h
    for r in range(p, rows, n_blocks):
        v = r // h
        j = r - v * h
        g = nb * n_views + v
        ox, oy, oz = origins[g, 0], origins[g, 1], origins[g, 2]
        row = _plane(g, k, n_views, C, NV) * h * w + j * w
        for i in range(w):
            grad = gout[row + i]
            d = state[g, j, i, k]
            if grad == 0 or d == MISSED:
                continue
            dx, dy, dz = dirs[g, j, i, 0], dirs[g, j, i, 1], dirs[g, j, i, 2]
            if d >= 0:  # one sample holds the maximum
                z = depths[g, d]
                px, py, pz = _scatter(
                    gflat, gb, Hp, Wp, flat, c, sx, ox, oy, oz, dx, dy, dz, z, fsize, grad,
                    need_cam,
                )  # fmt: skip
                if need_cam:
                    _chain(g_orig, g_depth, g_dir, item, g, j, i, k, d, z, dx, dy, dz, px, py, pz)
                continue
            # Tied maximum: split the gradient evenly between the samples attaining it
            # (the samples not computed are zeros, with zero gradient).
            top = out[row + i]
            if NV == 1:
                n_tied, n_zero = _tied_walk1(
                    flat, c, Hp, Wp, origins, dirs, depths, g, j, i, fsize, top, bnd, nb, didx
                )
            else:
                n, n_zero = _walk(origins, dirs, depths, g, j, i, fsize, Hp, Wp, base, wts, didx)
                n_tied = 0
                for q in range(n):
                    if _table_value(flat, c + base[q] * sx, sx, sy, sz, wts, q, zero) == top:
                        didx[n_tied] = didx[q]
                        n_tied += 1
            total = zero  # the number of tied samples, as a float
            for _ in range(n_tied):
                total += one
            if top == zero:
                for _ in range(n_zero):
                    total += one
            share = grad / total
            for q in range(n_tied):
                d = didx[q]
                z = depths[g, d]
                px, py, pz = _scatter(
                    gflat, gb, Hp, Wp, flat, c, sx, ox, oy, oz, dx, dy, dz, z, fsize, share,
                    need_cam,
                )  # fmt: skip
                if need_cam:
                    _chain(g_orig, g_depth, g_dir, item, g, j, i, k, d, z, dx, dy, dz, px, py, pz)


@_jit()
def _absorption_backward_block(
    p, vol, origins, dirs, depths, n_views, C, fsize, gout, n_blocks, gvol, need_cam, g_orig,
    g_depth, g_dir,
):  # fmt: skip
    """Absorption backward of image rows block ``p`` (of ``n_blocks``) for every volume:
    each ray is walked once and its sample table serves all the volumes of its group.

    ``d (1 - prod (1 - o)) / d o_q = prod_{s != q} (1 - o_s)`` comes from prefix and suffix
    products, exact when some ``o_s == 1``.
    """
    Dp, Hp, Wp, NV = vol.shape[1], vol.shape[2], vol.shape[3], vol.shape[4]
    NBC = gvol.shape[1]
    G, h, w = dirs.shape[0], dirs.shape[1], dirs.shape[2]
    Dz = depths.shape[1]
    flat = vol.reshape(-1)
    gflat = gvol.reshape(-1)
    vox = Dp * Hp * Wp
    sx = NV
    sy = Wp * NV
    sz = Hp * Wp * NV
    one = fsize[0] / fsize[0]
    zero = one - one
    for q in range(NBC * vox):
        gflat[p * NBC * vox + q] = zero
    base = np.empty(Dz, np.int64)
    wts = np.empty((Dz, 8), vol.dtype)
    didx = np.empty(Dz, np.int32)
    prefix = np.empty(Dz, vol.dtype)
    factor = np.empty(Dz, vol.dtype)
    rows = G * h
    for r in range(rows * p // n_blocks, rows * (p + 1) // n_blocks):
        g = r // h
        j = r - g * h
        nb = g // n_views
        ox, oy, oz = origins[g, 0], origins[g, 1], origins[g, 2]
        for i in range(w):
            n = -1  # the ray is walked once, when a volume first needs it
            dx, dy, dz = dirs[g, j, i, 0], dirs[g, j, i, 1], dirs[g, j, i, 2]
            for k in range(NV):
                grad = gout[_plane(g, k, n_views, C, NV) * h * w + j * w + i]
                if grad == 0:
                    continue
                if n < 0:
                    n, _ = _walk(origins, dirs, depths, g, j, i, fsize, Hp, Wp, base, wts, didx)
                c = nb * vox * NV + k  # volume (nb, k): flat[c + voxel * NV]
                gb = (p * NBC + nb * NV + k) * vox
                running = one
                for q in range(n):
                    prefix[q] = running
                    factor[q] = one - _table_value(flat, c + base[q] * sx, sx, sy, sz, wts, q, zero)
                    running *= factor[q]
                suffix = one
                for q in range(n - 1, -1, -1):
                    share = grad * (prefix[q] * suffix)
                    suffix *= factor[q]
                    if not need_cam:  # the table has the weights: no need to recompute them
                        _scatter_table(gflat, gb + base[q], Hp, Wp, wts, q, share)
                        continue
                    d = didx[q]
                    z = depths[g, d]
                    px, py, pz = _scatter(
                        gflat, gb, Hp, Wp, flat, c, sx, ox, oy, oz, dx, dy, dz, z, fsize, share,
                        need_cam,
                    )  # fmt: skip
                    _chain(g_orig, g_depth, g_dir, p, g, j, i, k, d, z, dx, dy, dz, px, py, pz)


@_jit()
def _absorption_backward_block1(
    p, vol, origins, dirs, depths, n_views, fsize, gout, n_blocks, gvol, need_cam, g_orig,
    g_depth, g_dir, bnd, params, factors,
):  # fmt: skip
    """:func:`_absorption_backward_block` for one volume per camera group (``NV == 1``), for
    the rows ``p, p + n_blocks, ...``: each ray is walked as :func:`_forward_row1` walked it
    (the same factors, the same early stop), so the gradients are those of its values."""
    Dp, Hp, Wp = vol.shape[1], vol.shape[2], vol.shape[3]
    nbz, nby, nbx = bnd.shape[1], bnd.shape[2], bnd.shape[3]
    NB = gvol.shape[1]
    G, h, w = dirs.shape[0], dirs.shape[1], dirs.shape[2]
    Dz = depths.shape[1]
    flat = vol.reshape(-1)
    gflat = gvol.reshape(-1)
    bflat = bnd.reshape(-1)
    vox = Dp * Hp * Wp
    sy = Wp
    sz = Hp * Wp
    fW, fH, fD = fsize[0], fsize[1], fsize[2]
    one = fW / fW
    zero = one - one
    eps_stop, tau = params[0], params[1]
    ascending = params[3] > 0
    for q in range(NB * vox):
        gflat[p * NB * vox + q] = zero
    zpad = np.empty(Dz + _CHUNK, vol.dtype)
    base = np.empty(Dz + _CHUNK, np.int32)
    blk = np.empty(Dz + _CHUNK, np.int32)
    wts = np.empty((8, Dz + _CHUNK), vol.dtype)
    didx = np.empty(Dz, np.int32)
    prefix = np.empty(Dz, vol.dtype)
    factor = np.empty(Dz, vol.dtype)
    Hp32, Wp32, nby32, nbx32 = np.int32(Hp), np.int32(Wp), np.int32(nby), np.int32(nbx)
    zlo_row = np.empty(w, np.float64)
    zhi_row = np.empty(w, np.float64)
    stored = factors.shape[0] > 1  # the forward pass kept the factors
    for r in range(p, G * h, n_blocks):
        g = r // h
        j = r - g * h
        nb = g // n_views
        c = nb * vox  # group nb's volume: flat[c + voxel]
        gb = (p * NB + nb) * vox
        boff = nb * nbz * nby * nbx
        zs = depths[g]
        _padded_depths(zs, zpad)
        ox, oy, oz = origins[g, 0], origins[g, 1], origins[g, 2]
        _row_clip(ox, oy, oz, dirs[g, j], fW, fH, fD, zlo_row, zhi_row)
        for i in range(w):
            grad = gout[g * h * w + j * w + i]
            if grad == 0:
                continue
            dx, dy, dz = dirs[g, j, i, 0], dirs[g, j, i, 1], dirs[g, j, i, 2]
            d_lo, d_hi = _depth_range(zs, zlo_row[i], zhi_row[i], ascending)
            running = one
            rest = one
            fmin = one
            bounded = True
            n = 0
            stop = False
            fbase = ((g * h + j) * w + i) * Dz
            for c0 in range(d_lo, d_hi, _CHUNK):
                c1 = min(c0 + _CHUNK, d_hi)
                _ray_table(zpad, c0, ox, oy, oz, dx, dy, dz, fW, fH, fD, Hp32, Wp32, nby32,
                           nbx32, base, blk, wts)  # fmt: skip
                for d in range(c0, c1):
                    bd = base[d]
                    if bd < 0:
                        continue
                    didx[n] = d
                    prefix[n] = running
                    n += 1
                    if stored:  # a skipped sample was kept as 1: the same walk
                        f = factors[fbase + d]
                    elif bflat[(boff + blk[d]) * 2 + 1] < tau:  # 1 - o rounds to 1
                        factor[n - 1] = one
                        continue
                    else:
                        o = _sample_value(flat, c + bd, sy, sz, wts, d, zero)
                        f = one - o
                    factor[n - 1] = f
                    running *= f
                    if f < fmin:
                        rest *= fmin
                        fmin = f
                    else:
                        rest *= f
                    if not (f >= zero and f <= one):
                        bounded = False
                    if bounded and rest < eps_stop:
                        stop = True
                        break
                if stop:
                    break
            suffix = one
            if not need_cam:
                # The table holds every chunk's weights: scatter without recomputing them.
                # Successive samples in the same cell add into registers first (the samples
                # are finer than the voxels), which spares most read-modify-writes.
                cell = -1
                g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = zero
                for q in range(n - 1, -1, -1):
                    share = grad * (prefix[q] * suffix)
                    suffix *= factor[q]
                    d = didx[q]
                    if base[d] != cell:
                        if cell >= 0:
                            b = gb + cell
                            gflat[b] += g0
                            gflat[b + 1] += g1
                            gflat[b + sy] += g2
                            gflat[b + sy + 1] += g3
                            gflat[b + sz] += g4
                            gflat[b + sz + 1] += g5
                            gflat[b + sz + sy] += g6
                            gflat[b + sz + sy + 1] += g7
                        cell = base[d]
                        g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = zero
                    g0 += wts[0, d] * share
                    g1 += wts[1, d] * share
                    g2 += wts[2, d] * share
                    g3 += wts[3, d] * share
                    g4 += wts[4, d] * share
                    g5 += wts[5, d] * share
                    g6 += wts[6, d] * share
                    g7 += wts[7, d] * share
                if cell >= 0:
                    b = gb + cell
                    gflat[b] += g0
                    gflat[b + 1] += g1
                    gflat[b + sy] += g2
                    gflat[b + sy + 1] += g3
                    gflat[b + sz] += g4
                    gflat[b + sz + 1] += g5
                    gflat[b + sz + sy] += g6
                    gflat[b + sz + sy + 1] += g7
                continue
            for q in range(n - 1, -1, -1):
                share = grad * (prefix[q] * suffix)
                suffix *= factor[q]
                d = didx[q]
                z = depths[g, d]
                px, py, pz = _scatter(
                    gflat, gb, Hp, Wp, flat, c, 1, ox, oy, oz, dx, dy, dz, z, fsize, share,
                    need_cam,
                )  # fmt: skip
                _chain(g_orig, g_depth, g_dir, p, g, j, i, 0, d, z, dx, dy, dz, px, py, pz)


@_jit(nogil=True)
def backward(
    vol, origins, dirs, depths, n_views, C, NV, fsize, out, state, gout, n_blocks, gvol,
    need_cam, g_orig, g_depth, g_dir, is_max, bnd, params, factors, start, step,
):  # fmt: skip
    """Gradients of :func:`forward` for work items ``start, start + step, ...``.

    Max: a ray whose maximum is attained once sends its gradient to that sample; a tied ray
    is walked again and its gradient split evenly between all samples equal to the maximum,
    as ``amax``'s backward does. Work item ``p * NB * NV + volume`` is block ``p`` of one
    volume's pixel rows. Absorption: every ray is walked again, once for all the volumes of
    its group; work item ``p`` is block ``p`` of all the rows. Block ``p`` of ``n_blocks``
    holds rows ``p, p + n_blocks, ...`` (interleaved: the blocks cost about the same).

    Args:
        vol, origins, dirs, depths, n_views, C, fsize: as :func:`forward`; for max, ``vol``
            is read only for tied rays and for ``need_cam`` (else a ``(1, 1, 1, 1, 1)``
            dummy).
        NV: volumes per camera group.
        out, state: :func:`forward`'s results; gout: the flat ``(B, V, C, h, w)`` gradient
            of ``out``.
        n_blocks: the pixel rows are split into this many blocks.
        gvol: ``(n_blocks, NB * NV, D + 2, H + 2, W + 2)``; block ``p``'s padded volume
            gradient is written to ``gvol[p]`` (the caller sums the blocks).
        need_cam: whether to compute the geometry gradients below.
        g_orig: ``(items, G, 3)`` and g_depth: ``(items, G, Dz)`` per-work-item gradients
            (zeros; ``items = n_blocks * NB * NV`` for max, ``n_blocks`` for absorption);
            g_dir: ``(G, h, w, NV, 3)`` per-ray gradients (zeros).
        is_max: max (else absorption).
        bnd, params: as :func:`forward` (the bounds are read for ``NV == 1`` only).
        factors: :func:`forward`'s kept factors (absorption, ``NV == 1``), else ``(1,)``.
        start, step: this thread's work items.
    """
    if not is_max:
        for p in range(start, n_blocks, step):
            if NV == 1:
                _absorption_backward_block1(
                    p, vol, origins, dirs, depths, n_views, fsize, gout, n_blocks, gvol,
                    need_cam, g_orig, g_depth, g_dir, bnd, params, factors,
                )  # fmt: skip
            else:
                _absorption_backward_block(
                    p, vol, origins, dirs, depths, n_views, C, fsize, gout, n_blocks, gvol,
                    need_cam, g_orig, g_depth, g_dir,
                )  # fmt: skip
        return
    for item in range(start, n_blocks * gvol.shape[1], step):
        _max_backward_item(
            item, vol, origins, dirs, depths, n_views, C, NV, fsize, out, state, gout, n_blocks,
            gvol, need_cam, g_orig, g_depth, g_dir, bnd,
        )  # fmt: skip


@_jit(nogil=True)
def bounds(vol, bnd, margin, start, step):
    """Bound pyramid of one-volume groups, for block slabs ``start, start + step, ...`` of
    ``NB * nbz``.

    Block ``(bz, by, bx)`` holds the samples whose floor corner lies in padded voxels
    ``[b * S, b * S + S)`` on each axis (``S = 2 ** BLOCK_SHIFT``); their eight corners lie
    in ``[b * S, b * S + S]``. Over those voxels, with ``M`` their maximum and ``A`` their
    largest magnitude, ``bnd[nb, bz, by, bx, 0] = M + margin * A`` bounds every such
    trilinear sample from above and ``bnd[..., 1] = A + margin * A`` bounds its magnitude
    (``margin`` covers the rounding of the weights and of the sum: 16 ulps of 1). A NaN
    voxel makes both bounds infinite.

    Args:
        vol: ``(NB, D + 2, H + 2, W + 2, 1)`` padded volumes.
        bnd: ``(NB, nbz, nby, nbx, 2)`` receives the bounds (``nbz = ceil((D + 2) / S)``).
        margin: relative slack, in the volume's dtype.
    """
    NB, Dp, Hp, Wp = vol.shape[0], vol.shape[1], vol.shape[2], vol.shape[3]
    nbz, nby, nbx = bnd.shape[1], bnd.shape[2], bnd.shape[3]
    S = 1 << BLOCK_SHIFT
    zero = margin - margin
    for item in range(start, NB * nbz, step):
        nb = item // nbz
        bz = item - nb * nbz
        z0 = bz * S
        z1 = min(z0 + S, Dp - 1)
        for by in range(nby):
            y0 = by * S
            y1 = min(y0 + S, Hp - 1)
            for bx in range(nbx):
                x0 = bx * S
                x1 = min(x0 + S, Wp - 1)
                top = vol[nb, z0, y0, x0, 0]
                mag = zero
                finite = True
                for z in range(z0, z1 + 1):
                    for y in range(y0, y1 + 1):
                        for x in range(x0, x1 + 1):
                            v = vol[nb, z, y, x, 0]
                            top = max(top, v)
                            mag = max(mag, abs(v))
                            finite = finite and v == v
                if finite:
                    bnd[nb, bz, by, bx, 0] = top + margin * mag
                    bnd[nb, bz, by, bx, 1] = mag + margin * mag
                else:
                    bnd[nb, bz, by, bx, 0] = np.inf
                    bnd[nb, bz, by, bx, 1] = np.inf


# -- layout --------------------------------------------------------------------------------
@_jit(nogil=True)
def pack(volume, packed, start, step):
    """Zero-pad and transpose volumes to the kernels' layout, for depth slices
    ``start, start + step, ...`` of ``NB * (D + 2)``.

    Args:
        volume: ``(NB, NV, D, H, W)`` (the ``(B, C, D, H, W)`` volumes, reshaped).
        packed: ``(NB, D + 2, H + 2, W + 2, NV)`` receives them.
    """
    NB, NV, D, H, W = volume.shape
    Dp, Hp, Wp = D + 2, H + 2, W + 2
    for item in range(start, NB * Dp, step):
        nb = item // Dp
        zp = item - nb * Dp
        inner = 1 <= zp <= D
        for yp in range(Hp):
            for xp in range(Wp):
                if inner and 1 <= yp <= H and 1 <= xp <= W:
                    for k in range(NV):
                        packed[nb, zp, yp, xp, k] = volume[nb, k, zp - 1, yp - 1, xp - 1]
                else:
                    for k in range(NV):
                        packed[nb, zp, yp, xp, k] = 0


@_jit(nogil=True)
def unpad_sum(gvol, out, start, step):
    """``out[v] = sum_p gvol[p, v]`` without the padding, for slices ``start, start + step,
    ...`` of ``NBC * D``.

    Args:
        gvol: ``(n_blocks, NBC, D + 2, H + 2, W + 2)`` per-block padded gradients.
        out: ``(NBC, D, H, W)`` receives their sum.
    """
    n_blocks, NBC = gvol.shape[0], gvol.shape[1]
    D, H, W = out.shape[1], out.shape[2], out.shape[3]
    for item in range(start, NBC * D, step):
        v = item // D
        z = item - v * D
        for y in range(H):
            for x in range(W):
                total = gvol[0, v, z + 1, y + 1, x + 1]
                for p in range(1, n_blocks):
                    total += gvol[p, v, z + 1, y + 1, x + 1]
                out[v, z, y, x] = total


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels for float32 and float64."""
    for dtype in (np.float32, np.float64):
        volume = np.zeros((1, 1, 1, 1, 1), dtype)
        vol = np.zeros((1, 3, 3, 3, 1), dtype)
        pack(volume, vol, 0, 1)
        origins = np.zeros((1, 3), dtype)
        dirs = np.zeros((1, 1, 1, 3), dtype)
        dirs[..., 2] = 1
        depths = np.zeros((1, 1), dtype)
        fsize = np.ones(3, dtype)
        out = np.zeros(1, dtype)
        state = np.zeros((1, 1, 1, 1), np.int32)
        flags = np.zeros(1, np.int8)
        bnd = np.zeros((1, 1, 1, 1, 2), dtype)
        bounds(vol, bnd, dtype(0.0), 0, 1)
        params = np.array([0.0, 0.0, -np.inf, 1.0], dtype)
        forward(
            vol, origins, dirs, depths, 1, 1, fsize, out, state, flags, True, bnd, params, out, 0, 1
        )
        gvol = np.zeros((1, 1, 3, 3, 3), dtype)
        cams = (np.zeros((1, 1, 3), dtype), np.zeros((1, 1, 1), dtype))
        g_dir = np.zeros((1, 1, 1, 1, 3), dtype)
        backward(
            vol, origins, dirs, depths, 1, 1, 1, fsize, out, state, out, 1, gvol, True, *cams,
            g_dir, True, bnd, params, out, 0, 1,
        )  # fmt: skip
        unpad_sum(gvol, volume[0], 0, 1)
