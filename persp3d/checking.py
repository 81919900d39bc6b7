"""Checking a volume's projections against observed silhouettes, and naming convention slips.

After projection: volume + cameras -> :func:`persp3d.project` -> silhouettes -> **checking**
against the observed silhouettes (per-view IoU, precision, recall, boundary F-score), and,
when they disagree, :func:`diagnose` tries the classic convention slips one at a time.

Convention: as in :mod:`persp3d.cameras` and :mod:`persp3d.volume`. One object at a time:
a volume ``(D, H, W)``, ``(1, D, H, W)`` or ``(1, 1, D, H, W)`` of occupancy in ``[0, 1]``
filling ``box``; cameras of batch shape ``(V,)``; silhouettes ``(V, 1, H, W)`` in ``[0, 1]``,
row 0 at the top. Projections are made at the silhouettes' size (the cameras' intrinsics are
rescaled to it, see :meth:`persp3d.Cameras.resized`) and thresholded at ``threshold``; the
observed silhouettes at 0.5.

The slips (:data:`SLIPS`), each undone by its ``correct`` function and planted by its
``plant`` function (both pure):

=====================  ===================================================================
``transposed_R``       ``R`` holds the camera-to-world rotation ``R^T``; the camera centres
                       are right (``t = -R_given C``). Undo: transpose ``R``, keep centres.
``camera_to_world``    ``(R, t)`` hold the camera-to-world pose ``(R^T, C)`` (e.g. a NeRF
                       ``transform_matrix`` used as is, minus the axis flip). Undo:
                       ``R = R_given^T``, ``t = -R_given^T t_given``.
``flipped_y``          Image rows counted from the bottom (``v -> H - v``): the silhouettes
                       are upside down relative to the cameras. Undo: flip the silhouettes.
``opengl_axes``        ``R, t`` map into OpenGL camera axes (y up, looking down -z) instead
                       of OpenCV's. Undo: ``diag(1, -1, -1)`` on ``R`` and ``t``.
``half_pixel``         ``cx, cy`` 0.5 px low: intrinsics from an OpenCV calibration (pixel
                       centres at integers) taken as is. Undo: ``cx, cy += 0.5``.
``half_pixel_high``    ``cx, cy`` 0.5 px high (the 0.5 added twice). Undo: ``cx, cy -= 0.5``.
``swapped_xz``         The volume's x and z axes are swapped (an array written ``(x, y, z)``
                       where ``(z, y, x) = (D, H, W)`` is expected). Undo: transpose D and W.
=====================  ===================================================================

Not every slip can be identified on every object. A slip that leaves the silhouettes as
they are is invisible, and :func:`diagnose` rightly answers "no slip": ``swapped_xz`` on an
object symmetric under the mirror ``x <-> z`` (a vertical cylinder), ``flipped_y`` on views
symmetric top to bottom. Slips that change the silhouettes alike are all named (within
``tie``) rather than one picked. A half-pixel shift costs a ground-truth volume about 0.1 of
IoU at 64 x 64 and is found; on a coarse or poor volume (a prediction, a 16^3 grid) its gain
can fall below ``min_gain``. Use an asymmetric object, and the best volume at hand, to check
conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from persp3d._checks import check_image_size, check_shape, check_tensor
from persp3d.cameras import Cameras
from persp3d.metrics import boundary_fscore, silhouette_scores
from persp3d.projection import project
from persp3d.volume import VolumeBox

__all__ = [
    "METRICS",
    "SLIPS",
    "CheckResult",
    "Diagnosis",
    "Slip",
    "check_projections",
    "compare_silhouettes",
    "default_depth_samples",
    "diagnose",
    "plant_slip",
    "project_views",
]

METRICS = ("iou", "precision", "recall", "boundary_f")

# Occupancy may overshoot [0, 1] by rounding (a float16 volume, a resampled one).
_RANGE_TOLERANCE = 1e-3


# -- comparing silhouettes ------------------------------------------------------------------
def compare_silhouettes(
    pred: torch.Tensor,
    target: torch.Tensor,
    threshold: float = 0.5,
    tolerance: int = 1,
) -> dict[str, torch.Tensor]:
    """Per-view agreement of projected and observed silhouettes.

    Args:
        pred: ``(..., 1, H, W)`` projections in ``[0, 1]``, thresholded at ``threshold``
            (e.g. ``(V, 1, H, W)`` or ``(B, V, 1, H, W)``).
        target: ``(..., 1, H, W)`` observed silhouettes, thresholded at 0.5.
        threshold: occupancy threshold of ``pred``.
        tolerance: boundary F-score tolerance in pixels (Chebyshev distance).

    Returns:
        ``{"iou", "precision", "recall", "boundary_f"}``, each ``(...)`` (one value per view).
        Precision is the fraction of projected pixels that are observed, recall the fraction
        of observed pixels that are projected; an empty projection of an empty silhouette
        scores 1 everywhere.
    """
    check_tensor(pred, "pred")
    check_tensor(target, "target")
    check_shape(pred, "... 1 H W", "pred")
    check_shape(target, "... 1 H W", "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have one shape; got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    p, t = pred.detach()[..., 0, :, :], target.detach()[..., 0, :, :]  # (..., H, W)
    scores = silhouette_scores(p, t, threshold)
    scores["boundary_f"] = boundary_fscore(p, t, tolerance, threshold)
    return {name: scores[name] for name in METRICS}


# -- projecting one object ------------------------------------------------------------------
def default_depth_samples(volume_shape: Sequence[int]) -> int:
    """Depth samples per ray for a volume of shape ``(..., D, H, W)``: twice its largest
    side, at least 64 (about one sample per voxel inside the box)."""
    return max(64, 2 * max(int(s) for s in volume_shape[-3:]))


def object_volume(volume: torch.Tensor, name: str = "volume") -> torch.Tensor:
    """One object's occupancy as ``(1, 1, D, H, W)``.

    Args:
        volume: ``(D, H, W)``, ``(1, D, H, W)`` or ``(1, 1, D, H, W)`` occupancy in ``[0, 1]``.

    Raises:
        ValueError: another shape, non-finite values, or values outside ``[0, 1]`` (logits?).
    """
    if not isinstance(volume, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(volume).__name__}")
    if not volume.is_floating_point():
        volume = volume.float()
    if volume.ndim not in (3, 4, 5) or volume.shape[: volume.ndim - 3] != (1,) * (volume.ndim - 3):
        raise ValueError(
            f"{name} must be one object's occupancy (D, H, W), (1, D, H, W) or "
            f"(1, 1, D, H, W); got shape {tuple(volume.shape)}"
        )
    if min(volume.shape) < 1:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(volume.shape)}")
    detached = volume.detach()
    if not bool(torch.isfinite(detached).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    lo, hi = float(detached.min()), float(detached.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must hold occupancy in [0, 1]; got values in [{lo:.3g}, {hi:.3g}] "
            "(logits? apply torch.sigmoid first)"
        )
    return volume.reshape(1, 1, *volume.shape[-3:])


def object_silhouettes(silhouettes: torch.Tensor, name: str = "silhouettes") -> torch.Tensor:
    """Silhouettes ``(V, H, W)`` or ``(V, 1, H, W)`` as float ``(V, 1, H, W)``."""
    if not isinstance(silhouettes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(silhouettes).__name__}")
    if silhouettes.ndim == 3:
        silhouettes = silhouettes.unsqueeze(1)
    check_shape(silhouettes, "V 1 H W", name)
    if not silhouettes.is_floating_point():
        silhouettes = silhouettes.float() / (255.0 if silhouettes.dtype == torch.uint8 else 1.0)
    return silhouettes


def _check_views(cameras: Cameras, silhouettes: torch.Tensor) -> None:
    if not isinstance(cameras, Cameras):
        raise TypeError(f"cameras must be persp3d.Cameras; got {type(cameras).__name__}")
    if cameras.ndim != 1:
        raise ValueError(
            f"cameras must have batch shape (V,), one per silhouette; got "
            f"{tuple(cameras.batch_shape)}"
        )
    if cameras.batch_shape[0] != silhouettes.shape[0]:
        raise ValueError(
            f"cameras and silhouettes must hold the same views; got {cameras.batch_shape[0]} "
            f"cameras and {silhouettes.shape[0]} silhouettes"
        )


def _facing_depths(cameras: Cameras, box: VolumeBox) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-camera ``near, far`` bounding the box's sphere, with ``near`` clamped in front of
    the camera; ``far <= near`` marks a camera with the box wholly behind it."""
    centre = cameras.t.new_tensor(box.center)
    z_centre = ((centre - cameras.centers) * cameras.forward).sum(-1)  # (V,)
    radius = box.radius
    near = (z_centre - radius).clamp_min(1e-3 * radius)
    far = z_centre + radius
    return near, far


@torch.no_grad()
def project_views(
    volume: torch.Tensor,
    cameras: Cameras,
    out_size: int | Sequence[int] | None = None,
    box: VolumeBox | None = None,
    depth_samples: int | None = None,
    mode: str = "max",
) -> torch.Tensor:
    """Projections of one object into any cameras, even cameras that do not face it.

    Unlike :func:`persp3d.project`, which asks every camera to have the volume's box in
    front of it, a camera with the box wholly behind it sees nothing (zeros) and one with
    the box partly behind it samples from just in front of its centre: the projections of
    wrong cameras are still computed, as checking needs.

    Args:
        volume: one object's occupancy (see :func:`object_volume`).
        cameras: batch shape ``(V,)``.
        out_size: ``(h, w)`` (default the cameras' ``image_size``).
        box: the volume's box (default ``VolumeBox()``).
        depth_samples: samples per ray (default :func:`default_depth_samples`).
        mode: projection mode of :func:`persp3d.project`.

    Returns:
        ``(V, 1, h, w)`` projections (no gradient).
    """
    vol = object_volume(volume)
    box = box if box is not None else VolumeBox()
    depth_samples = depth_samples or default_depth_samples(vol.shape)
    h, w = check_image_size(cameras.image_size if out_size is None else out_size, "out_size")
    cams = cameras.to(dtype=vol.dtype, device=vol.device)
    out = vol.new_zeros(cams.batch_shape[0], 1, h, w)
    near, far = _facing_depths(cams, box)
    seen = (far > near).nonzero(as_tuple=True)[0]
    if len(seen):
        sub = cams[seen]
        out[seen] = project(
            vol, sub, box, depth_samples, (h, w), mode, near=near[seen], far=far[seen]
        )[0]
    return out


@dataclass
class CheckResult:
    """How one object's projections agree with its observed silhouettes.

    Attributes:
        scores: per-view ``(V,)`` tensors ``iou``, ``precision``, ``recall``, ``boundary_f``.
        mean: the mean over views of each score.
        projections: ``(V, 1, H, W)`` projections of the volume, in ``[0, 1]``.
        silhouettes: ``(V, 1, H, W)`` the observed silhouettes compared with.
        threshold: occupancy threshold applied to the projections.
    """

    scores: dict[str, torch.Tensor]
    mean: dict[str, float]
    projections: torch.Tensor
    silhouettes: torch.Tensor
    threshold: float = 0.5

    @property
    def n_views(self) -> int:
        return int(self.projections.shape[0])

    def worst_views(self, k: int = 3, metric: str = "iou") -> list[int]:
        """Indices of the ``k`` views that agree least by ``metric``."""
        return torch.argsort(self.scores[metric])[:k].tolist()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the means and one row of scores per view."""
        rows = [
            {"view": v, **{m: float(self.scores[m][v]) for m in METRICS}}
            for v in range(self.n_views)
        ]
        return {"threshold": self.threshold, "mean": dict(self.mean), "per_view": rows}


def check_projections(
    volume: torch.Tensor,
    cameras: Cameras,
    silhouettes: torch.Tensor,
    box: VolumeBox | None = None,
    depth_samples: int | None = None,
    *,
    threshold: float = 0.5,
    mode: str = "max",
    tolerance: int = 1,
) -> CheckResult:
    """Project one object's volume with its cameras and compare with its silhouettes.

    Args:
        volume: ``(D, H, W)``, ``(1, D, H, W)`` or ``(1, 1, D, H, W)`` occupancy in
            ``[0, 1]`` (ground truth, predicted, fitted), filling ``box``.
        cameras: batch shape ``(V,)``, one per silhouette.
        silhouettes: ``(V, 1, H, W)`` (or ``(V, H, W)``) observed silhouettes in ``[0, 1]``.
        box: the volume's world box (default ``VolumeBox()``).
        depth_samples: samples per ray (default :func:`default_depth_samples`).
        threshold: occupancy threshold of the projections.
        mode: projection mode (``"max"``: a ray is inside if it meets occupancy above
            ``threshold``).
        tolerance: boundary F-score tolerance in pixels.

    Returns:
        A :class:`CheckResult`.

    Raises:
        ValueError: a volume that is not one object's occupancy, cameras that are not
            ``(V,)`` or do not match the silhouettes.

    Convention: see the module docstring; projections at the silhouettes' ``(H, W)``.
    """
    sil = object_silhouettes(silhouettes)
    _check_views(cameras, sil)
    vol = object_volume(volume)
    proj = project_views(vol, cameras, sil.shape[-2:], box, depth_samples, mode)
    sil = sil.to(proj)
    scores = compare_silhouettes(proj, sil, threshold, tolerance)
    mean = {m: float(scores[m].mean()) for m in METRICS}
    return CheckResult(scores, mean, proj, sil, threshold)


# -- convention slips -----------------------------------------------------------------------
Views = tuple[torch.Tensor, Cameras, torch.Tensor]  # (volume, cameras, silhouettes)


@dataclass(frozen=True)
class Slip:
    """A classic convention mistake.

    Attributes:
        name: short identifier (a key of :data:`SLIPS`).
        description: the mistake, in words.
        correct: ``(volume, cameras, silhouettes) -> (volume, cameras, silhouettes)`` under
            the hypothesis that the inputs carry the mistake: the corrected interpretation.
        plant: the mistake made on correct inputs (the inverse of ``correct``).
        changes: which of ``"volume"``, ``"cameras"``, ``"silhouettes"`` it touches.
    """

    name: str
    description: str
    correct: Callable[[torch.Tensor, Cameras, torch.Tensor], Views]
    plant: Callable[[torch.Tensor, Cameras, torch.Tensor], Views]
    changes: tuple[str, ...] = field(default=("cameras",))


def _with(cameras: Cameras, K=None, R=None, t=None) -> Cameras:
    return Cameras(
        cameras.K if K is None else K,
        cameras.R if R is None else R,
        cameras.t if t is None else t,
        cameras.image_size,
    )


def _transpose_keep_centres(vol, cams, sil) -> Views:
    R = cams.R.transpose(-1, -2)
    t = -(R @ cams.centers.unsqueeze(-1)).squeeze(-1)  # same centres, transposed rotation
    return vol, _with(cams, R=R, t=t), sil


def _invert_pose(vol, cams, sil) -> Views:
    R = cams.R.transpose(-1, -2)
    t = -(R @ cams.t.unsqueeze(-1)).squeeze(-1)  # (R, t) <-> (R^T, -R^T t)
    return vol, _with(cams, R=R, t=t), sil


def _flip_rows(vol, cams, sil) -> Views:
    return vol, cams, sil.flip(-2)  # v -> H - v


def _cv_gl(vol, cams, sil) -> Views:
    flip = cams.R.new_tensor((1.0, -1.0, -1.0))
    return vol, _with(cams, R=flip[:, None] * cams.R, t=flip * cams.t), sil


def _shift_principal_point(delta: float):
    def shift(vol, cams, sil) -> Views:
        offset = cams.K.new_tensor([[0.0, 0.0, delta], [0.0, 0.0, delta], [0.0, 0.0, 0.0]])
        return vol, _with(cams, K=cams.K + offset), sil

    return shift


def _swap_xz(vol, cams, sil) -> Views:
    return vol.transpose(-3, -1), cams, sil  # (.., D, H, W) <-> (.., W, H, D)


SLIPS: dict[str, Slip] = {
    s.name: s
    for s in (
        Slip(
            "transposed_R",
            "R holds the camera-to-world rotation (R transposed); camera centres are right",
            _transpose_keep_centres,
            _transpose_keep_centres,
        ),
        Slip(
            "camera_to_world",
            "(R, t) hold the camera-to-world pose (R^T, camera centre), not world-to-camera",
            _invert_pose,
            _invert_pose,
        ),
        Slip(
            "flipped_y",
            "image rows counted from the bottom (v -> H - v): silhouettes upside down",
            _flip_rows,
            _flip_rows,
            ("silhouettes",),
        ),
        Slip(
            "opengl_axes",
            "R, t use OpenGL camera axes (y up, looking down -z) instead of OpenCV's",
            _cv_gl,
            _cv_gl,
        ),
        Slip(
            "half_pixel",
            "cx, cy half a pixel low (OpenCV calibration with integer pixel centres)",
            _shift_principal_point(0.5),
            _shift_principal_point(-0.5),
        ),
        Slip(
            "half_pixel_high",
            "cx, cy half a pixel high (the +0.5 of pixel centres added twice)",
            _shift_principal_point(-0.5),
            _shift_principal_point(0.5),
        ),
        Slip(
            "swapped_xz",
            "volume x and z axes swapped (array (x, y, z) read as (D, H, W) = (z, y, x))",
            _swap_xz,
            _swap_xz,
            ("volume",),
        ),
    )
}


def plant_slip(
    name: str, volume: torch.Tensor, cameras: Cameras, silhouettes: torch.Tensor
) -> Views:
    """Make the mistake ``name`` (a key of :data:`SLIPS`) on correct inputs.

    Returns:
        ``(volume, cameras, silhouettes)`` as a user who made that mistake would hold them;
        ``SLIPS[name].correct`` gives the inputs back.
    """
    if name not in SLIPS:
        raise ValueError(f"unknown slip {name!r}; known: {sorted(SLIPS)}")
    return SLIPS[name].plant(volume, cameras, silhouettes)


@dataclass
class Diagnosis:
    """What :func:`diagnose` found.

    Attributes:
        as_given: mean silhouette IoU of the inputs as given.
        candidates: ``(slip name, mean IoU after undoing it)``, best first.
        explained_by: the slips that explain the silhouettes (several when they cannot be
            told apart), best first; empty when none does.
        verdict: one sentence for people.
    """

    as_given: float
    candidates: list[tuple[str, float]]
    explained_by: list[str]
    verdict: str

    @property
    def slip(self) -> str | None:
        """The best explaining slip, or None."""
        return self.explained_by[0] if self.explained_by else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_given_iou": self.as_given,
            "candidates": [{"slip": n, "iou": v} for n, v in self.candidates],
            "explained_by": list(self.explained_by),
            "verdict": self.verdict,
        }


def diagnose(
    volume: torch.Tensor,
    cameras: Cameras,
    silhouettes: torch.Tensor,
    box: VolumeBox | None = None,
    depth_samples: int | None = None,
    *,
    slips: Sequence[str] | None = None,
    threshold: float = 0.5,
    min_gain: float = 0.02,
    min_iou: float = 0.5,
    tie: float = 0.005,
    good_iou: float = 0.85,
) -> Diagnosis:
    """Try the classic convention slips and say which one explains the silhouettes.

    Each slip of :data:`SLIPS` is undone in turn (its ``correct`` function) and the corrected
    volume, cameras and silhouettes are compared as :func:`check_projections` does.

    Args:
        volume, cameras, silhouettes, box, depth_samples, threshold: as in
            :func:`check_projections`.
        slips: names of the slips to try (default all of :data:`SLIPS`).
        min_gain: a slip explains the silhouettes when undoing it raises the mean IoU by at
            least this much over the inputs as given...
        min_iou: ...to at least this mean IoU.
        tie: slips within this mean IoU of the best are reported with it (they cannot be
            told apart on these inputs).
        good_iou: as-given mean IoU above which "no slip" is the verdict when none explains.

    Returns:
        A :class:`Diagnosis`; ``candidates`` is sorted by mean IoU, best first.
    """
    sil = object_silhouettes(silhouettes)
    _check_views(cameras, sil)
    vol = object_volume(volume)
    names = list(SLIPS) if slips is None else list(slips)
    unknown = [n for n in names if n not in SLIPS]
    if unknown:
        raise ValueError(f"unknown slips {unknown}; known: {sorted(SLIPS)}")
    size = sil.shape[-2:]
    base = project_views(vol, cameras, size, box, depth_samples)
    sil = sil.to(base)

    def mean_iou(proj: torch.Tensor, target: torch.Tensor) -> float:
        return float(compare_silhouettes(proj, target, threshold)["iou"].mean())

    as_given = mean_iou(base, sil)
    candidates = []
    for name in names:
        slip = SLIPS[name]
        v2, c2, s2 = slip.correct(vol, cameras, sil)
        if "volume" in slip.changes or "cameras" in slip.changes:
            proj = project_views(v2, c2, size, box, depth_samples)
        else:
            proj = base
        candidates.append((name, mean_iou(proj, s2)))
    candidates.sort(key=lambda item: -item[1])
    explained: list[str] = []
    if candidates:
        best = candidates[0][1]
        if best - as_given >= min_gain and best >= min_iou:
            explained = [n for n, v in candidates if v >= best - tie]
    verdict = _verdict(as_given, candidates, explained, good_iou)
    return Diagnosis(as_given, candidates, explained, verdict)


def _verdict(
    as_given: float, candidates: list[tuple[str, float]], explained: list[str], good_iou: float
) -> str:
    if explained:
        best = dict(candidates)[explained[0]]
        head = (
            f"slip '{explained[0]}' explains the silhouettes: undoing it raises the mean IoU "
            f"from {as_given:.3f} to {best:.3f} ({SLIPS[explained[0]].description})"
        )
        if len(explained) > 1:
            others = ", ".join(f"'{n}'" for n in explained[1:])
            head += f"; {others} explain them equally well (cannot be told apart here)"
        return head
    if as_given >= good_iou:
        return f"no slip: the projections agree with the silhouettes (mean IoU {as_given:.3f})"
    if candidates:
        name, value = candidates[0]
        return (
            f"none of the known slips explains the mismatch (mean IoU {as_given:.3f} as "
            f"given; best slip '{name}' gives {value:.3f})"
        )
    return f"mean IoU {as_given:.3f}; no slips tried"
