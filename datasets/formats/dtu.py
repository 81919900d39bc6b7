"""DTU/IDR reader (placeholder while being written)."""

from __future__ import annotations

__all__ = ["read_dtu"]


def read_dtu(scan_dir):
    """Read a DTU scan."""
    raise NotImplementedError("read_dtu is being written")
