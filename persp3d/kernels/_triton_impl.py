"""Triton kernels of the fused GPU projection (imported lazily by
:mod:`persp3d.kernels.triton_kernels`, which documents them; this module imports triton).

Projection stage (cameras -> frustum -> sampling -> **projection**).

Convention: see :mod:`persp3d.kernels.triton_kernels`: ray ``r = ((k * G + g) * h + j) * w
+ i``; the sample at depth index ``d`` is ``origin + depths[d] * direction`` in
``grid_sample`` coordinates, sampled as ``grid_sample(align_corners=False,
padding_mode="zeros")`` does.
"""

import triton
import triton.language as tl

__all__ = ["backward_kernel", "forward_kernel"]


@triton.jit
def _corners(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, mask):
    """Indices, masks and weights of the eight corners of one sample per lane."""
    gx = ox + z * dx
    gy = oy + z * dy
    gz = oz + z * dz
    x = ((gx + 1.0) * W - 1.0) * 0.5
    y = ((gy + 1.0) * H - 1.0) * 0.5
    zz = ((gz + 1.0) * D - 1.0) * 0.5
    inside = mask & (x >= -1.0) & (x < W) & (y >= -1.0) & (y < H) & (zz >= -1.0) & (zz < D)
    x = tl.where(inside, x, 0.0)
    y = tl.where(inside, y, 0.0)
    zz = tl.where(inside, zz, 0.0)
    x0 = tl.floor(x)
    y0 = tl.floor(y)
    z0 = tl.floor(zz)
    xi = x0.to(tl.int32)
    yi = y0.to(tl.int32)
    zi = z0.to(tl.int32)
    ax0 = (x0 + 1.0) - x
    ax1 = x - x0
    ay0 = (y0 + 1.0) - y
    ay1 = y - y0
    az0 = (z0 + 1.0) - zz
    az1 = zz - z0
    mx0 = xi >= 0
    mx1 = xi + 1 < W
    my0 = yi >= 0
    my1 = yi + 1 < H
    mz0 = zi >= 0
    mz1 = zi + 1 < D
    base = vbase + ((zi * H + yi) * W + xi).to(tl.int64)
    return (inside, base, ax0, ax1, ay0, ay1, az0, az1, mx0, mx1, my0, my1, mz0, mz1)


@triton.jit
def _sample(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, mask):
    """Trilinear samples (0 outside the box) and whether each lies inside."""
    inside, base, ax0, ax1, ay0, ay1, az0, az1, mx0, mx1, my0, my1, mz0, mz1 = _corners(
        vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, mask
    )
    HW = H * W
    v000 = tl.load(vol_ptr + base, mask=inside & mx0 & my0 & mz0, other=0.0)
    v100 = tl.load(vol_ptr + base + 1, mask=inside & mx1 & my0 & mz0, other=0.0)
    v010 = tl.load(vol_ptr + base + W, mask=inside & mx0 & my1 & mz0, other=0.0)
    v110 = tl.load(vol_ptr + base + W + 1, mask=inside & mx1 & my1 & mz0, other=0.0)
    v001 = tl.load(vol_ptr + base + HW, mask=inside & mx0 & my0 & mz1, other=0.0)
    v101 = tl.load(vol_ptr + base + HW + 1, mask=inside & mx1 & my0 & mz1, other=0.0)
    v011 = tl.load(vol_ptr + base + HW + W, mask=inside & mx0 & my1 & mz1, other=0.0)
    v111 = tl.load(vol_ptr + base + HW + W + 1, mask=inside & mx1 & my1 & mz1, other=0.0)
    wxy00 = ax0 * ay0
    wxy10 = ax1 * ay0
    wxy01 = ax0 * ay1
    wxy11 = ax1 * ay1
    s = v000 * (wxy00 * az0)
    s += v100 * (wxy10 * az0)
    s += v010 * (wxy01 * az0)
    s += v110 * (wxy11 * az0)
    s += v001 * (wxy00 * az1)
    s += v101 * (wxy10 * az1)
    s += v011 * (wxy01 * az1)
    s += v111 * (wxy11 * az1)
    return s, inside


@triton.jit
def _backward_sample(
    vol_ptr,
    gvol_ptr,
    vbase,
    ox,
    oy,
    oz,
    dx,
    dy,
    dz,
    z,
    D,
    H,
    W,
    scale,
    mask,
    NEED_CAM: tl.constexpr,
):
    """Scatter ``scale * d sample / d volume``; return ``scale * d sample / d position``
    (grid coordinates; zeros unless ``NEED_CAM``)."""
    inside, base, ax0, ax1, ay0, ay1, az0, az1, mx0, mx1, my0, my1, mz0, mz1 = _corners(
        vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, mask
    )
    HW = H * W
    m000 = inside & mx0 & my0 & mz0
    m100 = inside & mx1 & my0 & mz0
    m010 = inside & mx0 & my1 & mz0
    m110 = inside & mx1 & my1 & mz0
    m001 = inside & mx0 & my0 & mz1
    m101 = inside & mx1 & my0 & mz1
    m011 = inside & mx0 & my1 & mz1
    m111 = inside & mx1 & my1 & mz1
    wxy00 = ax0 * ay0
    wxy10 = ax1 * ay0
    wxy01 = ax0 * ay1
    wxy11 = ax1 * ay1
    tl.atomic_add(gvol_ptr + base, wxy00 * az0 * scale, mask=m000)
    tl.atomic_add(gvol_ptr + base + 1, wxy10 * az0 * scale, mask=m100)
    tl.atomic_add(gvol_ptr + base + W, wxy01 * az0 * scale, mask=m010)
    tl.atomic_add(gvol_ptr + base + W + 1, wxy11 * az0 * scale, mask=m110)
    tl.atomic_add(gvol_ptr + base + HW, wxy00 * az1 * scale, mask=m001)
    tl.atomic_add(gvol_ptr + base + HW + 1, wxy10 * az1 * scale, mask=m101)
    tl.atomic_add(gvol_ptr + base + HW + W, wxy01 * az1 * scale, mask=m011)
    tl.atomic_add(gvol_ptr + base + HW + W + 1, wxy11 * az1 * scale, mask=m111)
    px = tl.zeros_like(scale)
    py = tl.zeros_like(scale)
    pz = tl.zeros_like(scale)
    if NEED_CAM:
        v000 = tl.load(vol_ptr + base, mask=m000, other=0.0)
        v100 = tl.load(vol_ptr + base + 1, mask=m100, other=0.0)
        v010 = tl.load(vol_ptr + base + W, mask=m010, other=0.0)
        v110 = tl.load(vol_ptr + base + W + 1, mask=m110, other=0.0)
        v001 = tl.load(vol_ptr + base + HW, mask=m001, other=0.0)
        v101 = tl.load(vol_ptr + base + HW + 1, mask=m101, other=0.0)
        v011 = tl.load(vol_ptr + base + HW + W, mask=m011, other=0.0)
        v111 = tl.load(vol_ptr + base + HW + W + 1, mask=m111, other=0.0)
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
        px = tl.where(inside, gix * (W * 0.5) * scale, 0.0)
        py = tl.where(inside, giy * (H * 0.5) * scale, 0.0)
        pz = tl.where(inside, giz * (D * 0.5) * scale, 0.0)
    return px, py, pz


@triton.jit
def _chain(gorig_ptr, gdir_ptr, gdepth_ptr, g, rem, d, Dz, z, dx, dy, dz, px, py, pz, mask):
    """Chain rule of ``position = origin + z * direction`` (atomic adds)."""
    tl.atomic_add(gorig_ptr + g * 3, px, mask=mask)
    tl.atomic_add(gorig_ptr + g * 3 + 1, py, mask=mask)
    tl.atomic_add(gorig_ptr + g * 3 + 2, pz, mask=mask)
    tl.atomic_add(gdir_ptr + rem * 3, z * px, mask=mask)
    tl.atomic_add(gdir_ptr + rem * 3 + 1, z * py, mask=mask)
    tl.atomic_add(gdir_ptr + rem * 3 + 2, z * pz, mask=mask)
    tl.atomic_add(gdepth_ptr + g * Dz + d, dx * px + dy * py + dz * pz, mask=mask)


@triton.jit
def _rays(r0, n_rays, NV, G, HW, n_views, D, H, W, orig_ptr, dir_ptr, BLOCK: tl.constexpr):
    """Per-lane ray indices and geometry of the block starting at ray ``r0``."""
    r = r0 + tl.arange(0, BLOCK)
    active = r < n_rays
    r = tl.where(active, r, 0)
    k = r // (G * HW)
    rem = r - k * (G * HW)  # g * HW + pixel
    g = rem // HW
    vb = (g // n_views) * NV + k  # index of the volume in (B * C, D, H, W)
    vbase = vb.to(tl.int64) * (D * H * W)
    ox = tl.load(orig_ptr + g * 3, mask=active, other=0.0)
    oy = tl.load(orig_ptr + g * 3 + 1, mask=active, other=0.0)
    oz = tl.load(orig_ptr + g * 3 + 2, mask=active, other=0.0)
    dx = tl.load(dir_ptr + rem * 3, mask=active, other=0.0)
    dy = tl.load(dir_ptr + rem * 3 + 1, mask=active, other=0.0)
    dz = tl.load(dir_ptr + rem * 3 + 2, mask=active, other=0.0)
    return r, active, rem, g, vbase, ox, oy, oz, dx, dy, dz


@triton.jit
def forward_kernel(
    vol_ptr,
    orig_ptr,
    dir_ptr,
    depth_ptr,
    out_ptr,
    state_ptr,
    n_rays,
    NV,
    G,
    HW,
    n_views,
    Dz,
    D,
    H,
    W,
    IS_MAX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r, active, _rem, g, vbase, ox, oy, oz, dx, dy, dz = _rays(
        tl.program_id(0) * BLOCK,
        n_rays,
        NV,
        G,
        HW,
        n_views,
        D,
        H,
        W,
        orig_ptr,
        dir_ptr,
        BLOCK,
    )
    z = tl.load(depth_ptr + g * Dz, mask=active, other=0.0)
    s, inside = _sample(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, active)
    n_inside = inside.to(tl.int32)
    if IS_MAX:
        acc = s
        arg = tl.zeros_like(n_inside)
        count = tl.full(n_inside.shape, 1, tl.int32)
    else:
        acc = 1.0 - s
    for d in range(1, Dz):
        z = tl.load(depth_ptr + g * Dz + d, mask=active, other=0.0)
        s, inside = _sample(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, active)
        n_inside += inside.to(tl.int32)
        if IS_MAX:
            gt = s > acc
            count = tl.where(gt, 1, tl.where(s == acc, count + 1, count))
            arg = tl.where(gt, d, arg)
            acc = tl.where(gt, s, acc)
        else:
            acc = acc * (1.0 - s)
    if IS_MAX:
        tl.store(out_ptr + r, acc, mask=active)
        state = tl.where(n_inside == 0, -2, tl.where(count == 1, arg, -1))
        tl.store(state_ptr + r, state, mask=active)
    else:
        tl.store(out_ptr + r, 1.0 - acc, mask=active)


@triton.jit
def backward_kernel(
    vol_ptr,
    orig_ptr,
    dir_ptr,
    depth_ptr,
    out_ptr,
    state_ptr,
    gout_ptr,
    gvol_ptr,
    gorig_ptr,
    gdir_ptr,
    gdepth_ptr,
    n_rays,
    NV,
    G,
    HW,
    n_views,
    Dz,
    D,
    H,
    W,
    IS_MAX: tl.constexpr,
    NEED_CAM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r, active, rem, g, vbase, ox, oy, oz, dx, dy, dz = _rays(
        tl.program_id(0) * BLOCK,
        n_rays,
        NV,
        G,
        HW,
        n_views,
        D,
        H,
        W,
        orig_ptr,
        dir_ptr,
        BLOCK,
    )
    grad = tl.load(gout_ptr + r, mask=active, other=0.0)
    live = active & (grad != 0.0)
    if IS_MAX:
        st = tl.load(state_ptr + r, mask=active, other=-2)
        single = live & (st >= 0)
        d = tl.where(single, st, 0)
        z = tl.load(depth_ptr + g * Dz + d, mask=single, other=0.0)
        px, py, pz = _backward_sample(
            vol_ptr,
            gvol_ptr,
            vbase,
            ox,
            oy,
            oz,
            dx,
            dy,
            dz,
            z,
            D,
            H,
            W,
            grad,
            single,
            NEED_CAM,
        )
        if NEED_CAM:
            _chain(
                gorig_ptr, gdir_ptr, gdepth_ptr, g, rem, d, Dz, z, dx, dy, dz, px, py, pz, single
            )
        tied = live & (st == -1)
        if tl.max(tied.to(tl.int32), axis=0) > 0:
            # amax's rule: split the gradient evenly between the tied samples.
            top = tl.load(out_ptr + r, mask=tied, other=0.0)
            total = tl.zeros_like(grad)
            for dd in range(0, Dz):
                z = tl.load(depth_ptr + g * Dz + dd, mask=tied, other=0.0)
                s, inside = _sample(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, tied)
                total += tl.where(tied & (s == top), 1.0, 0.0)
            share = grad / tl.where(tied, total, 1.0)
            for dd in range(0, Dz):
                z = tl.load(depth_ptr + g * Dz + dd, mask=tied, other=0.0)
                s, inside = _sample(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, tied)
                hit = tied & (s == top)
                px, py, pz = _backward_sample(
                    vol_ptr,
                    gvol_ptr,
                    vbase,
                    ox,
                    oy,
                    oz,
                    dx,
                    dy,
                    dz,
                    z,
                    D,
                    H,
                    W,
                    share,
                    hit,
                    NEED_CAM,
                )
                if NEED_CAM:
                    _chain(
                        gorig_ptr,
                        gdir_ptr,
                        gdepth_ptr,
                        g,
                        rem,
                        dd,
                        Dz,
                        z,
                        dx,
                        dy,
                        dz,
                        px,
                        py,
                        pz,
                        hit,
                    )
    else:
        # d (1 - prod f) / d o_i = prod_{j != i} f_j with f = 1 - o: the product of the
        # non-zero factors and the number of zero factors make it exact when some f = 0.
        nonzero = tl.full(grad.shape, 1.0, grad.dtype)
        n_zero = tl.zeros_like(r)
        for dd in range(0, Dz):
            z = tl.load(depth_ptr + g * Dz + dd, mask=live, other=0.0)
            s, inside = _sample(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, live)
            f = 1.0 - s
            n_zero += (f == 0.0).to(tl.int32)
            nonzero = nonzero * tl.where(f == 0.0, 1.0, f)
        for dd in range(0, Dz):
            z = tl.load(depth_ptr + g * Dz + dd, mask=live, other=0.0)
            s, inside = _sample(vol_ptr, vbase, ox, oy, oz, dx, dy, dz, z, D, H, W, live)
            f = 1.0 - s
            is_zero = f == 0.0
            others = tl.where(is_zero, nonzero, nonzero / tl.where(is_zero, 1.0, f))
            others = tl.where(n_zero - is_zero.to(tl.int32) > 0, 0.0, others)
            hit = live & inside
            px, py, pz = _backward_sample(
                vol_ptr,
                gvol_ptr,
                vbase,
                ox,
                oy,
                oz,
                dx,
                dy,
                dz,
                z,
                D,
                H,
                W,
                grad * others,
                hit,
                NEED_CAM,
            )
            if NEED_CAM:
                _chain(
                    gorig_ptr, gdir_ptr, gdepth_ptr, g, rem, dd, Dz, z, dx, dy, dz, px, py, pz, hit
                )
