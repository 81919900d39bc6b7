"""NeRF / Blender / nerfstudio ``transforms*.json`` reader: fixtures written by code from known
cameras and a sphere's masks, read back, cameras and silhouettes compared."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import persp3d as p3
from persp3d.datasets.formats.nerf import opengl_c2w_to_opencv, read_nerf
from persp3d.datasets.multiview import DataWarning

H, W = 32, 48
CENTER = np.array([0.2, -0.1, 0.3])  # the object is away from the origin
RADIUS = 0.3
K_OFF = np.array([[44.0, 0.0, 26.3], [0.0, 41.0, 13.7], [0.0, 0.0, 1.0]])  # off-centre


def true_views(n: int = 5) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(R, t, eye)`` of cameras around CENTER in a z-up world (OpenCV axes)."""
    out = []
    for k in range(n):
        az, el = math.radians(360.0 * k / n + 10.0), math.radians(-20.0 + 15.0 * k)
        eye = CENTER + 2.2 * np.array(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )
        R, t = p3.look_at(torch.tensor(eye), torch.tensor(CENTER), torch.tensor([0.0, 0.0, 1.0]))
        out.append((R.numpy(), t.numpy(), eye))
    return out


def c2w_opengl(R: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Camera-to-world with OpenGL axes, built from the definition: columns are the camera's
    right, up (= -down) and backward (= -forward) directions in the world, then its centre."""
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = R[0], -R[1], -R[2], eye
    return m


def sphere_mask(K: np.ndarray, R: np.ndarray, t: np.ndarray, size=(H, W)) -> np.ndarray:
    """``(H, W)`` bool: pixel-centre rays that hit the sphere (analytic)."""
    h, w = size
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    dirs_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # (H, W, 3)
    dirs = dirs_cam @ R  # world directions, R^T d
    origin = -R.T @ t
    oc = origin - CENTER
    a = np.sum(dirs * dirs, -1)
    b = 2 * dirs @ oc
    c = oc @ oc - RADIUS**2
    return b * b - 4 * a * c > 0


def write_rgba(path: Path, mask: np.ndarray) -> None:
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., :3] = 90
    rgba[..., 3] = mask * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)


def sphere_volume(box_size: float = 0.9, res: int = 32) -> torch.Tensor:
    """``(1, 1, D, H, W)`` occupancy of the sphere in ``VolumeBox(CENTER, box_size)``: a linear
    ramp of the signed distance over one voxel, so its 0.5 level set is the sphere."""
    step = box_size / res
    ax = (np.arange(res) + 0.5) * step - box_size / 2
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")  # offsets from the centre
    dist = np.sqrt(x**2 + y**2 + z**2)
    occ = np.clip(0.5 + (RADIUS - dist) / step, 0.0, 1.0)
    return torch.from_numpy(occ)[None, None]


def silhouette_iou(scene, box_size: float = 0.9) -> float:
    """Project the sphere volume with the imported cameras; IoU with the images' alpha."""
    K = torch.from_numpy(np.stack([v.K for v in scene.views]))
    R = torch.from_numpy(np.stack([v.R for v in scene.views]))
    t = torch.from_numpy(np.stack([v.t for v in scene.views]))
    cams = p3.Cameras(K, R, t, scene.views[0].image_size)
    sil = p3.project(
        sphere_volume(box_size), cams, box=p3.VolumeBox(CENTER, box_size), depth_samples=96
    )[0, :, 0]  # (V, H, W)
    masks = np.stack([np.asarray(Image.open(v.image_path))[..., 3] > 127 for v in scene.views])
    pred, gt = sil.numpy() > 0.5, masks
    return float((pred & gt).sum() / (pred | gt).sum())


def project_np(K, R, t, X):
    x = (X @ R.T + t) @ K.T
    return x[:, :2] / x[:, 2:]


def check_cameras(scene, truth):
    X = CENTER + np.random.default_rng(0).uniform(-0.5, 0.5, (50, 3))
    for view, (K, R, t) in zip(scene.views, truth):
        assert np.abs(project_np(view.K, view.R, view.t, X) - project_np(K, R, t, X)).max() < 1e-5


def test_opengl_c2w_to_opencv_inverts_the_definition():
    for R, t, eye in true_views(3):
        R2, t2 = opengl_c2w_to_opencv(c2w_opengl(R, eye))
        np.testing.assert_allclose(R2, R, atol=1e-12)
        np.testing.assert_allclose(t2, t, atol=1e-12)


def test_nerfstudio_keys_non_square_off_centre_round_trip(tmp_path):
    views = true_views(5)
    frames = {"train": [], "test": []}
    truth = []
    for k, (R, t, eye) in enumerate(views):
        K = K_OFF.copy()
        frame = {
            "file_path": f"images/frame_{k:03d}.png",
            "transform_matrix": c2w_opengl(R, eye).tolist(),
        }
        if k == 3:  # a per-frame intrinsic overrides the top level
            K[0, 0] = frame["fl_x"] = 50.0
        write_rgba(tmp_path / frame["file_path"], sphere_mask(K, R, t))
        frames["train" if k < 3 else "test"].append(frame)
        truth.append((K, R, t))
    top = {
        "fl_x": K_OFF[0, 0],
        "fl_y": K_OFF[1, 1],
        "cx": K_OFF[0, 2],
        "cy": K_OFF[1, 2],
        "w": W,
        "h": H,
    }
    for split, fr in frames.items():
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({**top, "frames": fr}))
    scene = read_nerf(tmp_path, splits=("train", "test"))
    assert scene.source == "nerf" and scene.name == tmp_path.name
    np.testing.assert_allclose(scene.up, [0.0, 0.0, 1.0])
    assert [v.split for v in scene.views] == ["train"] * 3 + ["test"] * 2
    assert [v.name for v in scene.views] == [f"frame_{k:03d}" for k in range(5)]
    assert all(v.image_size == (H, W) for v in scene.views)
    check_cameras(scene, truth)
    assert silhouette_iou(scene) > 0.95
    only_test = read_nerf(tmp_path, splits=("test",))
    assert [v.name for v in only_test.views] == ["frame_003", "frame_004"]


def test_blender_camera_angle_x_no_extension_missing_image_skipped(tmp_path):
    angle = 0.9
    f = W / (2 * math.tan(angle / 2))
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    truth = []
    for split, idx in (("train", [0, 1, 2]), ("val", [3]), ("test", [4])):
        frames = []
        for k in idx:
            R, t, eye = true_views(5)[k]
            frames.append({"file_path": f"./{split}/r_{k}", "rotation": 0.0126,
                           "transform_matrix": c2w_opengl(R, eye).tolist()})  # fmt: skip
            if k != 1:
                write_rgba(tmp_path / split / f"r_{k}.png", sphere_mask(K, R, t))
                truth.append((K, R, t))
        (tmp_path / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": angle, "frames": frames})
        )
    with pytest.warns(DataWarning, match=r"frames\[1\].*'./train/r_1' not found"):
        scene = read_nerf(tmp_path)
    assert [v.name for v in scene.views] == ["r_0", "r_2", "r_3", "r_4"]
    assert [v.split for v in scene.views] == ["train", "train", "val", "test"]
    check_cameras(scene, truth)
    assert silhouette_iou(scene) > 0.95


def test_images_smaller_than_w_h_scale_the_intrinsics_and_names_stay_unique(tmp_path):
    truth, frames = [], []
    for k, (R, t, eye) in enumerate(true_views(3)):
        folder = "abc"[k]
        write_rgba(tmp_path / folder / "img.png", sphere_mask(K_OFF, R, t))  # same stems
        frames.append(
            {"file_path": f"{folder}/img.png", "transform_matrix": c2w_opengl(R, eye).tolist()}
        )
        truth.append((K_OFF, R, t))
    big = {"fl_x": 2 * K_OFF[0, 0], "fl_y": 2 * K_OFF[1, 1], "cx": 2 * K_OFF[0, 2],
           "cy": 2 * K_OFF[1, 2], "w": 2 * W, "h": 2 * H}  # fmt: skip
    (tmp_path / "transforms.json").write_text(json.dumps({**big, "frames": frames}))
    scene = read_nerf(tmp_path)  # the json describes images twice the files' size
    assert [v.split for v in scene.views] == [None] * 3
    assert [v.name for v in scene.views] == ["a_img", "b_img", "c_img"]
    check_cameras(scene, truth)
    assert silhouette_iou(scene) > 0.95


def _minimal(tmp_path: Path, **change) -> Path:
    R, t, eye = true_views(1)[0]
    write_rgba(tmp_path / "r_0.png", sphere_mask(K_OFF, R, t))
    frame = {"file_path": "r_0.png", "transform_matrix": c2w_opengl(R, eye).tolist()}
    meta = {"camera_angle_x": 0.8, "frames": [frame]}
    for key, value in change.items():
        target = frame if key.startswith("frame_") else meta
        key = key.removeprefix("frame_")
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    path = tmp_path / "transforms_train.json"
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(
    "change, match",
    [
        ({"frames": None}, r"transforms_train.json: field 'frames' is missing"),
        ({"frame_transform_matrix": None}, r"frames\[0\] has no 'transform_matrix'"),
        ({"frame_transform_matrix": [[1, 0, 0], [0, 1, 0]]}, r"frames\[0\]: field 'transform_matrix' must be 4 x 4"),
        ({"frame_transform_matrix": (2 * np.eye(4)).tolist()}, r"'transform_matrix' (must have a last row|is not a rigid)"),
        ({"camera_angle_x": None}, r"frames\[0\]: no intrinsics: field 'fl_x' or 'camera_angle_x'"),
        ({"camera_angle_x": None, "fl_x": "wide"}, r"\(top level\): field 'fl_x' must be a finite number"),
        ({"frame_k1": 0.1}, r"frames\[0\]: field 'k1' = 0.1: distorted images"),
        ({"camera_model": "OPENCV_FISHEYE"}, r"field 'camera_model' is 'OPENCV_FISHEYE'"),
        ({"frame_file_path": None}, r"frames\[0\]: field 'file_path' is missing"),
        ({"w": 96}, r"field 'h' is missing"),
    ],
)  # fmt: skip
def test_malformed_json_names_file_frame_and_field(tmp_path, change, match):
    _minimal(tmp_path, **change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(ValueError, match=match):
            read_nerf(tmp_path)


def test_unreadable_or_absent_files(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "transforms_train.json").write_text("{not json")
    with pytest.warns(DataWarning), pytest.raises(ValueError, match="train.json: not valid JSON"):
        read_nerf(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no transforms_train.json.*and no transforms.json"):
        read_nerf(tmp_path / "empty")
    path = _minimal(tmp_path / "gone")
    (tmp_path / "gone" / "r_0.png").unlink()
    with pytest.warns(DataWarning), pytest.raises(FileNotFoundError, match="none of the 1 frames"):
        read_nerf(path)


def test_single_transforms_json_up_is_estimated_unless_near_z(tmp_path):
    M = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # world z -> y: a y-up capture
    for name, rot in (("z_up", np.eye(3)), ("y_up", M)):
        frames = []
        for k, (R, t, eye) in enumerate(true_views(5)):
            write_rgba(tmp_path / name / f"{k}.png", sphere_mask(K_OFF, R, t))
            c2w = c2w_opengl(R @ rot.T, rot @ eye)
            frames.append({"file_path": f"{k}.png", "transform_matrix": c2w.tolist()})
        meta = {"fl_x": 44.0, "fl_y": 41.0, "cx": 26.3, "cy": 13.7, "frames": frames}
        (tmp_path / name / "transforms.json").write_text(json.dumps(meta))
    np.testing.assert_array_equal(read_nerf(tmp_path / "z_up").up, [0.0, 0.0, 1.0])
    assert read_nerf(tmp_path / "y_up").up @ np.array([0.0, 1.0, 0.0]) > 0.95


# Two frames of NeRF-synthetic's ficus ``transforms_train.json`` (camera_angle_x and the
# first two transform_matrix values, as published): the Blender cameras look at the origin,
# upright in the z-up world.
FICUS_ANGLE = 0.6911112070083618
FICUS_FRAMES = [
    [[-0.9903792142868042, -0.023305540904402733, 0.13640420138835907, 0.5498628616333008],
     [0.13838082551956177, -0.16679565608501434, 0.976232647895813, 3.935319185256958],
     [-1.862645371275562e-09, 0.9857159852981567, 0.16841599345207214, 0.6789065003395081],
     [0.0, 0.0, 0.0, 1.0]],
    [[0.9947428703308105, 0.014273494482040405, -0.10140512883663177, -0.4087770879268646],
     [-0.10240474343299866, 0.13865038752555847, -0.9850327372550964, -3.9707934856414795],
     [9.313225746154785e-10, 0.9902384877204895, 0.13938315212726593, 0.5618714094161987],
     [0.0, 0.0, 0.0, 1.0]],
]  # fmt: skip


def test_real_nerf_synthetic_poses_look_at_the_origin_upright(tmp_path):
    frames = [
        {"file_path": f"./train/r_{k}", "transform_matrix": m} for k, m in enumerate(FICUS_FRAMES)
    ]
    (tmp_path / "train").mkdir()
    for k in range(2):
        Image.new("RGBA", (800, 800)).save(tmp_path / "train" / f"r_{k}.png")
    meta = {"camera_angle_x": FICUS_ANGLE, "frames": frames}
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    scene = read_nerf(tmp_path, splits=("train",))
    for view in scene.views:
        assert view.image_size == (800, 800)
        assert view.K[0, 0] == pytest.approx(1111.111, abs=1e-2)  # the published focal length
        uv = project_np(view.K, view.R, view.t, np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]))
        np.testing.assert_allclose(uv[0], [400.0, 400.0], atol=0.5)  # origin at the centre
        assert uv[1, 1] < uv[0, 1] - 50 and abs(uv[1, 0] - uv[0, 0]) < 5  # +z straight up
        assert (view.R @ np.zeros(3) + view.t)[2] > 3.5  # in front, about 4 units away
