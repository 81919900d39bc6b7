"""The procedural dataset and its cache: determinism, splits, resume, corruption, samples."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from persp3d.datasets import (
    CorruptCacheError,
    DataWarning,
    MultiViewFolder,
    ProceduralConfig,
    ProceduralShapes,
    assign_splits,
    check_sample,
    collate,
    generate_procedural,
    load_dataset,
)
from persp3d.datasets import procedural as procedural_module
from persp3d.datasets.cache import file_sha256, npz_bytes, read_item

SMALL = {
    "categories": ("chair", "mug", "table"),
    "per_category": 4,
    "n_views": 3,
    "image_size": 20,
    "voxel_resolutions": (8, 16),
}


def small(**changes) -> ProceduralConfig:
    return ProceduralConfig(**{**SMALL, **changes})


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*.npz"))}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("procedural")
    generate_procedural(root, small(), workers=0, progress=False)
    return root


def test_generation_is_byte_identical_for_the_same_seed(made, tmp_path):
    generate_procedural(tmp_path / "again", small(), workers=0, progress=False)
    assert _digests(made) == _digests(tmp_path / "again")
    assert len(_digests(made)) == 12
    other = tmp_path / "seed1"
    generate_procedural(other, small(seed=1, per_category=1), workers=0, progress=False)
    assert (
        _digests(other)["items/chair/chair_00000.npz"]
        != _digests(made)["items/chair/chair_00000.npz"]
    )


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(made, tmp_path):
    generate_procedural(tmp_path / "pool", small(), workers=2, progress=False)
    assert _digests(made) == _digests(tmp_path / "pool")


def test_items_do_not_change_when_the_dataset_grows(made, tmp_path):
    generate_procedural(tmp_path / "big", small(per_category=6), workers=0, progress=False)
    big = _digests(tmp_path / "big")
    assert all(big[name] == digest for name, digest in _digests(made).items())


def test_splits_are_disjoint_cover_everything_and_are_stable(made):
    ids = {
        s: {it["id"] for it in ProceduralShapes(made, s, generate=False).items}
        for s in ("train", "val", "test")
    }
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    everything = {it["id"] for it in ProceduralShapes(made, "all", generate=False).items}
    assert ids["train"] | ids["val"] | ids["test"] == everything
    keys = [("chair", f"chair_{i:05d}") for i in range(10)]
    splits = assign_splits(keys)
    assert assign_splits(keys[::-1]) == splits  # independent of the order found
    # Pinned: a change here reshuffles everyone's splits.
    assert [k[1][-1] for k in keys if splits[k] != "train"] == ["5", "6"]
    assert sorted(splits.values()).count("train") == 8


def test_samples_follow_the_contract_and_collate_batches_cameras(made):
    ds = ProceduralShapes(made, "all", generate=False, voxel_resolution=16, with_depth=True)
    sample = ds[0]
    sizes = check_sample(sample)
    assert sizes == {"V": 3, "H": 20, "W": 20, "R": 16}
    assert sample["images"].dtype == torch.float32 and 0 <= sample["images"].min() <= 1
    assert set(sample["silhouettes"].unique().tolist()) <= {0.0, 1.0}
    assert sample["category"] == "chair" and sample["id"] == "chair_00000"
    assert (sample["depth"][sample["silhouettes"] > 0] > 0).all()
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["images"].shape == (4, 3, 3, 20, 20)
    assert batch["silhouettes"].shape == (4, 3, 1, 20, 20)
    assert tuple(batch["cameras"].batch_shape) == (4, 3)
    assert batch["voxels"].shape == (4, 1, 16, 16, 16)
    assert batch["category"] == ["chair"] * 4
    assert "voxels" not in ProceduralShapes(made, "all", generate=False, voxel_resolution=0)[0]


def test_stored_silhouettes_are_the_projection_of_stored_cameras(made):
    # The cameras stored with an item are those it was rendered with.
    from persp3d.datasets.render import render_mesh
    from persp3d.datasets.shapes import item_seed, make_shape

    sample = ProceduralShapes(made, "all", generate=False)[5]
    index = int(sample["id"].rsplit("_", 1)[1])
    v, f, _ = make_shape(sample["category"], item_seed(0, sample["category"], index)).mesh()
    again = render_mesh(v, f, sample["cameras"]).silhouettes
    assert (again != sample["silhouettes"]).float().mean() < 0.002


def test_interrupted_generation_resumes_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    real = procedural_module._make_one
    calls = []

    def flaky(*args):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(args[2]["id"])
        return real(*args)

    monkeypatch.setattr(procedural_module, "_make_one", flaky)
    root = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        generate_procedural(root, small(), workers=0, progress=False)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert sum(1 for it in manifest["items"] if it["sha256"]) == 5
    assert not list(root.rglob("*.tmp"))
    with pytest.warns(DataWarning, match="incomplete"):
        assert len(MultiViewFolder(root, "all")) == 5
    first = {p: p.stat().st_mtime_ns for p in root.rglob("*.npz")}
    stale = root / "items" / "mug" / ".mug_00003.npz.x1y2.tmp"  # as a killed writer leaves
    stale.write_bytes(b"partial")
    calls.clear()
    monkeypatch.setattr(
        procedural_module, "_make_one", lambda *a: (calls.append(a[2]["id"]), real(*a))[1]
    )
    generate_procedural(root, small(), workers=0, progress=False)
    assert len(calls) == 7  # only the missing items
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())
    assert not stale.exists()
    assert json.loads((root / "manifest.json").read_text())["complete"] is True
    assert _digests(root) == _digests(_fresh(tmp_path))


def _fresh(tmp_path: Path) -> Path:
    root = tmp_path / "fresh"
    if not root.exists():
        generate_procedural(root, small(), workers=0, progress=False)
    return root


def test_corrupt_item_is_detected_and_rebuilt(tmp_path):
    root = _fresh(tmp_path)
    good = _digests(root)
    victim = root / "items" / "mug" / "mug_00002.npz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    # A plain reader refuses it, naming the file.
    reader = MultiViewFolder(root, "all")
    index = [it["file"] for it in reader.items].index("items/mug/mug_00002.npz")
    with pytest.raises(CorruptCacheError, match="mug_00002.npz: checksum mismatch"):
        reader[index]
    # The procedural dataset regenerates it when read ...
    with pytest.warns(DataWarning, match="mug_00002.npz: checksum mismatch"):
        sample = ProceduralShapes(root, "all", generate=False)[index]
    assert sample["id"] == "mug_00002"
    assert _digests(root) == good
    # ... and when opened.
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.warns(DataWarning, match="mug_00002.npz: missing or corrupt item; rebuilding"):
        ProceduralShapes(root, "all", progress=False)
    assert _digests(root) == good


@pytest.mark.parametrize(
    "damage, message",
    [
        ("{not json", "unreadable manifest"),
        ('{"format": "persp3d-multiview", "version": 99}', "version 99"),
    ],
)
def test_unreadable_or_other_version_manifest_is_rebuilt(tmp_path, damage, message):
    root = _fresh(tmp_path)
    good = _digests(root)
    (root / "manifest.json").write_text(damage)
    with pytest.raises(CorruptCacheError, match=message):
        MultiViewFolder(root, "all")
    with pytest.raises(CorruptCacheError, match="pass the dataset's config to rebuild it"):
        ProceduralShapes(root, "all", progress=False)
    with pytest.warns(DataWarning, match=message):
        ds = ProceduralShapes(root, "all", small(), progress=False)
    assert len(ds) == 12 and _digests(root) == good


def test_other_parameters_in_the_folder_raise_unless_overwritten(tmp_path):
    root = _fresh(tmp_path)
    with pytest.raises(ValueError, match=r"other parameters \(image_size, per_category\)"):
        generate_procedural(root, small(per_category=2, image_size=16), workers=0, progress=False)
    generate_procedural(root, small(per_category=1), workers=0, progress=False, overwrite=True)
    assert len(ProceduralShapes(root, "all", generate=False)) == 3


def test_load_dataset_reads_generated_folders(made):
    ds = load_dataset(made, split="test")
    assert isinstance(ds, ProceduralShapes) and len(ds) > 0
    with pytest.raises(FileNotFoundError, match="not a folder, nor a dataset name"):
        load_dataset(made / "nope")


def test_item_files_hold_no_pickles_and_are_reproducible_bytes(made):
    path = next(made.rglob("*.npz"))
    arrays = read_item(path)
    assert {"images", "silhouettes", "depth", "K", "R", "t", "voxels_8", "voxels_16"} <= set(arrays)
    assert arrays["images"].dtype == np.uint8 and arrays["depth"].dtype == np.float16
    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["category"]) in SMALL["categories"]
    assert npz_bytes(arrays) == npz_bytes(dict(reversed(arrays.items())))
    with pytest.raises(TypeError, match="dtype object"):
        npz_bytes({"x": np.array([{}], dtype=object)})


def test_random_elevations_and_jitter_are_seeded(tmp_path):
    cfg = small(categories=("car",), per_category=1, elevation_range=(10.0, 50.0), jitter=5.0)
    generate_procedural(tmp_path / "a", cfg, workers=0, progress=False)
    cams = ProceduralShapes(tmp_path / "a", "all", generate=False)[0]["cameras"]
    elevation = torch.rad2deg(torch.asin(cams.centers[:, 1] / cams.centers.norm(dim=-1)))
    assert elevation.min() >= 5 and elevation.max() <= 55 and elevation.std() > 1
    generate_procedural(tmp_path / "b", cfg, workers=0, progress=False)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_config_is_checked():
    with pytest.raises(ValueError, match="categories must be a non-empty subset"):
        ProceduralConfig(categories=("dragon",))
    with pytest.raises(ValueError, match="per_category must be >= 1"):
        ProceduralConfig(per_category=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ProceduralConfig.from_dict(ProceduralConfig().to_dict()) == ProceduralConfig()
