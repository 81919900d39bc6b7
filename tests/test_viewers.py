"""Viewers without a renderer: scene geometry against the conventions, exports read back by
independent readers, the sources behind ``persp3d view``, the web page's contents, the
server, and the command line's errors. (Pictures: ``test_viewers_render.py``.)"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import persp3d as p3
from persp3d.train.cli import main
from persp3d.viewers import export, scene, sources, web
from persp3d.viewers.scene import ViewItem, ViewOptions


def ball(center, radius, resolution, box=None) -> np.ndarray:
    """``(D, H, W)`` occupancy of a ball from the voxel centres of ``box``."""
    box = box if box is not None else p3.VolumeBox()
    centres = box.voxel_centers(resolution, dtype=torch.float64).numpy()  # (D, H, W, 3)
    return (np.linalg.norm(centres - np.asarray(center), axis=-1) < radius).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Geometry
def test_isosurface_of_a_ball_in_an_odd_box_sits_at_its_centre_with_outward_faces():
    box = p3.VolumeBox(center=(0.1, 0.2, -0.1), size=(1.0, 1.2, 0.8))
    resolution = (20, 30, 25)  # (D, H, W): a swapped axis would move or squash the ball
    center, radius = np.array([0.3, 0.05, 0.0]), 0.22
    vertices, faces = scene.isosurface(ball(center, radius, resolution, box), box)
    assert len(faces) > 100
    dist = np.linalg.norm(vertices - center, axis=1)
    voxel = max(box.voxel_size(resolution))
    assert abs(dist.mean() - radius) < 0.5 * voxel and dist.max() < radius + voxel
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.einsum("fi,fi->f", normals, tri.mean(axis=1) - center) > 0
    assert outward.mean() > 0.99


def test_empty_volume_has_no_surface_and_logits_are_refused():
    vertices, faces = scene.isosurface(np.zeros((8, 8, 8), np.float32))
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
    with pytest.raises(ValueError, match="occupancy in \\[0, 1\\].*logits"):
        ViewItem(volume=np.full((4, 4, 4), 3.0, np.float32))
    with pytest.raises(ValueError, match="volume must be \\(D, H, W\\)"):
        ViewItem(volume=np.zeros((4, 4), np.float32))


def _exposed_faces_naive(occ: np.ndarray) -> int:
    D, H, W = occ.shape
    n = 0
    for k, j, i in zip(*np.nonzero(occ)):
        for dk, dj, di in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]:
            kk, jj, ii = k + dk, j + dj, i + di
            inside = 0 <= kk < D and 0 <= jj < H and 0 <= ii < W
            n += not (inside and occ[kk, jj, ii])
    return n


def test_voxel_faces_cover_the_occupied_cells_and_match_a_naive_count():
    box = p3.VolumeBox(center=(0.0, 0.5, 0.0), size=2.0)
    vol = np.zeros((4, 5, 6), np.float32)  # (D, H, W)
    vol[1, 2, 3] = 0.9  # voxel (k, j, i) = (1, 2, 3)
    mesh = scene.voxel_faces(vol, box)
    assert mesh.faces.shape == (12, 3) and mesh.vertices.shape == (24, 3)
    vs = np.asarray(box.voxel_size(vol.shape))
    lo = np.asarray(box.min) + np.array([3, 2, 1]) * vs  # (x, y, z) = (i, j, k)
    np.testing.assert_allclose(mesh.vertices.min(axis=0), lo, atol=1e-9)
    np.testing.assert_allclose(mesh.vertices.max(axis=0), lo + vs, atol=1e-9)
    np.testing.assert_allclose(mesh.vertex_colors[0], scene.occupancy_colors(0.9))
    tri = mesh.vertices[mesh.faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.einsum("fi,fi->f", normals, tri.mean(axis=1) - (lo + vs / 2)) > 0).all()
    assert len(scene.voxel_edges(vol, box).segments) == 12

    rng = np.random.default_rng(0)
    random = rng.random((5, 6, 7)).astype(np.float32)
    mesh = scene.voxel_faces(random, threshold=0.6)
    assert len(mesh.faces) == 2 * _exposed_faces_naive(random > 0.6)


def test_frustum_corners_project_to_the_image_corners_and_the_up_marker_above_row_zero():
    cams = p3.orbit_cameras(3, elevation=20.0, image_size=(48, 64))
    lines = scene.frustum_lines(cams, depth=0.8, highlight=1)
    points = torch.from_numpy(lines.points).reshape(3, 8, 3)  # centre, 4 corners, 3 marker
    uv, depth = cams.project(points)  # (3, 3, 8, 2): every point in every camera
    own_uv = uv[torch.arange(3), torch.arange(3)]  # (3, 8, 2)
    corners = torch.tensor([[0.0, 0.0], [64, 0], [64, 48], [0, 48]], dtype=own_uv.dtype)
    torch.testing.assert_close(own_uv[:, 1:5], corners.expand(3, 4, 2), atol=1e-3, rtol=0)
    assert (own_uv[:, 7, 1] < 0).all()  # the marker's apex lies above the top edge
    torch.testing.assert_close(
        depth[torch.arange(3), torch.arange(3), 1:],
        torch.full((3, 7), 0.8, dtype=depth.dtype),
        atol=1e-4,
        rtol=0,
    )
    np.testing.assert_allclose(lines.segment_colors[11], scene.COLORS["input_camera"])


def test_silhouette_pixels_land_on_their_pixel_of_the_image_plane():
    cams = p3.orbit_cameras(2, image_size=(32, 32))
    codes = np.zeros((2, 8, 8), np.uint8)
    codes[0, 0, 5] = 1  # view 0, row 0 (top), column 5
    codes[1, 7, 2] = 3
    mesh = scene.silhouette_quads(cams, codes, depth=torch.tensor([0.5, 0.7]))
    assert mesh.faces.shape == (4, 3) and not mesh.lit
    quads = torch.from_numpy(mesh.vertices).reshape(2, 4, 3)
    uv0, d0 = cams[0].project(quads[0])
    assert torch.allclose(uv0.min(0).values, torch.tensor([20.0, 0.0], dtype=uv0.dtype), atol=1e-4)
    assert torch.allclose(uv0.max(0).values, torch.tensor([24.0, 4.0], dtype=uv0.dtype), atol=1e-4)
    assert torch.allclose(d0, torch.full_like(d0, 0.5))
    uv1, _ = cams[1].project(quads[1])
    assert torch.allclose(uv1.min(0).values, torch.tensor([8.0, 28.0], dtype=uv1.dtype), atol=1e-4)
    np.testing.assert_allclose(mesh.vertex_colors[4], scene.COLORS["silhouette_both"])
    assert scene.silhouette_codes(
        np.array([[1, 0], [1, 0]]), np.array([[1, 1], [0, 0]])
    ).tolist() == [
        [3, 2],
        [1, 0],
    ]


def test_scene_puts_ground_truth_beside_and_bounds_take_in_the_cameras():
    cams = p3.orbit_cameras(4, distance=2.0, image_size=16)
    vol = ball((0, 0, 0), 0.3, 12)
    sils = np.zeros((4, 16, 16), np.float32)
    sils[:, 4:12, 4:12] = 1.0
    item = ViewItem(vol, ground_truth=vol, cameras=cams, silhouettes=sils)
    built = scene.build_scene(item, ViewOptions(mode="iso"))
    names = [m.name for m in built.meshes]
    assert names == ["prediction", "ground_truth", "silhouettes"]
    shift = built.meshes[1].vertices.mean(0) - built.meshes[0].vertices.mean(0)
    np.testing.assert_allclose(shift, [-1.25, 0.0, 0.0], atol=1e-6)
    # the view frames both objects, midway between their boxes, and leaves the cameras out
    np.testing.assert_allclose(built.center, [-0.625, 0.0, 0.0], atol=1e-9)
    outside = np.linalg.norm(cams.centers.numpy() - np.asarray(built.center), axis=1)
    assert (outside > built.radius).all() and built.radius < 0.625 + np.sqrt(3) / 2
    assert item.projected is not None and item.projected.shape == (4, 16, 16)
    alone = scene.build_scene(item, ViewOptions(show_ground_truth=False, show_cameras=False))
    assert [m.name for m in alone.meshes] == ["prediction", "silhouettes"]
    # the ball's cells span [-1/3, 1/3] per axis: the sphere around that cube, not the box
    assert alone.center == (0.0, 0.0, 0.0)
    assert alone.radius == pytest.approx(np.sqrt(3) / 3)
    many = ViewItem(vol, cameras=p3.orbit_cameras(24, image_size=8), input_view=5)
    assert scene._selected_views(many, ViewOptions()) == [0, 3, 5, 6, 9, 12, 15, 18, 21]
    assert len(scene._selected_views(many, ViewOptions(max_views=0))) == 24
    with pytest.raises(ValueError, match="views must be camera indices"):
        scene.build_scene(item, ViewOptions(views=[7]))
    with pytest.raises(ValueError, match="mode must be one of"):
        ViewOptions(mode="points")


def test_fit_view_looks_at_the_centre_from_the_orbit_convention():
    cam = scene.fit_view((0.2, 0.0, 0.0), 1.0, azimuth=0.0, elevation=0.0, image_size=(60, 80))
    centre = cam.centers
    assert torch.allclose(centre[[0, 1]], torch.tensor([0.2, 0.0]), atol=1e-5) and centre[2] > 2.5
    uv, _ = cam.project(torch.tensor([[0.2, 0.0, 0.0], [0.6, 0.3, 0.0]]))
    assert torch.allclose(uv[0], torch.tensor([40.0, 30.0]), atol=1e-3)
    assert uv[1, 0] > 40 and uv[1, 1] < 30  # world +x right, +y up


def snowman(box: p3.VolumeBox, resolution: int, up) -> np.ndarray:
    """``(D, H, W)`` a slab with two balls stacked on it along ``up`` (``(0, 0, 1)`` or
    ``(0, 1, 0)``) in the lower part of ``box``."""
    centres = box.voxel_centers(resolution, dtype=torch.float64).numpy() - np.asarray(box.center)
    u = np.asarray(up, dtype=np.float64)
    h = centres @ u  # height along up
    side = np.linalg.norm(centres - h[..., None] * u, axis=-1)  # distance from the up axis
    s = box.size[0]
    slab = (h > -0.4 * s) & (h < -0.3 * s) & (side < 0.3 * s)
    body = side**2 + (h + 0.12 * s) ** 2 < (0.18 * s) ** 2
    head = side**2 + (h - 0.15 * s) ** 2 < (0.11 * s) ** 2
    return (slab | body | head).astype(np.float32)


def _ring(center, distance: float, up, n: int = 12) -> p3.Cameras:
    """``n`` cameras around ``up`` at 30 degrees above the horizon, looking at ``center``."""
    u = np.asarray(up, dtype=np.float64)
    a = np.cross(u, [1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.cross(u, [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(u, a)
    eyes = [
        np.asarray(center)
        + distance * (np.cos(0.5) * (np.cos(t) * a + np.sin(t) * b) + np.sin(0.5) * u)
        for t in np.linspace(0, 2 * np.pi, n, endpoint=False)
    ]
    R, t = p3.look_at(torch.tensor(np.array(eyes)), torch.tensor(center), torch.tensor(u))
    K = p3.intrinsics_from_fov(40.0, (24, 32), dtype=torch.float64)
    return p3.Cameras(K.expand(n, 3, 3), R, t, (24, 32)).float()


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0)], ids=["z_up", "y_up"])
def test_default_viewpoint_frames_the_object_upright_in_its_up_axis(up):
    from persp3d.viewers.open3d_viewer import _view

    box = p3.VolumeBox((0.4, -0.3, 0.7), 2.0)
    vol = snowman(box, 24, up)
    cams = _ring(box.center, 8.0, up)  # a rig much larger than the object
    item = ViewItem(vol, box=box, cameras=cams, up=up)
    built = scene.build_scene(item)
    cam = _view(built, {"image_size": (480, 640)})
    assert cam.image_size == (480, 640)
    # it looks at the box centre
    uv, depth = cam.project(torch.tensor([box.center], dtype=torch.float64))
    np.testing.assert_allclose(uv.reshape(2).numpy(), [320.0, 240.0], atol=1e-3)
    assert float(depth) > 0
    # the object covers a good share of the picture: 30-80 % of its height
    occupied = box.voxel_centers(24, dtype=torch.float64)[torch.from_numpy(vol > 0.5)]
    uv_obj, _ = cam.project(occupied)
    rows = uv_obj[..., 1].numpy()
    assert 0.3 < (rows.max() - rows.min()) / 480 < 0.8
    assert 0 < uv_obj[..., 0].min() and uv_obj[..., 0].max() < 640
    # up points to the top of the picture, straight up
    top = torch.tensor([box.center], dtype=torch.float64) + 0.2 * torch.tensor(
        [up], dtype=torch.float64
    )
    uv_top, _ = cam.project(top)
    du, dv = (uv_top - uv).reshape(2).tolist()
    assert dv < -10 and abs(du) < 1e-3 * abs(dv)
    # the head is above the body in the picture
    head = box.voxel_centers(24, dtype=torch.float64)[torch.from_numpy(vol > 0.5)]
    heights = (head - torch.tensor(box.center, dtype=torch.float64)) @ torch.tensor(
        up, dtype=torch.float64
    )
    assert np.corrcoef(heights.numpy(), -rows.reshape(-1))[0, 1] > 0.9
    # the frustums are small beside the object: each image plane at most 0.3 box sides tall
    frustums = next(ls for ls in built.lines if ls.name == "cameras")
    corners = frustums.points.reshape(-1, 8, 3)[:, 1:5]  # (V, 4, 3) image-plane corners
    heights_plane = np.linalg.norm(corners[:, 3] - corners[:, 0], axis=-1)
    np.testing.assert_allclose(heights_plane, 0.3 * 2.0, rtol=1e-6)
    # the web page starts from the same viewpoint
    payload = web._payload(item, ViewOptions(), {}, ui=False)
    v = payload["view"]
    frame = np.asarray(v["frame"])
    np.testing.assert_allclose(frame[:, 1], up, atol=1e-9)
    a, e = np.radians(v["azimuth"]), np.radians(v["elevation"])
    eye = np.asarray(v["target"]) + v["distance"] * frame @ [
        np.cos(e) * np.sin(a),
        np.sin(e),
        np.cos(e) * np.cos(a),
    ]
    np.testing.assert_allclose(eye, cam.centers.double().numpy().reshape(3), atol=1e-4)
    np.testing.assert_allclose(v["target"], box.center, atol=1e-12)
    # a turntable turns about up, every frame upright and centred on the box
    from persp3d.viewers.open3d_viewer import turntable_cameras

    frames = turntable_cameras(built, 4, {"image_size": (48, 64)})
    centre = torch.tensor([box.center], dtype=torch.float64)
    uv_c, _ = frames.project(centre)  # (4, 1, 2)
    uv_t, _ = frames.project(centre + 0.2 * torch.tensor([up], dtype=torch.float64))
    np.testing.assert_allclose(uv_c.reshape(4, 2).numpy(), [[32.0, 24.0]] * 4, atol=1e-3)
    d = (uv_t - uv_c).reshape(4, 2).numpy()
    assert (d[:, 1] < 0).all() and np.abs(d[:, 0]).max() < 1e-3
    heights_eye = (frames.centers.double() - centre) @ torch.tensor(up, dtype=torch.float64)
    np.testing.assert_allclose(heights_eye.numpy(), heights_eye[0].item(), rtol=1e-6)
    # framing everything takes the rig in
    wide = _view(scene.build_scene(item, ViewOptions(frame="all")), {"image_size": (480, 640)})
    uv_cams, d_cams = wide.project(cams.centers.double())
    assert (d_cams > 0).all() and (uv_cams[..., 1] > 0).all() and (uv_cams[..., 1] < 480).all()


def test_capture_sample_is_shown_in_its_box_upright_with_its_visual_hull():
    box = p3.VolumeBox((0.4, -0.3, 0.7), 2.0)
    up = (0.0, 0.0, 1.0)
    vol = snowman(box, 24, up)
    cams = _ring(box.center, 6.0, up, n=8)
    sils = p3.project(torch.from_numpy(vol)[None, None], cams, box=box, depth_samples=64)[0]
    sample = {
        "images": sils.expand(-1, 3, -1, -1),
        "silhouettes": sils,  # (V, 1, H, W)
        "cameras": cams,
        "box": box,
        "up": torch.tensor(up),
        "category": "capture",
        "id": "snowman",
    }
    item = sources.dataset_source([sample], "a capture")[0]
    assert item.box == box and item.up == up and "visual hull" in item.title
    hull = item.volume > 0.5
    assert hull.shape == (48, 48, 48)
    # carved from the silhouettes: far from the whole box, and nothing above the head (the
    # cameras look down, so the hull may reach below the slab)
    centres = box.voxel_centers(48, dtype=torch.float64)[torch.from_numpy(hull)]
    heights = (centres - torch.tensor(box.center, dtype=torch.float64)) @ torch.tensor(up).double()
    assert 0.01 < hull.mean() < 0.3 and heights.max() < 0.7


def test_volume_file_without_up_stands_upright_on_its_cameras(tmp_path):
    from persp3d.datasets.volumes import save_volume

    box = p3.VolumeBox((0.4, -0.3, 0.7), 2.0)
    up = np.array([0.0, 0.6, 0.8])  # tilted, as a COLMAP world can be
    save_volume(tmp_path / "fit.npz", snowman(box, 16, up), box, cameras=_ring(box.center, 6.0, up))
    item = sources.open_source(tmp_path / "fit.npz")[0]
    np.testing.assert_allclose(item.up, up, atol=1e-5)
    save_volume(tmp_path / "plain.npz", snowman(box, 16, up), box)
    assert sources.open_source(tmp_path / "plain.npz")[0].up is None  # persp3d's +y
    # persp3d view of a fit's volume.npz shows its cameras
    code = main(["view", str(tmp_path / "fit.npz"), "--html", str(tmp_path / "fit.html")])
    assert code == 0
    payload = _payload((tmp_path / "fit.html").read_text())
    assert payload["has_cameras"] and any(ln["role"] == "cameras" for ln in payload["lines"])
    np.testing.assert_allclose(np.asarray(payload["view"]["frame"])[:, 1], up, atol=1e-5)
    # with no ground truth to compare, the projections are drawn in a neutral colour
    assert payload["has_silhouettes"] is False
    neutral = np.round(np.asarray(scene.COLORS["silhouette_projection"]) * 255).astype(int)
    assert payload["code_colors"][2] == neutral.tolist()
    sil_mesh = next(m for m in scene.build_scene(item).meshes if m.name == "silhouettes")
    assert (sil_mesh.vertex_colors == np.asarray(scene.COLORS["silhouette_projection"])).all()


def test_up_frame_is_the_identity_for_y_and_a_rotation_taking_y_to_up():
    np.testing.assert_allclose(scene.up_frame((0, 1, 0)), np.eye(3), atol=1e-12)
    for up in [(0, 0, 1), (1, 0, 0), (0, -1, 0), (0.3, -0.2, 0.9)]:
        F = scene.up_frame(up)
        np.testing.assert_allclose(F @ F.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(F) == pytest.approx(1.0)
        np.testing.assert_allclose(F[:, 1], np.asarray(up) / np.linalg.norm(up), atol=1e-12)
    with pytest.raises(ValueError, match="up must be a non-zero"):
        ViewItem(np.zeros((2, 2, 2), np.float32), up=(0, 0, 0))


# ---------------------------------------------------------------------------------------
# Exports
def test_view_exports_npz_with_box_cameras_and_up_that_load_back(tmp_path):
    from persp3d.datasets.volumes import load_volume
    from persp3d.viewers.cli import _export

    box = p3.VolumeBox(center=(0.5, -0.25, 1.0), size=(2.0, 1.0, 0.5))
    vol = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    cams = p3.orbit_cameras(3, image_size=(12, 16))
    item = ViewItem(vol, box=box, cameras=cams, up=(0.0, 0.0, 2.0))
    _export(str(tmp_path / "v.npz"), item, 0.5)
    with np.load(tmp_path / "v.npz", allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    assert str(data["format"]) == "persp3d-volume" and str(data["axes"]) == "D,H,W = z,y,x"
    # another tool places voxel (k, j, i) from the stored numbers alone
    k, j, i = 2, 1, 3
    centre = data["box_min"] + (np.array([i, j, k]) + 0.5) * data["voxel_size"]
    np.testing.assert_allclose(
        centre, box.voxel_centers((3, 4, 5), dtype=torch.float64)[k, j, i].numpy()
    )
    back = load_volume(tmp_path / "v.npz")
    np.testing.assert_array_equal(back.occupancy, vol)
    assert back.box == box and back.up.tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(back.cameras.K, cams.K.expand(3, 3, 3))
    torch.testing.assert_close(back.cameras.R, cams.R)
    # and the viewer opens it with its cameras and up
    opened = sources.open_source(tmp_path / "v.npz")[0]
    assert opened.cameras is not None and len(opened.cameras) == 3
    assert opened.up == (0.0, 0.0, 1.0) and opened.box == box


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_isosurface_exports_read_back_in_world_coordinates(tmp_path, suffix):
    import trimesh

    box = p3.VolumeBox(center=(1.0, 2.0, 3.0), size=1.0)
    vol = ball((1.2, 2.0, 3.0), 0.2, 16, box)
    path = export.export_isosurface(tmp_path / f"iso{suffix}", vol, box)
    mesh = trimesh.load(path, force="mesh", process=False)
    vertices, _ = scene.isosurface(vol, box)
    np.testing.assert_allclose(mesh.bounds, [vertices.min(0), vertices.max(0)], atol=1e-5)
    with pytest.raises(ValueError, match="no surface"):
        export.export_isosurface(tmp_path / f"empty{suffix}", np.zeros((4, 4, 4), np.float32))


# ---------------------------------------------------------------------------------------
# Sources
def test_volume_and_mesh_files_open_and_bad_files_say_what_is_wrong(tmp_path):
    vol = ball((0, 0, 0), 0.3, 12)
    np.save(tmp_path / "v.npy", vol)
    torch.save({"volume": torch.from_numpy(vol)[None]}, tmp_path / "v.pt")
    np.savez(tmp_path / "plain.npz", occupancy=vol)
    np.save(tmp_path / "logits.npy", np.where(vol > 0, 4.0, -4.0).astype(np.float32))
    for name in ("v.npy", "v.pt", "plain.npz"):
        item = sources.open_source(tmp_path / name)[0]
        np.testing.assert_array_equal(item.volume, vol)
        assert item.box == p3.VolumeBox()
    item = sources.open_source(tmp_path / "logits.npy", logits=True)[0]
    assert ((item.volume > 0.5) == (vol > 0.5)).all()
    with pytest.raises(ValueError, match="logits"):
        sources.open_source(tmp_path / "logits.npy")[0]

    export.export_isosurface(tmp_path / "ball.ply", vol)
    item = sources.open_source(tmp_path / "ball.ply", resolution=12)[0]
    assert item.mesh is not None and item.volume.shape == (12, 12, 12)
    assert (item.volume * vol).sum() / vol.sum() > 0.8

    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a .npz archive"):
        sources.open_source(tmp_path / "bad.npz")
    (tmp_path / "bad.ply").write_text("ply\ngarbage\n")
    with pytest.raises(ValueError, match="bad.ply"):
        sources.open_source(tmp_path / "bad.ply")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a file the viewer reads"):
        sources.open_source(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        sources.open_source(tmp_path / "missing.npz")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """2 procedural chairs, 4 views of 32 x 32, voxels 16^3."""
    from persp3d.datasets.procedural import ProceduralConfig, generate_procedural

    root = tmp_path_factory.mktemp("viewdata") / "tiny"
    config = ProceduralConfig(
        categories=("chair",),
        per_category=2,
        n_views=4,
        image_size=32,
        voxel_resolutions=(16,),
        store_depth=False,
    )
    generate_procedural(root, config, workers=0, progress=False)
    return root


def _tiny_run(run: Path, data: Path) -> Path:
    """A checkpoint of an untrained tiny predictor, as ``persp3d train`` writes one."""
    from persp3d.models import OccupancyPredictor
    from persp3d.train.checkpoint import save_checkpoint
    from persp3d.train.config import load_config

    config = load_config(
        None,
        [
            "data.kind=folder",
            f"data.root={data}",
            "data.voxel_resolution=16",
            "model.image_size=16",  # the dataset's images are 32: the viewer resizes them
            "model.resolution=8",
            "model.width=4",
            "model.latent_dim=8",
            "model.decoder_width=8",
        ],
    )
    torch.manual_seed(0)
    model = OccupancyPredictor(config.model)
    save_checkpoint(
        run / "last.pt", {"model": model.state_dict(), "config": json.dumps(config.to_dict())}
    )
    return run


def test_dataset_samples_and_run_predictions_become_items(tiny_dataset, tmp_path):
    source = sources.open_source(tiny_dataset)
    assert len(source) == 2 and source.index_of("chair_00001") == 1
    item = source[source.index_of("chair/chair_00000")]
    assert item.volume.shape == (16, 16, 16) and item.silhouettes.shape == (4, 32, 32)
    assert len(item.cameras) == 4 and item.ground_truth is None
    # the voxels' own projections agree with the rendered silhouettes
    projected = item.projected_silhouettes()
    iou = ((projected > 0.5) & (item.silhouettes > 0.5)).sum() / (
        (projected > 0.5) | (item.silhouettes > 0.5)
    ).sum()
    assert iou > 0.7
    with pytest.raises(ValueError, match="no item 'nope'"):
        source.index_of("nope")

    run = _tiny_run(tmp_path / "run", tiny_dataset)
    predictions = sources.open_source(run, split="all")
    pred = predictions[1]
    assert pred.volume.shape == (8, 8, 8) and pred.ground_truth.shape == (16, 16, 16)
    assert pred.input_view == 7 % 4 and "prediction from view 3" in pred.title
    assert sources.open_source(run / "last.pt", split="all", input_view=2)[0].input_view == 2


# ---------------------------------------------------------------------------------------
# The web page and the server
def _payload(page: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="persp3d-data">(.*?)</script>', page, re.S
    )
    assert match
    return json.loads(match.group(1))


def test_html_page_is_self_contained_small_and_carries_the_volume(tiny_dataset):
    item = sources.open_source(tiny_dataset)[0]
    item.ground_truth = item.volume
    page = web.html_page(item, ViewOptions(threshold=0.4), azimuth=10.0)
    assert not re.search(r"https?:|//cdn|<link|src=", page)  # nothing to fetch
    assert len(page.encode()) < 150_000
    data = _payload(page)
    assert data["threshold"] == 0.4 and data["view"]["azimuth"] == 10.0
    volume = data["volumes"][0]
    assert volume["bits"]  # binary voxels travel as 1 bit each
    decoded = np.unpackbits(
        np.frombuffer(base64.b64decode(volume["data"]), np.uint8), bitorder="little"
    )
    np.testing.assert_array_equal(decoded[: item.volume.size].reshape(volume["shape"]), item.volume)
    soft = _payload(web.html_page(ViewItem(item.volume * 0.7 + 0.1)))["volumes"][0]
    decoded = np.frombuffer(base64.b64decode(soft["data"]), np.uint8).reshape(soft["shape"])
    np.testing.assert_array_equal(decoded, np.round((item.volume * 0.7 + 0.1) * 255))
    assert volume["lo"] == [-0.5, -0.5, -0.5] and data["volumes"][1]["lo"][0] == pytest.approx(
        -1.75
    )
    assert len(data["images"]) == 4 and data["images"][0]["width"] == 32
    assert {ln["role"] for ln in data["lines"]} == {"box", "cameras"}
    with pytest.raises(ValueError, match="unknown view settings"):
        web.html_page(item, zoom=2)


def test_server_serves_the_page_on_localhost():
    page = "<!DOCTYPE html><title>t</title>"
    started = threading.Event()
    holder = {}

    def ready(server):
        holder["server"] = server
        started.set()

    thread = threading.Thread(target=web.serve_html, args=(page, "127.0.0.1", 0, ready))
    thread.start()
    assert started.wait(10)
    server = holder["server"]
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.read().decode() == page
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    finally:
        server.shutdown()
        thread.join(10)


# ---------------------------------------------------------------------------------------
# The command line
def test_view_command_writes_page_and_exports_and_explains_errors(
    tiny_dataset, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    code = main(
        [
            "view", str(tiny_dataset), "--id", "chair_00001", "--html", str(out / "s.html"),
            "--export", str(out / "s.npz"), "--export", str(out / "s.binvox"),
            "--export", str(out / "s.obj"), "--threshold", "0.4",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert zipfile.is_zipfile(out / "s.npz") and (out / "s.obj").stat().st_size > 0
    assert "chair/chair_00001" in _payload((out / "s.html").read_text())["title"]
    from persp3d.datasets.volumes import load_volume

    assert load_volume(out / "s.binvox").occupancy.shape == (16, 16, 16)

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    capsys.readouterr()
    assert main(["view", str(out / "s.npz")]) == 1
    err = capsys.readouterr().err
    assert "no display" in err and "--snapshot" in err and "--html" in err

    (tmp_path / "broken.binvox").write_bytes(b"#binvox 1\ndim 2 2 2\ndata\n\x01")
    assert main(["view", str(tmp_path / "broken.binvox"), "--snapshot", "x.png"]) == 1
    assert "broken.binvox" in capsys.readouterr().err
    assert main(["view", str(out / "s.npz"), "--export", str(tmp_path / "x.xyz")]) == 1
    assert "unknown format" in capsys.readouterr().err
    assert main(["view", str(out / "s.npz"), "--turntable", str(tmp_path / "x.avi")]) == 1
    assert ".gif or .mp4" in capsys.readouterr().err


def test_missing_libusb_gets_an_error_that_says_what_to_install(monkeypatch):
    import builtins

    from persp3d.viewers import open3d_viewer

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "open3d":
            raise ImportError("libusb-1.0.so.0: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="apt-get install libusb-1.0-0"):
        open3d_viewer.import_open3d()
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    assert open3d_viewer.has_display()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not open3d_viewer.has_display()
