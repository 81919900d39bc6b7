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
import shlex
import sys
import warnings
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
    parser.add_argument(
        "--config",
        help="YAML config file (sections data, model, optim, train), or the name of one in "
        "configs/ (default, r2n2-13, r2n2-chair)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config value (repeatable)",
    )
    parser.add_argument("--out", help="run folder (train.out)")
    parser.add_argument(
        "--data",
        help="dataset folder (data.root): a persp3d dataset, a folder holding "
        "ShapeNetRendering + ShapeNetVox32 (r2n2), or a mesh folder (meshes)",
    )
    parser.add_argument(
        "--categories",
        help="data.categories: comma-separated names or ShapeNet synset ids (chair,03001627)",
    )
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short try (3-4 minutes on 2 cores): a small procedural set, "
        "1.5 minutes of training, a report on 24 test objects; --out defaults to runs/quick",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip the report (persp3d report RUN) at the end"
    )


def quick_overrides() -> list[str]:
    """The settings of ``--quick`` (applied before every other flag, so those win)."""
    from persp3d.datasets.procedural import default_data_dir

    return [
        f"data.root={default_data_dir() / 'procedural-quick'}",
        "data.per_category=20",
        "train.out=runs/quick",
        "train.max_minutes=1.5",
        f"train.max_steps={2**62}",
        "train.eval_every=25",
        "train.checkpoint_every=25",
        "train.val_objects=24",
    ]


def command_overrides(args: argparse.Namespace) -> list[str]:
    """The ``section.field=value`` overrides that the command's flags and ``--set`` ask for,
    in the order they apply (later ones win)."""
    overrides = list(args.set)
    if getattr(args, "quick", False):
        overrides[:0] = quick_overrides()
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
    if getattr(args, "categories", None):
        names = [c.strip() for c in args.categories.split(",") if c.strip()]
        overrides.append("data.categories=[" + ", ".join(f"'{n}'" for n in names) + "]")
    if args.data and not any(o.startswith("data.kind=") for o in overrides):
        from persp3d.train.data import infer_data_kind

        overrides.append(f"data.kind={infer_data_kind(args.data)}")
    if args.no_progress:
        overrides.append("train.progress=false")
    return [o for o in overrides if o]


def check_run_folder(out: str | Path, resume: bool) -> None:
    """Refuse to start a run where it would destroy one, or to resume where nothing is.

    Raises:
        ValueError: ``out`` (or a folder above it) is a regular file; ``out`` holds a run and
            ``resume`` is false; ``resume`` is true and ``out`` holds no checkpoint.

    A folder holding only the logs of a run killed before its first checkpoint (``steps.csv``,
    ``val.jsonl``, no ``.pt``) is not a run to keep: a new run removes those logs, with a
    warning, and starts there.
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
    elif any(name.endswith(".pt") for name in existing):
        raise ValueError(
            f"{out} already holds a run ({', '.join(existing)}); continue it with --resume "
            "or choose a new --out"
        )
    elif existing:
        # the logs of a run killed before its first checkpoint: nothing to resume from, and
        # appending to them would repeat its steps; a new run starts them afresh
        warnings.warn(
            f"{out} holds the logs of a run that saved no checkpoint ({', '.join(existing)}); "
            "starting a new run there",
            stacklevel=2,
        )
        for name in existing:
            (out / name).unlink()


def run(args: argparse.Namespace) -> int:
    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    if args.max_steps is not None and args.max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0; got {args.max_steps}")
    if args.max_minutes is not None and not args.max_minutes >= 0:
        raise ValueError(f"--max-minutes must be >= 0; got {args.max_minutes}")
    from persp3d.train.config import find_config

    config = load_config(find_config(args.config) if args.config else None, command_overrides(args))
    if os.environ.get("RANK", "0") == "0":
        check_run_folder(config.train.out, args.resume)
    trainer = Trainer(config, resume=args.resume)
    command = trainer.out / "command.txt"  # for the report: how the run was started
    if trainer.main and not command.exists() and Path(sys.argv[0]).name in ("persp3d", "cli.py"):
        command.write_text(shlex.join(["persp3d", *sys.argv[1:]]) + "\n")
    metrics = trainer.fit()
    if trainer.main and getattr(args, "no_report", False):
        print(json.dumps({"run": str(trainer.out), **metrics}, indent=2))
    elif trainer.main:  # the report ends the command with its headline figures
        from persp3d.train.report import headline_lines, write_report

        try:
            head = write_report(trainer.out, quick=getattr(args, "quick", False))
        except (ValueError, FileNotFoundError) as err:  # e.g. a dataset without voxels
            print(f"training done ({trainer.out}); no report: {err}", file=sys.stderr)
            return 0
        print("\n" + "\n".join(headline_lines(head)))
    return 0
