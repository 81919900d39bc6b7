"""Tests of persp3d/volume.py: the world box and the world <-> grid_sample coordinate map.

The decisive test reads a random volume back with ``grid_sample`` at every voxel centre:
only the right axis order and the right ``align_corners`` convention return each voxel's
own value.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import persp3d as p3
from persp3d.volume import VolumeBox, grid_to_world_coords, world_to_grid_coords

F64 = torch.float64

# An off-centre, non-cubic box and a volume with three different side lengths: any swap of
# axes or of sizes shows.
BOX = VolumeBox(center=(0.1, -0.2, 0.3), size=(1.0, 0.8, 1.4))
RES = (3, 4, 5)  # (D, H, W)


def sample(volume: torch.Tensor, points_world: torch.Tensor, box: VolumeBox) -> torch.Tensor:
    """``grid_sample`` of ``volume`` (1, C, D, H, W) at world points (..., 3) -> (C, ...)."""
    grid = box.world_to_grid(points_world).reshape(1, 1, 1, -1, 3)  # (1, 1, 1, P, 3)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(volume.shape[1], *points_world.shape[:-1])


# -- the box -------------------------------------------------------------------------------
def test_default_box_is_the_unit_cube_around_the_origin():
    box = VolumeBox()
    assert box.min == (-0.5, -0.5, -0.5) and box.max == (0.5, 0.5, 0.5)
    assert box.radius == pytest.approx(math.sqrt(3) / 2)
    assert box == p3.VolumeBox(center=(0.0, 0.0, 0.0), size=1.0)
    assert hash(box) == hash(VolumeBox(size=(1.0, 1.0, 1.0)))
    assert box != BOX
    assert repr(box) == "VolumeBox(center=(0.0, 0.0, 0.0), size=1.0)"


def test_box_geometry_of_a_non_cubic_box():
    assert BOX.min == pytest.approx((-0.4, -0.6, -0.4))
    assert BOX.max == pytest.approx((0.6, 0.2, 1.0))
    assert BOX.radius == pytest.approx(0.5 * math.sqrt(1.0 + 0.64 + 1.96))
    assert BOX.voxel_size(RES) == pytest.approx((1.0 / 5, 0.8 / 4, 1.4 / 3))
    assert BOX.voxel_size(4) == pytest.approx((0.25, 0.2, 0.35))


def test_contains_is_true_inside_the_closed_box_only(device):
    points = torch.tensor(
        [BOX.center, BOX.max, BOX.min, [0.61, 0.0, 0.3], [0.1, 0.21, 0.3]],
        dtype=F64,
        device=device,
    )
    inside = BOX.contains(points)
    assert inside.device.type == device.type
    assert inside.tolist() == [True, True, True, False, False]


def test_box_to_dict_from_dict_round_trip_through_json():
    data = json.loads(json.dumps(BOX.to_dict()))
    assert VolumeBox.from_dict(data) == BOX


# -- world <-> grid ------------------------------------------------------------------------
def test_box_faces_map_to_minus_and_plus_one():
    corners = torch.tensor([BOX.min, BOX.max, BOX.center], dtype=F64)
    grid = BOX.world_to_grid(corners)
    expected = torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3], dtype=F64)
    torch.testing.assert_close(grid, expected, atol=1e-12, rtol=0)
    # Each world axis moves only its own grid coordinate, in the same direction.
    step = BOX.world_to_grid(
        torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.2]], dtype=F64)
    )
    step = step - BOX.world_to_grid(torch.zeros(1, 3, dtype=F64))
    torch.testing.assert_close(
        step,
        torch.diag(torch.tensor([0.4 / 1.0, 0.4 / 0.8, 0.4 / 1.4], dtype=F64)),
        atol=1e-12,
        rtol=0,
    )


finite = st.floats(-3.0, 3.0, allow_nan=False)


@given(
    center=st.tuples(finite, finite, finite),
    size=st.tuples(*[st.floats(0.05, 5.0)] * 3),
    points=st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=8),
)
def test_world_to_grid_and_grid_to_world_are_inverse(center, size, points):
    box = VolumeBox(center=center, size=size)
    world = torch.tensor(points, dtype=F64)
    grid = box.world_to_grid(world)
    torch.testing.assert_close(box.grid_to_world(grid), world, atol=1e-9, rtol=0)
    torch.testing.assert_close(world_to_grid_coords(world, box), grid)
    torch.testing.assert_close(grid_to_world_coords(grid, box), box.grid_to_world(grid))
    # Inside the box <=> grid coordinates in [-1, 1].
    assert torch.equal(box.contains(world), (grid.abs() <= 1 + 1e-12).all(-1))


def test_world_to_grid_keeps_leading_shape_and_dtype(device):
    points = torch.rand(2, 3, 4, 3, device=device)
    grid = BOX.world_to_grid(points)
    assert grid.shape == (2, 3, 4, 3) and grid.dtype == torch.float32
    assert grid.device.type == device.type


# -- voxel centres and grid_sample ---------------------------------------------------------
def test_voxel_centers_follow_the_design_formula_in_k_j_i_order():
    centres = BOX.voxel_centers(RES, dtype=F64)
    D, H, W = RES
    assert centres.shape == (D, H, W, 3)
    vx, vy, vz = BOX.voxel_size(RES)
    lo = BOX.min
    for k in range(D):
        for j in range(H):
            for i in range(W):
                expected = (lo[0] + (i + 0.5) * vx, lo[1] + (j + 0.5) * vy, lo[2] + (k + 0.5) * vz)
                assert centres[k, j, i].tolist() == pytest.approx(expected, abs=1e-12)
    # x grows along W (last axis), y along H, z along D.
    assert bool((centres[..., 1:, 0] > centres[..., :-1, 0]).all())
    assert bool((centres[:, 1:, :, 1] > centres[:, :-1, :, 1]).all())
    assert bool((centres[1:, ..., 2] > centres[:-1, ..., 2]).all())


def test_voxel_centers_cube_resolution_and_device(device):
    centres = VolumeBox().voxel_centers(2, device=device)
    assert centres.shape == (2, 2, 2, 3) and centres.device.type == device.type
    assert centres.dtype == torch.float32
    torch.testing.assert_close(centres[0, 0, 0].cpu(), torch.tensor([-0.25, -0.25, -0.25]))
    torch.testing.assert_close(centres[1, 0, 1].cpu(), torch.tensor([0.25, -0.25, 0.25]))


def test_grid_sample_at_each_voxel_centre_reads_that_voxel(device):
    gen = torch.Generator().manual_seed(0)
    volume = torch.rand(1, 2, *RES, generator=gen, dtype=F64).to(device)  # (1, C, D, H, W)
    centres = BOX.voxel_centers(RES, device=device, dtype=F64)  # (D, H, W, 3)
    values = sample(volume, centres, BOX)  # (C, D, H, W)
    torch.testing.assert_close(values, volume[0], atol=1e-12, rtol=0)
    # One voxel at a time, exactly as a user would write it.
    for k, j, i in [(0, 0, 0), (2, 3, 4), (1, 2, 0), (0, 3, 1), (2, 0, 3)]:
        grid = BOX.world_to_grid(centres[k, j, i])[None, None, None, None]  # (1, 1, 1, 1, 3)
        value = F.grid_sample(volume, grid, align_corners=False)
        torch.testing.assert_close(value.reshape(2), volume[0, :, k, j, i], atol=1e-12, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_trilinear_sampling_of_a_linear_ramp_returns_the_world_coordinate(axis):
    # volume[k, j, i] = that voxel centre's world coordinate along ``axis``: trilinear
    # interpolation reproduces a linear function exactly between the outer voxel centres.
    centres = BOX.voxel_centers(RES, dtype=F64)
    volume = centres[..., axis][None, None]  # (1, 1, D, H, W)
    lo, hi = centres[0, 0, 0], centres[-1, -1, -1]
    u = torch.rand(50, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    points = lo + u * (hi - lo)
    torch.testing.assert_close(sample(volume, points, BOX)[0], points[:, axis], atol=1e-12, rtol=0)


def test_grid_sample_is_zero_outside_the_box():
    volume = torch.ones(1, 1, *RES, dtype=F64)
    vx, vy, vz = BOX.voxel_size(RES)
    outside = torch.tensor(
        [
            [BOX.max[0] + vx, 0.0, 0.3],
            [0.1, BOX.min[1] - vy, 0.3],
            [0.1, -0.2, BOX.max[2] + vz],
        ],
        dtype=F64,
    )
    torch.testing.assert_close(sample(volume, outside, BOX)[0], torch.zeros(3, dtype=F64))
    # On a face, half of the outermost voxel is read (zeros padding beyond it).
    face = torch.tensor([[BOX.max[0], -0.2, 0.3]], dtype=F64)
    assert sample(volume, face, BOX).item() == pytest.approx(0.5)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(size=0.0), "size must be positive"),
        (dict(size=(1.0, -1.0, 1.0)), "size must be positive"),
        (dict(size=(1.0, 1.0)), "size must be"),
        (dict(center=(0.0, 0.0)), "center must be"),
        (dict(center=(0.0, float("nan"), 0.0)), "must be finite"),
        (dict(size=float("inf")), "must be finite"),
    ],
)
def test_bad_box_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VolumeBox(**kwargs)


@pytest.mark.parametrize("resolution", [0, (4, 4), (4, 0, 4), (2, 2, 2, 2)])
def test_bad_resolution_raises_value_error(resolution):
    with pytest.raises(ValueError, match="resolution"):
        BOX.voxel_centers(resolution)


def test_world_to_grid_rejects_points_without_xyz():
    with pytest.raises(ValueError, match="points_world must have shape"):
        BOX.world_to_grid(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="grid_coords must have shape"):
        BOX.grid_to_world(torch.zeros(4, 4))


# -- sample_volume against a naive trilinear loop ------------------------------------------
def _naive_trilinear(volume: torch.Tensor, x: float, y: float, z: float) -> torch.Tensor:
    """One point by the textbook formula: ``align_corners=False`` pixel coordinates
    ``((g + 1) * size - 1) / 2``, eight corner weights, zero outside. volume (C, D, H, W)."""
    C, D, H, W = volume.shape
    fx, fy, fz = ((x + 1) * W - 1) / 2, ((y + 1) * H - 1) / 2, ((z + 1) * D - 1) / 2
    x0, y0, z0 = math.floor(fx), math.floor(fy), math.floor(fz)
    out = torch.zeros(C, dtype=volume.dtype)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                i, j, k = x0 + dx, y0 + dy, z0 + dz
                if not (0 <= i < W and 0 <= j < H and 0 <= k < D):
                    continue
                w = (
                    (fx - x0 if dx else 1 - (fx - x0))
                    * (fy - y0 if dy else 1 - (fy - y0))
                    * (fz - z0 if dz else 1 - (fz - z0))
                )
                out += w * volume[:, k, j, i]
    return out


@pytest.mark.parametrize("layout", ["single", "shared", "per_volume"])
def test_sample_volume_equals_a_naive_trilinear_loop(layout):
    gen = torch.Generator().manual_seed(3)
    volume = torch.rand(2, 2, *RES, generator=gen, dtype=F64)  # (B, C, D, H, W)
    shape = {"single": (2, 3, 2), "shared": (3, 2, 2, 2), "per_volume": (2, 2, 2, 1, 3)}[layout]
    grid = torch.rand(*shape, 3, generator=gen, dtype=F64) * 2.6 - 1.3  # some points outside
    out = p3.sample_volume(volume, grid)
    if layout == "single":
        assert out.shape == (2, 2, *shape)  # (B, C, Dg, h, w)
    else:
        views = shape[0] if layout == "shared" else shape[1]
        assert out.shape == (2, views, 2, *shape[-3:])  # (B, V, C, Dg, h, w)
    for b in range(2):
        for idx in itertools.product(*(range(n) for n in shape)):
            if layout == "single":
                point, got = grid[idx], out[(b, slice(None), *idx)]
            elif layout == "shared":
                point, got = grid[idx], out[(b, idx[0], slice(None), *idx[1:])]
            else:
                if idx[0] != b:
                    continue
                point, got = grid[idx], out[(b, idx[1], slice(None), *idx[2:])]
            expected = _naive_trilinear(volume[b], *point.tolist())
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_sample_volume_per_volume_grids_read_their_own_volume():
    volume = torch.stack([torch.zeros(1, *RES), torch.ones(1, *RES)]).double()  # (2, 1, ...)
    grid = torch.zeros(2, 1, 1, 1, 1, 3, dtype=F64)  # the centre, for each volume
    out = p3.sample_volume(volume, grid)  # (2, 1, 1, 1, 1, 1)
    assert out.reshape(2).tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda v: p3.sample_volume(v[0], torch.zeros(1, 1, 1, 3)), r"volume must be \(B, C"),
        (lambda v: p3.sample_volume(v, torch.zeros(1, 1, 1, 2)), "grid must be"),
        (lambda v: p3.sample_volume(v, torch.zeros(3, 1, 1, 1, 1, 3)), "grid has 3 volumes"),
        (lambda v: p3.sample_volume(v, torch.full((1, 1, 1, 3), math.nan)), "grid holds NaN"),
        (lambda v: p3.sample_volume(v * math.inf, torch.zeros(1, 1, 1, 3)), "NaN or infinite"),
    ],
)
def test_sample_volume_bad_input_raises_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make(torch.rand(2, 1, *RES, dtype=F64))
