"""Checking projections against silhouettes (persp3d.checking) and ``persp3d check``.

The fixture object is a procedural chair rendered by ray casting its mesh (Open3D), so the
silhouettes come from a renderer independent of the projection under test; the chair is
asymmetric enough that every planted convention slip changes its silhouettes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import persp3d as p3
from persp3d.checking import (
    SLIPS,
    check_projections,
    compare_silhouettes,
    diagnose,
    plant_slip,
    project_views,
)
from persp3d.datasets.procedural import ProceduralConfig, generate_procedural, procedural_item
from persp3d.datasets.sample import decode_item
from persp3d.train.check import check, find_sample, load_volume
from persp3d.train.cli import main

# One ring at 30 degrees (not the default's random elevations): the figures below were
# measured on these views of this chair.
CONFIG = ProceduralConfig(
    categories=("chair",), per_category=1, n_views=12, image_size=64, voxel_resolutions=(32,),
    elevation_range=None,
)  # fmt: skip


@pytest.fixture(scope="module")
def chair() -> dict:
    """A procedural chair: 12 views at 64 x 64 on a ring, exact 32^3 voxels."""
    return decode_item(procedural_item(CONFIG, "chair", 0))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("checking") / "data"
    generate_procedural(root, CONFIG, workers=0, progress=False)
    return str(root)


def square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, top : top + side, left : left + side] = 1.0
    return mask


# -- compare_silhouettes ----------------------------------------------------------------------
def test_compare_silhouettes_scores_overlapping_squares_exactly():
    target = square(16, 2, 2, 8)  # 64 pixels
    pred = square(16, 2, 6, 8)  # shifted 4 columns: 32 shared, 96 in the union
    scores = compare_silhouettes(torch.stack([pred, target]), torch.stack([target, target]))
    assert scores["iou"].shape == (2,)
    assert scores["iou"][0].item() == pytest.approx(32 / 96)
    assert scores["precision"][0].item() == pytest.approx(0.5)
    assert scores["recall"][0].item() == pytest.approx(0.5)
    for name in ("iou", "precision", "recall", "boundary_f"):
        assert scores[name][1].item() == pytest.approx(1.0)


def test_compare_silhouettes_boundary_f_tolerates_one_pixel_but_not_three():
    target = square(20, 4, 4, 10)
    near = compare_silhouettes(square(20, 4, 5, 10)[None], target[None])
    far = compare_silhouettes(square(20, 4, 7, 10)[None], target[None])
    assert near["boundary_f"].item() > 0.9
    assert far["boundary_f"].item() < 0.6


def test_compare_silhouettes_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        compare_silhouettes(torch.zeros(3, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="pred must have shape"):
        compare_silhouettes(torch.zeros(3, 2, 8, 8), torch.zeros(3, 2, 8, 8))


# -- check_projections --------------------------------------------------------------------
def test_ground_truth_voxels_project_onto_the_rendered_silhouettes(chair):
    result = check_projections(chair["voxels"], chair["cameras"], chair["silhouettes"])
    V = chair["silhouettes"].shape[0]
    assert result.projections.shape == (V, 1, 64, 64)
    assert set(result.scores) == {"iou", "precision", "recall", "boundary_f"}
    assert all(s.shape == (V,) for s in result.scores.values())
    assert result.mean["iou"] > 0.85
    assert result.mean["boundary_f"] > 0.8
    report = json.loads(json.dumps(result.to_dict()))
    assert len(report["per_view"]) == V


def test_check_projections_accepts_every_single_object_volume_shape(chair):
    vox = chair["voxels"]  # (1, R, R, R)
    means = [
        check_projections(v, chair["cameras"], chair["silhouettes"]).mean["iou"]
        for v in (vox[0], vox, vox[None])
    ]
    assert means[0] == means[1] == means[2]


def test_check_projections_explains_bad_inputs(chair):
    cams, sil, vox = chair["cameras"], chair["silhouettes"], chair["voxels"]
    with pytest.raises(ValueError, match=r"occupancy in \[0, 1\].*logits"):
        check_projections(vox * 8 - 4, cams, sil)
    with pytest.raises(ValueError, match="same views"):
        check_projections(vox, cams[:5], sil)
    with pytest.raises(ValueError, match="one object"):
        check_projections(vox.expand(2, 1, 32, 32, 32), cams, sil)
    with pytest.raises(ValueError, match="batch shape"):
        check_projections(vox, cams.unsqueeze(0), sil)


def test_project_views_gives_empty_views_for_cameras_that_face_away(chair):
    cams = chair["cameras"]
    flip = torch.tensor([1.0, -1.0, -1.0])
    away = p3.Cameras(cams.K, flip[:, None] * cams.R, flip * cams.t, cams.image_size)
    with pytest.raises(ValueError, match="behind"):
        p3.project(chair["voxels"][None], away)  # project() refuses them...
    assert project_views(chair["voxels"], away).abs().max().item() == 0.0  # ...checking copes


# -- slips --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SLIPS))
def test_undoing_a_planted_slip_gives_the_inputs_back(chair, name):
    vol, cams, sil = chair["voxels"], chair["cameras"], chair["silhouettes"]
    v2, c2, s2 = SLIPS[name].correct(*plant_slip(name, vol, cams, sil))
    assert torch.equal(v2, vol) and torch.equal(s2, sil)
    for a, b in ((c2.K, cams.K), (c2.R, cams.R), (c2.t, cams.t)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_slips_are_the_mistakes_they_name(chair):
    vol, cams, sil = chair["voxels"], chair["cameras"], chair["silhouettes"]
    # OpenGL axes: a camera-to-world pose in OpenGL axes inverted without the axis flip.
    c2w, _ = cams.to_opengl()
    R_naive = c2w[:, :3, :3].transpose(-1, -2)
    t_naive = -(R_naive @ c2w[:, :3, 3:])[..., 0]
    _, gl, _ = plant_slip("opengl_axes", vol, cams, sil)
    torch.testing.assert_close(gl.R, R_naive, atol=1e-5, rtol=0)
    torch.testing.assert_close(gl.t, t_naive, atol=1e-5, rtol=0)
    # Camera-to-world pose stored as (R, t): rotation R^T and the camera centre.
    _, c2w_cams, _ = plant_slip("camera_to_world", vol, cams, sil)
    torch.testing.assert_close(c2w_cams.R, cams.R.transpose(-1, -2))
    torch.testing.assert_close(c2w_cams.t, cams.centers, atol=1e-5, rtol=0)
    # Transposed R with the right centres.
    _, tr, _ = plant_slip("transposed_R", vol, cams, sil)
    torch.testing.assert_close(tr.R, cams.R.transpose(-1, -2))
    torch.testing.assert_close(tr.centers, cams.centers, atol=1e-5, rtol=0)
    # Half pixel: OpenCV-calibrated intrinsics taken without from_opencv's +0.5.
    K_cv = cams.to_opencv(integer_pixel_centers=True)[0]
    _, half, _ = plant_slip("half_pixel", vol, cams, sil)
    torch.testing.assert_close(half.K, K_cv)
    # Flipped rows, swapped axes.
    assert torch.equal(plant_slip("flipped_y", vol, cams, sil)[2], sil.flip(-2))
    assert torch.equal(plant_slip("swapped_xz", vol, cams, sil)[0], vol.permute(0, 3, 2, 1))


def test_diagnose_finds_no_slip_in_correct_inputs(chair):
    d = diagnose(chair["voxels"], chair["cameras"], chair["silhouettes"])
    assert d.explained_by == []
    assert d.slip is None
    assert d.verdict.startswith("no slip")
    assert [name for name, _ in d.candidates] != []
    assert all(iou <= d.as_given + 0.01 for _, iou in d.candidates)


@pytest.mark.parametrize("name", sorted(SLIPS))
def test_diagnose_names_each_planted_slip(chair, name):
    planted = plant_slip(name, chair["voxels"], chair["cameras"], chair["silhouettes"])
    d = diagnose(*planted)
    assert d.slip == name, d.verdict
    assert d.candidates[0][0] == name
    assert d.candidates[0][1] > d.as_given + 0.02
    assert f"'{name}' explains" in d.verdict


def test_slips_of_a_symmetric_object_are_reported_as_unidentifiable():
    # A vertical cylinder is unchanged by swapping x and z: nothing to explain.
    box = p3.VolumeBox()
    centres = box.voxel_centers(32)
    radius = centres[..., [0, 2]].norm(dim=-1)
    vol = ((radius < 0.3) & (centres[..., 1].abs() < 0.35)).float()[None]  # (1, R, R, R)
    cams = p3.orbit_cameras(8, elevation=25.0, image_size=48)
    sil = project_views(vol, cams, depth_samples=96)
    d = diagnose(*plant_slip("swapped_xz", vol, cams, sil))
    assert "swapped_xz" not in d.explained_by
    assert d.verdict.startswith("no slip")


def test_diagnose_says_when_no_known_slip_explains(chair):
    vol = torch.roll(chair["voxels"], shifts=8, dims=-1)  # object moved: no convention slip
    d = diagnose(vol, chair["cameras"], chair["silhouettes"])
    assert d.explained_by == []
    assert d.verdict.startswith("none of the known slips")
    with pytest.raises(ValueError, match="unknown slips"):
        diagnose(vol, chair["cameras"], chair["silhouettes"], slips=["no_such_slip"])


# -- the command ----------------------------------------------------------------------------
def test_check_command_writes_report_and_contact_sheet(data_dir, tmp_path, capsys):
    from PIL import Image

    sample = find_sample(data_dir, "chair_00000")
    volume_path = tmp_path / "swapped.npy"
    np.save(volume_path, sample["voxels"][0].numpy().transpose(2, 1, 0))  # x <-> z slip
    out = tmp_path / "report"
    code = main(["check", str(volume_path), "--data", data_dir, "--id", "chair_00000",
                 "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "mean" in printed and "slip 'swapped_xz' explains" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["id"] == "chair_00000"
    assert len(report["per_view"]) == CONFIG.n_views
    assert set(report["mean"]) == {"iou", "precision", "recall", "boundary_f"}
    assert report["diagnosis"]["explained_by"][0] == "swapped_xz"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.mode == "RGB"
        assert sheet.width >= 3 * 64 and sheet.height >= 64 * math.ceil(CONFIG.n_views / 6)


def test_check_reads_every_kind_of_volume_file(data_dir, tmp_path):
    import trimesh

    from persp3d.datasets.shapes import item_seed, make_shape
    from persp3d.datasets.volumes import save_volume
    from persp3d.models.occupancy import OccupancyPredictor
    from persp3d.train.checkpoint import save_checkpoint
    from persp3d.train.config import Config

    sample = find_sample(data_dir, "chair_00000")
    vox = sample["voxels"][0].numpy()  # (R, R, R)
    np.savez(tmp_path / "v.npz", voxels_32=(vox * 255).astype(np.uint8))
    save_volume(tmp_path / "v.binvox", vox, p3.VolumeBox())  # the header places it
    shape = make_shape("chair", item_seed(CONFIG.seed, "chair", 0), fill=CONFIG.fill,
                       max_radius=CONFIG.max_radius)  # fmt: skip
    vertices, faces, _ = shape.mesh()
    trimesh.Trimesh(vertices, faces).export(tmp_path / "v.obj")
    config = Config()
    model = OccupancyPredictor(config.model)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(),
                                        "config": json.dumps(config.to_dict())})  # fmt: skip
    ious = {}
    for name in ("v.npz", "v.binvox", "v.obj"):
        report = check(tmp_path / name, data_dir, "chair_00000", tmp_path / name[2:],
                       run_diagnosis=False, resolution=32)  # fmt: skip
        ious[name] = report["mean"]["iou"]
    assert min(ious.values()) > 0.85, ious
    volume, box, kind = load_volume(tmp_path / "m.pt", sample, input_view=3)
    assert kind == "checkpoint" and box is None
    assert volume.shape == (1, 1, 32, 32, 32)
    assert 0.0 <= volume.min().item() <= volume.max().item() <= 1.0


def test_check_errors_name_the_problem(data_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="no object 'nope'.*chair_00000"):
        find_sample(data_dir, "nope")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array")
    with pytest.raises(ValueError, match="garbage.npy: .*not a plain .npy"):
        load_volume(garbage)
    with pytest.raises(ValueError, match="unknown volume format"):
        load_volume(garbage.rename(tmp_path / "garbage.xyz"))
    with pytest.raises(ValueError, match="no such file"):
        load_volume(tmp_path / "missing.npy")
    np.save(tmp_path / "two.npy", np.zeros((2, 1, 8, 8, 8), np.float32))
    with pytest.raises(
        ValueError, match=r"two.npy.*must be \(D, H, W\).*got shape \(2, 1, 8, 8, 8\)"
    ):
        load_volume(tmp_path / "two.npy")
    code = main(["check", str(tmp_path / "two.npy"), "--data", data_dir, "--id", "nope"])
    assert code == 1
    assert "error: no object 'nope'" in capsys.readouterr().err


def test_check_box_with_a_size_that_is_not_positive_is_a_clear_error(data_dir, tmp_path, capsys):
    from persp3d.train.check import parse_box

    for size in ("0", "nan", "inf"):
        with pytest.raises(ValueError, match="--box"):
            parse_box(["0", "0", "0", size])
    size = "-1"  # through the command line
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    code = main(["check", str(tmp_path / "v.npy"), "--data", data_dir, "--id", "chair_00000",
                 "--box", "0", "0", "0", size, "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --box") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_check_takes_the_box_from_the_flag_then_the_file_then_the_sample(data_dir, tmp_path):
    from persp3d.datasets.volumes import save_volume
    from persp3d.train.check import parse_box, resolve_box

    sample = find_sample(data_dir, "chair_00000")
    vox = sample["voxels"][0].numpy()
    # The object in a box moved and doubled: only the file's own box puts it back in place.
    moved = p3.VolumeBox((0.3, -0.2, 0.1), 2.0)
    save_volume(tmp_path / "moved.npz", vox, moved)
    np.save(tmp_path / "plain.npy", vox)
    _, file_box, kind = load_volume(tmp_path / "moved.npz")
    assert file_box == moved and kind == "persp3d-volume-2"
    _, npy_box, _ = load_volume(tmp_path / "plain.npy")
    assert npy_box is None
    given = parse_box(["0", "0", "0", "1"])
    captured = {"box": p3.VolumeBox((1.0, 0.0, 0.0), 3.0)}
    assert resolve_box(given, moved, captured) == (given, "--box")
    assert resolve_box(None, moved, captured) == (moved, "file")
    assert resolve_box(None, None, captured) == (captured["box"], "sample")
    assert resolve_box(None, None, {}) == (p3.VolumeBox(), "default")
    report = check(tmp_path / "moved.npz", data_dir, "chair_00000", tmp_path / "a",
                   run_diagnosis=False)  # fmt: skip
    assert report["box_source"] == "file" and report["box"]["size"] == [2.0, 2.0, 2.0]
    shifted = report["mean"]["iou"]
    fixed = check(tmp_path / "moved.npz", data_dir, "chair_00000", tmp_path / "b",
                  run_diagnosis=False, box=p3.VolumeBox())  # fmt: skip
    assert fixed["box_source"] == "--box" and fixed["mean"]["iou"] > 0.85 > shifted


def test_check_out_under_a_regular_file_is_a_clear_error(data_dir, tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    (tmp_path / "file").write_text("x")
    code = main(["check", str(tmp_path / "v.npy"), "--data", data_dir, "--id", "chair_00000",
                 "--out", str(tmp_path / "file" / "sub")])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "--out" in err and "is a file, not a folder" in err and "Traceback" not in err
