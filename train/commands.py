"""``persp3d train``: train an occupancy predictor on multi-view silhouettes.

persp3d train                                   # the procedural default, self-supervised
persp3d train --supervision voxel --out runs/voxel   # the 3D-supervised baseline
persp3d train --config my.yaml --set train.lr=3e-4 --set model.width=32
persp3d train --out runs/default --resume       # continue a killed run

A run folder that already holds a run (checkpoints, ``steps.csv``) is never trained into
again without ``--resume``: its checkpoints and step log would be replaced and appended to.
``--resume`` needs a checkpoint there. Errors are one line on stderr (see ``persp3d.train.cli``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from persp3d.models.occupancy import OccupancyPredictor

__all__ = ["RUN_FILES", "add_arguments", "check_run_folder", "command_overrides", "run"]

# Files whose presence makes a folder a run (one a new run would overwrite or append to).
RUN_FILES = ("last.pt", "best.pt", "steps.csv", "val.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "default model: " + OccupancyPredictor().summary() + "\n\n"
        "Every option of the config (data.*, model.*, optim.*, train.*) can be set with "
        "--set section.field=value;\nthe resolved config is saved as RUN/config.yaml."
    )
    parser.add_argument("--config", help="YAML config file (sections data, model, optim, train)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config value (repeatable)",
    )
    parser.add_argument("--out", help="run folder (train.out)")
    parser.add_argument("--data", help="dataset folder (data.root)")
    parser.add_argument(
        "--supervision", choices=["silhouette", "voxel", "both"], help="train.supervision"
    )
    parser.add_argument("--max-steps", type=int, help="train.max_steps")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="train.max_minutes; alone (without --max-steps) it also lifts the step limit",
    )
    parser.add_argument("--device", help="train.device (cpu, cuda)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def command_overrides(args: argparse.Namespace) -> list[str]:
    """The ``section.field=value`` overrides that the command's flags and ``--set`` ask for,
    in the order they apply (later ones win)."""
    overrides = list(args.set)
    if args.max_minutes is not None and args.max_steps is None:
        # "train for M minutes": no step limit unless --set train.max_steps=... asks for one
        overrides.insert(0, f"train.max_steps={2**62}")
    for flag, key in (
        ("out", "train.out"),
        ("data", "data.root"),
        ("supervision", "train.supervision"),
        ("max_steps", "train.max_steps"),
        ("max_minutes", "train.max_minutes"),
        ("device", "train.device"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.data:
        overrides.append(
            "data.kind=folder" if not any(o.startswith("data.kind=") for o in overrides) else ""
        )
    if args.no_progress:
        overrides.append("train.progress=false")
    return [o for o in overrides if o]


def check_run_folder(out: str | Path, resume: bool) -> None:
    """Refuse to start a run where it would destroy one, or to resume where nothing is.

    Raises:
        ValueError: ``out`` (or a folder above it) is a regular file; ``out`` holds a run and
            ``resume`` is false; ``resume`` is true and ``out`` holds no checkpoint.
    """
    out = Path(out)
    for part in (out, *out.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"--out {out}: {part} is a file, not a folder")
    existing = [name for name in RUN_FILES if (out / name).exists()] if out.is_dir() else []
    if resume:
        if not any(name.endswith(".pt") for name in existing):
            where = "does not exist" if not out.exists() else "holds no last.pt or best.pt"
            raise ValueError(
                f"--resume: the run folder {out} {where}; nothing to resume "
                "(leave out --resume to start a new run there)"
            )
    elif existing:
        raise ValueError(
            f"{out} already holds a run ({', '.join(existing)}); continue it with --resume "
            "or choose a new --out"
        )


def run(args: argparse.Namespace) -> int:
    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    if args.max_steps is not None and args.max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0; got {args.max_steps}")
    if args.max_minutes is not None and not args.max_minutes >= 0:
        raise ValueError(f"--max-minutes must be >= 0; got {args.max_minutes}")
    config = load_config(args.config, command_overrides(args))
    if os.environ.get("RANK", "0") == "0":
        check_run_folder(config.train.out, args.resume)
    trainer = Trainer(config, resume=args.resume)
    metrics = trainer.fit()
    if trainer.main:
        print(json.dumps({"run": str(trainer.out), **metrics}, indent=2))
    return 0
