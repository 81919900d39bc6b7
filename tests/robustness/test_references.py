"""Metrics that had no real test, against references that can disagree: the Chamfer distance
against a brute-force NumPy nearest neighbour, and surface points against the analytic sphere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persp3d import metrics


def _brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared distance to the nearest point of the other set, both ways, summed."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # (N, M), float64
    return float(d2.min(1).mean() + d2.min(0).mean())


@pytest.mark.parametrize(("n", "m", "seed"), [(1, 1, 0), (7, 3, 1), (50, 80, 2), (200, 20, 3)])
def test_chamfer_distance_equals_brute_force_nearest_neighbours(n, m, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3)).astype(np.float32)
    b = (rng.normal(size=(m, 3)) * 0.5 + 0.3).astype(np.float32)
    got = float(metrics.chamfer_distance(torch.from_numpy(a), torch.from_numpy(b)))
    assert got == pytest.approx(
        _brute_chamfer(a.astype(np.float64), b.astype(np.float64)), rel=1e-5
    )


def test_chamfer_distance_is_symmetric_zero_on_itself_and_sees_a_shift():
    rng = np.random.default_rng(4)
    a = torch.from_numpy(rng.uniform(-1, 1, size=(40, 3)).astype(np.float32))
    b = torch.from_numpy(rng.uniform(-1, 1, size=(30, 3)).astype(np.float32))
    assert float(metrics.chamfer_distance(a, a)) == 0.0
    assert float(metrics.chamfer_distance(a, b)) == pytest.approx(
        float(metrics.chamfer_distance(b, a)), rel=1e-6
    )
    # a single point against itself shifted by d: d^2 each way
    p = torch.zeros(1, 3)
    assert float(metrics.chamfer_distance(p, p + torch.tensor([0.3, 0.0, 0.4]))) == pytest.approx(
        2 * 0.25, rel=1e-6
    )
    assert float(metrics.chamfer_distance(a[:0], a[:0])) == 0.0
    assert float(metrics.chamfer_distance(a, a[:0])) == float("inf")


def test_surface_points_of_a_voxel_ball_lie_on_its_sphere():
    import persp3d as p3

    R, radius = 32, 0.35
    centres = p3.VolumeBox().voxel_centers(R, dtype=torch.float64)
    ball = (centres.norm(dim=-1) <= radius).float()  # (R, R, R)
    points = metrics.volume_surface_points(ball, n_points=2000)
    assert points.shape == (2000, 3)
    r = points.double().norm(dim=-1)
    # marching cubes at 0.5 between voxel centres: within a voxel of the sphere
    assert float((r - radius).abs().max()) < 1.0 / R
    assert abs(float(points.mean(0).norm())) < 0.02  # centred
