"""The procedural shapes in 3D-R2N2's layout, read back through the public R2N2 reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import persp3d as p3
from persp3d.datasets.binvox import read_binvox
from persp3d.datasets.r2n2 import R2N2, parse_rendering_metadata
from persp3d.datasets.r2n2_layout import (
    LAYOUT_SYNSETS,
    R2N2_VIEWPOINT_RANGES,
    layout_model_id,
    write_r2n2_layout,
)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("r2n2_layout")
    info = write_r2n2_layout(
        root, ["car", "03211117", "cabinet"], per_category=2, seed=3, workers=0
    )
    return root, info


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_layout_files_are_those_3d_r2n2_publishes(layout):
    root, info = layout
    assert info["models"] == info["written"] == 6
    assert set(info["per_category"]) == {"02958343", "03211117", "02933112"}
    model_id = layout_model_id(3, "car", 1)
    assert len(model_id) == 32 and int(model_id, 16) >= 0
    render_dir = root / "ShapeNetRendering" / "02958343" / model_id / "rendering"
    names = (render_dir / "renderings.txt").read_text().split()
    assert names == [f"{v:02d}.png" for v in range(24)]
    for name in names:
        with Image.open(render_dir / name) as img:
            assert img.mode == "RGBA" and img.size == (137, 137)
    alpha = np.asarray(Image.open(render_dir / "00.png"))[..., 3]
    assert set(np.unique(alpha)) == {0, 255} and 0.02 < (alpha > 0).mean() < 0.6
    rows = parse_rendering_metadata(render_dir / "rendering_metadata.txt")
    assert rows.shape == (24, 5)
    for col, key in ((0, "azimuth"), (1, "elevation"), (3, "distance_ratio")):
        lo, hi = R2N2_VIEWPOINT_RANGES[key]
        assert (rows[:, col] >= lo).all() and (rows[:, col] < hi).all()
    assert (rows[:, 2] == 0).all() and (rows[:, 4] == 25).all()
    # binvox header as ShapeNetVox32: translate = bbox minimum, scale = longest side; the
    # model is centred at the origin with a unit diagonal (ShapeNet v1 normalisation)
    vox = read_binvox(root / "ShapeNetVox32" / "02958343" / model_id / "model.binvox")
    assert vox.data.shape == (32, 32, 32)
    lo = np.asarray(vox.translate)
    assert vox.scale == pytest.approx(2 * float(np.max(-lo)), rel=1e-4)
    assert np.linalg.norm(2 * lo) == pytest.approx(1.0, rel=1e-4)


def test_voxels_projected_with_reader_cameras_match_png_alpha(layout):
    root, _ = layout
    data = R2N2(root, split="all", categories=["car", "display", "02933112"])
    assert len(data) == 6
    for i in range(len(data)):
        sample = data[i]
        gt = sample["silhouettes"] > 0.5  # (V, 1, H, W)
        sil = p3.project(sample["voxels"][None], sample["cameras"], depth_samples=96)[0]
        assert _iou(sil > 0.5, gt) > 0.9, sample["id"]
        if sample["category"] == "cabinet":
            continue  # nearly a cube: the swap below would barely change it
        # the check can fail: the same voxels with x and z swapped do not match
        swapped = p3.project(sample["voxels"][None].transpose(-1, -3), sample["cameras"])[0]
        assert _iou(swapped > 0.5, gt) < 0.8


def _blender_rig_camera(az: float, el: float, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and rotation (OpenCV axes) in ShapeNet's frame of the camera 3D-R2N2's
    ``blender_renderer.py`` sets up, derived from its scene graph (yaw 0): the camera sits at
    ``(1.75 * ratio, 0, 0)`` with Euler ``ZXY (0, 90, 90)`` degrees (looking down -x, +z up)
    under a parent rotated by Euler ``XYZ (0, -el, -az)``; Blender's OBJ importer maps OBJ
    ``(x, y, z)`` to Blender ``(x, -z, y)``."""

    def rot(axis: int, deg: float) -> np.ndarray:
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    parent = rot(2, -az) @ rot(1, -el)  # XYZ Euler = Rz Ry Rx
    local = rot(1, 90) @ rot(2, 90)  # ZXY Euler = Ry Rx Rz
    center_b = parent @ np.array([1.75 * ratio, 0.0, 0.0])
    forward_b = parent @ local @ np.array([0.0, 0.0, -1.0])
    up_b = parent @ local @ np.array([0.0, 1.0, 0.0])
    to_shapenet = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # Blender -> OBJ
    center, forward, up = (to_shapenet @ v for v in (center_b, forward_b, up_b))
    return center, np.stack([np.cross(forward, up), -up, forward])


def test_rows_drawn_give_the_cameras_of_3d_r2n2_blender_rig(layout):
    root, _ = layout
    meta = root / "ShapeNetRendering" / "02958343" / layout_model_id(3, "car", 0) / "rendering"
    rows = parse_rendering_metadata(meta / "rendering_metadata.txt")
    cams = p3.r2n2_cameras(rows, (137, 137))
    for v, (az, el, _yaw, ratio, _fov) in enumerate(rows):
        center, R = _blender_rig_camera(az, el, ratio)
        np.testing.assert_allclose(cams.centers[v].numpy(), center, atol=1e-5)
        np.testing.assert_allclose(cams.R[v].numpy(), R, atol=1e-5)
    # Blender's default 35 mm lens on a 32 mm sensor, principal point at the centre
    np.testing.assert_allclose(cams.K[0, 0, 0].item(), 35 / 32 * 137, rtol=1e-6)


def test_categories_by_name_and_synset_and_resume(layout, tmp_path):
    root, _ = layout
    assert R2N2(root, split="all", categories=["03001627"]).models == []
    assert len(R2N2(root, split="all", categories=["car"])) == 2
    again = write_r2n2_layout(root, ["car", "display", "cabinet"], per_category=2, seed=3)
    assert again["written"] == 0 and again["models"] == 6
    with pytest.raises(ValueError, match="other parameters.*seed"):
        write_r2n2_layout(root, ["car"], per_category=2, seed=4)
    with pytest.raises(ValueError, match="categories must be"):
        write_r2n2_layout(tmp_path / "x", ["spaceship"])
    (tmp_path / "real" / "ShapeNetRendering").mkdir(parents=True)
    with pytest.raises(ValueError, match="not written by write_r2n2_layout"):
        write_r2n2_layout(tmp_path / "real", ["car"], per_category=1)
    assert LAYOUT_SYNSETS["chair"] == "03001627" and LAYOUT_SYNSETS["table"] == "04379243"


def test_distinct_mode_writes_copies_under_their_own_ids(tmp_path):
    info = write_r2n2_layout(tmp_path, ["mug"], per_category=5, distinct=2, views=2, workers=0)
    assert info["written"] == 5
    synset = LAYOUT_SYNSETS["mug"]
    dirs = sorted((tmp_path / "ShapeNetRendering" / synset).iterdir())
    assert len(dirs) == 5
    first = lambda i: (  # noqa: E731
        tmp_path / "ShapeNetRendering" / synset / layout_model_id(0, "mug", i) / "rendering"
    )
    assert (first(4) / "00.png").read_bytes() == (first(0) / "00.png").read_bytes()
    assert (first(1) / "00.png").read_bytes() != (first(0) / "00.png").read_bytes()


def test_cli_make_r2n2_layout(tmp_path, capsys):
    from persp3d.train.cli import main

    out = tmp_path / "lay"
    status = main(["data", "make", "r2n2-layout", "--out", str(out), "--categories", "bottle",
                   "--per-category", "1", "--views", "3", "--no-progress"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert "1 objects in 3D-R2N2's layout" in capsys.readouterr().out
    sample = R2N2(out, split="all", categories=["bottle"])[0]
    assert sample["images"].shape == (3, 3, 137, 137) and sample["voxels"].shape == (1, 32, 32, 32)
    bad = ["data", "make", "r2n2-layout", "--out", str(tmp_path / "b"), "--fov", "30"]
    assert main(bad) == 1
    assert "--fov: not used by r2n2-layout" in capsys.readouterr().err
