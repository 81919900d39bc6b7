"""Data into training: the step sampler's shards, batches that depend only on (seed, step),
workers, the in-memory choice, 3D-R2N2 as a training source and its errors."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from persp3d.train.config import DataConfig, load_config
from persp3d.train.data import (
    InMemorySplit,
    StepSampler,
    StepSamples,
    build_dataset,
    choose_in_memory,
    infer_data_kind,
    resolve_categories,
    train_batches,
)

TINY = [
    "model.image_size=16",
    "model.resolution=16",
    "model.width=4",
    "model.latent_dim=16",
    "model.decoder_width=8",
    "train.batch_size=4",
    "train.views_per_step=2",
    "train.projection_size=16",
    "train.depth_samples=12",
    "train.val_objects=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.progress=false",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from persp3d.datasets.procedural import ProceduralConfig, generate_procedural

    root = tmp_path_factory.mktemp("data") / "tiny"
    config = ProceduralConfig(
        categories=("chair", "mug"),
        per_category=10,
        n_views=6,
        image_size=16,
        voxel_resolutions=(16,),
        store_depth=False,
    )
    generate_procedural(root, config, workers=0, progress=False)
    return root


@pytest.mark.parametrize(("n", "batch", "world"), [(24, 6, 2), (24, 6, 3), (25, 6, 3), (7, 3, 3)])
def test_ddp_shards_are_disjoint_and_complete(n, batch, world):
    steps_per_epoch = max(1, n // batch)
    for epoch in range(3):
        steps = range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        shards = [StepSampler(n, batch, seed=5, rank=r, world=world) for r in range(world)]
        seen = [[k for s in steps for k in shards[r].keys(s)] for r in range(world)]
        for r in range(world):
            assert len(seen[r]) == len(steps) * len(range(r, batch, world))
        objects = [i for keys in seen for i, _, _ in keys]
        assert len(objects) == len(set(objects)) == steps_per_epoch * batch  # disjoint
        if n % batch == 0:
            assert sorted(objects) == list(range(n))  # complete
        # the ranks' slots together are the single-process batch of each step
        single = StepSampler(n, batch, seed=5)
        for s in steps:
            merged = sorted(k for r in range(world) for k in shards[r].keys(s))
            assert merged == sorted(single.keys(s))


def test_sampler_starts_at_any_step_with_the_same_batches():
    full = list(itertools.islice(iter(StepSampler(50, 8, seed=3)), 20))
    for start in (0, 1, 6, 13):
        resumed = list(itertools.islice(iter(StepSampler(50, 8, seed=3, start=start)), 20 - start))
        assert resumed == full[start:]
    assert list(StepSampler(50, 8, seed=4).keys(0)) != list(StepSampler(50, 8, seed=3).keys(0))
    assert len(StepSampler(50, 8, start=3, stop=10)) == 7
    with pytest.raises(ValueError, match=r"batch_size \(2\) must be at least the number"):
        StepSampler(50, 2, world=3)
    with pytest.raises(ValueError, match="holds no objects"):
        StepSampler(0, 2)


def test_batches_are_the_same_from_disk_memory_and_workers(tiny_data):
    cfg = DataConfig(root=str(tiny_data), kind="folder", voxel_resolution=16)
    disk = build_dataset(cfg, "train", progress=False)
    memory = InMemorySplit.from_dataset(disk)
    memory_by_workers = InMemorySplit.from_dataset(disk, workers=2)
    assert (
        torch.equal(memory.images, memory_by_workers.images) and memory.ids == memory_by_workers.ids
    )

    def batches(dataset, workers, start=0):
        samples = StepSamples(
            dataset,
            seed=1,
            views_per_step=3,
            input_kind="rgb",
            projection_size=8,
            with_voxels=True,
        )
        sampler = StepSampler(len(dataset), 4, seed=1, start=start, stop=6)
        return list(train_batches(samples, sampler, workers))

    ref = batches(disk, 0)
    assert len(ref) == 6 and ref[0]["input"].shape == (4, 3, 16, 16)
    assert ref[0]["silhouettes"].shape == (4, 3, 1, 8, 8) and ref[0]["voxels"].shape[0] == 4
    for other in (batches(memory, 0), batches(disk, 2), [*ref[:3], *batches(disk, 2, start=3)]):
        assert len(other) == len(ref)
        for a, b in zip(ref, other):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), key


def test_in_memory_is_chosen_by_size(tiny_data):
    cfg = DataConfig(root=str(tiny_data), kind="folder", voxel_resolution=16)
    data = build_dataset(cfg, "train", progress=False)
    assert choose_in_memory(cfg, data)[0] is True
    cfg.in_memory_mb = 0.01
    small, why = choose_in_memory(cfg, data)
    assert small is False and "> data.in_memory_mb" in why
    cfg.in_memory_mb = 512.0
    cfg.workers = 1  # workers stream as fast as memory: auto streams whatever the size
    small, why = choose_in_memory(cfg, data)
    assert small is False and "data.workers is 1" in why
    cfg.in_memory = "false"
    assert choose_in_memory(cfg, data) == (False, "data.in_memory is false")
    cfg.in_memory = "maybe"
    with pytest.raises(ValueError, match="data.in_memory must be auto, true or false"):
        choose_in_memory(cfg, data)


def test_categories_by_synset_or_name():
    import yaml

    unquoted = yaml.safe_load("[03001627]")[0]  # YAML 1.1 reads it as an octal number
    assert resolve_categories(["chair", "03001627", "speaker", unquoted], "r2n2") == [
        "03001627",
        "03001627",
        "03691459",
        "03001627",
    ]
    assert resolve_categories(["chair"], "procedural") == ["chair"]
    with pytest.raises(ValueError, match="'sofa-bed' is neither a ShapeNet synset id"):
        resolve_categories(["sofa-bed"], "r2n2")


# -- 3D-R2N2 ------------------------------------------------------------------------------------
R2N2_MODELS = [("03001627", "chair", f"chair_{i}", i) for i in range(4)] + [
    ("02691156", "airplane", f"plane_{i}", 10 + i) for i in range(4)
]


@pytest.fixture(scope="module")
def r2n2_root(tmp_path_factory):
    """A folder in 3D-R2N2's published layout (ShapeNetRendering + ShapeNetVox32)."""
    from tests._data_helpers import make_fake_r2n2

    return make_fake_r2n2(tmp_path_factory.mktemp("r2n2"), R2N2_MODELS, n_views=4)


def _splits_file(path: Path) -> Path:
    table = {
        "train": {"03001627": {"chair_0": [], "chair_1": []}, "02691156": {"plane_0": []}},
        "val": {"03001627": {"chair_2": []}, "02691156": {"plane_1": []}},
        "test": {"03001627": {"chair_3": []}, "02691156": {"plane_2": [], "plane_3": []}},
    }
    path.write_text(json.dumps(table))
    return path


@pytest.mark.slow
def test_r2n2_trains_through_the_cli_and_evaluates_with_its_protocol(r2n2_root, tmp_path):
    from persp3d.train.cli import main
    from persp3d.train.pipeline import Pipeline

    assert infer_data_kind(r2n2_root) == "r2n2"
    out = tmp_path / "run"
    splits = _splits_file(tmp_path / "splits.json")
    argv = ["train", "--data", str(r2n2_root), "--out", str(out), "--max-steps", "3"]
    argv += ["--categories", "chair,02691156", "--no-progress"]
    for o in [*TINY, f"data.splits_file={splits}", "model.resolution=32", "data.workers=1"]:
        argv += ["--set", o]
    assert main(argv) == 0
    pipe = Pipeline.from_run(out)
    assert pipe.config.data.kind == "r2n2" and pipe.config.data.categories == [
        "chair",
        "02691156",
    ]
    assert pipe.state["step"] == 3
    train = build_dataset(pipe.config.data, "train", progress=False, image_size=16)
    assert {m["id"] for m in train.models} == {"chair_0", "chair_1", "plane_0"}
    sample = train[0]
    assert sample["images"].shape == (4, 3, 16, 16)  # 137 x 137 renders resized to the model's
    assert sample["voxels"].shape == (1, 32, 32, 32)

    assert main(["eval", str(out), "--protocol", "r2n2", "--chamfer-points", "0"]) == 0
    report = json.loads((out / "eval_test.json").read_text())
    table = report["r2n2"]
    assert [r["category"] for r in table["rows"]][:5] == [
        "airplane",
        "bench",
        "cabinet",
        "car",
        "chair",
    ]
    assert table["categories_present"] == 2 and len(table["rows"]) == 13
    by_name = {r["category"]: r for r in table["rows"]}
    assert by_name["airplane"]["n"] == 2 and by_name["chair"]["n"] == 1
    assert report["protocol"]["iou_resolution"] == 32
    md = (out / "eval_test_r2n2.md").read_text()
    assert "0.5736" in md and "0.6031" in md and "| chair | 03001627 | 1 |" in md


def test_bad_r2n2_folders_get_clear_errors(r2n2_root, tmp_path):
    cfg = DataConfig(kind="r2n2", root=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="nothing: no such folder"):
        build_dataset(cfg, "train")
    empty = tmp_path / "empty"
    (empty / "ShapeNetRendering").mkdir(parents=True)
    cfg.root = str(empty)
    with pytest.raises(FileNotFoundError, match="no ShapeNetVox32 folder beside"):
        build_dataset(cfg, "train")
    (empty / "ShapeNetVox32").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no synset folders"):
        build_dataset(cfg, "train")
    cfg.root = str(r2n2_root)
    cfg.categories = ["sofa"]
    with pytest.raises(FileNotFoundError, match=r"no folder for categories \['04256520'\]"):
        build_dataset(cfg, "train")
    cfg.categories = None
    cfg.splits_file = str(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="missing.json: cannot read split"):
        build_dataset(cfg, "train")
    cfg.kind, cfg.root = "r2n2", None
    with pytest.raises(ValueError, match="data.root must name the dataset folder"):
        build_dataset(cfg, "train")


@pytest.mark.slow
def test_named_configs_are_found_and_load(tmp_path):
    from persp3d.train.config import find_config

    for name in ("default", "r2n2-13", "r2n2-chair"):
        cfg = load_config(find_config(name))
        assert cfg.train.out == f"runs/{name}"
    assert load_config(find_config("r2n2-13")).data.kind == "r2n2"
    assert len(load_config(find_config("r2n2-13")).data.categories) == 13
    with pytest.raises(FileNotFoundError, match="no named config 'nope'"):
        find_config("nope")
    out = subprocess.run(
        [sys.executable, "-m", "persp3d.train.cli", "train", "--config", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode != 0 and "named configs: default, r2n2-13, r2n2-chair" in out.stderr


def test_mesh_folder_is_imported_once_on_first_use(tmp_path):
    from tests._data_helpers import write_mesh_folder

    meshes = write_mesh_folder(
        tmp_path / "meshes", {"chair/a.obj": ("chair", 0), "mug/b.stl": ("mug", 1)}
    )
    assert infer_data_kind(meshes) == "meshes"
    cfg = DataConfig(kind="meshes", root=str(meshes), cache=str(tmp_path / "cache"))
    data = build_dataset(cfg, "all", progress=False)
    assert sorted(it["category"] for it in data.items) == ["chair", "mug"]
    sample = data[0]
    assert sample["images"].shape[1:] == (3, 64, 64) and sample["voxels"].shape == (1, 32, 32, 32)
    manifest = tmp_path / "cache" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert len(build_dataset(cfg, "all", progress=False)) == 2
    assert manifest.stat().st_mtime_ns == stamp  # not imported again


def test_a_corrupt_item_read_by_the_stream_is_named(tiny_data, tmp_path):
    import shutil

    from persp3d.datasets.cache import CorruptCacheError
    from persp3d.train.data import load_views

    root = Path(shutil.copytree(tiny_data, tmp_path / "copy"))
    data = build_dataset(DataConfig(root=str(root), kind="folder", voxel_resolution=16), "train")
    clean = load_views(data, 1, [0, 2])
    assert clean["images"].shape == (2, 3, 16, 16) and clean["id"] == data.items[1]["id"]
    path = root / data.items[1]["file"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptCacheError, match=str(path.name)):
        load_views(data, 1, [0, 2])


def test_fast_npy_reader_agrees_with_numpy_and_refuses_what_it_cannot_vouch_for():
    import io

    import numpy as np

    from persp3d.train.data import _npy_array

    for array in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.eye(3, dtype=np.float32)):
        buf = io.BytesIO()
        np.save(buf, array)
        raw = buf.getvalue()
        np.testing.assert_array_equal(_npy_array(raw), array)
        assert _npy_array(raw).dtype == array.dtype
        with pytest.raises(ValueError, match="does not describe the data"):
            _npy_array(raw[:-1])  # truncated
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(np.ones((2, 3))))
    with pytest.raises(ValueError, match="unexpected .npy header"):
        _npy_array(buf.getvalue())


def test_captures_train_in_their_box_frame_and_stream_like_in_memory(tmp_path):
    """An imported capture keeps its world units and its box; training sees it in the box's
    frame, so the ball (fixed in the capture's world) voxelised in ``VolumeBox()`` projects
    onto the stored masks with the cameras training reads, streamed and in memory alike."""
    from _capture_helpers import BALL_CENTER, BALL_RADIUS, iou, make_rig, write_middlebury

    import persp3d as p3
    from persp3d.datasets.captures import import_capture, read_capture
    from persp3d.datasets.multiview import MultiViewFolder
    from persp3d.train.data import in_unit_box, load_views

    src = write_middlebury(tmp_path / "src", make_rig(6))
    import_capture(read_capture(src, "middlebury"), tmp_path / "ds", id="ball", split="train",
                   silhouettes="threshold", threshold=(0.19, 2, 2))  # fmt: skip
    folder = MultiViewFolder(tmp_path / "ds", "train")
    box = folder[0]["box"]
    assert box != p3.VolumeBox()  # the capture's own units, away from the origin
    streamed = load_views(folder, 0, range(6), with_voxels=False)
    memory = InMemorySplit.from_dataset(folder).sample_views(0)
    assert streamed["box"] == p3.VolumeBox()
    centres = p3.VolumeBox().voxel_centers(32)  # (D, H, W, 3) in the box frame
    world = centres * box.size[0] + torch.tensor(box.center)  # back to the capture's world
    ball = ((world - torch.tensor(BALL_CENTER)).norm(dim=-1) < BALL_RADIUS).float()
    for sample in (streamed, memory):
        sil = p3.project(ball[None, None], sample["cameras"], depth_samples=96)[0]
        assert iou(sil, sample["silhouettes"]) > 0.9
    # the same volume placed in the capture's own box, seen by the stored cameras, agrees
    raw = folder[0]
    in_world = p3.project(ball[None, None], raw["cameras"], box=box, depth_samples=96)[0]
    in_frame = p3.project(ball[None, None], streamed["cameras"], depth_samples=96)[0]
    assert (in_world - in_frame).abs().max() < 1e-3
    assert in_unit_box(streamed) is streamed  # already in the box frame: unchanged

    # persp3d train reads the folder as it is (no voxels: silhouette supervision only)
    from persp3d.train.cli import main
    from persp3d.train.pipeline import Pipeline

    import_capture(read_capture(src, "middlebury"), tmp_path / "ds", id="ball-val", split="val",
                   silhouettes="threshold", threshold=(0.19, 2, 2))  # fmt: skip
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "ds"), "--out", str(out), "--max-steps", "2"]
    for o in [*TINY, "train.batch_size=2", "train.val_objects=1"]:
        argv += ["--set", o]
    assert main([*argv, "--no-progress", "--no-report"]) == 0
    assert Pipeline.from_run(out).state["step"] == 2
    val = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert 0.0 <= val[-1]["val_sil_iou"] <= 1.0 and "val_iou_3d" not in val[-1]


def test_hull_is_carved_from_all_views_cached_and_holds_the_object(tiny_data, monkeypatch):
    """The visual-hull target is exactly the set of voxel centres that every view seeing
    them puts inside its silhouette (checked here by projecting all centres, not through
    ``visual_hull``), and it is carved once per object and process."""
    from persp3d.train import data as data_module
    from persp3d.volume import VolumeBox

    cfg = DataConfig(root=str(tiny_data), kind="folder", voxel_resolution=16)
    dataset = build_dataset(cfg, "train", progress=False)
    samples = StepSamples(
        dataset,
        seed=0,
        views_per_step=2,
        input_kind="rgb",
        projection_size=8,
        with_voxels=True,
        hull_resolution=16,
    )
    calls = []
    real_load = data_module.load_views
    monkeypatch.setattr(
        data_module, "load_views", lambda *a, **k: calls.append(a[2]) or real_load(*a, **k)
    )
    centres = VolumeBox().voxel_centers((16, 16, 16)).reshape(-1, 3).double()
    for index in range(4):
        hull = samples[(index, 0, index)]["hull"]
        assert hull.shape == (1, 16, 16, 16) and set(hull.unique().tolist()) <= {0.0, 1.0}
        full = real_load(dataset, index, range(6), with_voxels=True)
        voxels = full["voxels"][0] > 0.5
        assert 0 < hull.sum() < 16**3 and (hull[0] > 0.5)[voxels].float().mean() > 0.6
        expected = torch.ones(16**3, dtype=torch.bool)
        for v in range(6):
            uv, depth = full["cameras"][v].project(centres)
            col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            seen = (depth > 0) & (col >= 0) & (col < 16) & (row >= 0) & (row < 16)
            sil = full["silhouettes"][v, 0]
            filled = sil[row.clamp(0, 15), col.clamp(0, 15)] > 0.5
            expected &= filled | ~seen
        assert torch.equal(hull.reshape(-1) > 0.5, expected)
        again = samples[(index, 5, 1)]["hull"]
        assert torch.equal(again, hull)
    # one read of all 6 views per object for its hull, then only the step's 3 views
    assert sum(len(list(v)) == 6 for v in calls) == 4
    plain = StepSamples(
        dataset, seed=0, views_per_step=2, input_kind="rgb", projection_size=8, with_voxels=False
    )
    assert "hull" not in plain[(0, 0, 0)]


def test_validation_subset_is_spread_over_every_category(tiny_data):
    """A split sorted by category: its first objects are all chairs; ``spread`` picks
    objects of both categories, remembers their indices, and reads the same samples."""
    cfg = DataConfig(root=str(tiny_data), kind="folder", voxel_resolution=16)
    train = build_dataset(cfg, "train", progress=False)
    first = InMemorySplit.from_dataset(train, 4)
    spread = InMemorySplit.from_dataset(train, 4, spread=True)
    assert set(first.categories) == {"chair"} and set(spread.categories) == {"chair", "mug"}
    n = len(train)
    assert spread.indices.tolist() == [0, n // 4, n // 2, 3 * n // 4]
    for row, index in enumerate(spread.indices.tolist()):
        assert spread.ids[row] == train[index]["id"]
        assert torch.equal(spread.voxels[row], (train[index]["voxels"] * 255).round().byte())
