"""Fixtures of the robustness suite: a tiny procedural dataset, a tiny trained run, and the
in-process command line (its exit status and stderr, as a user sees them).

Everything here is made by code at the smallest sizes that still exercise each path
(16 x 16 images, 4 views, 8^3 voxels), so the whole suite stays within CI's budget.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _robust_helpers import TINY_TRAIN, make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A dataset folder: 2 categories x 4 objects (2 train, 1 val, 1 test each), 4 views of
    16 x 16, voxels 8^3."""
    return make_tiny_dataset(tmp_path_factory.mktemp("robust-data") / "tiny")


@pytest.fixture
def data_copy(tiny_data, tmp_path) -> Path:
    """A private copy of :func:`tiny_data` that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_data, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A finished 4-step run folder (config.yaml, last.pt, best.pt, steps.csv)."""
    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    out = tmp_path_factory.mktemp("robust-run") / "run"
    config = load_config(
        None, [*TINY_TRAIN, f"data.root={tiny_data}", f"train.out={out}", "train.max_steps=4"]
    )
    Trainer(config).fit()
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    return out


@pytest.fixture(scope="session")
def full_run(tiny_data, tmp_path_factory) -> Path:
    """An uninterrupted 16-step run (checkpoint every 2 steps): the reference of resumes."""
    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    out = tmp_path_factory.mktemp("robust-full") / "full"
    overrides = [*TINY_TRAIN, f"data.root={tiny_data}", f"train.out={out}", "train.max_steps=16"]
    Trainer(load_config(None, overrides)).fit()
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (status, stderr)``: ``persp3d`` run in this process, as a user runs it
    (argparse usage errors give status 2 through ``SystemExit``)."""
    from persp3d.train.cli import main

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        return status, capsys.readouterr().err

    return run
