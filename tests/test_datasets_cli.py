"""``persp3d data make / import / info`` through the real entry point."""

from __future__ import annotations

import json

from _data_helpers import write_mesh_folder
from PIL import Image

from persp3d.train.cli import main

SMALL = ["--views", "2", "--image-size", "16", "--voxels", "8", "--workers", "0", "--no-progress"]


def test_make_procedural_then_info_with_contact_sheet(tmp_path, capsys):
    out = tmp_path / "proc"
    args = ["data", "make", "procedural", "--out", str(out), "--categories", "chair", "mug"]
    assert main([*args, "--per-category", "3", *SMALL]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["items"]) == 6
    assert manifest["config"]["categories"] == ["chair", "mug"]
    assert main(["data", "info", str(out), "--samples", "3"]) == 0
    text = capsys.readouterr().out
    assert "procedural dataset" in text and "objects: 6" in text and "train: " in text
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (4 * 16, 3 * 16)  # 2 views + 2 silhouettes per row, 3 rows
    # Same command, other parameters: refused without --overwrite.
    assert main([*args, "--per-category", "2", *SMALL]) == 1
    assert "other parameters (per_category)" in capsys.readouterr().err


def test_import_reports_bad_files_and_strict_fails(tmp_path, capsys):
    meshes = write_mesh_folder(tmp_path / "meshes", {"a.obj": ("chair", 0), "b.stl": ("car", 1)})
    (meshes / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n")
    out = tmp_path / "imported"
    assert main(["data", "import", str(meshes), "--out", str(out), *SMALL]) == 0
    captured = capsys.readouterr()
    assert "broken.off" in captured.err and "skipped 1 of 3 mesh files" in captured.err
    assert "2 meshes imported, 1 skipped" in captured.out
    assert main(["data", "info", str(out), "--no-sheet"]) == 0
    assert "meshes dataset" in capsys.readouterr().out
    strict = ["data", "import", str(meshes), "--out", str(tmp_path / "s"), "--strict", *SMALL]
    assert main(strict) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.off: not a readable mesh" in err


def test_info_on_a_missing_folder_is_an_error(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nothing")]) == 1
    assert "not a folder" in capsys.readouterr().err
