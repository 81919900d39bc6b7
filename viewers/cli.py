"""``persp3d view``: look at volumes, meshes, dataset samples and a run's predictions in 3D.

    persp3d view volume.npz                       # a window (needs a display)
    persp3d view data/procedural --id chair_00003 --snapshot chair.png
    persp3d view runs/default --split test --turntable pred.gif --frames 36
    persp3d view runs/default --data DIR --html pred.html          # open anywhere, offline
    persp3d view fit/volume.npz --snapshot fit.png # with its cameras, upright in its "up"
    persp3d view pred.npz --export pred.glb --export pred.binvox
    persp3d view runs/default --serve             # http://127.0.0.1:8000/ (localhost only)

Without ``--snapshot``, ``--turntable``, ``--html``, ``--export`` or ``--serve`` it opens an
Open3D window (keys: V mode, [ ] threshold, G C I B toggles, N / P next / previous item).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persp3d.viewers.scene import FRAMES, MODES, ViewOptions

__all__ = ["add_arguments", "run"]


def _size(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(H, W)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 640x480; got {text!r}"
        ) from err
    if w < 16 or h < 16 or w > 8192 or h > 8192:
        raise argparse.ArgumentTypeError(f"picture sides must lie in [16, 8192]; got {text!r}")
    return h, w


def _views(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected view indices like 0,6,12; got {text!r}"
        ) from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument(
        "path",
        help="a volume (.npz .npy .binvox .pt), a mesh (.ply .obj .off .stl .glb), a dataset "
        "folder, or a run (folder or checkpoint)",
    )
    what = parser.add_argument_group("what to show")
    what.add_argument("--id", help="start at this sample (id, or category/id)")
    what.add_argument("--index", type=int, default=0, help="start at this sample index")
    what.add_argument("--data", help="dataset folder for a run (default: the run's own)")
    what.add_argument(
        "--split", choices=["train", "val", "test", "all"],
        help="split of a dataset (default all) or of a run's data (default test)",
    )  # fmt: skip
    what.add_argument("--input-view", type=int, help="view given to the network (run only)")
    what.add_argument("--resolution", type=int, default=32, help="voxels of a mesh (default 32)")
    what.add_argument("--logits", action="store_true", help="the volume file holds logits")
    how = parser.add_argument_group("how to draw it")
    how.add_argument("--mode", choices=MODES, default="iso", help="isosurface, voxels or both")
    how.add_argument("--threshold", type=float, default=0.5, help="occupancy level (0.5)")
    how.add_argument("--views", type=_views, help="cameras to draw, e.g. 0,6,12")
    how.add_argument(
        "--max-views", type=int, default=8,
        help="without --views, draw this many cameras spread around (8; 0: all)",
    )  # fmt: skip
    how.add_argument("--no-cameras", action="store_true", help="hide the camera frustums")
    how.add_argument("--no-silhouettes", action="store_true", help="hide the silhouettes")
    how.add_argument("--no-ground-truth", action="store_true", help="hide the ground truth")
    how.add_argument("--no-box", action="store_true", help="hide the volume box")
    how.add_argument(
        "--frame",
        choices=FRAMES,
        default="object",
        help="frame the object (default; far cameras fall outside) or all: object and cameras",
    )
    how.add_argument("--azimuth", type=float, default=30.0, help="viewpoint azimuth (degrees)")
    how.add_argument("--elevation", type=float, default=25.0, help="viewpoint elevation")
    how.add_argument("--fov", type=float, default=40.0, help="vertical field of view")
    how.add_argument("--size", type=_size, default=(480, 640), help="picture WxH (640x480)")
    out = parser.add_argument_group("outputs (no window opens when one is given)")
    out.add_argument("--snapshot", metavar="PNG", help="render off-screen to a PNG")
    out.add_argument("--turntable", metavar="GIF|MP4", help="render a turntable animation")
    out.add_argument("--frames", type=int, default=36, help="turntable frames (36)")
    out.add_argument("--fps", type=float, default=12.0, help="turntable frames per second")
    out.add_argument("--html", metavar="HTML", help="write a self-contained interactive page")
    out.add_argument(
        "--export", metavar="FILE", action="append", default=[],
        help="isosurface as .ply .obj .glb .stl .off, volume as .npz or .binvox (repeatable)",
    )  # fmt: skip
    out.add_argument("--serve", action="store_true", help="serve the page on --host:--port")
    out.add_argument("--host", default="127.0.0.1", help="address to serve on (localhost)")
    out.add_argument("--port", type=int, default=8000, help="port to serve on (8000)")


def _export(path: str, item, threshold: float) -> None:
    from persp3d.viewers import export

    suffix = Path(path).suffix.lower()
    if suffix in export.MESH_FORMATS:
        if item.mesh is not None:
            export.export_mesh(path, *item.mesh)
        else:
            export.export_isosurface(path, item.volume, item.box, threshold)
    elif suffix in (".npz", ".binvox"):
        from persp3d.datasets.volumes import save_volume

        if suffix == ".npz":
            meta = {"up": list(item.up)} if item.up is not None else None
            save_volume(path, item.volume, item.box, cameras=item.cameras, meta=meta)
        else:
            save_volume(path, item.volume, item.box, threshold=threshold)
    else:
        raise ValueError(
            f"--export {path}: unknown format; use {', '.join(export.MESH_FORMATS)}, .npz or .binvox"
        )


def _main(args: argparse.Namespace) -> int:
    from persp3d.viewers.sources import open_source

    options = ViewOptions(
        mode=args.mode,
        threshold=args.threshold,
        show_cameras=not args.no_cameras,
        show_silhouettes=not args.no_silhouettes,
        show_ground_truth=not args.no_ground_truth,
        show_box=not args.no_box,
        views=args.views,
        max_views=args.max_views,
        frame=args.frame,
    )
    if args.turntable and Path(args.turntable).suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"--turntable must end in .gif or .mp4; got {args.turntable!r}")
    source = open_source(
        args.path,
        data=args.data,
        split=args.split,
        input_view=args.input_view,
        resolution=args.resolution,
        logits=args.logits,
    )
    start = source.index_of(args.id) if args.id else args.index
    if not 0 <= start < len(source):
        raise ValueError(f"--index must lie in [0, {len(source)}); got {start}")
    view = {"azimuth": args.azimuth, "elevation": args.elevation, "fov": args.fov}
    outputs = args.snapshot or args.turntable or args.html or args.export or args.serve
    if not outputs:
        from persp3d.viewers.open3d_viewer import show

        show(source.get, len(source), start, options)
        return 0
    item = source[start]
    for path in args.export:
        _export(path, item, args.threshold)
        print(f"wrote {path}")
    if args.snapshot:
        from persp3d.viewers.open3d_viewer import snapshot

        snapshot(item, args.snapshot, options, image_size=args.size, **view)
        print(f"wrote {args.snapshot}")
    if args.turntable:
        from persp3d.viewers.open3d_viewer import turntable

        turntable(
            item, args.turntable, args.frames, args.fps, options, image_size=args.size, **view
        )
        print(f"wrote {args.turntable} ({args.frames} frames)")
    if args.html or args.serve:
        from persp3d.viewers.web import html_page, serve_html

        page = html_page(item, options, **view)
        if args.html:
            Path(args.html).parent.mkdir(parents=True, exist_ok=True)
            Path(args.html).write_text(page, encoding="utf-8")
            print(f"wrote {args.html} ({len(page.encode()) / 1024:.0f} KiB, opens offline)")
        if args.serve:

            def ready(server) -> None:
                host, port = server.server_address[:2]
                print(
                    f"serving {item.title or args.path} on http://{host}:{port}/ (Ctrl+C stops)",
                    flush=True,
                )

            serve_html(page, args.host, args.port, ready=ready)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``persp3d view``; returns the exit status (0 ok, 1 bad input or no display)."""
    from persp3d.viewers.open3d_viewer import NoDisplayError

    try:
        return _main(args)
    except (ValueError, OSError, ImportError, RuntimeError, NoDisplayError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
