"""``persp3d train``: train an occupancy predictor on multi-view silhouettes.

persp3d train                                   # the procedural default, self-supervised
persp3d train --supervision voxel --out runs/voxel   # the 3D-supervised baseline
persp3d train --config my.yaml --set train.lr=3e-4 --set model.width=32
persp3d train --out runs/default --resume       # continue a killed run
"""

from __future__ import annotations

import argparse
import json

from persp3d.models.occupancy import OccupancyPredictor

__all__ = ["add_arguments", "command_overrides", "run"]


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


def run(args: argparse.Namespace) -> int:
    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    config = load_config(args.config, command_overrides(args))
    trainer = Trainer(config, resume=args.resume)
    metrics = trainer.fit()
    if trainer.main:
        print(json.dumps({"run": str(trainer.out), **metrics}, indent=2))
    return 0
