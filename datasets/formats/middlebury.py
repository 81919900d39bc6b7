"""Middlebury multi-view reader (placeholder while being written)."""

from __future__ import annotations

__all__ = ["read_middlebury"]


def read_middlebury(par_file, images_dir=None):
    """Read a Middlebury ``*_par.txt``."""
    raise NotImplementedError("read_middlebury is being written")
