"""The ``persp3d`` command line: one entry point whose subcommands live beside their code.

Each subcommand is a module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when the command line is built, so a missing optional dependency
affects only its own subcommand.

Errors: a bad argument, a missing or corrupt file (``ValueError``, ``FileNotFoundError``,
``OSError``, and the datasets' ``DataError`` / ``CorruptCacheError``, both ``ValueError``)
print one line ``persp3d <command>: error: ...`` on stderr and exit with status 2; no
traceback reaches the user. Warnings print as one line ``persp3d <command>: warning: ...``
(the fallback to ``best.pt`` when ``last.pt`` is corrupt, for one). Any other exception (a
bug) prints one line ``persp3d <command>: internal error: ...`` and exits with status 1.
``persp3d --debug ...`` (or ``PERSP3D_DEBUG=1``) lets the exception propagate with its
traceback, for developers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from persp3d import __version__

__all__ = ["DEBUG_ENV", "build_parser", "main"]

# Set to 1 to see the traceback of an error instead of the one-line message.
DEBUG_ENV = "PERSP3D_DEBUG"

# (name, module, one-line help). Modules that do not exist (yet) are left out.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("data", "persp3d.datasets.cli", "make, import and inspect multi-view datasets"),
    ("train", "persp3d.train.commands", "train an occupancy predictor from silhouettes"),
    ("eval", "persp3d.train.evaluate", "evaluate a trained model against ground truth"),
    ("check", "persp3d.train.check", "check a volume's projections against silhouettes"),
    ("fit", "persp3d.train.fit", "fit a volume to an object's calibrated silhouettes"),
    ("view", "persp3d.viewers.cli", "look at volumes, meshes, samples and runs in 3D"),
    ("report", "persp3d.train.report", "write a run's report: curves, tables, 3D views"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persp3d",
        description="Perspective spatial transformers for 3D vision.",
    )
    parser.add_argument("--version", action="version", version=f"persp3d {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error (also {DEBUG_ENV}=1)",
    )
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


def _one_line(err: BaseException) -> str:
    """An exception as one line: its message's lines joined, with the file for OSErrors."""
    if isinstance(err, NotADirectoryError) and err.filename:
        text = f"{err.filename}: a part of this path is a file, not a folder"
    elif isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    elif isinstance(err, FileNotFoundError) and err.strerror and err.filename:
        text = f"no such file or folder: {err.filename}"
    else:
        text = str(err) or type(err).__name__
        if isinstance(err, KeyError):
            text = f"missing key {text}"
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` that prints ``persp3d <command>: warning: ...`` (one line,
    without the source line Python shows by default)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"persp3d {command}: warning: {text}", file=file or sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    shown = warnings.showwarning
    if not debug:
        warnings.showwarning = _one_line_warning(args.command)
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError) as err:  # incl. FileNotFoundError, DataError, CorruptCacheError
        if debug:
            raise
        print(f"persp3d {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line, and the way to see more
        if debug:
            raise
        print(
            f"persp3d {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
            f"(rerun with --debug or {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
