"""The web viewer: one self-contained HTML file (no network access needed to open it) with
an interactive 3D view of a volume's isosurface, voxels and cameras; and a small server
that shows it, bound to localhost by default.

For people on remote machines: :class:`~persp3d.viewers.scene.ViewItem` -> **HTML page**
(WebGL, or a 2D-canvas fallback where WebGL is missing) -> any browser. The page holds its
data inline: the volumes as 8-bit occupancy (1 bit for binary voxels), a loaded mesh with vertices quantised to 16
bits over its bounding box, line
segments, and the silhouettes (ground truth as bits, projections as 8-bit occupancy);
the page computes isosurfaces (marching tetrahedra), voxels and silhouette overlays for the
threshold the user picks. Nothing is fetched.

Convention: the page's viewpoint is a persp3d orbit camera (azimuth from +z toward +x about
+y, positive elevation looks down, vertical ``fov`` in degrees) turned into the item's up
frame (:func:`~persp3d.viewers.scene.up_frame`: the identity for +y up), so ``view=``
arguments mean what they mean for :func:`~persp3d.viewers.snapshot`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persp3d.viewers._web_page import PAGE
from persp3d.viewers.scene import (
    _VIRIDIS,
    COLORS,
    ViewItem,
    ViewOptions,
    _code_colors,
    _image_depths,
    _selected_views,
    box_lines,
    everything_bounds,
    fit_view,
    frustum_lines,
    ground_truth_offset,
    scene_bounds,
    up_frame,
)

__all__ = ["html_page", "serve_html", "write_html"]


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _rounded(values: Any, digits: int = 5) -> Any:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _mesh_payload(
    vertices: np.ndarray, faces: np.ndarray, color, ground_truth: bool
) -> dict[str, Any] | None:
    if len(faces) == 0:
        return None
    lo = vertices.min(axis=0)
    step = np.maximum(vertices.max(axis=0) - lo, 1e-12) / 65535.0
    q = np.round((vertices - lo) / step).clip(0, 65535).astype("<u2")  # (N, 3)
    index_bytes = 2 if len(vertices) <= 65536 else 4
    return {
        "positions": _b64(q),
        "lo": lo.tolist(),
        "step": step.tolist(),
        "faces": _b64(faces.astype("<u2" if index_bytes == 2 else "<u4")),
        "index_bytes": index_bytes,
        "color": list(color),
        "ground_truth": ground_truth,
    }


def _volume_payload(
    volume: np.ndarray, box, offset, color, ground_truth: bool, isosurface: bool
) -> dict[str, Any]:
    data = np.round(np.clip(volume, 0.0, 1.0) * 255).astype(np.uint8)  # (D, H, W), W fastest
    binary = bool(np.isin(data, (0, 255)).all())  # voxels: 1 bit each
    return {
        "shape": list(volume.shape),
        "data": _b64(np.packbits(data.reshape(-1) > 0, bitorder="little") if binary else data),
        "bits": binary,
        "lo": (np.asarray(box.min) + offset).tolist(),
        "size": list(box.size),
        "color": list(color),
        "ground_truth": ground_truth,
        "isosurface": isosurface,
    }


def _lines_payload(lines, role: str, ground_truth: bool) -> dict[str, Any] | None:
    if len(lines.segments) == 0:
        return None
    pos = lines.points[lines.segments].reshape(-1, 3).astype("<f4")  # (2S, 3)
    colors = (
        lines.segment_colors
        if lines.segment_colors is not None
        else np.tile(np.asarray(lines.color), (len(lines.segments), 1))
    )
    return {
        "positions": _b64(pos),
        "colors": _b64(np.round(np.asarray(colors) * 255).astype(np.uint8)),
        "role": role,
        "ground_truth": ground_truth,
    }


def _silhouette_payload(
    ground_truth: np.ndarray | None, projected: np.ndarray | None, corners: torch.Tensor
) -> dict[str, Any]:
    """One camera's silhouettes ``(h, w)``, row 0 first: the ground truth as 1 bit per pixel
    (at 0.5), the projection as 8-bit occupancy (the page thresholds it), and the world
    corners of its image plane (top-left, top-right, bottom-right, bottom-left)."""
    some = ground_truth if ground_truth is not None else projected
    h, w = some.shape
    gt = None
    if ground_truth is not None:
        gt = _b64(np.packbits(ground_truth.reshape(-1) > 0.5, bitorder="little"))
    pr = None
    if projected is not None:
        pr = _b64(np.round(np.clip(projected, 0.0, 1.0) * 255).astype(np.uint8))
    return {
        "ground_truth": gt,
        "projected": pr,
        "width": w,
        "height": h,
        "corners": _rounded(corners),
    }


def _payload(item: ViewItem, options: ViewOptions, view: dict[str, Any], ui: bool) -> dict:
    box, th = item.box, options.threshold
    has_gt = item.ground_truth is not None
    gt_offset = ground_truth_offset(item, options)
    zero = np.zeros(3)
    meshes, volumes, lines, images = [], [], [], []
    layers = [(item.volume, zero, COLORS["prediction"], False)]
    if has_gt:
        layers.append((item.ground_truth, gt_offset, COLORS["ground_truth"], True))
    if item.mesh is not None:
        meshes.append(_mesh_payload(*item.mesh, COLORS["prediction"], False))
    for volume, offset, color, is_gt in layers:
        if volume is None:
            continue
        iso = is_gt or item.mesh is None  # a loaded mesh is the prediction's surface
        volumes.append(_volume_payload(volume, box, offset, color, is_gt, iso))
        lines.append(_lines_payload(box_lines(box, offset), "box", is_gt))
    views = _selected_views(item, options)
    if views and item.cameras is not None:
        cams = item.cameras[torch.tensor(views)]
        depth = _image_depths(cams, box, options.frustum_size)
        highlight = views.index(item.input_view) if item.input_view in views else None
        lines.append(
            _lines_payload(frustum_lines(cams, depth, highlight=highlight), "cameras", False)
        )
        projected = item.projected_silhouettes()
        gt = item.silhouettes
        if gt is not None or projected is not None:
            H, W = cams.image_size
            uv = torch.tensor([[0.0, 0.0], [W, 0.0], [W, H], [0.0, H]], dtype=torch.float64)
            corners = (
                cams.detach()
                .double()
                .unproject(uv.expand(len(views), 4, 2), depth[:, None].expand(len(views), 4))
            )  # (V', 4, 3): top-left, top-right, bottom-right, bottom-left
            for n, v in enumerate(views):
                images.append(
                    _silhouette_payload(
                        None if gt is None else gt[v],
                        None if projected is None else projected[v],
                        corners[n],
                    )
                )
    # The viewpoint: framed on the object and upright, as snapshots are.
    bounds = scene_bounds(item, options)
    center = view.get("target") or bounds[0]
    up = view.get("up") or item.up or (0.0, 1.0, 0.0)
    fit = fit_view(
        center,
        bounds[1],
        azimuth=view.get("azimuth", 30.0),
        elevation=view.get("elevation", 25.0),
        fov=view.get("fov", 40.0),
        image_size=(480, 640),
        up=up,
    )
    distance = float(view.get("distance") or (fit.centers.double() - torch.tensor(center)).norm())
    return {
        "title": item.title,
        "mode": options.mode,
        "threshold": th,
        "show": {
            "ground_truth": options.show_ground_truth,
            "cameras": options.show_cameras,
            "silhouettes": options.show_silhouettes,
            "box": options.show_box,
        },
        "has_ground_truth": has_gt,
        "has_cameras": bool(views),
        "ui": ui,
        "view": {
            "azimuth": float(view.get("azimuth", 30.0)),
            "elevation": float(view.get("elevation", 25.0)),
            "distance": distance,
            "fov": float(view.get("fov", 40.0)),
            "target": [float(c) for c in center],
            "frame": _rounded(up_frame(up), 9),
        },
        "radius": _clip_radius(item, options),
        "background": list(COLORS["background"]),
        "edge_color": list(COLORS["voxel_edge"]),
        "viridis": _rounded(_VIRIDIS, 3),
        "code_colors": np.round(_code_colors(item.silhouettes is not None) * 255)
        .astype(int)
        .tolist(),
        "has_silhouettes": item.silhouettes is not None,
        "meshes": [m for m in meshes if m is not None],
        "volumes": volumes,
        "lines": [ln for ln in lines if ln is not None],
        "images": images,
    }


def _clip_radius(item: ViewItem, options: ViewOptions) -> float:
    """Radius of everything the page can show (cameras and ground truth included, whether
    shown at first or not), for its near and far clipping planes."""
    everything = ViewOptions(**{**options.__dict__, "show_ground_truth": True})
    center, radius = everything_bounds(item)
    framed, framed_radius = scene_bounds(item, everything)
    return max(
        radius + float(np.linalg.norm(np.asarray(center) - np.asarray(framed))), framed_radius
    )


def html_page(
    item: ViewItem, options: ViewOptions | None = None, ui: bool = True, **view: Any
) -> str:
    """A self-contained HTML page showing ``item`` in 3D.

    Args:
        item: what to show.
        options: how to draw it (mode, threshold, what is shown), as the Open3D viewer.
        ui: show the control panel (mode, threshold slider, toggles, legend).
        **view: the initial viewpoint: ``azimuth`` (30), ``elevation`` (25), ``fov`` (40),
            ``distance`` (frame the object), ``target`` (the box centre), ``up``
            (``item.up``, else +y; azimuth turns about it).

    Returns:
        The HTML text. It needs no network access. The page's URL ``#hash`` overrides the
        options: ``#mode=voxels&threshold=0.3&azimuth=90&ui=0&renderer=canvas`` (a 2D canvas
        instead of WebGL) and ``gt``, ``cams``, ``sils``, ``box`` = 0 or 1.
    """
    options = options if options is not None else ViewOptions()
    unknown = set(view) - {"azimuth", "elevation", "fov", "distance", "target", "up"}
    if unknown:
        raise ValueError(f"unknown view settings {sorted(unknown)}")
    payload = _payload(item, options, view, ui)
    # "<" never appears raw inside the <script> element (no "</script>" or "<!--" in titles).
    data = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    title = (item.title or "persp3d view").replace("&", "&amp;").replace("<", "&lt;")
    return PAGE.replace("__TITLE__", title).replace("__DATA__", data)


def write_html(
    path: str | os.PathLike,
    item: ViewItem,
    options: ViewOptions | None = None,
    ui: bool = True,
    **view: Any,
) -> Path:
    """Write :func:`html_page` of ``item`` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_page(item, options, ui, **view), encoding="utf-8")
    return path


def serve_html(
    html: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: Any = None,
) -> None:
    """Serve one page on ``http://host:port/`` until interrupted (Ctrl+C).

    Args:
        html: the page (:func:`html_page`).
        host: the address to bind; localhost by default, so only this machine (or an SSH
            tunnel, ``ssh -L 8000:localhost:8000 remote``) reaches it.
        port: the port (0 picks a free one).
        ready: called with the server once it listens (tests use it to learn the port and
            to stop it with ``server.shutdown()``).
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        import warnings

        warnings.warn(
            f"serving on {host}: every machine that can reach this one can open the page",
            stacklevel=2,
        )
    body = html.encode("utf-8")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/", "/index.html"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever()
    finally:
        server.server_close()
