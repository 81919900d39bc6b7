"""The Open3D ray-casting renderer against PyTorch3D's rasteriser and an analytic sphere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import persp3d as p3
from persp3d.datasets.render import Lighting, render_mesh, render_silhouettes_pytorch3d
from persp3d.datasets.shapes import Ellipsoid, Part, Shape, make_shape


@pytest.mark.parametrize("category", ["chair", "mug", "airplane"])
def test_raycast_silhouettes_and_depth_match_pytorch3d_rasteriser(category):
    cams = p3.orbit_cameras(4, elevation=[10.0, 30.0, 50.0, -20.0], image_size=(32, 40))
    v, f, c = make_shape(category, 3).mesh()
    out = render_mesh(v, f, cams, c)
    ref, zbuf = render_silhouettes_pytorch3d(v, f, cams, return_depth=True)
    assert out.silhouettes.shape == ref.shape == (4, 1, 32, 40)
    # Both sample pixel centres; they may disagree only on pixels whose centre lies on an edge.
    assert (out.silhouettes != ref).float().sum() <= 2
    both = (out.silhouettes > 0) & (ref > 0)
    torch.testing.assert_close(out.depth[both], zbuf[both], atol=1e-4, rtol=1e-4)


def test_sphere_renders_as_its_analytic_disk():
    r, d, size, fov = 0.3, 2.0, 96, 40.0
    shape = Shape([Part(Ellipsoid((r, r, r)), "ball")])
    cams = p3.orbit_cameras(3, elevation=20.0, distance=d, fov=fov, image_size=size)
    v, f, _ = shape.mesh()
    out = render_mesh(v, f, cams)
    focal = size / 2 / math.tan(math.radians(fov / 2))
    radius_px = focal * r / math.sqrt(d * d - r * r)  # the cone tangent to the sphere
    expected = math.pi * radius_px**2
    area = out.silhouettes.sum(dim=(1, 2, 3))
    assert torch.allclose(area, torch.full_like(area, expected), rtol=0.02)
    # The nearest point of the sphere is at depth d - r on the optical axis.
    centre = out.depth[:, 0, size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1]
    assert torch.allclose(centre, torch.full_like(centre, d - r), atol=2e-3)


def test_images_are_lit_and_background_is_kept():
    cams = p3.orbit_cameras(2, image_size=24)
    v, f, c = make_shape("sofa", 0).mesh()
    out = render_mesh(v, f, cams, c, background=(0.2, 0.4, 0.6))
    empty = out.silhouettes[:, 0] == 0
    for ch, value in enumerate((0.2, 0.4, 0.6)):
        bg = out.images[:, ch][empty]
        torch.testing.assert_close(bg, torch.full_like(bg, value))
    assert 0 <= out.images.min() and out.images.max() <= 1
    assert torch.all(out.depth[:, 0][empty] == 0)
    dark = render_mesh(v, f, cams, c, lighting=Lighting(ambient=0.0, diffuse=0.0, headlight=0.0))
    covered = ~empty  # (V, H, W)
    assert torch.all(dark.images.permute(0, 2, 3, 1)[covered] == 0)


def test_open_surfaces_render_from_both_sides():
    # A single triangle seen from its back side still renders and is lit.
    v = np.array([[-0.3, -0.3, 0.0], [0.3, -0.3, 0.0], [0.0, 0.3, 0.0]])
    f = np.array([[0, 1, 2]])
    cams = p3.orbit_cameras(2, elevation=0.0, image_size=16)  # azimuths 0 and 180
    out = render_mesh(v, f, cams, background=0.0)
    assert torch.all(out.silhouettes.sum(dim=(1, 2, 3)) > 10)
    lit = out.images.sum(dim=1)[out.silhouettes[:, 0] > 0]
    assert torch.all(lit > 0.2)


def test_bad_mesh_arguments_are_named():
    cams = p3.orbit_cameras(1, image_size=8)
    with pytest.raises(ValueError, match="faces index vertices out of range"):
        render_mesh(np.zeros((3, 3)), np.array([[0, 1, 5]]), cams)
    with pytest.raises(ValueError, match=r"cameras must have batch shape \(V,\)"):
        render_mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), cams.reshape(1, 1))
