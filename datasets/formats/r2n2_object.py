"""R2N2 object reader (placeholder while being written)."""

from __future__ import annotations

__all__ = ["read_r2n2_object"]


def read_r2n2_object(model_dir):
    """Read a R2N2 model folder."""
    raise NotImplementedError("read_r2n2_object is being written")
