"""Open3D backend: an interactive window, and off-screen snapshots and turntables.

Last stage of the viewing path: :class:`~persp3d.viewers.scene.ViewItem` -> scene geometry
(:func:`~persp3d.viewers.scene.build_scene`) -> **Open3D**. Off-screen pictures use
Open3D's legacy ``Visualizer(visible=False)``, which falls back to EGL (Mesa's software
rasteriser on a machine without a GPU) when there is no display; its viewpoint is a
persp3d :class:`~persp3d.Cameras`, so pictures are reproducible and match
:func:`persp3d.project`.

Convention: a persp3d camera (``X_cam = R X + t``, OpenCV axes, pixel centres at ``+0.5``)
becomes Open3D's pinhole parameters with the extrinsic ``[R | t]``; Open3D's legacy
renderer takes only a focal length from the intrinsics (principal point at the window
centre, square pixels), so any ``K`` is rendered through a centred square-pixel camera and
resampled (:func:`open3d_camera` and ``_resample_to_camera`` are the one place where that
happens; a centred ``K`` with ``fx = fy`` gives the render's own pixels).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from persp3d.cameras import Cameras
from persp3d.viewers.scene import (
    COLORS,
    MODES,
    Scene,
    ViewItem,
    ViewOptions,
    build_scene,
    fit_view,
)

__all__ = [
    "KEY_HELP",
    "NoDisplayError",
    "Viewer",
    "has_display",
    "import_open3d",
    "open3d_camera",
    "render_scene",
    "show",
    "snapshot",
    "turntable",
    "turntable_cameras",
]


class NoDisplayError(RuntimeError):
    """A window was asked for where no display exists."""


NO_DISPLAY_HINT = (
    "no display found (neither DISPLAY nor WAYLAND_DISPLAY is set), so no window can open; "
    "render off-screen instead: --snapshot out.png, --turntable out.gif, or --html out.html "
    "(an interactive page to open anywhere)"
)


def import_open3d() -> Any:
    """``import open3d``, with an error that says what to install when it fails."""
    try:
        import open3d as o3d
    except ImportError as err:
        text = str(err)
        if "libusb" in text:
            raise ImportError(
                "Open3D cannot load the system library libusb-1.0 (" + text + "); install it "
                "(Debian/Ubuntu: apt-get install libusb-1.0-0; scripts/setup.sh does it when "
                "run as root)"
            ) from err
        if "libGL" in text or "libEGL" in text:
            raise ImportError(
                f"Open3D cannot load OpenGL/EGL ({text}); install Mesa "
                "(Debian/Ubuntu: apt-get install libegl1 libgl1 libgl1-mesa-dri)"
            ) from err
        raise ImportError(
            f"the 3D viewer needs Open3D ({text}): pip install 'persp3d[view]'"
        ) from err
    return o3d


def has_display() -> bool:
    """Whether a window can open: always on macOS and Windows; on Linux and other Unix
    systems when ``DISPLAY`` or ``WAYLAND_DISPLAY`` is set."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """Redirect the process's stderr (file descriptor 2, which C++ libraries write to) into
    a buffer for the duration of the block."""
    buffer = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield buffer
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buffer.write(tmp.read().decode(errors="replace"))
            buffer.seek(0)


def open3d_camera(
    camera: Cameras, window: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
    """Open3D pinhole parameters that render what one persp3d camera sees.

    Open3D's legacy renderer honours only ``fy`` of an intrinsic matrix: it centres the
    principal point and makes pixels square. So the render camera is a centred pinhole with
    square pixels of focal length ``f0 = max(fx, fy)`` whose window covers the camera's
    picture; :func:`_resample_to_camera` then takes the picture out of it (exactly the same
    pixels when the camera already is centred with ``fx = fy``).

    Args:
        camera: a camera of batch shape ``()``.
        window: ``(width, height)`` of the render window (default: the smallest that covers
            the picture, :func:`_render_window`).

    Returns:
        intrinsic ``(3, 3)`` of the render camera, pixel centres at integers as Open3D
        counts them (``cx = width / 2 - 0.5``); extrinsic ``(4, 4)`` world -> camera
        ``[[R, t], [0, 1]]`` (OpenCV axes, which Open3D's pinhole parameters share);
        ``(width, height)``; and ``f0``.
    """
    if camera.ndim != 0:
        raise ValueError(
            f"camera must be a single camera; got batch shape {tuple(camera.batch_shape)}"
        )
    f0, size = _render_window(camera)
    W0, H0 = window if window is not None else size
    intrinsic = np.array([[f0, 0.0, W0 / 2 - 0.5], [0.0, f0, H0 / 2 - 0.5], [0.0, 0.0, 1.0]])
    cam = camera.detach().double()
    extrinsic = np.eye(4)
    extrinsic[:3, :3] = cam.R.numpy()
    extrinsic[:3, 3] = cam.t.numpy()
    return intrinsic, extrinsic, (W0, H0), f0


def _normalised_pixel_centres(camera: Cameras) -> np.ndarray:
    """``(H, W, 2)`` camera-plane ``(x, y)`` (at depth 1) of the camera's pixel centres."""
    uv = camera.detach().double().pixel_centers()  # (H, W, 2), centres at +0.5
    xyz = camera.detach().double().pixels_to_camera(uv.reshape(-1, 2), 1.0)  # (H W, 3)
    H, W = camera.image_size
    return xyz[:, :2].reshape(H, W, 2).numpy()


def _render_window(camera: Cameras) -> tuple[float, tuple[int, int]]:
    """``f0`` and the smallest ``(width, height)`` of a centred, square-pixel render with
    focal length ``f0 = max(fx, fy)`` that holds every pixel of ``camera``'s picture."""
    K = camera.detach().double().K
    f0 = float(max(K[0, 0], K[1, 1]))
    H, W = camera.image_size
    corners = (
        camera.detach()
        .double()
        .pixels_to_camera(
            torch.tensor([[0.0, 0.0], [W, 0.0], [0.0, H], [W, H]], dtype=torch.float64), 1.0
        )
    )  # (4, 3) image-plane corners at depth 1
    half = corners[:, :2].abs().amax(dim=0).numpy() * f0  # (2,) half extents in pixels
    W0, H0 = (max(1, math.ceil(2 * h - 1e-6)) for h in half)
    return f0, (W0, H0)


def _resample_to_camera(
    picture: np.ndarray, camera: Cameras, f0: float, window: tuple[int, int]
) -> np.ndarray:
    """The camera's ``(H, W, 3)`` picture out of a centred render ``picture`` ``(H0, W0, 3)``
    with focal length ``f0``: each pixel takes the render pixel its centre falls in."""
    W0, H0 = window
    xy = _normalised_pixel_centres(camera)  # (H, W, 2)
    cols = np.clip(np.floor(f0 * xy[..., 0] + W0 / 2), 0, W0 - 1).astype(int)
    rows = np.clip(np.floor(f0 * xy[..., 1] + H0 / 2), 0, H0 - 1).astype(int)
    return picture[rows, cols]


def _geometries(scene: Scene, o3d: Any) -> list[Any]:
    out = []
    for mesh in scene.meshes:
        if len(mesh.faces) == 0:
            continue
        m = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(mesh.vertices), o3d.utility.Vector3iVector(mesh.faces)
        )
        if mesh.vertex_colors is not None:
            m.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors, float))
        else:
            m.paint_uniform_color(np.asarray(mesh.color, dtype=float))
        if mesh.lit:
            m.compute_vertex_normals()
        out.append(m)
    for lines in scene.lines:
        if len(lines.segments) == 0:
            continue
        ls = o3d.geometry.LineSet(
            o3d.utility.Vector3dVector(lines.points), o3d.utility.Vector2iVector(lines.segments)
        )
        colors = (
            lines.segment_colors
            if lines.segment_colors is not None
            else np.tile(np.asarray(lines.color, float), (len(lines.segments), 1))
        )
        ls.colors = o3d.utility.Vector3dVector(np.asarray(colors, dtype=float))
        out.append(ls)
    return out


def _set_render_options(vis: Any) -> None:
    opt = vis.get_render_option()
    opt.background_color = np.asarray(COLORS["background"])
    opt.mesh_show_back_face = True
    opt.light_on = True


def _apply_camera(
    vis: Any, camera: Cameras, o3d: Any, window: tuple[int, int] | None = None
) -> float | None:
    """Point the visualiser at ``camera`` (the centred render camera of
    :func:`open3d_camera` for a ``window``-sized window); returns ``f0``, or None if Open3D
    refused (its window is not ``window``, e.g. a high-DPI screen doubled it)."""
    intrinsic, extrinsic, (W0, H0), f0 = open3d_camera(camera, window)
    ctr = vis.get_view_control()
    params = ctr.convert_to_pinhole_camera_parameters()
    params.intrinsic = o3d.camera.PinholeCameraIntrinsic(
        W0, H0, intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
    )
    params.extrinsic = extrinsic
    if not ctr.convert_from_pinhole_camera_parameters(params, allow_arbitrary=True):
        return None
    # Open3D clips at near/far planes derived from the geometry's bounding box; make room
    # for the whole scene seen from this camera.
    distance = float(np.linalg.norm(extrinsic[:3, 3]))
    ctr.set_constant_z_near(max(1e-3, 0.01 * distance))
    ctr.set_constant_z_far(1e3 * max(1.0, distance))
    return f0


def render_scene(scene: Scene, cameras: Cameras) -> np.ndarray:
    """Render ``scene`` off-screen from each camera.

    Args:
        scene: the geometry (:func:`~persp3d.viewers.scene.build_scene`).
        cameras: ``Cameras`` of batch shape ``()`` or ``(N,)``; the picture has their
            ``image_size``.

    Returns:
        ``(N, H, W, 3)`` uint8 RGB pictures (``(H, W, 3)`` for one camera), row 0 at the top.

    Works without a display (EGL) and without a GPU (Mesa's software rasteriser).
    """
    o3d = import_open3d()
    single = cameras.ndim == 0
    cams = cameras.reshape(1) if single else cameras.flatten()
    # One window for all: the largest centred render any camera needs.
    sizes = np.array([_render_window(cam)[1] for cam in cams])  # (N, 2) (width, height)
    window = (int(sizes[:, 0].max()), int(sizes[:, 1].max()))
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    vis = o3d.visualization.Visualizer()
    # Without a display GLFW and EGL report their probing on stderr ("XDG_RUNTIME_DIR is
    # invalid ..."); keep it, and show it only if no context could be made.
    with _captured_stderr() as log:
        created = vis.create_window(
            window_name="persp3d", width=window[0], height=window[1], visible=False
        )
    if not created:
        raise RuntimeError(
            "Open3D could not create an off-screen OpenGL context (EGL); install Mesa "
            "(Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri). Its messages:\n" + log.read()
        )
    try:
        _set_render_options(vis)
        for g in _geometries(scene, o3d):
            vis.add_geometry(g)
        frames = []
        for cam in cams:
            f0 = _apply_camera(vis, cam, o3d, window)
            if f0 is None:  # pragma: no cover - the window is made at the size asked for
                raise RuntimeError(f"Open3D refused a camera for a {window[0]}x{window[1]} window")
            vis.poll_events()
            vis.update_renderer()
            buf = np.asarray(vis.capture_screen_float_buffer(do_render=True))  # (H0, W0, 3)
            picture = (np.clip(buf, 0.0, 1.0) * 255).round().astype(np.uint8)
            frames.append(_resample_to_camera(picture, cam, f0, window))  # (H, W, 3)
    finally:
        vis.destroy_window()
    out = np.stack(frames)
    return out[0] if single else out


def _view(scene: Scene, view: dict[str, Any] | None, azimuth=None) -> Cameras:
    view = dict(view or {})
    if azimuth is not None:
        view["azimuth"] = azimuth
    center = view.pop("target", None) or scene.center
    view.setdefault("up", scene.up)
    return fit_view(center, scene.radius, **view)


def snapshot(
    item: ViewItem,
    path: str | os.PathLike | None = None,
    options: ViewOptions | None = None,
    camera: Cameras | None = None,
    **view: Any,
) -> np.ndarray:
    """Render ``item`` off-screen to a picture (and a PNG file when ``path`` is given).

    Args:
        item: what to show.
        path: a ``.png`` file to write, or None.
        options: how to draw it (default :class:`ViewOptions`).
        camera: the viewpoint (a persp3d camera of batch shape ``()``); by default an orbit
            camera that frames the object (:func:`~persp3d.viewers.scene.scene_bounds`,
            :func:`~persp3d.viewers.scene.fit_view`), upright in ``item.up``, with the
            keyword arguments ``azimuth`` (30), ``elevation`` (25), ``fov`` (40),
            ``image_size`` ((480, 640)), ``target`` (the box centre), ``up`` and
            ``margin``.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    scene = build_scene(item, options)
    cam = camera if camera is not None else _view(scene, view)
    picture = render_scene(scene, cam)
    if path is not None:
        from persp3d.viewers.media import save_png

        save_png(picture, path)
    return picture


def turntable_cameras(
    scene: Scene, n_frames: int = 36, view: dict[str, Any] | None = None
) -> Cameras:
    """``(n_frames,)`` orbit cameras around the scene at equal azimuth steps, starting at
    ``view["azimuth"]`` (default 30) and fitting the scene as :func:`snapshot` does."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive; got {n_frames}")
    start = float((view or {}).get("azimuth", 30.0))
    az = [start + 360.0 * i / n_frames for i in range(n_frames)]
    return _view(scene, view, azimuth=az)


def turntable(
    item: ViewItem,
    path: str | os.PathLike | None = None,
    n_frames: int = 36,
    fps: float = 12.0,
    options: ViewOptions | None = None,
    **view: Any,
) -> np.ndarray:
    """Render ``n_frames`` views around ``item`` (a turntable) and write them as an animated
    ``.gif`` or ``.mp4`` (needs ffmpeg) when ``path`` is given.

    Returns:
        ``(n_frames, H, W, 3)`` uint8 RGB.
    """
    if path is not None:
        from persp3d.viewers.media import check_animation_path

        check_animation_path(path)  # before the rendering: a missing ffmpeg fails fast
    scene = build_scene(item, options)
    frames = render_scene(scene, turntable_cameras(scene, n_frames, view))
    if path is not None:
        from persp3d.viewers.media import save_animation

        save_animation(frames, path, fps=fps)
    return frames


# ---------------------------------------------------------------------------------------
# The interactive window
KEY_HELP = """keys:
  V          cycle isosurface / voxels / both
  [ ]        threshold down / up by 0.05
  G          ground truth beside the prediction on / off
  C          camera frustums on / off
  I          silhouettes on the image planes on / off
  B          volume box on / off
  N or ->    next item;  P or <-  previous item
  S          save a snapshot of the window (persp3d_view_NNN.png)
  mouse      drag: rotate; wheel: zoom; shift+drag: pan;  Q / Esc: quit"""

_GLFW_RIGHT, _GLFW_LEFT = 262, 263


def _clamp_threshold(t: float) -> float:
    return float(min(0.95, max(0.05, round(t, 2))))


class Viewer:
    """The interactive Open3D window: items, the drawing options, and the keys that change
    them (see :data:`KEY_HELP`). :func:`show` opens one and runs it.

    Args:
        items: a sequence of :class:`ViewItem`, or a function of the index (with ``n_items``).
        n_items: number of items when ``items`` is a function.
        start: index of the first item shown.
        options: drawing options (changed by the keys).
        on_message: where status lines go (``print``).
    """

    def __init__(
        self,
        items: Sequence[ViewItem] | Callable[[int], ViewItem],
        n_items: int | None = None,
        start: int = 0,
        options: ViewOptions | None = None,
        on_message: Callable[[str], None] = print,
    ) -> None:
        self._get = items if callable(items) else items.__getitem__
        self.count = n_items if n_items is not None else len(items)  # type: ignore[arg-type]
        if self.count < 1:
            raise ValueError("the viewer needs at least one item")
        self.index = min(max(int(start), 0), self.count - 1)
        self.options = options if options is not None else ViewOptions()
        self.on_message = on_message
        self.shots = 0
        self.vis: Any = None
        self._o3d: Any = None
        self._cache: dict[int, ViewItem] = {}
        self._placed = False
        self.actions: dict[str, Callable[[], bool]] = {
            "V": lambda: self._set(mode=MODES[(MODES.index(self.options.mode) + 1) % len(MODES)]),
            "[": lambda: self._set(threshold=_clamp_threshold(self.options.threshold - 0.05)),
            "]": lambda: self._set(threshold=_clamp_threshold(self.options.threshold + 0.05)),
            "G": lambda: self._set(show_ground_truth=not self.options.show_ground_truth),
            "C": lambda: self._set(show_cameras=not self.options.show_cameras),
            "I": lambda: self._set(show_silhouettes=not self.options.show_silhouettes),
            "B": lambda: self._set(show_box=not self.options.show_box),
            "N": lambda: self.step(+1),
            "P": lambda: self.step(-1),
            "S": self.save,
        }

    # -- state -----------------------------------------------------------------------------
    @property
    def item(self) -> ViewItem:
        """The item shown (read once, kept while it is shown)."""
        if self.index not in self._cache:
            self._cache.clear()
            self._cache[self.index] = self._get(self.index)
        return self._cache[self.index]

    def _set(self, **changes: Any) -> bool:
        for key, value in changes.items():
            setattr(self.options, key, value)
        self.redraw()
        return True

    def step(self, delta: int) -> bool:
        """Show the item ``delta`` places on (wrapping around)."""
        self.index = (self.index + delta) % self.count
        self.redraw()
        return True

    def press(self, key: str) -> bool:
        """Do what ``key`` does (one of :attr:`actions`); True when the picture changed."""
        return self.actions[key.upper()]()

    def status(self) -> str:
        o = self.options
        return (
            f"[{self.index + 1}/{self.count}] {self.item.title}  mode={o.mode} "
            f"threshold={o.threshold:.2f} ground_truth={o.show_ground_truth} "
            f"cameras={o.show_cameras} silhouettes={o.show_silhouettes} box={o.show_box}"
        )

    # -- the window ------------------------------------------------------------------------
    def open(self, width: int = 1280, height: int = 800) -> None:
        """Create the window and draw the first item.

        Raises:
            NoDisplayError: no display exists.
        """
        if not has_display():
            raise NoDisplayError(NO_DISPLAY_HINT)
        o3d = self._o3d = import_open3d()
        self.vis = o3d.visualization.VisualizerWithKeyCallback()
        if not self.vis.create_window(window_name="persp3d view", width=width, height=height):
            raise NoDisplayError(NO_DISPLAY_HINT)  # pragma: no cover - needs a broken display
        _set_render_options(self.vis)
        for key, action in self.actions.items():
            self.vis.register_key_callback(ord(key), lambda _vis, act=action: act())
        self.vis.register_key_callback(_GLFW_RIGHT, lambda _vis: self.step(+1))
        self.vis.register_key_callback(_GLFW_LEFT, lambda _vis: self.step(-1))
        self.redraw()

    def redraw(self) -> None:
        """Rebuild the scene of the current item and options, keeping the viewpoint."""
        self.on_message(self.status())
        if self.vis is None:
            return
        o3d, vis = self._o3d, self.vis
        scene = build_scene(self.item, self.options)
        ctr = vis.get_view_control()
        params = ctr.convert_to_pinhole_camera_parameters() if self._placed else None
        vis.clear_geometries()
        for g in _geometries(scene, o3d):
            vis.add_geometry(g, reset_bounding_box=not self._placed)
        if params is None:
            # The window's framebuffer (not the size asked for: high-DPI screens double it).
            current = ctr.convert_to_pinhole_camera_parameters().intrinsic
            size = (current.height, current.width)
            _apply_camera(vis, _view(scene, {"image_size": size}), o3d)  # else Open3D's own
            self._placed = True
        else:
            ctr.convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)

    def save(self) -> bool:
        """Save the window's picture as ``persp3d_view_NNN.png`` in the working folder."""
        name = f"persp3d_view_{self.shots:03d}.png"
        if self.vis is not None:
            self.vis.capture_screen_image(name, do_render=True)
        self.shots += 1
        self.on_message(f"saved {name}")
        return False

    def run(self) -> None:
        """Hand control to the window until it is closed."""
        self.on_message(KEY_HELP)
        try:
            self.vis.run()
        finally:
            self.close()

    def close(self) -> None:
        if self.vis is not None:
            self.vis.destroy_window()
            self.vis = None


def show(
    items: Sequence[ViewItem] | Callable[[int], ViewItem],
    n_items: int | None = None,
    start: int = 0,
    options: ViewOptions | None = None,
    width: int = 1280,
    height: int = 800,
    on_message: Callable[[str], None] = print,
) -> None:
    """Open an interactive Open3D window on ``items`` (a list, or a function of the index
    with ``n_items``), starting at ``start``; see :data:`KEY_HELP` for the keys.

    Raises:
        NoDisplayError: no display exists (the message says to use ``--snapshot`` or
            ``--html`` instead).
    """
    viewer = Viewer(items, n_items, start, options, on_message)
    viewer.open(width, height)
    viewer.run()
