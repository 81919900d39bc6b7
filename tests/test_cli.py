"""The ``persp3d`` command line answers ``--version`` and ``--help``, in process and as the
installed console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import persp3d
from persp3d.train.cli import main


def persp3d_command() -> list[str]:
    """The installed ``persp3d`` script beside this interpreter (``.venv/bin/persp3d``),
    else one on PATH, else ``python -m persp3d.train.cli``."""
    beside = Path(sys.executable).with_name("persp3d")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("persp3d")
    return [found] if found else [sys.executable, "-m", "persp3d.train.cli"]


def test_version_flag_prints_the_package_version_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"persp3d {persp3d.__version__}"


def test_help_flag_prints_usage_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: persp3d")
    assert "--version" in out


def test_no_command_prints_help_and_returns_zero(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: persp3d")


def test_unknown_option_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_installed_persp3d_script_answers_with_exit_code_zero(flag):
    result = subprocess.run(
        [*persp3d_command(), flag], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    if flag == "--version":
        assert result.stdout.strip() == f"persp3d {persp3d.__version__}"
    else:
        assert result.stdout.startswith("usage: persp3d")
