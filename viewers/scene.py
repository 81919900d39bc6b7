"""What a viewer shows, as plain arrays: isosurfaces, voxel faces, box edges, camera frustums
and silhouettes placed on the cameras' image planes.

The end of the data path: volume (and cameras, silhouettes) -> **scene geometry** -> a
backend (Open3D window or off-screen snapshot, self-contained web page). Everything here is
NumPy (and torch for the cameras); Open3D, PyTorch3D and the browser come later.

Convention:
    World +y up. A volume is ``(D, H, W)`` in a :class:`~persp3d.VolumeBox`: axis W runs
    along world x, H along y, D along z, and voxel ``(k, j, i)`` fills the cell
    ``box.min + [(i, j, k), (i + 1, j + 1, k + 1)] * voxel_size`` (its centre at ``+0.5``).
    Cameras follow :mod:`persp3d.cameras` (``X_cam = R X + t``, OpenCV axes, pixel centres at
    ``+0.5``, image row 0 at the top). Points and vertices are ``(N, 3)`` world ``(x, y, z)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from persp3d.cameras import Cameras, spherical_cameras
from persp3d.volume import VolumeBox

__all__ = [
    "COLORS",
    "FRAMES",
    "MODES",
    "LineSet",
    "Scene",
    "TriangleMesh",
    "ViewItem",
    "ViewOptions",
    "box_lines",
    "build_scene",
    "everything_bounds",
    "fit_view",
    "frustum_lines",
    "ground_truth_offset",
    "isosurface",
    "occupancy_colors",
    "scene_bounds",
    "silhouette_codes",
    "silhouette_quads",
    "up_frame",
    "voxel_edges",
    "voxel_faces",
]

MODES = ("iso", "voxels", "both")
"""How a volume is drawn: its isosurface, its voxels (coloured by occupancy), or the
isosurface with the voxels' edges over it."""
FRAMES = ("object", "all")
"""What a default viewpoint takes in: the object only, or the object and the cameras."""

COLORS: dict[str, tuple[float, float, float]] = {
    "prediction": (0.55, 0.68, 0.88),
    "ground_truth": (0.62, 0.82, 0.55),
    "box": (0.62, 0.62, 0.62),
    "camera": (0.30, 0.30, 0.30),
    "input_camera": (0.95, 0.45, 0.05),
    "voxel_edge": (0.15, 0.15, 0.15),
    "background": (1.0, 1.0, 1.0),
    # silhouette overlay on the image planes
    "silhouette_both": (0.20, 0.35, 0.80),
    "silhouette_ground_truth_only": (0.15, 0.70, 0.25),
    "silhouette_projected_only": (0.90, 0.22, 0.18),
    # the projection alone, when there is no ground truth to compare (a fit's cameras)
    "silhouette_projection": (0.42, 0.45, 0.55),
}

# matplotlib's viridis at 0, 1/8, ..., 1 (so no matplotlib import is needed).
_VIRIDIS = np.array(
    [
        [0.267, 0.005, 0.329],
        [0.279, 0.175, 0.483],
        [0.230, 0.322, 0.546],
        [0.173, 0.449, 0.558],
        [0.128, 0.567, 0.551],
        [0.158, 0.684, 0.502],
        [0.369, 0.789, 0.383],
        [0.678, 0.864, 0.190],
        [0.993, 0.906, 0.144],
    ]
)

# The six faces of the unit cell [0, 1]^3 as corner offsets (x, y, z), counter-clockwise
# seen from outside, with the neighbour that hides each face: (array axis of the (D, H, W)
# volume, step along it).
_CELL_FACES: tuple[tuple[tuple[tuple[int, int, int], ...], int, int], ...] = (
    (((1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)), 2, +1),  # +x
    (((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)), 2, -1),  # -x
    (((0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)), 1, +1),  # +y
    (((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)), 1, -1),  # -y
    (((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)), 0, +1),  # +z
    (((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)), 0, -1),  # -z
)


# ---------------------------------------------------------------------------------------
# Containers
@dataclass
class TriangleMesh:
    """A triangle mesh: ``vertices (N, 3)`` world, ``faces (F, 3)`` int, and either one
    ``color`` or per-vertex ``vertex_colors (N, 3)`` in [0, 1]; ``lit`` False draws the
    colours flat (pictures on image planes)."""

    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[float, float, float] = COLORS["prediction"]
    vertex_colors: np.ndarray | None = None
    name: str = ""
    lit: bool = True

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)


@dataclass
class LineSet:
    """Line segments: ``points (N, 3)`` world, ``segments (S, 2)`` point indices, and one
    ``color`` or per-segment ``segment_colors (S, 3)``."""

    points: np.ndarray
    segments: np.ndarray
    color: tuple[float, float, float] = COLORS["camera"]
    segment_colors: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)
        self.segments = np.asarray(self.segments, dtype=np.int64).reshape(-1, 2)


@dataclass
class Scene:
    """Geometry to draw, in world coordinates; the sphere around the object that a
    viewpoint frames (:func:`scene_bounds`), and the world direction shown upright."""

    meshes: list[TriangleMesh] = field(default_factory=list)
    lines: list[LineSet] = field(default_factory=list)
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 1.0
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)

    def is_empty(self) -> bool:
        return not any(len(m.faces) for m in self.meshes) and not any(
            len(s.segments) for s in self.lines
        )


@dataclass
class ViewItem:
    """One thing to look at: a volume (or a mesh), with what came with it.

    Attributes:
        volume: ``(D, H, W)`` occupancy in [0, 1] (a prediction, or ground-truth voxels), or
            None when only ``mesh`` is shown.
        box: the volume's box (default ``VolumeBox()``).
        mesh: ``(vertices (N, 3), faces (F, 3))`` shown as the surface instead of the
            volume's isosurface (a loaded mesh file).
        ground_truth: ``(D, H, W)`` ground-truth occupancy shown beside ``volume``, or None.
        cameras: ``Cameras`` of batch shape ``(V,)``, or None.
        silhouettes: ``(V, h, w)`` ground-truth silhouettes in [0, 1] of ``cameras``, or None.
        projected: ``(V, h, w)`` silhouettes of ``volume`` seen by ``cameras`` (filled in by
            :meth:`projected_silhouettes` when needed).
        input_view: index of the view the network saw (drawn highlighted), or None.
        title: a line naming the item.
        up: ``(3,)`` the world direction that is up for this object (a capture's own up
            axis, e.g. ``(0, 0, 1)`` for a NeRF-synthetic scene); None means persp3d's +y.
            Viewpoints stand the object upright on it.
    """

    volume: np.ndarray | None = None
    box: VolumeBox = field(default_factory=VolumeBox)
    mesh: tuple[np.ndarray, np.ndarray] | None = None
    ground_truth: np.ndarray | None = None
    cameras: Cameras | None = None
    silhouettes: np.ndarray | None = None
    projected: np.ndarray | None = None
    input_view: int | None = None
    title: str = ""
    up: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.up is not None:
            self.up = _unit_up(self.up)
        if self.volume is not None:
            self.volume = _as_volume(self.volume, "volume")
        if self.ground_truth is not None:
            self.ground_truth = _as_volume(self.ground_truth, "ground_truth")
        if self.volume is None and self.mesh is None:
            raise ValueError("a ViewItem needs a volume or a mesh; got neither")
        if self.cameras is not None and self.cameras.ndim != 1:
            raise ValueError(
                f"cameras must have batch shape (V,); got {tuple(self.cameras.batch_shape)}"
            )
        for name in ("silhouettes", "projected"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value, dtype=np.float32)
            if arr.ndim == 4 and arr.shape[1] == 1:
                arr = arr[:, 0]  # (V, 1, h, w) -> (V, h, w)
            if arr.ndim != 3:
                raise ValueError(f"{name} must be (V, h, w); got shape {arr.shape}")
            if self.cameras is not None and arr.shape[0] != len(self.cameras):
                raise ValueError(
                    f"{name} must have one image per camera ({len(self.cameras)}); got {arr.shape[0]}"
                )
            setattr(self, name, arr)

    def projected_silhouettes(self, depth_samples: int = 64) -> np.ndarray | None:
        """``(V, h, w)`` max-projection of ``volume`` into ``cameras`` (computed once)."""
        if self.projected is None and self.volume is not None and self.cameras is not None:
            from persp3d.projection import project

            vol = torch.from_numpy(self.volume)[None, None]  # (1, 1, D, H, W)
            with torch.no_grad():
                sil = project(
                    vol, self.cameras.float(), box=self.box, depth_samples=depth_samples
                )  # (1, V, 1, h, w)
            self.projected = sil[0, :, 0].numpy()
        return self.projected


@dataclass
class ViewOptions:
    """How a :class:`ViewItem` is drawn (shared by the Open3D viewer, snapshots and the web
    page)."""

    mode: str = "iso"
    """``iso`` (isosurface), ``voxels`` (cells above the threshold, coloured by
    occupancy) or ``both`` (isosurface with the voxels' edges)."""
    threshold: float = 0.5
    """Occupancy level of the isosurface and of the voxels shown."""
    show_cameras: bool = True
    """Draw the cameras as frustums."""
    show_silhouettes: bool = True
    """Draw ground-truth and projected silhouettes on the cameras' image planes."""
    show_ground_truth: bool = True
    """Draw the ground truth beside the prediction (when the item has one)."""
    show_box: bool = True
    """Draw the volume box's edges."""
    views: Sequence[int] | None = None
    """Indices of the cameras to draw (default: up to ``max_views`` of them)."""
    max_views: int = 8
    """Without ``views``, draw at most this many cameras, evenly spread over the views
    (with the input view); 0 draws them all."""
    frustum_size: float = 0.3
    """Height of each camera's drawn image plane, as a fraction of the box's longest side
    (so frustums stay small beside the object whatever the cameras' distance and focal
    length)."""
    frame: str = "object"
    """What the default viewpoint frames: ``object`` (the volume or mesh, so it fills a
    good share of the picture; cameras far from it fall outside) or ``all`` (the object
    and every drawn camera)."""
    ground_truth_gap: float = 0.25
    """Gap between the prediction's box and the ground truth's, in box widths (the ground
    truth sits on the prediction's -x side)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1]; got {self.threshold}")
        if self.frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}; got {self.frame!r}")
        if not 0.0 < self.frustum_size <= 10.0:
            raise ValueError(f"frustum_size must lie in (0, 10]; got {self.frustum_size}")


# ---------------------------------------------------------------------------------------
# Geometry of volumes
OCCUPANCY_TOLERANCE = 1e-5
"""Occupancy this far outside [0, 1] is rounding and is clipped (as
:func:`persp3d.datasets.volumes.as_occupancy` does); farther is an error."""


def _as_volume(volume: np.ndarray | torch.Tensor, name: str = "volume") -> np.ndarray:
    """``(D, H, W)`` float32 NumPy from an array or tensor, leading 1-sized axes dropped,
    values clipped into [0, 1] within :data:`OCCUPANCY_TOLERANCE`."""
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu().float().numpy()
    arr = np.asarray(volume, dtype=np.float32)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"{name} must be (D, H, W) (or (1, 1, D, H, W)); got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds non-finite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -OCCUPANCY_TOLERANCE or hi > 1 + OCCUPANCY_TOLERANCE:
        raise ValueError(
            f"{name} must hold occupancy in [0, 1]; got values in [{lo:.3g}, {hi:.3g}] "
            "(logits? apply a sigmoid first)"
        )
    return np.clip(arr, 0.0, 1.0)


def _index_to_world(index_xyz: np.ndarray, shape_dhw: Sequence[int], box: VolumeBox) -> np.ndarray:
    """Continuous voxel-index coordinates ``(N, 3)`` ``(x, y, z)`` = ``(i, j, k)``, with the
    cell of voxel ``(k, j, i)`` spanning ``[i, i + 1]`` along x, -> world ``(N, 3)``."""
    D, H, W = shape_dhw
    res = np.array([W, H, D], dtype=np.float64)
    return np.asarray(box.min) + index_xyz / res * np.asarray(box.size)


def isosurface(
    volume: np.ndarray | torch.Tensor,
    box: VolumeBox | None = None,
    threshold: float = 0.5,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """The ``threshold`` isosurface of a volume (marching cubes from PyTorch3D).

    Args:
        volume: ``(D, H, W)`` occupancy in [0, 1].
        box: the volume's box (default ``VolumeBox()``).
        threshold: the occupancy level.
        offset: ``(3,)`` world translation added to every vertex.

    Returns:
        ``vertices (N, 3)`` float64 world ``(x, y, z)`` and ``faces (F, 3)`` int64,
        counter-clockwise seen from outside (normals point to lower occupancy); both empty
        when nothing crosses the level. The volume is padded with empty cells, so surfaces
        that touch the box faces are closed.

    Convention: PyTorch3D's ``marching_cubes`` returns ``(x, y, z)`` = ``(W, H, D)`` index
    coordinates of voxel centres; voxel ``(k, j, i)``'s centre is at index ``(i, j, k)`` and
    world ``box.min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size`` (as in
    :func:`persp3d.metrics.volume_surface_points`).
    """
    import torch.nn.functional as F
    from pytorch3d.ops.marching_cubes import marching_cubes

    box = box if box is not None else VolumeBox()
    vol = torch.from_numpy(_as_volume(volume))
    empty = (np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    if not bool((vol > threshold).any()):
        return empty
    padded = F.pad(vol, (1, 1, 1, 1, 1, 1), value=0.0)  # (D + 2, H + 2, W + 2)
    verts, faces = marching_cubes(padded[None], isolevel=threshold, return_local_coords=False)
    if len(faces[0]) == 0:
        return empty
    index_xyz = verts[0].double().numpy() - 1.0 + 0.5  # padded centre index -> cell coordinate
    vertices = _index_to_world(index_xyz, vol.shape, box) + np.asarray(offset, dtype=np.float64)
    faces_np = faces[0].numpy().astype(np.int64)
    return vertices, _orient_outward(vertices, faces_np, vol.numpy(), box, offset, threshold)


def _orient_outward(
    vertices: np.ndarray,
    faces: np.ndarray,
    volume: np.ndarray,
    box: VolumeBox,
    offset: Sequence[float],
    threshold: float,
) -> np.ndarray:
    """Flip all faces if most normals point into the occupied side (the winding of
    marching-cubes implementations differs); the test is a probe of the volume a little
    way along each face normal."""
    tri = vertices[faces]  # (F, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    keep = length[:, 0] > 1e-12
    if not keep.any():
        return faces
    centres = tri.mean(axis=1)[keep]
    step = 0.5 * min(box.voxel_size(volume.shape))
    probe = centres + step * normals[keep] / length[keep] - np.asarray(offset)
    D, H, W = volume.shape
    idx = (probe - np.asarray(box.min)) / np.asarray(box.size) * np.array([W, H, D])
    i, j, k = (np.clip(np.floor(idx[:, a]).astype(int), -1, n) for a, n in enumerate((W, H, D)))
    inside = (i >= 0) & (i < W) & (j >= 0) & (j < H) & (k >= 0) & (k < D)
    values = np.zeros(len(probe), dtype=np.float32)
    values[inside] = volume[k[inside], j[inside], i[inside]]
    outward = float(np.mean(values <= threshold))
    return faces if outward >= 0.5 else faces[:, ::-1].copy()


def occupancy_colors(values: np.ndarray) -> np.ndarray:
    """Occupancy ``(...)`` in [0, 1] -> RGB ``(..., 3)`` in [0, 1] (viridis: 0 purple, 0.5
    teal, 1 yellow)."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (v - lo)[..., None]
    return _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac


def _exposed_faces(volume: np.ndarray, threshold: float):
    """Yield ``(corners (4, 3), k, j, i)`` per cube face direction: the voxels above
    ``threshold`` whose neighbour across that face is not."""
    occ = volume > threshold  # (D, H, W)
    padded = np.pad(occ, 1)
    D, H, W = occ.shape
    for corners, axis, step in _CELL_FACES:
        sl = [slice(1, D + 1), slice(1, H + 1), slice(1, W + 1)]
        sl[axis] = slice(1 + step, [D, H, W][axis] + 1 + step)
        exposed = occ & ~padded[tuple(sl)]
        k, j, i = np.nonzero(exposed)
        yield np.asarray(corners, dtype=np.float64), k, j, i


def _quad_faces(n: int) -> np.ndarray:
    """``(2n, 3)`` triangles of ``n`` quads whose corners are vertices ``4q .. 4q + 3``."""
    base = 4 * np.arange(n)[:, None]  # (n, 1)
    return (base + np.array([0, 1, 2, 0, 2, 3])).reshape(-1, 3)


def voxel_faces(
    volume: np.ndarray | torch.Tensor,
    box: VolumeBox | None = None,
    threshold: float = 0.5,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
) -> TriangleMesh:
    """The visible faces of the voxels above ``threshold``, each voxel coloured by its
    occupancy (:func:`occupancy_colors`).

    Args:
        volume: ``(D, H, W)`` occupancy in [0, 1].
        box: the volume's box (default ``VolumeBox()``).
        threshold: voxels with occupancy above it are drawn.
        offset: ``(3,)`` world translation added to every vertex.

    Returns:
        A :class:`TriangleMesh` with 4 unshared vertices and 2 triangles per face
        (counter-clockwise from outside, so flat normals), and per-vertex colours.

    Convention: voxel ``(k, j, i)`` fills ``box.min + [(i, j, k), (i+1, j+1, k+1)] * voxel_size``.
    """
    box = box if box is not None else VolumeBox()
    vol = _as_volume(volume)
    quads, values = [], []
    for corners, k, j, i in _exposed_faces(vol, threshold):
        cell = np.stack([i, j, k], axis=-1).astype(np.float64)  # (n, 3) (x, y, z) index
        quads.append(cell[:, None, :] + corners[None])  # (n, 4, 3)
        values.append(vol[k, j, i])
    quad = np.concatenate(quads) if quads else np.zeros((0, 4, 3))
    value = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    n = len(quad)
    vertices = _index_to_world(quad.reshape(-1, 3), vol.shape, box) + np.asarray(offset)
    faces = _quad_faces(n)
    colors = np.repeat(occupancy_colors(value), 4, axis=0)  # (4n, 3)
    return TriangleMesh(vertices, faces, vertex_colors=colors, name="voxels")


def voxel_edges(
    volume: np.ndarray | torch.Tensor,
    box: VolumeBox | None = None,
    threshold: float = 0.5,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
    color: tuple[float, float, float] = COLORS["voxel_edge"],
) -> LineSet:
    """The edges of the visible voxel faces of :func:`voxel_faces` (each edge once)."""
    box = box if box is not None else VolumeBox()
    vol = _as_volume(volume)
    edges = []
    for corners, k, j, i in _exposed_faces(vol, threshold):
        cell = np.stack([i, j, k], axis=-1).astype(np.int64)
        quad = cell[:, None, :] + corners.astype(np.int64)[None]  # (n, 4, 3)
        edges.append(np.stack([quad, np.roll(quad, -1, axis=1)], axis=2).reshape(-1, 2, 3))
    if not edges:
        return LineSet(np.zeros((0, 3)), np.zeros((0, 2)), color=color, name="voxel_edges")
    seg = np.concatenate(edges)  # (S, 2, 3) integer corners (x, y, z)
    D, H, W = vol.shape
    ids = seg[..., 0] + (W + 1) * (seg[..., 1] + (H + 1) * seg[..., 2])  # (S, 2) corner ids
    keys = np.sort(ids, axis=1)
    _, first = np.unique(keys[:, 0] * ((W + 1) * (H + 1) * (D + 1)) + keys[:, 1], return_index=True)
    seg = seg[np.sort(first)]  # each edge once
    points = _index_to_world(seg.reshape(-1, 3).astype(np.float64), vol.shape, box)
    points = points + np.asarray(offset)
    return LineSet(points, np.arange(len(points)).reshape(-1, 2), color=color, name="voxel_edges")


def box_lines(
    box: VolumeBox,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
    color: tuple[float, float, float] = COLORS["box"],
) -> LineSet:
    """The 12 edges of ``box`` (shifted by ``offset``)."""
    lo = np.asarray(box.min) + np.asarray(offset)
    size = np.asarray(box.size)
    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=float)
    points = lo + corners * size  # (8, 3); corner index = x + 2 y + 4 z
    segments = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return LineSet(points, np.array(segments), color=color, name="box")


# ---------------------------------------------------------------------------------------
# Cameras and silhouettes
def _image_depths(cameras: Cameras, box: VolumeBox, frustum_size: float) -> torch.Tensor:
    """``(V,)`` camera-space depth at which each camera's image plane is ``frustum_size``
    box sides tall (``depth = height * fy / H``), but never past 45% of the way to the box
    centre."""
    cams = cameras.detach().double()
    H = cams.image_size[0]
    fy = cams.K[..., 1, 1].expand(cams.batch_shape)  # (V,)
    depth = frustum_size * max(box.size) * fy / H  # (V,)
    center = torch.tensor(box.center, dtype=torch.float64)
    to_center = cams.world_to_camera(center[None])[..., 0, 2].clamp_min(1e-6)  # (V,)
    return torch.minimum(depth, 0.45 * to_center)


def frustum_lines(
    cameras: Cameras,
    depth: float | torch.Tensor,
    color: tuple[float, float, float] = COLORS["camera"],
    highlight: int | None = None,
    highlight_color: tuple[float, float, float] = COLORS["input_camera"],
) -> LineSet:
    """Camera frustums from each centre to its image rectangle at camera-space ``depth``.

    Args:
        cameras: ``Cameras`` of batch shape ``(V,)``.
        depth: a depth for all, or ``(V,)``.
        highlight: index of a camera drawn in ``highlight_color`` (the network's input view).

    Returns:
        A :class:`LineSet`: per camera 4 rays from the centre to the image corners, the
        image rectangle, and a small triangle above its top edge (image row 0), so the
        picture's "up" is visible.

    Convention: the image corners are the pixel-plane corners ``(u, v)`` = ``(0, 0)``,
    ``(W, 0)``, ``(W, H)``, ``(0, H)`` unprojected with :meth:`Cameras.unproject`.
    """
    cams = cameras.detach().double()
    V = len(cams)
    H, W = cams.image_size
    d = torch.as_tensor(depth, dtype=torch.float64).expand(V)[:, None]  # (V, 1)
    uv = torch.tensor(
        [[0, 0], [W, 0], [W, H], [0, H], [0.35 * W, 0], [0.65 * W, 0], [0.5 * W, -0.18 * H]],
        dtype=torch.float64,
    )
    corners = cams.unproject(uv.expand(V, 7, 2), d.expand(V, 7))  # (V, 7, 3)
    centers = cams.centers  # (V, 3)
    points = torch.cat([centers[:, None], corners], dim=1).reshape(-1, 3).numpy()  # (V * 8, 3)
    local = np.array(
        [[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1], [5, 7], [7, 6], [6, 5]]
    )
    segments = (local[None] + 8 * np.arange(V)[:, None, None]).reshape(-1, 2)
    colors = np.tile(np.asarray(color, dtype=np.float64), (V, len(local), 1))
    if highlight is not None and 0 <= highlight < V:
        colors[highlight] = highlight_color
    return LineSet(
        points, segments, color=color, segment_colors=colors.reshape(-1, 3), name="cameras"
    )


def silhouette_codes(
    ground_truth: np.ndarray | None, projected: np.ndarray | None, threshold: float = 0.5
) -> np.ndarray:
    """Per-pixel overlay codes ``(..., h, w)`` uint8 of two silhouettes ``(..., h, w)``:
    0 empty, 1 ground truth only, 2 projected only, 3 both. ``ground_truth`` is read at 0.5,
    ``projected`` at ``threshold``; either may be None (treated as empty)."""
    if ground_truth is None and projected is None:
        raise ValueError("silhouette_codes needs ground_truth or projected; got neither")
    shape = (ground_truth if ground_truth is not None else projected).shape
    gt = np.zeros(shape, bool) if ground_truth is None else np.asarray(ground_truth) > 0.5
    pr = np.zeros(shape, bool) if projected is None else np.asarray(projected) > threshold
    if gt.shape != pr.shape:
        raise ValueError(
            f"ground_truth and projected silhouettes must have one shape; got {gt.shape} and {pr.shape}"
        )
    return (gt.astype(np.uint8) + 2 * pr.astype(np.uint8)).astype(np.uint8)


def _code_colors(ground_truth: bool = True) -> np.ndarray:
    """``(4, 3)`` RGB of the overlay codes 0..3 (code 0 is never drawn); without
    ``ground_truth`` silhouettes the projection (code 2) is drawn in a neutral colour, not
    as a disagreement."""
    projected = "silhouette_projected_only" if ground_truth else "silhouette_projection"
    return np.array(
        [
            COLORS["background"],
            COLORS["silhouette_ground_truth_only"],
            COLORS[projected],
            COLORS["silhouette_both"],
        ]
    )


def silhouette_quads(
    cameras: Cameras,
    codes: np.ndarray,
    depth: float | torch.Tensor,
    palette: np.ndarray | None = None,
) -> TriangleMesh:
    """Silhouette overlays drawn on the cameras' image planes: one coloured quad per
    non-empty pixel.

    Args:
        cameras: ``Cameras`` of batch shape ``(V,)``.
        codes: ``(V, h, w)`` overlay codes of :func:`silhouette_codes` (any ``h, w``: the
            image plane is divided into ``h x w`` cells).
        depth: camera-space depth of the image planes, one for all or ``(V,)``.
        palette: ``(4, 3)`` RGB of the codes (default :data:`COLORS`' overlay colours).

    Returns:
        A :class:`TriangleMesh` with per-vertex colours (empty pixels are left out, so the
        scene shows through).

    Convention: pixel (row j, column i) covers ``[i, i + 1] x [j, j + 1]`` in the ``(h, w)``
    image, scaled to the camera's ``image_size``; row 0 is the top of the picture.
    """
    cams = cameras.detach().double()
    V = len(cams)
    codes = np.asarray(codes)
    if codes.ndim != 3 or codes.shape[0] != V:
        raise ValueError(f"codes must be (V={V}, h, w); got shape {codes.shape}")
    h, w = codes.shape[1:]
    H, W = cams.image_size
    v_idx, j, i = np.nonzero(codes)
    if len(v_idx) == 0:
        return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3)), name="silhouettes")
    offsets = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)  # (u, v) corners
    uv = (np.stack([i, j], axis=-1)[:, None, :] + offsets[None]) * np.array([W / w, H / h])
    d = torch.as_tensor(depth, dtype=torch.float64).expand(V)
    vertices = np.empty((len(v_idx), 4, 3))
    for view in np.unique(v_idx):
        sel = v_idx == view
        uv_view = torch.from_numpy(uv[sel].reshape(-1, 2))  # (n * 4, 2)
        pts = cams[int(view)].unproject(uv_view, d[view].expand(len(uv_view)))  # (n * 4, 3)
        vertices[sel] = pts.numpy().reshape(-1, 4, 3)
    faces = _quad_faces(len(v_idx))
    palette = _code_colors() if palette is None else np.asarray(palette, dtype=np.float64)
    colors = np.repeat(palette[codes[v_idx, j, i]], 4, axis=0)
    return TriangleMesh(
        vertices.reshape(-1, 3), faces, vertex_colors=colors, name="silhouettes", lit=False
    )


# ---------------------------------------------------------------------------------------
# A whole item
def _selected_views(item: ViewItem, options: ViewOptions) -> list[int]:
    if item.cameras is None:
        return []
    V = len(item.cameras)
    if options.views is None:
        if options.max_views <= 0 or V <= options.max_views:
            return list(range(V))
        picked = {int(v) for v in np.floor(np.arange(options.max_views) * V / options.max_views)}
        if item.input_view is not None and 0 <= item.input_view < V:
            picked.add(int(item.input_view))
        return sorted(picked)
    bad = [v for v in options.views if not 0 <= int(v) < V]
    if bad:
        raise ValueError(f"views must be camera indices in [0, {V}); got {bad}")
    return [int(v) for v in options.views]


def ground_truth_offset(item: ViewItem, options: ViewOptions) -> np.ndarray:
    """``(3,)`` world translation of the ground truth drawn beside the prediction: to the
    prediction's -x side (the -x of the item's up frame, :func:`up_frame`, so it stays
    level beside it), ``ground_truth_gap`` box widths away."""
    side = up_frame(item.up)[:, 0] if item.up is not None else np.array([1.0, 0.0, 0.0])
    width = float(np.abs(side) @ np.asarray(item.box.size))
    return -(1.0 + options.ground_truth_gap) * width * side


def _surface(volume, box, threshold, offset, color, name) -> TriangleMesh:
    vertices, faces = isosurface(volume, box, threshold, offset)
    return TriangleMesh(vertices, faces, color=color, name=name)


def build_scene(item: ViewItem, options: ViewOptions | None = None) -> Scene:
    """The geometry of ``item`` drawn as ``options`` say.

    The prediction (``item.volume`` or ``item.mesh``) sits in its box; the ground truth,
    when shown, in a copy of the box on the -x side (:func:`ground_truth_offset`); the
    cameras as frustums around the prediction, with the silhouette overlays (ground truth
    only: green, projected only: red, both: blue; see :data:`COLORS`) on their image
    planes. ``Scene.center`` and ``Scene.radius`` are :func:`scene_bounds`.
    """
    options = options if options is not None else ViewOptions()
    scene = Scene()
    box, th = item.box, options.threshold
    zero = np.zeros(3)
    if item.mesh is not None and options.mode != "voxels":
        scene.meshes.append(TriangleMesh(*item.mesh, color=COLORS["prediction"], name="mesh"))
    layers = [(item.volume, zero, COLORS["prediction"], "prediction")]
    show_gt = options.show_ground_truth and item.ground_truth is not None
    if show_gt:
        gt_offset = ground_truth_offset(item, options)
        layers.append((item.ground_truth, gt_offset, COLORS["ground_truth"], "ground_truth"))
    for volume, offset, color, name in layers:
        if volume is None:
            continue
        if options.mode in ("iso", "both") and not (name == "prediction" and item.mesh is not None):
            scene.meshes.append(_surface(volume, box, th, offset, color, name))
        if options.mode == "voxels":
            mesh = voxel_faces(volume, box, th, offset)
            mesh.name = f"{name}_voxels"
            scene.meshes.append(mesh)
        if options.mode == "both":
            scene.lines.append(voxel_edges(volume, box, th, offset))
        if options.show_box:
            scene.lines.append(box_lines(box, offset))
    views = _selected_views(item, options)
    if views and item.cameras is not None:
        cams = item.cameras[torch.tensor(views)]
        depth = _image_depths(cams, box, options.frustum_size)
        if options.show_cameras:
            highlight = views.index(item.input_view) if item.input_view in views else None
            scene.lines.append(frustum_lines(cams, depth, highlight=highlight))
        if options.show_silhouettes:
            projected = item.projected_silhouettes()
            gt = item.silhouettes
            if gt is not None or projected is not None:
                codes = silhouette_codes(
                    None if gt is None else gt[views],
                    None if projected is None else projected[views],
                    th,
                )
                palette = _code_colors(ground_truth=gt is not None)
                scene.meshes.append(silhouette_quads(cams, codes, depth, palette))
    scene.center, scene.radius = scene_bounds(item, options)
    scene.up = item.up if item.up is not None else (0.0, 1.0, 0.0)
    return scene


def _occupied_corners(volume: np.ndarray | None, box: VolumeBox, threshold: float) -> np.ndarray:
    """``(8, 3)`` world corners of the bounding box of the cells above ``threshold`` (the
    whole box when none is)."""
    lo, hi = np.asarray(box.min), np.asarray(box.max)
    if volume is not None:
        occ = np.asarray(volume) > threshold  # (D, H, W)
        if occ.any():
            size = np.asarray(box.size) / np.array(occ.shape[::-1])  # (x, y, z) voxel size
            first, last = [], []
            for axis in (2, 1, 0):  # x, y, z
                other = tuple(a for a in range(3) if a != axis)
                idx = np.flatnonzero(occ.any(axis=other))
                first.append(idx[0])
                last.append(idx[-1] + 1)
            lo, hi = lo + np.array(first) * size, np.asarray(box.min) + np.array(last) * size
    return np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )


def scene_bounds(
    item: ViewItem, options: ViewOptions | None = None
) -> tuple[tuple[float, float, float], float]:
    """Centre and radius of the sphere a viewpoint frames: centred on the box (midway
    between the prediction's and the ground truth's boxes when both are shown), large
    enough to hold the object (the bounding box of the cells above the threshold, or a
    loaded mesh; the whole box when nothing is occupied). Cameras are left out (with
    ``options.frame == "object"``, the default), so the object, not the camera rig, fills
    the picture; ``frame="all"`` takes in the drawn cameras' centres too."""
    options = options if options is not None else ViewOptions()
    box = item.box
    center = np.asarray(box.center, dtype=np.float64)
    points = [_occupied_corners(item.volume, box, options.threshold)]
    if item.mesh is not None:
        points.append(np.asarray(item.mesh[0], dtype=np.float64).reshape(-1, 3))
    if options.show_ground_truth and item.ground_truth is not None:
        gt_offset = ground_truth_offset(item, options)
        points.append(_occupied_corners(item.ground_truth, box, options.threshold) + gt_offset)
        center = center + gt_offset / 2
    views = _selected_views(item, options)
    if options.frame == "all" and views and options.show_cameras and item.cameras is not None:
        points.append(item.cameras[torch.tensor(views)].detach().double().centers.numpy())
    pts = np.concatenate(points)
    radius = float(np.linalg.norm(pts - center, axis=1).max())
    return (float(center[0]), float(center[1]), float(center[2])), max(radius, 1e-6)


def everything_bounds(item: ViewItem) -> tuple[tuple[float, float, float], float]:
    """Centre and radius of the sphere around all an item can show: its box, the ground
    truth's, a mesh and every camera centre (for clipping planes)."""
    box = item.box
    points = [np.asarray(box.min), np.asarray(box.max)]
    if item.mesh is not None:
        points.append(np.asarray(item.mesh[0], dtype=np.float64))
    if item.ground_truth is not None:
        gt_offset = ground_truth_offset(item, ViewOptions())
        points += [np.asarray(box.min) + gt_offset, np.asarray(box.max) + gt_offset]
    if item.cameras is not None:
        points.append(item.cameras.detach().double().centers.numpy())
    pts = np.concatenate([np.reshape(p, (-1, 3)) for p in points])
    center = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    radius = float(np.linalg.norm(pts - center, axis=1).max())
    return (float(center[0]), float(center[1]), float(center[2])), radius


def _unit_up(up: Sequence[float] | np.ndarray | torch.Tensor) -> tuple[float, float, float]:
    if isinstance(up, torch.Tensor):
        up = up.detach().cpu().numpy()
    u = np.asarray(up, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(u)) if u.size == 3 and np.isfinite(u).all() else 0.0
    if n < 1e-9:
        raise ValueError(f"up must be a non-zero finite (x, y, z); got {np.asarray(up).tolist()}")
    u = u / n
    return (float(u[0]), float(u[1]), float(u[2]))


def up_frame(up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """``(3, 3)`` rotation whose columns are the world directions of the orbit's axes
    ``x``, ``y`` (= ``up``) and ``z``: the smallest rotation taking persp3d's +y to ``up``
    (the identity for +y; for +z up it takes +z to -y, so azimuth 0 looks along +y).

    Convention: orbit directions ``(cos el sin az, sin el, cos el cos az)`` are mapped to
    the world by this matrix, so azimuth turns about ``up`` and elevation rises toward it.
    """
    u = np.asarray(_unit_up(up))
    y = np.array([0.0, 1.0, 0.0])
    c = float(y @ u)
    if c < -1.0 + 1e-9:  # up = -y: half a turn about x
        return np.diag([1.0, -1.0, -1.0])
    v = np.cross(y, u)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def fit_view(
    center: Sequence[float],
    radius: float,
    azimuth: float | Sequence[float] = 30.0,
    elevation: float = 25.0,
    fov: float = 40.0,
    image_size: int | Sequence[int] = (480, 640),
    margin: float = 1.15,
    up: Sequence[float] = (0.0, 1.0, 0.0),
) -> Cameras:
    """Orbit cameras looking at ``center`` from far enough that a sphere of ``radius``
    fits the picture, upright about ``up``.

    Args:
        center: ``(3,)`` world point looked at.
        radius: radius of the sphere to fit.
        azimuth: degrees, one or ``(N,)`` (from +z toward +x about +y).
        elevation: degrees (positive looks down).
        fov: vertical field of view in degrees.
        image_size: ``(H, W)``.
        margin: extra room around the sphere.
        up: ``(3,)`` world direction shown upright; azimuth turns about it and elevation
            rises toward it (:func:`up_frame`).

    Returns:
        ``Cameras`` of batch shape ``()`` for one azimuth, else ``(N,)``; for ``up`` = +y
        exactly :func:`persp3d.spherical_cameras` (the orbit convention of DESIGN.md).
    """
    H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    half_v = math.radians(fov) / 2
    half_h = math.atan(math.tan(half_v) * W / H)
    distance = margin * max(radius, 1e-6) / math.sin(min(half_v, half_h))
    cams = spherical_cameras(azimuth, elevation, distance, fov=fov, image_size=(H, W))
    frame = torch.from_numpy(up_frame(up))  # (3, 3) orbit axes -> world
    R = cams.R.double() @ frame.T  # the orbit camera turned into the world
    target = torch.tensor([float(c) for c in center], dtype=torch.float64)
    t = cams.t.double() - (R @ target.unsqueeze(-1)).squeeze(-1)
    return Cameras(cams.K.double(), R, t, (H, W)).to(dtype=torch.float32)
