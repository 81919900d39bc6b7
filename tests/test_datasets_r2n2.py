"""3D-R2N2 reader: cameras vs PyTorch3D's R2N2 utilities, binvox axes, voxels on silhouettes,
bad models skipped."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import binvox_bytes, iou, make_fake_r2n2, shapenet_like

import persp3d as p3
from persp3d.datasets import (
    R2N2,
    DataError,
    DataWarning,
    cameras_to_box_frame,
    check_sample,
    load_dataset,
)
from persp3d.datasets.binvox import (
    binvox_to_volume,
    read_binvox,
    volume_to_binvox,
    write_binvox,
)
from persp3d.datasets.r2n2 import parse_rendering_metadata

# Rows as they appear in ShapeNetRendering's rendering_metadata.txt.
ROWS = np.array(
    [
        [293.674285, 25.761227, 0.0, 0.8438, 25.0],
        [12.0, 31.5, 0.0, 0.7, 25.0],
        [145.25, 20.0, 0.0, 0.95, 25.0],
        [220.5, 39.9, 0.0, 0.66, 25.0],
    ]
)
MODELS = [
    ("03001627", "chair", "chair_a", 1),
    ("02691156", "airplane", "plane_a", 2),
    ("04379243", "table", "table_a", 3),
]


@pytest.fixture(scope="module")
def r2n2_root(tmp_path_factory) -> Path:
    return make_fake_r2n2(tmp_path_factory.mktemp("r2n2"), MODELS, n_views=6)


def _pytorch3d_pixels(rows: np.ndarray, points: torch.Tensor) -> torch.Tensor:
    """Project ShapeNet-frame points with PyTorch3D's own R2N2 camera code -> (N, P, 2)."""
    from pytorch3d.datasets.r2n2.r2n2 import R2N2 as P3DR2N2
    from pytorch3d.datasets.r2n2.utils import BlenderCamera, compute_extrinsic_matrix

    K = torch.tensor(
        [
            [2.1875, 0.0, 0.0, 0.0],
            [0.0, 2.1875, 0.0, 0.0],
            [0.0, 0.0, -1.002002, -0.2002002],
            [0.0, 0.0, 1.0, 0.0],
        ]
    )
    out = []
    for az, el, _yaw, ratio, _fov in rows:
        RT = compute_extrinsic_matrix(az, el, ratio * 1.75)
        R, T = P3DR2N2._compute_camera_calibration(None, RT)
        cam = BlenderCamera(R=R[None], T=T[None], K=K[None])
        ndc = cam.transform_points(points[None])[0]  # (P, 3); +x left, +y up
        u = (1.0 - ndc[:, 0]) * 137 / 2.0
        v = (1.0 - ndc[:, 1]) * 137 / 2.0
        out.append(torch.stack([u, v], -1))
    return torch.stack(out)


def test_r2n2_cameras_match_pytorch3d_r2n2_utilities():
    points = torch.rand(50, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    ours, depth = p3.r2n2_cameras(ROWS, (137, 137)).project(points)  # (N, P, 2)
    theirs = _pytorch3d_pixels(ROWS, points)
    assert (depth > 0).all()
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=0)


def test_r2n2_sample_cameras_project_like_pytorch3d_in_shapenet_frame(r2n2_root):
    ds = R2N2(r2n2_root, split="all", views=range(4))
    index = [m["id"] for m in ds.models].index("chair_a")
    model = ds.models[index]
    sample = ds[index]
    scale = read_binvox(model["binvox"]).scale
    points = torch.rand(30, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    # Sample cameras see the box frame X_box = X_shapenet / scale.
    ours, _ = sample["cameras"].project(points / scale)
    torch.testing.assert_close(
        ours, _pytorch3d_pixels(model["rows"][:4], points), atol=2e-3, rtol=0
    )


def test_cameras_to_box_frame_keeps_pixels():
    cams = p3.r2n2_cameras(ROWS).double()
    center, size = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64), 0.7
    moved = cameras_to_box_frame(cams, center.tolist(), size)
    points = torch.rand(20, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    uv, _ = cams.project(points)
    uv_box, _ = moved.project((points - center) / size)
    torch.testing.assert_close(uv, uv_box, atol=1e-9, rtol=0)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_binvox_axes_agree_with_pytorch3d_reader(tmp_path):
    from pytorch3d.datasets.r2n2.utils import read_binvox_coords

    path = tmp_path / "model.binvox"
    path.write_bytes(binvox_bytes(shapenet_like("chair", 4)))
    volume = binvox_to_volume(read_binvox(path).data)  # (z, y, x)
    with open(path, "rb") as f:
        coords = read_binvox_coords(f).long()  # (N, 3) as (x, y, z) indices
    k, j, i = np.nonzero(volume)
    ours = {(int(a), int(b), int(c)) for a, b, c in zip(i, j, k)}
    assert ours == {tuple(c) for c in coords.tolist()}


def test_binvox_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.random((8, 8, 8)) > 0.7
    volume[:, :, :4] = True  # long runs (> 255 voxels in a row)
    write_binvox(tmp_path / "v.binvox", volume_to_binvox(volume), (0.1, 0.2, 0.3), 0.9)
    back = read_binvox(tmp_path / "v.binvox")
    np.testing.assert_array_equal(binvox_to_volume(back.data), volume)
    assert back.translate == pytest.approx((0.1, 0.2, 0.3)) and back.scale == pytest.approx(0.9)


@pytest.mark.parametrize(
    "data, problem",
    [(b"", "not a binvox"), (b"#binvox 1\ndim 2 2 2\ndata\n\x01\x03", "cover 3 voxels")],
)
def test_bad_binvox_is_named(tmp_path, data, problem):
    (tmp_path / "bad.binvox").write_bytes(data)
    with pytest.raises(ValueError, match=problem):
        read_binvox(tmp_path / "bad.binvox")


def test_r2n2_voxels_projected_with_sample_cameras_land_on_silhouettes(r2n2_root):
    assert R2N2(r2n2_root, split="all")[0]["images"].shape == (6, 3, 137, 137)
    ds = R2N2(r2n2_root, split="all", views=[0, 2, 4])
    assert len(ds) == 3
    for sample in ds:
        assert check_sample(sample) == {"V": 3, "H": 137, "W": 137, "R": 32}
        vol = sample["voxels"][None]
        sil = p3.project(vol, sample["cameras"], depth_samples=96)[0]
        wrong = p3.project(vol.transpose(2, 4), sample["cameras"], depth_samples=96)[0]
        score = iou(sil, sample["silhouettes"])
        assert score > 0.8, (sample["id"], score)
        assert iou(wrong, sample["silhouettes"]) < score - 0.2


def test_r2n2_images_composite_alpha_over_background(r2n2_root):
    sample = R2N2(r2n2_root, split="all", views=[0], background=1.0)[0]
    empty = sample["silhouettes"][0, 0] == 0
    assert torch.all(sample["images"][0][:, empty] == 1.0)  # junk RGB under alpha 0 is hidden
    assert 0 < sample["silhouettes"].mean() < 1


def test_r2n2_resize_scales_cameras(r2n2_root):
    ds = R2N2(r2n2_root, split="all", views=[0, 1], image_size=64)
    sample = ds[0]
    assert sample["images"].shape == (2, 3, 64, 64)
    assert sample["cameras"].image_size == (64, 64)
    sil = p3.project(sample["voxels"][None], sample["cameras"], depth_samples=64)[0]
    assert iou(sil, sample["silhouettes"]) > 0.75


def test_r2n2_splits_file_and_load_dataset(r2n2_root, tmp_path):
    splits = tmp_path / "splits.json"
    splits.write_text('{"test": {"03001627": {"chair_a": [0, 1]}}, "train": {}}')
    ds = R2N2(r2n2_root, split="test", splits_file=splits)
    assert [m["id"] for m in ds.models] == ["chair_a"]
    assert len(load_dataset(r2n2_root, split="all", views=[0])) == 3


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_r2n2_models_are_skipped_with_warnings(r2n2_root, tmp_path):
    from PIL import Image

    root = _copy_tree(r2n2_root, tmp_path / "copy")
    base = root / "ShapeNetRendering"
    chair = base / "03001627" / "chair_a" / "rendering"
    plane = base / "02691156" / "plane_a" / "rendering"
    table = base / "04379243" / "table_a" / "rendering"
    meta = chair / "rendering_metadata.txt"
    meta.write_text(meta.read_text().replace("25\n", "x\n", 1))  # malformed row
    Image.new("RGBA", (64, 64)).save(plane / "03.png")  # wrong size
    (table / "02.png").unlink()  # missing image
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = R2N2(root, split="all")
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(ds) == 0
    assert any(str(meta) in m and "expected 5 numbers" in m for m in messages)
    assert any(str(plane / "03.png") in m and "64x64" in m for m in messages)
    assert any(str(table / "02.png") in m and "missing image" in m for m in messages)
    assert "skipped 3 of 3 models" in messages[-1]
    with pytest.raises(DataError, match=r"plane_a/rendering/03.png: image is 64x64"):
        R2N2(root, split="all", strict=True)


def test_model_with_truncated_voxels_is_skipped(r2n2_root, tmp_path):
    root = _copy_tree(r2n2_root, tmp_path / "copy")
    binvox = root / "ShapeNetVox32" / "03001627" / "chair_a" / "model.binvox"
    binvox.write_bytes(binvox.read_bytes()[:-4])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = R2N2(root, split="all")
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert "chair_a/model.binvox: run lengths cover" in messages[0]
    assert messages[1].startswith("skipped 1 of 3 models")
    assert sorted(m["id"] for m in ds.models) == ["plane_a", "table_a"]


def test_parse_rendering_metadata_names_the_line(tmp_path):
    path = tmp_path / "rendering_metadata.txt"
    path.write_text("10 20 0 0.8 25\n10 20 0 -1 25\n")
    with pytest.raises(ValueError, match=r"rendering_metadata.txt:2: distance_ratio"):
        parse_rendering_metadata(path)
    path.write_text("10 20 0 0.8 25\n")
    assert parse_rendering_metadata(path).shape == (1, 5)


def test_r2n2_without_voxels_keeps_shapenet_frame(r2n2_root):
    ds = R2N2(r2n2_root / "ShapeNetRendering", split="all", voxel_root=False, views=[0, 1])
    sample = ds[0]
    assert "voxels" not in sample
    expected = p3.r2n2_cameras(ds.models[0]["rows"][:2])
    torch.testing.assert_close(sample["cameras"].t, expected.t)
    buf = io.BytesIO()
    torch.save(sample["images"], buf)  # plain tensors, picklable for DataLoader workers
