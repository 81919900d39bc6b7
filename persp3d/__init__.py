"""persp3d: perspective spatial transformers for 3D vision.

Cameras -> frustum grid -> trilinear sampling -> projection (max | absorption | smooth) ->
silhouettes, all differentiable and batched over volumes and views. See DESIGN.md for the
conventions; the short version is in :mod:`persp3d.cameras` and :mod:`persp3d.volume`.
"""

from persp3d._version import __version__
from persp3d.cameras import (
    Cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    r2n2_cameras,
    spherical_cameras,
)
from persp3d.volume import VolumeBox, grid_to_world_coords, world_to_grid_coords

__all__ = [
    "Cameras",
    "VolumeBox",
    "__version__",
    "grid_to_world_coords",
    "intrinsics_from_fov",
    "look_at",
    "orbit_cameras",
    "r2n2_cameras",
    "spherical_cameras",
    "world_to_grid_coords",
]
