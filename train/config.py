"""Typed training configuration: dataclasses with a docstring per field, loadable from YAML,
overridable from the command line (``--set train.lr=3e-4``), saved beside every run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from persp3d.models.occupancy import PredictorConfig

__all__ = ["Config", "DataConfig", "OptimConfig", "TrainConfig", "apply_overrides", "load_config"]


@dataclass
class DataConfig:
    """Where the multi-view samples come from."""

    root: str | None = None
    """Dataset folder; None: the procedural default (generated on first use)."""
    kind: str = "procedural"
    """``procedural`` (generate if missing) or ``folder`` (any persp3d-multiview folder)."""
    per_category: int = 100
    """Procedural objects per category (when generating)."""
    categories: list[str] | None = None
    """Categories to use (default all)."""
    input: str = "rgb"
    """Network input: ``rgb`` images or ``silhouette``."""
    voxel_resolution: int = 32
    """Ground-truth voxel grid used for evaluation (and the 3D-supervised baseline)."""
    workers: int = 0
    """DataLoader worker processes (0: load in the main process)."""


@dataclass
class OptimConfig:
    """The optimiser."""

    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    grad_clip: float = 5.0
    """Clip the gradient norm to this (0: no clipping)."""


@dataclass
class TrainConfig:
    """The training run."""

    out: str = "runs/default"
    """Run folder: config, checkpoints, metrics, TensorBoard logs."""
    seed: int = 0
    """Seed of everything random (initialisation, data order, view choice)."""
    batch_size: int = 16
    """Objects per step (summed over all processes)."""
    max_steps: int = 2000
    """Stop after this many steps."""
    max_minutes: float = 0.0
    """Stop after this many minutes of training (0: no time limit)."""
    supervision: str = "silhouette"
    """``silhouette`` (self-supervised, no 3D labels), ``voxel`` (3D-supervised baseline) or ``both``."""
    views_per_step: int = 8
    """Supervising views projected per object and step, drawn at random (0: all views)."""
    projection_size: int = 32
    """Side of the projected silhouettes the loss compares (ground truth is area-downsampled)."""
    depth_samples: int = 48
    """Samples per ray of the perspective transformer."""
    projection_mode: str = "max"
    """``max``, ``absorption`` or ``smooth``."""
    projection_backend: str = "auto"
    """Projection backend (see ``persp3d.project``): auto, fused, reference or naive."""
    loss_l2: float = 1.0
    """Weight of the silhouette L2 loss (Perspective Transformer Nets)."""
    loss_bce: float = 0.0
    """Weight of the silhouette binary cross-entropy."""
    loss_iou: float = 1.0
    """Weight of the soft-IoU silhouette loss."""
    loss_voxel: float = 1.0
    """Weight of the voxel BCE (supervision ``voxel`` or ``both``)."""
    eval_every: int = 200
    """Validate (and save ``best``) every this many steps."""
    checkpoint_every: int = 100
    """Save ``last`` every this many steps."""
    log_every: int = 20
    """Write scalars every this many steps (images every 10x)."""
    val_objects: int = 64
    """Validation objects evaluated at each validation."""
    device: str = "cpu"
    """``cpu`` or ``cuda``."""
    amp: bool = False
    """Mixed precision (bfloat16 autocast) on GPU."""
    compile: bool = False
    """``torch.compile`` the network (GPU)."""
    progress: bool = True
    """Show a progress bar."""
    threads: int = 0
    """Torch CPU threads (0: leave torch's default)."""


@dataclass
class Config:
    """Everything a run needs; saved as ``config.yaml`` in the run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    model: PredictorConfig = field(default_factory=PredictorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown config sections {sorted(unknown)}; expected data, model, optim, train"
            )
        parts = {}
        for f in dataclasses.fields(cls):
            sub_cls = type(getattr(cls(), f.name))
            values = data.get(f.name, {}) or {}
            names = {g.name for g in dataclasses.fields(sub_cls)}
            bad = set(values) - names
            if bad:
                raise ValueError(f"unknown {f.name} options {sorted(bad)}; known: {sorted(names)}")
            parts[f.name] = sub_cls(**values)
        return cls(**parts)

    def save(self, path: str | os.PathLike) -> None:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _parse_value(text: str, annotation: Any) -> Any:
    import yaml

    value = yaml.safe_load(text)
    kind = str(annotation)
    if value is None:
        return None
    if "float" in kind and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 3e-4 (no dot) as a string
        except ValueError as err:
            raise ValueError(f"expected a number; got {text!r}") from err
    if "str" in kind and not isinstance(value, str) and "list" not in kind:
        return str(value)
    return value


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` overrides (values parsed as YAML)."""
    data = config.to_dict()
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override must look like section.field=value; got {item!r}")
        key, text = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in data:
            raise ValueError(f"unknown config section {section!r} in {item!r}")
        if name not in data[section]:
            raise ValueError(f"unknown option {key!r}; known: {sorted(data[section])}")
        hints = get_type_hints(type(getattr(config, section)))
        data[section][name] = _parse_value(text, hints.get(name))
    return Config.from_dict(data)


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Defaults, then the YAML (or JSON) file at ``path``, then ``overrides``."""
    config = Config()
    if path is not None:
        import yaml

        text = Path(path).read_text()
        data = yaml.safe_load(text) if not str(path).endswith(".json") else json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping of sections")
        config = Config.from_dict(data)
    return apply_overrides(config, overrides or [])
