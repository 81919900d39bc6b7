"""COLMAP sparse-model reader (text and binary): models written here from known cameras and a
sphere's masks, read back, cameras and silhouettes compared."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

import persp3d as p3
from persp3d.datasets.formats.colmap import read_colmap
from persp3d.datasets.multiview import DataWarning

H, W = 32, 48
CENTER = np.array([0.2, -0.1, 0.3])  # the object is away from the origin
RADIUS = 0.3
MODEL_IDS = {
    "SIMPLE_PINHOLE": 0,
    "PINHOLE": 1,
    "SIMPLE_RADIAL": 2,
    "OPENCV": 4,
    "OPENCV_FISHEYE": 5,
}


def true_views(n: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """World->camera ``(R, t)`` (OpenCV axes) around CENTER in a z-up world."""
    out = []
    for k in range(n):
        az, el = math.radians(360.0 * k / n + 10.0), math.radians(-20.0 + 15.0 * k)
        eye = CENTER + 2.2 * np.array(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )
        R, t = p3.look_at(torch.tensor(eye), torch.tensor(CENTER), torch.tensor([0.0, 0.0, 1.0]))
        out.append((R.numpy(), t.numpy()))
    return out


def quaternion(R: np.ndarray) -> list[float]:
    """``(qw, qx, qy, qz)`` Hamilton (SciPy's scalar-last quaternion, reordered)."""
    x, y, z, w = Rotation.from_matrix(R).as_quat().tolist()
    return [w, x, y, z]


def sphere_mask(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixel-centre rays (persp3d / COLMAP: centre of pixel (0, 0) at
    (0.5, 0.5)) that hit the sphere."""
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    dirs = (np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T) @ R  # world
    oc = -R.T @ t - CENTER
    b = 2 * dirs @ oc
    return b * b - 4 * np.sum(dirs * dirs, -1) * (oc @ oc - RADIUS**2) > 0


def K_of(model: str, params: list[float]) -> np.ndarray:
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL"):
        f, cx, cy = params[:3]
        return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    fx, fy, cx, cy = params[:4]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


CAMERAS = {  # id -> (model, params): off-centre principal points, a non-square image
    1: ("PINHOLE", [44.0, 41.0, 26.3, 13.7]),
    3: ("SIMPLE_PINHOLE", [46.0, 22.9, 17.2]),
    7: ("OPENCV", [43.0, 45.5, 24.6, 15.1, 0.0, 0.0, 0.0, 0.0]),  # zero distortion: accepted
}


def sphere_points(n: int = 40) -> np.ndarray:
    d = np.random.default_rng(1).normal(size=(n, 3))
    return CENTER + RADIUS * d / np.linalg.norm(d, axis=1, keepdims=True)


def make_workspace(root: Path, binary: bool, cameras=CAMERAS, n_views: int = 5) -> list:
    """A COLMAP workspace ``root/{images,sparse/0}`` of the sphere; returns ``(K, R, t)``."""
    images, truth = [], []
    cam_ids = list(cameras)
    for k, (R, t) in enumerate(true_views(n_views)):
        cam = cam_ids[k % len(cam_ids)]
        K = K_of(*cameras[cam])
        name = f"sub/IMG_{k:04d}.JPG" if k == 2 else f"IMG_{k:04d}.png"
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[..., 3] = sphere_mask(K, R, t) * 255
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba[..., 3] if name.endswith("JPG") else rgba).save(
            root / "images" / name, format="PNG"
        )  # a PNG under a .JPG name is still read by PIL
        images.append((10 + k, quaternion(R), t, cam, name))
        truth.append((K, R, t))
    model = root / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    (write_binary if binary else write_text)(model, cameras, images, sphere_points())
    return truth


def write_text(model: Path, cameras, images, points) -> None:
    lines = ["# Camera list with one line of data per camera:"]
    lines += [f"{cid} {m} {W} {H} " + " ".join(map(repr, p)) for cid, (m, p) in cameras.items()]
    (model / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for image_id, q, t, cam, name in images:
        lines.append(" ".join(map(repr, [image_id, *q, *t.tolist(), cam])) + f" {name}")
        lines.append("" if image_id % 2 else "12.5 3.25 -1 30.0 4.0 2")  # 2-D points or none
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:"]
    lines += [
        f"{i + 1} {x!r} {y!r} {z!r} 200 100 50 0.5 10 0 12 1"
        for i, (x, y, z) in enumerate(points.tolist())
    ]
    (model / "points3D.txt").write_text("\n".join(lines) + "\n")


def write_binary(model: Path, cameras, images, points) -> None:
    out = struct.pack("<Q", len(cameras))
    for cid, (m, params) in cameras.items():
        out += struct.pack("<iiQQ", cid, MODEL_IDS[m], W, H) + struct.pack(
            f"<{len(params)}d", *params
        )
    (model / "cameras.bin").write_bytes(out)
    out = struct.pack("<Q", len(images))
    for image_id, q, t, cam, name in images:
        out += struct.pack("<i4d3di", image_id, *q, *t.tolist(), cam) + name.encode() + b"\0"
        pts = [(12.5, 3.25, -1), (30.0, 4.0, 2)][: image_id % 3]
        out += struct.pack("<Q", len(pts)) + b"".join(struct.pack("<ddq", *p) for p in pts)
    (model / "images.bin").write_bytes(out)
    out = struct.pack("<Q", len(points))
    for i, xyz in enumerate(points):
        out += struct.pack("<Q3d3Bd", i + 1, *xyz, 200, 100, 50, 0.5)
        out += struct.pack("<Q", 2) + struct.pack("<iiii", 10, 0, 12, 1)
    (model / "points3D.bin").write_bytes(out)


def project_np(K, R, t, X):
    x = (X @ R.T + t) @ K.T
    return x[:, :2] / x[:, 2:]


def sphere_volume(box_size: float = 0.9, res: int = 32) -> torch.Tensor:
    """Occupancy in ``VolumeBox(CENTER, box_size)``: a one-voxel ramp of the signed distance,
    so its 0.5 level set is the sphere."""
    step = box_size / res
    ax = (np.arange(res) + 0.5) * step - box_size / 2
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    occ = np.clip(0.5 + (RADIUS - np.sqrt(x**2 + y**2 + z**2)) / step, 0.0, 1.0)
    return torch.from_numpy(occ)[None, None]  # (1, 1, D, H, W)


def read_mask(path: Path) -> np.ndarray:
    """The sphere's mask from a written image: alpha of RGBA, else the grey level."""
    with Image.open(path) as img:
        arr = np.asarray(img)
    return (arr[..., 3] if arr.ndim == 3 else arr) > 127


def check_scene(scene, truth) -> None:
    X = CENTER + np.random.default_rng(0).uniform(-0.5, 0.5, (50, 3))
    for view, (K, R, t) in zip(scene.views, truth):
        assert view.image_size == (H, W)
        assert np.abs(project_np(view.K, view.R, view.t, X) - project_np(K, R, t, X)).max() < 1e-5
    cams = p3.Cameras(
        torch.from_numpy(np.stack([v.K for v in scene.views])),
        torch.from_numpy(np.stack([v.R for v in scene.views])),
        torch.from_numpy(np.stack([v.t for v in scene.views])),
        (H, W),
    )
    sil = p3.project(sphere_volume(), cams, box=p3.VolumeBox(CENTER, 0.9), depth_samples=96)
    pred = sil[0, :, 0].numpy() > 0.5  # (V, H, W)
    gt = np.stack([read_mask(v.image_path) for v in scene.views])
    assert float((pred & gt).sum() / (pred | gt).sum()) > 0.95


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_model_round_trips_cameras_points_and_silhouettes(tmp_path, binary):
    truth = make_workspace(tmp_path / "ws", binary)
    scene = read_colmap(tmp_path / "ws" / "sparse" / "0", tmp_path / "ws" / "images")
    assert scene.source == "colmap" and scene.name == "ws"
    assert [v.name for v in scene.views] == [f"IMG_{k:04d}" for k in range(5)]
    assert scene.views[2].image_path == tmp_path / "ws" / "images" / "sub" / "IMG_0002.JPG"
    check_scene(scene, truth)
    np.testing.assert_allclose(scene.points, sphere_points(), atol=1e-12)
    assert scene.up @ np.array([0.0, 0.0, 1.0]) > 0.95  # estimated from the tilted cameras
    # the workspace alone finds sparse/0 and images/
    again = read_colmap(tmp_path / "ws")
    assert [v.name for v in again.views] == [v.name for v in scene.views]


def test_binary_preferred_and_text_agree(tmp_path):
    make_workspace(tmp_path / "a", binary=False)
    make_workspace(tmp_path / "b", binary=True)
    text, binary = read_colmap(tmp_path / "a"), read_colmap(tmp_path / "b")
    for u, v in zip(text.views, binary.views):
        np.testing.assert_allclose(u.K, v.K)
        np.testing.assert_allclose(u.R, v.R, atol=1e-15)
        np.testing.assert_allclose(u.t, v.t)
    model = tmp_path / "a" / "sparse" / "0"
    (model / "cameras.bin").write_bytes(b"")  # a .bin beside the .txt wins, as in COLMAP
    with pytest.raises(ValueError, match=r"cameras.bin: truncated: .*the number of cameras"):
        read_colmap(model, tmp_path / "a" / "images")


def test_missing_image_skipped_with_warning_and_masks_by_colmap_name(tmp_path):
    truth = make_workspace(tmp_path, binary=True)
    (tmp_path / "images" / "IMG_0001.png").unlink()
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (W, H), 255).save(masks / "IMG_0000.png.png")
    with pytest.warns(DataWarning, match=r"IMG_0001.png: image 11 of .*images.bin not found"):
        scene = read_colmap(tmp_path / "sparse" / "0", masks_dir=masks)
    assert [v.name for v in scene.views] == ["IMG_0000", "IMG_0002", "IMG_0003", "IMG_0004"]
    assert (
        scene.views[0].mask_path == masks / "IMG_0000.png.png" and scene.views[1].mask_path is None
    )
    check_scene(scene, [truth[k] for k in (0, 2, 3, 4)])


def test_downscaled_images_scale_intrinsics(tmp_path):
    big = {1: ("PINHOLE", [88.0, 82.0, 52.6, 27.4])}  # calibrated at twice the files' size
    make_workspace(tmp_path, binary=False, cameras=big, n_views=2)
    model = tmp_path / "sparse" / "0"
    text = (model / "cameras.txt").read_text().replace(f" {W} {H} ", f" {2 * W} {2 * H} ")
    (model / "cameras.txt").write_text(text)
    scene = read_colmap(model)
    np.testing.assert_allclose(scene.views[0].K, K_of("PINHOLE", [44.0, 41.0, 26.3, 13.7]))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize(
    "model, params, match",
    [
        ("SIMPLE_RADIAL", [44.0, 24.0, 16.0, 0.01], r"camera 1 \(SIMPLE_RADIAL\) has lens distortion \(k=0.01\)"),
        ("OPENCV", [44.0, 44.0, 24.0, 16.0, 0.0, 0.0, 0.002, 0.0], r"camera 1 \(OPENCV\) has lens distortion \(p1=0.002\)"),
        ("OPENCV_FISHEYE", [44.0, 44.0, 24.0, 16.0, 0, 0, 0, 0], r"camera 1 uses model OPENCV_FISHEYE, which is not a pinhole"),
    ],
)  # fmt: skip
def test_distorted_cameras_refused_naming_camera_and_model(tmp_path, binary, model, params, match):
    make_workspace(tmp_path, binary, cameras={1: (model, params)}, n_views=1)
    with pytest.raises(ValueError, match=match):
        read_colmap(tmp_path)


@pytest.mark.parametrize(
    "file, old, new, match",
    [
        ("cameras.txt", " PINHOLE ", " PINHOLE_X ", r"cameras.txt:2: field 'MODEL' 'PINHOLE_X' is not a COLMAP camera model"),
        ("cameras.txt", " 26.3 13.7", " 26.3", r"cameras.txt:2: camera 1 \(PINHOLE\) needs 4 PARAMS \(fx fy cx cy\); got 3"),
        ("cameras.txt", "44.0 41.0", "44.0 abc", r"cameras.txt:2: field 'PARAMS\[fy\]' must be a finite number; got 'abc'"),
        ("images.txt", "10 ", "10 x", r"images.txt:2: field 'QW' must be a finite number"),
        ("images.txt", " 1 IMG_0000.png", " 9 IMG_0000.png", r"images.txt:2: image 10 \('IMG_0000.png'\) refers to camera 9, which .*cameras.txt does not define"),
        ("images.txt", " 1 IMG_0000.png", " IMG_0000.png", r"images.txt:2: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'; got 9 fields"),
        ("points3D.txt", " 10 0 12 1\n", " 10 0 12\n", r"points3D.txt:2: expected 'POINT3D_ID X Y Z R G B ERROR TRACK\[\]'"),
    ],
)  # fmt: skip
def test_malformed_text_names_file_line_and_field(tmp_path, file, old, new, match):
    make_workspace(tmp_path, binary=False, cameras={1: CAMERAS[1]}, n_views=2)
    path = tmp_path / "sparse" / "0" / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError, match=match):
        read_colmap(tmp_path)


@pytest.mark.parametrize(
    "file, cut, match",
    [
        ("cameras.bin", -8, r"cameras.bin: truncated: file ends at byte \d+ while reading PARAMS of camera 1"),
        ("images.bin", -30, r"images.bin: truncated: .*while reading POINTS2D of image 11"),
        ("points3D.bin", -3, r"points3D.bin: truncated: .*while reading TRACK of point 40"),
        ("images.bin", +5, r"images.bin: 5 bytes after the last record"),
    ],
)  # fmt: skip
def test_truncated_or_padded_binary_names_file_and_record(tmp_path, file, cut, match):
    make_workspace(tmp_path, binary=True, cameras={1: CAMERAS[1]}, n_views=2)
    path = tmp_path / "sparse" / "0" / file
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut < 0 else data + b"\0" * cut)
    with pytest.raises(ValueError, match=match):
        read_colmap(tmp_path)


def test_missing_model_or_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no cameras.bin/.txt and images.bin/.txt"):
        read_colmap(tmp_path / "empty")
    make_workspace(tmp_path / "ws", binary=True, n_views=1)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_colmap(tmp_path / "ws", tmp_path / "nowhere")
    (tmp_path / "ws" / "images" / "IMG_0000.png").unlink()
    with pytest.warns(DataWarning), pytest.raises(FileNotFoundError, match="none of the 1 images"):
        read_colmap(tmp_path / "ws")


def test_the_documented_text_example_parses(tmp_path):
    """The example lines of COLMAP's "Output Format" page, as printed there."""
    model = tmp_path / "sparse"
    model.mkdir()
    (model / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "# Number of cameras: 3\n"
        "1 SIMPLE_PINHOLE 3072 2304 2559.81 1536 1152\n"
        "2 PINHOLE 3072 2304 2560.56 2560.56 1536 1152\n"
        "3 SIMPLE_RADIAL 3072 2304 2559.69 1536 1152 -0.0218531\n"
    )
    (model / "images.txt").write_text(
        "# Image list with two lines of data per image:\n"
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
        "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
        "# Number of images: 2, mean observations per image: 2\n"
        "1 0.851773 0.0165051 0.503764 -0.142941 -0.737434 1.02973 3.74354 1 P1180141.JPG\n"
        "2362.39 248.498 58396 1784.7 268.254 59027 1784.7 268.254 -1\n"
        "2 0.851773 0.0165051 0.503764 -0.142941 -0.737434 1.02973 3.74354 1 P1180142.JPG\n"
        "1190.83 663.957 23056 1258.77 640.354 59070\n"
    )
    (model / "points3D.txt").write_text(
        "# 3D point list with one line of data per point:\n"
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
        "# Number of points: 3, mean track length: 3.3334\n"
        "63390 1.67241 0.292931 0.609726 115 121 122 1.33927 16 6542 15 7345 6 6714 14 7227\n"
        "63376 2.01848 0.108877 -0.0260841 102 209 250 1.73449 16 6519 15 7322 14 7212 8 3991\n"
        "63371 1.71102 0.28566 0.53475 245 251 249 0.612829 118 4140 117 4473\n"
    )
    (tmp_path / "images").mkdir()
    for name in ("P1180141.JPG", "P1180142.JPG"):
        Image.new("L", (3072, 2304)).save(tmp_path / "images" / name, format="PNG")
    scene = read_colmap(model)
    assert [v.name for v in scene.views] == ["P1180141", "P1180142"]
    np.testing.assert_allclose(
        scene.views[0].K, [[2559.81, 0, 1536], [0, 2559.81, 1152], [0, 0, 1]]
    )
    q = np.array([0.851773, 0.0165051, 0.503764, -0.142941])
    x, y, z, w = (*q[1:], q[0])
    np.testing.assert_allclose(
        scene.views[0].R, Rotation.from_quat([x, y, z, w]).as_matrix(), atol=1e-12
    )
    np.testing.assert_allclose(scene.views[0].t, [-0.737434, 1.02973, 3.74354])
    assert scene.points.shape == (3, 3) and scene.points[2, 2] == pytest.approx(0.53475)


def test_images_txt_without_points2d_lines_keeps_every_image(tmp_path):
    truth = make_workspace(tmp_path, binary=False, n_views=4)
    path = tmp_path / "sparse" / "0" / "images.txt"
    lines = path.read_text().splitlines()
    headers = [ln for ln in lines if ln.startswith("1") and ln.split()[-1].endswith(("png", "JPG"))]
    assert len(headers) == 4
    path.write_text("\n".join(headers) + "\n")  # header lines only, as some tools write
    scene = read_colmap(tmp_path)
    assert len(scene.views) == 4
    check_scene(scene, truth)
    path.write_text(headers[0] + "\n12.5 3.25\n" + "\n".join(headers[1:]) + "\n")
    with pytest.raises(ValueError, match=r"images.txt:2: expected the POINTS2D line of image 10"):
        read_colmap(tmp_path)
