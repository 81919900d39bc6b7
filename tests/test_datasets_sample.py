"""The sample contract and ``collate``: shapes, batching of cameras, errors that name the key."""

from __future__ import annotations

import pytest
import torch

import persp3d as p3
from persp3d.datasets import check_sample, collate


def _sample(V: int = 3, size: int = 8, R: int | None = 4, name: str = "a") -> dict:
    out = {
        "images": torch.rand(V, 3, size, size),
        "silhouettes": (torch.rand(V, 1, size, size) > 0.5).float(),
        "cameras": p3.orbit_cameras(V, image_size=size),
        "category": "thing",
        "id": name,
    }
    if R is not None:
        out["voxels"] = torch.zeros(1, R, R, R)
    return out


def test_collate_stacks_views_and_cameras_as_batch_by_view():
    batch = collate([_sample(name="a"), _sample(name="b")])
    assert batch["images"].shape == (2, 3, 3, 8, 8)
    assert batch["silhouettes"].shape == (2, 3, 1, 8, 8)
    assert tuple(batch["cameras"].batch_shape) == (2, 3)
    assert batch["voxels"].shape == (2, 1, 4, 4, 4)
    assert batch["id"] == ["a", "b"] and batch["category"] == ["thing", "thing"]
    torch.testing.assert_close(batch["cameras"].K[1], p3.orbit_cameras(3, image_size=8).K)


def test_collate_leaves_out_voxels_unless_every_sample_has_them():
    assert "voxels" not in collate([_sample(), _sample(R=None)])


def test_collate_refuses_mismatched_samples():
    with pytest.raises(ValueError, match="must share"):
        collate([_sample(V=3), _sample(V=2)])
    with pytest.raises(ValueError, match="voxels shape"):
        collate([_sample(R=4), _sample(R=8)])
    with pytest.raises(ValueError, match="at least one sample"):
        collate([])


def test_check_sample_names_the_problem():
    assert check_sample(_sample()) == {"V": 3, "H": 8, "W": 8, "R": 4}
    bad = _sample()
    bad["silhouettes"] = bad["silhouettes"][:2]
    with pytest.raises(ValueError, match="silhouettes"):
        check_sample(bad)
    bad = _sample()
    bad["cameras"] = p3.orbit_cameras(3, image_size=16)
    with pytest.raises(ValueError, match=r"image_size \(16, 16\) differs"):
        check_sample(bad)
    bad = _sample()
    del bad["id"]
    with pytest.raises(ValueError, match="sample misses 'id'"):
        check_sample(bad)
