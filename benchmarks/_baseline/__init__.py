"""A frozen copy of persp3d's fused CPU kernels as of commit 8518479 (before the one-volume
fast paths): the baseline ``bench_projection.py --fit`` measures the current kernels
against, in the same run. Not part of the library; never imported by it."""
