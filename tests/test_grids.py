"""Frustum grids: sample positions, depth schedules, near/far bounds, output sizes."""

import math

import pytest
import torch

import persp3d as p3


def _cams(**kw):
    args = dict(n_views=5, elevation=25.0, distance=2.0, fov=40.0, image_size=(12, 16))
    args.update(kw)
    return p3.orbit_cameras(**args).double()


def test_grid_points_reproject_to_pixel_centres_at_scheduled_depths():
    cams = _cams()
    box = p3.VolumeBox(center=(0.1, -0.05, 0.0), size=0.8)
    D = 7
    grid = p3.frustum_grid(cams, D, box, sampling="depth")  # (V, D, h, w, 3)
    assert grid.shape == (5, D, 12, 16, 3)
    points = box.grid_to_world(grid).reshape(5, -1, 3)
    uv, depth = (
        torch.stack([cams[v].project(points[v])[0] for v in range(5)]),
        torch.stack([cams[v].project(points[v])[1] for v in range(5)]),
    )
    h, w = 12, 16
    jj, ii = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    expected_uv = torch.stack([ii + 0.5, jj + 0.5], -1).double().expand(5, D, h, w, 2)
    torch.testing.assert_close(uv.reshape(5, D, h, w, 2), expected_uv, atol=1e-5, rtol=0)
    near, far = p3.near_far(cams, box)
    frac = (torch.arange(D, dtype=torch.float64) + 0.5) / D
    expected_z = near[:, None] + frac * (far - near)[:, None]  # (V, D)
    torch.testing.assert_close(
        depth.reshape(5, D, h, w), expected_z[:, :, None, None].expand(5, D, h, w)
    )


def test_default_near_far_bound_the_circumscribed_sphere():
    cams = _cams(distance=3.0)
    near, far = p3.near_far(cams, p3.VolumeBox())
    r = math.sqrt(3) / 2
    torch.testing.assert_close(near, torch.full((5,), 3.0 - r, dtype=torch.float64))
    torch.testing.assert_close(far, torch.full((5,), 3.0 + r, dtype=torch.float64))


def test_disparity_sampling_is_uniform_in_inverse_depth():
    cams = _cams()
    near, far = p3.near_far(cams)
    z = p3.depth_schedule(near, far, 9, "disparity")
    inv = 1.0 / z
    steps = inv[:, 1:] - inv[:, :-1]
    torch.testing.assert_close(steps, steps[:, :1].expand_as(steps))
    torch.testing.assert_close(inv[:, 0], 1 / near + 0.5 * (1 / far - 1 / near) / 9)
    assert bool((z[:, 1:] > z[:, :-1]).all()), "samples go from near to far"


def test_centre_ray_of_odd_image_passes_through_box_centre():
    cams = _cams(image_size=(9, 9))
    grid = p3.frustum_grid(cams, 8)  # (V, D, 9, 9, 3)
    centre_ray = grid[:, :, 4, 4]  # (V, D, 3)
    # Along the optical axis, x, y, z in grid coordinates are collinear with the origin.
    cross = torch.linalg.cross(centre_ray[:, 0], centre_ray[:, -1], dim=-1)
    assert cross.abs().max() < 1e-9


def test_out_size_rescales_intrinsics():
    cams = _cams(image_size=(24, 32))
    small = p3.frustum_grid(cams, 4, out_size=(6, 8))
    same = p3.frustum_grid(cams.resized(6, 8), 4)
    torch.testing.assert_close(small, same)
    # Coarse pixel (0, 0) covers fine pixels (0..3, 0..3): its centre ray sits between them.
    fine = p3.frustum_grid(cams, 4)
    torch.testing.assert_close(small[:, :, 0, 0], fine[:, :, 1:3, 1:3].mean(dim=(2, 3)))


def test_batched_cameras_give_batched_grids():
    cams = _cams()
    batched = p3.Cameras(
        cams.K.expand(3, 5, 3, 3),
        cams.R.expand(3, 5, 3, 3),
        cams.t.expand(3, 5, 3),
        cams.image_size,
    )
    grid = p3.frustum_grid(batched, 4)
    assert grid.shape == (3, 5, 4, 12, 16, 3)
    torch.testing.assert_close(grid[1], p3.frustum_grid(cams, 4))


def test_camera_inside_bounding_sphere_needs_explicit_near():
    cams = _cams(distance=0.7)
    with pytest.raises(ValueError, match="inside the volume box's bounding sphere.*near"):
        p3.frustum_grid(cams, 4)
    grid = p3.frustum_grid(cams, 4, near=0.05, far=1.5)
    assert torch.isfinite(grid).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth_samples=0), "depth_samples must be an int >= 1"),
        (dict(depth_samples=4, sampling="log"), "sampling must be one of"),
        (dict(depth_samples=4, near=-1.0), "near must be positive"),
        (dict(depth_samples=4, near=2.0, far=1.0), "far must exceed near"),
        (dict(depth_samples=4, out_size=(0, 4)), "out_size must be positive"),
    ],
)
def test_bad_grid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        p3.frustum_grid(_cams(), **kwargs)
