"""Readers of Middlebury ``*_par.txt``, DTU/IDR ``cameras.npz`` and one ShapeNetRendering
model: fixtures written in each format's layout from known cameras (non-square images,
off-centre principal points, fx != fy, a ball away from the origin), read back, compared."""

from __future__ import annotations

import numpy as np
import pytest
from _capture_helpers import (
    BALL_CENTER,
    BALL_RADIUS,
    make_rig,
    project_points,
    write_dtu,
    write_middlebury,
    write_r2n2_model,
)

import persp3d as p3
from persp3d.datasets.formats import (
    FORMATS,
    CaptureScene,
    read_dtu,
    read_middlebury,
    read_r2n2_object,
)
from persp3d.datasets.formats.scene import decompose_projection, estimate_up

POINTS = BALL_CENTER + np.random.default_rng(5).normal(0, 0.3, (50, 3))


def assert_same_projection(scene: CaptureScene, rig, points=POINTS, tol=1e-5, det_tol=1e-9):
    assert len(scene.views) == len(rig.K)
    for v, view in enumerate(scene.views):
        assert view.image_size == rig.size
        uv_read = project_points(view.K, view.R, view.t, points)
        uv_true = project_points(rig.K[v], rig.R[v], rig.t[v], points)
        np.testing.assert_allclose(uv_read, uv_true, atol=tol, rtol=0)
        assert abs(np.linalg.det(view.R) - 1) < det_tol
        depth = (points @ view.R.T + view.t)[:, 2]
        assert (depth > 0).all()  # the object is in front of every camera


def test_formats_registry_lists_the_readers():
    for name in ("middlebury", "dtu", "r2n2"):
        assert name in FORMATS


def test_decompose_projection_recovers_K_R_t_up_to_scale_and_sign():
    rng = np.random.default_rng(0)
    for sign in (1.0, -1.0):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        R = q * np.sign(np.linalg.det(q))
        K = np.array([[410.0, 0.7, 330.2], [0.0, 395.0, 251.9], [0.0, 0.0, 1.0]])
        t = rng.normal(size=3)
        K2, R2, t2 = decompose_projection(sign * 2.7 * K @ np.c_[R, t])
        np.testing.assert_allclose(K2, K, atol=1e-9)
        np.testing.assert_allclose(R2, R, atol=1e-12)
        np.testing.assert_allclose(t2, t, atol=1e-12)


def test_estimate_up_ignores_a_few_upside_down_views():
    rig = make_rig(8)
    R = rig.R.copy()
    R[2] = np.diag([-1.0, -1.0, 1.0]) @ R[2]  # view 2 rotated 180 degrees in the image
    up = estimate_up(R)
    assert up @ np.array([0.0, 1.0, 0.0]) > 0.95


# -- Middlebury ---------------------------------------------------------------------------------
def test_middlebury_cameras_round_trip_to_1e_5_px(tmp_path):
    rig = make_rig()
    par = write_middlebury(tmp_path, rig)
    scene = read_middlebury(par)
    assert scene.source == "middlebury" and scene.name == "ball"
    assert_same_projection(scene, rig)
    assert scene.views[0].name == "ball0001"
    assert scene.up @ np.array([0.0, 1.0, 0.0]) > 0.95
    # a folder with one *_par.txt works too, and integer_pixel_centers=False keeps K as written
    raw = read_middlebury(tmp_path, integer_pixel_centers=False)
    np.testing.assert_allclose(raw.views[0].K[:2, 2], scene.views[0].K[:2, 2] - 0.5)


def test_middlebury_matches_persp3d_from_opencv_with_integer_centres(tmp_path):
    rig = make_rig(3)
    scene = read_middlebury(write_middlebury(tmp_path, rig))
    v = scene.views[1]
    K_file = rig.K[1] - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
    cams = p3.Cameras.from_opencv(K_file, rig.R[1], rig.t[1], rig.size, integer_pixel_centers=True)
    np.testing.assert_allclose(v.K, cams.K.numpy(), atol=1e-9)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda ls: ["x", *ls[1:]], "field 'count'"),
        (lambda ls: ["5", *ls[1:]], "field 'count' says 5"),
        (lambda ls: [ls[0], ls[1].replace(ls[1].split()[5], "abc", 1), *ls[2:]], "field k22"),
        (lambda ls: [ls[0], " ".join(ls[1].split()[:-1]), *ls[2:]], "expected 22 fields"),
        (
            lambda ls: [ls[0], " ".join([*ls[1].split()[:10], "2", *ls[1].split()[11:]]), *ls[2:]],
            "r11..r33 are not a rotation",
        ),
    ],
)
def test_middlebury_malformed_file_names_file_and_field(tmp_path, mutate, match):
    rig = make_rig(3)
    par = write_middlebury(tmp_path, rig)
    lines = par.read_text().splitlines()
    par.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(ValueError, match=match) as info:
        read_middlebury(par)
    assert str(par) in str(info.value)


def test_middlebury_missing_image_is_named(tmp_path):
    par = write_middlebury(tmp_path, make_rig(2))
    (tmp_path / "ball0002.png").unlink()
    with pytest.raises(FileNotFoundError, match="ball0002.png"):
        read_middlebury(par)


# -- DTU / IDR ----------------------------------------------------------------------------------
def test_dtu_decomposes_world_mats_and_reads_box_from_scale_mat(tmp_path):
    rig = make_rig()
    write_dtu(tmp_path / "scan7", rig, box_center=BALL_CENTER, box_radius=0.4)
    scene = read_dtu(tmp_path / "scan7")
    assert scene.source == "dtu" and scene.name == "scan7"
    assert_same_projection(scene, rig)
    for v in scene.views:
        assert abs(v.K[2, 2] - 1) < 1e-12 and v.K[0, 0] > 0 and v.K[1, 1] > 0
        assert v.mask_path is not None and v.mask_path.stem == v.name
    center, side = scene.box
    np.testing.assert_allclose(center, BALL_CENTER)
    assert side == pytest.approx(0.8)


def test_dtu_pixel_centres_follow_idr_integer_uv(tmp_path):
    """IDR casts pixel (j, i) through uv = (i, j): the reader adds 0.5 to reach persp3d."""
    rig = make_rig(2)
    write_dtu(tmp_path / "s", rig)
    a = read_dtu(tmp_path / "s")
    b = read_dtu(tmp_path / "s", integer_pixel_centers=False)
    np.testing.assert_allclose(a.views[0].K[:2, 2] - b.views[0].K[:2, 2], 0.5, atol=1e-9)


def test_dtu_malformed_cameras_name_file_and_key(tmp_path):
    rig = make_rig(3)
    root = write_dtu(tmp_path / "s", rig)
    data = dict(np.load(root / "cameras.npz"))
    del data["world_mat_2"]
    np.savez(root / "cameras.npz", **data)
    with pytest.raises(ValueError, match=r"cameras\.npz: field world_mat_2 missing"):
        read_dtu(root)
    data["world_mat_2"] = np.zeros((4, 4))
    np.savez(root / "cameras.npz", **data)
    with pytest.raises(ValueError, match="field world_mat_2: .*singular"):
        read_dtu(root)
    data["world_mat_2"] = np.ones((2, 2))
    np.savez(root / "cameras.npz", **data)
    with pytest.raises(ValueError, match="field world_mat_2 must be"):
        read_dtu(root)
    (root / "cameras.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"cameras\.npz: not a readable"):
        read_dtu(root)
    (root / "cameras.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"cameras\.npz"):
        read_dtu(root)


# -- R2N2 object ---------------------------------------------------------------------------------
def test_r2n2_object_cameras_match_the_renderer(tmp_path):
    model = tmp_path / "02691156" / "abc123"
    rig, _rows = write_r2n2_model(model)
    scene = read_r2n2_object(model)
    assert scene.name == "abc123" and scene.source == "r2n2"
    np.testing.assert_allclose(scene.up, [0, 1, 0])
    points = np.random.default_rng(2).normal(0, 0.2, (40, 3))
    # persp3d.r2n2_cameras returns float32 cameras
    assert_same_projection(scene, rig, points, tol=2e-3, det_tol=1e-6)
    assert read_r2n2_object(model / "rendering").name == "abc123"


def test_r2n2_object_malformed_metadata_names_file_and_line(tmp_path):
    model = tmp_path / "m"
    write_r2n2_model(model, n_views=3)
    meta = model / "rendering" / "rendering_metadata.txt"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([lines[0], "1 2 three 4 5", lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"rendering_metadata\.txt:2: expected 5 numbers"):
        read_r2n2_object(model)
    meta.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(ValueError, match="renderings.txt: lists 3 images but"):
        read_r2n2_object(model)


def test_ball_fixture_is_off_origin():
    assert np.linalg.norm(BALL_CENTER) > 3 * BALL_RADIUS


def test_estimate_up_is_exact_for_a_cap_of_views_looking_down():
    """Cameras 50-70 degrees above the object over a 100-degree arc (DTU-like): their mean
    up vector leans toward them; the direction normal to every image x axis does not."""
    from _capture_helpers import look_at_np

    up_true = np.array([0.3, 0.9, -0.2])
    up_true /= np.linalg.norm(up_true)
    a = np.cross(up_true, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(up_true, a)
    Rs = []
    for az in np.radians(np.linspace(-50, 50, 7)):
        for el in np.radians([50, 70]):
            eye = 3 * (np.cos(el) * (np.cos(az) * a + np.sin(az) * b) + np.sin(el) * up_true)
            Rs.append(look_at_np(eye, np.zeros(3), up=up_true)[0])
    np.testing.assert_allclose(estimate_up(Rs), up_true, atol=1e-9)
    mean_up = -np.mean([R[1] for R in Rs], axis=0)
    assert mean_up @ up_true / np.linalg.norm(mean_up) < 0.95  # the naive estimate leans


def test_dtu_reads_neus_cameras_sphere_npz(tmp_path):
    rig = make_rig(2)
    root = write_dtu(tmp_path / "neus", rig)
    (root / "cameras.npz").rename(root / "cameras_sphere.npz")
    assert_same_projection(read_dtu(root), rig)
