"""Shared fixtures: the device every device-dependent test runs on, and Hypothesis settings.

Tests run on the CPU by default and on CUDA as well when a GPU is present, through the
``device`` fixture (as Kornia's ``conftest.py`` does); nothing hard-codes ``"cuda"``.
"""

from __future__ import annotations

import os

import pytest

# persp3d before torch: importing it sets OMP_WAIT_POLICY=PASSIVE (see persp3d/__init__.py)
import persp3d  # noqa: F401

# isort: split
import torch
from hypothesis import settings

# Hypothesis: no per-example deadline (the test machines are shared and the first call of
# a torch op can be slow); PERSP3D_HYPOTHESIS_PROFILE=thorough runs ten times more examples.
settings.register_profile("persp3d", deadline=None, max_examples=40)
settings.register_profile("thorough", deadline=None, max_examples=400)
settings.load_profile(os.environ.get("PERSP3D_HYPOTHESIS_PROFILE", "persp3d"))


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """``torch.device`` to run on: ``cpu``, and ``cuda`` when a GPU is available."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    return torch.device(request.param)
