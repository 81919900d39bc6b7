"""The procedural shapes written in 3D-R2N2's layout (ShapeNetRendering + ShapeNetVox32).

A stand-in for the real data on the R2N2 path: :func:`write_r2n2_layout` -> folders that
:class:`persp3d.datasets.r2n2.R2N2` (and any 3D-R2N2 / PyTorch3D reader) reads, so the path
is tested end to end without ShapeNet, at any size.

Layout written (the published one, read from 3D-R2N2's ``tools/render_models.py``,
``lib/blender_renderer.py`` and ``lib/config.py``)::

    OUT/ShapeNetRendering/<synset>/<model_id>/rendering/00.png .. 23.png
    OUT/ShapeNetRendering/<synset>/<model_id>/rendering/renderings.txt
    OUT/ShapeNetRendering/<synset>/<model_id>/rendering/rendering_metadata.txt
    OUT/ShapeNetVox32/<synset>/<model_id>/model.binvox
    OUT/persp3d_r2n2_layout.json        (how it was made; not part of the published layout)

- Images: 137 x 137 RGBA PNG (3D-R2N2 rendered 127 + 10 pixels of crop margin), the alpha
  channel is the silhouette (one ray per pixel centre, so 0 or 255); the RGB under alpha 0
  is the white background, as in the published renders where it is not always black.
- ``renderings.txt``: the image file names, one a line. It is written last in each model
  folder, so a model with it is complete (an interrupted run resumes from there).
- ``rendering_metadata.txt``: one row per image, ``azimuth elevation yaw distance_ratio
  fov``, drawn as 3D-R2N2's ``render_models.py`` draws them: azimuth uniform in
  ``[0, 360)``, elevation in ``[25, 30)``, distance ratio in ``[0.65, 0.95)``, yaw written
  ``0`` and fov ``25`` (the renderer never used the fov; see :func:`persp3d.r2n2_cameras`).
- Cameras (DESIGN.md, R2N2 facts): at ``1.75 * distance_ratio`` from the origin, centre
  ``d * (cos(el) cos(az), sin(el), cos(el) sin(az))`` in ShapeNet's y-up frame, looking at
  the origin, upright, ``f = 2.1875 * W / 2`` pixels, principal point at the centre: the
  images are rendered with exactly the cameras :func:`persp3d.r2n2_cameras` makes of the
  rows written.
- Models: each procedural shape (the same shape as item ``index`` of the procedural dataset
  with the same seed) is moved and scaled as ShapeNet v1 normalises its models: bounding box
  centred at the origin, unit diagonal, +y up.
- Voxels: 32^3 ``.binvox`` (run-length encoded, y fastest, then z, then x, through
  :func:`persp3d.datasets.binvox.write_binvox`), header ``translate`` = the mesh's
  bounding-box minimum and ``scale`` = its longest side, voxels filling the cube of side
  ``scale`` centred on the model (as ShapeNetVox32): exact occupancy of the voxel centres.
- Categories: the procedural categories under their ShapeNet synset ids
  (:data:`LAYOUT_SYNSETS`: chair ``03001627``, table ``04379243``, ...), so
  ``categories=["chair"]`` and ``["03001627"]`` both select them; model ids are 32 hex
  digits like ShapeNet's, a hash of ``(seed, category, index)``.

Cost and the cheap mode: rendering 24 views costs about 0.3-1 s per object on one core
(Open3D ray casting), so 40,000 objects would take hours. ``distinct=K`` renders only the
first ``K`` objects of each category and writes every other object as a copy of object
``index % K`` of its category (its own files and model id; same images, metadata and
voxels), which costs a few milliseconds per object (26 files, about 140 KB): the layout,
the file sizes and the reading cost are those of the full set, only the number of different
shapes is smaller. Use it for loading benchmarks, not for training quality. Measured on a
shared 2-core machine, one process: 4,008 objects (12 categories x 334, ``distinct=10``: 120
renders) in 103 s and 545 MB; 40,000 objects would take about 7 minutes and 5.5 GB
(``workers`` splits the work by rendered object).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from persp3d.datasets.shapenet import SYNSETS
from persp3d.datasets.shapes import CATEGORIES, Part, Shape, item_seed, make_shape

__all__ = [
    "LAYOUT_FILE",
    "LAYOUT_SYNSETS",
    "R2N2_VIEWPOINT_RANGES",
    "draw_viewpoints",
    "layout_model_id",
    "r2n2_layout_model",
    "shapenet_normalized",
    "write_r2n2_layout",
]

LAYOUT_SYNSETS: dict[str, str] = {
    name: synset for synset, name in SYNSETS.items() if name in CATEGORIES
}
"""Procedural category name -> ShapeNet synset id (every procedural category has one)."""

R2N2_VIEWPOINT_RANGES: dict[str, tuple[float, float]] = {
    "azimuth": (0.0, 360.0),
    "elevation": (25.0, 30.0),
    "distance_ratio": (0.65, 0.95),
}
"""Uniform ranges of 3D-R2N2's ``tools/render_models.py`` (``[360, 5, 0.3] * rand + [0, 25,
0.65]``); yaw is written 0 and fov 25."""

LAYOUT_FILE = "persp3d_r2n2_layout.json"
_FORMAT = "persp3d-r2n2-layout"
_VERSION = 1
_VOXELS = 32


def layout_model_id(seed: int, category: str, index: int) -> str:
    """The 32-hex-digit model id of object ``index`` of ``category`` (like ShapeNet's ids)."""
    return hashlib.md5(f"persp3d/{int(seed)}/{category}/{int(index)}".encode()).hexdigest()


def draw_viewpoints(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 5)`` rows ``azimuth elevation yaw distance_ratio fov`` drawn as 3D-R2N2 drew
    them (see :data:`R2N2_VIEWPOINT_RANGES`); degrees."""
    lo = np.array([R2N2_VIEWPOINT_RANGES[k][0] for k in ("azimuth", "elevation", "distance_ratio")])
    hi = np.array([R2N2_VIEWPOINT_RANGES[k][1] for k in ("azimuth", "elevation", "distance_ratio")])
    draw = lo + (hi - lo) * rng.random((int(n), 3))  # (n, 3) az, el, ratio
    rows = np.zeros((int(n), 5))
    rows[:, 0], rows[:, 1], rows[:, 3] = draw[:, 0], draw[:, 1], draw[:, 2]
    rows[:, 4] = 25.0
    return rows


def shapenet_normalized(shape: Shape) -> Shape:
    """``shape`` moved and scaled as ShapeNet v1 normalises models: mesh bounding box centred
    at the origin, unit diagonal (the frame stays y-up)."""
    lo, hi = shape.bounds()
    scale = 1.0 / float(np.linalg.norm(hi - lo))
    offset = -scale * (lo + hi) / 2.0
    parts = [Part(p.primitive.transformed(scale, offset), p.name, p.color) for p in shape.parts]
    return Shape(parts, shape.category, shape.seed, shape.thin_parts)


def r2n2_layout_model(
    category: str, index: int, *, seed: int = 0, views: int = 24, image_size: int = 137
) -> dict[str, Any]:
    """The files of one object, in memory.

    Returns:
        ``{"synset", "id", "pngs": [bytes] * views, "renderings": str, "metadata": str,
        "binvox": ((32, 32, 32) bool [x, z, y], translate (3,), scale), "rows": (views, 5)}``.
    """
    from persp3d.cameras import r2n2_cameras
    from persp3d.datasets.binvox import volume_to_binvox
    from persp3d.datasets.multiview import torch_threads
    from persp3d.datasets.render import render_mesh
    from persp3d.volume import VolumeBox

    item = item_seed(seed, category, index)
    shape = shapenet_normalized(make_shape(category, item))
    rows = draw_viewpoints(np.random.default_rng(item), views)
    vertices, faces, colors = shape.mesh()
    with torch_threads(1):
        cameras = r2n2_cameras(rows, (image_size, image_size))
        out = render_mesh(vertices, faces, cameras, colors, background=1.0)
    rgb = out.images.permute(0, 2, 3, 1).numpy()  # (V, H, W, 3)
    alpha = out.silhouettes.permute(0, 2, 3, 1).numpy()  # (V, H, W, 1)
    rgba = np.clip(np.concatenate([rgb, alpha], -1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    lo, hi = shape.bounds()
    side = float((hi - lo).max())
    # ShapeNetVox32: a cube of side `scale` centred on the model (at the origin).
    volume = shape.voxels(_VOXELS, box=VolumeBox((0.0, 0.0, 0.0), side))[0] > 0.5  # (z, y, x)
    names = [f"{v:02d}.png" for v in range(views)]
    return {
        "synset": LAYOUT_SYNSETS[category],
        "id": layout_model_id(seed, category, index),
        "pngs": [_png_bytes(img) for img in rgba],
        "renderings": "".join(n + "\n" for n in names),
        "metadata": "".join(
            f"{r[0]:.12g} {r[1]:.12g} 0 {r[3]:.12g} 25\n" for r in rows
        ),  # as render_models.py writes them: yaw '0', fov '25'
        "binvox": (volume_to_binvox(volume), tuple(float(x) for x in lo), side),
        "rows": rows,
    }


def _png_bytes(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_model(root: Path, model: dict[str, Any], model_id: str) -> None:
    from persp3d.datasets.binvox import write_binvox

    render_dir = root / "ShapeNetRendering" / model["synset"] / model_id / "rendering"
    render_dir.mkdir(parents=True, exist_ok=True)
    for v, data in enumerate(model["pngs"]):
        (render_dir / f"{v:02d}.png").write_bytes(data)
    (render_dir / "rendering_metadata.txt").write_text(model["metadata"])
    vox_path = root / "ShapeNetVox32" / model["synset"] / model_id / "model.binvox"
    if "binvox_bytes" in model:  # a copy (distinct mode): the same bytes, encoded once
        vox_path.parent.mkdir(parents=True, exist_ok=True)
        vox_path.write_bytes(model["binvox_bytes"])
    else:
        grid, translate, scale = model["binvox"]
        write_binvox(vox_path, grid, translate, scale)
        model["binvox_bytes"] = vox_path.read_bytes()
    (render_dir / "renderings.txt").write_text(model["renderings"])  # last: the model is whole


def _is_complete(root: Path, synset: str, model_id: str) -> bool:
    return (
        root / "ShapeNetRendering" / synset / model_id / "rendering" / "renderings.txt"
    ).is_file() and (root / "ShapeNetVox32" / synset / model_id / "model.binvox").is_file()


def _run_task(root: str, config: dict, category: str, source: int, targets: list[int]) -> int:
    model = r2n2_layout_model(
        category, source, seed=config["seed"], views=config["views"],
        image_size=config["image_size"],
    )  # fmt: skip
    for index in targets:
        _write_model(Path(root), model, layout_model_id(config["seed"], category, index))
    return len(targets)


def write_r2n2_layout(
    out: str | os.PathLike,
    categories: Sequence[str] | None = None,
    per_category: int = 4,
    *,
    seed: int = 0,
    views: int = 24,
    image_size: int = 137,
    distinct: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write procedural shapes in the ShapeNetRendering + ShapeNetVox32 layout (see the module).

    Args:
        out: folder to hold ``ShapeNetRendering/`` and ``ShapeNetVox32/`` (created).
        categories: procedural category names or their synset ids (default: all of
            :data:`LAYOUT_SYNSETS`).
        per_category: objects per category.
        seed: seed of the shapes, viewpoints and model ids (the shapes are those of the
            procedural dataset with the same seed).
        views: images per object (24 in the published data).
        image_size: image side in pixels; 137 is the published size and the only one
            :class:`~persp3d.datasets.r2n2.R2N2` accepts.
        distinct: render only this many objects per category and write the others as copies
            of object ``index % distinct`` (the cheap mode, for loading benchmarks);
            ``None`` renders every object.
        workers: processes; ``None``: one per core (up to 8) when there are 64 renders or
            more, else this process.
        overwrite: replace a layout written by this function with other parameters (never
            a folder it did not write).
        progress: show a progress bar (tqdm).

    Returns:
        ``{"root", "models", "written", "per_category": {synset: n}, "seconds"}``; ``written``
        counts the models written by this call (complete models of an earlier run with the
        same parameters are kept).

    Raises:
        ValueError: an unknown category, a bad count or size, or ``out`` holding other data.
    """
    start = time.monotonic()
    by_synset = {s: c for c, s in LAYOUT_SYNSETS.items()}
    names = (
        list(LAYOUT_SYNSETS) if categories is None else [by_synset.get(c, c) for c in categories]
    )
    unknown = [c for c in names if c not in LAYOUT_SYNSETS]
    if unknown or not names:
        raise ValueError(
            f"categories must be names or synset ids of {sorted(LAYOUT_SYNSETS.items())}; "
            f"got {unknown or list(categories or [])}"
        )
    names = list(dict.fromkeys(names))
    for key, value, least in (("per_category", per_category, 1), ("views", views, 1),
                              ("image_size", image_size, 8)):  # fmt: skip
        if int(value) < least:
            raise ValueError(f"{key} must be >= {least}; got {value}")
    if distinct is not None and int(distinct) < 1:
        raise ValueError(f"distinct must be >= 1 or None; got {distinct}")
    config = {
        "format": _FORMAT,
        "version": _VERSION,
        "seed": int(seed),
        "views": int(views),
        "image_size": int(image_size),
        "distinct": None if distinct is None else int(distinct),
    }
    root = Path(out)
    _claim(root, config, overwrite)

    tasks: list[tuple[str, int, list[int]]] = []
    total = 0
    for category in names:
        synset = LAYOUT_SYNSETS[category]
        k = per_category if distinct is None else min(int(distinct), per_category)
        groups: dict[int, list[int]] = {}
        for index in range(per_category):
            total += 1
            if not _is_complete(root, synset, layout_model_id(seed, category, index)):
                groups.setdefault(index % k, []).append(index)
        tasks += [(category, source, targets) for source, targets in groups.items()]
    written = _run_tasks(root, config, tasks, workers, progress)
    return {
        "root": root,
        "models": total,
        "written": written,
        "per_category": {LAYOUT_SYNSETS[c]: per_category for c in names},
        "seconds": time.monotonic() - start,
    }


def _claim(root: Path, config: dict, overwrite: bool) -> None:
    """Check ``root`` is empty or ours with the same parameters; record the parameters."""
    meta = root / LAYOUT_FILE
    data_dirs = [root / "ShapeNetRendering", root / "ShapeNetVox32"]
    if meta.is_file():
        try:
            old = json.loads(meta.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{meta}: unreadable ({err}); remove the folder") from err
        if not isinstance(old, dict) or old.get("format") != _FORMAT:
            raise ValueError(f"{meta}: not a {_FORMAT} file; choose another folder")
        if old != config:
            if not overwrite:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise ValueError(
                    f"{root} holds an R2N2 layout made with other parameters "
                    f"({', '.join(diff)}); use another folder or overwrite=True (--overwrite)"
                )
            for d in data_dirs:
                shutil.rmtree(d, ignore_errors=True)
    elif any(d.exists() for d in data_dirs):
        raise ValueError(
            f"{root} already holds ShapeNetRendering/ShapeNetVox32 data not written by "
            "write_r2n2_layout; choose another folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(config, indent=1) + "\n")


def _run_tasks(root: Path, config: dict, tasks: list, workers: int | None, progress: bool) -> int:
    from tqdm.auto import tqdm

    from persp3d.datasets.multiview import resolve_workers, worker_init

    n_models = sum(len(t[2]) for t in tasks)
    workers = resolve_workers(workers, len(tasks))
    bar = tqdm(total=n_models, desc=f"R2N2 layout -> {root}", unit="obj", disable=not progress)
    done = 0
    with bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                n = _run_task(str(root), config, *task)
                done += n
                bar.update(n)
            return done
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=worker_init
        ) as pool:
            futures = [pool.submit(_run_task, str(root), config, *t) for t in tasks]
            try:
                for fut in as_completed(futures):
                    n = fut.result()
                    done += n
                    bar.update(n)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    return done
