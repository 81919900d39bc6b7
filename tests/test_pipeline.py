"""The pipeline is the one place a run predicts: training, eval, check and view agree with it
bit for bit; input preparation and projection follow the run's config."""

import pytest
import torch
import torch.nn.functional as F

import persp3d as p3
from persp3d.train.config import load_config
from persp3d.train.pipeline import Pipeline, default_input_view

TINY = [
    "data.kind=folder",
    "model.image_size=16",
    "model.resolution=16",
    "model.width=4",
    "model.latent_dim=16",
    "model.decoder_width=8",
    "train.batch_size=4",
    "train.views_per_step=2",
    "train.projection_size=16",
    "train.depth_samples=12",
    "train.projection_mode=absorption",
    "train.val_objects=3",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.progress=false",
    "train.threads=1",
    "data.voxel_resolution=16",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """2 categories x 10 objects, 6 views of 32 x 32 (larger than the network's 16 x 16 input,
    so every path must resize)."""
    from persp3d.datasets.procedural import ProceduralConfig, generate_procedural

    root = tmp_path_factory.mktemp("data") / "tiny"
    config = ProceduralConfig(
        categories=("chair", "mug"),
        per_category=10,
        n_views=6,
        image_size=32,
        voxel_resolutions=(16,),
        store_depth=False,
    )
    generate_procedural(root, config, workers=0, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    from persp3d.train.trainer import Trainer

    out = tmp_path_factory.mktemp("run") / "run"
    config = load_config(
        None, [*TINY, f"data.root={tiny_data}", f"train.out={out}", "train.max_steps=3"]
    )
    Trainer(config).fit()
    return out


def test_default_input_view_is_seven_i_mod_v():
    assert [default_input_view(i, 24) for i in range(5)] == [0, 7, 14, 21, 4]
    idx = torch.arange(10)
    assert torch.equal(default_input_view(idx, 6), (7 * idx) % 6)
    with pytest.raises(ValueError, match="n_views must be positive"):
        default_input_view(1, 0)


def test_prepare_resizes_with_area_and_checks_channels():
    config = load_config(None, ["model.image_size=16", "data.input=silhouette"])
    pipe = Pipeline(config)
    assert pipe.model.config.in_channels == 1 and pipe.config.model.in_channels == 1
    images = torch.rand(2, 1, 32, 32)
    expected = images.reshape(2, 1, 16, 2, 16, 2).mean(dim=(3, 5))  # 2 x 2 block means
    torch.testing.assert_close(pipe.prepare(images), expected)
    as_uint8 = (images * 255).round().to(torch.uint8)
    torch.testing.assert_close(pipe.prepare(as_uint8), pipe.prepare(as_uint8.float() / 255))
    with pytest.raises(ValueError, match=r"images must be \(B, 1, H, W\) \(silhouette input\)"):
        pipe.prepare(torch.rand(2, 3, 32, 32))


def test_project_uses_the_runs_mode_and_depth_samples():
    config = load_config(
        None,
        ["model.resolution=16", "train.projection_mode=absorption", "train.depth_samples=20"],
    )
    pipe = Pipeline(config)
    occ = torch.rand(1, 1, 16, 16, 16)
    cams = p3.orbit_cameras(n_views=2, image_size=(24, 24))
    ours = pipe.project(occ, cams)
    assert ours.shape == (1, 2, 1, 24, 24)
    reference = p3.project(occ, cams, depth_samples=20, mode="absorption")
    torch.testing.assert_close(ours, reference)
    max_64 = p3.project(occ, cams, depth_samples=64, mode="max")
    assert (ours - max_64).abs().max() > 1e-3  # not the old hard-coded max / 64 samples


@pytest.mark.slow
def test_eval_check_and_view_predict_exactly_as_the_pipeline(trained, tiny_data, tmp_path):
    from persp3d.metrics import iou_3d
    from persp3d.train.check import _predict_volume
    from persp3d.train.data import build_dataset
    from persp3d.train.evaluate import evaluate
    from persp3d.viewers.sources import run_source

    pipe = Pipeline.from_run(trained)
    assert pipe.state["step"] == 3 and not pipe.training
    test = build_dataset(pipe.config.data, "test", progress=False)
    n = len(test)
    assert n >= 2
    occ = [pipe.predict(test[i], index=i) for i in range(n)]  # (1, 1, R, R, R) each

    # eval: the report's per-object IoU is the IoU of the pipeline's prediction
    report = evaluate(str(trained), str(tiny_data), "test", out=str(tmp_path), chamfer_points=0)
    th = report["threshold"]
    for row in report["objects"]:
        i = row["index"]
        ours = float(iou_3d(occ[i], test[i]["voxels"][None], th)[0])
        assert row["iou_3d"] == ours
    assert report["protocol"]["projection_mode"] == "absorption"
    assert report["protocol"]["depth_samples"] == 12
    md = (tmp_path / "eval_test.md").read_text()
    assert "Protocol:" in md and "(7 * index) % n_views" in md and "absorption" in md

    # check: a checkpoint's volume from a given view
    for i in range(n):
        view = default_input_view(i, test[i]["images"].shape[0])
        got = _predict_volume(trained / "last.pt", test[i], view)
        assert torch.equal(got, occ[i])

    # view: a run's predictions on its test split
    source = run_source(trained, tiny_data, "test")
    for i in range(n):
        assert torch.equal(torch.as_tensor(source[i].volume), occ[i][0, 0])

    # and the input really is resized: 32 x 32 views into a 16 x 16 network
    sample = test[0]
    manual = pipe.forward(F.interpolate(sample["images"][:1], size=(16, 16), mode="area"))
    assert torch.equal(pipe.predict(sample, view=0), manual.detach())
