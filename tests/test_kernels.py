"""persp3d.kernels: the fused kernels against the reference path (values and gradients with
respect to the volume and to K, R, t), their tie and miss handling, gradcheck, and the
backend dispatch of ``project``.

The fused kernel of the ``device`` fixture runs: numba on the CPU, Triton on CUDA (those
tests are marked ``gpu`` and skip without a GPU).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import persp3d as p3
from persp3d import kernels
from persp3d.kernels import cpu
from persp3d.projection import BACKEND_ENV, resolve_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    not cpu.available(), reason=f"numba is unavailable: {cpu.unavailable_reason()}"
)


def _needs_fused(device: torch.device, dtype: torch.dtype = torch.float32) -> None:
    reason = kernels.fused_unavailable_reason(device, dtype)
    if reason is not None:
        pytest.skip(reason)


def _cams(n=3, size=(10, 13), dtype=torch.float64, device="cpu", per_volume=0):
    """Orbit cameras with an off-centre principal point and fx != fy; ``per_volume = B``
    gives ``(B, V)`` cameras, volume b's views turned by 7 b degrees about +y."""
    cams = p3.orbit_cameras(n_views=n, image_size=size, elevation=20.0).to(dtype=dtype)
    K = cams.K.clone()
    K[..., 0, 2] += 1.7
    K[..., 1, 2] -= 0.9
    K[..., 0, 0] *= 1.1
    R, t = cams.R, cams.t
    if per_volume:
        turns = []
        for b in range(per_volume):
            a = math.radians(7.0 * b)
            c, s = math.cos(a), math.sin(a)
            turns.append(torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=dtype))
        R = R @ torch.stack(turns)[:, None]  # (B, V, 3, 3)
        K = K.expand(per_volume, *K.shape)
        t = t.expand(per_volume, *t.shape)
    return p3.Cameras(K.to(device), R.to(device), t.to(device), cams.image_size)


def _grads(volume, cams, backend, weights=None, **kwargs):
    """Output and gradients wrt (volume, K, R, t) of a weighted sum of the projection."""
    K, R, t = (x.detach().clone().requires_grad_() for x in (cams.K, cams.R, cams.t))
    volume = volume.detach().clone().requires_grad_()
    out = p3.project(volume, p3.Cameras(K, R, t, cams.image_size), backend=backend, **kwargs)
    if weights is None:
        weights = torch.linspace(0.2, 1.0, out.numel(), dtype=out.dtype, device=out.device)
        weights = weights.reshape(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), (volume, K, R, t))
    return (out.detach(), *grads)


def _assert_same(fused, reference, dtype, exact_values=False):
    names = ("values", "d/d volume", "d/d K", "d/d R", "d/d t")
    for name, a, b in zip(names, fused, reference):
        if name == "values" and exact_values:
            assert torch.equal(a, b), name
        elif dtype == torch.float64:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)
        else:
            scale = b.abs().max().item() + 1e-6
            torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5 * scale, msg=name)


@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
@pytest.mark.parametrize("views", ["shared", "per_volume"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_fused_equals_reference_values_and_gradients(mode, views, dtype, device):
    _needs_fused(device, dtype)
    torch.manual_seed(0)
    B = 2
    cams = _cams(dtype=dtype, device=device, per_volume=B if views == "per_volume" else 0)
    volume = torch.rand(B, 3, 9, 8, 7, dtype=dtype, device=device)  # odd, non-cubic, C > 1
    kwargs = dict(depth_samples=11, mode=mode, sampling="disparity")
    fused = _grads(volume, cams, "fused", **kwargs)
    reference = _grads(volume, cams, "reference", **kwargs)
    assert fused[0].shape == (B, 3, 3, 10, 13)
    # On the CPU the fused kernel reproduces grid_sample's arithmetic: the same bits.
    _assert_same(fused, reference, dtype, exact_values=device.type == "cpu" and mode == "max")


@pytest.mark.parametrize(
    "shape, out_size, depth_samples",
    [
        ((1, 1, 1, 1, 1), (3, 4), 5),  # a single voxel
        ((1, 2, 5, 1, 3), (7, 5), 1),  # a flat volume and one depth sample
        ((3, 1, 4, 6, 5), (1, 9), 3),  # one image row
        ((1, 1, 12, 3, 17), (6, 11), 40),  # depth samples finer than voxels
    ],
)
@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
def test_fused_equals_reference_on_odd_sizes(shape, out_size, depth_samples, mode, device):
    _needs_fused(device, torch.float64)
    torch.manual_seed(1)
    cams = _cams(n=2, size=(14, 18), device=device)
    volume = torch.rand(*shape, dtype=torch.float64, device=device)
    kwargs = dict(depth_samples=depth_samples, mode=mode, out_size=out_size)
    _assert_same(
        _grads(volume, cams, "fused", **kwargs),
        _grads(volume, cams, "reference", **kwargs),
        torch.float64,
    )


@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
def test_ties_and_exact_zeros_split_gradients_like_amax(mode):
    """Binary volumes: many rays attain their maximum (1, or 0 between objects) at several
    samples; amax splits the gradient evenly between them, and so must the kernel."""
    torch.manual_seed(2)
    cams = _cams(n=3, size=(9, 9))
    volume = (torch.rand(2, 1, 8, 8, 8, dtype=torch.float64) > 0.6).double()
    volume[0, 0, 2:6, 2:6, 2:6] = 1.0  # a solid block: long runs of tied samples
    kwargs = dict(depth_samples=14, mode=mode)
    weights = torch.rand(2, 3, 1, 9, 9, dtype=torch.float64)
    fused = _grads(volume, cams, "fused", weights, **kwargs)
    naive = _grads(volume, cams, "naive", weights, **kwargs)
    assert fused[1].abs().sum() > 0
    _assert_same(fused, naive, torch.float64, exact_values=True)
    # The reference path agrees in values; its tie rule (samples within 8 eps of the
    # maximum) can differ from amax's exact one inside solid blocks, where trilinear sums of
    # ones land on 1 or one ulp below it.
    reference = p3.project(volume, cams, backend="reference", **kwargs)
    assert torch.equal(fused[0], reference)


def test_volume_with_exact_zeros_and_negative_values_matches_naive():
    """Zeros inside the box tie with the zero samples outside it; negative values make 0 a
    unique maximum of some rays."""
    torch.manual_seed(3)
    cams = _cams(n=2, size=(8, 11))
    volume = torch.rand(1, 2, 6, 7, 5, dtype=torch.float64) - 0.3
    volume[volume.abs() < 0.25] = 0.0
    volume[:, 1] = -volume[:, 1].abs()  # channel 1: every sample <= 0
    kwargs = dict(depth_samples=10, mode="max", validate=False)
    weights = torch.rand(1, 2, 2, 8, 11, dtype=torch.float64)
    _assert_same(
        _grads(volume, cams, "fused", weights, **kwargs),
        _grads(volume, cams, "naive", weights, **kwargs),
        torch.float64,
        exact_values=True,
    )


@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
def test_rays_that_miss_the_box_give_zero_and_no_gradient(mode, device):
    """A wide field of view and a far range: most rays miss the box or leave it early."""
    _needs_fused(device, torch.float64)
    torch.manual_seed(4)
    cams = p3.orbit_cameras(n_views=2, fov=100.0, image_size=(12, 12), distance=1.5)
    cams = cams.to(device=device, dtype=torch.float64)
    volume = torch.rand(1, 1, 5, 5, 5, dtype=torch.float64, device=device) + 0.1
    kwargs = dict(depth_samples=16, mode=mode, near=0.2, far=4.0, validate=False)
    fused = _grads(volume, cams, "fused", **kwargs)
    _assert_same(fused, _grads(volume, cams, "reference", **kwargs), torch.float64)
    corner = fused[0][..., 0, 0]
    assert bool((corner == 0).all())  # the image corners see past the box


def test_opaque_samples_keep_exact_absorption_gradients():
    """o = 1 makes the transmittance 0: the backward pass must not divide by it."""
    cams = _cams(n=2, size=(7, 8))
    volume = torch.full((1, 1, 6, 6, 6), 0.5, dtype=torch.float64)
    volume[..., 2:4, 2:4, 2:4] = 1.0
    kwargs = dict(depth_samples=24, mode="absorption")
    fused = _grads(volume, cams, "fused", **kwargs)
    assert bool(torch.isfinite(fused[1]).all())
    _assert_same(fused, _grads(volume, cams, "naive", **kwargs), torch.float64)


# -- one-volume fast path (NV == 1: block skips, early stop, vectorised geometry) --------
def _sparse_volume(B=1, R=16, dtype=torch.float64, seed=8):
    """Occupancy with empty blocks (exact zeros), a solid block of ones (ties for max, opaque
    rays for absorption), a near-opaque shell and low random values elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    volume = 0.3 * torch.rand(B, 1, R, R, R, generator=gen, dtype=dtype)
    volume[:, :, : R // 4] = 0.0  # empty slabs, many whole blocks of zeros
    volume[:, :, :, :, -R // 4 :] = 0.0
    q = R // 4
    volume[:, :, q : 3 * q, q : 3 * q, q : 2 * q] = 0.995  # near-opaque
    volume[:, :, q + 1 : 3 * q - 1, q + 1 : 3 * q - 1, q + 1 : 3 * q - 1] = 1.0  # solid
    volume[:, :, 3 * q - 1, 2, 3] = 0.97  # a lone peak in the low region
    return volume


@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
@pytest.mark.parametrize("views", ["one_volume", "per_volume"])
def test_one_volume_fast_path_equals_naive_on_empty_blocks_ties_and_opaque_rays(mode, views):
    """One volume per camera group (one volume, or per-volume views of one channel): the
    walk that skips blocks and stops opaque rays gives naive's values and gradients (max:
    the same bits and amax's tie split; absorption: within the documented eps, far below
    the float64 tolerance)."""
    B = 1 if views == "one_volume" else 2
    cams = _cams(n=3, size=(11, 13), per_volume=B if views == "per_volume" else 0)
    volume = _sparse_volume(B)
    weights = torch.rand(
        B, 3, 1, 11, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(9)
    )
    kwargs = dict(depth_samples=29, mode=mode)
    fused = _grads(volume, cams, "fused", weights, **kwargs)
    naive = _grads(volume, cams, "naive", weights, **kwargs)
    assert fused[1].abs().sum() > 0
    assert bool((fused[0] > 1 - 1e-12).any()), "some rays must be opaque / hit the solid"
    assert bool((fused[0] == 0).any()), "some rays must see only empty space"
    _assert_same(fused, naive, torch.float64, exact_values=mode == "max")


def test_absorption_early_stop_stays_within_eps_in_float32():
    """Opaque float32 rays stop once the product of their factors (the smallest left out)
    falls below 2**-24: values within that of naive's, gradients within float32 rounding."""
    cams = _cams(n=2, size=(9, 10), dtype=torch.float32)
    volume = _sparse_volume(1, dtype=torch.float32)
    volume[:, :, 4:12, 4:12, 4:12] = torch.maximum(
        volume[:, :, 4:12, 4:12, 4:12], torch.tensor(0.8)
    )
    kwargs = dict(depth_samples=40, mode="absorption")
    fused = _grads(volume, cams, "fused", **kwargs)
    naive = _grads(volume, cams, "naive", **kwargs)
    assert (fused[0] - naive[0]).abs().max() <= 2**-24 + 2e-7
    _assert_same(fused, naive, torch.float32)


def test_max_block_skip_keeps_the_first_index_and_tie_counts():
    """A ray that meets its maximum early and lower blocks afterwards skips them; ties at
    the maximum inside skipped-looking blocks are still counted (binary volume, 0/1)."""
    torch.manual_seed(10)
    cams = _cams(n=3, size=(12, 12))
    volume = (torch.rand(1, 1, 16, 16, 16, dtype=torch.float64) > 0.85).double() * 0.5
    volume[:, :, 6:10, 6:10, 6:10] = 1.0  # the maximum, tied along each ray through it
    volume[:, :, 0:4] = 0.0
    weights = torch.rand(1, 3, 1, 12, 12, dtype=torch.float64)
    kwargs = dict(depth_samples=33, mode="max")
    _assert_same(
        _grads(volume, cams, "fused", weights, **kwargs),
        _grads(volume, cams, "naive", weights, **kwargs),
        torch.float64,
        exact_values=True,
    )


@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
def test_depth_order_does_not_matter_to_the_one_volume_walk(mode):
    """Depths in any order (the walk bisects ascending ones and scans the rest): max is
    the same bits, absorption the same product in another order."""
    from persp3d.projection import _prepare

    torch.manual_seed(11)
    volume = _sparse_volume(1)
    cams = _cams(n=2, size=(7, 9))
    frustum, _ = _prepare(volume, cams, None, 17, None, "depth", None, None)
    o = frustum.origins.reshape(-1, 3)
    d = frustum.directions.reshape(-1, 7, 9, 3)
    z = frustum.depths.reshape(-1, 17)
    forward = cpu.fused_project_cpu(volume, o, d, z, False, mode)
    backward = cpu.fused_project_cpu(volume, o, d, z.flip(-1).contiguous(), False, mode)
    if mode == "max":
        assert torch.equal(forward, backward)
    else:
        torch.testing.assert_close(forward, backward, rtol=1e-12, atol=1e-14)


def test_kept_absorption_factors_survive_other_calls_and_repeated_backward():
    """One-volume absorption keeps its samples' factors for its backward pass in reused
    buffers: graphs alive at once, later forward passes and a second backward pass of the
    same graph must each see their own."""
    cams = _cams(n=2, size=(8, 9))
    volumes = [_sparse_volume(1, seed=s).requires_grad_() for s in (13, 14, 15)]
    outs = [p3.project(v, cams, depth_samples=21, mode="absorption") for v in volumes]
    grads = []
    for v, out in zip(volumes[::-1], outs[::-1]):  # backward in the reverse order
        (g1,) = torch.autograd.grad(out.square().sum(), v, retain_graph=True)
        other = p3.project(
            v.detach().flip(2).requires_grad_(), cams, depth_samples=21, mode="absorption"
        )
        other.sum().backward()  # a forward and backward pass in between
        (g2,) = torch.autograd.grad(out.square().sum(), v)
        assert torch.equal(g1, g2)
        grads.append(g1)
    for v, g in zip(volumes[::-1], grads):
        naive = p3.project(v, cams, depth_samples=21, mode="absorption", backend="naive")
        (expected,) = torch.autograd.grad(naive.square().sum(), v)
        torch.testing.assert_close(g, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
@pytest.mark.parametrize("views", ["one_volume", "per_volume"])
def test_gradcheck_through_the_one_volume_fast_path(mode, views):
    """Finite differences agree with the fast path's backward (volume and K, R, t), on a
    volume with empty blocks and opaque rays (an early stop moves with the values by less
    than 2**-53, invisible to the differences)."""
    B = 1 if views == "one_volume" else 2
    base = _cams(n=2, size=(5, 6), per_volume=B if views == "per_volume" else 0)
    volume = _sparse_volume(B, R=8, seed=12).clamp(0.02, 0.98)
    volume[:, :, :2] = 0.0
    volume.requires_grad_(True)
    K, R, t = (x.clone().requires_grad_() for x in (base.K, base.R, base.t))

    def fn(volume, K, R, t):
        cams = p3.Cameras(K, R, t, base.image_size)
        # validate=False: the differences step the empty blocks' zeros to -1e-6.
        return p3.project(volume, cams, depth_samples=9, mode=mode, backend="fused", validate=False)

    assert torch.autograd.gradcheck(fn, (volume, K, R, t), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("mode", kernels.FUSED_MODES)
@pytest.mark.parametrize("views", ["shared", "per_volume"])
def test_gradcheck_through_the_fused_backend(mode, views):
    torch.manual_seed(5)
    base = _cams(n=2, size=(5, 6), per_volume=2 if views == "per_volume" else 0)
    volume = torch.rand(2, 2, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    K, R, t = (x.clone().requires_grad_() for x in (base.K, base.R, base.t))

    def fn(volume, K, R, t):
        cams = p3.Cameras(K, R, t, base.image_size)
        return p3.project(volume, cams, depth_samples=7, mode=mode, backend="fused")

    assert torch.autograd.gradcheck(fn, (volume, K, R, t), eps=1e-6, atol=1e-6, fast_mode=True)


def test_results_do_not_depend_on_the_thread_count():
    torch.manual_seed(6)
    cams = _cams(n=3, size=(9, 10), dtype=torch.float32)
    volume = torch.rand(3, 1, 8, 8, 8)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(_grads(volume, cams, "fused", depth_samples=12))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    # The gradients are sums of float32 per-block partial sums, in an order that follows the
    # number of blocks (twice the threads): equal to a few float32 ulps of their scale.
    for a, b in zip(results[0][1:], results[1][1:]):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * scale)


def test_non_contiguous_volume_and_no_grad_calls():
    torch.manual_seed(7)
    cams = _cams(n=2, size=(6, 7), dtype=torch.float32)
    volume = torch.rand(1, 7, 6, 5, 2).permute(0, 4, 3, 2, 1)  # (1, 2, 5, 6, 7), strided
    with torch.no_grad():
        fused = p3.project(volume, cams, depth_samples=9, backend="fused")
    torch.testing.assert_close(
        fused, p3.project(volume.contiguous(), cams, depth_samples=9, backend="reference")
    )


# -- dispatch ------------------------------------------------------------------------------
def test_auto_picks_the_fused_kernel_on_cpu(monkeypatch):
    assert kernels.warm_up()  # compiled (or loaded from numba's cache) ahead of the calls
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    cpu_device = torch.device("cpu")
    for dtype in (torch.float32, torch.float64):
        for mode in kernels.FUSED_MODES:
            assert resolve_backend("auto", mode, cpu_device, dtype) == "fused"
    assert resolve_backend("auto", "smooth", cpu_device, torch.float32) == "reference"
    assert resolve_backend("auto", "max", cpu_device, torch.float16) == "reference"
    calls = []
    original = cpu.fused_project_cpu

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(cpu, "fused_project_cpu", spy)
    volume = torch.rand(1, 1, 4, 4, 4)
    cams = _cams(n=2, size=(4, 5), dtype=torch.float32)
    p3.project(volume, cams, depth_samples=4)
    p3.project(volume, cams, depth_samples=4, mode="absorption")
    p3.project(volume, cams, depth_samples=4, mode="smooth")
    p3.project(volume, cams, depth_samples=4, backend="reference")
    assert calls == ["max", "absorption"]


@pytest.mark.parametrize(
    "env, mode, expected",
    [
        ("reference", "max", "reference"),
        ("naive", "absorption", "naive"),
        ("fused", "max", "fused"),
        ("FUSED", "absorption", "fused"),
        ("fused", "smooth", "reference"),  # the kernels have no smooth mode
        ("auto", "max", "fused"),
        ("", "max", "fused"),
    ],
)
def test_environment_variable_sets_what_auto_means(monkeypatch, env, mode, expected):
    monkeypatch.setenv(BACKEND_ENV, env)
    assert resolve_backend("auto", mode, torch.device("cpu"), torch.float32) == expected
    # An explicit backend wins over the environment.
    assert resolve_backend("reference", mode, torch.device("cpu"), torch.float32) == "reference"


def test_environment_variable_reroutes_project(monkeypatch):
    calls = []
    original = cpu.fused_project_cpu
    monkeypatch.setattr(cpu, "fused_project_cpu", lambda *a: calls.append(a[-1]) or original(*a))
    volume = torch.rand(1, 1, 4, 4, 4)
    cams = _cams(n=2, size=(4, 5), dtype=torch.float32)
    monkeypatch.setenv(BACKEND_ENV, "reference")
    p3.project(volume, cams, depth_samples=4)
    assert calls == []
    p3.project(volume, cams, depth_samples=4, backend="fused")  # explicit beats the variable
    monkeypatch.setenv(BACKEND_ENV, "fused")
    p3.project(volume, cams, depth_samples=4, mode="absorption")
    assert calls == ["max", "absorption"]


def test_bad_backends_raise_clear_errors(monkeypatch):
    volume = torch.rand(1, 1, 4, 4, 4)
    cams = _cams(n=1, size=(4, 4), dtype=torch.float32)
    with pytest.raises(ValueError, match="backend 'fused' supports modes"):
        p3.project(volume, cams, depth_samples=4, mode="smooth", backend="fused")
    with pytest.raises(RuntimeError, match="support float32 and float64, not torch.float16"):
        p3.project(volume.half(), cams, depth_samples=4, backend="fused")
    monkeypatch.setenv(BACKEND_ENV, "gpu")
    with pytest.raises(ValueError, match="PERSP3D_BACKEND must be one of"):
        p3.project(volume, cams, depth_samples=4)
    monkeypatch.delenv(BACKEND_ENV)
    monkeypatch.setattr(cpu, "unavailable_reason", lambda: "numba is not importable (test)")
    with pytest.raises(RuntimeError, match="numba is not importable"):
        p3.project(volume, cams, depth_samples=4, backend="fused")
    # Without numba, auto falls back to the reference path.
    assert resolve_backend("auto", "max", torch.device("cpu"), torch.float32) == "reference"
    torch.testing.assert_close(
        p3.project(volume, cams, depth_samples=4),
        p3.project(volume, cams, depth_samples=4, backend="reference"),
    )


_INTERPRETED_TRITON = r"""
import json, torch
import persp3d as p3
from persp3d.projection import _prepare
from persp3d.kernels.triton_kernels import fused_project_triton
torch.manual_seed(0)
errors = {}
for mode in ("max", "absorption"):
    for per_volume in (False, True):
        base = p3.orbit_cameras(n_views=2, image_size=(5, 6), elevation=20.0).double()
        K, R, t = base.K, base.R, base.t
        if per_volume:
            K, R, t = K.expand(2, 2, 3, 3), R.expand(2, 2, 3, 3), t.expand(2, 2, 3)
        K, R, t = (x.clone().requires_grad_() for x in (K, R, t))
        cams = p3.Cameras(K, R, t, base.image_size)
        volume = torch.rand(2, 2, 5, 4, 3, dtype=torch.float64)
        if mode == "max":
            volume = (volume > 0.5).double()  # ties
        volume.requires_grad_()
        frustum, _ = _prepare(volume, cams, None, 7, None, "depth", None, None)
        out = fused_project_triton(
            volume, frustum.origins.reshape(-1, 3),
            frustum.directions.reshape(-1, 5, 6, 3), frustum.depths.reshape(-1, 7),
            per_volume, mode,
        ).permute(0, 2, 1, 3, 4)
        naive = p3.project(volume, cams, depth_samples=7, mode=mode, backend="naive")
        w = torch.rand_like(out)
        ga = torch.autograd.grad((out * w).sum(), (volume, K, R, t))
        gb = torch.autograd.grad((naive * w).sum(), (volume, K, R, t))
        diffs = [(out - naive).abs().max().item()]
        diffs += [(a - b).abs().max().item() for a, b in zip(ga, gb)]
        errors[f"{mode} per_volume={per_volume}"] = max(diffs)
print(json.dumps(errors))
"""


@pytest.mark.slow
def test_triton_kernels_equal_naive_in_the_triton_interpreter():
    """The Triton kernels' logic, run on the CPU by Triton's interpreter (no GPU needed):
    values and gradients (volume, K, R, t) equal the naive path, ties included."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", _INTERPRETED_TRITON],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors) == 4 and max(errors.values()) < 1e-10, errors


@pytest.mark.gpu
def test_auto_picks_the_triton_kernel_on_cuda():
    """On CUDA the fused backend is the Triton kernel (the equality tests above run it
    through the ``device`` fixture)."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    reason = kernels.fused_unavailable_reason("cuda", torch.float32)
    if reason is not None:
        pytest.skip(reason)
    assert resolve_backend("auto", "max", torch.device("cuda"), torch.float32) == "fused"


# -- memory --------------------------------------------------------------------------------
@pytest.mark.slow
def test_fused_peak_memory_is_a_twentieth_of_the_naive_one():
    """B=8, V=24, 32^3 volume, 64x64, D=64, forward + backward (the issue's size)."""
    script = os.path.join(ROOT, "benchmarks", "bench_projection.py")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    peaks = {}
    for method in ("naive", "fused"):
        args = [sys.executable, script, "--child", method, "8", "24", "32", "64", "64", "1"]
        out = subprocess.run(
            [*args, "--repeats", "1"], capture_output=True, text=True, env=env, check=True
        )
        peaks[method] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    assert peaks["naive"] > 400, peaks
    assert peaks["fused"] * 20 <= peaks["naive"], peaks


# -- OpenMP wait policy ----------------------------------------------------------------------
def _python(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


_FUSED_CALL = (
    "torch.set_num_threads(2); v = torch.rand(1, 1, 4, 4, 4); "
    "c = p3.orbit_cameras(n_views=2, image_size=(4, 4)); "
    "[p3.project(v, c, depth_samples=4, backend='fused') for _ in range(2)]; "
)


def test_importing_persp3d_first_makes_torch_openmp_threads_sleep():
    """With no variable set, ``import persp3d`` chooses OMP_WAIT_POLICY=PASSIVE before torch
    loads its OpenMP runtime (which reads it only then), and no warning follows."""
    code = (
        "import os, persp3d as p3, torch; " + _FUSED_CALL + "print(os.environ['OMP_WAIT_POLICY'])"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["PASSIVE"]
    assert "ThreadingWarning" not in result.stderr


def test_a_policy_chosen_outside_is_kept():
    result = _python(
        "import os, persp3d; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ACTIVE"]


def test_torch_imported_first_warns_once_at_the_first_fused_call():
    code = (
        "import os, torch, persp3d as p3; "
        + _FUSED_CALL
        + "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["None"]  # too late to set: torch has read it
    assert result.stderr.count("ThreadingWarning") == 1
    assert "Import persp3d before torch, or set OMP_WAIT_POLICY=PASSIVE" in result.stderr
    # ... and not when the environment chose a policy.
    quiet = _python(
        code.replace("print(os.environ.get('OMP_WAIT_POLICY'))", "0"), OMP_WAIT_POLICY="PASSIVE"
    )
    assert quiet.returncode == 0 and "ThreadingWarning" not in quiet.stderr
