"""Multi-view rendering of triangle meshes: shaded images, silhouettes and depth.

Makes the images a dataset stores: mesh + :class:`persp3d.Cameras` -> ``(V, C, H, W)``
tensors. The fast path casts one ray per pixel with Open3D's ``RaycastingScene`` (Embree);
:func:`render_silhouettes_pytorch3d` rasterises with PyTorch3D as an independent reference.

Convention:
    Cameras as in :mod:`persp3d.cameras`: ``X_cam = R @ X_world + t``, OpenCV axes, the ray
    of pixel (row j, column i) passes through ``(u, v) = (i + 0.5, j + 0.5)``. Outputs are
    ``(V, C, H, W)`` float32 with row 0 at the top; ``depth`` is the camera-space z of the
    first hit (0 where the ray misses). Both renderers sample each pixel once at its centre,
    so their silhouettes agree pixel for pixel up to ties on triangle edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from persp3d.cameras import Cameras

__all__ = [
    "DEFAULT_COLOR",
    "Lighting",
    "RenderOutput",
    "render_mesh",
    "render_silhouettes_pytorch3d",
]

DEFAULT_COLOR = (0.72, 0.72, 0.76)


@dataclass(frozen=True)
class Lighting:
    """Lambertian lighting: ambient + a directional world light + a headlight.

    Attributes:
        ambient: constant term.
        diffuse: strength of the directional light.
        direction: world direction *towards* the light (normalised; default from above,
            front right).
        headlight: strength of a light at each camera, along its viewing rays.
    """

    ambient: float = 0.25
    diffuse: float = 0.55
    direction: tuple[float, float, float] = (0.4, 1.0, 0.6)
    headlight: float = 0.3


@dataclass
class RenderOutput:
    """What :func:`render_mesh` returns.

    Attributes:
        images: ``(V, 3, H, W)`` shaded RGB in ``[0, 1]`` over ``background``.
        silhouettes: ``(V, 1, H, W)`` 1 where the pixel's ray hits the mesh, else 0.
        depth: ``(V, 1, H, W)`` camera-space z of the first hit; 0 where it misses.
    """

    images: torch.Tensor
    silhouettes: torch.Tensor
    depth: torch.Tensor


def _import_open3d():
    try:
        import open3d as o3d
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rendering needs Open3D: pip install open3d (and Debian's libusb-1.0-0)"
        ) from err
    return o3d


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float32)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (N, 3); got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3); got shape {f.shape}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices out of range [0, {len(v)})")
    if not np.isfinite(v).all():
        raise ValueError("vertices must be finite")
    return v, f.astype(np.uint32)


def cast_rays(
    vertices: np.ndarray, faces: np.ndarray, cameras: Cameras
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One ray per pixel centre of each camera against the mesh (Open3D, Embree).

    Args:
        vertices: ``(N, 3)`` world ``(x, y, z)``; faces: ``(F, 3)`` vertex indices.
        cameras: ``Cameras`` of batch shape ``(V,)``.

    Returns:
        depth ``(V, H, W)`` (``inf`` where missed), face ids ``(V, H, W)`` (-1 where missed),
        normals ``(V, H, W, 3)`` world unit face normals turned towards the camera, and unit
        ray directions ``(V, H, W, 3)``.

    Convention: the ray directions have camera-space z = 1, so the hit distance along them
    is the camera-space depth.
    """
    o3d = _import_open3d()
    v, f = _check_mesh(vertices, faces)
    if cameras.ndim != 1:
        raise ValueError(f"cameras must have batch shape (V,); got {tuple(cameras.batch_shape)}")
    origins, dirs = cameras.detach().cpu().double().rays(normalize=False)  # (V, H, W, 3) each
    rays = torch.cat([origins, dirs], dim=-1).numpy().astype(np.float32)  # (V, H, W, 6)
    scene = o3d.t.geometry.RaycastingScene()
    if len(f):
        scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(f))
    hits = scene.cast_rays(o3d.core.Tensor(rays))
    depth = hits["t_hit"].numpy()  # (V, H, W)
    face_ids = hits["primitive_ids"].numpy().astype(np.int64)
    hit = np.isfinite(depth)
    face_ids[~hit] = -1
    normals = hits["primitive_normals"].numpy().astype(np.float64)  # (V, H, W, 3)
    unit_dirs = dirs.numpy() / np.linalg.norm(dirs.numpy(), axis=-1, keepdims=True)
    facing = np.sum(normals * unit_dirs, axis=-1, keepdims=True)
    normals = np.where(facing > 0, -normals, normals)  # seen from behind: flip towards camera
    return depth, face_ids, normals, unit_dirs


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    cameras: Cameras,
    face_colors: np.ndarray | Sequence[float] | None = None,
    *,
    background: float | Sequence[float] = 1.0,
    lighting: Lighting | None = None,
) -> RenderOutput:
    """Render a triangle mesh from every camera: shaded images, silhouettes and depth.

    Args:
        vertices: ``(N, 3)`` world ``(x, y, z)``.
        faces: ``(F, 3)`` vertex indices (any winding; back faces are lit as front faces, so
            open meshes render correctly).
        cameras: ``Cameras`` of batch shape ``(V,)`` and ``image_size`` ``(H, W)``.
        face_colors: ``(F, 3)`` RGB in ``[0, 1]``, or one RGB for the whole mesh
            (default :data:`DEFAULT_COLOR`).
        background: grey level or RGB of pixels the mesh does not cover.
        lighting: see :class:`Lighting`.

    Returns:
        :class:`RenderOutput` with ``(V, C, H, W)`` float32 tensors.

    Convention: see the module docstring (one ray per pixel centre, depth = camera z).
    """
    lighting = Lighting() if lighting is None else lighting
    depth, face_ids, normals, unit_dirs = cast_rays(vertices, faces, cameras)
    hit = face_ids >= 0  # (V, H, W)
    n_faces = len(np.asarray(faces))
    colors = np.asarray(DEFAULT_COLOR if face_colors is None else face_colors, dtype=np.float64)
    if colors.ndim == 1:
        colors = np.broadcast_to(colors, (max(n_faces, 1), 3))
    if colors.shape != (max(n_faces, 1), 3) and n_faces:
        raise ValueError(f"face_colors must be (F, 3) = ({n_faces}, 3) or (3,); got {colors.shape}")
    light = np.asarray(lighting.direction, dtype=np.float64)
    light = light / np.linalg.norm(light)
    diffuse = np.clip(normals @ light, 0.0, None)  # (V, H, W)
    head = np.clip(-np.sum(normals * unit_dirs, axis=-1), 0.0, None)
    shade = lighting.ambient + lighting.diffuse * diffuse + lighting.headlight * head
    albedo = colors[np.where(hit, face_ids, 0)]  # (V, H, W, 3)
    rgb = np.clip(albedo * shade[..., None], 0.0, 1.0)
    bg = np.broadcast_to(np.asarray(background, dtype=np.float64), (3,))
    rgb = np.where(hit[..., None], rgb, bg)
    images = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32))
    silhouettes = torch.from_numpy(hit[:, None].astype(np.float32))  # (V, 1, H, W)
    depth_t = torch.from_numpy(np.where(hit, depth, 0.0)[:, None].astype(np.float32))
    return RenderOutput(images=images, silhouettes=silhouettes, depth=depth_t)


def render_silhouettes_pytorch3d(
    vertices: np.ndarray | torch.Tensor,
    faces: np.ndarray | torch.Tensor,
    cameras: Cameras,
    *,
    return_depth: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference silhouettes from PyTorch3D's mesh rasteriser (CPU or the cameras' device).

    Args:
        vertices: ``(N, 3)`` world; faces: ``(F, 3)``.
        cameras: ``Cameras`` of batch shape ``(V,)``.
        return_depth: also return the ``(V, 1, H, W)`` z-buffer (0 where empty).

    Returns:
        ``(V, 1, H, W)`` float32 silhouettes (1 where a face covers the pixel centre).

    Convention: rasterised with ``blur_radius=0`` and ``faces_per_pixel=1`` through
    :meth:`Cameras.to_pytorch3d` (screen-space intrinsics), so pixel centres sit at
    ``+0.5`` exactly as in :func:`render_mesh`.
    """
    try:
        from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
        from pytorch3d.structures import Meshes
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the reference renderer needs PyTorch3D (easypytorch3d)") from err
    if cameras.ndim != 1:
        raise ValueError(f"cameras must have batch shape (V,); got {tuple(cameras.batch_shape)}")
    device = cameras.device
    v = torch.as_tensor(np.asarray(vertices), dtype=torch.float32, device=device)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.int64, device=device)
    n = len(cameras)
    meshes = Meshes(verts=[v] * n, faces=[f] * n)
    H, W = cameras.image_size
    settings = RasterizationSettings(
        image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, bin_size=0
    )
    rasterizer = MeshRasterizer(cameras=cameras.float().to_pytorch3d(), raster_settings=settings)
    fragments = rasterizer(meshes)
    sil = (fragments.pix_to_face[..., 0] >= 0).float()[:, None]  # (V, 1, H, W)
    if not return_depth:
        return sil
    zbuf = fragments.zbuf[..., 0].clamp(min=0.0)[:, None]  # (V, 1, H, W)
    return sil, zbuf
