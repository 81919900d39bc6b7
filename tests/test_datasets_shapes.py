"""Procedural shapes: exact inside tests agree with the meshes, determinism, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import persp3d as p3
from persp3d.datasets.shapes import (
    CATEGORIES,
    Box,
    Ellipsoid,
    Extrusion,
    Part,
    Shape,
    cylinder,
    item_seed,
    make_shape,
    rotation_between,
    torus_arc,
    tube,
)

PRIMITIVES = {
    "box": Box((0.4, 0.2, 0.3), rotation=rotation_between((0, 1, 0), (1, 1, 0))),
    "ellipsoid": Ellipsoid((0.3, 0.2, 0.25), translation=(0.05, 0, 0)),
    "frustum": cylinder(0.25, 0.5, radius_top=0.1, rotation=rotation_between((0, 1, 0), (0, 0, 1))),
    "tube": tube(0.15, 0.22, 0.4, flare=0.05),
    "torus_arc": torus_arc(0.25, 0.06, (-96.0, 96.0)),
    "extrusion": Extrusion([(0, 0), (0.4, 0.1), (0.3, 0.35), (-0.1, 0.3)], 0.1),
}


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_primitive_inside_test_agrees_with_its_closed_mesh(name):
    import trimesh

    prim = PRIMITIVES[name]
    v, f = prim.mesh()
    mesh = trimesh.Trimesh(v, f, process=True)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    rng = np.random.default_rng(0)
    lo, hi = prim.bounds()
    points = rng.uniform(lo, hi, size=(4000, 3))
    analytic = prim.inside(points)
    from_mesh = mesh.contains(points)
    # They may differ only where the inscribed mesh and the true surface part (< 1% size).
    differ = points[analytic != from_mesh]
    if len(differ):
        near = trimesh.proximity.ProximityQuery(mesh).signed_distance(differ)
        assert np.all(np.abs(near) < 0.01 * float((hi - lo).max()))
    assert len(differ) < 0.01 * len(points)
    assert analytic.mean() > 0.05


def test_box_occupancy_is_exact_at_voxel_centres():
    shape = Shape([Part(Box((0.5, 0.25, 0.125)), "box")])
    vox = shape.voxels(16)
    assert vox.shape == (1, 16, 16, 16)
    # 0.5 / (1/16) = 8 voxels along x, 4 along y, 2 along z.
    assert vox.sum() == 8 * 4 * 2
    k, j, i = np.nonzero(vox[0])
    assert (i.min(), i.max(), j.min(), j.max(), k.min(), k.max()) == (4, 11, 6, 9, 7, 8)


def test_voxels_are_indexed_z_y_x_like_volume_box_centres():
    # A small box off-centre along +x only lands in high W indices.
    shape = Shape([Part(Box((0.1, 0.1, 0.1), translation=(0.3, 0.0, 0.0)), "box")])
    vox = torch.from_numpy(shape.voxels(20))[0]
    centers = p3.VolumeBox().voxel_centers(20)  # (D, H, W, 3)
    occupied = centers[vox > 0]
    assert torch.allclose(occupied.mean(0), torch.tensor([0.3, 0.0, 0.0]), atol=1e-6)


def test_supersampled_voxels_give_occupied_fractions():
    shape = Shape([Part(Box((1.0, 1.0, 0.5)), "slab")])  # fills z in [-0.25, 0.25]
    vox = shape.voxels(4, supersample=4)
    assert vox.min() >= 0 and vox.max() <= 1
    assert np.isclose(vox.mean(), 0.5)


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_every_category_is_deterministic_and_fits_the_box(category):
    a, b = make_shape(category, 11), make_shape(category, 11)
    va, fa, ca = a.mesh()
    vb, fb, cb = b.mesh()
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(ca, cb)
    other = make_shape(category, 12).mesh()[0]
    assert va.shape != other.shape or not np.allclose(va, other)
    lo, hi = va.min(0), va.max(0)
    assert np.all(lo >= -0.45 - 1e-9) and np.all(hi <= 0.45 + 1e-9)
    assert np.linalg.norm(va - (lo + hi) / 2, axis=1).max() <= 0.62 + 1e-9
    assert np.allclose((lo + hi) / 2, 0.0, atol=1e-9)
    assert a.voxels(16).sum() > 0


def test_at_least_eight_categories_with_parts():
    assert len(CATEGORIES) >= 8
    assert {"chair", "table", "sofa", "lamp", "airplane", "car", "mug", "bottle"} <= set(CATEGORIES)
    names = {p.name for c in CATEGORIES for s in range(3) for p in make_shape(c, s).parts}
    assert {"leg", "arm", "back", "wing", "wheel", "handle"} <= names


def test_item_seed_is_stable():
    # A change here changes every procedural dataset: bump the cache format version then.
    assert item_seed(0, "chair", 0) == item_seed(0, "chair", 0)
    assert len({item_seed(0, c, i) for c in ("chair", "mug") for i in range(50)}) == 100
    assert item_seed(0, "chair", 3) == 15152469930907692734


def test_unknown_category_is_named():
    with pytest.raises(ValueError, match="category must be one of"):
        make_shape("spaceship", 0)
