"""Procedural shapes: solid primitives with exact inside tests, and categories built from them.

Source of the embedded default dataset: a shape yields a triangle mesh for rendering
(:mod:`persp3d.datasets.render`) and exact ground-truth occupancy at any resolution.

Convention:
    World frame of persp3d: right-handed, +y up; objects face +z (the orbit camera at
    azimuth 0 sees their front). :meth:`Shape.normalized` centres the bounding box on the
    volume box and scales uniformly so the shape fits inside it (see
    :func:`normalization_transform`). Occupancy is evaluated at voxel centres
    ``box.min + (i + 0.5, j + 0.5, k + 0.5) * voxel_size`` and returned as ``(1, D, H, W)``
    with D <-> z, H <-> y, W <-> x, as :meth:`persp3d.VolumeBox.voxel_centers` lays them out.

Every primitive is a closed solid described twice, consistently: analytically (an inside
test in its local frame, which is what the occupancy uses, so it is exact and does not
depend on a renderer) and as a closed triangle mesh (what is rendered). Curved primitives
are meshed with 48 segments; the mesh is inscribed in the analytic surface and differs from
it by less than 0.25 % of the radius. A shape's mesh is the concatenation of its parts'
meshes: parts may overlap, and ray casting of overlapping closed parts still gives the
right silhouettes and depth.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from persp3d.volume import VolumeBox

__all__ = [
    "CATEGORIES",
    "THIN_PARTS",
    "Box",
    "Ellipsoid",
    "Extrusion",
    "Part",
    "Primitive",
    "Revolve",
    "Shape",
    "cylinder",
    "item_seed",
    "make_shape",
    "normalization_transform",
    "rotation_between",
    "torus_arc",
    "tube",
]

SEGMENTS = 48


# -- frames ----------------------------------------------------------------------------------
def rotation_between(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``(3, 3)`` rotation taking unit direction ``a`` onto ``b`` (Rodrigues)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        # 180 degrees about any axis perpendicular to a.
        perp = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        axis = np.cross(a, perp)
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _rot(axis: str, degrees: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``degrees`` about world axis ``"x"``, ``"y"`` or ``"z"``."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# -- primitives ------------------------------------------------------------------------------
class Primitive(ABC):
    """A closed solid in a local frame, placed by ``p_world = scale * rotation @ p_local + translation``.

    Subclasses implement ``_inside_local(points_local) -> (N,) bool`` and
    ``_mesh_local() -> (vertices (M, 3), faces (F, 3))`` with outward-facing triangles.
    """

    def __init__(
        self,
        translation: Sequence[float] = (0.0, 0.0, 0.0),
        rotation: np.ndarray | None = None,
        scale: float = 1.0,
    ) -> None:
        self.translation = np.asarray(translation, dtype=np.float64).reshape(3)
        self.rotation = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
        self.scale = float(scale)

    @abstractmethod
    def _inside_local(self, points_local: np.ndarray) -> np.ndarray:
        """``(N, 3)`` local points -> ``(N,)`` bool, inside the primitive."""

    @abstractmethod
    def _mesh_local(self) -> tuple[np.ndarray, np.ndarray]:
        """Closed triangle mesh in local coordinates: vertices ``(n, 3)``, faces ``(m, 3)``."""

    def to_local(self, points_world: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world points -> ``(N, 3)`` local points."""
        return (points_world - self.translation) @ self.rotation / self.scale  # R^T (p - t) / s

    def inside(self, points_world: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world points -> ``(N,)`` bool, True inside the closed solid."""
        return self._inside_local(self.to_local(points_world))

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vertices (M, 3) world, faces (F, 3) int64)``, a closed outward-oriented mesh."""
        if getattr(self, "_mesh", None) is None:
            v, f = self._mesh_local()
            self._mesh = (self.scale * v @ self.rotation.T + self.translation, f)
        return self._mesh

    def bounds(self, pad: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """``(min (3,), max (3,))`` world bounds of the mesh, padded by ``pad`` x its extent
        (the analytic surface bulges past the inscribed mesh by less than that)."""
        v, _ = self.mesh()
        margin = pad * float(np.ptp(v, axis=0).max()) + 1e-9
        return v.min(0) - margin, v.max(0) + margin

    def transformed(self, scale: float, offset: np.ndarray) -> Primitive:
        """A copy placed by ``p -> scale * p + offset`` after this primitive's own placement."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.scale = self.scale * scale
        out.translation = self.translation * scale + np.asarray(offset, dtype=np.float64)
        out._mesh = None
        return out


class Box(Primitive):
    """Axis-aligned (in its local frame) box of edge lengths ``size`` centred at the origin."""

    def __init__(self, size: Sequence[float], **placement) -> None:
        super().__init__(**placement)
        self.half = np.asarray(size, dtype=np.float64).reshape(3) / 2.0

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        return np.all(np.abs(p) <= self.half, axis=-1)

    def _mesh_local(self) -> tuple[np.ndarray, np.ndarray]:
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        faces = np.array(
            [
                [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # -x, +x
                [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # -y, +y
                [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # -z, +z
            ]
        )  # fmt: skip
        return corners * self.half, faces


class Ellipsoid(Primitive):
    """Ellipsoid of semi-axes ``radii`` (local x, y, z) centred at the origin."""

    def __init__(self, radii: Sequence[float], **placement) -> None:
        super().__init__(**placement)
        self.radii = np.asarray(radii, dtype=np.float64).reshape(3)

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        return np.sum((p / self.radii) ** 2, axis=-1) <= 1.0

    def _mesh_local(self) -> tuple[np.ndarray, np.ndarray]:
        n_lat, n_lon = SEGMENTS // 2, SEGMENTS
        theta = np.linspace(0.0, np.pi, n_lat + 1)[1:-1]  # polar angle from +y, poles apart
        phi = np.arange(n_lon) * 2.0 * np.pi / n_lon
        st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
        ring = np.stack(
            [st * np.cos(phi), np.broadcast_to(ct, (len(theta), n_lon)), -st * np.sin(phi)], -1
        ).reshape(-1, 3)
        verts = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]])
        faces = []
        top, bottom = 0, len(verts) - 1

        def idx(i: int, j: int) -> int:
            return 1 + i * n_lon + (j % n_lon)

        for j in range(n_lon):
            faces.append([top, idx(0, j), idx(0, j + 1)])
            faces.append([bottom, idx(n_lat - 2, j + 1), idx(n_lat - 2, j)])
        for i in range(n_lat - 2):
            for j in range(n_lon):
                a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
                faces += [[a, c, d], [a, d, b]]
        return verts * self.radii, _orient_outward(verts * self.radii, np.array(faces))


class Revolve(Primitive):
    """Solid of revolution of a closed 2-D profile about the local y axis.

    Args:
        profile: ``(M, 2)`` polygon ``(r, y)`` with ``r >= 0`` (vertices on the axis allowed),
            any orientation; non-convex profiles are fine for a full revolution.
        arc: ``None`` for a full turn, or ``(start, end)`` degrees of the angle
            ``atan2(z, x)`` (local) swept by the profile; the profile must then be convex
            (its end caps are fan-triangulated).

    Cylinders, cones, frustums, tubes (open shells), bottles, cups and torus arcs are all
    revolutions; see the helpers :func:`cylinder`, :func:`tube`, :func:`torus_arc`.
    """

    def __init__(
        self,
        profile: Sequence[Sequence[float]],
        arc: tuple[float, float] | None = None,
        **placement,
    ) -> None:
        super().__init__(**placement)
        prof = np.asarray(profile, dtype=np.float64).reshape(-1, 2)
        if len(prof) < 3 or (prof[:, 0] < 0).any():
            raise ValueError(f"profile must hold >= 3 (r, y) points with r >= 0; got {prof}")
        self.profile = prof
        self.arc = None if arc is None else (float(arc[0]), float(arc[1]))

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        r = np.hypot(p[:, 0], p[:, 2])
        inside = _points_in_polygon(np.stack([r, p[:, 1]], -1), self.profile)
        if self.arc is not None:
            angle = np.degrees(np.arctan2(p[:, 2], p[:, 0]))
            a0, a1 = self.arc
            inside &= np.mod(angle - a0, 360.0) <= (a1 - a0)
        return inside

    def _mesh_local(self) -> tuple[np.ndarray, np.ndarray]:
        prof = self.profile
        full = self.arc is None
        if full:
            angles = np.arange(SEGMENTS) * 2.0 * np.pi / SEGMENTS
        else:
            a0, a1 = (math.radians(a) for a in self.arc)
            n = max(2, math.ceil(SEGMENTS * (a1 - a0) / (2 * math.pi)))
            angles = np.linspace(a0, a1, n + 1)
        n_ang = len(angles)
        verts: list[np.ndarray] = []
        ids: list[np.ndarray] = []  # per profile vertex: (n_ang,) vertex ids
        for r, y in prof:
            if r <= 1e-12 and full:
                ids.append(np.full(n_ang, len(verts)))
                verts.append(np.array([0.0, y, 0.0]))
            else:
                ids.append(np.arange(len(verts), len(verts) + n_ang))
                verts.extend(
                    np.stack([r * np.cos(angles), np.full(n_ang, y), r * np.sin(angles)], -1)
                )
        faces: list[list[int]] = []
        m = len(prof)
        steps = n_ang if full else n_ang - 1
        for a in range(m):
            ia, ib = ids[a], ids[(a + 1) % m]
            for k in range(steps):
                k1 = (k + 1) % n_ang
                quad = [ia[k], ib[k], ib[k1], ia[k1]]
                for tri in ([quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]):
                    if len(set(tri)) == 3:
                        faces.append(tri)
        if not full:
            for k in (0, n_ang - 1):
                ring = [ids[a][k] for a in range(m)]
                for a in range(1, m - 1):
                    tri = [ring[0], ring[a], ring[a + 1]]
                    if k == 0:  # the two end caps face opposite ways
                        tri = tri[::-1]
                    if len(set(tri)) == 3:
                        faces.append(tri)
        v = np.asarray(verts)
        return v, _orient_outward(v, np.asarray(faces, dtype=np.int64))


class Extrusion(Primitive):
    """A convex polygon in the local xy plane extruded along local z over ``[-depth/2, depth/2]``."""

    def __init__(self, polygon: Sequence[Sequence[float]], depth: float, **placement) -> None:
        super().__init__(**placement)
        poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if _polygon_area(poly) < 0:
            poly = poly[::-1]
        self.polygon = poly
        self.depth = float(depth)

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        inside = np.abs(p[:, 2]) <= self.depth / 2.0
        poly = self.polygon
        for a, b in zip(poly, np.roll(poly, -1, axis=0)):
            edge = b - a
            inside &= edge[0] * (p[:, 1] - a[1]) - edge[1] * (p[:, 0] - a[0]) >= 0.0
        return inside

    def _mesh_local(self) -> tuple[np.ndarray, np.ndarray]:
        poly = self.polygon
        m = len(poly)
        h = self.depth / 2.0
        v = np.concatenate([np.c_[poly, np.full(m, -h)], np.c_[poly, np.full(m, h)]])
        faces = []
        for a in range(m):
            b = (a + 1) % m
            faces += [[a, b, m + b], [a, m + b, m + a]]
        for a in range(1, m - 1):
            faces += [[0, a + 1, a], [m, m + a, m + a + 1]]
        return v, _orient_outward(v, np.asarray(faces, dtype=np.int64))


def cylinder(radius: float, height: float, radius_top: float | None = None, **placement) -> Revolve:
    """Solid cylinder (or frustum) about local y, from ``-height/2`` to ``height/2``."""
    rt = radius if radius_top is None else radius_top
    h = height / 2.0
    return Revolve([(0.0, -h), (radius, -h), (rt, h), (0.0, h)], **placement)


def tube(r_in: float, r_out: float, height: float, *, flare: float = 0.0, **placement) -> Revolve:
    """Open shell of revolution (wall ``r_out - r_in``); the top radius grows by ``flare``."""
    h = height / 2.0
    return Revolve([(r_in, -h), (r_out, -h), (r_out + flare, h), (r_in + flare, h)], **placement)


def torus_arc(
    major: float, minor: float, arc: tuple[float, float] = (0.0, 360.0), **placement
) -> Revolve:
    """Torus (a circle of radius ``minor`` at distance ``major`` from local y) over ``arc``."""
    a = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    profile = np.stack([major + minor * np.cos(a), minor * np.sin(a)], -1)
    return Revolve(profile, arc=None if arc == (0.0, 360.0) else arc, **placement)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _points_in_polygon(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points, ``(M, 2)`` polygon -> ``(N,)`` bool by the crossing rule."""
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), dtype=bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > y) != (y1 > y)
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    # Points on the axis edge or exactly on a boundary count as inside (closed solid).
    return inside


def _orient_outward(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip all faces if the closed mesh's signed volume is negative."""
    tri = verts[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    return faces if volume >= 0 else faces[:, ::-1].copy()


# -- shapes ----------------------------------------------------------------------------------
@dataclass
class Part:
    """One primitive of a shape with its name (``"leg"``, ``"wing"``) and RGB colour in [0, 1]."""

    primitive: Primitive
    name: str
    color: tuple[float, float, float] = (0.7, 0.7, 0.7)


@dataclass
class Shape:
    """A union of parts: exact occupancy and a renderable mesh.

    Attributes:
        parts: the primitives, each with a name and a colour.
        category: e.g. ``"chair"``.
        seed: the seed it was built from (``None`` for hand-made shapes).
        thin_parts: names of the parts about a voxel thick at 32^3 (legs, wings), where
            voxel ground truth is weakest (see :data:`THIN_PARTS`).
    """

    parts: list[Part]
    category: str = ""
    seed: int | None = None
    thin_parts: tuple[str, ...] = field(default_factory=tuple)

    def inside(self, points_world: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(N, 3)`` world points -> ``(N,)`` bool occupancy (union of the parts).

        Each part tests only the points inside its (slightly padded) bounding box.
        """
        pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        occ = np.zeros(len(pts), dtype=bool)
        for part in self.parts:
            lo, hi = part.primitive.bounds()
            sel = np.flatnonzero(~occ & np.all((pts >= lo) & (pts <= hi), axis=1))
            if len(sel):
                occ[sel] = part.primitive.inside(pts[sel])
        return occ

    def voxels(
        self, resolution: int, box: VolumeBox | None = None, supersample: int = 1
    ) -> np.ndarray:
        """Exact occupancy on the voxel grid of ``box``.

        Args:
            resolution: ``R``; the grid is ``R^3``.
            box: the volume box (default ``VolumeBox()``).
            supersample: ``s``; each voxel is tested at ``s^3`` evenly spread points and the
                result is the occupied fraction (``1``: the voxel centre only, 0 or 1).

        Returns:
            ``(1, R, R, R)`` float32 occupancy, indexed ``(z, y, x)`` = ``(D, H, W)``.

        Convention: voxel ``(k, j, i)`` is centred at ``box.min + (i+.5, j+.5, k+.5) * size / R``,
        the points of :meth:`persp3d.VolumeBox.voxel_centers`.
        """
        box = VolumeBox() if box is None else box
        if int(resolution) < 1 or int(supersample) < 1:
            raise ValueError(
                f"resolution and supersample must be >= 1; got {resolution}, {supersample}"
            )
        n = int(resolution) * int(supersample)
        lo_box = np.asarray(box.min)
        step = np.asarray(box.size) / n
        axes = [lo_box[a] + (np.arange(n) + 0.5) * step[a] for a in range(3)]  # x, y, z centres
        occ = np.zeros((n, n, n), dtype=bool)  # (z, y, x)
        for part in self.parts:
            lo, hi = part.primitive.bounds()
            (i0, i1), (j0, j1), (k0, k1) = (
                (
                    int(np.searchsorted(axes[a], lo[a])),
                    int(np.searchsorted(axes[a], hi[a], "right")),
                )
                for a in range(3)
            )
            if i0 >= i1 or j0 >= j1 or k0 >= k1:
                continue
            z, y, x = np.meshgrid(axes[2][k0:k1], axes[1][j0:j1], axes[0][i0:i1], indexing="ij")
            pts = np.stack([x, y, z], -1).reshape(-1, 3)  # world (x, y, z)
            block = occ[k0:k1, j0:j1, i0:i1]
            block |= part.primitive.inside(pts).reshape(block.shape)
        out = occ.astype(np.float32)
        if supersample > 1:
            s, r = int(supersample), int(resolution)
            out = out.reshape(r, s, r, s, r, s).mean(axis=(1, 3, 5))
        return out[None]  # (1, D, H, W)

    def mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``vertices (M, 3) float64``, ``faces (F, 3) int64``, ``face_colors (F, 3) float32``.

        The concatenation of the parts' closed meshes (overlapping, not merged).
        """
        verts, faces, colors = [], [], []
        offset = 0
        for part in self.parts:
            v, f = part.primitive.mesh()
            verts.append(v)
            faces.append(f + offset)
            colors.append(np.tile(np.asarray(part.color, np.float32), (len(f), 1)))
            offset += len(v)
        return np.concatenate(verts), np.concatenate(faces), np.concatenate(colors)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(min (3,), max (3,))`` of the mesh vertices (unpadded)."""
        v = np.concatenate([p.primitive.mesh()[0] for p in self.parts])
        return v.min(0), v.max(0)

    def normalized(
        self, box: VolumeBox | None = None, fill: float = 0.9, max_radius: float = 0.62
    ) -> Shape:
        """This shape moved and uniformly scaled into ``box`` (see :func:`normalization_transform`)."""
        v = np.concatenate([p.primitive.mesh()[0] for p in self.parts])
        scale, offset = normalization_transform(v, box, fill, max_radius)
        parts = [Part(p.primitive.transformed(scale, offset), p.name, p.color) for p in self.parts]
        return Shape(parts, self.category, self.seed, self.thin_parts)


def normalization_transform(
    vertices: np.ndarray,
    box: VolumeBox | None = None,
    fill: float = 0.9,
    max_radius: float | None = 0.62,
) -> tuple[float, np.ndarray]:
    """Uniform scale and offset ``p -> scale * p + offset`` that put ``vertices`` into ``box``.

    The bounding box's centre goes to the box centre; the scale makes the longest side
    ``fill`` times the box's shortest edge and, if ``max_radius`` is given, also keeps every
    vertex within ``max_radius * box edge`` of the centre (with the defaults, the orbit
    cameras at distance 2 and 40 degrees fov never cut an object off).

    Args:
        vertices: ``(N, 3)`` world points.

    Returns:
        ``(scale, offset (3,))``.
    """
    box = VolumeBox() if box is None else box
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    lo, hi = v.min(0), v.max(0)
    mid = (lo + hi) / 2.0
    edge = min(box.size)
    longest = float((hi - lo).max())
    if longest <= 0:
        raise ValueError("cannot normalise a shape of zero extent")
    scale = fill * edge / longest
    if max_radius is not None:
        radius = float(np.linalg.norm(v - mid, axis=1).max())
        scale = min(scale, max_radius * edge / radius)
    offset = np.asarray(box.center) - scale * mid
    return scale, offset


# -- categories ------------------------------------------------------------------------------
_PALETTE = np.array(
    [
        [0.80, 0.30, 0.25], [0.25, 0.45, 0.80], [0.30, 0.65, 0.35], [0.85, 0.70, 0.25],
        [0.60, 0.40, 0.70], [0.55, 0.35, 0.20], [0.75, 0.75, 0.72], [0.30, 0.30, 0.32],
        [0.20, 0.60, 0.65], [0.85, 0.50, 0.20],
    ]
)  # fmt: skip


class _Builder:
    """Collects parts of one object with a random palette."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        idx = rng.permutation(len(_PALETTE))[:3]
        jitter = rng.uniform(-0.06, 0.06, size=(3, 3))
        self.colors = [tuple(np.clip(_PALETTE[i] + j, 0, 1).tolist()) for i, j in zip(idx, jitter)]
        self.parts: list[Part] = []

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def add(self, primitive: Primitive, name: str, color: int = 0) -> None:
        self.parts.append(Part(primitive, name, self.colors[color]))

    def leg(self, x: float, z: float, y0: float, y1: float, thick: float, round_: bool, name="leg"):
        """A vertical leg from height ``y0`` to ``y1`` at ``(x, z)``."""
        h = y1 - y0
        at = (x, (y0 + y1) / 2, z)
        if round_:
            self.add(cylinder(thick / 2, h, translation=at), name, 1)
        else:
            self.add(Box((thick, h, thick), translation=at), name, 1)


def _chair(b: _Builder) -> None:
    w, d = b.u(0.42, 0.6), b.u(0.4, 0.55)
    seat_t, seat_h = b.u(0.05, 0.09), b.u(0.38, 0.5)
    leg_t = b.u(0.045, 0.07)
    round_legs = b.chance(0.3)
    b.add(Box((w, seat_t, d), translation=(0, seat_h, 0)), "seat", 0)
    if b.chance(0.2):  # swivel base: column and a five-spoke star
        b.add(
            cylinder(b.u(0.03, 0.045), seat_h - 0.06, translation=(0, (seat_h + 0.06) / 2, 0)),
            "leg",
            1,
        )
        spoke = b.u(0.25, 0.32)
        for k in range(5):
            rot = _rot("y", 72.0 * k + 90)
            b.add(
                Box((spoke, 0.05, 0.06), rotation=rot, translation=rot @ [spoke / 2, 0.045, 0]),
                "leg",
                1,
            )
    else:
        ix, iz = w / 2 - leg_t / 2 - b.u(0, 0.03), d / 2 - leg_t / 2 - b.u(0, 0.03)
        for sx in (-1, 1):
            for sz in (-1, 1):
                b.leg(sx * ix, sz * iz, 0.0, seat_h - seat_t / 2, leg_t, round_legs)
        if b.chance(0.4):  # side stretchers
            for sx in (-1, 1):
                b.add(
                    Box(
                        (leg_t * 0.8, leg_t * 0.8, 2 * iz), translation=(sx * ix, seat_h * 0.35, 0)
                    ),
                    "stretcher",
                    1,
                )
    back_h, back_t = b.u(0.35, 0.6), b.u(0.05, 0.08)
    tilt = b.u(0.0, 14.0)
    rot = _rot("x", -tilt)
    base = np.array([0.0, seat_h + seat_t / 2, -d / 2 + back_t / 2])
    if b.chance(0.35):  # slatted back: posts, top rail, slats
        n_slats = int(b.rng.integers(1, 4))
        post = b.u(0.05, 0.07)
        for sx in (-1, 1):
            b.add(
                Box(
                    (post, back_h, back_t),
                    rotation=rot,
                    translation=base + rot @ [sx * (w / 2 - post / 2), back_h / 2, 0],
                ),
                "back",
                0,
            )
        rail = b.u(0.07, 0.14)
        b.add(
            Box(
                (w, rail, back_t), rotation=rot, translation=base + rot @ [0, back_h - rail / 2, 0]
            ),
            "back",
            0,
        )
        for k in range(n_slats):
            x = -w / 2 + post + (k + 1) * (w - 2 * post) / (n_slats + 1)
            b.add(
                Box(
                    (0.05, back_h - rail, back_t * 0.7),
                    rotation=rot,
                    translation=base + rot @ [x, (back_h - rail) / 2, 0],
                ),
                "back",
                0,
            )
    else:
        b.add(
            Box((w, back_h, back_t), rotation=rot, translation=base + rot @ [0, back_h / 2, 0]),
            "back",
            0,
        )
    if b.chance(0.35):  # arms
        arm_h = b.u(0.18, 0.26)
        for sx in (-1, 1):
            x = sx * (w / 2 - 0.03)
            b.add(
                Box((0.06, arm_h, 0.05), translation=(x, seat_h + arm_h / 2, d / 2 - 0.06)),
                "arm",
                1,
            )
            b.add(Box((0.07, 0.05, d * 0.9), translation=(x, seat_h + arm_h, 0)), "arm", 1)


def _table(b: _Builder) -> None:
    round_top = b.chance(0.3)
    h, top_t = b.u(0.6, 0.8), b.u(0.04, 0.07)
    w = b.u(0.8, 1.5)
    d = w if round_top else b.u(0.5, 0.9)
    if round_top:
        b.add(cylinder(w / 2, top_t, translation=(0, h - top_t / 2, 0)), "top", 0)
    else:
        b.add(Box((w, top_t, d), translation=(0, h - top_t / 2, 0)), "top", 0)
    if round_top or b.chance(0.2):  # pedestal
        b.add(cylinder(b.u(0.04, 0.07), h - top_t, translation=(0, (h - top_t) / 2, 0)), "leg", 1)
        b.add(
            cylinder(b.u(0.2, 0.32) * max(w, d) / 1.2 + 0.1, 0.05, translation=(0, 0.025, 0)),
            "base",
            1,
        )
        return
    leg_t = b.u(0.05, 0.09)
    round_legs = b.chance(0.3)
    ix, iz = w / 2 - leg_t / 2 - b.u(0.0, 0.08), d / 2 - leg_t / 2 - b.u(0.0, 0.06)
    for sx in (-1, 1):
        for sz in (-1, 1):
            b.leg(sx * ix, sz * iz, 0.0, h - top_t, leg_t, round_legs)
    if b.chance(0.35):  # lower shelf
        b.add(Box((2 * ix, 0.04, 2 * iz), translation=(0, b.u(0.12, 0.25), 0)), "shelf", 0)
    elif b.chance(0.5):  # apron
        b.add(Box((2 * ix, 0.08, 2 * iz), translation=(0, h - top_t - 0.04, 0)), "apron", 1)


def _sofa(b: _Builder) -> None:
    w, d = b.u(1.3, 2.1), b.u(0.75, 1.0)
    leg_h = b.u(0.05, 0.12) if b.chance(0.6) else 0.0
    base_h = b.u(0.22, 0.32)
    seat_top = leg_h + base_h
    arm_w, arm_h = b.u(0.1, 0.22), b.u(0.55, 0.7)
    back_t, back_h = b.u(0.15, 0.25), b.u(0.7, 0.95)
    b.add(Box((w, base_h, d), translation=(0, leg_h + base_h / 2, 0)), "base", 0)
    b.add(
        Box(
            (w, back_h - leg_h, back_t),
            translation=(0, leg_h + (back_h - leg_h) / 2, -d / 2 + back_t / 2),
        ),
        "back",
        0,
    )
    if b.chance(0.85):
        for sx in (-1, 1):
            b.add(
                Box(
                    (arm_w, arm_h - leg_h, d),
                    translation=(sx * (w / 2 - arm_w / 2), leg_h + (arm_h - leg_h) / 2, 0),
                ),
                "arm",
                0,
            )
    n_cush = int(b.rng.integers(2, 4))
    inner = w - 2 * arm_w
    cush_t = b.u(0.08, 0.14)
    for k in range(n_cush):
        cw = inner / n_cush - 0.02
        x = -inner / 2 + (k + 0.5) * inner / n_cush
        b.add(
            Box(
                (cw, cush_t, d - back_t - 0.02), translation=(x, seat_top + cush_t / 2, back_t / 2)
            ),
            "cushion",
            1,
        )
    if leg_h > 0:
        for sx in (-1, 1):
            for sz in (-1, 1):
                b.leg(
                    sx * (w / 2 - 0.08), sz * (d / 2 - 0.08), 0.0, leg_h + 0.01, 0.06, b.chance(0.5)
                )


def _lamp(b: _Builder) -> None:
    base_r, base_h = b.u(0.12, 0.2), b.u(0.03, 0.06)
    if b.chance(0.7):
        b.add(cylinder(base_r, base_h, translation=(0, base_h / 2, 0)), "base", 1)
    else:
        b.add(Box((2 * base_r, base_h, 2 * base_r), translation=(0, base_h / 2, 0)), "base", 1)
    pole_r, pole_h = b.u(0.025, 0.04), b.u(0.45, 0.9)
    b.add(cylinder(pole_r, pole_h, translation=(0, base_h + pole_h / 2, 0)), "pole", 1)
    top = base_h + pole_h
    x_shade = 0.0
    if b.chance(0.35):  # an arm reaching out
        reach = b.u(0.15, 0.3)
        b.add(
            cylinder(pole_r, reach, rotation=_rot("z", 90), translation=(reach / 2, top, 0)),
            "pole",
            1,
        )
        x_shade = reach
    r_bot, r_top = b.u(0.16, 0.26), b.u(0.07, 0.16)
    shade_h, wall = b.u(0.18, 0.3), b.u(0.035, 0.05)
    y_shade = top - shade_h * b.u(0.2, 0.5)
    b.add(
        tube(r_bot - wall, r_bot, shade_h, flare=r_top - r_bot, translation=(x_shade, y_shade, 0)),
        "shade",
        0,
    )
    b.add(Ellipsoid((0.05, 0.07, 0.05), translation=(x_shade, y_shade - 0.02, 0)), "bulb", 2)
    if x_shade:
        b.add(
            cylinder(0.02, top - y_shade, translation=(x_shade, (top + y_shade) / 2, 0)), "pole", 1
        )


def _airplane(b: _Builder) -> None:
    length, r = b.u(0.85, 1.1), b.u(0.055, 0.085)
    nose, tail = b.u(0.12, 0.22) * length, b.u(0.2, 0.3) * length
    prof = [
        (0.0, -length / 2),
        (r * 0.35, -length / 2 + tail * 0.1),
        (r, -length / 2 + tail),
        (r, length / 2 - nose),
        (r * 0.6, length / 2 - nose * 0.35),
        (0.0, length / 2),
    ]
    to_z = rotation_between((0, 1, 0), (0, 0, 1))
    b.add(Revolve(prof, rotation=to_z), "fuselage", 0)
    span, chord = b.u(0.75, 1.05), b.u(0.14, 0.24)
    sweep, taper, wing_t = b.u(0.0, 0.25), b.u(0.35, 0.8), b.u(0.035, 0.05)
    wing_z, wing_y = b.u(-0.1, 0.1) * length, b.u(-0.6, 0.4) * r
    # Planform polygon in local (x, y) = world (x, -z); extruded along local z = world y.
    flat = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]).T  # columns: images of local x, y, z
    for sx in (-1, 1):
        # Root chord at local y in [-chord/2, chord/2]; the tip is swept back (world -z).
        poly = [
            (0.0, -chord / 2),
            (0.0, chord / 2),
            (sx * span / 2, sweep - chord / 2 + taper * chord),
            (sx * span / 2, sweep - chord / 2),
        ]
        b.add(Extrusion(poly, wing_t, rotation=flat, translation=(0, wing_y, wing_z)), "wing", 1)
        if b.chance(0.6):
            ex = sx * span * b.u(0.18, 0.3)
            lead = wing_z + chord / 2 - sweep * abs(ex) / (span / 2)  # leading edge at ex
            at = (ex, wing_y - r * 0.55, lead - chord * 0.25)
            b.add(cylinder(r * 0.45, chord * 0.9, rotation=to_z, translation=at), "engine", 2)
    tail_span, tail_chord = span * b.u(0.3, 0.45), chord * b.u(0.6, 0.9)
    tail_z = -length / 2 + tail_chord * 0.7
    for sx in (-1, 1):
        tip = sx * tail_span / 2
        poly = [
            (0.0, -tail_chord / 2),
            (0.0, tail_chord / 2),
            (tip, tail_chord / 2),
            (tip, 0.1 * tail_chord),
        ]
        b.add(
            Extrusion(poly, wing_t * 0.9, rotation=flat, translation=(0, r * 0.3, tail_z)),
            "stabilizer",
            1,
        )
    fin_h = b.u(0.12, 0.22)
    fin = [
        (-tail_chord / 2, 0.0),
        (tail_chord * 0.6, 0.0),
        (-tail_chord * 0.1, fin_h + r),
        (-tail_chord / 2, fin_h + r),
    ]
    # Fin polygon in local (x, y) = world (z, y); extruded along world x.
    side = np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]]).T
    b.add(
        Extrusion(fin, wing_t, rotation=side, translation=(0, 0, tail_z - tail_chord * 0.05)),
        "fin",
        1,
    )


def _car(b: _Builder) -> None:
    length, width = b.u(0.9, 1.15), b.u(0.42, 0.52)
    wheel_r, wheel_w = b.u(0.08, 0.11), b.u(0.06, 0.09)
    clear = wheel_r * b.u(0.5, 0.8)
    body_h = b.u(0.14, 0.2)
    b.add(Box((width, body_h, length), translation=(0, clear + body_h / 2, 0)), "body", 0)
    cab_len = length * b.u(0.4, 0.6)
    cab_h = b.u(0.12, 0.18)
    cab_z = b.u(-0.12, 0.05) * length
    slope_f, slope_b = b.u(0.08, 0.2) * length, b.u(0.03, 0.15) * length
    y0 = clear + body_h
    # Side profile in local (x, y) = world (z, y), extruded along world x.
    side = np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]]).T
    prof = [
        (cab_z - cab_len / 2, 0.0),
        (cab_z + cab_len / 2, 0.0),
        (cab_z + cab_len / 2 - slope_f, cab_h),
        (cab_z - cab_len / 2 + slope_b, cab_h),
    ]
    b.add(
        Extrusion(prof, width * b.u(0.85, 0.95), rotation=side, translation=(0, y0 - 0.01, 0)),
        "cabin",
        2,
    )
    to_x = rotation_between((0, 1, 0), (1, 0, 0))
    wz = length / 2 - wheel_r * b.u(1.2, 1.6)
    for sx in (-1, 1):
        for sz in (-1, 1):
            b.add(
                cylinder(
                    wheel_r,
                    wheel_w,
                    rotation=to_x,
                    translation=(sx * (width / 2 - wheel_w * 0.3), wheel_r, sz * wz),
                ),
                "wheel",
                1,
            )
    if b.chance(0.25):
        b.add(
            Box((width * 0.9, 0.03, 0.08), translation=(0, y0 + 0.07, -length / 2 + 0.05)),
            "spoiler",
            1,
        )
        for sx in (-1, 1):
            b.add(
                Box(
                    (0.03, 0.07, 0.04),
                    translation=(sx * width * 0.3, y0 + 0.035, -length / 2 + 0.05),
                ),
                "spoiler",
                1,
            )


def _mug(b: _Builder) -> None:
    rad, h = b.u(0.28, 0.4), b.u(0.55, 0.95)
    wall, bottom = b.u(0.05, 0.08), b.u(0.05, 0.09)
    flare = b.u(0.0, 0.08)
    prof = [
        (0.0, 0.0),
        (rad, 0.0),
        (rad + flare, h),
        (rad + flare - wall, h),
        (rad - wall, bottom),
        (0.0, bottom),
    ]
    b.add(Revolve(prof), "body", 0)
    major, minor = b.u(0.16, 0.24) * h / 0.7, b.u(0.035, 0.05)
    major = min(major, 0.45 * h)
    to_z = rotation_between((0, 1, 0), (0, 0, 1))
    b.add(
        torus_arc(
            major,
            minor,
            (-96.0, 96.0),
            rotation=to_z,
            translation=(rad + flare / 2 - wall * 0.3, h / 2, 0),
        ),
        "handle",
        1,
    )


def _bottle(b: _Builder) -> None:
    r, body_h = b.u(0.14, 0.26), b.u(0.45, 0.8)
    neck_r = r * b.u(0.3, 0.45)
    shoulder, neck_h = b.u(0.1, 0.25), b.u(0.12, 0.25)
    prof = [(0.0, 0.0), (r, 0.0), (r, body_h)]
    for a in np.linspace(0, np.pi / 2, 6)[1:]:
        prof.append((neck_r + (r - neck_r) * math.cos(a), body_h + shoulder * math.sin(a)))
    top = body_h + shoulder + neck_h
    prof += [(neck_r, top), (0.0, top)]
    b.add(Revolve(prof), "body", 0)
    cap_h = b.u(0.04, 0.08)
    b.add(cylinder(neck_r * 1.15, cap_h, translation=(0, top - cap_h / 2 + 0.01, 0)), "cap", 1)


def _bench(b: _Builder) -> None:
    w, d, t, h = b.u(1.0, 1.6), b.u(0.3, 0.45), b.u(0.05, 0.08), b.u(0.4, 0.5)
    b.add(Box((w, t, d), translation=(0, h - t / 2, 0)), "seat", 0)
    inset = b.u(0.05, 0.2)
    if b.chance(0.5):  # two panel legs
        for sx in (-1, 1):
            b.add(
                Box(
                    (b.u(0.05, 0.08), h - t, d * 0.9),
                    translation=(sx * (w / 2 - inset), (h - t) / 2, 0),
                ),
                "leg",
                1,
            )
    else:
        lt = b.u(0.05, 0.07)
        for sx in (-1, 1):
            for sz in (-1, 1):
                b.leg(sx * (w / 2 - inset), sz * (d / 2 - lt), 0.0, h - t, lt, b.chance(0.3))
    if b.chance(0.45):  # backrest: posts and a rail
        bh = b.u(0.3, 0.45)
        for sx in (-1, 1):
            b.add(
                Box(
                    (0.05, bh, 0.05), translation=(sx * (w / 2 - inset), h + bh / 2, -d / 2 + 0.03)
                ),
                "back",
                1,
            )
        b.add(
            Box((w, b.u(0.1, 0.2), 0.05), translation=(0, h + bh * 0.7, -d / 2 + 0.03)), "back", 0
        )


def _cabinet(b: _Builder) -> None:
    w, h, d = b.u(0.5, 1.0), b.u(0.6, 1.3), b.u(0.4, 0.6)
    foot = b.u(0.06, 0.12) if b.chance(0.6) else 0.0
    b.add(Box((w, h - foot, d), translation=(0, foot + (h - foot) / 2, 0)), "body", 0)
    b.add(Box((w + 0.04, 0.04, d + 0.03), translation=(0, h + 0.02, 0.0)), "top", 1)
    n_doors = int(b.rng.integers(1, 3))
    dw = w / n_doors
    for k in range(n_doors):
        x = -w / 2 + (k + 0.5) * dw
        b.add(
            Box(
                (dw - 0.03, h - foot - 0.05, 0.03),
                translation=(x, foot + (h - foot) / 2, d / 2 + 0.01),
            ),
            "door",
            2,
        )
        hx = x + (dw / 2 - 0.07) * (1 if k == 0 and n_doors == 2 else -1)
        b.add(
            Box((0.04, 0.12, 0.05), translation=(hx, foot + (h - foot) * 0.55, d / 2 + 0.035)),
            "handle",
            1,
        )
    if foot:
        for sx in (-1, 1):
            for sz in (-1, 1):
                b.leg(
                    sx * (w / 2 - 0.05), sz * (d / 2 - 0.05), 0.0, foot + 0.01, 0.06, b.chance(0.5)
                )


def _display(b: _Builder) -> None:
    w, h, t = b.u(0.7, 1.0), b.u(0.42, 0.62), b.u(0.045, 0.07)
    stand_h = b.u(0.12, 0.25)
    tilt = b.u(-8.0, 8.0)
    rot = _rot("x", tilt)
    centre = np.array([0.0, stand_h + h / 2, 0.0])
    b.add(Box((w, h, t), rotation=rot, translation=centre), "screen", 0)
    b.add(
        Box((w - 0.04, h - 0.04, 0.01), rotation=rot, translation=centre + rot @ [0, 0, t / 2]),
        "panel",
        2,
    )
    neck_w = b.u(0.05, 0.1)
    b.add(
        Box(
            (neck_w, stand_h + h * 0.3, 0.05),
            translation=(0, (stand_h + h * 0.3) / 2, -t / 2 - 0.02),
        ),
        "stand",
        1,
    )
    if b.chance(0.5):
        b.add(cylinder(b.u(0.14, 0.22), 0.04, translation=(0, 0.02, -0.02)), "base", 1)
    else:
        b.add(Box((b.u(0.3, 0.5), 0.04, b.u(0.18, 0.26)), translation=(0, 0.02, -0.02)), "base", 1)


def _watercraft(b: _Builder) -> None:
    length, beam = b.u(0.9, 1.2), b.u(0.25, 0.4)
    hull_h = b.u(0.12, 0.2)
    bow = b.u(0.2, 0.35) * length
    # Deck plan in local (x, y) = world (x, -z), extruded along world y.
    flat = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]).T
    plan = [
        (0.0, -length / 2),
        (beam / 2, -length / 2 + bow),
        (beam / 2, length / 2 - 0.02),
        (-beam / 2, length / 2 - 0.02),
        (-beam / 2, -length / 2 + bow),
    ]
    b.add(Extrusion(plan, hull_h, rotation=flat, translation=(0, hull_h / 2 + 0.05, 0)), "hull", 0)
    keel = [
        (0.0, -length / 2 + bow * 0.5),
        (beam * 0.3, -length / 2 + bow),
        (beam * 0.3, length / 2 - 0.08),
        (-beam * 0.3, length / 2 - 0.08),
        (-beam * 0.3, -length / 2 + bow),
    ]
    b.add(Extrusion(keel, 0.1, rotation=flat, translation=(0, 0.05, 0)), "keel", 1)
    deck = hull_h + 0.05
    if b.chance(0.5):  # sailing boat: mast and sail
        mast_h = b.u(0.45, 0.75)
        mz = b.u(-0.1, 0.05) * length
        b.add(cylinder(0.02, mast_h, translation=(0, deck + mast_h / 2, mz)), "mast", 1)
        side = np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]]).T
        boom = b.u(0.25, 0.4) * length
        sail = [(0.0, 0.05), (boom, 0.05), (0.0, mast_h * 0.95)]
        b.add(
            Extrusion(
                [(mz - x, y) for x, y in sail][::-1], 0.04, rotation=side, translation=(0, deck, 0)
            ),
            "sail",
            2,
        )
    else:  # motor boat: cabin
        cl = b.u(0.25, 0.4) * length
        b.add(
            Box(
                (beam * 0.7, b.u(0.1, 0.16), cl),
                translation=(0, deck + 0.06, b.u(-0.05, 0.1) * length),
            ),
            "cabin",
            2,
        )


CATEGORIES: dict[str, Callable[[_Builder], None]] = {
    "airplane": _airplane,
    "bench": _bench,
    "bottle": _bottle,
    "cabinet": _cabinet,
    "car": _car,
    "chair": _chair,
    "display": _display,
    "lamp": _lamp,
    "mug": _mug,
    "sofa": _sofa,
    "table": _table,
    "watercraft": _watercraft,
}
"""The procedural categories, in the spirit of ShapeNet's; each maps to its builder."""

THIN_PARTS: dict[str, tuple[str, ...]] = {
    "airplane": ("wing", "stabilizer", "fin"),
    "bench": ("leg",),
    "chair": ("leg", "stretcher", "arm"),
    "display": ("stand",),
    "lamp": ("pole", "shade"),
    "table": ("leg", "shelf", "apron"),
    "watercraft": ("mast", "sail"),
}
"""Parts about one voxel thick at 32^3: where voxel ground truth is weakest."""


def item_seed(seed: int, category: str, index: int) -> int:
    """A 64-bit seed for item ``index`` of ``category``, independent of how many items exist."""
    words = np.random.SeedSequence([int(seed), zlib.crc32(category.encode()), int(index)])
    hi, lo = (int(w) for w in words.generate_state(2, np.uint32))
    return (hi << 32) | lo


def make_shape(
    category: str,
    seed: int,
    *,
    box: VolumeBox | None = None,
    fill: float = 0.9,
    max_radius: float | None = 0.62,
) -> Shape:
    """A random shape of ``category``, deterministic in ``seed``, normalised into ``box``.

    Args:
        category: one of :data:`CATEGORIES`.
        seed: any integer; the same seed gives the same shape on every machine.
        box, fill, max_radius: see :func:`normalization_transform`.
    """
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {sorted(CATEGORIES)}; got {category!r}")
    rng = np.random.default_rng(
        np.random.SeedSequence([abs(int(seed)), zlib.crc32(category.encode())])
    )
    builder = _Builder(rng)
    CATEGORIES[category](builder)
    shape = Shape(builder.parts, category, int(seed), THIN_PARTS.get(category, ()))
    return shape.normalized(box, fill, max_radius)
