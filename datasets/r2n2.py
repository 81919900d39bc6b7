"""3D-R2N2 data: ShapeNetRendering images and cameras with ShapeNetVox32 voxels.

Reads the data that 3D-R2N2 (Choy et al., 2016) published, as samples in persp3d's
conventions: ``rendering/NN.png`` (RGBA, 137 x 137) -> images and silhouettes,
``rendering_metadata.txt`` rows -> :func:`persp3d.r2n2_cameras`, ``model.binvox`` ->
voxels through :func:`persp3d.datasets.binvox.binvox_to_volume`.

Cameras, and how they differ from PyTorch3D's R2N2 loader:
    Both follow 3D-R2N2's Blender renderer: the camera sits at ``1.75 * distance_ratio`` from
    the origin, at azimuth/elevation of the row, looking at the origin, upright, with
    Blender's default 35 mm lens on a 32 mm sensor (``f = 2.1875 * W / 2`` pixels, 49.13
    degrees). Like PyTorch3D, persp3d ignores the fov column (25 in every row) because the
    renderer never used it: a 25-degree focal length gives silhouettes that do not match the
    images. Unlike PyTorch3D, persp3d applies the yaw column as an in-plane rotation about
    the optical axis (it is 0 in every published row, so the two agree on real data) and
    returns intrinsics in pixels of the image size asked for, instead of a fixed NDC
    ``K`` of PyTorch3D's ``BlenderCamera``.

The frame of a sample:
    With voxels (``voxel_root``), the world of a sample is ShapeNet's y-up frame moved and
    scaled so that the voxel cube becomes ``VolumeBox()`` = ``[-0.5, 0.5]^3``: ShapeNetVox32
    voxels fill a cube of side ``scale`` (the binvox header) centred on the model, which
    ShapeNet v1 centres at the origin; so ``X_box = X_shapenet / scale``, and the cameras'
    ``t`` is divided by ``scale`` (the images do not change). Without voxels the world is
    ShapeNet's frame unchanged (its models, of unit diagonal, fit inside ``VolumeBox()``).

Convention: images ``(V, 3, H, W)`` RGB composited over ``background`` with the alpha
channel (the RGB under alpha 0 is not always black); silhouettes ``(V, 1, H, W)`` = alpha /
255; voxels ``(1, 32, 32, 32)`` indexed ``(z, y, x)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.cameras import Cameras, r2n2_cameras
from persp3d.datasets.binvox import binvox_to_volume, read_binvox
from persp3d.datasets.multiview import SPLITS, SkipLog, assign_splits
from persp3d.datasets.shapenet import category_name

__all__ = [
    "R2N2",
    "R2N2_IMAGE_SIZE",
    "cameras_to_box_frame",
    "find_r2n2_roots",
    "parse_rendering_metadata",
]

R2N2_IMAGE_SIZE = (137, 137)


def parse_rendering_metadata(path: str | os.PathLike) -> np.ndarray:
    """Rows of a ``rendering_metadata.txt``: ``(N, 5)`` float64
    ``azimuth elevation yaw distance_ratio fov``.

    Raises:
        ValueError: naming the file and the line that is malformed (not 5 finite numbers,
            or a distance ratio that is not positive).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from err
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"{path}:{lineno}: expected 5 numbers 'azimuth elevation yaw distance_ratio "
                f"fov'; got {line.strip()[:60]!r}"
            )
        if values[3] <= 0:
            raise ValueError(f"{path}:{lineno}: distance_ratio must be positive; got {values[3]}")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no metadata rows")
    return np.asarray(rows, dtype=np.float64)


def cameras_to_box_frame(
    cameras: Cameras, center: Sequence[float] = (0.0, 0.0, 0.0), size: float = 1.0
) -> Cameras:
    """The same cameras in a world moved and scaled so the cube ``(center, size)`` becomes
    ``VolumeBox()``: ``X_box = (X - center) / size``.

    Args:
        cameras: any batch shape.
        center: ``(3,)`` world centre of the cube; size: its side.

    Returns:
        ``Cameras`` with ``t' = (t + R @ center) / size``; ``K`` and ``R`` unchanged, so every
        world point projects to the same pixel as its image ``X_box`` does.
    """
    c = cameras.t.new_tensor(center)
    t = (cameras.t + (cameras.R @ c.unsqueeze(-1)).squeeze(-1)) / float(size)
    return Cameras(cameras.K, cameras.R, t, cameras.image_size)


def find_r2n2_roots(root: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(rendering_root, voxel_root or None)`` for ``root`` = a ``ShapeNetRendering`` folder
    or a folder holding ``ShapeNetRendering`` (and ``ShapeNetVox32``)."""
    root = Path(root)
    if (root / "ShapeNetRendering").is_dir():
        vox = root / "ShapeNetVox32"
        return root / "ShapeNetRendering", vox if vox.is_dir() else None
    vox = root.parent / "ShapeNetVox32"
    return root, vox if vox.is_dir() and root.name == "ShapeNetRendering" else None


class R2N2(torch.utils.data.Dataset):
    """3D-R2N2's ShapeNetRendering (+ ShapeNetVox32) as samples.

    Args:
        root: a ``ShapeNetRendering`` folder, or a folder holding ``ShapeNetRendering`` and
            ``ShapeNetVox32``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        voxel_root: the ``ShapeNetVox32`` folder (default: found beside the renderings;
            ``False`` for none).
        splits_file: JSON ``{split: {synset: {model_id: ...}}}`` (3D-R2N2 / PyTorch3D's
            format); default: :func:`assign_splits` over all models found.
        categories: synset ids or names to keep.
        views: indices of the views to return (default: every row of the metadata, 24 in
            the published data).
        image_size: ``(H, W)`` to resize to (default 137 x 137); the cameras follow.
        background: grey level composited under the alpha channel.
        strict: raise :class:`DataError` on the first bad model instead of skipping it.
        check_images: open every PNG header up front to check its size (about 1 ms per
            model); with False, a bad image raises when it is read.

    Models with missing or malformed metadata rows, missing, unreadable or wrongly sized
    images (or images without alpha), or a missing or unreadable ``.binvox`` are skipped, each with a :class:`DataWarning`
    naming the file, then a summary warning with the count.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        voxel_root: str | os.PathLike | bool | None = None,
        splits_file: str | os.PathLike | None = None,
        categories: Sequence[str] | None = None,
        views: Sequence[int] | None = None,
        image_size: int | Sequence[int] | None = None,
        background: float = 1.0,
        strict: bool = False,
        check_images: bool = True,
        seed: int = 0,
    ) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {(*SPLITS, 'all')}; got {split!r}")
        self.rendering_root, found_vox = find_r2n2_roots(root)
        if not self.rendering_root.is_dir():
            raise FileNotFoundError(f"{self.rendering_root}: no such folder")
        if voxel_root is False:
            self.voxel_root = None
        elif voxel_root is None or voxel_root is True:
            self.voxel_root = found_vox
        else:
            self.voxel_root = Path(voxel_root)
        self.split = split
        self.views = None if views is None else [int(v) for v in views]
        if self.views is not None and (not self.views or min(self.views) < 0):
            raise ValueError(f"views must be non-negative view indices; got {self.views}")
        self.image_size = None if image_size is None else _pair(image_size)
        self.background = float(background)
        self.skipped = SkipLog(strict, "models")
        models = self._scan(categories, check_images)
        self.models = self._select(models, split, splits_file, seed)
        self.skipped.summary(len(models) + len(self.skipped.entries))

    # -- discovery -----------------------------------------------------------------------
    def _scan(self, categories: Sequence[str] | None, check_images: bool) -> list[dict[str, Any]]:
        wanted = None if categories is None else set(categories)
        models = []
        for synset_dir in sorted(p for p in self.rendering_root.iterdir() if p.is_dir()):
            synset = synset_dir.name
            name = category_name(synset)
            if wanted is not None and synset not in wanted and name not in wanted:
                continue
            for model_dir in sorted(p for p in synset_dir.iterdir() if p.is_dir()):
                model = self._check_model(synset, model_dir, check_images)
                if model is not None:
                    models.append(model)
        return models

    def _check_model(self, synset: str, model_dir: Path, check_images: bool) -> dict | None:
        render_dir = model_dir / "rendering"
        meta_path = render_dir / "rendering_metadata.txt"
        if not meta_path.is_file():
            self.skipped.skip(meta_path, "missing rendering metadata")
            return None
        try:
            rows = parse_rendering_metadata(meta_path)
        except ValueError as err:
            self.skipped.skip(meta_path, str(err).split(": ", 1)[-1])
            return None
        views = list(range(len(rows))) if self.views is None else self.views
        if len(rows) < max(views) + 1:
            self.skipped.skip(
                meta_path, f"{len(rows)} metadata rows, views up to {max(views)} asked for"
            )
            return None
        for v in views:
            png = render_dir / f"{v:02d}.png"
            if not png.is_file():
                self.skipped.skip(png, "missing image")
                return None
            if check_images:
                problem = _check_png(png)
                if problem:
                    self.skipped.skip(png, problem)
                    return None
        model: dict[str, Any] = {
            "synset": synset,
            "category": category_name(synset),
            "id": model_dir.name,
            "dir": render_dir,
            "rows": rows[views],
            "views": views,
        }
        if self.voxel_root is not None:
            vox_path = self.voxel_root / synset / model_dir.name / "model.binvox"
            if not vox_path.is_file():
                self.skipped.skip(vox_path, "missing voxels")
                return None
            try:
                read_binvox(vox_path)
            except ValueError as err:
                self.skipped.skip(vox_path, str(err).split(": ", 1)[-1])
                return None
            model["binvox"] = vox_path
        return model

    def _select(self, models: list[dict], split: str, splits_file, seed: int) -> list[dict]:
        if split == "all":
            return models
        if splits_file is not None:
            path = Path(splits_file)
            try:
                table = json.loads(path.read_text())[split]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}: cannot read split {split!r} ({err})") from err
            return [m for m in models if m["id"] in table.get(m["synset"], {})]
        splits = assign_splits([(m["synset"], m["id"]) for m in models], seed=seed)
        return [m for m in models if splits[(m["synset"], m["id"])] == split]

    # -- items ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.models)

    def cameras(self, index: int) -> Cameras:
        """The ``(V,)`` cameras of model ``index`` in its sample's frame (see the module)."""
        model = self.models[index]
        scale = read_binvox(model["binvox"]).scale if "binvox" in model else None
        return self._cameras(model, scale)

    def _cameras(self, model: dict[str, Any], voxel_scale: float | None) -> Cameras:
        cams = r2n2_cameras(model["rows"], R2N2_IMAGE_SIZE)
        if self.image_size is not None:
            cams = cams.resized(self.image_size)
        if voxel_scale is not None:
            cams = cameras_to_box_frame(cams, (0.0, 0.0, 0.0), voxel_scale)
        return cams

    def __getitem__(self, index: int) -> dict[str, Any]:
        model = self.models[index]
        images, silhouettes = [], []
        for v in model["views"]:
            rgb, alpha = _load_rgba(model["dir"] / f"{v:02d}.png", self.image_size)
            images.append(rgb * alpha + self.background * (1.0 - alpha))  # (H, W, 3)
            silhouettes.append(alpha)  # (H, W, 1)
        sample: dict[str, Any] = {
            "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            "silhouettes": torch.from_numpy(np.stack(silhouettes)).permute(0, 3, 1, 2).contiguous(),
            "category": model["category"],
            "id": model["id"],
        }
        scale = None
        if "binvox" in model:
            vox = read_binvox(model["binvox"])
            volume = binvox_to_volume(vox.data)  # (D, H, W) = (z, y, x)
            sample["voxels"] = torch.from_numpy(volume.astype(np.float32))[None]  # (1, D, H, W)
            scale = vox.scale
        sample["cameras"] = self._cameras(model, scale)
        return sample

    def __repr__(self) -> str:
        return f"R2N2(root={str(self.rendering_root)!r}, split={self.split!r}, models={len(self)})"


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    from persp3d._checks import check_image_size

    h, w = check_image_size(size, "image_size")  # positive ints, else ValueError
    if h * w > 4096 * 4096:
        raise ValueError(f"image_size must be at most 4096 x 4096 pixels; got {(h, w)}")
    return (h, w)


def _check_png(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            size, mode = img.size, img.mode
    except (OSError, UnidentifiedImageError) as err:
        return f"unreadable image ({err.__class__.__name__})"
    if (size[1], size[0]) != R2N2_IMAGE_SIZE:
        return f"image is {size[0]}x{size[1]}, expected {R2N2_IMAGE_SIZE[1]}x{R2N2_IMAGE_SIZE[0]}"
    if mode not in ("RGBA", "LA", "PA") and not (mode == "P" and "transparency" in img.info):
        return f"image has no alpha channel (mode {mode})"
    return None


def _load_rgba(path: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` RGB and ``(H, W, 1)`` alpha in [0, 1] of an RGBA PNG (resized if asked)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGBA")
            if (img.size[1], img.size[0]) != R2N2_IMAGE_SIZE:
                raise ValueError(f"{path}: image is {img.size[0]}x{img.size[1]}, expected 137x137")
            if size is not None and size != R2N2_IMAGE_SIZE:
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except OSError as err:
        raise ValueError(f"{path}: unreadable image ({err})") from err
    return arr[..., :3], arr[..., 3:]
