"""Property-based fuzzing (Hypothesis) of the public functions: for any input, each either
returns finite values in its documented range or raises ``ValueError`` (never another
exception from deep inside torch or numpy, never NaN, never a silhouette above 1).

Sizes stay tiny (4^3 volumes, 4 x 4 images) so each property runs its examples in seconds;
``PERSP3D_HYPOTHESIS_PROFILE=thorough`` (tests/conftest.py) runs ten times more.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persp3d as p3
from persp3d import metrics

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
WILD = st.one_of(
    st.floats(-1e6, 1e6, width=32),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-30, 1e30, 255.0]),
)
# Mostly valid occupancies, sometimes anything: both sides of the check get exercised.
OCCUPANCY = st.one_of(st.floats(0.0, 1.0, width=32), st.sampled_from([0.0, 1.0]), WILD)
FAST = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@FAST
@given(
    n_views=st.integers(-2, 6),
    elevation=WILD,
    distance=WILD,
    fov=WILD,
    size=st.tuples(st.integers(-2, 64), st.integers(-2, 64)),
)
def test_orbit_cameras_are_valid_or_refused(n_views, elevation, distance, fov, size):
    try:
        cams = p3.orbit_cameras(
            n_views=n_views, elevation=elevation, distance=distance, fov=fov, image_size=size
        )
    except ValueError:
        return
    assert _finite(cams.K, cams.R, cams.t)
    eye = torch.eye(3, dtype=cams.R.dtype).expand_as(cams.R)
    torch.testing.assert_close(cams.R @ cams.R.transpose(-1, -2), eye, atol=1e-4, rtol=0)
    assert bool((cams.K[..., 0, 0] > 0).all())


@FAST
@given(
    K=st.lists(WILD, min_size=9, max_size=9),
    angles=st.lists(WILD, min_size=3, max_size=3),
    t=st.lists(WILD, min_size=3, max_size=3),
)
def test_cameras_constructor_accepts_only_valid_cameras(K, angles, t):
    R = torch.eye(3)
    for axis, a in enumerate(angles):
        if not math.isfinite(a):
            R = R * a  # a non-rotation
            continue
        c, s = math.cos(math.radians(a % 360)), math.sin(math.radians(a % 360))
        i, j = [k for k in range(3) if k != axis]
        rot = torch.eye(3)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        R = R @ rot
    try:
        cams = p3.Cameras(torch.tensor(K).reshape(3, 3), R, torch.tensor(t), (8, 8))
    except ValueError:
        return
    assert _finite(cams.K, cams.R, cams.t)


@FAST
@given(
    points=st.lists(st.tuples(WILD, WILD, WILD), min_size=1, max_size=5),
    elevation=st.floats(-89, 89),
)
def test_camera_projection_of_points_is_finite_or_refused(points, elevation):
    cams = p3.orbit_cameras(n_views=3, elevation=elevation, image_size=(8, 8))
    pts = torch.tensor(points, dtype=torch.float32)
    try:
        uv, depth = cams.project(pts)
    except ValueError:
        assert not _finite(pts)
        return
    assert uv.shape == (3, len(points), 2) and depth.shape == (3, len(points))
    assert _finite(depth)
    in_front = depth > 1e-3
    assert _finite(uv[in_front])  # behind the camera uv is documented as meaningless


@FAST
@given(
    values=st.lists(OCCUPANCY, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    depth=st.one_of(st.integers(1, 6), st.integers(-1, 0), st.sampled_from([0.5, True])),
    out=st.tuples(st.integers(1, 5), st.integers(-1, 5)),
    mode=st.sampled_from(["max", "absorption", "smooth", "mean"]),
    backend=st.sampled_from(["reference", "naive"]),
    per_volume=st.booleans(),
    elevation=st.floats(-89, 89),
)
def test_project_returns_silhouettes_in_unit_range_or_refuses(
    values, seed, depth, out, mode, backend, per_volume, elevation
):
    gen = torch.Generator().manual_seed(seed)
    pool = torch.tensor(values, dtype=torch.float32)
    volume = pool[torch.randint(len(values), (2, 1, 4, 4, 4), generator=gen)]
    cams = p3.orbit_cameras(n_views=2, elevation=elevation, image_size=(6, 6))
    if per_volume:
        cams = p3.Cameras(
            cams.K.expand(2, 2, 3, 3), cams.R.expand(2, 2, 3, 3), cams.t.expand(2, 2, 3), (6, 6)
        )
    try:
        sil = p3.project(
            volume, cams, depth_samples=depth, out_size=out, mode=mode, backend=backend
        )
    except ValueError:
        return
    assert bool((volume >= 0).all() and (volume <= 1).all())  # anything else was refused
    assert sil.shape == (2, 2, 1, *out)
    assert _finite(sil) and float(sil.min()) >= 0.0 and float(sil.max()) <= 1.0


def _as_volume(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, 1, 1, -1, x.shape[-1])  # (1, 1, 1, *, W)


@FAST
@given(
    values=st.lists(OCCUPANCY, min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
    threshold=st.one_of(st.floats(0.0, 0.999), WILD),
    tolerance=st.integers(-1, 3),
    shape=st.sampled_from([(4, 4), (2, 3, 5, 5), (1, 1, 1, 4, 4)]),
)
def test_silhouette_metrics_are_in_unit_range_or_refuse(values, seed, threshold, tolerance, shape):
    gen = torch.Generator().manual_seed(seed)
    pool = torch.tensor(values, dtype=torch.float32)
    pred = pool[torch.randint(len(values), shape, generator=gen)]
    target = (torch.rand(shape, generator=gen) > 0.5).float()
    for fn in (
        lambda: metrics.silhouette_scores(pred, target, threshold),
        lambda: {"f": metrics.boundary_fscore(pred, target, tolerance, threshold)},
        lambda: {"iou": metrics.iou_3d(_as_volume(pred), _as_volume(target), threshold)},
    ):
        try:
            out = fn()
        except ValueError:
            continue
        for v in out.values():
            assert _finite(v) and float(v.min()) >= 0.0 and float(v.max()) <= 1.0


@FAST
@given(
    a=st.lists(st.tuples(WILD, WILD, WILD), min_size=0, max_size=6),
    b=st.lists(st.tuples(WILD, WILD, WILD), min_size=0, max_size=6),
)
def test_chamfer_is_non_negative_or_refuses(a, b):
    ta = torch.tensor(a, dtype=torch.float32).reshape(-1, 3)
    tb = torch.tensor(b, dtype=torch.float32).reshape(-1, 3)
    try:
        d = metrics.chamfer_distance(ta, tb)
    except ValueError:  # only for non-finite or float32-overflowing coordinates
        assert (
            not (_finite(ta) and _finite(tb))
            or max(float(t.abs().max()) if len(t) else 0.0 for t in (ta, tb)) >= 1e18
        )
        return
    assert float(d) >= 0.0 and (math.isfinite(float(d)) or (len(a) == 0) != (len(b) == 0))


OPTIONS = [
    "train.batch_size",
    "train.max_steps",
    "train.depth_samples",
    "train.projection_mode",
    "train.amp",
    "train.max_minutes",
    "optim.lr",
    "optim.grad_clip",
    "data.per_category",
    "data.categories",
    "data.root",
]


@FAST
@given(
    key=st.sampled_from(OPTIONS),
    text=st.one_of(
        st.text(max_size=12),
        st.sampled_from(["0", "-1", "1e-3", "abc", "nan", ".inf", "[1, 2]", "{a: 1}", "true", ""]),
    ),
)
def test_overrides_give_a_valid_config_or_a_value_error(key, text):
    from persp3d.train.config import load_config, validate_config

    try:
        config = load_config(None, [f"{key}={text}"])
    except ValueError:
        return
    validate_config(config)  # whatever got through is in range
    assert config.train.batch_size >= 1 and config.optim.lr > 0


@FAST
@given(data=st.binary(max_size=300), header=st.sampled_from([b"", b"#binvox 1\ndim 2 2 2\ndata\n"]))
def test_binvox_reader_raises_only_value_errors_on_random_bytes(data, header):
    from persp3d.datasets.binvox import read_binvox

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.binvox"
        path.write_bytes(header + data)
        try:
            grid = read_binvox(path).data
        except ValueError:
            return
        assert grid.dtype == bool and grid.ndim == 3


@FAST
@given(
    data=st.binary(max_size=400),
    prefix=st.sampled_from([b"", b"PK\x03\x04", b"persp3d-checkpoint "]),
)
def test_checkpoint_and_item_readers_raise_only_value_errors_on_random_bytes(data, prefix):
    import warnings

    from persp3d.datasets.cache import read_item
    from persp3d.train.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x"
        path.write_bytes(prefix + data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for reader in (load_checkpoint, read_item):
                try:
                    reader(path)
                except ValueError:
                    pass


@FAST
@given(
    flips=st.lists(st.integers(0, 10**6), min_size=1, max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_damaged_items_are_refused_by_their_checksum(flips, cut):
    from persp3d.datasets.cache import CorruptCacheError, npz_bytes, read_item

    arrays = {"silhouettes": np.arange(48, dtype=np.uint8).reshape(3, 1, 4, 4)}
    data = bytearray(npz_bytes(arrays))
    sha = hashlib.sha256(data).hexdigest()
    for f in flips:
        data[f % len(data)] ^= 0x01 << (f % 8)
    if cut is not None:
        data = data[: cut % len(data)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npz"
        path.write_bytes(bytes(data))
        if hashlib.sha256(data).hexdigest() == sha:
            return  # the flips cancelled out
        try:
            read_item(path, sha)
        except CorruptCacheError as err:
            assert "x.npz" in str(err)
        else:
            raise AssertionError("a damaged item was read")
