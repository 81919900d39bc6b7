"""The conventions test: persp3d's max projection of voxelised meshes against PyTorch3D's
mesh rasteriser, from the same cameras.

Meshes are made by trimesh, voxelised at 64^3 by trimesh's inside test at voxel centres
(each part is watertight), projected by persp3d from 24 orbit views at 64x64, and compared
with PyTorch3D's rasterised silhouettes of the meshes. Any slip in axes, pixel centres,
camera conventions or the OpenCV -> PyTorch3D conversion drops the IoU far below 0.95.
"""

import numpy as np
import pytest
import torch

import persp3d as p3

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("pytorch3d")


def _table():
    """A table: a top and four thin legs (6.4 voxels, 4.4 pixels across)."""
    top = trimesh.creation.box(extents=(0.9, 0.1, 0.6))
    top.apply_translation((0.0, 0.2, 0.0))
    parts = [top]
    for x in (-0.35, 0.35):
        for z in (-0.2, 0.2):
            leg = trimesh.creation.box(extents=(0.1, 0.55, 0.1))
            leg.apply_translation((x, -0.1, z))
            parts.append(leg)
    return parts


def _torus():
    torus = trimesh.creation.torus(major_radius=0.3, minor_radius=0.08)
    torus.apply_transform(trimesh.transformations.rotation_matrix(np.radians(60), (1, 0, 0)))
    return [torus]


def _offset_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    sphere.apply_translation((0.12, -0.1, 0.05))
    return [sphere]


def _voxelise(parts, res):
    centres = p3.VolumeBox().voxel_centers(res, dtype=torch.float64).reshape(-1, 3).numpy()
    inside = np.zeros(len(centres), dtype=bool)
    for part in parts:
        assert part.is_watertight
        inside |= part.contains(centres)
    return torch.from_numpy(inside.reshape(res, res, res)).float()[None, None]


def _rasterise(parts, cams):
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes

    mesh = trimesh.util.concatenate(parts)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.int64)
    V = cams.batch_shape[0]
    meshes = Meshes(verts=[verts] * V, faces=[faces] * V)
    settings = RasterizationSettings(image_size=cams.image_size, blur_radius=0.0, faces_per_pixel=1)
    fragments = MeshRasterizer(cameras=cams.to_pytorch3d(), raster_settings=settings)(meshes)
    return fragments.pix_to_face[..., 0] >= 0  # (V, H, W)


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape", [_table, _torus, _offset_sphere], ids=["table", "torus", "sphere"]
)
def test_max_projection_matches_rasterised_silhouettes(shape):
    parts = shape()
    cams = p3.orbit_cameras(n_views=24, elevation=30.0, distance=2.0, fov=40.0, image_size=(64, 64))
    volume = _voxelise(parts, 64)
    projected = p3.project(volume, cams, depth_samples=128)[0, :, 0] > 0.5  # (V, 64, 64)
    rasterised = _rasterise(parts, cams)
    iou = (projected & rasterised).sum(dim=(1, 2)) / (projected | rasterised).sum(dim=(1, 2))
    assert iou.mean() >= 0.95, iou
    assert iou.min() >= 0.9, iou
