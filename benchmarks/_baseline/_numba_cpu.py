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
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["MISSED", "TIED", "backward", "forward", "pack", "unpad_sum", "warm_up"]

# Voxels of slack of the analytic ray/box clip; the samples it keeps are checked exactly.
_CLIP_MARGIN = 0.5
# State of a ray whose maximum is tied, and of a ray that computes no sample at all.
TIED = -1
MISSED = -2


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


@_jit(nogil=True)
def forward(vol, origins, dirs, depths, n_views, C, fsize, out, state, flags, is_max, start, step):
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
        start, step: this thread's rows.
    """
    G, h = dirs.shape[0], dirs.shape[1]
    for item in range(start, G * h, step):
        flags[item] = 0
        _forward_row(item, vol, origins, dirs, depths, n_views, C, fsize, out, state, flags, is_max)


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
def _max_backward_item(
    item, vol, origins, dirs, depths, n_views, C, NV, fsize, out, state, gout, n_blocks, gvol,
    need_cam, g_orig, g_depth, g_dir,
):  # fmt: skip
    """Max backward of one volume over one block of its cameras' pixel rows (work ``item``
    = ``p * NBC + volume``): the gradient goes to the sample holding the maximum, or is
    split evenly between the tied samples (``amax``'s rule)."""
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
    for r in range(rows * p // n_blocks, rows * (p + 1) // n_blocks):
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
            n, n_zero = _walk(origins, dirs, depths, g, j, i, fsize, Hp, Wp, base, wts, didx)
            total = zero  # the number of tied samples, as a float
            if top == zero:
                for _ in range(n_zero):
                    total += one
            n_tied = 0
            for q in range(n):
                if _table_value(flat, c + base[q] * sx, sx, sy, sz, wts, q, zero) == top:
                    didx[n_tied] = didx[q]
                    n_tied += 1
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


@_jit(nogil=True)
def backward(
    vol, origins, dirs, depths, n_views, C, NV, fsize, out, state, gout, n_blocks, gvol,
    need_cam, g_orig, g_depth, g_dir, is_max, start, step,
):  # fmt: skip
    """Gradients of :func:`forward` for work items ``start, start + step, ...``.

    Max: a ray whose maximum is attained once sends its gradient to that sample; a tied ray
    is walked again and its gradient split evenly between all samples equal to the maximum,
    as ``amax``'s backward does. Work item ``p * NB * NV + volume`` is block ``p`` of one
    volume's pixel rows. Absorption: every ray is walked again, once for all the volumes of
    its group; work item ``p`` is block ``p`` of all the rows.

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
        start, step: this thread's work items.
    """
    if not is_max:
        for p in range(start, n_blocks, step):
            _absorption_backward_block(
                p, vol, origins, dirs, depths, n_views, C, fsize, gout, n_blocks, gvol, need_cam,
                g_orig, g_depth, g_dir,
            )  # fmt: skip
        return
    for item in range(start, n_blocks * gvol.shape[1], step):
        _max_backward_item(
            item, vol, origins, dirs, depths, n_views, C, NV, fsize, out, state, gout, n_blocks,
            gvol, need_cam, g_orig, g_depth, g_dir,
        )  # fmt: skip


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
        forward(vol, origins, dirs, depths, 1, 1, fsize, out, state, flags, True, 0, 1)
        gvol = np.zeros((1, 1, 3, 3, 3), dtype)
        cams = (np.zeros((1, 1, 3), dtype), np.zeros((1, 1, 1), dtype))
        g_dir = np.zeros((1, 1, 1, 1, 3), dtype)
        backward(
            vol, origins, dirs, depths, 1, 1, 1, fsize, out, state, out, 1, gvol, True, *cams,
            g_dir, True, 0, 1,
        )  # fmt: skip
        unpad_sum(gvol, volume[0], 0, 1)
