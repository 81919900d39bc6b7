# ruff: noqa: E402  (the environment is set before torch is imported)
"""persp3d: perspective spatial transformers for 3D vision.

Cameras -> frustum grid -> trilinear sampling -> projection (max | absorption | smooth) ->
silhouettes, all differentiable and batched over volumes and views. See DESIGN.md for the
conventions; the short version is in :mod:`persp3d.cameras` and :mod:`persp3d.volume`.

Importing persp3d before torch sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment
already chooses a policy: torch's OpenMP runtime reads it once, when torch loads, and with it
torch's idle threads sleep at once after each parallel op instead of spinning for
milliseconds on cores that the fused CPU kernels' threads need (on a shared 2-core machine
``persp3d train`` ran at 0.5 steps/s without it, 2.9 with it). When torch was imported
first, the first fused CPU call warns once (:class:`persp3d.kernels.cpu.ThreadingWarning`).
"""

import os as _os
import sys as _sys

# Must run before the first ``import torch`` of the process (see the module docstring); the
# imports below come after it on purpose.
_TORCH_FIRST = "torch" in _sys.modules
# torch's idle OpenMP threads spin (the fused CPU kernels warn once; see persp3d.kernels.cpu).
_OPENMP_SPINS = _TORCH_FIRST and "OMP_WAIT_POLICY" not in _os.environ
if not _TORCH_FIRST:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from persp3d._version import __version__
from persp3d.affine import (
    SpatialTransformer,
    affine_grid,
    affine_matrix_2d,
    affine_matrix_3d,
    affine_sample,
    identity_theta,
    invert_theta,
    rotation_matrix_3d,
)
from persp3d.cameras import (
    Cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    r2n2_cameras,
    spherical_cameras,
)
from persp3d.checking import check_projections, compare_silhouettes, diagnose
from persp3d.fitting import fit_volume, visual_hull
from persp3d.grids import Frustum, depth_schedule, frustum_grid, near_far
from persp3d.projection import naive_project, project
from persp3d.sampling import sample_volume
from persp3d.transformer import PerspectiveTransformer
from persp3d.volume import VolumeBox, grid_to_world_coords, world_to_grid_coords

__all__ = [
    "Cameras",
    "Frustum",
    "PerspectiveTransformer",
    "SpatialTransformer",
    "VolumeBox",
    "__version__",
    "affine_grid",
    "affine_matrix_2d",
    "affine_matrix_3d",
    "affine_sample",
    "check_projections",
    "compare_silhouettes",
    "depth_schedule",
    "diagnose",
    "fit_volume",
    "frustum_grid",
    "grid_to_world_coords",
    "identity_theta",
    "intrinsics_from_fov",
    "invert_theta",
    "look_at",
    "naive_project",
    "near_far",
    "orbit_cameras",
    "project",
    "r2n2_cameras",
    "rotation_matrix_3d",
    "sample_volume",
    "spherical_cameras",
    "visual_hull",
    "world_to_grid_coords",
]
