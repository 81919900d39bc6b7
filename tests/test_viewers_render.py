"""Viewer pictures, checked against persp3d's own projection: Open3D off-screen (EGL, no
display, no GPU) and the web page in headless Chromium (WebGL through SwiftShader, and the
2D-canvas fallback), with networking off.

A ball offset to +x and +y, seen from a camera on +z, must appear right of and above the
picture's centre, where :func:`persp3d.project` puts its silhouette; a silhouette on a
camera's image plane, seen from that camera, must cover the silhouette itself (row 0 on
top, not mirrored). Set ``PERSP3D_KEEP_PICTURES=DIR`` to keep the pictures for a look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import persp3d as p3
from persp3d.viewers import open3d_viewer, scene, web
from persp3d.viewers.scene import ViewItem, ViewOptions

BALL_CENTER, BALL_RADIUS = (0.25, 0.12, 0.0), 0.2


def _keep(name: str, picture: np.ndarray | Path) -> None:
    folder = os.environ.get("PERSP3D_KEEP_PICTURES")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    if isinstance(picture, Path):
        shutil.copy(picture, Path(folder) / name)
    else:
        from PIL import Image

        Image.fromarray(picture).save(Path(folder) / name)


def _ball(resolution: int = 32) -> np.ndarray:
    centres = p3.VolumeBox().voxel_centers(resolution, dtype=torch.float64).numpy()
    inside = np.linalg.norm(centres - np.asarray(BALL_CENTER), axis=-1) < BALL_RADIUS
    return inside.astype(np.float32)


def _projected_mask(volume: np.ndarray, camera: p3.Cameras) -> np.ndarray:
    sil = p3.project(torch.from_numpy(volume)[None, None], camera.reshape(1), depth_samples=128)
    return sil[0, 0, 0].numpy() > 0.5  # (H, W)


def _object_mask(picture: np.ndarray) -> np.ndarray:
    """Pixels that differ from the white background."""
    return (255 - picture.astype(int)).sum(axis=-1) > 30


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


# ---------------------------------------------------------------------------------------
# Open3D, off-screen
@pytest.fixture(scope="module")
def o3d():
    return open3d_viewer.import_open3d()


@pytest.mark.parametrize("mode", ["iso", "voxels", "both"])
def test_snapshot_of_a_ball_shows_it_where_the_projection_puts_it(o3d, mode):
    volume = _ball()
    camera = p3.spherical_cameras(0.0, 0.0, 2.5, fov=40.0, image_size=(120, 160))  # on +z
    picture = open3d_viewer.snapshot(
        ViewItem(volume), options=ViewOptions(mode=mode, show_box=False), camera=camera
    )
    _keep(f"o3d_ball_{mode}.png", picture)
    assert picture.shape == (120, 160, 3) and picture.dtype == np.uint8
    mask, expected = _object_mask(picture), _projected_mask(volume, camera)
    assert 0.01 < mask.mean() < 0.5  # neither blank nor filled
    col, row = _centroid(mask)
    assert col > 80 + 15 and row < 60 - 5  # world +x on the right, +y up
    np.testing.assert_allclose(_centroid(mask), _centroid(expected), atol=2.0)
    assert _iou(mask, expected) > 0.85


def test_snapshot_honours_an_off_centre_principal_point_and_non_square_pixels(o3d):
    # Open3D's legacy renderer takes only fy; the snapshot must still match the camera.
    volume = _ball()
    base = p3.spherical_cameras(0.0, 0.0, 2.5, fov=40.0, image_size=(120, 160))
    K = base.K.clone()
    K[0, 0] *= 1.4  # fx != fy
    K[0, 2] += 21.0  # cx off centre
    K[1, 2] -= 13.5  # cy off centre, by a fractional amount
    camera = p3.Cameras(K, base.R, base.t, base.image_size)
    picture = open3d_viewer.snapshot(
        ViewItem(volume), options=ViewOptions(show_box=False), camera=camera
    )
    _keep("o3d_ball_odd_intrinsics.png", picture)
    mask, expected = _object_mask(picture), _projected_mask(volume, camera)
    np.testing.assert_allclose(_centroid(mask), _centroid(expected), atol=1.5)
    assert _iou(mask, expected) > 0.85


def test_image_plane_seen_from_its_camera_covers_the_silhouette_upright(o3d):
    cams = p3.orbit_cameras(4, elevation=30.0, image_size=(24, 24))
    sils = np.zeros((4, 24, 24), np.float32)
    sils[:, 3:20, 4:9] = 1.0  # an "L": a bar down the left ...
    sils[:, 15:20, 4:18] = 1.0  # ... and a foot along the bottom
    item = ViewItem(np.zeros((8, 8, 8), np.float32), cameras=cams, silhouettes=sils)
    camera = cams[2].resized(96)
    options = ViewOptions(views=[2], show_cameras=False, show_box=False)
    picture = open3d_viewer.snapshot(item, options=options, camera=camera)
    _keep("o3d_image_plane.png", picture)
    expected = np.kron(sils[2], np.ones((4, 4))) > 0.5  # (96, 96), row 0 on top
    assert _iou(_object_mask(picture), expected) > 0.9
    green = np.asarray(scene.COLORS["silhouette_ground_truth_only"]) * 255
    assert np.abs(picture[expected].astype(float) - green).max() < 3  # flat, unlit colour


def test_turntable_goes_round_the_ball_and_writes_a_looping_gif(o3d, tmp_path):
    from PIL import Image

    frames = open3d_viewer.turntable(
        ViewItem(_ball(16)),
        tmp_path / "turn.gif",
        n_frames=4,
        options=ViewOptions(show_box=False),
        azimuth=0.0,
        elevation=0.0,
        image_size=(60, 80),
    )
    assert frames.shape == (4, 60, 80, 3)
    columns = [_centroid(_object_mask(f))[0] for f in frames]
    # azimuth 0 (+x on the right), 90 (ball in front), 180 (on the left), 270 (behind)
    assert columns[0] > 45 and columns[2] < 35 and abs(columns[1] - 40) < 5
    gif = Image.open(tmp_path / "turn.gif")
    assert gif.n_frames == 4 and gif.info.get("loop") == 0


def test_viewer_keys_change_what_is_drawn_without_a_display(o3d, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    items = [ViewItem(_ball(16), title="a"), ViewItem(_ball(16), ground_truth=_ball(16), title="b")]
    monkeypatch.setattr(open3d_viewer, "has_display", lambda: False)
    with pytest.raises(open3d_viewer.NoDisplayError, match="--snapshot.*--html"):
        open3d_viewer.show(items)
    # Open3D falls back to EGL without a display, so the window's code runs here too.
    monkeypatch.setattr(open3d_viewer, "has_display", lambda: True)
    messages: list[str] = []
    viewer = open3d_viewer.Viewer(items, options=ViewOptions(), on_message=messages.append)
    viewer.open(160, 120)
    try:
        for key in ["V", "]", "]", "N", "G", "S"]:
            viewer.press(key)
        assert viewer.options.mode == "voxels" and viewer.options.threshold == 0.6
        assert viewer.index == 1 and not viewer.options.show_ground_truth
        assert "[2/2] b" in messages[-2] and (tmp_path / "persp3d_view_000.png").is_file()
        viewer.press("N")
        assert viewer.index == 0
    finally:
        viewer.close()


# ---------------------------------------------------------------------------------------
# The web page in headless Chromium
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium found (Debian: apt-get install chromium; scripts/setup.sh does it)")


OFFLINE = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # networking off: no name resolves
    "--proxy-server=127.0.0.1:9",
    "--hide-scrollbars",
]
WEBGL = ["--enable-unsafe-swiftshader"]  # WebGL on the CPU
NO_WEBGL = ["--use-gl=swiftshader"]  # this Chromium then offers no WebGL: the 2D fallback


def _browser(page: Path, flags: list[str], hash_: str = "", size=(640, 480), dom=False):
    """A screenshot ``(H, W, 3)`` of ``page`` (or its DOM after load, with ``dom``)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as profile:
        out = Path(profile) / "shot.png"
        action = ["--dump-dom"] if dom else [f"--screenshot={out}"]
        result = subprocess.run(
            [
                _chromium(), *OFFLINE, *flags, *action, f"--user-data-dir={profile}/p",
                f"--window-size={size[0]},{size[1]}", page.resolve().as_uri() + hash_,
            ],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        if dom:
            return result.stdout
        assert out.is_file(), result.stderr[-2000:]
        return np.asarray(Image.open(out).convert("RGB"))


@pytest.fixture(scope="module")
def ball_page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("web") / "ball.html"
    view = {"azimuth": 0.0, "elevation": 0.0, "distance": 2.5, "fov": 40.0, "target": (0, 0, 0)}
    web.write_html(path, ViewItem(_ball()), ViewOptions(show_box=False), ui=False, **view)
    return path


def test_web_page_uses_webgl_in_chromium(ball_page):
    dom = _browser(ball_page, WEBGL, dom=True)
    assert 'data-renderer="WebGL"' in dom
    dom = _browser(ball_page, WEBGL, "#renderer=canvas", dom=True)
    assert 'data-renderer="2D canvas (no WebGL)"' in dom


@pytest.mark.parametrize(
    ("flags", "hash_", "name"),
    [
        (WEBGL, "", "webgl"),
        (NO_WEBGL, "#renderer=canvas", "canvas"),
        (WEBGL, "#mode=voxels", "webgl_voxels"),
    ],
    ids=["webgl", "canvas", "webgl_voxels"],
)
def test_web_page_shows_the_ball_where_the_projection_puts_it(ball_page, flags, hash_, name):
    picture = _browser(ball_page, flags, hash_)
    _keep(f"web_ball_{name}.png", picture)
    camera = p3.spherical_cameras(0.0, 0.0, 2.5, fov=40.0, image_size=(480, 640))
    mask, expected = _object_mask(picture), _projected_mask(_ball(), camera)
    assert 0.02 < mask.mean() < 0.5  # not blank
    col, row = _centroid(mask)
    assert col > 320 + 60 and row < 240 - 20  # world +x on the right, +y up
    np.testing.assert_allclose(_centroid(mask), _centroid(expected), atol=4.0)
    assert _iou(mask, expected) > 0.85


def test_web_image_plane_seen_from_its_camera_covers_the_silhouette_upright(tmp_path):
    cams = p3.orbit_cameras(4, elevation=30.0, image_size=(24, 24))
    sils = np.zeros((4, 24, 24), np.float32)
    sils[:, 3:20, 4:9] = 1.0
    sils[:, 15:20, 4:18] = 1.0
    item = ViewItem(np.zeros((8, 8, 8), np.float32), cameras=cams, silhouettes=sils)
    page = web.write_html(
        tmp_path / "plane.html",
        item,
        ViewOptions(views=[1], show_cameras=False, show_box=False),
        ui=False,
        azimuth=90.0,  # orbit camera 1 of 4
        elevation=30.0,
        distance=2.0,
        fov=40.0,
        target=(0.0, 0.0, 0.0),
    )
    picture = _browser(page, WEBGL, size=(480, 480))
    _keep("web_image_plane.png", picture)
    expected = np.kron(sils[1], np.ones((20, 20))) > 0.5  # (480, 480), row 0 on top
    assert _iou(_object_mask(picture), expected) > 0.9


# ---------------------------------------------------------------------------------------
# Framing: a z-up capture's fit, seen by default, upright and filling the picture
def _zup_item() -> tuple[ViewItem, np.ndarray]:
    """A slab with two stacked balls standing on +z in a box away from the origin, with a
    ring of 8 cameras 5 box sides away, as a NeRF-synthetic fit would be."""
    box = p3.VolumeBox((0.4, -0.3, 0.7), 2.0)
    c = box.voxel_centers(24, dtype=torch.float64).numpy() - np.asarray(box.center)
    side = np.hypot(c[..., 0], c[..., 1])
    h = c[..., 2]
    volume = (
        ((h > -0.8) & (h < -0.6) & (side < 0.6))
        | (side**2 + (h + 0.24) ** 2 < 0.36**2)
        | (side**2 + (h - 0.3) ** 2 < 0.22**2)
    ).astype(np.float32)
    az = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    eyes = np.asarray(box.center) + 10.0 * np.stack(
        [np.cos(0.5) * np.cos(az), np.cos(0.5) * np.sin(az), np.full(8, np.sin(0.5))], -1
    )
    R, t = p3.look_at(torch.tensor(eyes), torch.tensor(box.center), torch.tensor([0.0, 0.0, 1.0]))
    K = p3.intrinsics_from_fov(30.0, (32, 32), dtype=torch.float64)
    cams = p3.Cameras(K.expand(8, 3, 3), R, t, (32, 32)).float()
    return ViewItem(volume, box=box, cameras=cams, up=(0.0, 0.0, 1.0)), volume


def _framed_expectation(item: ViewItem, volume: np.ndarray, size=(480, 640)):
    camera = open3d_viewer._view(scene.build_scene(item), {"image_size": size})
    sil = p3.project(
        torch.from_numpy(volume)[None, None], camera.reshape(1), box=item.box, depth_samples=128
    )
    return camera, sil[0, 0, 0].numpy() > 0.5


def _upright(mask: np.ndarray) -> None:
    """The slab (widest rows) is at the bottom and the object fills 30-80 % of the height."""
    rows = np.flatnonzero(mask.any(axis=1))
    height = (rows[-1] - rows[0]) / mask.shape[0]
    assert 0.3 < height < 0.8, height
    widths = mask.sum(axis=1)[rows[0] : rows[-1] + 1]
    assert np.argmax(widths) > 0.6 * len(widths)  # the slab is in the lower part


def test_snapshot_of_a_z_up_fit_frames_it_upright(o3d):
    item, volume = _zup_item()
    picture = open3d_viewer.snapshot(item, options=ViewOptions(show_box=False, show_cameras=False,
                                                                show_silhouettes=False))  # fmt: skip
    _keep("o3d_zup_framed.png", picture)
    _camera, expected = _framed_expectation(item, volume)
    mask = _object_mask(picture)
    _upright(mask)
    _upright(expected)
    assert _iou(mask, expected) > 0.85


def test_web_page_of_a_z_up_fit_starts_from_the_snapshot_viewpoint(tmp_path):
    item, volume = _zup_item()
    options = ViewOptions(show_box=False, show_cameras=False, show_silhouettes=False)
    page = web.write_html(tmp_path / "zup.html", item, options, ui=False)
    picture = _browser(page, WEBGL, size=(640, 480))
    _keep("web_zup_framed.png", picture)
    _camera, expected = _framed_expectation(item, volume)
    mask = _object_mask(picture)
    _upright(mask)
    assert _iou(mask, expected) > 0.85
