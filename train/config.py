"""Typed training configuration: dataclasses with a docstring per field, loadable from YAML,
overridable from the command line (``--set train.lr=3e-4``), saved beside every run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from persp3d.models.occupancy import PredictorConfig

__all__ = [
    "Config",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "validate_config",
]


@dataclass
class DataConfig:
    """Where the multi-view samples come from."""

    root: str | None = None
    """Dataset folder; None: the procedural default (generated on first use). For ``r2n2``:
    the folder holding ``ShapeNetRendering`` and ``ShapeNetVox32`` (or ``ShapeNetRendering``
    itself); for ``meshes``: the mesh folder (ShapeNet layout or any folder of meshes)."""
    kind: str = "procedural"
    """``procedural`` (generate if missing), ``folder`` (any persp3d-multiview folder),
    ``r2n2`` (3D-R2N2's ShapeNetRendering + ShapeNetVox32, read directly) or ``meshes`` (a mesh
    folder, rendered and voxelised into ``data.cache`` on first use)."""
    per_category: int = 100
    """Procedural objects per category (when generating)."""
    categories: list[str] | None = None
    """Categories to use (default all); for ShapeNet data, synset ids or names (``chair`` or
    ``03001627``)."""
    input: str = "rgb"
    """Network input: ``rgb`` images or ``silhouette``."""
    voxel_resolution: int = 32
    """Ground-truth voxel grid used for evaluation (and the 3D-supervised baseline)."""
    image_size: int = 0
    """Side the dataset's images are resized to when read (r2n2 only; 0: the model's
    ``image_size``, 64 by default as in Perspective Transformer Nets). Other kinds keep their
    stored size; the network input is always resized to ``model.image_size``."""
    splits_file: str | None = None
    """r2n2: JSON split lists ``{split: {synset: {model_id: ...}}}`` (3D-R2N2 / PyTorch3D /
    NMR lists converted to that form); None: deterministic per-category 80/10/10 splits."""
    cache: str | None = None
    """meshes: the dataset folder the mesh folder is imported into (None: a folder under the
    persp3d data directory named after the mesh folder)."""
    workers: int = 0
    """DataLoader worker processes that read samples during training and evaluation (0: read
    in the main process)."""
    in_memory: str = "auto"
    """Hold the training split in memory (``true``), stream it from disk (``false``), or
    ``auto``: streamed when ``workers`` > 0 (as fast, in less memory), else in memory when
    its images take at most ``in_memory_mb`` (streamed otherwise, so peak memory does not
    grow with the dataset)."""
    in_memory_mb: float = 512.0
    """Size limit in MiB of the ``auto`` in-memory mode (stored bytes of the training split)."""


@dataclass
class OptimConfig:
    """The optimiser."""

    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    grad_clip: float = 5.0
    """Clip the gradient norm to this (0: no clipping)."""
    schedule: str = "cosine"
    """Learning-rate schedule over the run: ``cosine`` (from ``lr`` down to ``lr * lr_final``
    along a half cosine of the fraction of the run done, the nearer of ``train.max_minutes``
    and ``train.max_steps`` deciding, as the progress bar does; +0.014 test 3D IoU over
    ``constant`` in 12 minutes on the default) or ``constant``."""
    lr_final: float = 0.05
    """``cosine``: the last learning rate as a fraction of ``lr``."""


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
    loss_hull: float = 1.0
    """Weight of the visual-hull loss (supervision ``silhouette`` or ``both``): the BCE of
    the occupancy against the visual hull carved from the silhouettes of all the object's
    views, a dense per-voxel target made from silhouettes and cameras alone (no 3D labels);
    it reaches where the projection loss's max passes no gradient. 0: off."""
    loss_voxel: float = 1.0
    """Weight of the voxel BCE (supervision ``voxel`` or ``both``)."""
    eval_every: int = 200
    """Validate (and save ``best``) every this many steps."""
    checkpoint_every: int = 100
    """Save ``last`` every this many steps."""
    log_every: int = 20
    """Write scalars every this many steps (images every 10x)."""
    val_objects: int = 64
    """Validation objects evaluated at each validation (spread evenly over the split, so
    every category is in it)."""
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


def config_dirs() -> list[Path]:
    """Folders searched for named configs, in order: ``./configs`` (the working folder's),
    then the ``configs/`` folder of the persp3d source tree (beside ``train/``; present in a
    checkout and in an editable install, which is how ``make setup`` installs persp3d; a
    wheel does not carry it: pass the YAML's path instead)."""
    here = Path(__file__).resolve().parent.parent / "configs"
    dirs = [Path.cwd() / "configs", here]
    return list(dict.fromkeys(d for d in dirs))


def named_configs() -> dict[str, Path]:
    """Named configs found in :func:`config_dirs` (name -> file); earlier folders win."""
    found: dict[str, Path] = {}
    for folder in reversed(config_dirs()):
        if folder.is_dir():
            found |= {p.stem: p for p in sorted(folder.glob("*.yaml"))}
    return found


def find_config(name: str | os.PathLike) -> Path:
    """The config file ``name``: a path to a YAML/JSON file, or the name of one in
    :func:`config_dirs` (``default``, ``r2n2-13``, ``r2n2-chair``; with or without ``.yaml``).

    Raises:
        FileNotFoundError: naming what was looked for, where, and the names found.
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") or str(path.parent) == "":
        named = named_configs()
        if stem in named:
            return named[stem]
    raise FileNotFoundError(
        f"config {str(name)!r}: no such file, and no named config {stem!r} in "
        f"{', '.join(str(d) for d in config_dirs())} (named configs: "
        f"{', '.join(sorted(named_configs())) or 'none'})"
    )


def _parse_value(text: str, annotation: Any, key: str = "value") -> Any:
    """``text`` (YAML) as a value of the field type ``annotation``; ``ValueError`` naming
    ``key`` when it is not one (``batch_size=abc``, ``lr=fast``, ``amp=maybe``)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{key}: cannot parse {text!r} ({type(err).__name__})") from err
    return _coerce(value, annotation, key, text)


def _coerce(value: Any, annotation: Any, key: str, text: Any = None) -> Any:
    """``value`` checked against (and, for numbers, converted to) the type ``annotation``."""
    import typing

    shown = repr(text if text is not None else value)
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if annotation is None or annotation is Any:
        return value
    if args and type(None) in args:  # X | None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        rest = [a for a in args if a is not type(None)]
        return _coerce(value, rest[0] if len(rest) == 1 else Any, key, text)
    if value is None:
        raise ValueError(f"{key} must not be empty (null); got {shown}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false; got {shown}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{key} must be an integer; got {shown}")
        if isinstance(value, str):
            try:
                value = float(value) if value.strip().lower() not in ("", "nan") else None
            except ValueError:
                value = None
            if value is None:
                raise ValueError(f"{key} must be an integer; got {shown}")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"{key} must be an integer; got {shown}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{key} must be a number; got {shown}")
        try:
            return float(value)  # YAML reads 3e-4 (no dot) as a string
        except ValueError as err:
            raise ValueError(f"{key} must be a number; got {shown}") from err
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key} must be a string; got {shown}")
        return str(value)
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list; got {shown}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list; got {shown}")
        return tuple(value)
    return value


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` overrides (values parsed as YAML, checked against the
    field's type: ``ValueError`` naming the option for ``train.batch_size=abc``)."""
    data = config.to_dict()
    for item in overrides:
        if not isinstance(item, str):
            raise ValueError(f"an override must be a string section.field=value; got {item!r}")
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override must look like section.field=value; got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        section, name = key.split(".", 1)
        if section not in data:
            raise ValueError(
                f"unknown config section {section!r} in {item!r}; expected one of {sorted(data)}"
            )
        if name not in data[section]:
            raise ValueError(f"unknown option {key!r}; known: {sorted(data[section])}")
        hints = get_type_hints(type(getattr(config, section)))
        data[section][name] = _parse_value(text, hints.get(name), key)
    return Config.from_dict(data)


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Defaults, then the YAML (or JSON) file at ``path``, then ``overrides``; the result is
    checked with :func:`validate_config`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not YAML/JSON holding a mapping of known sections and options
            of the right types, or a value is out of range (the message names the option).
    """
    config = Config()
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a text file ({err.reason})") from err
        except yaml.YAMLError as err:  # incl. tags such as !!python/object (safe_load refuses them)
            first = str(err).strip().splitlines()[0]
            raise ValueError(f"{path}: not a valid YAML config ({first})") from err
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping of sections")
        try:
            data = _typed_sections(data)
            config = Config.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        except TypeError as err:
            raise ValueError(f"{path}: {err}") from err
    config = apply_overrides(config, overrides or [])
    validate_config(config)
    return config


def _typed_sections(data: dict[str, Any]) -> dict[str, Any]:
    """A config file's sections with each known option checked against its field type."""
    out: dict[str, Any] = {}
    for section, values in data.items():
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"section {section!r} must be a mapping of options; got {values!r}")
        owner = {f.name: f for f in dataclasses.fields(Config)}.get(section)
        if owner is None:
            out[section] = values  # Config.from_dict names the unknown section
            continue
        hints = get_type_hints(type(getattr(Config(), section)))
        out[section] = {
            name: _coerce(value, hints[name], f"{section}.{name}") if name in hints else value
            for name, value in values.items()
        }
    return out


def validate_config(config: Config) -> Config:
    """Check the ranges and choices of a config's options; returns it unchanged.

    Raises:
        ValueError: naming the first option out of range, e.g.
            ``train.batch_size must be >= 1; got 0``.
    """

    def need(section: str, name: str, ok, expected: str) -> None:
        part = getattr(config, section)
        if not hasattr(part, name):
            return  # an option this version does not have
        value = getattr(part, name)
        if isinstance(value, bool) and expected.startswith(("an integer", "a number")):
            ok_value = False
        else:
            try:
                ok_value = bool(ok(value))
            except (TypeError, ValueError):
                ok_value = False
        if not ok_value:
            raise ValueError(f"{section}.{name} must be {expected}; got {value!r}")

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    def integer(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    for section, name, minimum in (
        ("train", "batch_size", 1),
        ("train", "max_steps", 0),
        ("train", "views_per_step", 0),
        ("train", "projection_size", 1),
        ("train", "depth_samples", 1),
        ("train", "eval_every", 1),
        ("train", "checkpoint_every", 1),
        ("train", "log_every", 1),
        ("train", "val_objects", 1),
        ("train", "threads", 0),
        ("data", "per_category", 1),
        ("data", "voxel_resolution", 1),
        ("data", "workers", 0),
        ("data", "image_size", 0),
    ):
        need(section, name, lambda v, m=minimum: integer(v) and v >= m, f"an integer >= {minimum}")
    need("train", "seed", lambda v: integer(v) and v >= 0, "an integer >= 0")
    for section, name, maximum in (
        ("model", "resolution", 256),
        ("model", "image_size", 2048),
        ("train", "projection_size", 2048),
        ("train", "depth_samples", 4096),
        ("train", "batch_size", 1 << 16),
        ("data", "voxel_resolution", 1024),
    ):
        need(section, name, lambda v, m=maximum: integer(v) and v <= m, f"an integer <= {maximum}")
    need("optim", "lr", lambda v: finite(v) and v > 0, "a finite number > 0")
    need("optim", "lr_final", lambda v: finite(v) and 0 <= v <= 1, "a number in [0, 1]")
    for section, name in (
        ("optim", "weight_decay"),
        ("optim", "grad_clip"),
        ("train", "max_minutes"),
        ("train", "loss_l2"),
        ("train", "loss_bce"),
        ("train", "loss_iou"),
        ("train", "loss_hull"),
        ("train", "loss_voxel"),
        ("data", "in_memory_mb"),
    ):
        need(section, name, lambda v: finite(v) and v >= 0, "a finite number >= 0")
    for section, name, choices in (
        ("train", "supervision", ("silhouette", "voxel", "both")),
        ("optim", "schedule", ("constant", "cosine")),
        ("train", "projection_mode", ("max", "absorption", "smooth")),
        ("train", "projection_backend", ("auto", "fused", "reference", "naive")),
        ("data", "input", ("rgb", "silhouette")),
    ):
        need(section, name, lambda v, c=choices: v in c, f"one of {', '.join(choices)}")
    return config
