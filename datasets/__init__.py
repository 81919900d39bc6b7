"""persp3d.datasets: multi-view data for training and checking (procedural shapes, mesh
folders, 3D-R2N2), with ground-truth silhouettes and voxels made from meshes."""

__all__: list[str] = []
