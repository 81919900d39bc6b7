"""persp3d.viewers: looking at volumes, cameras and silhouettes in 3D (an Open3D window,
off-screen snapshots and turntables, a self-contained web page) and exporting them.

The end of the data path: volume (+ cameras, silhouettes) -> :class:`ViewItem` ->
:func:`build_scene` -> Open3D (:func:`show`, :func:`snapshot`, :func:`turntable`) or the
browser (:func:`write_html`, :func:`serve_html`); :mod:`persp3d.viewers.export` writes
meshes other tools place correctly (volume files: :mod:`persp3d.datasets.volumes`). ``persp3d view`` is the command line.

    >>> from persp3d.viewers import ViewItem, snapshot, write_html
    >>> item = ViewItem(volume, cameras=cams, silhouettes=sils)   # volume (D, H, W) in [0, 1]
    >>> snapshot(item, "pred.png")          # works headless (EGL), no GPU needed
    >>> write_html("pred.html", item)       # opens offline in any browser

Open3D, trimesh, PyTorch3D and Pillow are imported inside the functions that need them.
"""

from persp3d.viewers.export import export_isosurface, export_mesh
from persp3d.viewers.media import save_animation, save_png
from persp3d.viewers.open3d_viewer import (
    NoDisplayError,
    has_display,
    import_open3d,
    render_scene,
    show,
    snapshot,
    turntable,
)
from persp3d.viewers.scene import (
    Scene,
    ViewItem,
    ViewOptions,
    build_scene,
    fit_view,
    frustum_lines,
    isosurface,
    silhouette_codes,
    voxel_faces,
)
from persp3d.viewers.sources import ItemSource, open_source
from persp3d.viewers.web import html_page, serve_html, write_html

__all__ = [
    "ItemSource",
    "NoDisplayError",
    "Scene",
    "ViewItem",
    "ViewOptions",
    "build_scene",
    "export_isosurface",
    "export_mesh",
    "fit_view",
    "frustum_lines",
    "has_display",
    "html_page",
    "import_open3d",
    "isosurface",
    "open_source",
    "render_scene",
    "save_animation",
    "save_png",
    "serve_html",
    "show",
    "silhouette_codes",
    "snapshot",
    "turntable",
    "voxel_faces",
    "write_html",
]
