"""Fixture generators for the dataset tests: mesh folders, a fake 3D-R2N2 folder, IoU.

The fake R2N2 writer states the formats independently of the readers under test: its
cameras are built here from 3D-R2N2's renderer (Blender, 35 mm lens on a 32 mm sensor,
camera at ``1.75 * distance_ratio``), and its ``.binvox`` files are laid out and
run-length encoded here, y fastest, then z, then x, as ShapeNetVox32 stores them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

import persp3d as p3
from persp3d.datasets.render import render_mesh
from persp3d.datasets.shapes import Part, Shape, make_shape

R2N2_SIZE = 137


def iou(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of two masks thresholded at ``threshold``."""
    a, b = a > threshold, b > threshold
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def shapenet_like(category: str, seed: int) -> Shape:
    """A procedural shape scaled as ShapeNet v1 models are: bounding box centred at the
    origin with unit diagonal."""
    shape = make_shape(category, seed, max_radius=None)
    lo, hi = shape.bounds()
    scale = 1.0 / float(np.linalg.norm(hi - lo))
    offset = -scale * (lo + hi) / 2.0
    parts = [Part(p.primitive.transformed(scale, offset), p.name, p.color) for p in shape.parts]
    return Shape(parts, shape.category, shape.seed)


def r2n2_blender_cameras(rows: np.ndarray, size: int = R2N2_SIZE) -> p3.Cameras:
    """Cameras of 3D-R2N2's renderer for metadata ``rows`` (N, 5), built from scratch."""
    Ks, Rs, ts = [], [], []
    for az, el, _yaw, ratio, _fov in rows:
        a, e = math.radians(az), math.radians(el)
        d = 1.75 * ratio
        eye = d * np.array([math.cos(e) * math.cos(a), math.sin(e), math.cos(e) * math.sin(a)])
        forward = -eye / np.linalg.norm(eye)
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        R = np.stack([right, down, forward])
        Rs.append(R)
        ts.append(-R @ eye)
        f = 35.0 / 32.0 * size  # 35 mm lens, 32 mm sensor width
        Ks.append([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    as_t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return p3.Cameras(as_t(Ks), as_t(Rs), as_t(ts), (size, size))


def binvox_bytes(shape: Shape, dim: int = 32) -> bytes:
    """ShapeNetVox32-style ``.binvox`` of ``shape``: the cube of side = the longest side of
    its bounding box, centred on it; stored with y fastest, then z, then x."""
    lo, hi = shape.bounds()
    side = float((hi - lo).max())
    corner = (lo + hi) / 2.0 - side / 2.0
    idx = (np.arange(dim) + 0.5) * side / dim
    x, z, y = np.meshgrid(idx, idx, idx, indexing="ij")  # loops: x outer, z, y inner
    points = corner + np.stack([x, y, z], -1).reshape(-1, 3)
    flat = shape.inside(points).astype(np.uint8)  # order: x slowest, y fastest
    runs = []
    value, count = int(flat[0]), 0
    for v in flat.tolist():
        if v == value and count < 255:
            count += 1
        else:
            runs += [value, count]
            value, count = v, 1
    runs += [value, count]
    header = (
        f"#binvox 1\ndim {dim} {dim} {dim}\ntranslate {lo[0]:.6f} {lo[1]:.6f} {lo[2]:.6f}\n"
        f"scale {side:.6f}\ndata\n"
    ).encode()
    return header + bytes(runs)


def make_fake_r2n2(
    root: Path,
    models: list[tuple[str, str, str, int]],
    n_views: int = 24,
    seed: int = 0,
) -> Path:
    """Write ``root/ShapeNetRendering`` and ``root/ShapeNetVox32`` for ``models``
    (synset, category, model_id, shape seed); returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for synset, category, model_id, shape_seed in models:
        shape = shapenet_like(category, shape_seed)
        rows = np.stack(
            [
                rng.uniform(0, 360, n_views),
                rng.uniform(20, 40, n_views),
                np.zeros(n_views),
                rng.uniform(0.65, 0.95, n_views),
                np.full(n_views, 25.0),
            ],
            -1,
        )
        cams = r2n2_blender_cameras(rows)
        v, f, c = shape.mesh()
        out = render_mesh(v, f, cams, c, background=0.0)
        render_dir = root / "ShapeNetRendering" / synset / model_id / "rendering"
        render_dir.mkdir(parents=True)
        for i in range(n_views):
            rgb = (out.images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            alpha = (out.silhouettes[i, 0].numpy() * 255).astype(np.uint8)
            rgb[alpha == 0] = (12, 200, 40)  # junk under alpha 0, as in some real renders
            Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(render_dir / f"{i:02d}.png")
        lines = [f"{r[0]:.6f} {r[1]:.6f} {r[2]:g} {r[3]:.4f} {r[4]:g}" for r in rows]
        (render_dir / "rendering_metadata.txt").write_text("\n".join(lines) + "\n")
        (render_dir / "renderings.txt").write_text(
            "\n".join(f"{i:02d}.png" for i in range(n_views)) + "\n"
        )
        vox_path = root / "ShapeNetVox32" / synset / model_id / "model.binvox"
        vox_path.parent.mkdir(parents=True)
        vox_path.write_bytes(binvox_bytes(shape))
    return root


def write_mesh_folder(root: Path, items: dict[str, tuple[str, int]]) -> Path:
    """Write procedural shapes as mesh files: ``{relative path: (category, seed)}``; the
    extension picks the format (obj, off, ply, stl, glb)."""
    import trimesh

    for rel, (category, seed) in items.items():
        v, f, _ = make_shape(category, seed).mesh()
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        trimesh.Trimesh(v * 3.0 + 1.0, f, process=False).export(path)  # not normalised
    return root
