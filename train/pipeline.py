"""The one join of a run: input preparation -> OccupancyPredictor -> PerspectiveTransformer.

Every command that predicts from a run (training, validation, ``persp3d eval``, ``check``,
``view`` and the report) goes through :class:`Pipeline`, built from the run's
:class:`~persp3d.train.config.Config` (saved in every checkpoint): it resizes the input views
to the network's size, picks RGB or silhouette input, applies the one input-view rule
(:func:`default_input_view`) and projects with the run's projection settings.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from persp3d.cameras import Cameras
from persp3d.models.occupancy import OccupancyPredictor
from persp3d.projection import project
from persp3d.train.config import Config
from persp3d.transformer import PerspectiveTransformer
from persp3d.volume import VolumeBox

__all__ = ["INPUT_KINDS", "Pipeline", "default_input_view", "resolve_run_checkpoint"]

INPUT_KINDS = ("rgb", "silhouette")


def default_input_view(index: int | torch.Tensor, n_views: int) -> int | torch.Tensor:
    """The view the network sees of object ``index`` when no view is asked for:
    ``(7 * index) % n_views`` (spreads the input views of consecutive objects over the orbit;
    used by validation, ``eval``, ``check``, ``view`` and the report alike).

    Args:
        index: object index (an int or an integer tensor of any shape).
        n_views: views per object ``V``.
    """
    if n_views < 1:
        raise ValueError(f"n_views must be positive; got {n_views}")
    return (index * 7) % n_views


def resolve_run_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint of a run: ``path`` itself if a file, else the run folder's ``best.pt``,
    else its ``last.pt``.

    Raises:
        FileNotFoundError: naming the folder when it holds neither.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no best.pt or last.pt; not a persp3d run folder")
    if not path.is_file():
        raise FileNotFoundError(f"no run folder or checkpoint at {path}")
    return path


class Pipeline(torch.nn.Module):
    """Input preparation, the predictor, the perspective transformer and the run's projection
    settings, built from a :class:`Config`.

    Attributes:
        config: the run's configuration (``config.model.in_channels`` follows ``data.input``).
        model: the :class:`OccupancyPredictor`.
        transformer: the :class:`PerspectiveTransformer` of the training loss
            (``train.depth_samples``, ``train.projection_mode``, ``train.projection_backend``,
            silhouettes of ``train.projection_size``).
        state: the checkpoint dict when built by :meth:`from_run` (``step``, ``best``, ...),
            else an empty dict.

    Convention: input views ``(B, C, H, W)`` in [0, 1], row 0 at the top; occupancy
    ``(B, 1, R, R, R)`` filling ``VolumeBox()`` (D <-> z, H <-> y, W <-> x); silhouettes
    ``(B, V, 1, h, w)``.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        if config.data.input not in INPUT_KINDS:
            raise ValueError(f"data.input must be one of {INPUT_KINDS}; got {config.data.input!r}")
        config = copy.deepcopy(config)
        config.model.in_channels = 3 if config.data.input == "rgb" else 1
        self.config = config
        self.model = OccupancyPredictor(config.model)
        cfg = config.train
        self.transformer = PerspectiveTransformer(
            depth_samples=cfg.depth_samples,
            out_size=(cfg.projection_size, cfg.projection_size),
            mode=cfg.projection_mode,
            backend=cfg.projection_backend,
        )
        self.state: dict[str, Any] = {}

    @classmethod
    def from_run(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> Pipeline:
        """The pipeline of a trained run, in eval mode.

        Args:
            path: a run folder (its ``best.pt``, else ``last.pt``) or a checkpoint file.
            map_location: where to load the weights.

        Raises:
            FileNotFoundError: no checkpoint there.
            ValueError: the file is not a persp3d training checkpoint.
        """
        from persp3d.train.checkpoint import load_checkpoint, load_checkpoint_with_fallback

        ckpt = resolve_run_checkpoint(path)
        if Path(path).is_dir():  # best.pt, or last.pt when best.pt is corrupt (with a warning)
            state, ckpt = load_checkpoint_with_fallback(
                path, ("best.pt", "last.pt"), map_location, warn_missing=False
            )
        else:
            state = load_checkpoint(ckpt, map_location)
        for key in ("model", "config"):
            if key not in state:
                raise ValueError(f"{ckpt} is not a persp3d training checkpoint (no {key!r})")
        pipeline = cls(Config.from_dict(json.loads(state["config"])))
        pipeline.model.load_state_dict(state["model"])
        pipeline.state = state
        pipeline.path = ckpt
        pipeline.to(map_location)
        return pipeline.eval()

    # -- input ---------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.config.model.in_channels

    @property
    def image_size(self) -> int:
        return self.config.model.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Network input from input views.

        Args:
            images: ``(B, C_in, H, W)`` RGB (``C_in = 3``) or silhouettes (``C_in = 1``) in
                [0, 1], any size and float or uint8 dtype (uint8 is divided by 255).

        Returns:
            ``(B, C_in, S, S)`` float32 on the model's device, ``S = model.image_size``
            (area-resized when the size differs).
        """
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must be (B, {self.in_channels}, H, W) ({self.config.data.input} "
                f"input); got shape {tuple(images.shape)}"
            )
        x = images.to(self.device, non_blocking=True)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        S = self.image_size
        if tuple(x.shape[-2:]) != (S, S):
            x = F.interpolate(x, size=(S, S), mode="area")  # (B, C_in, S, S)
        return x

    def views_of(self, sample: dict[str, Any]) -> torch.Tensor:
        """The views of a sample the network reads: ``images (V, 3, H, W)`` for RGB input,
        ``silhouettes (V, 1, H, W)`` for silhouette input."""
        key = "images" if self.config.data.input == "rgb" else "silhouettes"
        if key not in sample:
            raise ValueError(f"sample has no {key!r} for {self.config.data.input} input")
        return sample[key]

    def input_of(self, sample: dict[str, Any], view: int) -> torch.Tensor:
        """``(1, C_in, S, S)`` network input from view ``view`` of a dataset sample."""
        views = self.views_of(sample)
        V = views.shape[0]
        if not 0 <= int(view) < V:
            raise ValueError(f"input view must lie in [0, {V}); got {view}")
        return self.prepare(views[int(view) : int(view) + 1])

    # -- prediction ----------------------------------------------------------------------
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, 1, R, R, R)`` occupancy logits of prepared inputs ``(B, C_in, S, S)``."""
        return self.model(inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, 1, R, R, R)`` occupancy in [0, 1] of prepared inputs ``(B, C_in, S, S)``."""
        return torch.sigmoid(self.logits(inputs))

    @torch.no_grad()
    def predict_views(self, images: torch.Tensor) -> torch.Tensor:
        """Occupancy ``(B, 1, R, R, R)`` from raw input views ``(B, C_in, H, W)``
        (prepared here)."""
        return torch.sigmoid(self.logits(self.prepare(images)))

    @torch.no_grad()
    def predict(
        self, sample: dict[str, Any], view: int | None = None, index: int = 0
    ) -> torch.Tensor:
        """Occupancy ``(1, 1, R, R, R)`` of a dataset sample seen from ``view``.

        Args:
            sample: a sample dict (see :mod:`persp3d.datasets.sample`).
            view: the input view; None: :func:`default_input_view` of ``index``.
            index: the object's index in its split (for the default view).
        """
        V = self.views_of(sample).shape[0]
        view = default_input_view(int(index), V) if view is None else int(view)
        return torch.sigmoid(self.logits(self.input_of(sample, view)))

    def project(
        self,
        occupancy: torch.Tensor,
        cameras: Cameras,
        out_size: int | Sequence[int] | None = None,
        box: VolumeBox | None = None,
    ) -> torch.Tensor:
        """Silhouettes ``(B, V, 1, h, w)`` of ``occupancy (B, 1, R, R, R)`` seen by
        ``cameras`` ``(V,)`` or ``(B, V)``, with the run's projection mode, depth samples and
        backend; ``out_size`` None: the cameras' image size; ``box`` None: ``VolumeBox()``."""
        return project(
            occupancy,
            cameras,
            self.transformer.box if box is None else box,
            self.transformer.depth_samples,
            out_size if out_size is not None else cameras.image_size,
            self.transformer.mode,
            backend=self.transformer.backend,
        )

    def describe(self) -> dict[str, Any]:
        """The prediction protocol in words and numbers (for reports)."""
        cfg = self.config.train
        return {
            "input": self.config.data.input,
            "input_size": self.image_size,
            "input_view_rule": "(7 * index) % n_views",
            "resolution": self.config.model.resolution,
            "projection_mode": cfg.projection_mode,
            "depth_samples": cfg.depth_samples,
            "projection_backend": cfg.projection_backend,
        }
