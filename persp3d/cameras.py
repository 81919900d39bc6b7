"""Batched pinhole cameras (K, R, t): projection, rays, look-at, orbits and conversions.

First stage of the data path: cameras -> frustum grid -> sampling -> projection -> loss.

Convention (the contract of DESIGN.md, mirrored here):
    * World: right-handed, +y up.
    * ``X_cam = R @ X_world + t`` (world -> camera); camera axes as in OpenCV: +x right,
      +y down, +z forward. ``depth`` is the camera-space z.
    * ``K`` holds pixel intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``. The image plane
      spans ``[0, W] x [0, H]``; the pixel in row j, column i has its centre at
      ``(u, v) = (i + 0.5, j + 0.5)``, so a centred principal point is ``(W / 2, H / 2)``.
      This is what PyTorch3D's ``cameras_from_opencv_projection`` assumes. Intrinsics from
      an OpenCV calibration put pixel centres at integers: add 0.5 to ``cx`` and ``cy``
      (``Cameras.from_opencv(..., integer_pixel_centers=True)`` does it).
    * ``image_size`` is ``(H, W)``; images are ``(..., C, H, W)`` with row 0 at the top.
    * Orbit cameras: azimuth turns from +z toward +x about +y, positive elevation looks down
      from above, centre ``= distance * (cos(el) sin(az), sin(el), cos(el) cos(az))``; the
      camera looks at the target, upright (world +y towards image row 0).
    * Angles in public functions are in degrees.

A :class:`Cameras` has a batch shape: ``()``, ``(V,)`` (views shared by every volume of a
batch) or ``(B, V)`` (each volume its own views), or any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from persp3d._checks import check_finite, check_image_size, check_shape, check_tensor

__all__ = [
    "Cameras",
    "intrinsics_from_fov",
    "look_at",
    "orbit_cameras",
    "r2n2_cameras",
    "spherical_cameras",
]

# OpenCV camera axes (x right, y down, z forward) <-> OpenGL/Blender (x right, y up, z back).
_CV_GL_FLIP = (1.0, -1.0, -1.0)

# 3D-R2N2's renderer: Blender's default 35 mm lens on a 32 mm sensor, camera at
# 1.75 * distance_ratio from the origin (see r2n2_cameras).
R2N2_FOCAL_NDC = 35.0 / 16.0  # = 2.1875, focal length in units of half the image width
R2N2_DISTANCE_SCALE = 1.75


def _rotation_tolerance(dtype: torch.dtype) -> float:
    return 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3


class Cameras:
    """Batched pinhole cameras.

    Args:
        K: ``(..., 3, 3)`` pixel intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.
        R: ``(..., 3, 3)`` world -> camera rotations (``det = +1``).
        t: ``(..., 3)`` world -> camera translations: ``X_cam = R @ X_world + t``.
        image_size: ``(H, W)`` in pixels, shared by every camera.

    The batch shapes of ``K``, ``R`` and ``t`` broadcast to the cameras' ``batch_shape``.
    Points and pixels of another floating dtype than the cameras' are handled in the
    promoted dtype (float32 cameras and float64 points give float64 results).
    The tensors keep their autograd history, so anything computed from a ``Cameras`` is
    differentiable with respect to ``K``, ``R`` and ``t``.

    Convention: see the module docstring (OpenCV axes, pixel centres at ``+0.5``).
    """

    def __init__(
        self,
        K: torch.Tensor,
        R: torch.Tensor,
        t: torch.Tensor,
        image_size: int | Sequence[int],
        *,
        validate: bool = True,
    ) -> None:
        for name, value in (("K", K), ("R", R), ("t", t)):
            check_tensor(value, name)
        check_shape(K, "... 3 3", "K")
        check_shape(R, "... 3 3", "R")
        check_shape(t, "... 3", "t")
        if not (K.device == R.device == t.device):
            raise ValueError(
                f"K, R and t must be on one device; got {K.device}, {R.device}, {t.device}"
            )
        dtype = torch.promote_types(torch.promote_types(K.dtype, R.dtype), t.dtype)
        try:
            batch_shape = torch.broadcast_shapes(K.shape[:-2], R.shape[:-2], t.shape[:-1])
        except RuntimeError as err:
            raise ValueError(
                "K, R and t must have broadcastable batch shapes; got "
                f"K {tuple(K.shape)}, R {tuple(R.shape)}, t {tuple(t.shape)}"
            ) from err
        self.K = K.to(dtype).expand(*batch_shape, 3, 3)
        self.R = R.to(dtype).expand(*batch_shape, 3, 3)
        self.t = t.to(dtype).expand(*batch_shape, 3)
        self.image_size: tuple[int, int] = check_image_size(image_size)
        if validate:
            self._validate()

    @classmethod
    def _new(cls, K, R, t, image_size) -> Cameras:
        """Construct without validation (inputs derived from validated cameras)."""
        return cls(K, R, t, image_size, validate=False)

    def _validate(self) -> None:
        with torch.no_grad():
            K, R, t = self.K.detach(), self.R.detach(), self.t.detach()
            check_finite(K, "K")
            check_finite(R, "R")
            check_finite(t, "t")
            if K.numel() == 0:
                return
            bottom = K[..., 2, :]
            expected = bottom.new_tensor([0.0, 0.0, 1.0])
            if not bool(torch.allclose(bottom, expected.expand_as(bottom), atol=1e-6)):
                raise ValueError(
                    f"K must have last row (0, 0, 1); got e.g. {bottom.reshape(-1, 3)[0].tolist()}"
                )
            if bool((K[..., 1, 0].abs() > 1e-6).any()):
                raise ValueError("K must be upper triangular (K[1, 0] == 0)")
            if not bool((K[..., 0, 0] > 0).all() & (K[..., 1, 1] > 0).all()):
                raise ValueError("K must have positive focal lengths fx = K[0, 0] and fy = K[1, 1]")
            tol = _rotation_tolerance(R.dtype)
            Rd = R.double()
            eye = torch.eye(3, dtype=torch.float64, device=R.device)
            err = (Rd @ Rd.transpose(-1, -2) - eye).abs().amax()
            if float(err) > tol:
                raise ValueError(
                    f"R must be a rotation matrix (orthonormal); R @ R.T differs from I by {float(err):.3g}"
                )
            det = torch.linalg.det(Rd)
            if bool((det < 0).any()):
                raise ValueError("R must be a proper rotation (det +1); got a reflection (det -1)")

    # -- shape and device -----------------------------------------------------------------
    @property
    def batch_shape(self) -> torch.Size:
        return self.t.shape[:-1]

    @property
    def ndim(self) -> int:
        return len(self.batch_shape)

    @property
    def device(self) -> torch.device:
        return self.t.device

    @property
    def dtype(self) -> torch.dtype:
        return self.t.dtype

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("len() of a single camera (batch shape ())")
        return self.batch_shape[0]

    def __getitem__(self, index: Any) -> Cameras:
        if index is Ellipsis or (isinstance(index, tuple) and Ellipsis in index):
            raise IndexError("Cameras indexing does not support Ellipsis")
        if not self.batch_shape:
            raise IndexError("cannot index a single camera (batch shape ())")
        return Cameras._new(self.K[index], self.R[index], self.t[index], self.image_size)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def reshape(self, *shape: int) -> Cameras:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        return Cameras._new(
            self.K.reshape(*shape, 3, 3),
            self.R.reshape(*shape, 3, 3),
            self.t.reshape(*shape, 3),
            self.image_size,
        )

    def flatten(self) -> Cameras:
        return self.reshape(-1)

    def expand(self, *shape: int) -> Cameras:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        return Cameras._new(
            self.K.expand(*shape, 3, 3),
            self.R.expand(*shape, 3, 3),
            self.t.expand(*shape, 3),
            self.image_size,
        )

    def unsqueeze(self, dim: int) -> Cameras:
        if dim < 0:
            dim += self.ndim + 1
        return Cameras._new(
            self.K.unsqueeze(dim), self.R.unsqueeze(dim), self.t.unsqueeze(dim), self.image_size
        )

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Cameras:
        """Move to ``device`` and/or cast to the floating ``dtype``."""
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype; got {dtype}")
        K, R, t = (x.to(device=device, dtype=dtype) for x in (self.K, self.R, self.t))
        if dtype is not None and torch.finfo(dtype).max < torch.finfo(self.dtype).max:
            for name, x in (("K", K), ("R", R), ("t", t)):  # a narrowing cast may overflow
                if not bool(torch.isfinite(x.detach()).all()):
                    raise ValueError(f"{name} does not fit in {dtype}: its values overflow")
        return Cameras._new(K, R, t, self.image_size)

    def cpu(self) -> Cameras:
        return self.to("cpu")

    def double(self) -> Cameras:
        return self.to(dtype=torch.float64)

    def float(self) -> Cameras:
        return self.to(dtype=torch.float32)

    def detach(self) -> Cameras:
        return Cameras._new(self.K.detach(), self.R.detach(), self.t.detach(), self.image_size)

    @staticmethod
    def cat(cameras: Sequence[Cameras], dim: int = 0) -> Cameras:
        """Concatenate cameras of equal image size along batch dimension ``dim``."""
        if not cameras:
            raise ValueError("cameras must hold at least one Cameras")
        sizes = {c.image_size for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cameras must share one image_size; got {sorted(sizes)}")
        ndim = cameras[0].ndim
        if ndim == 0:
            raise ValueError(
                "cameras must have a batch dimension to concatenate; got batch shape () "
                "(use Cameras.stack)"
            )
        if not -ndim <= dim < ndim:
            raise ValueError(f"dim must lie in [{-ndim}, {ndim}); got {dim}")
        if dim < 0:
            dim += ndim
        shapes = [tuple(c.batch_shape) for c in cameras]
        if any(
            len(sh) != ndim or sh[:dim] + sh[dim + 1 :] != shapes[0][:dim] + shapes[0][dim + 1 :]
            for sh in shapes
        ):
            raise ValueError(
                f"cameras must have equal batch shapes except along dim {dim}; got {shapes}"
            )
        return Cameras._new(
            torch.cat([c.K for c in cameras], dim=dim),
            torch.cat([c.R for c in cameras], dim=dim),
            torch.cat([c.t for c in cameras], dim=dim),
            cameras[0].image_size,
        )

    @staticmethod
    def stack(cameras: Sequence[Cameras], dim: int = 0) -> Cameras:
        """Stack cameras of equal batch shape and image size along a new dimension ``dim``."""
        if not cameras:
            raise ValueError("cameras must hold at least one Cameras")
        sizes = {c.image_size for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cameras must share one image_size; got {sorted(sizes)}")
        ndim = cameras[0].ndim
        if not -ndim - 1 <= dim <= ndim:
            raise ValueError(f"dim must lie in [{-ndim - 1}, {ndim}]; got {dim}")
        if dim < 0:
            dim += ndim + 1
        shapes = [tuple(c.batch_shape) for c in cameras]
        if len(set(shapes)) != 1:
            raise ValueError(f"cameras must have equal batch shapes; got {shapes}")
        return Cameras._new(
            torch.stack([c.K for c in cameras], dim=dim),
            torch.stack([c.R for c in cameras], dim=dim),
            torch.stack([c.t for c in cameras], dim=dim),
            cameras[0].image_size,
        )

    # -- intrinsics and extrinsics --------------------------------------------------------
    @property
    def focal_length(self) -> torch.Tensor:
        """``(..., 2)`` ``(fx, fy)`` in pixels."""
        return torch.stack([self.K[..., 0, 0], self.K[..., 1, 1]], dim=-1)

    @property
    def principal_point(self) -> torch.Tensor:
        """``(..., 2)`` ``(cx, cy)`` in pixels (pixel centres at ``+0.5``)."""
        return self.K[..., :2, 2]

    @property
    def centers(self) -> torch.Tensor:
        """``(..., 3)`` camera centres in world coordinates: ``-R^T t``."""
        return -(self.R.transpose(-1, -2) @ self.t.unsqueeze(-1)).squeeze(-1)

    @property
    def forward(self) -> torch.Tensor:
        """``(..., 3)`` unit viewing directions (camera +z) in world coordinates."""
        return self.R[..., 2, :]

    def world_to_view(self) -> torch.Tensor:
        """``(..., 4, 4)`` homogeneous world -> camera matrices ``[R | t]``."""
        top = torch.cat([self.R, self.t.unsqueeze(-1)], dim=-1)
        bottom = self.t.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*self.batch_shape, 1, 4)
        return torch.cat([top, bottom], dim=-2)

    def projection_matrix(self) -> torch.Tensor:
        """``(..., 3, 4)`` ``P = K [R | t]`` mapping homogeneous world points to pixels."""
        return self.K @ torch.cat([self.R, self.t.unsqueeze(-1)], dim=-1)

    # -- points ---------------------------------------------------------------------------
    def _promoted(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, ...]:
        """``x``, K, R and t cast to one floating dtype, the promotion of ``x``'s and the
        cameras' (float32 cameras take float64 points and return float64)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        dtype = torch.promote_types(x.dtype, self.dtype)
        return x.to(dtype), self.K.to(dtype), self.R.to(dtype), self.t.to(dtype)

    def _broadcast_params(self, points: torch.Tensor, add_view_axis: bool):
        """K, R, t shaped to broadcast against ``points`` ``(..., N, 3)``, all in the
        promoted dtype of the points and the cameras."""
        points, K, R, t = self._promoted(points, "points")
        if add_view_axis and self.batch_shape:
            points = points.unsqueeze(-3)  # (..., 1, N, 3)
        return points, K.unsqueeze(-3), R.unsqueeze(-3), t.unsqueeze(-2)

    def world_to_camera(self, points_world: torch.Tensor) -> torch.Tensor:
        """World points ``(..., N, 3)`` -> camera points ``(..., *batch, N, 3)``.

        The points gain a view axis at -3 that broadcasts against the cameras' batch shape:
        ``(N, 3)`` with cameras ``(V,)`` gives ``(V, N, 3)``; ``(B, N, 3)`` with cameras
        ``(V,)`` or ``(B, V)`` gives ``(B, V, N, 3)``.
        """
        check_shape(points_world, "... N 3", "points")
        if points_world.is_floating_point():
            check_finite(points_world.detach(), "points")
        p, _, R, t = self._broadcast_params(points_world, add_view_axis=True)
        return (R @ p.unsqueeze(-1)).squeeze(-1) + t  # (..., V, N, 3)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points to pixels.

        Args:
            points: ``(..., N, 3)`` world ``(x, y, z)``.

        Returns:
            uv: ``(..., V, N, 2)`` pixel coordinates ``(u, v)`` (column, row), pixel centres
            at ``+0.5``; ``V`` stands for the cameras' batch shape (absent for a single camera).
            depth: ``(..., V, N)`` camera-space z. Points with ``depth <= 0`` lie behind the
            camera and their ``uv`` is meaningless.

        Convention: ``uv = (K @ (R @ X + t))[:2] / depth``.
        """
        points_cam = self.world_to_camera(points)  # (..., V, N, 3)
        K = self.K.to(points_cam.dtype).unsqueeze(-3)  # (*batch, 1, 3, 3)
        depth = points_cam[..., 2]
        xy = points_cam[..., :2] / depth.unsqueeze(-1)
        u = K[..., 0, 0] * xy[..., 0] + K[..., 0, 1] * xy[..., 1] + K[..., 0, 2]
        v = K[..., 1, 1] * xy[..., 1] + K[..., 1, 2]
        return torch.stack([u, v], dim=-1), depth

    def pixels_to_camera(self, uv: torch.Tensor, depth: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Back-project pixels to camera-space points at camera-space z = ``depth``.

        Args:
            uv: ``(*batch, N, 2)`` (or broadcastable) pixel coordinates.
            depth: ``(*batch, N)`` (or broadcastable) camera-space z.

        Returns:
            ``(*batch, N, 3)`` camera-space points.
        """
        check_shape(uv, "... 2", "uv")
        if isinstance(depth, torch.Tensor) and depth.is_floating_point():
            uv = uv.to(torch.promote_types(uv.dtype, depth.dtype))
        uv, K, _, _ = self._promoted(uv, "uv")
        K = K.unsqueeze(-3)  # (*batch, 1, 3, 3)
        fx, fy, s = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1]
        cx, cy = K[..., 0, 2], K[..., 1, 2]
        y = (uv[..., 1] - cy) / fy
        x = (uv[..., 0] - cx - s * y) / fx
        d = torch.as_tensor(depth, dtype=uv.dtype, device=uv.device)
        ones = torch.ones_like(x)
        return torch.stack(torch.broadcast_tensors(x, y, ones), dim=-1) * d.unsqueeze(-1)

    def camera_to_world(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Camera points ``(*batch, N, 3)`` (or broadcastable) -> world ``(*batch, N, 3)``."""
        check_shape(points_cam, "... 3", "points_cam")
        points_cam, _, R, t = self._promoted(points_cam, "points_cam")
        R = R.unsqueeze(-3)  # (*batch, 1, 3, 3)
        t = t.unsqueeze(-2)  # (*batch, 1, 3)
        return ((points_cam - t).unsqueeze(-2) @ R).squeeze(-2)  # R^T (p - t)

    def unproject(self, uv: torch.Tensor, depth: torch.Tensor | float) -> torch.Tensor:
        """Inverse of :meth:`project`: pixels and depths -> world points.

        Args:
            uv: ``(*batch, N, 2)`` pixel coordinates (broadcastable with the batch shape).
            depth: ``(*batch, N)`` camera-space z.

        Returns:
            ``(*batch, N, 3)`` world points.
        """
        if isinstance(depth, torch.Tensor):
            check_finite(depth.detach(), "depth")
        return self.camera_to_world(self.pixels_to_camera(uv, depth))

    def pixel_centers(self, out_size: int | Sequence[int] | None = None) -> torch.Tensor:
        """``(h, w, 2)`` pixel centres ``(u, v) = (i + 0.5, j + 0.5)`` of an image of
        ``out_size`` (default: ``image_size``), in that image's pixel units."""
        h, w = check_image_size(out_size if out_size is not None else self.image_size, "out_size")
        return pixel_grid(h, w, device=self.device, dtype=self.dtype)

    def rays(
        self, out_size: int | Sequence[int] | None = None, normalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel rays in world coordinates.

        Args:
            out_size: ``(h, w)`` of the ray image; intrinsics are rescaled to it
                (default: the cameras' ``image_size``).
            normalize: unit directions if True; else directions with camera-space z = 1, so
                ``origin + depth * direction`` is the point at camera depth ``depth``.

        Returns:
            origins: ``(*batch, h, w, 3)``; directions: ``(*batch, h, w, 3)``.
        """
        cams = self if out_size is None else self.resized(out_size)
        h, w = cams.image_size
        uv = cams.pixel_centers().reshape(1, h * w, 2)  # (1, hw, 2)
        dirs_cam = cams.pixels_to_camera(uv, 1.0)  # (*batch, hw, 3)
        dirs_world = (dirs_cam.unsqueeze(-2) @ cams.R.unsqueeze(-3)).squeeze(-2)  # R^T d
        if normalize:
            dirs_world = dirs_world / dirs_world.norm(dim=-1, keepdim=True)
        dirs_world = dirs_world.reshape(*cams.batch_shape, h, w, 3)
        origins = cams.centers[..., None, None, :].expand_as(dirs_world)
        return origins, dirs_world

    # -- image geometry -------------------------------------------------------------------
    def resized(self, h: int | Sequence[int], w: int | None = None) -> Cameras:
        """The same cameras for an image of ``(h, w)`` pixels covering the same field of view.

        Rows of ``K`` scale by ``w / W`` and ``h / H``; exact under the pixel-edge
        convention (the image plane is ``[0, W] x [0, H]``).
        """
        size = check_image_size(h if w is None else (h, w), "size")
        if size == self.image_size:
            return self
        H, W = self.image_size
        scale = self.K.new_tensor([size[1] / W, size[0] / H, 1.0])
        return Cameras._new(self.K * scale[:, None], self.R, self.t, size)

    def cropped(self, top: int, left: int, height: int, width: int) -> Cameras:
        """The cameras of the crop ``image[..., top:top + height, left:left + width]``."""
        size = check_image_size((height, width), "crop size")
        offset = self.K.new_tensor(
            [[0.0, 0.0, float(left)], [0.0, 0.0, float(top)], [0.0, 0.0, 0.0]]
        )
        return Cameras._new(self.K - offset, self.R, self.t, size)

    # -- conversions ----------------------------------------------------------------------
    @classmethod
    def from_opencv(
        cls,
        K: torch.Tensor,
        R: torch.Tensor,
        t: torch.Tensor,
        image_size: int | Sequence[int],
        *,
        integer_pixel_centers: bool = False,
    ) -> Cameras:
        """Cameras from OpenCV-style ``K``, ``R``, ``t`` (``x_cam = R x_world + t``).

        Args:
            K: ``(..., 3, 3)``; R: ``(..., 3, 3)``; t: ``(..., 3)`` or ``(..., 3, 1)``
                (``tvec``; use ``cv2.Rodrigues`` for an ``rvec``).
            image_size: ``(H, W)``.
            integer_pixel_centers: False (default) takes ``K`` as persp3d and PyTorch3D's
                ``cameras_from_opencv_projection`` do, with pixel centres at ``+0.5``. True
                takes ``K`` from an OpenCV calibration, where the centre of pixel (0, 0) is
                at (0, 0): ``0.5`` is added to ``cx`` and ``cy``.
        """
        K, R, t = _as_float_tensors(K, R, t)
        if t.ndim >= 2 and t.shape[-1] == 1 and t.shape[-2] == 3:
            t = t[..., 0]
        if integer_pixel_centers:
            K = K + K.new_tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
        return cls(K, R, t, image_size)

    def to_opencv(self, *, integer_pixel_centers: bool = False) -> tuple[torch.Tensor, ...]:
        """``(K, R, t)``; with ``integer_pixel_centers`` ``cx, cy`` lose the ``0.5`` shift
        (OpenCV calibration convention). Inverse of :meth:`from_opencv`."""
        K = self.K
        if integer_pixel_centers:
            K = K - K.new_tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
        return K, self.R, self.t

    @classmethod
    def from_opengl(
        cls, c2w: torch.Tensor, K: torch.Tensor, image_size: int | Sequence[int]
    ) -> Cameras:
        """Cameras from OpenGL/Blender camera-to-world poses.

        Args:
            c2w: ``(..., 4, 4)`` or ``(..., 3, 4)`` camera-to-world matrices whose camera
                axes are OpenGL's: +x right, +y up, looking down -z (Blender, NeRF's
                ``transform_matrix``).
            K: ``(..., 3, 3)`` pixel intrinsics (see :func:`intrinsics_from_fov`).
            image_size: ``(H, W)``.
        """
        c2w, K = _as_float_tensors(c2w, K)
        if c2w.shape[-2:] not in ((4, 4), (3, 4)):
            raise ValueError(f"c2w must be (..., 4, 4) or (..., 3, 4); got {tuple(c2w.shape)}")
        flip = c2w.new_tensor(_CV_GL_FLIP)
        rot_c2w_gl = c2w[..., :3, :3]
        center = c2w[..., :3, 3]
        R = flip[:, None] * rot_c2w_gl.transpose(-1, -2)  # diag(1,-1,-1) @ R_c2w^T
        t = -(R @ center.unsqueeze(-1)).squeeze(-1)
        return cls(K, R, t, image_size)

    def to_opengl(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c2w, K)``: ``(..., 4, 4)`` camera-to-world with OpenGL camera axes, and K."""
        flip = self.R.new_tensor(_CV_GL_FLIP)
        rot = (flip[:, None] * self.R).transpose(-1, -2)  # (diag(flip) R)^T
        top = torch.cat([rot, self.centers.unsqueeze(-1)], dim=-1)
        bottom = self.R.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*self.batch_shape, 1, 4)
        return torch.cat([top, bottom], dim=-2), self.K

    def to_pytorch3d(self):
        """PyTorch3D ``PerspectiveCameras`` (screen-space intrinsics) for these cameras.

        The batch is flattened to PyTorch3D's ``(N,)``. Uses PyTorch3D's own
        ``cameras_from_opencv_projection``; PyTorch3D is imported here, lazily.
        """
        cameras_from_opencv_projection = _import_pytorch3d_utils().cameras_from_opencv_projection
        flat = self.flatten()
        n = flat.batch_shape[0]
        size = torch.tensor([self.image_size], dtype=self.dtype, device=self.device).expand(n, 2)
        return cameras_from_opencv_projection(
            R=flat.R, tvec=flat.t, camera_matrix=flat.K, image_size=size
        )

    @classmethod
    def from_pytorch3d(cls, cameras: Any, image_size: int | Sequence[int]) -> Cameras:
        """Cameras from PyTorch3D ``PerspectiveCameras`` or ``FoVPerspectiveCameras``.

        Args:
            cameras: a PyTorch3D cameras object of batch ``N``.
            image_size: ``(H, W)`` of the images the cameras render.

        Returns:
            ``Cameras`` of batch shape ``(N,)``.
        """
        size = check_image_size(image_size)
        kind = type(cameras).__name__
        if kind == "PerspectiveCameras":
            utils = _import_pytorch3d_utils()
            n = cameras.R.shape[0]
            size_t = torch.tensor([size], dtype=cameras.R.dtype, device=cameras.R.device).expand(
                n, 2
            )
            R, t, K = utils.opencv_from_cameras_projection(cameras, size_t)
            return cls(K, R, t, size)
        if kind == "FoVPerspectiveCameras":
            return cls._from_pytorch3d_fov(cameras, size)
        raise TypeError(
            "cameras must be PyTorch3D PerspectiveCameras or FoVPerspectiveCameras; got " + kind
        )

    @classmethod
    def _from_pytorch3d_fov(cls, cameras: Any, size: tuple[int, int]) -> Cameras:
        # PyTorch3D view space: +x left, +y up, +z forward; X_view = X_world @ R + T.
        # NDC spans [-1, 1] along the shorter image side; x_ndc = x / (z tan(fov/2) aspect).
        R_p3d, T_p3d = cameras.R, cameras.T
        n = R_p3d.shape[0]
        fov = torch.as_tensor(cameras.fov, dtype=R_p3d.dtype, device=R_p3d.device).reshape(-1)
        degrees = bool(getattr(cameras, "degrees", True))
        half = torch.deg2rad(fov) / 2 if degrees else fov / 2
        aspect = torch.as_tensor(cameras.aspect_ratio, dtype=R_p3d.dtype, device=R_p3d.device)
        H, W = size
        s = min(H, W) / 2.0
        f_ndc = 1.0 / torch.tan(half).expand(n)
        K = torch.zeros(n, 3, 3, dtype=R_p3d.dtype, device=R_p3d.device)
        K[:, 0, 0] = f_ndc / aspect.reshape(-1).expand(n) * s
        K[:, 1, 1] = f_ndc * s
        K[:, 0, 2] = W / 2.0
        K[:, 1, 2] = H / 2.0
        K[:, 2, 2] = 1.0
        flip = R_p3d.new_tensor([-1.0, -1.0, 1.0])
        R = R_p3d.transpose(-1, -2) * flip[:, None]
        t = T_p3d * flip
        return cls(K, R, t, size)

    @classmethod
    def from_r2n2_metadata(cls, rows: Any, image_size: int | Sequence[int] = (137, 137)) -> Cameras:
        """Cameras of 3D-R2N2 / ShapeNetRendering ``rendering_metadata.txt`` rows.

        See :func:`r2n2_cameras`.
        """
        return r2n2_cameras(rows, image_size)

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain lists (JSON-safe) of K, R, t and image_size."""
        return {
            "K": self.K.detach().cpu().tolist(),
            "R": self.R.detach().cpu().tolist(),
            "t": self.t.detach().cpu().tolist(),
            "image_size": list(self.image_size),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], dtype: torch.dtype = torch.float32) -> Cameras:
        missing = {"K", "R", "t", "image_size"} - set(data)
        if missing:
            raise ValueError(f"camera data misses {sorted(missing)}")
        return cls(
            torch.tensor(data["K"], dtype=dtype),
            torch.tensor(data["R"], dtype=dtype),
            torch.tensor(data["t"], dtype=dtype),
            tuple(data["image_size"]),
        )

    def __repr__(self) -> str:
        return (
            f"Cameras(batch_shape={tuple(self.batch_shape)}, image_size={self.image_size}, "
            f"dtype={self.dtype}, device={self.device})"
        )


# ---------------------------------------------------------------------------------------
def pixel_grid(
    h: int, w: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(h, w, 2)`` pixel centres ``(u, v) = (i + 0.5, j + 0.5)`` (column, row)."""
    v = torch.arange(h, device=device, dtype=dtype) + 0.5
    u = torch.arange(w, device=device, dtype=dtype) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def intrinsics_from_fov(
    fov: float | torch.Tensor,
    image_size: int | Sequence[int],
    *,
    axis: str = "vertical",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Pixel intrinsics of a centred pinhole with square pixels (``fx = fy``).

    Args:
        fov: field of view in degrees, ``(...)``; vertical by default.
        image_size: ``(H, W)``.
        axis: ``"vertical"`` (``fy = H / 2 / tan(fov / 2)``) or ``"horizontal"``
            (``fx = W / 2 / tan(fov / 2)``, as NeRF's ``camera_angle_x``).

    Returns:
        ``(..., 3, 3)`` ``K`` with principal point ``(W / 2, H / 2)``.
    """
    H, W = check_image_size(image_size)
    fov_t = torch.as_tensor(fov, dtype=dtype, device=device)
    if not bool(torch.isfinite(fov_t).all()) or bool(((fov_t <= 0) | (fov_t >= 180)).any()):
        raise ValueError(f"fov must be in (0, 180) degrees; got {fov!r}")
    if axis not in ("vertical", "horizontal"):
        raise ValueError(f"axis must be 'vertical' or 'horizontal'; got {axis!r}")
    extent = H if axis == "vertical" else W
    f = (extent / 2.0) / torch.tan(torch.deg2rad(fov_t) / 2.0)
    if not bool(torch.isfinite(f).all()):  # a fov so small that the focal length overflows
        raise ValueError(f"fov must be in (0, 180) degrees and not vanishingly small; got {fov!r}")
    K = torch.zeros(*fov_t.shape, 3, 3, dtype=dtype, device=device)
    K[..., 0, 0] = f
    K[..., 1, 1] = f
    K[..., 0, 2] = W / 2.0
    K[..., 1, 2] = H / 2.0
    K[..., 2, 2] = 1.0
    return K


def look_at(
    eye: torch.Tensor | Sequence[float],
    target: torch.Tensor | Sequence[float] = (0.0, 0.0, 0.0),
    up: torch.Tensor | Sequence[float] = (0.0, 1.0, 0.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """World -> camera rotation and translation of cameras at ``eye`` looking at ``target``.

    Args:
        eye: ``(..., 3)`` camera centres in world coordinates.
        target: ``(..., 3)`` points looked at.
        up: ``(..., 3)`` world direction that appears upwards in the image.

    Returns:
        R: ``(..., 3, 3)`` with rows (right, down, forward) in world coordinates;
        t: ``(..., 3)`` with ``R @ eye + t = 0``.

    Convention: OpenCV camera axes; forward = ``target - eye``, right = forward x up,
    down = forward x right, so ``up`` points to image row 0.
    """
    eye_t, target_t, up_t = _as_float_tensors(eye, target, up, common=True)
    check_shape(eye_t, "... 3", "eye")
    check_shape(target_t, "... 3", "target")
    check_shape(up_t, "... 3", "up")
    for name, value in (("eye", eye_t), ("target", target_t), ("up", up_t)):
        check_finite(value.detach(), name)
    eye_t, target_t, up_t = torch.broadcast_tensors(eye_t, target_t, up_t)
    forward = target_t - eye_t
    dist = forward.norm(dim=-1, keepdim=True)
    if bool((dist <= 1e-12).any()):
        raise ValueError("eye and target must differ: the viewing direction is undefined")
    forward = forward / dist
    up_norm = up_t.norm(dim=-1, keepdim=True)
    if bool((up_norm <= 1e-12).any()):
        raise ValueError("up must be a non-zero vector")
    right = torch.linalg.cross(forward, up_t / up_norm, dim=-1)
    right_norm = right.norm(dim=-1, keepdim=True)
    if bool((right_norm < 1e-6).any()):
        raise ValueError(
            "up is parallel to the viewing direction (eye - target); choose another up"
        )
    right = right / right_norm
    down = torch.linalg.cross(forward, right, dim=-1)
    R = torch.stack([right, down, forward], dim=-2)  # (..., 3, 3)
    t = -(R @ eye_t.unsqueeze(-1)).squeeze(-1)
    return R, t


def spherical_cameras(
    azimuth: torch.Tensor | Sequence[float] | float,
    elevation: torch.Tensor | Sequence[float] | float,
    distance: torch.Tensor | Sequence[float] | float,
    fov: float = 40.0,
    image_size: int | Sequence[int] = (64, 64),
    target: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Cameras:
    """Cameras on a sphere around ``target``, looking at it, upright (+y up).

    Args:
        azimuth, elevation: degrees, broadcast to a common shape ``(...)``; azimuth turns
            from +z toward +x about +y, positive elevation looks down from above.
        distance: distance from ``target``.
        fov: vertical field of view in degrees.
        image_size: ``(H, W)``.

    Returns:
        ``Cameras`` of batch shape ``(...)`` with centres
        ``target + distance * (cos(el) sin(az), sin(el), cos(el) cos(az))``.
    """
    az = torch.as_tensor(azimuth, dtype=torch.float64, device=device)
    el = torch.as_tensor(elevation, dtype=torch.float64, device=device)
    dist = torch.as_tensor(distance, dtype=torch.float64, device=device)
    az, el, dist = torch.broadcast_tensors(az, el, dist)
    if bool((dist <= 0).any()):
        raise ValueError(f"distance must be positive; got {distance!r}")
    if bool((el.abs() >= 90).any()):
        raise ValueError(
            f"elevation must lie in (-90, 90) degrees (up would be parallel to the view); got {elevation!r}"
        )
    a, e = torch.deg2rad(az), torch.deg2rad(el)
    offset = torch.stack(
        [torch.cos(e) * torch.sin(a), torch.sin(e), torch.cos(e) * torch.cos(a)], -1
    )
    target_t = torch.as_tensor(target, dtype=torch.float64, device=device)
    eye = target_t + dist.unsqueeze(-1) * offset
    R, t = look_at(eye, target_t.expand_as(eye), eye.new_tensor([0.0, 1.0, 0.0]).expand_as(eye))
    K = intrinsics_from_fov(fov, image_size, dtype=torch.float64, device=device)
    cams = Cameras(K.expand(*R.shape), R, t, image_size)
    return cams.to(dtype=dtype)


def orbit_cameras(
    n_views: int = 24,
    elevation: float | Sequence[float] = 30.0,
    distance: float = 2.0,
    fov: float = 40.0,
    image_size: int | Sequence[int] = (64, 64),
    azimuth_offset: float = 0.0,
    jitter: float | tuple[float, float] | None = None,
    *,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Cameras:
    """A ring of ``n_views`` cameras at equal azimuth steps, looking at ``target``.

    Args:
        n_views: number of views ``V``; view ``i`` has azimuth
            ``azimuth_offset + 360 * i / n_views`` degrees.
        elevation: degrees, one for all views or ``V`` values.
        distance: distance of each camera centre from ``target``.
        fov: vertical field of view in degrees (``fx = fy``).
        image_size: ``(H, W)``.
        azimuth_offset: azimuth of view 0 in degrees.
        jitter: ``None``, or the half-width in degrees of uniform noise added to each view's
            azimuth and elevation (a pair gives them separately); drawn from ``seed``.

    Returns:
        ``Cameras`` of batch shape ``(V,)``.

    Convention: see the module docstring (orbit cameras).
    """
    if not isinstance(n_views, int) or isinstance(n_views, bool) or n_views < 1:
        raise ValueError(f"n_views must be a positive int; got {n_views!r}")
    if n_views > 1 << 20:
        raise ValueError(f"n_views must be at most {1 << 20}; got {n_views}")
    az = azimuth_offset + 360.0 * torch.arange(n_views, dtype=torch.float64) / n_views
    el = torch.as_tensor(elevation, dtype=torch.float64).flatten()
    if el.numel() not in (1, n_views):
        raise ValueError(f"elevation must be one value or {n_views}; got {el.numel()}")
    el = el.expand(n_views).clone()
    if jitter is not None:
        j_az, j_el = (jitter, jitter) if isinstance(jitter, (int, float)) else tuple(jitter)
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        az = az + (torch.rand(n_views, generator=gen, dtype=torch.float64) * 2 - 1) * j_az
        el = el + (torch.rand(n_views, generator=gen, dtype=torch.float64) * 2 - 1) * j_el
    return spherical_cameras(
        az.to(device), el.to(device), distance, fov, image_size, target, dtype=dtype, device=device
    )


def r2n2_cameras(rows: Any, image_size: int | Sequence[int] = (137, 137)) -> Cameras:
    """Cameras of 3D-R2N2 / ShapeNetRendering ``rendering_metadata.txt`` rows.

    Each row is ``azimuth elevation yaw distance_ratio fov`` (degrees). 3D-R2N2's renderer
    (``blender_renderer.py``) places the camera at ``1.75 * distance_ratio`` from the origin,
    at ``d * (cos(el) cos(az), sin(el), cos(el) sin(az))`` in ShapeNet's y-up frame, looking
    at the origin, upright, and renders with Blender's default 35 mm lens on a 32 mm sensor:
    ``f = 2.1875 * W / 2`` pixels (49.13 degrees), principal point at the centre. The fov
    column (25 in every published row) was never used by the renderer and is ignored here, as
    PyTorch3D's R2N2 loader does. The yaw column (0 in every published row) is applied as an
    in-plane rotation about the optical axis; PyTorch3D ignores it.

    Args:
        rows: ``(N, 5)`` (or ``(5,)``) numbers: a tensor, array or nested lists.
        image_size: ``(H, W)`` of the images (renders are 137 x 137; the intrinsics are
            scaled when another size is asked for).

    Returns:
        ``Cameras`` of batch shape ``(N,)`` (``()`` for one row).
    """
    data = torch.as_tensor(rows, dtype=torch.float64)
    if data.ndim not in (1, 2) or data.shape[-1] < 4:
        raise ValueError(
            "rows must be (N, 5) 'azimuth elevation yaw distance_ratio fov' values; "
            f"got shape {tuple(data.shape)}"
        )
    check_finite(data, "rows")
    H, W = check_image_size(image_size)
    az, el, yaw, ratio = data[..., 0], data[..., 1], data[..., 2], data[..., 3]
    if bool((ratio <= 0).any()):
        raise ValueError(f"distance_ratio must be positive; got {ratio.tolist()}")
    a, e = torch.deg2rad(az), torch.deg2rad(el)
    dist = R2N2_DISTANCE_SCALE * ratio
    eye = dist.unsqueeze(-1) * torch.stack(
        [torch.cos(e) * torch.cos(a), torch.sin(e), torch.cos(e) * torch.sin(a)], dim=-1
    )
    R, t = look_at(eye, torch.zeros_like(eye), eye.new_tensor([0.0, 1.0, 0.0]).expand_as(eye))
    if bool((yaw != 0).any()):
        c, s = torch.cos(torch.deg2rad(yaw)), torch.sin(torch.deg2rad(yaw))
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        roll = torch.stack(
            [
                torch.stack([c, -s, zero], -1),
                torch.stack([s, c, zero], -1),
                torch.stack([zero, zero, one], -1),
            ],
            dim=-2,
        )
        R = roll @ R
        t = (roll @ t.unsqueeze(-1)).squeeze(-1)
    K = torch.zeros(*R.shape[:-2], 3, 3, dtype=torch.float64)
    K[..., 0, 0] = R2N2_FOCAL_NDC * W / 2.0
    K[..., 1, 1] = R2N2_FOCAL_NDC * H / 2.0  # the renders are square: fx = fy at 137 x 137
    K[..., 0, 2] = W / 2.0
    K[..., 1, 2] = H / 2.0
    K[..., 2, 2] = 1.0
    return Cameras(K, R, t, (H, W)).to(dtype=torch.float32)


def _as_float_tensors(*values: Any, common: bool = False) -> tuple[torch.Tensor, ...]:
    """Tensors of ``values``: floating tensors and arrays keep their dtype (a float64 NumPy
    array stays float64), anything else becomes the default dtype; non-tensors are created
    on the device of the first tensor among ``values``. With ``common`` all are cast to
    their promoted dtype, so that they can be combined."""
    # Non-tensors join the device of the first tensor given (a CUDA eye, a default target).
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), None)
    out = []
    for v in values:
        x = v if isinstance(v, torch.Tensor) else torch.as_tensor(v, device=device)
        out.append(x if x.is_floating_point() else x.to(torch.get_default_dtype()))
    if common and out:
        dtype = out[0].dtype
        for x in out[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
        out = [x.to(dtype) for x in out]
    return tuple(out)


def _import_pytorch3d_utils():
    try:
        from pytorch3d import utils
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PyTorch3D is needed for this conversion: pip install easypytorch3d==0.7.9.post1"
        ) from err
    return utils
