"""project / PerspectiveTransformer: agreement with the naive baseline, analytic cases,
gradients, batching, memory, and errors."""

import itertools
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import persp3d as p3
from persp3d.projection import MODES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cams(n=4, size=(12, 16), dtype=torch.float64, **kw):
    return p3.orbit_cameras(n_views=n, image_size=size, elevation=20.0, **kw).to(dtype=dtype)


def _off_centre(cams):
    """The same cameras with a shifted principal point and unequal focal lengths."""
    K = cams.K.clone()
    K[..., 0, 2] += 1.7
    K[..., 1, 2] -= 0.9
    K[..., 0, 0] *= 1.1
    return p3.Cameras(K, cams.R, cams.t, cams.image_size)


def _batched(cams, B):
    """(B, V) cameras, different for every volume: volume b sees the views turned by
    37 * b + 6 degrees about +y and tilted by 11 * b degrees about +x, with its focal length
    scaled by 1 + 0.07 b, so a mix-up of volumes and views changes the silhouettes."""
    Ks, Rs = [], []
    for b in range(B):
        a, e = math.radians(37.0 * b + 6.0), math.radians(11.0 * b)
        turn = torch.tensor(
            [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]],
            dtype=cams.dtype,
        )
        tilt = torch.tensor(
            [[1.0, 0.0, 0.0], [0.0, math.cos(e), -math.sin(e)], [0.0, math.sin(e), math.cos(e)]],
            dtype=cams.dtype,
        )
        Rs.append(cams.R @ turn @ tilt)
        K = cams.K.clone()
        K[..., :2, :2] *= 1.0 + 0.07 * b
        Ks.append(K)
    t = cams.t.expand(B, *cams.t.shape)
    return p3.Cameras(torch.stack(Ks), torch.stack(Rs), t, cams.image_size)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("views", ["shared", "per_volume"])
def test_project_equals_naive_grid_sample_reduction_with_gradients(mode, views):
    torch.manual_seed(0)
    cams = _off_centre(_cams(size=(10, 13)))
    if views == "per_volume":
        cams = _batched(cams, 2)
    volume = torch.rand(2, 3, 9, 8, 7, dtype=torch.float64, requires_grad=True)
    kwargs = dict(depth_samples=11, mode=mode, sampling="disparity", temperature=0.1)
    lean = p3.project(volume, cams, chunk_size=4, backend="reference", **kwargs)
    naive = p3.naive_project(volume, cams, **kwargs)
    assert lean.shape == (2, 4, 3, 10, 13)
    torch.testing.assert_close(lean, naive, rtol=1e-12, atol=1e-12)
    weights = torch.rand_like(lean)
    (g_lean,) = torch.autograd.grad((lean * weights).sum(), volume)
    (g_naive,) = torch.autograd.grad((naive * weights).sum(), volume)
    torch.testing.assert_close(g_lean, g_naive, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_camera_gradients_equal_naive(mode):
    torch.manual_seed(1)
    base = _off_centre(_cams(n=3, size=(8, 9)))
    K, R, t = (x.clone().requires_grad_() for x in (base.K, base.R, base.t))
    volume = torch.rand(1, 1, 6, 6, 6, dtype=torch.float64)
    grads = []
    for fn in (p3.project, p3.naive_project):
        out = fn(volume, p3.Cameras(K, R, t, base.image_size), depth_samples=9, mode=mode)
        grads.append(
            torch.autograd.grad(
                (out * torch.linspace(0, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum(),
                (K, R, t),
            )
        )
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_wrt_volume_and_cameras(mode):
    torch.manual_seed(2)
    base = _cams(n=2, size=(5, 6))
    volume = torch.rand(1, 2, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    K, R, t = (x.clone().requires_grad_() for x in (base.K, base.R, base.t))

    def fn(volume, K, R, t):
        return p3.project(
            volume,
            p3.Cameras(K, R, t, base.image_size),
            depth_samples=6,
            mode=mode,
            chunk_size=2,
            temperature=0.2,
            backend="reference",
        )

    assert torch.autograd.gradcheck(fn, (volume, K, R, t), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("backend", ["reference", "naive", "auto"])
@pytest.mark.parametrize("mode", ["max", "absorption"])
def test_per_volume_cameras_equal_a_loop_over_volumes_each_with_its_own_views(backend, mode):
    """B=3 volumes, V=2 views each, every volume with its own cameras: the batched call must
    equal projecting each volume alone with its cameras; a B/V mix-up would not."""
    torch.manual_seed(11)
    cams = _batched(_off_centre(_cams(n=2, size=(9, 11))), 3)  # (3, 2)
    assert not torch.allclose(cams.R[0], cams.R[1]) and not torch.allclose(cams.K[1], cams.K[2])
    volume = torch.rand(3, 2, 8, 7, 9, dtype=torch.float64)
    volume[:, :, 2:5] = 0.0  # asymmetric content, so different views differ
    out = p3.project(volume, cams, depth_samples=10, mode=mode, backend=backend, chunk_size=3)
    assert out.shape == (3, 2, 2, 9, 11)
    for b in range(3):
        alone = p3.project(
            volume[b : b + 1], cams[b], depth_samples=10, mode=mode, backend="naive"
        )  # (1, 2, 2, 9, 11)
        torch.testing.assert_close(out[b : b + 1], alone, rtol=1e-10, atol=1e-12)
    # and the views do differ between volumes (so the comparison above could fail)
    swapped = p3.project(volume[1:2], cams[0], depth_samples=10, mode=mode, backend="naive")
    assert (swapped - out[1:2]).abs().max() > 1e-3


def test_occupancy_outside_unit_range_is_refused_and_binary_volumes_stay_in_range():
    cams = _cams(n=3, size=(16, 16), dtype=torch.float32)
    torch.manual_seed(12)
    binary = (torch.rand(2, 1, 12, 12, 12) > 0.5).float()
    for backend in ("reference", "naive", "auto"):
        for mode in ("max", "absorption"):
            out = p3.project(binary, cams, depth_samples=24, mode=mode, backend=backend)
            assert float(out.max()) <= 1.0 and float(out.min()) >= 0.0
    with pytest.raises(ValueError, match=r"volume must be an occupancy in \[0, 1\]"):
        p3.project(binary * 2 - 0.5, cams)
    with pytest.raises(ValueError, match="occupancy in"):
        p3.PerspectiveTransformer(depth_samples=8)(binary * 255, cams)
    raw = p3.project(binary * 2, cams, depth_samples=8, validate=False)  # documented escape
    assert float(raw.max()) > 1.5


def test_max_gradient_splits_evenly_between_tied_samples_like_amax():
    torch.manual_seed(3)
    cams = _cams(n=3, size=(9, 9))
    volume = (torch.rand(2, 1, 8, 8, 8, dtype=torch.float64) > 0.6).double().requires_grad_()
    lean = p3.project(volume, cams, depth_samples=12, chunk_size=5, backend="reference")
    naive = p3.naive_project(volume, cams, depth_samples=12)
    weights = torch.rand_like(lean)
    (g_lean,) = torch.autograd.grad((lean * weights).sum(), volume)
    (g_naive,) = torch.autograd.grad((naive * weights).sum(), volume)
    assert g_naive.abs().sum() > 0
    torch.testing.assert_close(g_lean, g_naive, rtol=1e-10, atol=1e-12)


def _ball(res, radius, centre=(0.0, 0.0, 0.0)):
    points = p3.VolumeBox().voxel_centers(res, dtype=torch.float64)
    d = (points - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1)
    return (d <= radius).double()[None, None]  # (1, 1, R, R, R)


def test_ball_projects_to_the_analytic_disk():
    """A ball of radius r at distance d appears as a disk of radius f tan(asin(r / d))."""
    res, radius, dist, size = 64, 0.35, 2.0, 65
    cams = p3.orbit_cameras(
        n_views=6, elevation=15.0, distance=dist, fov=40.0, image_size=size
    ).double()
    sil = p3.project(_ball(res, radius), cams, depth_samples=96)[0, :, 0]  # (V, h, w)
    f = cams.K[0, 0, 0]
    disk_radius = f * math.tan(math.asin(radius / dist))
    jj, ii = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r_pix = ((ii + 0.5 - size / 2) ** 2 + (jj + 0.5 - size / 2) ** 2).sqrt()
    disk = r_pix <= disk_radius
    pred = sil > 0.5
    iou = (pred & disk).sum(dim=(1, 2)) / (pred | disk).sum(dim=(1, 2))
    assert iou.min() > 0.95, iou


def _axis_camera(size=33, dist=2.0):
    """One camera on +z looking at the origin; the centre pixel's ray is the z axis."""
    return p3.orbit_cameras(
        n_views=1, elevation=0.0, distance=dist, fov=30.0, image_size=size
    ).double()


def _trilinear_along_z(value, z, res):
    """Reference: zero-padded linear interpolation of a constant volume along z at x=y=0."""
    k = (z + 0.5) * res - 0.5  # continuous voxel index along D (align_corners=False)
    k0 = math.floor(k)
    total = 0.0
    for idx, wgt in ((k0, 1.0 - (k - k0)), (k0 + 1, k - k0)):
        if 0 <= idx < res:
            total += wgt * value
    return total


def test_absorption_and_max_of_a_constant_volume_follow_the_sample_count():
    res, occ, D = 8, 0.3, 24
    cam = _axis_camera()
    volume = torch.full((1, 1, res, res, res), occ, dtype=torch.float64)
    near, far = p3.near_far(cam)
    z = p3.depth_schedule(near, far, D)[0]  # camera depths
    samples = [_trilinear_along_z(occ, 2.0 - float(zi), res) for zi in z]
    expected_absorption = 1.0 - math.prod(1.0 - s for s in samples)
    c = 33 // 2
    absorption = p3.project(volume, cam, depth_samples=D, mode="absorption")[0, 0, 0, c, c]
    maximum = p3.project(volume, cam, depth_samples=D, mode="max")[0, 0, 0, c, c]
    assert absorption.item() == pytest.approx(expected_absorption, rel=1e-9)
    assert maximum.item() == pytest.approx(max(samples), rel=1e-9)
    # Step-size dependence: twice the samples make the same volume more opaque.
    denser = p3.project(volume, cam, depth_samples=2 * D, mode="absorption")[0, 0, 0, c, c]
    assert denser > absorption


def test_smooth_lies_between_mean_and_max_and_tends_to_max():
    torch.manual_seed(4)
    cams = _cams(n=2, size=(7, 7))
    volume = torch.rand(1, 1, 6, 6, 6, dtype=torch.float64)
    hard = p3.project(volume, cams, depth_samples=16, mode="max")
    soft = [
        p3.project(volume, cams, depth_samples=16, mode="smooth", temperature=t)
        for t in (1.0, 0.1, 0.01, 0.001)
    ]
    gaps = [(hard - s).abs().max().item() for s in soft]
    assert all(a >= b for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 1e-3
    assert bool((soft[0] <= hard + 1e-12).all())


def test_channels_project_independently_and_dtypes_agree():
    torch.manual_seed(5)
    cams = _cams(n=3, size=(8, 10), dtype=torch.float32)
    volume = torch.rand(2, 3, 8, 8, 8)
    both = p3.project(volume, cams, depth_samples=10)
    for c in range(3):
        torch.testing.assert_close(
            both[:, :, c : c + 1], p3.project(volume[:, c : c + 1], cams, depth_samples=10)
        )
    double = p3.project(volume.double(), cams.double(), depth_samples=10)
    torch.testing.assert_close(both.double(), double, atol=1e-5, rtol=1e-5)


def test_non_square_out_size_and_single_camera():
    torch.manual_seed(6)
    cams = _cams(n=3, size=(24, 32))
    volume = torch.rand(1, 1, 8, 8, 8, dtype=torch.float64)
    out = p3.project(volume, cams, depth_samples=8, out_size=(6, 8))
    assert out.shape == (1, 3, 1, 6, 8)
    torch.testing.assert_close(out, p3.project(volume, cams.resized(6, 8), depth_samples=8))
    single = p3.project(volume, cams[1], depth_samples=8, out_size=(6, 8))
    torch.testing.assert_close(single, out[:, 1:2])


def test_perspective_transformer_module_equals_project():
    torch.manual_seed(7)
    cams = _cams(n=2, size=(8, 8))
    volume = torch.rand(2, 1, 8, 8, 8, dtype=torch.float64)
    layer = p3.PerspectiveTransformer(depth_samples=12, out_size=(4, 4), mode="absorption")
    torch.testing.assert_close(
        layer(volume, cams),
        p3.project(volume, cams, depth_samples=12, out_size=(4, 4), mode="absorption"),
    )
    assert "depth_samples=12" in repr(layer)


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda v, c: p3.project(v[0], c),
            r"volume must be \(B, C, D, H, W\); got shape \(1, 6, 6, 6\)",
        ),
        (lambda v, c: p3.project(v * float("nan"), c), "volume holds NaN"),
        (lambda v, c: p3.project(v, c, depth_samples=0), "depth_samples must be an int >= 1"),
        (lambda v, c: p3.project(v, c, mode="mean"), "mode must be one of"),
        (lambda v, c: p3.project(v, c, backend="gpu"), "backend must be one of"),
        (
            lambda v, c: p3.project(v.expand(3, 1, 6, 6, 6), _batched(c, 2)),
            "give views for 2 volumes but volume has B=3",
        ),
        (
            lambda v, c: p3.project(v, c, mode="smooth", temperature=0.0),
            "temperature must be positive",
        ),
    ],
)
def test_bad_input_raises_clear_errors(make, match):
    volume = torch.rand(1, 1, 6, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        make(volume, _cams())


def test_non_cameras_and_integer_volumes_raise_type_errors():
    with pytest.raises(TypeError, match="cameras must be persp3d.Cameras"):
        p3.project(torch.rand(1, 1, 4, 4, 4), "cams")
    with pytest.raises(TypeError, match="volume must be a floating-point tensor"):
        p3.project(torch.ones(1, 1, 4, 4, 4, dtype=torch.long), _cams())


@pytest.mark.slow
def test_max_path_peak_memory_is_a_tenth_of_the_naive_one():
    """B=8, V=24, 32^3 volume, 64x64, D=64, forward + backward (the issue's size)."""
    script = os.path.join(ROOT, "benchmarks", "bench_projection.py")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    peaks = {}
    for method in ("naive", "reference"):
        out = subprocess.run(
            [
                sys.executable,
                script,
                "--child",
                method,
                "8",
                "24",
                "32",
                "64",
                "64",
                "1",
                "--repeats",
                "1",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        peaks[method] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    assert peaks["naive"] > 400, peaks  # the baseline holds ~50M samples and their gradients
    assert peaks["reference"] * 10 <= peaks["naive"], peaks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_tie_split_matches_amax_in_a_solid_block(dtype):
    """Inside a solid block trilinear samples round to values a few ulp apart; ties must be
    exact equalities, as amax counts them, not near-equalities."""
    cams = _cams(n=4, size=(12, 16), dtype=dtype)
    block = torch.zeros(2, 1, 12, 12, 12, dtype=dtype)
    block[:, :, 3:9, 2:10, 4:8] = 1.0
    block.requires_grad_()
    grads = []
    for backend in ("reference", "naive"):
        out = p3.project(block, cams, depth_samples=24, backend=backend)
        weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
        grads.append(torch.autograd.grad((out * weights).sum(), block)[0])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(grads[0], grads[1], rtol=tol, atol=tol)
