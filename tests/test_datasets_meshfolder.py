"""Mesh folders: layouts, formats, bad files skipped (or strict errors), import + reading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import iou, write_mesh_folder

import persp3d as p3
from persp3d.datasets import (
    DataError,
    DataWarning,
    MeshFolder,
    MultiViewFolder,
    RenderConfig,
    check_sample,
    find_meshes,
    import_mesh_folder,
    load_dataset,
    load_mesh,
)

CONFIG = RenderConfig(n_views=3, image_size=32, voxel_resolutions=(32,), store_depth=False)
GOOD = {
    "chairs/a.obj": ("chair", 1),
    "chairs/sub/b.off": ("chair", 2),
    "mugs/c.ply": ("mug", 3),
    "mugs/d.stl": ("mug", 4),
    "e.glb": ("table", 5),
}


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory) -> Path:
    root = write_mesh_folder(tmp_path_factory.mktemp("meshes") / "things", GOOD)
    (root / "chairs" / "empty.obj").write_bytes(b"")
    (root / "mugs" / "corrupt.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\n\x00\x13garbage"
    )
    (root / "notes.obj").write_text("this is not a mesh\n")
    (root / "readme.txt").write_text("ignored: not a mesh extension\n")
    return root


def _skip_messages(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_flat_folder_finds_every_format_with_categories(mesh_dir):
    entries = find_meshes(mesh_dir)
    found = {(e.category, e.id) for e in entries}
    assert {
        ("chairs", "a.obj"),
        ("chairs", "sub__b.off"),
        ("mugs", "c.ply"),
        ("mugs", "d.stl"),
    } <= found
    assert ("things", "e.glb") in found  # files directly in the root take its name
    assert all(e.layout == "files" for e in entries) and len(entries) == 8


def test_bad_files_are_skipped_with_a_warning_each_and_a_summary(mesh_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = MeshFolder(mesh_dir, config=CONFIG)
    messages = _skip_messages(caught)
    assert len(ds) == 5
    assert any("empty.obj: empty file" in m for m in messages)
    assert any("corrupt.ply: not a readable mesh" in m for m in messages)
    assert any("notes.obj:" in m for m in messages)
    assert messages[-1].startswith("skipped 3 of 8 mesh files")
    with pytest.raises(DataError, match=r"(empty.obj|corrupt.ply|notes.obj)"):
        MeshFolder(mesh_dir, config=CONFIG, strict=True)


def test_meshes_are_normalised_rendered_and_voxelised(mesh_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = MeshFolder(mesh_dir, config=CONFIG)
    sample = ds[[e.id for e in ds.entries].index("a.obj")]
    assert check_sample(sample) == {"V": 3, "H": 32, "W": 32, "R": 32}
    assert sample["images"].shape == (3, 3, 32, 32) and sample["voxels"].shape == (1, 32, 32, 32)
    v, _, _ = load_mesh(mesh_dir / "chairs" / "a.obj")
    assert np.ptp(v, axis=0).max() > 2  # written unnormalised (x3 and shifted)
    projected = p3.project(sample["voxels"][None], sample["cameras"], depth_samples=64)[0]
    assert iou(projected, sample["silhouettes"]) > 0.8


def test_shapenet_v1_and_v2_layouts(tmp_path):
    root = tmp_path / "ShapeNetCore"
    write_mesh_folder(
        root,
        {
            "03001627/m1/model.obj": ("chair", 1),
            "03797390/m2/models/model_normalized.obj": ("mug", 2),
        },
    )
    (root / "03001627" / "m1" / "images").mkdir()  # extra folders are ignored
    entries = find_meshes(root)
    assert [(e.category, e.id, e.layout) for e in entries] == [
        ("chair", "m1", "shapenet-v1"),
        ("mug", "m2", "shapenet-v2"),
    ]
    single = find_meshes(root / "03001627")
    assert [(e.category, e.id) for e in single] == [("chair", "m1")]


def test_import_writes_a_dataset_folder_that_reads_back(mesh_dir, tmp_path):
    out = tmp_path / "imported"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = import_mesh_folder(mesh_dir, out, CONFIG, workers=0, progress=False)
    assert _skip_messages(caught)[-1].startswith("skipped 3 of 8 mesh files")
    assert manifest["complete"] and len(manifest["items"]) == 5
    assert {Path(s["source"]).name for s in manifest["skipped"]} == {
        "empty.obj",
        "corrupt.ply",
        "notes.obj",
    }
    ds = load_dataset(out, split="all")
    assert isinstance(ds, MultiViewFolder) and len(ds) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        direct = MeshFolder(mesh_dir, config=CONFIG)
    a = ds[[it["id"] for it in ds.items].index("c.ply")]
    b = direct[[e.id for e in direct.entries].index("c.ply")]
    assert (a["silhouettes"] == b["silhouettes"]).all()
    assert (a["voxels"] == b["voxels"]).all()
    # Importing again with the same parameters keeps every item.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        import_mesh_folder(mesh_dir, out, CONFIG, workers=0, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == before
    with pytest.raises(ValueError, match="already holds a dataset made otherwise"):
        import_mesh_folder(mesh_dir, out, RenderConfig(n_views=2), workers=0, progress=False)


def test_strict_import_stops_at_the_first_bad_file(mesh_dir, tmp_path):
    with pytest.raises(DataError, match="empty.obj: empty file"):
        import_mesh_folder(
            mesh_dir, tmp_path / "strict", CONFIG, strict=True, workers=0, progress=False
        )
    assert not list((tmp_path / "strict").rglob("*.tmp"))
