"""Volume files (:mod:`persp3d.datasets.volumes`): every format written and read back with
its values, box and cameras; the older layouts still read; ``.binvox`` placed where binvox's
documentation and ShapeNetVox32 put the voxels, checked by projecting them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import persp3d as p3
from persp3d.datasets.volumes import VolumeFile, load_volume, mesh_box, save_volume


def ball(center, radius, resolution, box=None) -> np.ndarray:
    """``(D, H, W)`` occupancy of a ball from the voxel centres of ``box``."""
    box = box if box is not None else p3.VolumeBox()
    centres = box.voxel_centers(resolution, dtype=torch.float64).numpy()  # (D, H, W, 3)
    return (np.linalg.norm(centres - np.asarray(center), axis=-1) < radius).astype(np.float32)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


BOX = p3.VolumeBox(center=(0.3, -0.2, 1.1), size=1.6)


# -- .npz -----------------------------------------------------------------------------------
@pytest.mark.parametrize("with_logits", [False, True])
@pytest.mark.parametrize("with_cameras", [False, True])
def test_npz_round_trip_keeps_values_box_logits_cameras_and_meta(
    tmp_path, with_logits, with_cameras
):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5, 6, 7)).astype(np.float32)
    occupancy = 1 / (1 + np.exp(-logits.astype(np.float64)))
    box = p3.VolumeBox(center=(0.5, -0.25, 1.0), size=(2.0, 1.0, 0.5))
    cams = p3.orbit_cameras(3, image_size=(12, 20), distance=3.0)
    path = save_volume(
        tmp_path / "sub" / "v.npz",
        torch.from_numpy(occupancy)[None, None],
        box,
        logits=logits if with_logits else None,
        cameras=cams if with_cameras else None,
        meta={"up": np.array([0.0, 0.0, 1.0]), "source": "test"},
    )
    back = load_volume(path)
    assert isinstance(back, VolumeFile) and back.occupancy.dtype == np.float32
    np.testing.assert_allclose(back.occupancy, occupancy, atol=1e-7)
    assert back.box == box
    assert back.meta["up"] == [0.0, 0.0, 1.0] and back.meta["source"] == "test"
    assert back.meta["format"] == "persp3d-volume-2" and back.meta["box_from_file"]
    if with_logits:
        np.testing.assert_array_equal(back.logits, logits)
    else:
        assert back.logits is None
    if with_cameras:
        assert back.cameras.image_size == (12, 20) and back.cameras.batch_shape == (3,)
        for name in ("K", "R", "t"):
            want = getattr(cams, name).expand_as(getattr(back.cameras, name))
            torch.testing.assert_close(getattr(back.cameras, name), want)
    else:
        assert back.cameras is None
    # nothing in the file needs unpickling
    with np.load(path, allow_pickle=False) as f:
        assert json.loads(str(f["meta_json"]))["up"] == [0.0, 0.0, 1.0]


def test_npz_from_logits_alone_stores_their_sigmoid(tmp_path):
    logits = np.linspace(-4, 4, 27, dtype=np.float32).reshape(3, 3, 3)
    back = load_volume(save_volume(tmp_path / "v.npz", None, logits=logits))
    np.testing.assert_allclose(back.occupancy, 1 / (1 + np.exp(-logits)), atol=1e-6)
    assert back.box == p3.VolumeBox()


def test_older_layouts_still_load(tmp_path):
    occupancy = ball((0.1, 0, 0), 0.3, 8)
    box = p3.VolumeBox((0.2, 0.0, -0.1), 1.5)
    cams = p3.orbit_cameras(2, image_size=(8, 8))
    # train/fit.py before this module: no format key, cameras beside the volume
    np.savez_compressed(
        tmp_path / "fit.npz",
        occupancy=occupancy,
        logits=np.where(occupancy > 0.5, 5.0, -5.0).astype(np.float32),
        box_center=np.asarray(box.center),
        box_size=np.asarray(box.size),
        K=cams.K.numpy(),
        R=cams.R.numpy(),
        t=cams.t.numpy(),
        image_size=np.asarray(cams.image_size),
    )
    fit = load_volume(tmp_path / "fit.npz")
    assert fit.meta["format"] == "fit-v0" and fit.box == box and fit.logits is not None
    np.testing.assert_array_equal(fit.occupancy, occupancy)
    torch.testing.assert_close(fit.cameras.R, cams.R)
    # persp3d view --export, version 1: "volume" and the box
    np.savez_compressed(
        tmp_path / "export.npz",
        volume=occupancy,
        box_center=np.asarray(box.center),
        box_size=np.asarray(box.size),
        format=np.array("persp3d-volume"),
        version=np.array(1),
    )
    old = load_volume(tmp_path / "export.npz")
    assert old.meta["format"] == "persp3d-volume-1" and old.box == box and old.cameras is None
    np.testing.assert_array_equal(old.occupancy, occupancy)
    # a dataset item (uint8 voxels at several resolutions: the highest is taken)
    np.savez(
        tmp_path / "item.npz",
        voxels_4=np.zeros((4, 4, 4), np.uint8),
        voxels_8=(occupancy * 255).astype(np.uint8),
    )
    item = load_volume(tmp_path / "item.npz")
    assert item.occupancy.shape == (8, 8, 8) and not item.meta["box_from_file"]
    np.testing.assert_array_equal(item.occupancy, occupancy)
    # any single array
    np.savez(tmp_path / "one.npz", whatever=occupancy[None, None])
    np.testing.assert_array_equal(load_volume(tmp_path / "one.npz").occupancy, occupancy)


def test_npy_is_read_in_the_default_box_and_not_written(tmp_path):
    occupancy = ball((0, 0, 0), 0.3, 6)
    np.save(tmp_path / "v.npy", occupancy[None])
    back = load_volume(tmp_path / "v.npy")
    np.testing.assert_array_equal(back.occupancy, occupancy)
    assert back.box == p3.VolumeBox() and back.meta["format"] == "npy"
    np.save(tmp_path / "logits.npy", np.full((2, 2, 2), 2.0, np.float32))
    assert np.allclose(load_volume(tmp_path / "logits.npy", logits=True).occupancy, 0.880797)
    with pytest.raises(ValueError, match="does not write .npy.*write .npz"):
        save_volume(tmp_path / "w.npy", occupancy)


def test_bad_files_and_values_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz: no such file"):
        load_volume(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a .npz archive"):
        load_volume(tmp_path / "bad.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="obj.npy: not a plain .npy"):
        load_volume(tmp_path / "obj.npy")
    np.save(tmp_path / "big.npy", np.full((2, 2, 2), 3.0, np.float32))
    with pytest.raises(ValueError, match=r"big.npy.*occupancy in \[0, 1\].*logits"):
        load_volume(tmp_path / "big.npy")
    np.savez(tmp_path / "half.npz", occupancy=np.zeros((2, 2, 2)), K=np.eye(3)[None])
    with pytest.raises(ValueError, match="half.npz: cameras are incomplete"):
        load_volume(tmp_path / "half.npz")
    np.savez(tmp_path / "other.npz", occupancy=np.zeros((2, 2, 2)), format=np.array("x"))
    with pytest.raises(ValueError, match="format 'x' is not 'persp3d-volume'"):
        load_volume(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="unknown volume format '.vol'"):
        save_volume(tmp_path / "v.vol", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"occupancy must be \(D, H, W\)"):
        save_volume(tmp_path / "v.npz", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="binvox holds voxels and a box only, not cameras"):
        save_volume(tmp_path / "v.binvox", np.zeros((2, 2, 2)), cameras=p3.orbit_cameras(2))
    with pytest.raises(ValueError, match="cubic volume"):
        save_volume(tmp_path / "v.binvox", np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="meta must hold JSON values"):
        save_volume(tmp_path / "v.npz", np.zeros((2, 2, 2)), meta={"f": object()})


# -- .binvox --------------------------------------------------------------------------------
def _binvox_bytes(grid_xzy: np.ndarray, translate, scale) -> bytes:
    """A ``.binvox`` written here from binvox's documented layout (x slowest, then z, then
    y; runs of (value, count) with count <= 255)."""
    flat = grid_xzy.astype(np.uint8).reshape(-1).tolist()
    runs, value, count = [], flat[0], 0
    for v in flat:
        if v == value and count < 255:
            count += 1
        else:
            runs += [value, count]
            value, count = v, 1
    runs += [value, count]
    d = grid_xzy.shape[0]
    header = (
        f"#binvox 1\ndim {d} {d} {d}\ntranslate {translate[0]:.8f} {translate[1]:.8f} "
        f"{translate[2]:.8f}\nscale {scale:.8f}\ndata\n"
    )
    return header.encode() + bytes(runs)


def _inside_cuboid(points, lo, hi) -> np.ndarray:
    return ((points >= lo) & (points <= hi)).all(axis=-1)


def test_binvox_round_trip_keeps_values_and_box(tmp_path):
    occupancy = np.zeros((8, 8, 8), np.float32)
    occupancy[3:6, 2:7, 4:8] = 0.9  # away from the minimum faces: a = (4, 2, 3)
    occupancy[4, 4, 5] = 0.3  # below the threshold
    back = load_volume(save_volume(tmp_path / "v.binvox", occupancy, BOX))
    np.testing.assert_array_equal(back.occupancy, (occupancy > 0.5).astype(np.float32))
    np.testing.assert_allclose(back.box.center, BOX.center, atol=1e-6)
    np.testing.assert_allclose(back.box.size, BOX.size, atol=1e-6)
    # the header's translate is the model's minimum as the reader infers it from the cells:
    # on x the cells 4..7 are not centred in the cube (the model starts at cell 4); on y
    # 2..6 and z 3..5 they are within a voxel of centred, as ShapeNetVox32's are, and the
    # model is taken as centred
    header = (tmp_path / "v.binvox").read_bytes().split(b"data\n")[0].decode()
    translate = [float(v) for v in header.split("translate ")[1].split("\n")[0].split()]
    voxel = 1.6 / 8
    np.testing.assert_allclose(
        translate, np.asarray(BOX.min) + np.array([4, 1.5, 2.5]) * voxel, atol=1e-6
    )
    empty = load_volume(save_volume(tmp_path / "e.binvox", np.zeros((4, 4, 4)), BOX))
    assert empty.occupancy.sum() == 0
    np.testing.assert_allclose(empty.box.center, BOX.center, atol=1e-6)


@pytest.mark.parametrize("style", ["shapenetvox32", "binvox"])
def test_binvox_of_a_known_cuboid_is_placed_where_the_model_was(tmp_path, style):
    """ShapeNetVox32: the cube of side ``scale`` centred on the model, ``translate`` the
    model's minimum; binvox's own output: the model at the cube's minimum corner. Both put
    the voxels where the model is, to within half a voxel."""
    lo, hi = np.array([0.2, -0.35, 0.1]), np.array([0.6, 0.45, 0.3])  # longest side y: 0.8
    side, d = float((hi - lo).max()), 16
    corner = (lo + hi) / 2 - side / 2 if style == "shapenetvox32" else lo
    idx = (np.arange(d) + 0.5) * side / d
    x, z, y = np.meshgrid(idx, idx, idx, indexing="ij")  # binvox order: x, z, y
    points = corner + np.stack([x, y, z], -1)  # (d, d, d, 3) world (x, y, z)
    (tmp_path / "m.binvox").write_bytes(_binvox_bytes(_inside_cuboid(points, lo, hi), lo, side))
    vf = load_volume(tmp_path / "m.binvox")
    centres = vf.box.voxel_centers(d, dtype=torch.float64).numpy()[vf.occupancy > 0.5]
    voxel = side / d
    assert np.abs(centres.min(0) - lo).max() <= voxel / 2 + 1e-9
    assert np.abs(centres.max(0) - hi).max() <= voxel / 2 + 1e-9
    np.testing.assert_allclose(vf.box.size, side, rtol=1e-6)
    np.testing.assert_allclose(vf.box.min, corner, atol=1e-6)


def test_binvox_ball_projects_like_the_ball_it_was_written_from(tmp_path):
    center, radius = np.array([0.55, -0.5, 1.3]), 0.45  # off the box centre
    original = ball(center, radius, 24, BOX)
    cams = p3.orbit_cameras(4, distance=3.0, image_size=(64, 64), elevation=20.0)
    shift = (cams.R @ torch.tensor(BOX.center, dtype=cams.R.dtype)).squeeze(-1)
    cams = p3.Cameras(cams.K, cams.R, cams.t - shift, (64, 64))  # looking at the box centre
    vf = load_volume(save_volume(tmp_path / "b.binvox", original, BOX))
    sil = p3.project(vf.tensor(), cams, box=vf.box, depth_samples=96)
    ref = p3.project(torch.from_numpy(original)[None, None], cams, box=BOX, depth_samples=96)
    assert ref.amax() > 0.5 and (ref > 0.5).float().mean() > 0.05
    assert iou(sil, ref) > 0.98
    # an independently written ShapeNetVox32-style file of the same ball lands there too:
    # compared with a fine voxelisation of the ball
    fine = ball(center, radius, 64, BOX)
    ref_fine = p3.project(torch.from_numpy(fine)[None, None], cams, box=BOX, depth_samples=128)
    side, d = 2 * radius, 32
    idx = (np.arange(d) + 0.5) * side / d
    x, z, y = np.meshgrid(idx, idx, idx, indexing="ij")
    points = center - side / 2 + np.stack([x, y, z], -1)
    inside = np.linalg.norm(points - center, axis=-1) < radius
    (tmp_path / "s.binvox").write_bytes(_binvox_bytes(inside, center - radius, side))
    vs = load_volume(tmp_path / "s.binvox")
    sil2 = p3.project(vs.tensor(), cams, box=vs.box, depth_samples=128)
    assert iou(sil2, ref_fine) > 0.98


# -- meshes ---------------------------------------------------------------------------------
def test_mesh_is_voxelised_in_its_box(tmp_path):
    import trimesh

    small = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    small.export(tmp_path / "small.obj")
    vf = load_volume(tmp_path / "small.obj", resolution=16)
    assert vf.box == p3.VolumeBox() and vf.meta["format"] == "mesh"
    assert vf.occupancy.shape == (16, 16, 16)
    assert vf.occupancy.mean() == pytest.approx(0.125, abs=0.01)
    big = trimesh.creation.box(extents=(2.0, 1.0, 1.0))
    big.apply_translation((3.0, 0.0, 0.0))
    big.export(tmp_path / "big.ply")
    vb = load_volume(tmp_path / "big.ply", resolution=16)
    assert vb.box == mesh_box(big.vertices)
    np.testing.assert_allclose(vb.box.center, (3.0, 0.0, 0.0), atol=1e-9)
    assert vb.box.size[0] == pytest.approx(2.04)


def test_shapenetvox32_binvox_projects_onto_its_renders(tmp_path):
    """The R2N2 layout's ShapeNetVox32-style files, placed by their header alone, project
    with the renders' own cameras onto the renders' alpha (DESIGN.md: verify a placement by
    projecting the voxels onto the renders)."""
    from PIL import Image

    from persp3d.datasets.r2n2 import parse_rendering_metadata
    from persp3d.datasets.r2n2_layout import write_r2n2_layout

    write_r2n2_layout(tmp_path, ["table"], per_category=1, views=3, workers=0)
    vox = next((tmp_path / "ShapeNetVox32").rglob("model.binvox"))
    render = tmp_path / "ShapeNetRendering" / vox.parent.parent.name / vox.parent.name / "rendering"
    rows = parse_rendering_metadata(render / "rendering_metadata.txt")
    cams = p3.r2n2_cameras(rows).float()  # ShapeNet's world, where the header is written
    alpha = np.stack(
        [np.asarray(Image.open(render / f"{v:02d}.png"))[..., 3] / 255.0 for v in range(3)]
    )
    vf = load_volume(vox)
    sil = p3.project(vf.tensor(), cams, box=vf.box, depth_samples=96)[0, :, 0]  # (V, H, W)
    ours = iou(sil, torch.from_numpy(alpha))
    # the cube placed at translate (reading translate as the cube's corner) is off on the
    # model's shorter axes
    corner = p3.VolumeBox(np.asarray(vf.meta["binvox_translate"]) + vf.box.size[0] / 2, vf.box.size)
    sil_corner = p3.project(vf.tensor(), cams, box=corner, depth_samples=96)[0, :, 0]
    # ShapeNet v1 models are centred at the origin: there the cube is exactly
    origin = p3.VolumeBox((0.0, 0.0, 0.0), vf.box.size)
    sil_origin = p3.project(vf.tensor(), cams, box=origin, depth_samples=96)[0, :, 0]
    best = iou(sil_origin, torch.from_numpy(alpha))
    assert ours > 0.8 and ours > best - 0.03  # within half a voxel of the exact placement
    assert ours > iou(sil_corner, torch.from_numpy(alpha)) + 0.3
