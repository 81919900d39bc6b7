"""The affine spatial transformer (Jaderberg et al., 2015) for 2D images and 3D volumes.

The special case that persp3d's perspective transformer generalises: an affine grid
generator (:func:`affine_grid`), the bilinear/trilinear sampler (:func:`affine_sample`),
helpers that build ``theta`` from rotations, translations and scales, and
:class:`SpatialTransformer`, the localisation network + grid generator + sampler module.

Convention:
    * ``theta`` maps **output** grid coordinates to **input** sampling coordinates, as in
      ``torch.nn.functional.affine_grid``: ``output[p] = input[theta @ (p, 1)]``. Content
      therefore moves by the *inverse* transform: a translation ``+t`` moves content by
      ``-t``, a scale ``s`` shrinks it by ``1 / s``, a rotation ``R`` turns it by ``R^T``.
      :func:`invert_theta` converts between the two directions.
    * Grid coordinates are normalised, ``align_corners=False``: -1 and +1 are the outer
      faces of the first and last pixel/voxel (not their centres), pixel ``i`` of ``W`` has
      its centre at ``x = (2 i + 1) / W - 1``.
    * The last dimension is ``(x, y)`` for images, indexing ``(W, H)``, and ``(x, y, z)`` for
      volumes, indexing ``(W, H, D)``: the order ``grid_sample`` reads, and the order
      :mod:`persp3d.volume` uses, so for a volume in a cubic :class:`persp3d.VolumeBox` grid
      coordinates are world coordinates up to one scale and offset. Row 0 of an image is
      at the top, so image ``+y`` points down.
    * ``theta`` is ``(B, 2, 3)`` for images ``(B, C, H, W)`` and ``(B, 3, 4)`` for volumes
      ``(B, C, D, H, W)``. Angles are in degrees.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persp3d._checks import check_finite, check_shape, check_tensor

__all__ = [
    "SpatialTransformer",
    "affine_grid",
    "affine_matrix_2d",
    "affine_matrix_3d",
    "affine_sample",
    "identity_theta",
    "invert_theta",
    "rotation_matrix_3d",
]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")

Number = float | int
ParamLike = Number | Sequence[float] | torch.Tensor


# -- validation ----------------------------------------------------------------------------
def _theta_dims(value: object) -> int:
    """Validate ``theta`` (``(B, 2, 3)`` or ``(B, 3, 4)``, finite); return 2 or 3."""
    theta = check_tensor(value, "theta")
    if theta.shape[-2:] == (2, 3) and theta.ndim == 3:
        dims = 2
    elif theta.shape[-2:] == (3, 4) and theta.ndim == 3:
        dims = 3
    else:
        raise ValueError(
            "theta must be (B, 2, 3) for images or (B, 3, 4) for volumes; "
            f"got shape {tuple(theta.shape)}"
        )
    if theta.shape[0] < 1:
        raise ValueError(f"theta must hold at least one transform; got shape {tuple(theta.shape)}")
    check_finite(theta.detach(), "theta")
    return dims


def _out_size(out_size: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """``out_size`` as ``(h, w)`` (dims 2) or ``(d, h, w)`` (dims 3) positive ints."""
    if isinstance(out_size, torch.Tensor):
        out_size = out_size.tolist()
    if isinstance(out_size, int) and not isinstance(out_size, bool):
        out_size = (out_size,) * dims
    names = "(h, w)" if dims == 2 else "(d, h, w)"
    if not isinstance(out_size, Sequence) or len(out_size) != dims:
        raise ValueError(
            f"out_size must be an int or {names} to match a {dims}D theta; got {out_size!r}"
        )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in out_size):
        raise ValueError(f"out_size must hold positive integers {names}; got {out_size!r}")
    return tuple(out_size)


# -- grid generator and sampler ------------------------------------------------------------
def affine_grid(theta: torch.Tensor, out_size: int | Sequence[int]) -> torch.Tensor:
    """The affine grid generator: sampling coordinates of every output pixel or voxel.

    Args:
        theta: ``(B, 2, 3)`` (images) or ``(B, 3, 4)`` (volumes), output -> input.
        out_size: ``(h, w)`` or ``(d, h, w)`` of the output, or an int for a square/cube.

    Returns:
        ``(B, h, w, 2)`` grid ``(x, y)`` or ``(B, d, h, w, 3)`` grid ``(x, y, z)``:
        ``grid[b, ..., j, i] = theta[b] @ (x_i, y_j, [z_k,] 1)`` with
        ``x_i = (2 i + 1) / w - 1`` (likewise ``y_j``, ``z_k``). Differentiable in ``theta``.

    Convention:
        ``align_corners=False``; the last dimension is ``(x, y[, z])`` indexing
        ``(W, H[, D])``; ``theta`` maps output coordinates to input coordinates.
    """
    dims = _theta_dims(theta)
    size = _out_size(out_size, dims)
    B = theta.shape[0]
    return F.affine_grid(theta, [B, 1, *size], align_corners=False)  # (B, [d,] h, w, dims)


def affine_sample(
    input: torch.Tensor,
    theta: torch.Tensor,
    out_size: int | Sequence[int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Warp images or volumes by affine transforms (grid generator + sampler).

    Args:
        input: ``(B, C, H, W)`` images or ``(B, C, D, H, W)`` volumes, floating point.
        theta: ``(B, 2, 3)`` for images, ``(B, 3, 4)`` for volumes; maps output grid
            coordinates to input sampling coordinates.
        out_size: ``(h, w)`` / ``(d, h, w)`` or an int; default: the input's spatial size.
        mode: ``"bilinear"`` (trilinear on volumes), ``"nearest"`` or ``"bicubic"`` (images
            only).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``: what is read outside
            the input.

    Returns:
        ``(B, C, h, w)`` or ``(B, C, d, h, w)``:
        ``output[b, :, ..., j, i] = input[b](theta[b] @ (x_i, y_j, [z_k,] 1))``.
        Differentiable in ``input`` and ``theta``.

    Convention:
        ``grid_sample`` with ``align_corners=False``; ``(x, y[, z])`` index ``(W, H[, D])``.
        A translation ``+t`` in ``theta`` moves content by ``-t`` (see the module docstring).
    """
    check_tensor(input, "input")
    dims = _theta_dims(theta)
    if dims == 2:
        sizes = check_shape(input, "B C H W", "input") if input.ndim == 4 else None
        spatial = "(B, C, H, W) images"
    else:
        sizes = check_shape(input, "B C D H W", "input") if input.ndim == 5 else None
        spatial = "(B, C, D, H, W) volumes"
    if sizes is None:
        raise ValueError(
            f"a theta of shape {tuple(theta.shape)} warps {spatial}; "
            f"got input of shape {tuple(input.shape)}"
        )
    if min(input.shape) < 1:
        raise ValueError(f"input must be non-empty; got shape {tuple(input.shape)}")
    if theta.shape[0] != sizes["B"]:
        raise ValueError(
            f"theta holds {theta.shape[0]} transforms but input has batch size B={sizes['B']}"
        )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if mode == "bicubic" and dims == 3:
        raise ValueError("mode='bicubic' is for images only; use 'bilinear' on volumes")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
    size = tuple(input.shape[2:]) if out_size is None else _out_size(out_size, dims)
    theta = theta.to(device=input.device, dtype=input.dtype)
    grid = F.affine_grid(theta, [sizes["B"], 1, *size], align_corners=False)  # (B, ..., dims)
    return F.grid_sample(
        input, grid, mode=mode, padding_mode=padding_mode, align_corners=False
    )  # (B, C, [d,] h, w)


# -- building and inverting theta ----------------------------------------------------------
def identity_theta(
    batch_size: int,
    dims: int = 2,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(B, 2, 3)`` or ``(B, 3, 4)`` identity transforms: ``[I | 0]``."""
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3; got {dims!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    eye = torch.eye(dims, dims + 1, dtype=dtype, device=device)  # (dims, dims+1)
    return eye.expand(batch_size, dims, dims + 1).clone()


def invert_theta(theta: torch.Tensor) -> torch.Tensor:
    """The inverse transform: ``[A | b] -> [A^-1 | -A^-1 b]``.

    Args:
        theta: ``(B, 2, 3)`` or ``(B, 3, 4)`` with invertible linear parts.

    Returns:
        Same shape. If ``theta`` moves content by ``M`` (sampling by ``M^-1``), the result
        is the ``theta`` that samples by ``M``, i.e. moves content by ``M^-1``: use it to build
        a ``theta`` from the motion you want the content to make. Differentiable.
    """
    dims = _theta_dims(theta)
    A, b = theta[..., :dims], theta[..., dims:]  # (B, dims, dims), (B, dims, 1)
    A_inv = torch.linalg.inv(A)  # (B, dims, dims)
    return torch.cat([A_inv, -A_inv @ b], dim=-1)  # (B, dims, dims+1)


def _tensor_args(
    args: dict[str, ParamLike | None], dtype: torch.dtype | None, device
) -> tuple[dict[str, torch.Tensor], torch.dtype, torch.device]:
    """Convert the parameters to tensors of one dtype/device and check they are finite."""
    tensors = [v for v in args.values() if isinstance(v, torch.Tensor)]
    if dtype is None:
        dtype = torch.get_default_dtype()
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        if floats:
            dtype = functools.reduce(torch.promote_types, floats)
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    out: dict[str, torch.Tensor] = {}
    for name, value in args.items():
        if value is None:
            continue
        try:
            t = torch.as_tensor(value, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a number or a tensor; got {value!r}") from err
        check_finite(t.detach(), name)
        out[name] = t
    return out, dtype, torch.device(device)


def _batch(params: dict[str, torch.Tensor], event_ndims: dict[str, int]) -> int:
    """The common batch size of the parameters that carry one (1 if none do)."""
    sizes = {
        name: t.shape[0]
        for name, t in params.items()
        if t.ndim > event_ndims[name] and t.shape[0] != 1
    }
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name}: B={b}" for name, b in sizes.items())
        raise ValueError(f"batch sizes of the parameters disagree ({listed})")
    return next(iter(sizes.values()), 1)


def _scale_matrix(scale: torch.Tensor, B: int, dims: int) -> torch.Tensor:
    """``scale`` (scalar, ``(B,)`` or ``(B, dims)``) -> ``(B, dims)`` per-axis factors."""
    if scale.ndim == 0:
        return scale.expand(B, dims)
    if scale.ndim == 1:
        return scale[:, None].expand(B, dims)
    return scale.expand(B, dims)


def affine_matrix_2d(
    angle: ParamLike = 0.0,
    translation: ParamLike | None = None,
    scale: ParamLike = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``theta`` for images from a rotation angle, a translation and a scale.

    Args:
        angle: degrees, a number or ``(B,)``; turns the sampling coordinates from ``+x``
            toward ``+y``.
        translation: ``(2,)`` or ``(B, 2)`` ``(tx, ty)`` in normalised grid units (2 = the
            image's width or height); default 0.
        scale: a number, ``(B,)`` (isotropic per sample) or ``(B, 2)`` per axis ``(sx, sy)``
            (use ``(1, 2)`` for one anisotropic scale).
        dtype, device: of the result (default: from the tensor arguments, else the default
            dtype on the CPU).

    Returns:
        ``(B, 2, 3)`` ``theta = [R(angle) diag(scale) | translation]``, B the common batch
        size of the arguments (1 if none is batched). Differentiable in every argument.

    Convention:
        ``theta`` maps output to input grid coordinates, so content moves by the inverse:
        by ``-translation``, shrunk by ``1 / scale``, and turned from ``+x`` toward ``-y``
        by ``angle``, which with row 0 at the top is **counter-clockwise on screen**
        (``angle=90`` equals ``torch.rot90(image, 1, dims=(-2, -1))`` on square images).
    """
    params, dtype, device = _tensor_args(
        {"angle": angle, "translation": translation, "scale": scale}, dtype, device
    )
    ndims = {"angle": 0, "translation": 1, "scale": 0 if params["scale"].ndim <= 1 else 1}
    if params["angle"].ndim > 1:
        shape = tuple(params["angle"].shape)
        raise ValueError(f"angle must be a number or (B,); got shape {shape}")
    if "translation" in params:
        check_shape(params["translation"], "... 2", "translation")
        if params["translation"].ndim > 2:
            raise ValueError(
                "translation must be (2,) or (B, 2); "
                f"got shape {tuple(params['translation'].shape)}"
            )
    if params["scale"].ndim > 2 or (params["scale"].ndim == 2 and params["scale"].shape[1] != 2):
        raise ValueError(
            f"scale must be a number, (B,) or (B, 2); got shape {tuple(params['scale'].shape)}"
        )
    B = _batch(params, ndims)
    rad = torch.deg2rad(params["angle"]).reshape(-1).expand(B)  # (B,)
    c, s = torch.cos(rad), torch.sin(rad)
    R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (B, 2, 2)
    A = R * _scale_matrix(params["scale"], B, 2)[:, None, :]  # (B, 2, 2) = R diag(scale)
    t = params.get("translation", torch.zeros(2, dtype=dtype, device=device))
    t = t.reshape(-1, 2).expand(B, 2)  # (B, 2)
    return torch.cat([A, t[..., None]], dim=-1)  # (B, 2, 3)


def rotation_matrix_3d(angles: ParamLike) -> torch.Tensor:
    """Rotation matrices from angles about the grid's x, y and z axes.

    Args:
        angles: ``(3,)`` or ``(B, 3)`` degrees ``(ax, ay, az)``.

    Returns:
        ``(3, 3)`` or ``(B, 3, 3)`` ``R = Rz(az) @ Ry(ay) @ Rx(ax)``: first about x, then y,
        then z (fixed axes). Each factor is a right-handed rotation: ``Rx`` turns ``+y``
        toward ``+z``, ``Ry`` turns ``+z`` toward ``+x``, ``Rz`` turns ``+x`` toward ``+y``.

    Convention:
        Axes are grid axes ``(x, y, z)`` indexing ``(W, H, D)``, which in a volume box are
        world x, y (up) and z.
    """
    if isinstance(angles, torch.Tensor):
        a = check_tensor(angles, "angles")
    else:
        a = torch.as_tensor(angles, dtype=torch.get_default_dtype())
    check_shape(a, "... 3", "angles")
    if a.ndim > 2:
        raise ValueError(f"angles must be (3,) or (B, 3); got shape {tuple(a.shape)}")
    rad = torch.deg2rad(a)
    c, s = torch.cos(rad), torch.sin(rad)  # (..., 3)
    one, zero = torch.ones_like(c[..., 0]), torch.zeros_like(c[..., 0])

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, -1) for r in rows], -2)  # (..., 3, 3)

    cx, cy, cz = c.unbind(-1)
    sx, sy, sz = s.unbind(-1)
    Rx = mat([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    Ry = mat([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    Rz = mat([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return Rz @ Ry @ Rx  # (..., 3, 3)


def affine_matrix_3d(
    rotation: torch.Tensor | None = None,
    translation: ParamLike | None = None,
    scale: ParamLike = 1.0,
    angles: ParamLike | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``theta`` for volumes from a rotation, a translation and a scale.

    Args:
        rotation: ``(3, 3)`` or ``(B, 3, 3)`` rotation matrices (not checked: any linear part
            is accepted); exclusive with ``angles``. Default: identity.
        translation: ``(3,)`` or ``(B, 3)`` ``(tx, ty, tz)`` in normalised grid units (2 = the
            volume's extent along that axis); default 0.
        scale: a number, ``(B,)`` (isotropic per sample) or ``(B, 3)`` per axis
            ``(sx, sy, sz)`` (use ``(1, 3)`` for one anisotropic scale).
        angles: ``(3,)`` or ``(B, 3)`` degrees about x, y, z, turned into ``rotation`` by
            :func:`rotation_matrix_3d` (``Rz @ Ry @ Rx``).
        dtype, device: of the result (default: from the tensor arguments, else the default
            dtype on the CPU).

    Returns:
        ``(B, 3, 4)`` ``theta = [rotation diag(scale) | translation]``, B the common batch
        size of the arguments (1 if none is batched). Differentiable in every argument.

    Convention:
        ``theta`` maps output to input grid coordinates ``(x, y, z)`` (indexing
        ``(W, H, D)``), so content moves by the inverse: by ``-translation``, shrunk by
        ``1 / scale`` and turned by ``rotation^T`` (e.g. ``angles=(0, 0, 90)`` carries
        content on ``+x`` to ``-y``).
    """
    if rotation is not None and angles is not None:
        raise ValueError("pass either rotation or angles, not both")
    params, dtype, device = _tensor_args(
        {"rotation": rotation, "translation": translation, "scale": scale, "angles": angles},
        dtype,
        device,
    )
    if "angles" in params:
        params["rotation"] = rotation_matrix_3d(params.pop("angles"))
    ndims = {"rotation": 2, "translation": 1, "scale": 0 if params["scale"].ndim <= 1 else 1}
    if "rotation" in params:
        check_shape(params["rotation"], "... 3 3", "rotation")
        if params["rotation"].ndim > 3:
            raise ValueError(
                f"rotation must be (3, 3) or (B, 3, 3); got shape {tuple(params['rotation'].shape)}"
            )
    if "translation" in params:
        check_shape(params["translation"], "... 3", "translation")
        if params["translation"].ndim > 2:
            raise ValueError(
                "translation must be (3,) or (B, 3); "
                f"got shape {tuple(params['translation'].shape)}"
            )
    if params["scale"].ndim > 2 or (params["scale"].ndim == 2 and params["scale"].shape[1] != 3):
        raise ValueError(
            f"scale must be a number, (B,) or (B, 3); got shape {tuple(params['scale'].shape)}"
        )
    B = _batch(params, ndims)
    R = params.get("rotation", torch.eye(3, dtype=dtype, device=device))
    R = R.reshape(-1, 3, 3).expand(B, 3, 3)  # (B, 3, 3)
    A = R * _scale_matrix(params["scale"], B, 3)[:, None, :]  # (B, 3, 3) = R diag(scale)
    t = params.get("translation", torch.zeros(3, dtype=dtype, device=device))
    t = t.reshape(-1, 3).expand(B, 3)  # (B, 3)
    return torch.cat([A, t[..., None]], dim=-1)  # (B, 3, 4)


# -- the module ----------------------------------------------------------------------------
def _infer_dims(localisation_net: nn.Module, out_size) -> int | None:
    if isinstance(out_size, Sequence) and not isinstance(out_size, str):
        if len(out_size) in (2, 3):
            return len(out_size)
    for module in localisation_net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            return 2
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return 3
    return None


def _infer_features(localisation_net: nn.Module) -> int | None:
    last = None
    for module in localisation_net.modules():
        if isinstance(module, nn.Linear) and not isinstance(module, nn.LazyLinear):
            last = module.out_features
    return last


class SpatialTransformer(nn.Module):
    """The affine spatial transformer: localisation network -> ``theta`` -> warped input.

    Args:
        localisation_net: maps the input ``(B, C, H, W)`` / ``(B, C, D, H, W)`` to features
            ``(B, features)`` (any ``(B, ...)`` output is flattened).
        out_size: ``(h, w)`` / ``(d, h, w)`` or an int; default: the input's spatial size.
        dims: 2 (images) or 3 (volumes); default: inferred from ``out_size``'s length or the
            first ``Conv2d``/``Conv3d`` in ``localisation_net``.
        features: width of ``localisation_net``'s output; default: the ``out_features`` of its
            last ``nn.Linear``.
        mode, padding_mode: of the sampler (:func:`affine_sample`).

    The module owns the final regressor ``self.fc = nn.Linear(features, 6 or 12)`` that turns
    the features into ``theta``; it starts at the identity (zero weight, bias ``[I | 0]``), as
    in Jaderberg et al., so an untrained transformer passes its input through unchanged.

    Shape:
        ``forward(x (B, C, [D,] H, W)) -> (B, C, [d,] h, w)``; with ``return_theta=True`` also
        ``theta (B, 2, 3)`` / ``(B, 3, 4)``. ``self.last_theta`` keeps the last ``theta``,
        detached.

    Convention: ``theta`` maps output to input grid coordinates (see :mod:`persp3d.affine`).
    """

    def __init__(
        self,
        localisation_net: nn.Module,
        out_size: int | Sequence[int] | None = None,
        dims: int | None = None,
        features: int | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if not isinstance(localisation_net, nn.Module):
            raise TypeError(
                f"localisation_net must be an nn.Module; got {type(localisation_net).__name__}"
            )
        if dims is None:
            dims = _infer_dims(localisation_net, out_size)
            if dims is None:
                raise ValueError(
                    "cannot infer dims from out_size or localisation_net; pass dims=2 or 3"
                )
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3; got {dims!r}")
        if features is None:
            features = _infer_features(localisation_net)
            if features is None:
                raise ValueError(
                    "cannot infer features (localisation_net has no nn.Linear); pass features="
                )
        if not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive int; got {features!r}")
        if mode not in MODES or (mode == "bicubic" and dims == 3):
            raise ValueError(f"mode must be one of {MODES} (bicubic: images only); got {mode!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
        self.dims = dims
        self.out_size = None if out_size is None else _out_size(out_size, dims)
        self.features = features
        self.mode = mode
        self.padding_mode = padding_mode
        self.localisation_net = localisation_net
        self.fc = nn.Linear(features, dims * (dims + 1))
        self.last_theta: torch.Tensor | None = None
        self.reset_theta()

    def reset_theta(self) -> None:
        """Set the regressor back to the identity transform (zero weight, ``[I | 0]`` bias)."""
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.eye(self.dims, self.dims + 1).flatten())

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2, 3)`` / ``(B, 3, 4)`` transforms regressed from ``x``."""
        self._check_input(x)
        B = x.shape[0]
        feats = self.localisation_net(x)
        if not isinstance(feats, torch.Tensor) or feats.ndim < 1 or feats.shape[0] != B:
            got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise ValueError(f"localisation_net must return (B={B}, features); got {got}")
        feats = feats.reshape(B, -1)  # (B, features)
        if feats.shape[1] != self.features:
            raise ValueError(
                f"localisation_net returned {feats.shape[1]} features per sample; "
                f"the regressor expects features={self.features}"
            )
        return self.fc(feats).view(B, self.dims, self.dims + 1)  # (B, dims, dims+1)

    def forward(
        self, x: torch.Tensor, return_theta: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        theta = self.theta(x)
        self.last_theta = theta.detach()
        out = affine_sample(x, theta, self.out_size, self.mode, self.padding_mode)
        return (out, theta) if return_theta else out

    def _check_input(self, x: torch.Tensor) -> None:
        check_tensor(x, "x")
        if x.ndim != self.dims + 2:
            names = "(B, C, H, W)" if self.dims == 2 else "(B, C, D, H, W)"
            raise ValueError(
                f"x must be {names} for a {self.dims}D SpatialTransformer; "
                f"got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"dims={self.dims}, out_size={self.out_size}, features={self.features}, "
            f"mode={self.mode!r}, padding_mode={self.padding_mode!r}"
        )
