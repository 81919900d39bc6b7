"""import_capture / persp3d data import-views: captures written in their formats from known
cameras and a ball away from the origin, imported, then the ball's volume projected with the
imported cameras in the stored box must match the stored silhouettes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _capture_helpers import (
    BALL_CENTER,
    BALL_RADIUS,
    SIZE,
    ball_volume,
    iou,
    make_rig,
    project_points,
    render_ball,
    save_png,
    shaded,
    write_colmap_text,
    write_dtu,
    write_middlebury,
    write_nerf,
    write_r2n2_model,
)

import persp3d as p3
from persp3d.datasets import MultiViewFolder, collate, load_dataset
from persp3d.datasets.captures import (
    estimate_box,
    import_capture,
    read_capture,
    scale_intrinsics,
    threshold_silhouette,
)
from persp3d.datasets.formats import (
    CaptureScene,
    CaptureView,
    read_dtu,
    read_middlebury,
    read_r2n2_object,
)
from persp3d.train.cli import main


def projected_iou(sample, center=BALL_CENTER, radius=BALL_RADIUS) -> list[float]:
    """IoU per view of the ball's volume (in the stored box) projected with the stored
    cameras against the stored silhouettes."""
    box = sample["box"]
    volume = ball_volume(box, 32, center, radius)
    sil = p3.project(volume, sample["cameras"], box=box, depth_samples=96, backend="reference")[0]
    return [iou(sil[v, 0], sample["silhouettes"][v, 0]) for v in range(sil.shape[0])]


def box_holds_ball(box, center=BALL_CENTER, radius=BALL_RADIUS) -> bool:
    lo, hi = np.asarray(box.min), np.asarray(box.max)
    return bool((center - radius >= lo).all() and (center + radius <= hi).all())


# -- each format end to end ---------------------------------------------------------------------
def test_middlebury_import_projects_the_ball_onto_its_masks(tmp_path):
    rig = make_rig()
    scene = read_middlebury(write_middlebury(tmp_path / "src", rig))
    result = import_capture(scene, tmp_path / "ds", threshold=(0.19, 2, 2))
    assert result.box_source == "estimated" and set(result.silhouettes) == {"threshold"}
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    assert sample["images"].shape == (8, 3, *SIZE) and sample["cameras"].image_size == SIZE
    assert min(projected_iou(sample)) > 0.95
    assert box_holds_ball(sample["box"])
    assert sample["box"].size[0] < 2 * BALL_RADIUS * 1.4  # not absurdly large
    assert float(sample["up"] @ torch.tensor([0.0, 1.0, 0.0])) > 0.95
    for v in range(8):  # cameras stored as read (float32)
        uv = project_points(*(x[v].double().numpy() for x in (sample["cameras"].K,
                              sample["cameras"].R, sample["cameras"].t)), BALL_CENTER[None])  # fmt: skip
        np.testing.assert_allclose(uv, project_points(rig.K[v], rig.R[v], rig.t[v], BALL_CENTER[None]), atol=1e-3)  # fmt: skip


def test_middlebury_auto_silhouettes_follow_the_dataset_recipe(tmp_path):
    rig = make_rig(2, size=(60, 80))
    scene = read_middlebury(write_middlebury(tmp_path / "src", rig))
    result = import_capture(scene, tmp_path / "ds", contact_sheet=False)
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    assert result.silhouettes == ["threshold", "threshold"]
    rgb = np.asarray(__import__("PIL.Image").Image.open(scene.views[0].image_path)) / 255.0
    expected = threshold_silhouette(rgb, 0.19, 10, 7)
    np.testing.assert_array_equal(sample["silhouettes"][0, 0].numpy() > 0.5, expected > 0.5)
    # dilating by 10 then eroding by 7 grows the lit ball by about 3 px
    truth = render_ball(rig.K[0], rig.R[0], rig.t[0], rig.size)
    assert expected.sum() > truth.sum()


def test_dtu_import_uses_format_masks_and_scale_mat_box(tmp_path):
    rig = make_rig()
    write_dtu(tmp_path / "scan1", rig, box_center=BALL_CENTER + 0.02, box_radius=0.45)
    result = import_capture(read_dtu(tmp_path / "scan1"), tmp_path / "ds")
    assert result.box_source == "format" and set(result.silhouettes) == {"masks"}
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    np.testing.assert_allclose(sample["box"].center, BALL_CENTER + 0.02)
    assert sample["box"].size[0] == pytest.approx(0.9)
    assert min(projected_iou(sample)) > 0.95


def test_r2n2_object_import_uses_alpha(tmp_path):
    model = tmp_path / "02691156" / "m1"
    write_r2n2_model(model, n_views=4)
    result = import_capture(read_r2n2_object(model), tmp_path / "ds", category="02691156")
    assert result.silhouettes == ["alpha"] * 4 and result.box_source == "format"
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    assert sample["category"] == "02691156" and sample["id"] == "m1"
    assert sample["box"] == p3.VolumeBox()
    assert min(projected_iou(sample, np.array([0.1, 0.05, -0.1]), 0.25)) > 0.95


# -- scale and sizes -----------------------------------------------------------------------------
def test_scale_intrinsics_is_exact_for_half_pixel_centres(tmp_path):
    """Stored masks (area-averaged full-resolution masks) agree with coverage rendered
    directly at the low resolution with diag(s, s, 1) K, better than with the integer-centre
    formula c' = (c + 0.5) s - 0.5."""
    rig = make_rig(4, size=(96, 128))
    write_dtu(tmp_path / "s", rig)
    import_capture(read_dtu(tmp_path / "s"), tmp_path / "ds", scale=0.25, contact_sheet=False)
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    assert sample["cameras"].image_size == (24, 32)
    err_ok, err_alt = [], []
    for v in range(4):
        K_ok = scale_intrinsics(rig.K[v], (96, 128), (24, 32))
        np.testing.assert_allclose(sample["cameras"].K[v].numpy(), K_ok, rtol=1e-6, atol=1e-6)
        half = np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
        K_alt = np.diag([0.25, 0.25, 1]) @ (rig.K[v] - half) + half  # integer-centre rule
        stored = sample["silhouettes"][v, 0].numpy()
        for K, errs in ((K_ok, err_ok), (K_alt, err_alt)):
            cover = render_ball(K, rig.R[v], rig.t[v], (24, 32), supersample=4)
            errs.append(np.abs(cover - stored).mean())
        # projections of points scale by exactly s
        uv_full = project_points(rig.K[v], rig.R[v], rig.t[v], BALL_CENTER[None])
        uv_low = project_points(K_ok, rig.R[v], rig.t[v], BALL_CENTER[None])
        np.testing.assert_allclose(uv_low, 0.25 * uv_full, atol=1e-9)
    assert np.mean(err_ok) < 0.5 * np.mean(err_alt)
    assert min(projected_iou(sample)) > 0.9


def test_views_of_different_sizes_are_resized_to_one(tmp_path):
    rig = make_rig(4)
    views = []
    for v in range(4):
        f = 2 if v == 1 else 1  # view 1 is twice as large
        size = (SIZE[0] * f, SIZE[1] * f)
        K = np.diag([f, f, 1.0]) @ rig.K[v]
        path = save_png(
            tmp_path / "img" / f"{v}.png", shaded(render_ball(K, rig.R[v], rig.t[v], size))
        )
        save_png(tmp_path / "masks" / f"{v}.png", render_ball(K, rig.R[v], rig.t[v], size))
        views.append(CaptureView(str(v), path, K, rig.R[v], rig.t[v], size))
    scene = CaptureScene("mixed", "test", views, up=(0, 1, 0))
    import_capture(scene, tmp_path / "ds", mask_dir=tmp_path / "masks")
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    assert sample["images"].shape[-2:] == SIZE
    np.testing.assert_allclose(sample["cameras"].K[1].numpy(), rig.K[1], rtol=1e-6, atol=1e-6)
    assert min(projected_iou(sample)) > 0.95


# -- silhouettes ---------------------------------------------------------------------------------
def _scene_with(tmp_path, image_fn, n=3):
    rig = make_rig(n)
    views, masks = [], []
    for v in range(n):
        mask = render_ball(rig.K[v], rig.R[v], rig.t[v], rig.size)
        path = save_png(tmp_path / "img" / f"view{v}.png", image_fn(mask))
        views.append(CaptureView(f"view{v}", path, rig.K[v], rig.R[v], rig.t[v], rig.size))
        masks.append(mask)
    return CaptureScene("s", "test", views, up=(0, 1, 0)), masks


@pytest.mark.parametrize("mode", ["alpha", "masks", "key"])
def test_each_silhouette_source_recovers_the_mask(tmp_path, mode):
    rng = np.random.default_rng(0)

    def image(mask):
        fg = rng.uniform(0.0, 0.6, (*mask.shape, 3))  # textured object, never near the key
        rgb = mask[..., None] * fg + (1 - mask[..., None]) * np.array([0.1, 0.9, 0.2])
        return np.concatenate([rgb, mask[..., None]], 2) if mode == "alpha" else rgb

    scene, masks = _scene_with(tmp_path, image)
    kwargs = {}
    if mode == "masks":
        for v, m in enumerate(masks):  # names matched by stem, another suffix is fine
            save_png(tmp_path / "m" / f"view{v}.png", m)
        kwargs = {"mask_dir": tmp_path / "m"}
    if mode == "key":
        kwargs = {"key_color": (26, 230, 51), "key_tolerance": 0.1}
    result = import_capture(scene, tmp_path / "ds", box=(BALL_CENTER, 1.0), **kwargs)
    assert set(result.silhouettes) == {mode}
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    for v, m in enumerate(masks):
        assert iou(sample["silhouettes"][v, 0], m) > 0.99


def test_missing_mask_and_no_silhouette_source_are_named(tmp_path):
    scene, _ = _scene_with(tmp_path, lambda m: shaded(m, bg=(0.5, 0.5, 0.5)), n=2)
    (tmp_path / "m").mkdir()
    with pytest.raises(FileNotFoundError, match="no mask for view 'view0'"):
        import_capture(scene, tmp_path / "ds", mask_dir=tmp_path / "m")
    with pytest.raises(ValueError, match="view0.png: no silhouette source"):
        import_capture(scene, tmp_path / "ds")
    with pytest.raises(ValueError, match="every silhouette .* is empty"):
        import_capture(scene, tmp_path / "ds", key_color=(128, 128, 128), key_tolerance=0.9)


# -- the box ---------------------------------------------------------------------------------------
def test_estimated_box_holds_the_object_and_is_tight():
    rig = make_rig(8)
    cams = [(rig.K[v], rig.R[v], rig.t[v]) for v in range(8)]
    masks = [render_ball(*c, rig.size) for c in cams]
    center, side = estimate_box(cams, masks, margin=0.1)
    box = p3.VolumeBox(center.tolist(), side)
    assert box_holds_ball(box)
    assert side < 2 * BALL_RADIUS * 1.35
    np.testing.assert_allclose(center, BALL_CENTER, atol=0.05)


def test_estimated_box_survives_views_that_cut_the_object():
    rig = make_rig(8)
    cams = [(rig.K[v], rig.R[v], rig.t[v]) for v in range(8)]
    K = rig.K[0].copy()
    K[0, 2] -= 30  # view 0 sees only part of the ball: it leaves the frame on the left
    cams[0] = (K, rig.R[0], rig.t[0])
    masks = [render_ball(*c, rig.size) for c in cams]
    assert masks[0][:, 0].sum() > 0
    center, side = estimate_box(cams, masks, margin=0.1)
    assert box_holds_ball(p3.VolumeBox(center.tolist(), side))


def test_estimated_box_from_sparse_points_and_empty_hull_error():
    rig = make_rig(6)
    cams = [(rig.K[v], rig.R[v], rig.t[v]) for v in range(6)]
    masks = [render_ball(*c, rig.size) for c in cams]
    points = BALL_CENTER + np.random.default_rng(0).normal(0, 0.15, (200, 3))
    center, side = estimate_box(cams, masks, points=points)
    assert box_holds_ball(p3.VolumeBox(center.tolist(), side))
    shifted = [np.roll(m, 20, axis=1) * 0 + np.roll(m, 25, axis=1) for m in masks[:3]]
    with pytest.raises(ValueError, match="visual hull .* is empty|cannot place"):
        estimate_box(cams[:3] + cams[3:], shifted + [np.zeros_like(m) for m in masks[3:]])


# -- the dataset folder ---------------------------------------------------------------------------
def test_folder_extends_replaces_and_batches_with_box_and_up(tmp_path):
    rig = make_rig(3)
    write_dtu(tmp_path / "a", rig)
    write_dtu(tmp_path / "b", rig, box_radius=0.5)
    import_capture(read_dtu(tmp_path / "a"), tmp_path / "ds")
    import_capture(read_dtu(tmp_path / "b"), tmp_path / "ds")
    import_capture(read_dtu(tmp_path / "b"), tmp_path / "ds", scale=1.0)  # replaces b
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["kind"] == "capture" and manifest["complete"]
    assert sorted(it["id"] for it in manifest["items"]) == ["a", "b"]
    data = load_dataset(tmp_path / "ds", split="train")
    batch = collate([data[0], data[1]])
    assert batch["up"].shape == (2, 3) and len(batch["boxes"]) == 2
    assert collate([data[0], data[0]])["box"] == data[0]["box"]
    assert (tmp_path / "ds" / "contact_sheet.png").is_file()


def test_split_from_format_writes_one_object_per_split(tmp_path):
    scene, _ = _scene_with(tmp_path, lambda m: np.concatenate([shaded(m), m[..., None]], 2), n=3)
    for view, split in zip(scene.views, ["train", "train", "test"]):
        view.split = split
    result = import_capture(scene, tmp_path / "ds", split_from_format=True, id="obj")
    assert [(it["id"], it["split"], it["views"]) for it in result.items] == [
        ("obj", "train", 2),
        ("obj-test", "test", 1),
    ]
    assert len(MultiViewFolder(tmp_path / "ds", "test")) == 1
    dtu_scene, _ = _scene_with(tmp_path / "x", lambda m: shaded(m), n=2)
    with pytest.raises(ValueError, match="gives no view splits"):
        import_capture(dtu_scene, tmp_path / "ds2", split_from_format=True)


def test_refuses_a_folder_of_another_kind(tmp_path):
    (tmp_path / "ds").mkdir()
    manifest = {"format": "persp3d-multiview", "version": 1, "kind": "meshes", "config": {}}
    manifest.update(items=[], complete=True)
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    rig = make_rig(2)
    write_dtu(tmp_path / "a", rig)
    with pytest.raises(ValueError, match="holds 'meshes' data"):
        import_capture(read_dtu(tmp_path / "a"), tmp_path / "ds")


# -- the command line ------------------------------------------------------------------------------
def test_cli_import_views_then_visual_hull_in_the_stored_box(tmp_path, capsys):
    rig = make_rig()
    write_middlebury(tmp_path / "src", rig)
    code = main(["data", "import-views", str(tmp_path / "src"), "--format", "middlebury",
                 "--out", str(tmp_path / "ds"), "--threshold", "0.19,2,2", "--id", "ball"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "box (estimated)" in out and "capture/ball" in out
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    hull = p3.visual_hull(sample["cameras"], sample["silhouettes"], 24, sample["box"])
    truth = ball_volume(sample["box"], 24)
    assert iou(hull, truth) > 0.6  # 8 views of a ball: the hull is a little larger


def test_cli_errors_are_one_line_naming_file_and_field(tmp_path, capsys):
    par = write_middlebury(tmp_path / "src", make_rig(2))
    par.write_text(par.read_text().replace("\n", "\nbad line\n", 1).replace("2\n", "3\n", 1))
    code = main(["data", "import-views", str(par), "--format", "middlebury",
                 "--out", str(tmp_path / "ds")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "ball_par.txt" in err and "expected 22 fields" in err
    code = main(["data", "import-views", str(tmp_path / "nope"), "--format", "dtu",
                 "--out", str(tmp_path / "ds")])  # fmt: skip
    assert code != 0 and "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "import-views", str(par), "--format", "dtu", "--out", "x", "--box", "1,2"])


def test_read_capture_dispatches_by_format(tmp_path):
    rig = make_rig(2)
    write_dtu(tmp_path / "scan", rig)
    assert read_capture(tmp_path / "scan", "dtu").source == "dtu"
    with pytest.raises(ValueError, match="format must be one of"):
        read_capture(tmp_path / "scan", "ply")


# -- NeRF and COLMAP through the same import (their readers are tested on their own) ------------
def test_nerf_import_with_alpha_and_splits_from_format(tmp_path, capsys):
    rig = make_rig(6)
    write_nerf(tmp_path / "lego", rig)
    code = main(["data", "import-views", str(tmp_path / "lego"), "--format", "nerf",
                 "--out", str(tmp_path / "ds"), "--split-from-format"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    train = MultiViewFolder(tmp_path / "ds", "train")[0]
    test = MultiViewFolder(tmp_path / "ds", "test")[0]
    assert (train["id"], test["id"]) == ("lego", "lego-test")
    assert train["images"].shape[0] == 3 and test["images"].shape[0] == 3
    np.testing.assert_allclose(train["up"].numpy(), [0, 0, 1])  # NeRF-synthetic is z-up
    assert train["box"] == test["box"] and box_holds_ball(train["box"])
    assert min(projected_iou(train) + projected_iou(test)) > 0.95


def test_colmap_import_with_mask_folder_and_points_for_the_box(tmp_path, capsys):
    rig = make_rig(6)
    root = write_colmap_text(tmp_path / "proj", rig)
    code = main(["data", "import-views", str(root), "--format", "colmap", "--masks",
                 str(root / "masks"), "--out", str(tmp_path / "ds"), "--scale", "0.5"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    assert sample["cameras"].image_size == (24, 32)
    assert box_holds_ball(sample["box"]) and sample["box"].size[0] < 2 * BALL_RADIUS * 1.5
    assert min(projected_iou(sample)) > 0.9  # 24 x 32 pixels: a ball of 5 px radius


def test_cli_box_overrides_the_format_bounds(tmp_path, capsys):
    write_dtu(tmp_path / "scan", make_rig(3))
    code = main(["data", "import-views", str(tmp_path / "scan"), "--format", "dtu", "--out",
                 str(tmp_path / "ds"), "--box", "0.7,-0.4,1.2,0.75", "--no-sheet"])  # fmt: skip
    assert code == 0 and "box (given)" in capsys.readouterr().out
    sample = MultiViewFolder(tmp_path / "ds", "all")[0]
    assert sample["box"] == p3.VolumeBox((0.7, -0.4, 1.2), 0.75)
    assert not (tmp_path / "ds" / "contact_sheet.png").exists()


def test_items_without_box_decode_as_before_and_boxes_must_be_cubes():
    from persp3d.datasets.sample import decode_item, encode_item

    cams = p3.orbit_cameras(n_views=2, image_size=(8, 8))
    kwargs = {"images": torch.rand(2, 3, 8, 8), "silhouettes": torch.rand(2, 1, 8, 8),
              "cameras": cams, "category": "c", "item_id": "i"}  # fmt: skip
    plain = decode_item(encode_item(**kwargs))
    assert "box" not in plain and "up" not in plain
    both = decode_item(encode_item(**kwargs, box=p3.VolumeBox((1, 2, 3), 0.5), up=(0, 0, 2)))
    assert both["box"] == p3.VolumeBox((1, 2, 3), 0.5)
    np.testing.assert_allclose(both["up"].numpy(), [0, 0, 1])
    with pytest.raises(ValueError, match="box must be a cube"):
        encode_item(**kwargs, box=p3.VolumeBox((0, 0, 0), (1, 2, 1)))
