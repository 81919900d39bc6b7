"""Load: a long check/fit-like loop keeps its memory flat, and DataLoader workers never leak
(whether the loader is run to the end, abandoned after one batch, kept persistent, or killed
by a corrupt item in a worker).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time

import psutil
import pytest
import torch

LOOP = r"""
import gc, json, os, resource, sys
import torch
import persp3d as p3
from persp3d import metrics
from persp3d.checking import check_projections

torch.set_num_threads(1)
torch.manual_seed(0)
page = os.sysconf("SC_PAGE_SIZE")

def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

cams = p3.orbit_cameras(n_views=6, elevation=20.0, image_size=(24, 24))
target = (torch.rand(6, 1, 24, 24) > 0.5).float()
logits = torch.zeros(1, 1, 16, 16, 16, requires_grad=True)
opt = torch.optim.Adam([logits], lr=0.05)
voxels = (torch.rand(1, 1, 16, 16, 16) > 0.5).float()

def iteration():
    # fit-like: project, loss, backward, step
    occ = torch.sigmoid(logits)
    sil = p3.project(occ, cams, depth_samples=24, backend=sys.argv[1])[0]  # (V, 1, h, w)
    loss = torch.nn.functional.mse_loss(sil, target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    # check-like: scores of the projections against the silhouettes
    with torch.no_grad():
        occ = torch.sigmoid(logits)
        scores = metrics.silhouette_scores(sil.detach(), target)
        metrics.boundary_fscore(sil.detach(), target)
        metrics.iou_3d(occ, voxels)
        result = check_projections(occ[0, 0], cams, target, depth_samples=24)
    return float(scores["iou"].mean()), result

warmup, n = int(sys.argv[2]), int(sys.argv[3])
for _ in range(warmup):
    iteration()
before = rss()
for _ in range(n):
    iteration()
after = rss()
print(json.dumps({"before": before, "after": after, "calls": warmup + n}))
"""


@pytest.mark.slow
def test_a_long_fit_and_check_loop_keeps_memory_flat():
    """200 fit-like steps (project + backward) and check-like scorings after a warm-up of 30:
    resident memory grows by less than 1 % (and by less than 2 MiB)."""
    out = subprocess.run(
        [sys.executable, "-c", LOOP, "reference", "30", "200"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    growth = (m["after"] - m["before"]) / m["before"]
    report = f"RSS {m['before'] / 2**20:.1f} -> {m['after'] / 2**20:.1f} MiB over 200 calls"
    assert growth < 0.01, report
    assert m["after"] - m["before"] < 2 * 2**20, report  # < 10 KiB per call: no slow leak


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _wait_for(pids_before: set[int], timeout: float = 20.0) -> set[int]:
    """The child processes beyond ``pids_before`` still alive after at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        extra = {
            pid
            for pid in _children() - pids_before
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        }
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def _loader(dataset, **kw):
    from persp3d.datasets.sample import collate

    return torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2, collate_fn=collate, **kw
    )


@pytest.mark.slow
def test_dataloader_workers_never_leak(tiny_data, data_copy):
    from persp3d.datasets.cache import CorruptCacheError
    from persp3d.datasets.multiview import MultiViewFolder

    baseline = _children()
    ds = MultiViewFolder(tiny_data, "all")
    # run to the end
    batches = sum(1 for _ in _loader(ds))
    assert batches == (len(ds) + 1) // 2
    assert not _wait_for(baseline), "workers left after a full pass"
    # abandoned after one batch
    it = iter(_loader(ds))
    next(it)
    assert _children() - baseline  # the workers did start
    del it
    assert not _wait_for(baseline), "workers left after an abandoned iterator"
    # persistent workers, two epochs, then the loader goes
    loader = _loader(ds, persistent_workers=True)
    for _ in range(2):
        for _batch in loader:
            pass
    del loader, _batch
    assert not _wait_for(baseline), "persistent workers left after the loader went"
    # a worker meets a corrupt item: the error reaches the caller, the workers go
    victim = data_copy / json.loads((data_copy / "manifest.json").read_text())["items"][1]["file"]
    victim.write_bytes(victim.read_bytes()[:100])
    bad = MultiViewFolder(data_copy, "all")
    with pytest.raises(CorruptCacheError, match=victim.name):
        for _ in _loader(bad):
            pass
    assert not _wait_for(baseline), "workers left after a worker raised"


@pytest.mark.slow
def test_training_with_streamed_data_workers_leaves_no_process_behind(
    tiny_data, data_copy, tmp_path
):
    """The training loop's own loader (``data.workers=2``, streamed): none of its workers is
    left after ``fit`` returns, nor after a worker hits a corrupt item mid-run."""
    from _robust_helpers import TINY_TRAIN

    from persp3d.datasets.cache import CorruptCacheError
    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    baseline = _children()
    streamed = [*TINY_TRAIN, "data.workers=2", "data.in_memory=false", "train.max_steps=4"]
    Trainer(
        load_config(None, [*streamed, f"data.root={tiny_data}", f"train.out={tmp_path / 'a'}"])
    ).fit()
    assert not _wait_for(baseline), "training left data workers behind"

    manifest = json.loads((data_copy / "manifest.json").read_text())
    for item in manifest["items"]:
        if item["split"] == "train":
            path = data_copy / item["file"]
            path.write_bytes(path.read_bytes()[:200])  # every training item is now corrupt
    trainer = Trainer(
        load_config(None, [*streamed, f"data.root={data_copy}", f"train.out={tmp_path / 'b'}"])
    )
    with pytest.raises(CorruptCacheError, match=r"\.npz"):
        trainer.fit()
    del trainer
    assert not _wait_for(baseline), "a failed training left data workers behind"
