"""3D-R2N2 renderings of one ShapeNet model -> :class:`CaptureScene`.

First reader of the capture path: ``ShapeNetRendering/<synset>/<model>/rendering/`` ->
:func:`read_r2n2_object` -> :func:`persp3d.datasets.captures.import_capture`.

Cameras come from :func:`persp3d.datasets.r2n2.parse_rendering_metadata` and
:func:`persp3d.r2n2_cameras` (the conventions are stated there: camera at
``1.75 * distance_ratio`` looking at the origin, Blender's 35 mm lens on a 32 mm sensor, the
fov column ignored, ShapeNet's y-up frame). The renders are 137 x 137 RGBA; the alpha
channel is the silhouette (``silhouettes="auto"`` picks it). ShapeNet v1 models are centred
at the origin and scaled to a unit diagonal, so the scene's box is ``VolumeBox()``'s cube
(centre 0, side 1) and ``up`` is ``+y``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from persp3d.cameras import r2n2_cameras
from persp3d.datasets.formats.scene import CaptureScene, CaptureView, image_size_of
from persp3d.datasets.r2n2 import parse_rendering_metadata

__all__ = ["read_r2n2_object"]


def read_r2n2_object(model_dir: str | os.PathLike) -> CaptureScene:
    """Read one ShapeNetRendering model folder.

    Args:
        model_dir: ``ShapeNetRendering/<synset>/<model_id>`` (holding ``rendering/``) or its
            ``rendering`` folder itself, with ``rendering_metadata.txt`` and ``NN.png``.
            Image names come from ``renderings.txt`` when present, else ``00.png``,
            ``01.png``, ... one per metadata row.

    Returns:
        A :class:`CaptureScene` named after the model id, source ``"r2n2"``, up ``+y``,
        box ``(0, 0, 0), 1``.

    Raises:
        FileNotFoundError: no metadata, or a listed image is missing.
        ValueError: malformed metadata (naming the file and line), or a different number
            of images and metadata rows.
    """
    root = Path(model_dir)
    render_dir = root / "rendering" if (root / "rendering").is_dir() else root
    meta = render_dir / "rendering_metadata.txt"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: no rendering metadata (not a ShapeNetRendering model)")
    rows = parse_rendering_metadata(meta)
    listing = render_dir / "renderings.txt"
    if listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        if len(names) != len(rows):
            raise ValueError(
                f"{listing}: lists {len(names)} images but {meta.name} has {len(rows)} rows"
            )
    else:
        names = [f"{i:02d}.png" for i in range(len(rows))]
    paths = [render_dir / n for n in names]
    sizes = [image_size_of(p) for p in paths]  # raises FileNotFoundError naming the file
    views = []
    for i, (path, size) in enumerate(zip(paths, sizes)):
        cams = r2n2_cameras(rows[i : i + 1], size).double()
        views.append(
            CaptureView(
                name=path.stem,
                image_path=path,
                K=cams.K[0].numpy(),
                R=cams.R[0].numpy(),
                t=cams.t[0].numpy(),
                image_size=size,
            )
        )
    model_id = root.name if render_dir is not root else root.parent.name
    return CaptureScene(
        name=model_id,
        source="r2n2",
        views=views,
        up=np.array([0.0, 1.0, 0.0]),
        box=(np.zeros(3), 1.0),
    )
