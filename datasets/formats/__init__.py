"""Readers of calibrated capture formats, each returning a :class:`CaptureScene` in persp3d's
camera conventions (see :mod:`persp3d.datasets.formats.scene`).

Capture folder -> ``FORMATS[name](...)`` -> :class:`CaptureScene` ->
:func:`persp3d.datasets.captures.import_capture` -> persp3d dataset folder.

    >>> from persp3d.datasets.formats import FORMATS, read_dtu
    >>> scene = read_dtu("scan24")                      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

from persp3d.datasets.formats.dtu import read_dtu
from persp3d.datasets.formats.middlebury import read_middlebury
from persp3d.datasets.formats.r2n2_object import read_r2n2_object
from persp3d.datasets.formats.scene import CaptureScene, CaptureView

__all__ = [
    "FORMATS",
    "CaptureScene",
    "CaptureView",
    "read_dtu",
    "read_middlebury",
    "read_r2n2_object",
]

FORMATS: dict[str, Callable[..., CaptureScene]] = {
    "middlebury": read_middlebury,
    "dtu": read_dtu,
    "r2n2": read_r2n2_object,
}

try:  # written by another module owner; present once it lands
    from persp3d.datasets.formats.nerf import read_nerf
except ImportError:  # pragma: no cover
    pass
else:
    FORMATS["nerf"] = read_nerf
    __all__ += ["read_nerf"]

try:
    from persp3d.datasets.formats.colmap import read_colmap
except ImportError:  # pragma: no cover
    pass
else:
    FORMATS["colmap"] = read_colmap
    __all__ += ["read_colmap"]
