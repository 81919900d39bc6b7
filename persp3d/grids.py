"""Frustum grids: where each camera's rays sample the volume.

Second stage of the data path: cameras -> **frustum grid** -> sampling -> projection.
A frustum grid holds, for every output pixel and every depth sample, the ``grid_sample``
coordinates of the point on that pixel's ray at that camera depth.

Convention:
    * Depth is camera-space z (not distance along the ray). ``D`` samples sit at the centres
      of ``D`` equal cells between ``near`` and ``far``: uniform in depth
      (``sampling="depth"``: ``z_i = near + (i + 0.5) (far - near) / D``) or in inverse depth
      (``"disparity"``: ``1 / z_i = 1 / near + (i + 0.5) (1 / far - 1 / near) / D``), sample
      0 nearest to the camera.
    * By default ``near`` and ``far`` bound the box's circumscribed sphere along each
      camera's optical axis: ``z_c -/+ r`` with ``z_c`` the depth of the box centre and ``r``
      half the box diagonal. A camera inside that sphere needs an explicit ``near``.
    * Pixel (row j, column i) of the ``(h, w)`` output is the ray through
      ``(u, v) = (i + 0.5, j + 0.5)`` of the cameras resized to ``(h, w)``.
    * The last dimension is ``(x, y, z)`` in ``grid_sample`` coordinates of the box
      (:func:`persp3d.volume.world_to_grid_coords`), ``align_corners=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from persp3d._checks import check_image_size
from persp3d.cameras import Cameras
from persp3d.volume import VolumeBox, world_to_grid_coords, world_to_grid_vectors

__all__ = ["Frustum", "depth_schedule", "frustum_grid", "near_far"]

SAMPLINGS = ("depth", "disparity")


def near_far(
    cameras: Cameras,
    box: VolumeBox | None = None,
    near: float | torch.Tensor | None = None,
    far: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-camera depth bounds of the sampled frustum.

    Args:
        cameras: cameras of batch shape ``(...)``.
        box: the volume's box (default ``VolumeBox()``).
        near, far: explicit bounds (a number or a ``(...)`` tensor); ``None`` bounds the box's
            circumscribed sphere along each optical axis.

    Returns:
        near, far: ``(...)`` camera-space depths, ``0 < near < far``; differentiable with
        respect to the cameras where computed from them.
    """
    box = box if box is not None else VolumeBox()
    centre = cameras.t.new_tensor(box.center)
    offset = centre - cameras.centers  # (..., 3)
    z_centre = (offset * cameras.forward).sum(-1)  # (...) depth of the box centre
    radius = box.radius
    if near is None:
        inside = offset.detach().norm(dim=-1) <= radius
        if bool(inside.any()):
            raise ValueError(
                "a camera lies inside the volume box's bounding sphere (radius "
                f"{radius:.4g} around {box.center}); pass an explicit near (and far) depth"
            )
        near_t = z_centre - radius
        if bool((near_t.detach() <= 0).any()):
            raise ValueError(
                "the volume box is partly behind a camera (its bounding sphere reaches depth "
                "<= 0); point the cameras at the box or pass an explicit near"
            )
    else:
        near_t = torch.as_tensor(near, dtype=cameras.dtype, device=cameras.device).expand_as(
            z_centre
        )
    far_t = (
        z_centre + radius
        if far is None
        else torch.as_tensor(far, dtype=cameras.dtype, device=cameras.device).expand_as(z_centre)
    )
    if not bool(torch.isfinite(near_t.detach()).all() & torch.isfinite(far_t.detach()).all()):
        raise ValueError("near and far must be finite")
    if bool((near_t.detach() <= 0).any()):
        raise ValueError(f"near must be positive (in front of the camera); got {near!r}")
    if bool((far_t.detach() <= near_t.detach()).any()):
        raise ValueError(f"far must exceed near; got near={near!r}, far={far!r} (box far plane)")
    return near_t, far_t


def depth_schedule(
    near: torch.Tensor, far: torch.Tensor, depth_samples: int, sampling: str = "depth"
) -> torch.Tensor:
    """``(..., D)`` sample depths at cell centres between ``near`` and ``far`` (``(...)``).

    ``"depth"`` spaces them uniformly in z, ``"disparity"`` uniformly in 1 / z.
    """
    _check_depth_samples(depth_samples)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}")
    frac = (torch.arange(depth_samples, device=near.device, dtype=near.dtype) + 0.5) / depth_samples
    near, far = near.unsqueeze(-1), far.unsqueeze(-1)
    if sampling == "depth":
        return near + frac * (far - near)
    return 1.0 / (1.0 / near + frac * (1.0 / far - 1.0 / near))


class Frustum:
    """The ray geometry of cameras over an output image: everything a sampler needs.

    Holds, in ``grid_sample`` coordinates of the box, the camera centres ``(*batch, 3)`` and
    per-pixel ray directions scaled to camera-space z = 1 ``(*batch, h, w, 3)``, and the depth
    schedule ``(*batch, D)``; all differentiable with respect to the cameras. The sample at
    depth ``z`` of a ray is ``origin + z * direction``. Grid coordinates are made on demand
    for any subset of depths with that one expression, so a chunk of the grid equals the
    same slice of the full grid bit for bit, whatever the layout.
    """

    def __init__(
        self,
        cameras: Cameras,
        depth_samples: int,
        box: VolumeBox | None = None,
        out_size: int | Sequence[int] | None = None,
        sampling: str = "depth",
        near: float | torch.Tensor | None = None,
        far: float | torch.Tensor | None = None,
    ) -> None:
        if not isinstance(cameras, Cameras):
            raise TypeError(f"cameras must be persp3d.Cameras; got {type(cameras).__name__}")
        _check_depth_samples(depth_samples)
        self.box = box if box is not None else VolumeBox()
        size = cameras.image_size if out_size is None else check_image_size(out_size, "out_size")
        cams = cameras.resized(size)
        self.cameras = cams
        self.out_size: tuple[int, int] = size
        self.depth_samples = int(depth_samples)
        _, directions_world = cams.rays(normalize=False)  # (*batch, h, w, 3), z_cam = 1
        self.origins = world_to_grid_coords(cams.centers, self.box)  # (*batch, 3)
        self.directions = world_to_grid_vectors(directions_world, self.box)  # (*batch, h, w, 3)
        self.near, self.far = near_far(cams, self.box, near, far)  # (*batch,)
        self.depths = depth_schedule(
            self.near, self.far, self.depth_samples, sampling
        )  # (*batch, D)

    @property
    def batch_shape(self) -> torch.Size:
        return self.origins.shape[:-1]

    def grid(
        self, start: int = 0, stop: int | None = None, depth_last: bool = False
    ) -> torch.Tensor:
        """Grid coordinates of depth samples ``start:stop``.

        Returns:
            ``(*batch, Dc, h, w, 3)``, or ``(*batch, h, w, Dc, 3)`` with ``depth_last``
            (each ray's samples contiguous: the fast layout for reductions along depth).
        """
        z = self.depths[..., start:stop]  # (*batch, Dc)
        if depth_last:
            return (
                self.origins[..., None, None, None, :]
                + z[..., None, None, :, None] * self.directions[..., :, :, None, :]
            )  # (*batch, h, w, Dc, 3)
        return (
            self.origins[..., None, None, None, :]
            + z[..., :, None, None, None] * self.directions[..., None, :, :, :]
        )  # (*batch, Dc, h, w, 3)

    def grid_at(self, index: torch.Tensor) -> torch.Tensor:
        """Grid coordinates of one depth sample per ray.

        Args:
            index: ``(*batch, K, h, w)`` long depth indices (``K`` rays per pixel, e.g. one
                per channel).

        Returns:
            ``(*batch, K, h, w, 3)``.
        """
        D = self.depth_samples
        batch_numel = self.batch_shape.numel()
        # Flat indexing keeps the backward pass small (a scatter into (*batch, D)), where a
        # gather from an expanded (*batch, K, h, w, D) tensor would materialise that tensor.
        offsets = torch.arange(batch_numel, device=index.device).reshape(*self.batch_shape, 1, 1, 1)
        z = self.depths.reshape(-1)[offsets * D + index]  # (*batch, K, h, w)
        return (
            self.origins[..., None, None, None, :]
            + z[..., None] * self.directions[..., None, :, :, :]
        )  # (*batch, K, h, w, 3)

    def ray_grid(self, rays: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``(n, D, 3)`` grid coordinates of all samples of ``n`` selected rays.

        Args:
            rays: index tensors ``(*batch_index, j, i)``, each ``(n,)``.
        """
        cam = rays[:-2]
        origins = self.origins[cam]  # (n, 3)
        directions = self.directions[rays]  # (n, 3)
        z = self.depths[cam]  # (n, D)
        return origins[:, None, :] + z[:, :, None] * directions[:, None, :]  # (n, D, 3)


def frustum_grid(
    cameras: Cameras,
    depth_samples: int = 64,
    box: VolumeBox | None = None,
    out_size: int | Sequence[int] | None = None,
    sampling: str = "depth",
    near: float | torch.Tensor | None = None,
    far: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The full frustum sampling grid of each camera.

    Args:
        cameras: ``Cameras`` of batch shape ``(...)``, e.g. ``(V,)`` or ``(B, V)``.
        depth_samples: ``D``, samples per ray.
        box: the volume's box (default ``VolumeBox()``).
        out_size: ``(h, w)`` of the output image (default the cameras' ``image_size``; the
            intrinsics are rescaled to it).
        sampling: ``"depth"`` or ``"disparity"``.
        near, far: depth bounds; see :func:`near_far`.

    Returns:
        ``(..., D, h, w, 3)`` ``grid_sample`` coordinates ``(x, y, z)`` of the box.

    Convention: see the module docstring.
    """
    return Frustum(cameras, depth_samples, box, out_size, sampling, near, far).grid()


# Most samples per ray (a gigantic count is refused before it reaches the allocator).
MAX_DEPTH_SAMPLES = 1 << 16


def _check_depth_samples(depth_samples: object) -> None:
    if not isinstance(depth_samples, int) or isinstance(depth_samples, bool) or depth_samples < 1:
        raise ValueError(f"depth_samples must be an int >= 1; got {depth_samples!r}")
    if depth_samples > MAX_DEPTH_SAMPLES:
        raise ValueError(f"depth_samples must be at most {MAX_DEPTH_SAMPLES}; got {depth_samples}")
