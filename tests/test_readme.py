"""The README does what it says.

- Its Python examples run as written: every ```python block, in order, in one namespace.
- Every command it shows parses: ``make`` targets dry-run, ``persp3d`` command lines (in
  ```bash blocks and in inline code) through the real argument parser, ``torchrun -m``
  lines through torchrun's parser and ours, benchmark scripts through their own parsers, so
  a wrong option (``--set train.lr=...`` when the option is ``optim.lr``) fails here.
- Its ``persp3d`` commands run, in the README's order, in an empty folder, on small
  stand-ins: tiny settings are appended to each command (later options win), and only the
  data a user downloads (``data/ShapeNet``, ``data/lego``) is made beforehand, in its
  published layout; so every file a command names must have been made by an earlier one.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
BASH_BLOCK = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"(?<!`)`((?:persp3d|make|\.venv/bin/persp3d) [^`]+)`(?!`)")


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ```python blocks of a Markdown ``text``, in order."""
    return PYTHON_BLOCK.findall(text)


def bash_commands(text: str) -> list[list[str]]:
    """The command lines of the fenced ```bash blocks, in order, as argument lists (comments
    dropped, ``\\`` continuations joined)."""
    commands = []
    for block in BASH_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def inline_commands(text: str) -> list[list[str]]:
    """``persp3d ...`` and ``make ...`` command lines written as inline code in the prose
    (a bare ``persp3d check`` names a command rather than showing one)."""
    prose = BASH_BLOCK.sub("", PYTHON_BLOCK.sub("", text))
    words = [shlex.split(match) for match in INLINE.findall(prose)]
    return [w for w in words if len(w) >= (2 if w[0] == "make" else 3)]


def test_block_extraction_finds_only_the_right_blocks():
    text = (
        "intro `persp3d eval RUN`, `persp3d check`\n```bash\nmake test   # lint\npersp3d view a \\\n  --html b\n```\n"
        "```python\nx = 1\n```\ntext\n```python\ny = x + 1\n```\n"
    )
    assert python_blocks(text) == ["x = 1\n", "y = x + 1\n"]
    assert bash_commands(text) == [["make", "test"], ["persp3d", "view", "a", "--html", "b"]]
    assert inline_commands(text) == [["persp3d", "eval", "RUN"]]


def test_readme_python_examples_run_in_order_in_one_namespace(capsys):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python example"
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"README.md (python block {number})", "exec")
        exec(code, namespace)
    capsys.readouterr()  # the examples may print; keep the test output clean


# -- every command parses ---------------------------------------------------------------------
class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


@contextlib.contextmanager
def _stop_after_parsing():
    """Make ``ArgumentParser.parse_args`` raise :class:`_Parsed` with its result, so a
    script's ``main(argv)`` parses its arguments and does nothing else."""
    original = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def _parse_persp3d(args: list[str], where: str) -> argparse.Namespace:
    from persp3d.train.cli import build_parser

    try:
        namespace = build_parser().parse_args(args)
    except SystemExit as err:
        if err.code == 0 and "--help" in args:
            return argparse.Namespace(_run="help")  # the help of a real command
        raise AssertionError(
            f"README: `persp3d {shlex.join(args)}` does not parse ({where})"
        ) from err
    assert getattr(namespace, "_run", None), (
        f"README: `persp3d {shlex.join(args)}` names no command"
    )
    return namespace


def _parse_script(path: Path, args: list[str]) -> None:
    spec = importlib.util.spec_from_file_location(f"_readme_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with _stop_after_parsing(), pytest.raises(_Parsed):
        try:
            module.main(args)
        except SystemExit as err:
            raise AssertionError(
                f"README: `{path.name} {shlex.join(args)}` does not parse"
            ) from err


def _parse_command(words: list[str], where: str) -> None:
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]  # an environment setting before the command
    program, args = words[0], words[1:]
    if program in ("persp3d", ".venv/bin/persp3d"):
        _parse_persp3d(args, where)
    elif program == "make":
        result = subprocess.run(
            ["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"README: `make {shlex.join(args)}`: {result.stderr}"
        for arg in args:  # options handed to `persp3d train` by make train
            if arg.startswith("TRAIN_ARGS="):
                _parse_persp3d(["train", *shlex.split(arg.split("=", 1)[1])], where)
    elif program == "torchrun":
        from torch.distributed.run import get_args_parser

        split = args.index("-m")
        torchrun_args = get_args_parser().parse_args([*args[: split + 2], "x"])
        assert torchrun_args.module and args[split + 1] == "persp3d.train.cli", words
        _parse_persp3d(args[split + 2 :], where)
    elif program == "python" and args and args[0].endswith(".py"):
        _parse_script(REPO / args[0], args[1:])
    else:
        raise AssertionError(f"README shows a command this test does not know: {shlex.join(words)}")


def test_every_readme_command_parses():
    text = README.read_text(encoding="utf-8")
    blocks, inline = bash_commands(text), inline_commands(text)
    assert len(blocks) >= 15 and len(inline) >= 3
    for words in blocks:
        _parse_command(words, "bash block")
    for words in inline:
        _parse_command(words, "inline code")


def test_a_wrong_option_fails_to_parse():
    with pytest.raises(AssertionError, match="does not parse"):
        _parse_command(["persp3d", "train", "--lr", "3e-4"], "test")
    with pytest.raises(AssertionError, match="does not parse"):
        _parse_command(["make", "train", "TRAIN_ARGS=--minutes 3"], "test")
    from persp3d.train.commands import command_overrides
    from persp3d.train.config import load_config

    namespace = _parse_persp3d(["train", "--set", "train.lr=3e-4"], "test")
    with pytest.raises(ValueError, match="train.lr"):
        load_config(None, command_overrides(namespace))


# -- the commands run, in order, on small stand-ins --------------------------------------------
TINY_TRAIN = [
    "--max-steps", "2", "--no-progress", "--no-report", "--device", "cpu",
    "--set", "model.image_size=32", "--set", "model.resolution=16", "--set", "model.width=8",
    "--set", "model.latent_dim=32", "--set", "model.decoder_width=16",
    "--set", "train.batch_size=4", "--set", "train.views_per_step=3",
    "--set", "train.projection_size=16", "--set", "train.depth_samples=16",
    "--set", "train.val_objects=4", "--set", "train.eval_every=2", "--set", "train.threads=1",
    "--set", "train.amp=false", "--set", "data.workers=0",
]  # fmt: skip
TINY = {
    ("data", "make", "procedural"): [
        "--categories", "chair", "table", "mug", "--per-category", "10", "--views", "8",
        "--image-size", "32", "--voxels", "16", "--no-depth", "--workers", "0", "--no-progress",
    ],
    ("data", "make", "r2n2-layout"): [
        "--categories", "chair", "table", "--per-category", "10", "--views", "4",
        "--distinct", "1", "--workers", "0",
    ],
    ("train",): TINY_TRAIN,
    ("eval",): ["--chamfer-points", "200", "--workers", "0"],
    ("report",): ["--limit", "3"],
    ("fit",): ["--resolution", "16", "--steps", "8", "--threads", "1"],
}  # fmt: skip
"""Settings appended to each kind of command (argparse: the last value of an option wins)."""


def _tiny(args: list[str]) -> list[str]:
    for key in sorted(TINY, key=len, reverse=True):
        if tuple(args[: len(key)]) == key:
            extra = list(TINY[key])
            if key == ("train",) and "--config" in args:
                # the R2N2 stand-in holds two categories; its renders stay 137 x 137 -> 32;
                # this run keeps the report that ends training (its R2N2 table is checked)
                extra += ["--categories", "chair,table", "--set", "data.image_size=32"]
                extra.remove("--no-report")
            elif key == ("train",):
                extra += ["--set", "data.voxel_resolution=16"]
            return [*args, *extra]
    return args


def _stand_ins(root: Path) -> None:
    """The data a README reader downloads, written here in its published layout."""
    from _capture_helpers import make_rig, write_nerf  # tests/ is on sys.path (rootdir)

    from persp3d.train.cli import main

    write_nerf(root / "data" / "lego", make_rig(12))
    args = ["data", "make", "r2n2-layout", "--out", str(root / "data" / "ShapeNet")]
    assert main(_tiny(args)) == 0


@pytest.mark.slow
def test_readme_commands_run_in_order_on_tiny_stand_ins(tmp_path, monkeypatch, capsys):
    from persp3d.train.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERSP3D_DATA_DIR", str(tmp_path / "cache"))
    _stand_ins(tmp_path)
    ran = []
    for words in bash_commands(README.read_text(encoding="utf-8")):
        program, args = words[0], words[1:]
        if program not in ("persp3d", ".venv/bin/persp3d"):
            continue  # make: the main job is tests/test_report.py; torchrun: tests/test_train.py
        namespace = _parse_persp3d(args, "bash block")
        if (
            str(getattr(namespace, "device", None)).startswith("cuda")
            and not torch.cuda.is_available()
        ):
            continue  # a GPU command: it parsed; it runs where there is a GPU
        capsys.readouterr()
        code = main(_tiny(args))
        out = capsys.readouterr()
        assert code == 0, (
            f"README: `persp3d {shlex.join(args)}` failed:\n{out.out[-2000:]}\n{out.err[-2000:]}"
        )
        ran.append(args[0])
    assert {"data", "train", "eval", "report", "check", "fit", "view"} <= set(ran)
    assert "3D-R2N2 protocol" in (tmp_path / "runs/r2n2-13/report.md").read_text()
    for made in (
        "runs/shapes/report.html",
        "runs/shapes/eval_test.json",
        "fits/chair/volume.npz",
        "fits/chair/snapshot.png",
        "runs/shapes/predictions.html",
        "fits/lego/snapshot.png",
    ):
        assert (tmp_path / made).is_file(), made
