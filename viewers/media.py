"""Writing pictures and animations: PNG, animated GIF (Pillow) and MP4 (ffmpeg).

The files at the end of the off-screen viewing path: rendered frames ``(N, H, W, 3)``
uint8 RGB -> **PNG / GIF / MP4**.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = [
    "ANIMATION_SUFFIXES",
    "check_animation_path",
    "find_ffmpeg",
    "save_animation",
    "save_png",
]

ANIMATION_SUFFIXES = (".gif", ".mp4")


def _frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"{name} must be (N, H, W, 3) RGB; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    return arr


def _parent(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``(H, W, 3)`` RGB picture (uint8, or float in [0, 1]) as PNG."""
    from PIL import Image

    path = _parent(path)
    Image.fromarray(_frames(picture, "picture")[0]).save(path, format="PNG")
    return path


def find_ffmpeg() -> str | None:
    """The ffmpeg executable: on ``PATH``, else the one bundled by ``imageio-ffmpeg`` if
    that is installed, else None."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def check_animation_path(path: str | os.PathLike) -> str | None:
    """Raise unless ``path`` ends in ``.gif`` or ``.mp4`` and, for ``.mp4``, ffmpeg is
    found; returns the ffmpeg executable for ``.mp4``, else None."""
    suffix = Path(path).suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"animation path must end in {ANIMATION_SUFFIXES}; got {str(path)!r}")
    if suffix == ".gif":
        return None
    exe = find_ffmpeg()
    if exe is None:
        raise RuntimeError(
            "writing MP4 needs ffmpeg (Debian/Ubuntu: apt-get install ffmpeg, or pip install "
            "imageio-ffmpeg); an animated GIF needs nothing more: use a .gif path"
        )
    return exe


def save_animation(frames: np.ndarray, path: str | os.PathLike, fps: float = 12.0) -> Path:
    """Write frames ``(N, H, W, 3)`` as an animated GIF (looping, Pillow) or an MP4
    (H.264, needs ffmpeg), chosen by the suffix of ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    exe = check_animation_path(path)
    if not fps > 0:
        raise ValueError(f"fps must be positive; got {fps}")
    arr = _frames(frames)
    if suffix == ".gif":
        from PIL import Image

        path = _parent(path)
        images = [Image.fromarray(f) for f in arr]
        images[0].save(
            path,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000.0 / fps),
            loop=0,
        )
        return path
    H, W = arr.shape[1:3]
    # H.264 with yuv420p needs even sides: pad with the last row/column.
    arr = np.pad(arr, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    path = _parent(path)
    cmd = [
        exe, "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{arr.shape[2]}x{arr.shape[1]}",
        "-r", f"{fps:g}", "-i", "-",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    result = subprocess.run(cmd, input=arr.tobytes(), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"ffmpeg failed writing {path}: {result.stderr.decode(errors='replace').strip()}"
        )
    return path
