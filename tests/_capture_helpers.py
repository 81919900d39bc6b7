"""Fixture generators for the capture tests: a ball away from the origin seen by known
cameras (non-square images, off-centre principal point, fx != fy), rendered analytically
(ray-sphere tests at pixel centres, independent of persp3d's projection), and writers of the
Middlebury, DTU/IDR and ShapeNetRendering layouts from those cameras.

The writers state each format's convention here, independently of the readers: Middlebury
and IDR put pixel centres at integers (``cx_file = cx_persp3d - 0.5``); IDR stores
``world_mat = [K [R | t]; 0 0 0 1]`` (any non-zero scale) and ``scale_mat`` mapping the unit
sphere onto the object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BALL_CENTER = np.array([0.7, -0.4, 1.2])
BALL_RADIUS = 0.3
SIZE = (48, 64)  # (H, W): non-square


@dataclass
class Rig:
    K: np.ndarray  # (V, 3, 3) persp3d convention (pixel centres at +0.5)
    R: np.ndarray  # (V, 3, 3)
    t: np.ndarray  # (V, 3)
    size: tuple[int, int]


def look_at_np(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)):
    """World->camera ``R, t`` (OpenCV axes: +z toward the target, +y down in the image)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))  # right = forward x up
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ eye


def make_rig(n_views: int = 8, size=SIZE, distance: float = 1.5, seed: int = 0) -> Rig:
    """Cameras around the ball: a ring at varied elevations, each with its own off-centre
    principal point and ``fx != fy``."""
    rng = np.random.default_rng(seed)
    H, W = size
    Ks, Rs, ts = [], [], []
    for v in range(n_views):
        az = 2 * math.pi * v / n_views + 0.2
        el = math.radians(25.0 * math.sin(1.7 * v) + 10)
        eye = BALL_CENTER + distance * np.array(
            [math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)]
        )
        R, t = look_at_np(eye, BALL_CENTER + rng.normal(0, 0.03, 3))
        f = 1.6 * W / 2
        K = np.array(
            [
                [f * 1.03, 0.0, W / 2 + 3.25 + rng.uniform(-1, 1)],
                [0.0, f, H / 2 - 2.5 + rng.uniform(-1, 1)],
                [0.0, 0.0, 1.0],
            ]
        )
        Ks.append(K)
        Rs.append(R)
        ts.append(t)
    return Rig(np.stack(Ks), np.stack(Rs), np.stack(ts), (H, W))


def render_ball(
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    size: tuple[int, int],
    center=BALL_CENTER,
    radius: float = BALL_RADIUS,
    supersample: int = 1,
) -> np.ndarray:
    """``(H, W)`` float coverage of the ball: the fraction of ``supersample^2`` sub-pixel
    centres (persp3d convention: pixel (j, i) spans ``[i, i+1) x [j, j+1)``) whose ray hits
    the sphere."""
    H, W = size
    s = supersample
    sub = (np.arange(s) + 0.5) / s
    u = (np.arange(W)[:, None] + sub[None, :]).reshape(-1)  # (W*s,)
    v = (np.arange(H)[:, None] + sub[None, :]).reshape(-1)  # (H*s,)
    uu, vv = np.meshgrid(u, v)  # (H*s, W*s)
    pix = np.stack([uu, vv, np.ones_like(uu)], -1).reshape(-1, 3)
    dirs = (R.T @ np.linalg.solve(K, pix.T)).T  # (N, 3) world
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origin = -R.T @ t
    oc = np.asarray(center) - origin
    along = dirs @ oc
    dist2 = oc @ oc - along**2
    hit = (dist2 <= radius**2) & (along > 0)
    return hit.reshape(H, s, W, s).mean(axis=(1, 3)) if s > 1 else hit.reshape(H, W).astype(float)


def ball_volume(box, resolution: int = 32, center=BALL_CENTER, radius=BALL_RADIUS) -> torch.Tensor:
    """``(1, 1, R, R, R)`` occupancy of the ball in ``box`` (voxel fractions, 3^3 samples)."""
    s = 3
    n = resolution * s
    lo = np.asarray(box.min)
    step = np.asarray(box.size) / n
    g = [lo[a] + (np.arange(n) + 0.5) * step[a] for a in range(3)]
    z, y, x = np.meshgrid(g[2], g[1], g[0], indexing="ij")
    inside = (x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2 <= radius**2
    occ = inside.reshape(resolution, s, resolution, s, resolution, s).mean(axis=(1, 3, 5))
    return torch.from_numpy(occ.astype(np.float32))[None, None]


def project_points(K, R, t, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` pixel coordinates of world points (persp3d convention)."""
    cam = points @ np.asarray(R).T + np.asarray(t)
    pix = cam @ np.asarray(K).T
    return pix[:, :2] / pix[:, 2:3]


def iou(a, b, threshold: float = 0.5) -> float:
    a = np.asarray(a) > threshold
    b = np.asarray(b) > threshold
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def save_png(path: Path, array: np.ndarray) -> Path:
    """Save ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` floats in [0, 1] as an 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


def shaded(mask: np.ndarray, fg=(0.85, 0.6, 0.4), bg=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``(H, W, 3)`` image: colour ``fg`` on the object, ``bg`` elsewhere."""
    m = mask[..., None]
    return m * np.asarray(fg) + (1 - m) * np.asarray(bg)


# -- format writers ---------------------------------------------------------------------------
def write_middlebury(root: Path, rig: Rig, name: str = "ball") -> Path:
    """``<name>_par.txt`` (integer pixel centres) and ``<name>NNNN.png``: the ball lit on black."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [str(len(rig.K))]
    for v in range(len(rig.K)):
        K = rig.K[v].copy()
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        img = f"{name}{v + 1:04d}.png"
        save_png(root / img, shaded(render_ball(rig.K[v], rig.R[v], rig.t[v], rig.size)))
        values = [*K.reshape(-1), *rig.R[v].reshape(-1), *rig.t[v]]
        lines.append(img + " " + " ".join(f"{x:.17g}" for x in values))
    par = root / f"{name}_par.txt"
    par.write_text("\n".join(lines) + "\n")
    return par


def write_dtu(root: Path, rig: Rig, box_center=BALL_CENTER, box_radius=0.4) -> Path:
    """IDR layout: ``image/NNN.png``, ``mask/NNN.png``, ``cameras.npz`` with
    ``world_mat_i = lambda_i [K_int [R | t]; 0 0 0 1]`` (random non-zero scales, some
    negative) and ``scale_mat_i`` mapping the unit sphere to ``(box_center, box_radius)``."""
    rng = np.random.default_rng(3)
    arrays = {}
    scale_mat = np.eye(4)
    scale_mat[:3, :3] *= box_radius
    scale_mat[:3, 3] = box_center
    for v in range(len(rig.K)):
        K = rig.K[v].copy()
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        P = K @ np.concatenate([rig.R[v], rig.t[v][:, None]], axis=1)
        lam = rng.uniform(0.5, 3.0) * (-1 if v % 3 == 1 else 1)
        world = np.eye(4)
        world[:3] = lam * P
        arrays[f"world_mat_{v}"] = world
        arrays[f"scale_mat_{v}"] = scale_mat
        mask = render_ball(rig.K[v], rig.R[v], rig.t[v], rig.size)
        save_png(root / "image" / f"{v:03d}.png", shaded(mask, bg=(0.3, 0.3, 0.35)))
        save_png(root / "mask" / f"{v:03d}.png", np.repeat(mask[..., None], 3, axis=2))
    np.savez(root / "cameras.npz", **arrays)
    return root


R2N2_FOCAL = 35.0 / 32.0 * 2.0  # Blender's 35 mm lens on a 32 mm sensor, in NDC units


def r2n2_rig(rows: np.ndarray, size: int = 137) -> Rig:
    """3D-R2N2's renderer cameras, stated independently of persp3d: camera at
    ``1.75 * ratio * (cos(el) cos(az), sin(el), cos(el) sin(az))`` looking at the origin,
    upright (+y), ``f = 2.1875 * W / 2``, centred principal point."""
    Ks, Rs, ts = [], [], []
    for az, el, _yaw, ratio, _fov in rows:
        a, e = math.radians(az), math.radians(el)
        eye = (
            1.75
            * ratio
            * np.array([math.cos(e) * math.cos(a), math.sin(e), math.cos(e) * math.sin(a)])
        )
        R, t = look_at_np(eye, np.zeros(3))
        f = R2N2_FOCAL * size / 2
        Ks.append(np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]))
        Rs.append(R)
        ts.append(t)
    return Rig(np.stack(Ks), np.stack(Rs), np.stack(ts), (size, size))


def write_r2n2_model(model_dir: Path, n_views: int = 5, center=(0.1, 0.05, -0.1), radius=0.25):
    """``rendering/rendering_metadata.txt`` + ``renderings.txt`` + RGBA ``NN.png`` (alpha =
    the ball's coverage, RGB under alpha 0 not black)."""
    rng = np.random.default_rng(1)
    rows = np.stack(
        [
            rng.uniform(0, 360, n_views),
            rng.uniform(10, 40, n_views),
            np.zeros(n_views),
            rng.uniform(0.7, 0.9, n_views),
            np.full(n_views, 25.0),
        ],
        axis=1,
    ).round(6)
    rig = r2n2_rig(rows)
    render = model_dir / "rendering"
    render.mkdir(parents=True, exist_ok=True)
    names = []
    for v in range(n_views):
        alpha = render_ball(rig.K[v], rig.R[v], rig.t[v], rig.size, center, radius, supersample=2)
        rgba = np.concatenate([shaded(alpha > 0, bg=(0.2, 0.9, 0.2)), alpha[..., None]], axis=2)
        names.append(f"{v:02d}.png")
        save_png(render / names[-1], rgba)
    (render / "renderings.txt").write_text("\n".join(names) + "\n")
    (render / "rendering_metadata.txt").write_text(
        "\n".join(" ".join(f"{x:.6f}" for x in row) for row in rows) + "\n"
    )
    return rig, rows


def write_nerf(root: Path, rig: Rig, splits=("train", "test")) -> Path:
    """NeRF-synthetic / nerfstudio layout: ``transforms_<split>.json`` with camera-to-world
    ``transform_matrix`` in OpenGL camera axes (x right, y up, looking down -z), per-frame
    ``fl_x fl_y cx cy w h`` (pixel centres at +0.5, as nerfstudio states), ``file_path``
    without extension, RGBA images whose alpha is the ball's coverage. Views alternate
    between the splits."""
    import json

    gl_from_cv = np.diag([1.0, -1.0, -1.0])
    frames: dict[str, list] = {s: [] for s in splits}
    for v in range(len(rig.K)):
        split = splits[v % len(splits)]
        c2w = np.eye(4)
        c2w[:3, :3] = rig.R[v].T @ gl_from_cv  # camera axes (OpenGL) in world coordinates
        c2w[:3, 3] = -rig.R[v].T @ rig.t[v]
        alpha = render_ball(rig.K[v], rig.R[v], rig.t[v], rig.size)
        save_png(root / split / f"r_{v}.png", np.concatenate([shaded(alpha), alpha[..., None]], 2))
        K = rig.K[v]
        frames[split].append(
            {
                "file_path": f"./{split}/r_{v}",
                "transform_matrix": c2w.tolist(),
                "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                "w": rig.size[1], "h": rig.size[0],
            }
        )  # fmt: skip
    for split, fr in frames.items():
        (root / f"transforms_{split}.json").write_text(json.dumps({"frames": fr}))
    return root


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Hamilton ``(qw, qx, qy, qz)`` of a rotation matrix (qw >= 0)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def write_colmap_text(root: Path, rig: Rig, n_points: int = 300) -> Path:
    """COLMAP project: ``sparse/0/{cameras,images,points3D}.txt`` (PINHOLE, world-to-camera
    quaternion and T, pixel centres at +0.5 as COLMAP documents), ``images/NNN.png`` on a grey
    background and ``masks/NNN.png.png`` (COLMAP's mask naming)."""
    model = root / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    cams, imgs = [], []
    for v in range(len(rig.K)):
        K = rig.K[v]
        params = " ".join(f"{x:.17g}" for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
        cams.append(f"{v + 1} PINHOLE {rig.size[1]} {rig.size[0]} {params}")
        q = rotation_to_quaternion(rig.R[v])
        name = f"{v:03d}.png"
        pose = " ".join(f"{x:.17g}" for x in (*q, *rig.t[v]))
        imgs.append(f"{v + 1} {pose} {v + 1} {name}")
        imgs.append("")
        mask = render_ball(rig.K[v], rig.R[v], rig.t[v], rig.size)
        save_png(root / "images" / name, shaded(mask, bg=(0.5, 0.5, 0.5)))
        save_png(root / "masks" / f"{name}.png", mask)
    rng = np.random.default_rng(4)
    d = rng.normal(size=(n_points, 3))
    pts = BALL_CENTER + BALL_RADIUS * d / np.linalg.norm(d, axis=1, keepdims=True)
    (model / "cameras.txt").write_text("# Camera list\n" + "\n".join(cams) + "\n")
    (model / "images.txt").write_text("# Image list\n" + "\n".join(imgs) + "\n")
    (model / "points3D.txt").write_text(
        "".join(
            f"{i + 1} {p[0]:.9g} {p[1]:.9g} {p[2]:.9g} 128 128 128 0.5\n" for i, p in enumerate(pts)
        )
    )
    return root
