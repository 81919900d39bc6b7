"""persp3d.viewers: looking at volumes, cameras and silhouettes (Open3D, headless, web, figures)."""

__all__: list[str] = []
