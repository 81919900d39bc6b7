"""Training: config, checkpoints, exact resume after a kill, DDP with gloo, and the model,
losses and metrics it uses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from persp3d import losses, metrics
from persp3d.models import OccupancyPredictor
from persp3d.train.checkpoint import load_checkpoint, save_checkpoint
from persp3d.train.config import Config, apply_overrides, load_config

TINY = [
    "data.kind=folder",
    "model.image_size=32",
    "model.resolution=16",
    "model.width=8",
    "model.latent_dim=32",
    "model.decoder_width=16",
    "train.batch_size=4",
    "train.views_per_step=3",
    "train.projection_size=16",
    "train.depth_samples=16",
    "train.val_objects=4",
    "train.eval_every=4",
    "train.checkpoint_every=3",
    "train.progress=false",
    "train.threads=1",
    "data.voxel_resolution=16",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small procedural dataset: 3 categories x 10 objects, 8 views of 32 x 32."""
    from persp3d.datasets.procedural import ProceduralConfig, generate_procedural

    root = tmp_path_factory.mktemp("data") / "tiny"
    config = ProceduralConfig(
        categories=("chair", "table", "mug"),
        per_category=10,
        n_views=8,
        image_size=32,
        voxel_resolutions=(16,),
        store_depth=False,
    )
    generate_procedural(root, config, workers=0, progress=False)
    return root


def _config(data_root, out, *extra):
    return load_config(None, [*TINY, f"data.root={data_root}", f"train.out={out}", *extra])


def test_config_overrides_yaml_round_trip_and_errors(tmp_path):
    cfg = apply_overrides(
        Config(),
        [
            "optim.lr=3e-4",
            "model.norm=group",
            "data.categories=[chair, mug]",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.model.norm == "group"
    assert cfg.data.categories == ["chair", "mug"]
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(ValueError, match="unknown option 'train.nope'"):
        apply_overrides(cfg, ["train.nope=1"])
    with pytest.raises(ValueError, match="section.field=value"):
        apply_overrides(cfg, ["lr=1"])


def test_checkpoints_are_atomic_and_never_unpickle_objects(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 3, "w": torch.ones(2)})
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind
    torch.save({"evil": Path("/etc/passwd")}, tmp_path / "evil.pt")  # a pickled object
    with pytest.raises(ValueError, match="not a readable persp3d checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "broken.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "broken.pt")


def test_model_shapes_summary_and_bad_input():
    model = OccupancyPredictor(
        image_size=32, resolution=16, width=8, latent_dim=16, decoder_width=16, in_channels=1
    )
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1, 16, 16, 16)
    assert "M parameters" in model.summary()
    with pytest.raises(ValueError, match=r"image must be \(B, 1, 32, 32\)"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="resolution must be 4 \\* 2\\^k"):
        OccupancyPredictor(resolution=24)


def test_losses_and_metrics_on_known_cases():
    a = torch.zeros(1, 1, 1, 8, 8)
    a[..., 2:6, 2:6] = 1
    b = torch.roll(a, 2, dims=-1)  # half overlap: IoU = 8 / 24
    assert losses.soft_iou_loss(a, a).item() == pytest.approx(0.0, abs=1e-5)
    assert losses.soft_iou_loss(a, b).item() == pytest.approx(1 - 8 / 24, abs=1e-5)
    assert losses.silhouette_l2(a, b).item() == pytest.approx(16 / 64)
    s = metrics.silhouette_scores(a, b)
    assert s["iou"].item() == pytest.approx(8 / 24)
    assert s["precision"].item() == pytest.approx(0.5) and s["recall"].item() == pytest.approx(0.5)
    assert metrics.boundary_fscore(a, a).item() == pytest.approx(1.0)
    assert (
        metrics.boundary_fscore(a, torch.roll(a, 1, dims=-1)).item()
        > metrics.boundary_fscore(a, b).item()
    )
    v = torch.zeros(1, 1, 4, 4, 4)
    v[..., :2] = 1
    assert metrics.iou_3d(v, v).item() == 1.0
    assert metrics.iou_3d(v, 1 - v).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        losses.silhouette_l2(a, a[..., :4])


@pytest.mark.slow
def test_killed_run_resumes_with_the_losses_of_an_uninterrupted_run(tiny_data, tmp_path):
    """The uninterrupted run holds its data in memory; the killed one streams it with two
    worker processes, is killed, and resumes (streaming again): same losses, same weights."""
    from persp3d.train.trainer import Trainer

    steps = 10
    streamed = ["data.workers=2", "data.in_memory=false", "optim.schedule=cosine"]
    full = tmp_path / "full"
    Trainer(
        _config(
            tiny_data,
            full,
            f"train.max_steps={steps}",
            "data.in_memory=true",
            "optim.schedule=cosine",
        )
    ).fit()

    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "persp3d.train.cli",
        "train",
        "--data",
        str(tiny_data),
        "--out",
        str(killed),
        "--max-steps",
        str(steps),
        *[a for o in [*TINY, *streamed] for a in ("--set", o)],
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once a checkpoint exists and it has gone past it
        rows = (
            (killed / "steps.csv").read_text().splitlines()
            if (killed / "steps.csv").exists()
            else []
        )
        if (killed / "last.pt").exists() and len(rows) > 5:
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = load_checkpoint(killed / "last.pt")["step"]
    assert 0 < resumed_from < steps

    resumed = Trainer(
        _config(tiny_data, killed, f"train.max_steps={steps}", *streamed), resume=True
    )
    resumed.fit()
    assert not resumed.in_memory
    read = lambda run: [r.split(",")[:2] for r in (run / "steps.csv").read_text().splitlines()[1:]]  # noqa: E731
    assert read(killed) == read(full)  # every step's loss, bit for bit as printed (8 digits)
    assert len(read(full)) == steps
    final_full = load_checkpoint(full / "last.pt")["model"]
    final_killed = load_checkpoint(killed / "last.pt")["model"]
    for k in final_full:
        torch.testing.assert_close(final_killed[k], final_full[k], rtol=0, atol=0)


DDP_SCRIPT = r"""
import json, sys, torch, torch.distributed as dist
from persp3d.train.config import load_config
from persp3d.train.trainer import Trainer
cfg = load_config(None, json.loads(sys.argv[1]))
trainer = Trainer(cfg)
trainer.fit()
flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
if dist.get_rank() == 0:
    same = all(torch.equal(gathered[0], g) for g in gathered)
    print(json.dumps({"same": same, "world": dist.get_world_size(), "steps": trainer.step}))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_gloo_ranks_hold_identical_weights(tiny_data, tmp_path):
    overrides = [
        *TINY,
        f"data.root={tiny_data}",
        f"train.out={tmp_path / 'ddp'}",
        "train.max_steps=3",
    ]
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29517",
            str(script),
            json.dumps(overrides),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    assert result == {"same": True, "world": 2, "steps": 3}


@pytest.mark.slow
def test_eval_writes_per_category_report_and_figure(tiny_data, tmp_path):
    from persp3d.train.evaluate import evaluate
    from persp3d.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(_config(tiny_data, run, "train.max_steps=4")).fit()
    report = evaluate(str(run), str(tiny_data), "test", limit=3, chamfer_points=200)
    assert set(report["per_category"]) <= {"chair", "table", "mug"}
    assert report["threshold"] in report["threshold_sweep_val"]
    assert 0.0 <= report["overall"]["iou_3d"] <= 1.0 and report["overall"]["n"] == 3
    for name in ("eval_test.json", "eval_test.md", "eval_test.png"):
        assert (run / name).stat().st_size > 0
    assert "| **overall** | 3 |" in (run / "eval_test.md").read_text()


def test_cosine_schedule_runs_from_lr_to_lr_final_over_the_nearer_limit(tiny_data, tmp_path):
    from persp3d.train.trainer import Trainer

    extra = ["optim.schedule=cosine", "optim.lr=1e-3", "optim.lr_final=0.1"]
    trainer = Trainer(_config(tiny_data, tmp_path / "a", "train.max_steps=100", *extra))
    expected = {0: 1e-3, 25: 1e-4 + 9e-4 * (1 + 2**-0.5) / 2, 50: 5.5e-4, 100: 1e-4}
    for step, lr in expected.items():
        trainer.step = step
        assert trainer.learning_rate() == pytest.approx(lr, rel=1e-12)
    trainer.step, trainer.elapsed = 3, 0.0
    trainer.config.train.max_minutes = 10.0  # the time budget is nearer than the steps
    trainer.elapsed = 300.0
    assert trainer.learning_rate() == pytest.approx(5.5e-4, rel=1e-12)
    stats = trainer.train_step()
    assert stats["lr"] == pytest.approx(5.5e-4, rel=1e-12)
    assert trainer.optimizer.param_groups[0]["lr"] == stats["lr"]
    constant = Trainer(
        _config(tiny_data, tmp_path / "b", "train.max_steps=100", "optim.schedule=constant")
    )
    constant.step = 90
    assert constant.learning_rate() == constant.config.optim.lr
    with pytest.raises(ValueError, match="optim.schedule must be one of constant, cosine"):
        Trainer(_config(tiny_data, tmp_path / "c", "optim.schedule=linear"))


def test_hull_loss_pulls_the_prediction_onto_the_visual_hull(tiny_data, tmp_path):
    """With only the visual-hull term, a few steps raise the 3D IoU of the predictions with
    the hulls carved from the training silhouettes; the term is off for voxel supervision
    and at weight 0."""
    from persp3d.metrics import iou_3d
    from persp3d.train.trainer import Trainer

    only_hull = ["train.loss_l2=0", "train.loss_iou=0", "optim.lr=3e-3", "train.max_steps=40"]
    only_hull += ["optim.schedule=constant"]  # the full rate for all 40 steps
    trainer = Trainer(_config(tiny_data, tmp_path / "a", *only_hull))
    batch = trainer._next_batch()
    assert batch["hull"].shape == (4, 1, 16, 16, 16)

    def agreement() -> float:
        trainer.model.eval()
        with torch.no_grad():
            occ = torch.sigmoid(trainer.model(trainer.pipeline.prepare(batch["input"])))
        return float(iou_3d(occ, batch["hull"], 0.5).mean())

    before = agreement()
    losses = [trainer.train_step(batch)["hull"] for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0] and agreement() > max(0.5, before + 0.2)
    for extra in (["train.loss_hull=0"], ["train.supervision=voxel"]):
        other = Trainer(_config(tiny_data, tmp_path / extra[0][6:15], *extra))
        assert "hull" not in other._next_batch() and "hull" not in other.train_step()


def test_max_minutes_alone_lifts_the_step_limit():
    """``persp3d train --max-minutes 20`` trains for 20 minutes, not until the default
    2000 steps; an explicit step limit (flag or ``--set``) still applies."""
    import argparse

    from persp3d.train.commands import add_arguments, command_overrides

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def resolved(*argv):
        return load_config(None, command_overrides(parser.parse_args(list(argv)))).train

    assert resolved().max_steps == 2000
    timed = resolved("--max-minutes", "20")
    assert timed.max_minutes == 20.0 and timed.max_steps > 10**9
    assert resolved("--max-minutes", "20", "--max-steps", "50").max_steps == 50
    assert resolved("--max-minutes", "20", "--set", "train.max_steps=70").max_steps == 70


def test_progress_shows_elapsed_and_remaining_of_the_time_budget():
    from persp3d.train.trainer import progress_text

    fraction, text = progress_text(elapsed=300, step=900, max_steps=2**62, max_minutes=20)
    assert fraction == pytest.approx(0.25) and text == "05:00 / 20:00, 15:00 left"
    # a step limit nearer than the time budget decides: 10 s/step, 50 steps to go
    fraction, text = progress_text(elapsed=100, step=10, max_steps=60, max_minutes=20)
    assert fraction == pytest.approx(10 / 60) and text == "01:40 / 10:00, 08:20 left"
    assert progress_text(75, 3, 2**62, 0)[1] == "01:15 elapsed"
