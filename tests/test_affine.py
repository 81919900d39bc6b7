"""Tests of persp3d/affine.py: the affine grid, sampler, theta builders and SpatialTransformer.

Each op is compared with something that can disagree: the grid with its closed-form
``theta @ (x_i, y_j, z_k, 1)``, the sampler with a naive per-point bilinear/trilinear loop,
the direction of ``theta`` with analytic cases (a bright voxel moved by whole voxels, the
centroid of a Gaussian blob, quarter turns against ``torch.rot90``, identity downsampling
against ``avg_pool3d``), and the gradients with float64 ``gradcheck``. Two small training runs
show the module learns to undo shifts (3D) and rotations + shifts (2D).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from persp3d.affine import (
    SpatialTransformer,
    affine_grid,
    affine_matrix_2d,
    affine_matrix_3d,
    affine_sample,
    identity_theta,
    invert_theta,
    rotation_matrix_3d,
)

F64 = torch.float64


# -- helpers -------------------------------------------------------------------------------
def cell_centres(n: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """``(n,)`` normalised coordinates of pixel centres, ``align_corners=False``."""
    return (2 * torch.arange(n, dtype=dtype) + 1) / n - 1


def grid_points(size: tuple[int, ...], dtype: torch.dtype = F64) -> torch.Tensor:
    """``(*size, dims)`` grid coordinates ``(x, y[, z])`` of every cell centre of ``size``."""
    axes = torch.meshgrid(*(cell_centres(n, dtype) for n in size), indexing="ij")  # ([d,] h, w)
    return torch.stack(axes[::-1], dim=-1)  # (x, y[, z]) order: reversed array axes


def naive_sample(input: torch.Tensor, theta: torch.Tensor, out_size: tuple[int, ...]):
    """Per-point bilinear/trilinear interpolation with zero padding, in plain Python loops.

    Cell ``i`` of ``n`` has its centre at ``x = (2 i + 1) / n - 1``, so the continuous index
    of ``x`` is ``((x + 1) n - 1) / 2``; ``x`` indexes the last array axis.
    """
    B, C = input.shape[:2]
    spatial = input.shape[2:]  # ([D,] H, W)
    dims = len(spatial)
    out = torch.zeros(B, C, *out_size, dtype=F64)
    points = grid_points(out_size)  # (*out_size, dims)
    for b in range(B):
        for index in itertools.product(*(range(n) for n in out_size)):
            p = torch.cat([points[index], torch.ones(1, dtype=F64)])
            xyz = (theta[b].to(F64) @ p).tolist()  # (x, y[, z])
            # continuous array indices in array order ([D,] H, W)
            u = [((c + 1) * n - 1) / 2 for c, n in zip(xyz[::-1], spatial)]
            lo = [math.floor(v) for v in u]
            for corner in itertools.product((0, 1), repeat=dims):
                idx = [low + c for low, c in zip(lo, corner)]
                if any(i < 0 or i >= n for i, n in zip(idx, spatial)):
                    continue
                w = math.prod(
                    (v - low) if c else (1 - (v - low)) for v, low, c in zip(u, lo, corner)
                )
                out[(b, slice(None), *index)] += w * input[(b, slice(None), *idx)].to(F64)
    return out


def gaussian_volume(
    centre: tuple[float, float, float], sigma: float, size: int, dtype: torch.dtype = F64
) -> torch.Tensor:
    """``(1, 1, size, size, size)`` Gaussian blob centred at grid point ``(x, y, z)``."""
    points = grid_points((size, size, size), dtype)  # (D, H, W, 3)
    d2 = ((points - torch.tensor(centre, dtype=dtype)) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma**2))[None, None]


def centroid(volume: torch.Tensor) -> torch.Tensor:
    """``(3,)`` intensity-weighted mean grid coordinate ``(x, y, z)`` of ``(1, 1, D, H, W)``."""
    points = grid_points(tuple(volume.shape[2:]), volume.dtype)  # (D, H, W, 3)
    w = volume[0, 0, ..., None]
    return (w * points).sum((0, 1, 2)) / w.sum()


@pytest.fixture
def one_thread():
    """Run on one CPU thread: small convolutions on a busy machine are far faster that way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- grid generator and sampler ------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_affine_grid_matches_closed_form(dims: int) -> None:
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(2, dims, dims + 1, generator=gen, dtype=F64)
    size = (3, 4) if dims == 2 else (2, 3, 4)
    grid = affine_grid(theta, size)
    assert grid.shape == (2, *size, dims)
    points = torch.cat([grid_points(size), torch.ones(*size, 1, dtype=F64)], -1)  # homogeneous
    expected = torch.einsum("bij,...j->b...i", theta, points)  # (2, *size, dims)
    torch.testing.assert_close(grid, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_affine_sample_matches_naive_interpolation_loop(dims: int) -> None:
    gen = torch.Generator().manual_seed(1)
    spatial = (4, 5) if dims == 2 else (3, 4, 5)
    out_size = (3, 4) if dims == 2 else (2, 3, 4)
    input = torch.rand(2, 2, *spatial, generator=gen, dtype=F64)
    theta = identity_theta(2, dims, F64) + 0.4 * torch.randn(2, dims, dims + 1, generator=gen)
    out = affine_sample(input, theta.to(F64), out_size)
    torch.testing.assert_close(out, naive_sample(input, theta, out_size), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_theta_returns_the_input(dims: int, device: torch.device) -> None:
    input = torch.rand(2, 3, *((5, 6) if dims == 2 else (4, 5, 6)), device=device)
    theta = identity_theta(2, dims, device=device)
    torch.testing.assert_close(affine_sample(input, theta), input, atol=1e-6, rtol=0)


def test_identity_to_half_size_averages_voxel_blocks() -> None:
    """With ``align_corners=False`` half-size output centres fall between input voxel pairs."""
    volume = torch.rand(1, 2, 8, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    out = affine_sample(volume, identity_theta(1, 3, F64), out_size=4)
    torch.testing.assert_close(out, F.avg_pool3d(volume, 2), atol=1e-12, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_translation_plus_t_moves_a_voxel_by_minus_t(axis: int, device: torch.device) -> None:
    """Two voxels of +t along grid axis x, y or z move the bright voxel two cells back."""
    D, H, W = 6, 8, 10
    volume = torch.zeros(1, 1, D, H, W, device=device)
    k, j, i = 3, 4, 5
    volume[0, 0, k, j, i] = 1.0
    extent = (W, H, D)[axis]
    translation = torch.zeros(3)
    translation[axis] = 2 * (2.0 / extent)  # two voxels in normalised units
    out = affine_sample(volume, affine_matrix_3d(translation=translation, device=device))
    moved = [k, j, i]
    moved[2 - axis] -= 2  # grid axis x, y, z <-> array axis W, H, D
    expected = torch.zeros_like(volume)
    expected[(0, 0, *moved)] = 1.0
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_blob_centroid_moves_by_the_inverse_transform() -> None:
    """``theta = [s R | t]`` carries content at ``c`` to ``R^T (c - t) / s``."""
    c = torch.tensor([0.15, -0.1, 0.05], dtype=F64)
    blob = gaussian_volume(tuple(c.tolist()), sigma=0.08, size=32)
    torch.testing.assert_close(centroid(blob), c, atol=1e-6, rtol=0)
    angles = torch.tensor([20.0, -35.0, 50.0], dtype=F64)
    t = torch.tensor([0.1, 0.05, -0.12], dtype=F64)
    for angles_, t_, s in [
        (None, t, 1.0),
        (None, None, 0.8),
        (angles, None, 1.0),
        (angles, t, 1.2),
    ]:
        theta = affine_matrix_3d(angles=angles_, translation=t_, scale=s, dtype=F64)
        R = rotation_matrix_3d(angles_) if angles_ is not None else torch.eye(3, dtype=F64)
        expected = R.T @ (c - (t_ if t_ is not None else 0)) / s
        out = affine_sample(blob, theta)
        torch.testing.assert_close(centroid(out), expected, atol=3e-3, rtol=0)


def test_angle_90_turns_images_counter_clockwise_like_rot90(device: torch.device) -> None:
    image = torch.rand(2, 3, 6, 6, device=device)
    theta = affine_matrix_2d(torch.tensor([90.0, -90.0]), device=device)
    out = affine_sample(image, theta)
    torch.testing.assert_close(out[0], torch.rot90(image[0], 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], torch.rot90(image[1], -1, dims=(-2, -1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("angles", "rot_dims"),
    [
        ((90.0, 0.0, 0.0), (-3, -2)),  # Rx turns +y toward +z: content goes from z (D) to y (H)
        ((0.0, 90.0, 0.0), (-1, -3)),  # Ry turns +z toward +x: content from x (W) to z (D)
        ((0.0, 0.0, 90.0), (-2, -1)),  # Rz turns +x toward +y: content from y (H) to x (W)
    ],
)
def test_quarter_turns_about_each_axis_match_rot90(angles, rot_dims, device) -> None:
    volume = torch.rand(1, 2, 6, 6, 6, device=device)
    out = affine_sample(volume, affine_matrix_3d(angles=angles, device=device))
    torch.testing.assert_close(out, torch.rot90(volume, 1, dims=rot_dims), atol=1e-5, rtol=0)


def test_rotation_matrix_3d_composes_x_then_y_then_z() -> None:
    gen = torch.Generator().manual_seed(3)
    angles = 360 * torch.rand(5, 3, generator=gen, dtype=F64) - 180
    R = rotation_matrix_3d(angles)
    zero = torch.zeros(5, dtype=F64)
    Rx = rotation_matrix_3d(torch.stack([angles[:, 0], zero, zero], -1))
    Ry = rotation_matrix_3d(torch.stack([zero, angles[:, 1], zero], -1))
    Rz = rotation_matrix_3d(torch.stack([zero, zero, angles[:, 2]], -1))
    torch.testing.assert_close(R, Rz @ Ry @ Rx)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=F64).expand(5, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(5, dtype=F64))
    e = torch.eye(3, dtype=F64)
    for axis, (a, b) in enumerate([(1, 2), (2, 0), (0, 1)]):  # right-handed: a turns to b
        quarter = torch.zeros(3, dtype=F64)
        quarter[axis] = 90.0
        torch.testing.assert_close(rotation_matrix_3d(quarter) @ e[a], e[b])


def test_invert_theta_undoes_the_warp() -> None:
    theta = affine_matrix_3d(
        angles=torch.tensor([[10.0, -20.0, 30.0]], dtype=F64),
        translation=torch.tensor([0.05, -0.1, 0.08]),
        scale=torch.tensor([[0.9, 1.1, 1.0]]),
    )
    inverse = invert_theta(theta)
    bottom = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]], dtype=F64)
    product = torch.cat([theta, bottom], 1) @ torch.cat([inverse, bottom], 1)
    torch.testing.assert_close(product, torch.eye(4, dtype=F64)[None])
    c = (0.05, 0.0, -0.05)
    blob = gaussian_volume(c, sigma=0.25, size=32)
    there_and_back = affine_sample(affine_sample(blob, theta), inverse)
    torch.testing.assert_close(
        centroid(there_and_back), torch.tensor(c, dtype=F64), atol=1e-3, rtol=0
    )
    # Two trilinear interpolations blur the peak by about h^2 f''/8 each: 0.036 measured.
    assert (there_and_back - blob).abs().max() < 0.05
    theta_2d = affine_matrix_2d(torch.tensor([30.0, 0.0, -45.0]), scale=torch.tensor([1, 2, 0.5]))
    torch.testing.assert_close(invert_theta(invert_theta(theta_2d)), theta_2d)


def test_padding_modes_decide_what_is_read_outside() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    far_right = affine_matrix_2d(translation=(4.0, 0.0))  # samples well right of the image
    assert affine_sample(image, far_right).abs().max() == 0
    border = affine_sample(image, far_right, padding_mode="border")
    torch.testing.assert_close(border, image[..., -1:].expand(1, 1, 4, 4))


# -- building theta ------------------------------------------------------------------------
def test_theta_builders_lay_out_rotation_scale_and_translation() -> None:
    theta = affine_matrix_2d(30.0, translation=(0.1, -0.2), scale=torch.tensor([[2.0, 3.0]]))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = torch.tensor([[[2 * c, -3 * s, 0.1], [2 * s, 3 * c, -0.2]]])
    torch.testing.assert_close(theta, expected)
    R = rotation_matrix_3d(torch.tensor([10.0, 20.0, 30.0], dtype=F64))
    theta3 = affine_matrix_3d(R, translation=[1.0, 2.0, 3.0], scale=torch.tensor([[1.0, 2.0, 3.0]]))
    assert theta3.dtype == F64 and theta3.shape == (1, 3, 4)
    torch.testing.assert_close(theta3[0, :, :3], R * torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    torch.testing.assert_close(theta3[0, :, 3], torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    same = affine_matrix_3d(angles=(10.0, 20.0, 30.0), translation=(1, 2, 3), dtype=F64)
    torch.testing.assert_close(same[0, :, :3], R)


def test_theta_builders_broadcast_batches_and_are_differentiable() -> None:
    angle = torch.tensor([0.0, 45.0, 90.0], requires_grad=True)
    theta = affine_matrix_2d(angle, translation=(0.1, 0.2), scale=2.0)
    assert theta.shape == (3, 2, 3)
    theta.sum().backward()
    assert angle.grad is not None and bool(torch.isfinite(angle.grad).all())
    assert affine_matrix_3d(translation=torch.zeros(4, 3), scale=torch.ones(4)).shape == (4, 3, 4)
    assert affine_matrix_3d().shape == (1, 3, 4)
    assert identity_theta(2, 3).shape == (2, 3, 4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: affine_matrix_2d(torch.zeros(3), translation=torch.zeros(2, 2)), "batch sizes"),
        (lambda: affine_matrix_2d(translation=(1.0, 2.0, 3.0)), "translation"),
        (lambda: affine_matrix_2d(scale=torch.ones(2, 3)), "scale"),
        (lambda: affine_matrix_2d(float("nan")), "angle must be finite"),
        (lambda: affine_matrix_3d(torch.eye(3), angles=(0.0, 0.0, 0.0)), "either rotation"),
        (lambda: affine_matrix_3d(torch.eye(2)), "rotation"),
        (lambda: affine_matrix_3d(scale=torch.ones(1, 2)), "scale"),
        (lambda: affine_matrix_3d(translation=(0.0, float("inf"), 0.0)), "translation"),
        (lambda: rotation_matrix_3d((1.0, 2.0)), "angles"),
        (lambda: identity_theta(0, 2), "batch_size"),
        (lambda: identity_theta(1, 4), "dims"),
    ],
)
def test_theta_builders_reject_bad_parameters(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("input_shape", "theta", "kwargs", "match"),
    [
        ((1, 1, 4, 4, 4), identity_theta(1, 2), {}, r"warps \(B, C, H, W\) images"),
        ((1, 1, 4, 4), identity_theta(1, 3), {}, r"warps \(B, C, D, H, W\) volumes"),
        ((1, 1, 4, 4), torch.zeros(1, 3, 3), {}, r"theta must be \(B, 2, 3\)"),
        ((1, 1, 4, 4), torch.zeros(2, 3), {}, r"theta must be \(B, 2, 3\)"),
        ((3, 1, 4, 4), identity_theta(2, 2), {}, "2 transforms but input has batch size B=3"),
        ((1, 1, 4, 4), torch.full((1, 2, 3), float("nan")), {}, "theta must be finite"),
        ((1, 1, 4, 4), identity_theta(1, 2), {"out_size": (2, 2, 2)}, r"out_size .* \(h, w\)"),
        ((1, 1, 4, 4, 4), identity_theta(1, 3), {"out_size": (2, 0, 2)}, "out_size must hold"),
        ((1, 1, 4, 4), identity_theta(1, 2), {"mode": "linear"}, "mode must be one of"),
        ((1, 1, 4, 4, 4), identity_theta(1, 3), {"mode": "bicubic"}, "images only"),
        ((1, 1, 4, 4), identity_theta(1, 2), {"padding_mode": "wrap"}, "padding_mode"),
        ((1, 0, 4, 4), identity_theta(1, 2), {}, "non-empty"),
    ],
)
def test_affine_sample_rejects_mismatched_arguments(input_shape, theta, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        affine_sample(torch.zeros(input_shape), theta, **kwargs)


def test_affine_sample_rejects_non_float_input_and_affine_grid_bad_size() -> None:
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        affine_sample(torch.zeros(1, 1, 4, 4, dtype=torch.long), identity_theta(1, 2))
    with pytest.raises(TypeError, match=r"theta must be a torch\.Tensor"):
        affine_sample(torch.zeros(1, 1, 4, 4), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="out_size"):
        affine_grid(identity_theta(1, 3), (4, 4))


# -- gradients -----------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_affine_sample_gradcheck_wrt_input_and_theta(dims: int) -> None:
    gen = torch.Generator().manual_seed(5)
    spatial = (4, 5) if dims == 2 else (3, 4, 4)
    out_size = (3, 4) if dims == 2 else (2, 3, 3)
    input = torch.rand(2, 2, *spatial, generator=gen, dtype=F64, requires_grad=True)
    # Off the identity, so no sample sits exactly on a cell centre (a kink of the interpolant).
    theta = identity_theta(2, dims, F64) + 0.1 * torch.randn(2, dims, dims + 1, generator=gen)
    theta = theta.to(F64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, t: affine_sample(v, t, out_size), (input, theta), eps=1e-6, atol=1e-6
    )


# -- the module ----------------------------------------------------------------------------
def conv_localiser(dims: int, size: int) -> nn.Sequential:
    """A tiny localisation net: conv, pool, conv, pool, linear -> 32 features."""
    Conv, Pool = (nn.Conv2d, nn.MaxPool2d) if dims == 2 else (nn.Conv3d, nn.MaxPool3d)
    cells = (size // 4) ** dims
    return nn.Sequential(
        Conv(1, 8, 3, padding=1),
        nn.ReLU(),
        Pool(2),
        Conv(8, 16, 3, padding=1),
        nn.ReLU(),
        Pool(2),
        nn.Flatten(),
        nn.Linear(16 * cells, 32),
        nn.ReLU(),
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_spatial_transformer_is_the_identity_at_initialisation(dims: int, device) -> None:
    torch.manual_seed(0)
    size = 8
    st = SpatialTransformer(conv_localiser(dims, size)).to(device)
    assert st.dims == dims and st.features == 32
    assert st.fc.out_features == dims * (dims + 1) and bool((st.fc.weight == 0).all())
    x = torch.rand(2, 1, *(size,) * dims, device=device)
    out, theta = st(x, return_theta=True)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(theta, identity_theta(2, dims, device=device))
    torch.testing.assert_close(st.last_theta, theta.detach())
    assert st(x).shape == x.shape
    assert SpatialTransformer(conv_localiser(dims, size), out_size=4)(x).shape[2:] == (4,) * dims


def test_spatial_transformer_infers_dims_and_features_or_asks_for_them() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 10), nn.Tanh())
    assert SpatialTransformer(mlp, out_size=(4, 4)).dims == 2
    assert SpatialTransformer(mlp, out_size=(4, 4, 4)).fc.weight.shape == (12, 10)
    with pytest.raises(ValueError, match="cannot infer dims"):
        SpatialTransformer(mlp)
    with pytest.raises(ValueError, match="cannot infer features"):
        SpatialTransformer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    st = SpatialTransformer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), features=8)
    assert st.dims == 2 and st.fc.in_features == 8
    assert st(torch.zeros(1, 1, 4, 4)).shape == (1, 1, 4, 4)  # 2 channels x 2 x 2 = 8
    with pytest.raises(ValueError, match="localisation_net returned 18 features"):
        st(torch.zeros(1, 1, 5, 5))  # 2 channels x 3 x 3
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\)"):
        st(torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        SpatialTransformer(mlp, dims=4)
    with pytest.raises(TypeError, match="localisation_net"):
        SpatialTransformer(lambda x: x, dims=2, features=2)  # type: ignore[arg-type]


def mixture(points: torch.Tensor, centres: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """``(B, 1, *spatial)`` sum of Gaussians, clamped to 1.

    Args:
        points: ``(*spatial, dims)`` grid coordinates.
        centres: ``(B, K, dims)``.
        sigmas: ``(B, K)``.
    """
    extra = (None,) * (points.ndim - 1)
    d2 = ((points[None, None] - centres[(..., *extra, slice(None))]) ** 2).sum(-1)  # (B,K,*sp)
    g = torch.exp(-d2 / (2 * sigmas[(..., *extra)] ** 2))
    return g.sum(1, keepdim=True).clamp(max=1.0)


@pytest.mark.slow
def test_spatial_transformer_learns_to_recentre_shifted_volumes(one_thread) -> None:
    """Volumes 16^3 of a random 3-Gaussian shape shifted by up to 2.4 voxels per axis; target:
    the same shape centred. 200 Adam steps (lr 3e-3, batch 16, fresh shapes each step).

    Measured (torch 2.12.1, CPU, one thread, 4-6 s on a busy 2-core machine): held-out MSE
    1.03e-2 at the identity initialisation -> 2.9e-4 (2.8 %); seeds 1 and 2 give 2.4e-4 and
    2.6e-4. The predicted translations match the true shifts to a mean error of 0.017 grid
    units (0.14 voxel; 0.016 for seeds 1 and 2). Thresholds: 1e-3, 10 % and 0.05.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    size, max_shift = 16, 0.3
    points = grid_points((size,) * 3, torch.float32)  # (16, 16, 16, 3)

    def batch(n: int, gen: torch.Generator):
        centres = 0.2 * torch.randn(n, 3, 3, generator=gen)  # (n, K, 3)
        sigmas = 0.12 + 0.1 * torch.rand(n, 3, generator=gen)  # (n, K)
        mass = sigmas**3
        centres = (
            centres - (mass[..., None] * centres).sum(1, keepdim=True) / mass.sum(1)[:, None, None]
        )  # centred on the mixture's centroid
        shift = (2 * torch.rand(n, 1, 3, generator=gen) - 1) * max_shift  # (n, 1, 3)
        shifted = mixture(points, centres + shift, sigmas)
        return shifted, mixture(points, centres, sigmas), shift[:, 0]

    st = SpatialTransformer(conv_localiser(3, size))
    opt = torch.optim.Adam(st.parameters(), lr=3e-3)
    x_test, y_test, shift_test = batch(64, torch.Generator().manual_seed(1234))
    with torch.no_grad():
        initial = F.mse_loss(st(x_test), y_test).item()
    for _ in range(200):
        x, y, _ = batch(16, gen)
        loss = F.mse_loss(st(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out, theta = st(x_test, return_theta=True)
        final = F.mse_loss(out, y_test).item()
    assert initial > 8e-3
    assert final < 1e-3, (initial, final)
    assert final < 0.1 * initial, (initial, final)
    # output(p) = input(p + shift) recentres the shape: theta's translation is +shift.
    assert (theta[:, :, 3] - shift_test).abs().mean() < 0.05


@pytest.mark.slow
def test_spatial_transformer_learns_to_undo_rotations_and_shifts_2d(one_thread) -> None:
    """Images 24x24 of an L-shaped 5-Gaussian glyph turned by up to +-45 deg and shifted by up
    to 0.25 (3 pixels) per axis; target: the upright, centred glyph. 200 Adam steps (lr 3e-3,
    batch 16).

    Measured (torch 2.12.1, CPU, one thread, 1-2 s): held-out MSE 4.7e-2 at the identity
    initialisation -> 1.0e-3 (2.1 %); seeds 1 and 2 give 7.1e-4 and 7.3e-4. The angle read
    off theta matches the true turn to a mean error of 2.1 deg (1.8 and 2.2 for seeds 1, 2).
    Thresholds: 3e-3, 10 % and 6 deg.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    size = 24
    points = grid_points((size, size), torch.float32)  # (24, 24, 2)
    glyph = torch.tensor([[-0.3, -0.3], [0.0, -0.3], [0.3, -0.3], [-0.3, 0.0], [-0.3, 0.3]])
    glyph = glyph - glyph.mean(0)  # (5, 2) centred
    sigmas = torch.full((1, 5), 0.12)

    def batch(n: int, gen: torch.Generator):
        angle = (2 * torch.rand(n, generator=gen) - 1) * 45.0
        shift = (2 * torch.rand(n, 2, generator=gen) - 1) * 0.25
        # theta moves content by its inverse, so theta = [R(angle) | shift] recentres the
        # glyph moved by theta itself.
        motion = affine_matrix_2d(angle, translation=shift)  # (n, 2, 3)
        centres = glyph @ motion[:, :, :2].transpose(1, 2) + motion[:, None, :, 2]  # (n, 5, 2)
        moved = mixture(points, centres, sigmas.expand(n, 5))
        return moved, mixture(points, glyph.expand(n, 5, 2), sigmas.expand(n, 5)), angle

    st = SpatialTransformer(conv_localiser(2, size))
    opt = torch.optim.Adam(st.parameters(), lr=3e-3)
    x_test, y_test, angle_test = batch(64, torch.Generator().manual_seed(1234))
    with torch.no_grad():
        initial = F.mse_loss(st(x_test), y_test).item()
    for _ in range(200):
        x, y, _ = batch(16, gen)
        loss = F.mse_loss(st(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out, theta = st(x_test, return_theta=True)
        final = F.mse_loss(out, y_test).item()
    assert initial > 3e-2
    assert final < 3e-3, (initial, final)
    assert final < 0.1 * initial, (initial, final)
    angle = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))  # theta ~ [R(angle) | t]
    assert (angle - angle_test).abs().mean() < 6.0
