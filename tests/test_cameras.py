"""Tests of persp3d/cameras.py: projection, conversions, look-at, orbits, R2N2, containers.

Every projection is compared with something that can disagree: a naive per-camera,
per-point loop of ``K (R X + t)`` in float64, PyTorch3D's own ``transform_points_screen``,
or an analytic case (a point on the field-of-view edge lands on the image border).
"""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import persp3d as p3
from persp3d.cameras import R2N2_FOCAL_NDC, Cameras

F64 = torch.float64


# -- helpers -------------------------------------------------------------------------------
def random_rotations(n: int, gen: torch.Generator, dtype: torch.dtype = F64) -> torch.Tensor:
    """``(n, 3, 3)`` uniformly random proper rotations (QR of Gaussian matrices)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=F64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]  # det -1 -> +1 (3x3: det(-q) = -det q)
    return q.to(dtype)


def random_intrinsics(
    n: int, image_size: tuple[int, int], gen: torch.Generator, skew: bool = False
) -> torch.Tensor:
    """``(n, 3, 3)`` pixel intrinsics, fx != fy, principal point off the image centre."""
    H, W = image_size
    u = torch.rand(n, 5, generator=gen, dtype=F64)
    K = torch.zeros(n, 3, 3, dtype=F64)
    K[:, 0, 0] = (0.6 + u[:, 0]) * max(H, W)
    K[:, 1, 1] = (0.6 + u[:, 1]) * max(H, W)
    K[:, 0, 2] = (0.3 + 0.4 * u[:, 2]) * W
    K[:, 1, 2] = (0.3 + 0.4 * u[:, 3]) * H
    if skew:
        K[:, 0, 1] = (u[:, 4] - 0.5) * 10.0
    K[:, 2, 2] = 1.0
    return K


def random_cameras(
    n: int,
    image_size: tuple[int, int],
    seed: int,
    *,
    skew: bool = False,
    dtype: torch.dtype = F64,
    device: torch.device | str = "cpu",
) -> Cameras:
    """``n`` random cameras 3 to 5 units from the origin: points in the unit ball lie at
    depth >= 2 in front of all of them."""
    gen = torch.Generator().manual_seed(seed)
    K = random_intrinsics(n, image_size, gen, skew=skew)
    R = random_rotations(n, gen)
    u = torch.rand(n, 3, generator=gen, dtype=F64)
    t = torch.stack([0.6 * u[:, 0] - 0.3, 0.6 * u[:, 1] - 0.3, 3.0 + 2.0 * u[:, 2]], dim=-1)
    return Cameras(K, R, t, image_size).to(device=device, dtype=dtype)


def random_points(n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """``(n, 3)`` points in the unit ball."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=F64)
    r = torch.rand(n, 1, generator=gen, dtype=F64) ** (1 / 3)
    return (x / x.norm(dim=-1, keepdim=True) * r).to(dtype)


def project_naive(
    K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``K (R X + t)`` in float64 Python arithmetic, one camera and one point at a time.

    K, R: ``(V, 3, 3)``; t: ``(V, 3)``; points: ``(N, 3)`` -> uv ``(V, N, 2)``, depth ``(V, N)``.
    """
    Ks, Rs, ts, pts = (x.detach().cpu().double().tolist() for x in (K, R, t, points))
    uvs, depths = [], []
    for Kv, Rv, tv in zip(Ks, Rs, ts):
        uv_v, depth_v = [], []
        for X in pts:
            X_cam = [sum(Rv[r][c] * X[c] for c in range(3)) + tv[r] for r in range(3)]
            hom = [sum(Kv[r][c] * X_cam[c] for c in range(3)) for r in range(3)]
            uv_v.append([hom[0] / hom[2], hom[1] / hom[2]])
            depth_v.append(X_cam[2])
        uvs.append(uv_v)
        depths.append(depth_v)
    return torch.tensor(uvs, dtype=F64), torch.tensor(depths, dtype=F64)


def assert_same_cameras(a: Cameras, b: Cameras, atol: float = 0.0) -> None:
    assert a.image_size == b.image_size
    assert a.batch_shape == b.batch_shape
    for name in ("K", "R", "t"):
        x, y = getattr(a, name), getattr(b, name)
        torch.testing.assert_close(x, y.to(x.dtype), atol=atol, rtol=0, msg=name)


@pytest.fixture(scope="module")
def pytorch3d_renderer():
    return pytest.importorskip("pytorch3d.renderer")


# -- projection ----------------------------------------------------------------------------
@pytest.mark.parametrize("image_size", [(48, 80), (97, 61)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_projection_matches_naive_loop_of_K_times_RX_plus_t(image_size, dtype, device):
    cams = random_cameras(5, image_size, seed=1, skew=True, dtype=dtype, device=device)
    points = random_points(17, seed=2, dtype=dtype).to(device)
    uv, depth = cams.project(points)
    assert uv.shape == (5, 17, 2) and depth.shape == (5, 17)
    assert uv.dtype == dtype and uv.device.type == device.type
    uv_ref, depth_ref = project_naive(cams.K, cams.R, cams.t, points)
    torch.testing.assert_close(uv.cpu().double(), uv_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(depth.cpu().double(), depth_ref, atol=1e-5, rtol=0)


def test_projection_matrix_and_world_to_view_agree_with_project():
    cams = random_cameras(3, (40, 50), seed=3, skew=True)
    points = random_points(6, seed=4)
    hom = torch.cat([points, torch.ones(6, 1, dtype=F64)], dim=-1)  # (N, 4)
    pix = torch.einsum("vij,nj->vni", cams.projection_matrix(), hom)  # (V, N, 3)
    uv, depth = cams.project(points)
    torch.testing.assert_close(pix[..., :2] / pix[..., 2:], uv)
    cam = torch.einsum("vij,nj->vni", cams.world_to_view(), hom)  # (V, N, 4)
    torch.testing.assert_close(cam[..., :3], cams.world_to_camera(points))
    torch.testing.assert_close(cam[..., 2], depth)


@pytest.mark.parametrize("image_size", [(48, 80), (80, 48), (64, 64)])
def test_projection_matches_pytorch3d_transform_points_screen(
    image_size, device, pytorch3d_renderer
):
    cams = random_cameras(6, image_size, seed=5, dtype=torch.float32, device=device)
    points = random_points(20, seed=6, dtype=torch.float32).to(device)
    uv, depth = cams.project(points)
    p3d_cams = cams.to_pytorch3d()
    assert type(p3d_cams).__name__ == "PerspectiveCameras"
    screen = p3d_cams.transform_points_screen(points.expand(6, 20, 3), image_size=image_size)
    torch.testing.assert_close(uv, screen[..., :2], atol=1e-4, rtol=0)
    # The naive float64 loop agrees with both.
    uv_ref, _ = project_naive(cams.K, cams.R, cams.t, points)
    torch.testing.assert_close(screen[..., :2].cpu().double(), uv_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        depth,
        p3d_cams.get_world_to_view_transform().transform_points(points.expand(6, 20, 3))[..., 2],
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("image_size", [(48, 80), (80, 48)])
def test_fov_cameras_from_pytorch3d_project_like_its_transform_points_screen(
    image_size, device, pytorch3d_renderer
):
    gen = torch.Generator().manual_seed(7)
    n = 4
    R = random_rotations(n, gen, torch.float32)
    T = torch.tensor([[0.1, -0.2, 3.0], [0.0, 0.3, 4.0], [-0.2, 0.0, 3.5], [0.2, 0.1, 5.0]])
    fov = torch.tensor([30.0, 45.0, 60.0, 75.0])
    aspect = torch.tensor([1.0, 1.3, 0.8, 1.0])
    fov_cams = pytorch3d_renderer.FoVPerspectiveCameras(
        R=R, T=T, fov=fov, aspect_ratio=aspect, device=device
    )
    cams = Cameras.from_pytorch3d(fov_cams, image_size)
    assert cams.batch_shape == (n,) and cams.image_size == image_size
    points = random_points(25, seed=8, dtype=torch.float32).to(device)
    uv, _ = cams.project(points)
    screen = fov_cams.transform_points_screen(points.expand(n, 25, 3), image_size=image_size)
    torch.testing.assert_close(uv, screen[..., :2], atol=1e-4, rtol=0)
    # fov is along the shorter image side and fy = fx * aspect.
    half = min(image_size) / 2
    torch.testing.assert_close(
        cams.K[:, 1, 1].cpu(), half / torch.tan(torch.deg2rad(fov) / 2), atol=1e-3, rtol=0
    )


def test_perspective_cameras_in_ndc_from_pytorch3d_project_like_pytorch3d(pytorch3d_renderer):
    image_size = (60, 90)
    gen = torch.Generator().manual_seed(9)
    R = random_rotations(3, gen, torch.float32)
    T = torch.tensor([[0.0, 0.0, 3.0], [0.2, -0.1, 4.0], [-0.3, 0.2, 3.5]])
    p3d_cams = pytorch3d_renderer.PerspectiveCameras(
        focal_length=torch.tensor([[1.5, 1.7], [2.0, 2.0], [1.2, 1.1]]),
        principal_point=torch.tensor([[0.1, -0.05], [0.0, 0.0], [-0.2, 0.1]]),
        R=R,
        T=T,
        in_ndc=True,
    )
    cams = Cameras.from_pytorch3d(p3d_cams, image_size)
    points = random_points(30, seed=10, dtype=torch.float32)
    uv, _ = cams.project(points)
    screen = p3d_cams.transform_points_screen(points.expand(3, 30, 3), image_size=image_size)
    torch.testing.assert_close(uv, screen[..., :2], atol=1e-4, rtol=0)


def test_pytorch3d_round_trip_restores_K_R_t(pytorch3d_renderer):
    cams = random_cameras(6, (48, 80), seed=11, dtype=torch.float32).reshape(2, 3)
    back = Cameras.from_pytorch3d(cams.to_pytorch3d(), cams.image_size)
    assert back.batch_shape == (6,)  # PyTorch3D's batch is flat
    assert_same_cameras(back.reshape(2, 3), cams, atol=1e-4)


def test_from_pytorch3d_rejects_other_camera_types(pytorch3d_renderer):
    ortho = pytorch3d_renderer.OrthographicCameras()
    with pytest.raises(TypeError, match="cameras must be PyTorch3D"):
        Cameras.from_pytorch3d(ortho, (32, 32))


# -- OpenCV and OpenGL ---------------------------------------------------------------------
@pytest.mark.parametrize("integer_pixel_centers", [False, True])
def test_opencv_round_trip_is_exact(integer_pixel_centers):
    cams = random_cameras(5, (48, 80), seed=12, skew=True)
    K, R, t = cams.to_opencv(integer_pixel_centers=integer_pixel_centers)
    back = Cameras.from_opencv(
        K, R, t.unsqueeze(-1), cams.image_size, integer_pixel_centers=integer_pixel_centers
    )
    assert_same_cameras(back, cams, atol=1e-6)


def test_from_opencv_with_integer_pixel_centers_adds_half_a_pixel_to_cx_cy():
    cams = random_cameras(4, (48, 80), seed=13)
    K_cv = cams.K.clone()
    shifted = Cameras.from_opencv(K_cv, cams.R, cams.t, cams.image_size, integer_pixel_centers=True)
    plain = Cameras.from_opencv(K_cv, cams.R, cams.t, cams.image_size)
    torch.testing.assert_close(shifted.principal_point, K_cv[:, :2, 2] + 0.5, atol=1e-12, rtol=0)
    torch.testing.assert_close(shifted.focal_length, plain.focal_length, atol=0, rtol=0)
    assert_same_cameras(plain, cams)
    # A point that OpenCV projects onto the centre of pixel (row j, col i), i.e. onto the
    # integer (i, j), lands on persp3d's centre of that pixel, (i + 0.5, j + 0.5).
    points = random_points(10, seed=14)
    uv_cv, _ = project_naive(K_cv, cams.R, cams.t, points)
    uv, _ = shifted.project(points)
    torch.testing.assert_close(uv, uv_cv + 0.5, atol=1e-9, rtol=0)


def test_from_opencv_keeps_float64_numpy_input():
    cams = random_cameras(2, (30, 40), seed=15)
    K, R, t = (x.numpy() for x in cams.to_opencv())
    back = Cameras.from_opencv(K, R, t, np.array([30, 40]))
    assert back.dtype == F64 and back.image_size == (30, 40)
    assert_same_cameras(back, cams)


def test_opengl_round_trip_is_exact():
    cams = random_cameras(6, (48, 80), seed=16, skew=True).reshape(2, 3)
    c2w, K = cams.to_opengl()
    assert c2w.shape == (2, 3, 4, 4)
    torch.testing.assert_close(c2w[..., :3, 3], cams.centers)
    torch.testing.assert_close(
        c2w[..., 3, :], torch.tensor([0.0, 0, 0, 1], dtype=F64).expand(2, 3, 4)
    )
    # OpenGL cameras look down their -z axis.
    torch.testing.assert_close(-c2w[..., :3, 2], cams.forward)
    assert_same_cameras(Cameras.from_opengl(c2w, K, cams.image_size), cams, atol=1e-6)
    assert_same_cameras(Cameras.from_opengl(c2w[..., :3, :], K, cams.image_size), cams, atol=1e-6)


def test_from_opengl_camera_on_plus_z_sees_x_right_and_y_up():
    # NeRF/Blender: identity rotation = camera looking down world -z with +y up.
    c2w = torch.eye(4, dtype=F64)
    c2w[2, 3] = 4.0
    K = p3.intrinsics_from_fov(40.0, (48, 80), dtype=F64)
    cams = Cameras.from_opengl(c2w, K, (48, 80))
    torch.testing.assert_close(cams.centers, torch.tensor([0.0, 0.0, 4.0], dtype=F64))
    points = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.2, 0.0]], dtype=F64)
    uv, depth = cams.project(points)
    torch.testing.assert_close(uv[0], torch.tensor([40.0, 24.0], dtype=F64))
    torch.testing.assert_close(depth, torch.full((3,), 4.0, dtype=F64))
    assert uv[1, 0] > 40.0 and uv[1, 1] == pytest.approx(24.0)
    assert uv[2, 1] < 24.0 and uv[2, 0] == pytest.approx(40.0)


def test_from_opengl_rejects_non_4x4_poses():
    with pytest.raises(ValueError, match="c2w must be"):
        Cameras.from_opengl(torch.eye(3), torch.eye(3), (8, 8))


# -- look_at -------------------------------------------------------------------------------
vec3 = st.tuples(*[st.floats(-5.0, 5.0, allow_nan=False)] * 3)


@given(eye=vec3, target=vec3, up=vec3)
def test_look_at_gives_upright_proper_rotations_with_target_on_plus_z(eye, target, up):
    eye_t, target_t, up_t = (torch.tensor(v, dtype=F64) for v in (eye, target, up))
    forward = target_t - eye_t
    if forward.norm() < 1e-2 or up_t.norm() < 1e-2:
        return
    sin = torch.linalg.cross(forward / forward.norm(), up_t / up_t.norm(), dim=-1).norm()
    if sin < 1e-2:
        return
    R, t = p3.look_at(eye_t, target_t, up_t)
    eye3 = torch.eye(3, dtype=F64)
    torch.testing.assert_close(R @ R.T, eye3, atol=1e-10, rtol=0)
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-10)
    # The eye maps to the camera origin; the target lies on the camera's +z axis.
    torch.testing.assert_close(R @ eye_t + t, torch.zeros(3, dtype=F64), atol=1e-9, rtol=0)
    target_cam = R @ target_t + t
    torch.testing.assert_close(
        target_cam, torch.tensor([0.0, 0.0, forward.norm().item()], dtype=F64), atol=1e-9, rtol=0
    )
    # up lies in the camera's y-z plane and points to image row 0 (camera -y).
    up_cam = R @ up_t
    assert abs(up_cam[0].item()) < 1e-9
    assert up_cam[1].item() < 0


def test_look_at_up_points_to_image_row_zero(device):
    eye = torch.tensor([1.0, 0.5, 3.0], device=device)
    R, t = p3.look_at(eye, (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    assert R.device.type == device.type
    cams = Cameras(p3.intrinsics_from_fov(50.0, (32, 48), device=device), R, t, (32, 48))
    uv, _ = cams.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0]], device=device))
    assert uv[0, 1] == pytest.approx(16.0, abs=1e-4)
    assert uv[1, 1] < uv[0, 1] - 1.0


def test_look_at_broadcasts_and_keeps_float64():
    eye = torch.tensor([[0.0, 0.0, 2.0], [2.0, 1.0, 0.0], [-1.0, 2.0, -2.0]], dtype=F64)
    R, t = p3.look_at(eye)  # default target and up, given as Python tuples
    assert R.shape == (3, 3, 3) and t.shape == (3, 3)
    assert R.dtype == F64 and t.dtype == F64
    torch.testing.assert_close(
        (R @ eye.unsqueeze(-1)).squeeze(-1) + t, torch.zeros(3, 3, dtype=F64)
    )
    R_np, _ = p3.look_at(np.array([0.0, 1.0, 2.0]))
    assert R_np.dtype == F64


# -- orbit cameras -------------------------------------------------------------------------
def test_orbit_centres_follow_the_design_formula():
    elevation = [10.0, -20.0, 30.0, 45.0, 0.0, 60.0, -5.0]
    cams = p3.orbit_cameras(
        n_views=7, elevation=elevation, distance=2.5, azimuth_offset=10.0, dtype=F64
    )
    az = torch.deg2rad(10.0 + 360.0 * torch.arange(7, dtype=F64) / 7)
    el = torch.deg2rad(torch.tensor(elevation, dtype=F64))
    expected = 2.5 * torch.stack(
        [torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], dim=-1
    )
    torch.testing.assert_close(cams.centers, expected, atol=1e-12, rtol=0)


def test_spherical_cameras_centres_are_offset_by_the_target():
    target = (0.1, -0.2, 0.3)
    cams = p3.spherical_cameras([30.0, 200.0], [15.0, -40.0], 3.0, target=target, dtype=F64)
    az, el = (
        torch.deg2rad(torch.tensor([30.0, 200.0], dtype=F64)),
        torch.deg2rad(torch.tensor([15.0, -40.0], dtype=F64)),
    )
    offset = torch.stack(
        [torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], dim=-1
    )
    torch.testing.assert_close(cams.centers, torch.tensor(target, dtype=F64) + 3.0 * offset)
    uv, depth = cams.project(torch.tensor([target], dtype=F64))
    torch.testing.assert_close(uv[:, 0], cams.principal_point)
    torch.testing.assert_close(depth[:, 0], torch.full((2,), 3.0, dtype=F64))


def test_orbit_box_centre_projects_to_the_principal_point(device):
    cams = p3.orbit_cameras(
        n_views=12, elevation=25.0, distance=2.0, image_size=(48, 80), device=device
    )
    assert cams.batch_shape == (12,) and cams.device.type == device.type
    uv, depth = cams.project(torch.zeros(1, 3, device=device))
    torch.testing.assert_close(uv[:, 0], torch.tensor([40.0, 24.0], device=device).expand(12, 2))
    torch.testing.assert_close(depth[:, 0], torch.full((12,), 2.0, device=device))


def test_orbit_camera_at_azimuth_zero_sits_on_plus_z_and_sees_plus_x_right_plus_y_up():
    cams = p3.orbit_cameras(n_views=4, elevation=0.0, distance=3.0, dtype=F64)
    torch.testing.assert_close(cams.centers[0], torch.tensor([0.0, 0.0, 3.0], dtype=F64))
    # azimuth turns from +z toward +x: view 1 (90 degrees) sits on +x.
    torch.testing.assert_close(cams.centers[1], torch.tensor([3.0, 0.0, 0.0], dtype=F64))
    cx, cy = 32.0, 32.0
    points = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.3]], dtype=F64)
    uv, _ = cams.project(points)
    assert uv[0, 0, 0] > cx + 1 and uv[0, 0, 1] == pytest.approx(cy)  # +x to the right
    assert uv[0, 1, 1] < cy - 1 and uv[0, 1, 0] == pytest.approx(cx)  # +y to the top
    assert uv[1, 1, 1] < cy - 1  # upright from every azimuth
    assert uv[1, 2, 0] < cx - 1  # seen from +x, +z lies on the left


def test_positive_elevation_is_above_and_looks_down():
    cams = p3.orbit_cameras(n_views=6, elevation=35.0, distance=2.0, dtype=F64)
    assert bool((cams.centers[:, 1] > 0).all())
    assert bool((cams.forward[:, 1] < 0).all())
    below = p3.orbit_cameras(n_views=6, elevation=-35.0, distance=2.0, dtype=F64)
    assert bool((below.centers[:, 1] < 0).all())
    # Upright: no roll (the right axis is horizontal), world +y toward row 0.
    for c in (cams, below):
        torch.testing.assert_close(c.R[:, 0, 1], torch.zeros(6, dtype=F64), atol=1e-12, rtol=0)
        assert bool((c.R[:, 1, 1] < 0).all())


def test_orbit_intrinsics_have_equal_focal_lengths_from_the_vertical_fov():
    cams = p3.orbit_cameras(n_views=3, fov=40.0, image_size=(48, 80), dtype=F64)
    f = 24.0 / math.tan(math.radians(20.0))
    torch.testing.assert_close(cams.focal_length, torch.full((3, 2), f, dtype=F64))
    torch.testing.assert_close(
        cams.principal_point, torch.tensor([40.0, 24.0], dtype=F64).expand(3, 2)
    )


def test_orbit_jitter_is_deterministic_per_seed_and_bounded():
    kwargs = dict(n_views=16, elevation=20.0, distance=2.0, dtype=F64)
    a = p3.orbit_cameras(**kwargs, jitter=(10.0, 5.0), seed=3)
    b = p3.orbit_cameras(**kwargs, jitter=(10.0, 5.0), seed=3)
    c = p3.orbit_cameras(**kwargs, jitter=(10.0, 5.0), seed=4)
    plain = p3.orbit_cameras(**kwargs)
    assert_same_cameras(a, b)
    assert not torch.allclose(a.centers, c.centers)
    assert not torch.allclose(a.centers, plain.centers)
    # Recover azimuth and elevation from the centres: within the jitter of the ring's.
    az = torch.rad2deg(torch.atan2(a.centers[:, 0], a.centers[:, 2]))
    el = torch.rad2deg(torch.asin(a.centers[:, 1] / 2.0))
    az0 = 360.0 * torch.arange(16, dtype=F64) / 16
    d_az = torch.remainder(az - az0 + 180.0, 360.0) - 180.0
    assert bool((d_az.abs() <= 10.0 + 1e-9).all()) and bool((d_az.abs() > 1e-6).any())
    assert bool(((el - 20.0).abs() <= 5.0 + 1e-9).all())
    torch.testing.assert_close(a.centers.norm(dim=-1), torch.full((16,), 2.0, dtype=F64))
    # Without jitter the seed plays no part.
    assert_same_cameras(p3.orbit_cameras(**kwargs, seed=1), p3.orbit_cameras(**kwargs, seed=2))


# -- intrinsics, resizing, cropping, rays --------------------------------------------------
@pytest.mark.parametrize("fov", [20.0, 40.0, 90.0])
def test_point_on_the_vertical_fov_edge_projects_to_row_zero_and_row_H(fov):
    H, W = 48, 80
    K = p3.intrinsics_from_fov(fov, (H, W), dtype=F64)
    cams = Cameras(K, torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64), (H, W))
    tan = math.tan(math.radians(fov / 2))
    uv, _ = cams.project(torch.tensor([[0.0, -tan, 1.0], [0.0, tan, 1.0]], dtype=F64))
    torch.testing.assert_close(uv, torch.tensor([[W / 2, 0.0], [W / 2, H]], dtype=F64))
    K_h = p3.intrinsics_from_fov(fov, (H, W), axis="horizontal", dtype=F64)
    cams_h = Cameras(K_h, torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64), (H, W))
    uv_h, _ = cams_h.project(torch.tensor([[-tan, 0.0, 1.0], [tan, 0.0, 1.0]], dtype=F64))
    torch.testing.assert_close(uv_h, torch.tensor([[0.0, H / 2], [W, H / 2]], dtype=F64))


def test_intrinsics_from_fov_batches_over_fov():
    K = p3.intrinsics_from_fov(torch.tensor([30.0, 60.0]), 64, dtype=F64)
    assert K.shape == (2, 3, 3)
    assert K[0, 0, 0] > K[1, 0, 0]


@pytest.mark.parametrize(("h", "w"), [(24, 40), (96, 160), (31, 17)])
def test_resized_cameras_project_to_scaled_pixel_coordinates(h, w):
    cams = random_cameras(4, (48, 80), seed=17, skew=True)
    points = random_points(12, seed=18)
    uv, depth = cams.project(points)
    small = cams.resized(h, w)
    assert small.image_size == (h, w)
    uv_small, depth_small = small.project(points)
    scale = torch.tensor([w / 80, h / 48], dtype=F64)
    torch.testing.assert_close(uv_small, uv * scale, atol=1e-10, rtol=0)
    torch.testing.assert_close(depth_small, depth)
    assert_same_cameras(cams.resized((h, w)), small)
    # The image corners stay the image corners.
    assert cams.resized(48, 80) is cams


def test_cropped_cameras_shift_pixels_by_left_and_top():
    cams = random_cameras(3, (48, 80), seed=19, skew=True)
    points = random_points(9, seed=20)
    uv, depth = cams.project(points)
    crop = cams.cropped(top=5, left=11, height=30, width=40)
    assert crop.image_size == (30, 40)
    uv_crop, depth_crop = crop.project(points)
    torch.testing.assert_close(
        uv_crop, uv - torch.tensor([11.0, 5.0], dtype=F64), atol=1e-10, rtol=0
    )
    torch.testing.assert_close(depth_crop, depth)


def test_pixel_centres_are_at_half_integers():
    cams = random_cameras(1, (3, 4), seed=21)
    grid = cams.pixel_centers()
    assert grid.shape == (3, 4, 2)
    torch.testing.assert_close(grid[0, 0], torch.tensor([0.5, 0.5], dtype=F64))
    torch.testing.assert_close(grid[2, 3], torch.tensor([3.5, 2.5], dtype=F64))
    torch.testing.assert_close(grid[1, 2], torch.tensor([2.5, 1.5], dtype=F64))


@pytest.mark.parametrize("out_size", [None, (5, 7)])
def test_rays_at_depth_project_back_to_pixel_centres(out_size, device):
    cams = random_cameras(2, (12, 20), seed=22, skew=True, device=device)
    origins, dirs = cams.rays(out_size, normalize=False)
    h, w = out_size or cams.image_size
    assert origins.shape == dirs.shape == (2, h, w, 3)
    torch.testing.assert_close(origins[:, 0, 0], cams.centers)
    target = cams.resized(h, w)
    depth = 2.5
    points = (origins + depth * dirs).reshape(2, h * w, 3)
    for v in range(2):
        uv, d = target[v].project(points[v])
        torch.testing.assert_close(uv, target.pixel_centers().reshape(h * w, 2), atol=1e-9, rtol=0)
        torch.testing.assert_close(d, torch.full((h * w,), depth, dtype=F64, device=device))


def test_normalized_rays_are_unit_and_parallel_to_depth_rays():
    cams = random_cameras(3, (8, 10), seed=23).reshape(3)
    _, dirs = cams.rays(normalize=False)
    _, unit = cams.rays()
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3, 8, 10, dtype=F64))
    torch.testing.assert_close(unit, dirs / dirs.norm(dim=-1, keepdim=True))
    # Every ray points forward.
    assert bool(((unit * cams.forward[:, None, None, :]).sum(-1) > 0).all())


def test_single_camera_rays_have_no_batch_axis():
    cams = random_cameras(1, (6, 9), seed=24)[0]
    origins, dirs = cams.rays()
    assert origins.shape == dirs.shape == (6, 9, 3)


# -- R2N2 ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r2n2_pytorch3d():
    """PyTorch3D's R2N2 camera code: ``compute_extrinsic_matrix``, ``BlenderCamera`` and
    the dataset's RT -> (R, T) step.

    ``pytorch3d.datasets`` imports ``tabulate`` (for a printed summary only) without
    declaring it; when it is missing a stub stands in during the import, and the modules
    imported against it are forgotten again afterwards.
    """
    pytest.importorskip("pytorch3d.renderer")
    stubbed = False
    try:
        import tabulate  # noqa: F401
    except ImportError:
        stub = types.ModuleType("tabulate")
        stub.tabulate = lambda *args, **kwargs: ""
        sys.modules["tabulate"] = stub
        stubbed = True
    before = set(sys.modules)
    try:
        from pytorch3d.datasets.r2n2.r2n2 import R2N2
        from pytorch3d.datasets.r2n2.utils import BlenderCamera, compute_extrinsic_matrix
    finally:
        if stubbed:
            del sys.modules["tabulate"]
            for name in set(sys.modules) - before:
                if name.startswith("pytorch3d.datasets"):
                    del sys.modules[name]
            import pytorch3d

            if "pytorch3d.datasets" not in sys.modules and hasattr(pytorch3d, "datasets"):
                delattr(pytorch3d, "datasets")
    return types.SimpleNamespace(
        R2N2=R2N2, BlenderCamera=BlenderCamera, compute_extrinsic_matrix=compute_extrinsic_matrix
    )


def _pytorch3d_r2n2_cameras(lib, rows):
    """The cameras PyTorch3D's ``R2N2.__getitem__`` builds for metadata ``rows``."""
    Rs, Ts = [], []
    for az, el, _yaw, ratio, _fov in rows:
        RT = lib.compute_extrinsic_matrix(az, el, ratio * 1.75)  # MAX_CAMERA_DISTANCE
        R, T = lib.R2N2._compute_camera_calibration(None, RT)
        Rs.append(R)
        Ts.append(T)
    K = torch.tensor(
        [
            [2.1875, 0.0, 0.0, 0.0],
            [0.0, 2.1875, 0.0, 0.0],
            [0.0, 0.0, -1.002002, -0.2002002],
            [0.0, 0.0, 1.0, 0.0],
        ]
    )
    return lib.BlenderCamera(R=torch.stack(Rs), T=torch.stack(Ts), K=K.expand(len(rows), 4, 4))


def test_r2n2_cameras_match_pytorch3d_r2n2_utilities(r2n2_pytorch3d):
    gen = torch.Generator().manual_seed(25)
    n = 8
    u = torch.rand(n, 3, generator=gen, dtype=F64)
    rows = [[360.0 * a, -30.0 + 90.0 * e, 0.0, 0.5 + 0.4 * r, 25.0] for a, e, r in u.tolist()]
    cams = p3.r2n2_cameras(rows)
    assert cams.batch_shape == (n,) and cams.image_size == (137, 137)
    ref = _pytorch3d_r2n2_cameras(r2n2_pytorch3d, rows)
    torch.testing.assert_close(cams.centers, ref.get_camera_center(), atol=1e-5, rtol=0)
    points = (torch.rand(n, 40, 3, generator=gen) - 0.5).float()
    screen = ref.transform_points_screen(points, image_size=(137, 137))
    uv, _ = cams.project(points)
    uv_own = torch.diagonal(uv, dim1=0, dim2=1).permute(2, 0, 1)  # view v on points[v]
    torch.testing.assert_close(uv_own, screen[..., :2], atol=1e-3, rtol=0)


def test_r2n2_centres_follow_design_formula_and_fov_column_is_ignored():
    rows = torch.tensor([[30.0, 25.0, 0.0, 0.8, 25.0], [250.0, -10.0, 0.0, 0.6, 40.0]], dtype=F64)
    cams = p3.r2n2_cameras(rows)
    az, el, d = torch.deg2rad(rows[:, 0]), torch.deg2rad(rows[:, 1]), 1.75 * rows[:, 3]
    expected = d[:, None] * torch.stack(
        [torch.cos(el) * torch.cos(az), torch.sin(el), torch.cos(el) * torch.sin(az)], dim=-1
    )
    torch.testing.assert_close(cams.centers.double(), expected, atol=1e-5, rtol=0)
    f = R2N2_FOCAL_NDC * 137 / 2
    torch.testing.assert_close(cams.focal_length, torch.full((2, 2), f))
    torch.testing.assert_close(cams.principal_point, torch.full((2, 2), 68.5))
    uv, _ = cams.project(torch.zeros(1, 3))
    torch.testing.assert_close(uv[:, 0], torch.full((2, 2), 68.5), atol=1e-4, rtol=0)
    one = p3.Cameras.from_r2n2_metadata(rows[0].tolist(), image_size=64)
    assert one.batch_shape == () and one.image_size == (64, 64)
    assert one.K[0, 0].item() == pytest.approx(R2N2_FOCAL_NDC * 32, rel=1e-6)


def test_r2n2_yaw_rolls_about_the_optical_axis():
    base = p3.r2n2_cameras([[40.0, 20.0, 0.0, 0.7, 25.0]])
    rolled = p3.r2n2_cameras([[40.0, 20.0, 15.0, 0.7, 25.0]])
    torch.testing.assert_close(rolled.centers, base.centers, atol=1e-6, rtol=0)
    torch.testing.assert_close(rolled.forward, base.forward, atol=1e-6, rtol=0)
    assert not torch.allclose(rolled.R, base.R, atol=1e-3)


# -- property-based: round trips and batching ---------------------------------------------
@st.composite
def cameras_and_points(draw, n_points: int = 6):
    """One random float64 camera (any rotation, skewed K) and points in front of it."""
    q = draw(st.tuples(*[st.floats(-1.0, 1.0)] * 4).filter(lambda q: sum(x * x for x in q) > 0.1))
    w, x, y, z = (v / math.sqrt(sum(c * c for c in q)) for v in q)
    R = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        dtype=F64,
    )
    H = draw(st.integers(1, 300))
    W = draw(st.integers(1, 300))
    fx, fy = draw(st.floats(5.0, 800.0)), draw(st.floats(5.0, 800.0))
    cx, cy = draw(st.floats(0.0, float(W))), draw(st.floats(0.0, float(H)))
    skew = draw(st.floats(-5.0, 5.0))
    K = torch.tensor([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=F64)
    t = torch.tensor(
        [draw(st.floats(-1.0, 1.0)), draw(st.floats(-1.0, 1.0)), draw(st.floats(2.5, 20.0))],
        dtype=F64,
    )
    points = torch.tensor(
        draw(st.lists(st.tuples(*[st.floats(-1.0, 1.0)] * 3), min_size=1, max_size=n_points)),
        dtype=F64,
    )
    return Cameras(K, R, t, (H, W)), points


@given(data=cameras_and_points())
def test_unproject_inverts_project(data):
    cams, points = data
    uv, depth = cams.project(points)
    assert bool((depth > 0).all())
    torch.testing.assert_close(cams.unproject(uv, depth), points, atol=1e-9, rtol=1e-9)


@given(
    data=cameras_and_points(),
    pixels=st.lists(
        st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.05, 100.0)),
        min_size=1,
        max_size=6,
    ),
)
def test_project_inverts_unproject(data, pixels):
    cams, _ = data
    H, W = cams.image_size
    px = torch.tensor(pixels, dtype=F64)
    uv = px[:, :2] * torch.tensor([W, H], dtype=F64)
    depth = px[:, 2]
    uv_back, depth_back = cams.project(cams.unproject(uv, depth))
    torch.testing.assert_close(uv_back, uv, atol=1e-7, rtol=0)
    torch.testing.assert_close(depth_back, depth, atol=1e-9, rtol=1e-9)


# (cameras' batch shape, points' shape) -> shape of uv
BATCH_LAYOUTS = {
    ("()", "(N,3)"): "N",
    ("()", "(B,N,3)"): "B N",
    ("(V,)", "(N,3)"): "V N",
    ("(V,)", "(B,N,3)"): "B V N",
    ("(B,V)", "(N,3)"): "B V N",
    ("(B,V)", "(B,N,3)"): "B V N",
}


@given(
    layout=st.sampled_from(sorted(BATCH_LAYOUTS)),
    B=st.integers(1, 3),
    V=st.integers(1, 4),
    N=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_batched_projection_equals_per_camera_projection(layout, B, V, N, seed):
    cam_shape, point_shape = layout
    cams = random_cameras(B * V, (30, 50), seed=seed, skew=True)
    cams = {"()": cams[0], "(V,)": cams[:V], "(B,V)": cams.reshape(B, V)}[cam_shape]
    points = random_points(B * N, seed=seed + 1)
    points = points[:N] if point_shape == "(N,3)" else points.reshape(B, N, 3)
    uv, depth = cams.project(points)
    sizes = {"B": B, "V": V, "N": N}
    assert uv.shape == (*(sizes[d] for d in BATCH_LAYOUTS[layout].split()), 2)
    assert depth.shape == uv.shape[:-1]
    # Each entry equals the projection by one camera of one point set.
    for index in np.ndindex(*uv.shape[:-2]):
        if cam_shape == "()":
            cam = cams
        elif cam_shape == "(V,)":
            cam = cams[index[-1]]
        else:
            cam = cams[index[0], index[1]]
        pts = points if point_shape == "(N,3)" else points[index[0]]
        uv_one, depth_one = cam.project(pts)
        torch.testing.assert_close(uv[index], uv_one, atol=1e-12, rtol=0)
        torch.testing.assert_close(depth[index], depth_one, atol=1e-12, rtol=0)
    # And unproject inverts the batched projection, batch for batch.
    back = cams.unproject(uv, depth)
    torch.testing.assert_close(
        back,
        points.unsqueeze(-3).expand_as(back) if cam_shape != "()" else points.expand_as(back),
        atol=1e-9,
        rtol=0,
    )


def test_constructor_broadcasts_K_R_t_to_one_batch_shape():
    K = p3.intrinsics_from_fov(40.0, (16, 16), dtype=F64)  # (3, 3)
    R = random_rotations(4, torch.Generator().manual_seed(26))  # (4, 3, 3)
    t = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 4.0]], dtype=F64).unsqueeze(1)  # (2, 1, 3)
    cams = Cameras(K, R, t, 16)
    assert cams.batch_shape == (2, 4) and cams.ndim == 2 and len(cams) == 2
    assert (
        cams.K.shape == (2, 4, 3, 3) and cams.R.shape == (2, 4, 3, 3) and cams.t.shape == (2, 4, 3)
    )
    torch.testing.assert_close(cams.R[1, 2], R[2])
    torch.testing.assert_close(cams.t[1, 3], t[1, 0])
    with pytest.raises(ValueError, match="broadcastable batch shapes"):
        Cameras(K, R, torch.zeros(3, 3, dtype=F64), 16)


def test_float32_cameras_project_float64_points_in_float64():
    cams64 = random_cameras(3, (20, 30), seed=27)
    cams32 = cams64.float()
    points = random_points(5, seed=28)
    uv, depth = cams32.project(points)
    assert uv.dtype == F64 and depth.dtype == F64
    uv64, _ = cams64.project(points)
    torch.testing.assert_close(uv, uv64, atol=1e-3, rtol=0)
    back = cams32.unproject(uv.float(), depth)  # (V, N, 3)
    assert back.dtype == F64
    torch.testing.assert_close(back, points.expand(3, 5, 3), atol=1e-4, rtol=0)


# -- containers ----------------------------------------------------------------------------
def test_indexing_and_slicing_select_the_same_cameras():
    cams = random_cameras(12, (20, 30), seed=29).reshape(3, 4)
    one = cams[1, 2]
    assert one.batch_shape == () and one.image_size == (20, 30)
    torch.testing.assert_close(one.K, cams.K[1, 2])
    torch.testing.assert_close(one.t, cams.t[1, 2])
    assert cams[1].batch_shape == (4,)
    assert cams[:, 1:3].batch_shape == (3, 2)
    torch.testing.assert_close(cams[:, 1:3].R, cams.R[:, 1:3])
    picked = cams[torch.tensor([2, 0])]
    torch.testing.assert_close(picked.t, cams.t[[2, 0]])
    mask = torch.tensor([True, False, True])
    assert cams[mask].batch_shape == (2, 4)
    views = list(cams[0])
    assert len(views) == 4
    torch.testing.assert_close(views[3].R, cams.R[0, 3])
    points = random_points(3, seed=30)
    torch.testing.assert_close(cams[2, 1].project(points)[0], cams.project(points)[0][2, 1])
    with pytest.raises(IndexError, match="Ellipsis"):
        cams[..., 0]
    with pytest.raises(IndexError, match="single camera"):
        one[0]
    with pytest.raises(TypeError, match="single camera"):
        len(one)


def test_reshape_flatten_expand_unsqueeze_keep_each_camera():
    cams = random_cameras(6, (20, 30), seed=31)
    grid = cams.reshape(2, 3)
    assert grid.batch_shape == (2, 3)
    assert_same_cameras(grid.flatten(), cams)
    assert_same_cameras(cams.reshape((3, 2)).reshape(-1), cams)
    torch.testing.assert_close(grid.K[1, 0], cams.K[3])
    wide = cams.unsqueeze(0).expand(4, 6)
    assert wide.batch_shape == (4, 6)
    torch.testing.assert_close(wide.t[3], cams.t)
    assert cams.unsqueeze(-1).batch_shape == (6, 1)


def test_to_dtype_and_device_cast_every_parameter(device):
    cams = random_cameras(3, (20, 30), seed=32)
    single = cams.float()
    assert single.dtype == torch.float32
    assert single.K.dtype == single.R.dtype == single.t.dtype == torch.float32
    assert_same_cameras(single.double(), cams, atol=1e-5)
    moved = cams.to(device)
    assert moved.device.type == device.type and moved.K.device.type == device.type
    points = random_points(4, seed=33)
    torch.testing.assert_close(moved.project(points.to(device))[0].cpu(), cams.project(points)[0])
    assert_same_cameras(moved.cpu(), cams)
    with pytest.raises(TypeError, match="floating-point"):
        cams.to(dtype=torch.int64)


def test_cat_and_stack_join_cameras_along_batch_dims():
    a = random_cameras(3, (20, 30), seed=34)
    b = random_cameras(2, (20, 30), seed=35)
    joined = Cameras.cat([a, b])
    assert joined.batch_shape == (5,)
    assert_same_cameras(joined[:3], a)
    assert_same_cameras(joined[3:], b)
    grid = Cameras.stack([a, a[[2, 1, 0]]], dim=-1)
    assert grid.batch_shape == (3, 2)
    assert_same_cameras(grid[:, 1], a[[2, 1, 0]])
    rows = Cameras.cat([a.reshape(1, 3), a.reshape(1, 3)], dim=-2)
    assert rows.batch_shape == (2, 3)
    assert_same_cameras(Cameras.stack([a[0], b[1]]), Cameras.cat([a[0:1], b[1:2]]))


def test_cat_and_stack_reject_mismatched_cameras():
    a = random_cameras(3, (20, 30), seed=36)
    with pytest.raises(ValueError, match="image_size"):
        Cameras.cat([a, a.resized(10, 15)])
    with pytest.raises(ValueError, match="at least one"):
        Cameras.stack([])
    with pytest.raises(ValueError, match="batch dimension"):
        Cameras.cat([a[0], a[1]])
    with pytest.raises(ValueError, match="batch shapes"):
        Cameras.stack([a, a[:2]])
    with pytest.raises(ValueError, match="batch shapes"):
        Cameras.cat([a.reshape(1, 3), a[:2].reshape(1, 2)], dim=0)
    with pytest.raises(ValueError, match="dim"):
        Cameras.cat([a, a], dim=1)


def test_to_dict_from_dict_round_trip_through_json():
    cams = random_cameras(4, (20, 30), seed=37, skew=True).reshape(2, 2)
    data = json.loads(json.dumps(cams.to_dict()))
    assert data["image_size"] == [20, 30]
    back = Cameras.from_dict(data, dtype=F64)
    assert_same_cameras(back, cams)
    assert Cameras.from_dict(data).dtype == torch.float32
    with pytest.raises(ValueError, match=r"misses \['K'\]"):
        Cameras.from_dict({k: v for k, v in data.items() if k != "K"})


def test_image_size_accepts_numpy_and_tensor_integers():
    cams = random_cameras(1, (20, 30), seed=38)
    for size in (np.array([20, 30]), (np.int64(20), np.int32(30)), torch.tensor([20, 30])):
        assert Cameras(cams.K, cams.R, cams.t, size).image_size == (20, 30)
    assert Cameras(cams.K, cams.R, cams.t, np.int64(16)).image_size == (16, 16)
    assert "batch_shape=(1,)" in repr(cams)


# -- gradients -----------------------------------------------------------------------------
def test_project_gradcheck_wrt_K_R_t():
    cams = random_cameras(2, (20, 30), seed=39, skew=True)
    points = random_points(3, seed=40)
    K = cams.K.clone().requires_grad_(True)
    R = cams.R.clone().requires_grad_(True)
    t = cams.t.clone().requires_grad_(True)

    def fn(K, R, t):
        uv, depth = Cameras(K, R, t, cams.image_size).project(points)
        return uv, depth

    assert torch.autograd.gradcheck(fn, (K, R, t), eps=1e-6, atol=1e-5)
    uv, depth = fn(K, R, t)
    (uv.sum() + depth.sum()).backward()
    for name, x in (("K", K), ("R", R), ("t", t)):
        assert x.grad is not None and bool(x.grad.abs().sum() > 0), name


def test_unproject_gradcheck_wrt_pixels_depth_and_intrinsics():
    cams = random_cameras(2, (20, 30), seed=41, skew=True)
    uv = (torch.rand(2, 3, 2, dtype=F64) * 20).requires_grad_(True)
    depth = (1.0 + torch.rand(2, 3, dtype=F64)).requires_grad_(True)
    K = cams.K.clone().requires_grad_(True)

    def fn(uv, depth, K):
        return Cameras(K, cams.R, cams.t, cams.image_size).unproject(uv, depth)

    assert torch.autograd.gradcheck(fn, (uv, depth, K), eps=1e-6, atol=1e-5)


def test_gradients_flow_through_orbit_parameters():
    fov = torch.tensor(40.0, dtype=F64, requires_grad=True)
    K = p3.intrinsics_from_fov(fov, 32, dtype=F64)
    R, t = p3.look_at(torch.tensor([0.0, 1.0, 3.0], dtype=F64))
    uv, _ = Cameras(K, R, t, 32).project(torch.tensor([[0.2, 0.1, 0.0]], dtype=F64))
    uv.sum().backward()
    assert fov.grad is not None and fov.grad.item() != 0.0


# -- bad input -----------------------------------------------------------------------------
def _good():
    cams = random_cameras(2, (20, 30), seed=42)
    return cams.K.clone(), cams.R.clone(), cams.t.clone()


@pytest.mark.parametrize(
    ("which", "shape"),
    [("K", (2, 4, 4)), ("K", (2, 3, 4)), ("K", (3,)), ("R", (2, 2, 2)), ("t", (2, 4))],
)
def test_wrong_shapes_raise_value_error_naming_the_argument(which, shape):
    params = dict(zip("KRt", _good()))
    params[which] = torch.ones(shape, dtype=F64)
    with pytest.raises(ValueError, match=f"{which} must have shape"):
        Cameras(params["K"], params["R"], params["t"], (20, 30))


@pytest.mark.parametrize(
    ("make_R", "message"),
    [
        (lambda R: 2.0 * R, "R must be a rotation matrix"),
        (lambda R: R + 0.1, "R must be a rotation matrix"),
        (
            lambda R: R * torch.tensor([1.0, 1.0, -1.0], dtype=F64)[:, None],
            "R must be a proper rotation",
        ),
    ],
    ids=["scaled", "sheared", "reflected"],
)
def test_non_rotation_R_raises_value_error(make_R, message):
    K, R, t = _good()
    with pytest.raises(ValueError, match=message):
        Cameras(K, make_R(R), t, (20, 30))


@pytest.mark.parametrize("which", ["K", "R", "t"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parameters_raise_value_error(which, bad):
    params = dict(zip("KRt", _good()))
    value = params[which]
    value[(0,) * (value.ndim - 1) + (1,)] = bad
    with pytest.raises(ValueError, match=f"{which} must be finite"):
        Cameras(params["K"], params["R"], params["t"], (20, 30))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda K: K.index_fill(-1, torch.tensor([0]), 0.0), "positive focal"),
        (lambda K: K * torch.tensor([1.0, -1.0, 1.0], dtype=F64)[:, None], "positive focal"),
        (lambda K: K + torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0.5, 0]], dtype=F64), "last row"),
        (
            lambda K: K + torch.tensor([[0.0, 0, 0], [0.3, 0, 0], [0, 0, 0]], dtype=F64),
            "upper triangular",
        ),
    ],
    ids=["zero-fx", "negative-fy", "bottom-row", "lower-entry"],
)
def test_malformed_K_raises_value_error(edit, message):
    K, R, t = _good()
    with pytest.raises(ValueError, match=f"K must .*{message}"):
        Cameras(edit(K), R, t, (20, 30))


@pytest.mark.parametrize("size", [(0, 30), (20, 0), 0, (-4, 4), (20,), (20.5, 30), "64"])
def test_bad_image_size_raises_value_error(size):
    K, R, t = _good()
    with pytest.raises(ValueError, match="image_size"):
        Cameras(K, R, t, size)


@pytest.mark.parametrize("which", ["K", "R", "t"])
def test_non_tensor_parameters_raise_type_error(which):
    params = dict(zip("KRt", _good()))
    params[which] = params[which].tolist()
    with pytest.raises(TypeError, match=rf"{which} must be a torch\.Tensor"):
        Cameras(params["K"], params["R"], params["t"], (20, 30))


def test_integer_tensor_parameters_raise_type_error():
    K, R, t = _good()
    with pytest.raises(TypeError, match="t must be a floating-point tensor"):
        Cameras(K, R, t.long(), (20, 30))


def test_bad_points_raise_errors_naming_them():
    cams = random_cameras(2, (20, 30), seed=43)
    with pytest.raises(ValueError, match="points must have shape"):
        cams.project(torch.zeros(4, 2, dtype=F64))
    with pytest.raises(TypeError, match=r"points must be a torch\.Tensor"):
        cams.project([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="uv must have shape"):
        cams.unproject(torch.zeros(2, 4, 3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="depth must be finite"):
        cams.unproject(torch.zeros(2, 4, 2, dtype=F64), torch.full((2, 4), float("nan")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(eye=(0.0, 2.0, 0.0)), "up is parallel"),
        (dict(eye=(0.0, -3.0, 0.0), target=(0.0, 1.0, 0.0)), "up is parallel"),
        (dict(eye=(1.0, 2.0, 3.0), target=(1.0, 2.0, 3.0)), "eye and target must differ"),
        (dict(eye=(0.0, 0.0, 2.0), up=(0.0, 0.0, 0.0)), "up must be a non-zero"),
        (dict(eye=(0.0, float("nan"), 2.0)), "eye must be finite"),
        (dict(eye=(0.0, 2.0)), "eye must have shape"),
        (dict(eye=(0.0, 0.0, 2.0), up=(0.0, 1.0)), "up must have shape"),
    ],
)
def test_degenerate_look_at_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        p3.look_at(**kwargs)


@pytest.mark.parametrize("elevation", [90.0, -90.0, 120.0, [10.0, 90.0]])
def test_orbit_elevation_at_the_poles_raises_value_error(elevation):
    n = 2 if isinstance(elevation, list) else 4
    with pytest.raises(ValueError, match="elevation"):
        p3.orbit_cameras(n_views=n, elevation=elevation)
    with pytest.raises(ValueError, match="elevation"):
        p3.spherical_cameras(0.0, elevation, 2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_views=0), "n_views"),
        (dict(n_views=2.0), "n_views"),
        (dict(n_views=True), "n_views"),
        (dict(distance=0.0), "distance"),
        (dict(distance=-1.0), "distance"),
        (dict(fov=0.0), "fov"),
        (dict(fov=180.0), "fov"),
        (dict(fov=float("nan")), "fov"),
        (dict(n_views=3, elevation=[10.0, 20.0]), "elevation"),
        (dict(image_size=(0, 8)), "image_size"),
    ],
)
def test_bad_orbit_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        p3.orbit_cameras(**kwargs)


def test_bad_intrinsics_and_r2n2_arguments_raise_value_error():
    with pytest.raises(ValueError, match="axis"):
        p3.intrinsics_from_fov(40.0, 32, axis="diagonal")
    with pytest.raises(ValueError, match="fov"):
        p3.intrinsics_from_fov(-10.0, 32)
    with pytest.raises(ValueError, match="rows"):
        p3.r2n2_cameras([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="rows must be finite"):
        p3.r2n2_cameras([[1.0, float("nan"), 0.0, 0.7, 25.0]])
    with pytest.raises(ValueError, match="distance_ratio"):
        p3.r2n2_cameras([[1.0, 2.0, 0.0, 0.0, 25.0]])
