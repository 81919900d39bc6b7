"""The ``persp3d`` command line: one entry point whose subcommands live beside their code.

Each subcommand is a module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when the command line is built, so a missing optional dependency
affects only its own subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from persp3d import __version__

__all__ = ["build_parser", "main"]

# (name, module, one-line help). Modules that do not exist (yet) are left out.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("data", "persp3d.datasets.cli", "make, import and inspect multi-view datasets"),
    ("train", "persp3d.train.commands", "train an occupancy predictor from silhouettes"),
    ("eval", "persp3d.train.evaluate", "evaluate a trained model against ground truth"),
    ("check", "persp3d.train.check", "check a volume's projections against silhouettes"),
    ("fit", "persp3d.train.fit", "fit a volume to an object's calibrated silhouettes"),
    ("view", "persp3d.viewers.cli", "look at volumes, meshes, samples and runs in 3D"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persp3d",
        description="Perspective spatial transformers for 3D vision.",
    )
    parser.add_argument("--version", action="version", version=f"persp3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
