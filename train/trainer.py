"""The training loop: a :class:`~persp3d.train.pipeline.Pipeline` fed by streamed batches.

Joins the pieces of the data path: dataset -> step sampler -> DataLoader workers (see
:mod:`persp3d.train.data`) -> pipeline (input view -> network -> volume -> perspective
transformer) -> silhouettes -> loss against the ground-truth silhouettes of sampled views (no
3D labels), or the voxel BCE of the 3D-supervised baseline. Everything random in a step (the
batch, the input view, the supervising views) is drawn from generators seeded by ``(seed,
step, slot)``, so a run resumed from a checkpoint repeats the uninterrupted run step for step,
with any number of data workers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from persp3d.losses import silhouette_bce, silhouette_l2, soft_iou_loss, voxel_bce
from persp3d.metrics import iou_3d, silhouette_scores
from persp3d.models.occupancy import OccupancyPredictor
from persp3d.train.checkpoint import load_checkpoint_with_fallback, save_checkpoint
from persp3d.train.config import Config
from persp3d.train.data import (
    InMemorySplit,
    StepSampler,
    StepSamples,
    batch_cameras,
    build_dataset,
    choose_in_memory,
    train_batches,
)
from persp3d.train.pipeline import Pipeline, default_input_view

__all__ = [
    "THRESHOLDS",
    "MultiViewTensors",
    "Trainer",
    "build_dataset",
    "load_model",
    "progress_text",
]

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)

MultiViewTensors = InMemorySplit
"""Former name of :class:`persp3d.train.data.InMemorySplit` (kept for compatibility)."""


def load_model(
    path: str | os.PathLike, map_location: str = "cpu"
) -> tuple[OccupancyPredictor, Config, dict]:
    """``(model, config, checkpoint)`` of a run folder or checkpoint file; a thin wrapper of
    :meth:`Pipeline.from_run` (predict through the pipeline, which also prepares the input)."""
    pipeline = Pipeline.from_run(path, map_location)
    return pipeline.model, pipeline.config, pipeline.state


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def progress_text(
    elapsed: float,
    step: int,
    max_steps: int,
    max_minutes: float,
    start_step: int = 0,
    start_elapsed: float = 0.0,
) -> tuple[float, str]:
    """``(fraction done, "elapsed / budget, remaining")`` of a run limited by a time budget
    (``max_minutes``) and/or a step limit; the nearer limit decides."""
    fractions, texts = [], []
    if max_minutes > 0:
        budget = 60.0 * max_minutes
        fractions.append(min(1.0, elapsed / budget))
        texts.append((budget - elapsed, f"{_clock(elapsed)} / {_clock(budget)}"))
    if max_steps < 2**31:
        done = step - start_step
        rate = (elapsed - start_elapsed) / done if done > 0 else float("nan")
        left = (max_steps - step) * rate
        fractions.append(min(1.0, step / max(1, max_steps)))
        texts.append(
            (left, f"{_clock(elapsed)} / {'?' if math.isnan(left) else _clock(elapsed + left)}")
        )
    if not fractions:
        return 0.0, f"{_clock(elapsed)} elapsed"
    k = max(range(len(fractions)), key=lambda i: fractions[i])
    left, text = texts[k]
    return fractions[k], f"{text}, {'?' if math.isnan(left) else _clock(left)} left"


class Trainer:
    """Trains the :class:`Pipeline` of a config (its :class:`OccupancyPredictor`); see
    :meth:`fit`.

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), it trains with DistributedDataParallel:
    each process reads and trains on its own slots of every step's batch (gloo on CPU, NCCL
    on GPU).
    """

    def __init__(self, config: Config, resume: bool = False) -> None:
        cfg = config.train
        if cfg.supervision not in ("silhouette", "voxel", "both"):
            raise ValueError(
                f"train.supervision must be silhouette, voxel or both; got {cfg.supervision!r}"
            )
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.main = self.rank == 0
        self._t0 = time.perf_counter()
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.out = Path(cfg.out)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)

        self.config = config
        self.say("building the model and the optimiser")
        torch.manual_seed(cfg.seed)
        self.pipeline = Pipeline(config).to(self.device)
        self.config = self.pipeline.config
        self.model = self.pipeline.model
        self.transformer = self.pipeline.transformer
        self.net: torch.nn.Module = self.model
        if cfg.compile:
            self.net = torch.compile(self.net)
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.say(f"model: {self.model.summary()} on {self.device}")
        self.step = 0
        self.best = -1.0
        self.elapsed = 0.0
        self.last_val: dict[str, float] = {}
        self._batches = None
        if resume:
            self._resume()

    def say(self, message: str) -> None:
        """A start-up line on stderr (main process, when progress is shown)."""
        if self.main and self.config.train.progress:
            t = time.perf_counter() - self._t0
            print(f"[persp3d train {t:6.1f}s] {message}", file=sys.stderr, flush=True)

    # -- data ------------------------------------------------------------------------------
    def _load_data(self) -> None:
        """Open the splits, choose in-memory or streamed, start the data workers."""
        data, cfg = self.config.data, self.config.train
        progress = cfg.progress and self.main
        where = data.root or "the default folder"
        self.say(f"data: opening {data.kind} data at {where} (generated or imported on first use)")
        if self.world > 1 and not self.main:
            torch.distributed.barrier()  # let rank 0 generate the data first
        size = self.config.model.image_size
        train_set = build_dataset(data, "train", progress, image_size=size)
        val_set = build_dataset(data, "val", progress, image_size=size)
        if self.world > 1 and self.main:
            torch.distributed.barrier()
        self.say(f"data: {len(train_set)} training and {len(val_set)} validation objects")
        self.in_memory, why = choose_in_memory(data, train_set)
        if self.in_memory:
            self.say(f"data: reading the training split into memory ({why})")
            train_set = InMemorySplit.from_dataset(
                train_set, say=self.say, what="training split", workers=data.workers
            )
        else:
            self.say(f"data: streaming the training split from disk ({why})")
        self.train_data = train_set
        self.say(f"data: reading {min(cfg.val_objects, len(val_set))} validation objects")
        self.val_data = InMemorySplit.from_dataset(
            val_set, cfg.val_objects, workers=data.workers, spread=True
        )
        self.samples = StepSamples(
            train_set,
            seed=cfg.seed,
            views_per_step=cfg.views_per_step,
            input_kind=data.input,
            projection_size=cfg.projection_size,
            with_voxels=cfg.supervision in ("voxel", "both"),
            hull_resolution=self.config.model.resolution if self._uses_hull() else 0,
        )
        self._open_batches()

    def _uses_hull(self) -> bool:
        cfg = self.config.train
        return cfg.loss_hull > 0 and cfg.supervision in ("silhouette", "both")

    def _open_batches(self) -> None:
        cfg, data = self.config.train, self.config.data
        sampler = StepSampler(
            len(self.samples),
            cfg.batch_size,
            cfg.seed,
            start=self.step,
            stop=cfg.max_steps,
            rank=self.rank,
            world=self.world,
        )
        workers = 0 if self.in_memory else data.workers
        if workers:
            self.say(f"data: starting {workers} data worker processes")
        self._batches = train_batches(
            self.samples, sampler, workers, pin_memory=self.device.type == "cuda"
        )

    def _next_batch(self) -> dict[str, torch.Tensor]:
        if self._batches is None:
            self._load_data()
        return next(self._batches)

    def _close_batches(self) -> None:
        self._batches = None  # stops the workers

    # -- one step --------------------------------------------------------------------------
    def losses(self, logits, sil, cams, voxels, hull=None) -> dict[str, torch.Tensor]:
        cfg = self.config.train
        out: dict[str, torch.Tensor] = {}
        if hull is not None and self._uses_hull():
            out["hull"] = cfg.loss_hull * voxel_bce(logits, hull)
        if cfg.supervision in ("silhouette", "both"):
            pred = self.transformer(torch.sigmoid(logits), cams)  # (B, k, 1, s, s)
            if cfg.loss_l2:
                out["l2"] = cfg.loss_l2 * silhouette_l2(pred, sil)
            if cfg.loss_bce:
                out["bce"] = cfg.loss_bce * silhouette_bce(pred, sil)
            if cfg.loss_iou:
                out["iou"] = cfg.loss_iou * soft_iou_loss(pred, sil)
            out["_sil_iou"] = silhouette_scores(pred.detach(), sil)["iou"].mean()
        if cfg.supervision in ("voxel", "both"):
            if voxels is None:
                raise ValueError("voxel supervision needs ground-truth voxels in the dataset")
            out["voxel"] = cfg.loss_voxel * voxel_bce(logits, voxels)
        return out

    def train_step(self, batch: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One optimisation step on ``batch`` (default: the next batch of the loader)."""
        cfg = self.config.train
        batch = self._next_batch() if batch is None else batch
        self.net.train()
        to = self.device
        image = self.pipeline.prepare(batch["input"])  # (B, C_in, S, S)
        sil = batch["silhouettes"].to(to, non_blocking=True)  # (B, k, 1, s, s)
        cams = batch_cameras(batch).to(to)  # (B, k)
        voxels = batch["voxels"].to(to, non_blocking=True) if "voxels" in batch else None
        hull = batch["hull"].to(to, non_blocking=True) if "hull" in batch else None
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=cfg.amp and self.device.type == "cuda"
        ):
            logits = self.net(image)
        terms = self.losses(logits.float(), sil, cams, voxels, hull)
        loss = sum(v for k, v in terms.items() if not k.startswith("_"))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._set_lr()
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        stats = {"loss": float(loss.detach())} | {
            k.lstrip("_"): float(v.detach()) for k, v in terms.items()
        }
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.world > 1:
            t = torch.tensor(list(stats.values()), dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            stats = dict(zip(stats, (t / self.world).tolist()))
        return stats

    def learning_rate(self) -> float:
        """The learning rate of the next step under ``optim.schedule``."""
        optim, cfg = self.config.optim, self.config.train
        if optim.schedule == "constant":
            return optim.lr
        done, _ = progress_text(self.elapsed, self.step, cfg.max_steps, cfg.max_minutes)
        scale = optim.lr_final + (1.0 - optim.lr_final) * 0.5 * (1.0 + math.cos(math.pi * done))
        return optim.lr * scale

    def _set_lr(self) -> None:
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # -- validation ------------------------------------------------------------------------
    def _val_batch(self, index: torch.Tensor, views: torch.Tensor):
        """Raw input views ``(B, C_in, H, W)`` (the :func:`default_input_view` of each
        object), silhouettes ``(B, k, 1, s, s)`` and cameras ``(B, k)`` of ``views``."""
        data, s = self.val_data, self.config.train.projection_size
        source = data.images if self.config.data.input == "rgb" else data.silhouettes
        view = default_input_view(data.indices[index], data.n_views)  # as eval picks it
        inputs = source[index, view]  # (B, C_in, H, W) uint8
        rows = index[:, None].expand_as(views)
        sil = data.silhouettes[rows, views].float() / 255.0  # (B, k, 1, H, W)
        B, k, _, H, W = sil.shape
        if (H, W) != (s, s):
            sil = F.adaptive_avg_pool2d(sil.reshape(B * k, 1, H, W), s).reshape(B, k, 1, s, s)
        return inputs, sil.to(self.device), data.cameras(index, views).to(self.device)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """3D IoU (threshold sweep) and silhouette IoU on all views of the validation objects,
        each predicted from its :func:`default_input_view`."""
        self.net.eval()
        data = self.val_data
        V = data.n_views
        ious = {th: [] for th in THRESHOLDS}
        sil_iou = []
        for start in range(0, len(data), 16):
            index = torch.arange(start, min(start + 16, len(data)))
            views = torch.arange(V).expand(len(index), V)
            inputs, sil, cams = self._val_batch(index, views)
            occ = self.pipeline.predict_views(inputs)  # (B, 1, R, R, R)
            if data.voxels is not None:
                voxels = data.voxels[index].to(self.device).float() / 255.0
                for th in THRESHOLDS:
                    ious[th].append(iou_3d(occ, voxels, th).cpu())
            pred = self.transformer(occ, cams)
            sil_iou.append(silhouette_scores(pred, sil)["iou"].mean(dim=(1, 2)).cpu())
        out = {"val_sil_iou": float(torch.cat(sil_iou).mean())}
        if data.voxels is not None:
            sweep = {th: float(torch.cat(v).mean()) for th, v in ious.items()}
            best_th = max(sweep, key=sweep.get)
            out |= {"val_iou_3d": sweep[best_th], "val_threshold": best_th}
            out |= {f"val_iou_3d@{th}": v for th, v in sweep.items()}
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": "persp3d-checkpoint/1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best": self.best,
            "elapsed": self.elapsed,
            "config": json.dumps(self.config.to_dict()),
        }

    def _resume(self) -> None:
        # last.pt, or best.pt when last.pt is missing or corrupt (a CheckpointWarning says so)
        state, path = load_checkpoint_with_fallback(
            self.out, ("last.pt", "best.pt"), map_location=self.device
        )
        saved = Config.from_dict(json.loads(state["config"]))
        if saved.model != self.config.model:
            raise ValueError(f"{path} was trained with another model configuration: {saved.model}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.best = float(state["best"])
        self.elapsed = float(state["elapsed"])
        self.say(f"resuming at step {self.step} from {path}")
        if self.main:
            _truncate_csv(self.out / "steps.csv", self.step)
            _truncate_jsonl(self.out / "val.jsonl", self.step)

    def _save(self, name: str) -> None:
        if self.main:
            save_checkpoint(self.out / name, self.state())

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``max_steps`` or ``max_minutes``; returns the last validation metrics."""
        cfg = self.config.train
        if self.main:
            self.config.save(self.out / "config.yaml")
        if self._batches is None:
            self._load_data()
        # resumed: a new events file whose purge_step hides the old file's steps after it
        purge = self.step + 1 if self.step else None
        writer = _tensorboard(self.out / "tb", purge) if self.main else None
        limits = [f"{cfg.max_minutes:g} minutes"] if cfg.max_minutes else []
        limits += [f"{cfg.max_steps} steps"] if cfg.max_steps < 2**31 else []
        limit = " or ".join(limits) or "ever"
        first = "the first steps compile the projection kernels"
        if self._uses_hull():
            first += "; the first pass over the data also carves each object's visual hull"
        self.say(f"training for {limit} ({first})")
        bar = _Bar(cfg, self.step, self.elapsed) if self.main and cfg.progress else None
        steps_file = None
        if self.main:
            new = not (self.out / "steps.csv").exists()
            steps_file = open(self.out / "steps.csv", "a", newline="")
            if new:
                steps_file.write("step,loss,sil_iou,seconds\n")
        metrics: dict[str, float] = {}
        start = time.perf_counter() - self.elapsed
        try:
            while self.step < cfg.max_steps:
                if cfg.max_minutes and (time.perf_counter() - start) / 60 >= cfg.max_minutes:
                    break
                stats = self.train_step()
                self.elapsed = time.perf_counter() - start
                iou = stats.get("sil_iou", float("nan"))
                if self.main:
                    steps_file.write(
                        f"{self.step},{stats['loss']:.8g},{iou:.6f},{self.elapsed:.2f}\n"
                    )
                    if writer is not None and self.step % cfg.log_every == 0:
                        for k, v in stats.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        if self.step % (10 * cfg.log_every) == 0:
                            self._log_images(writer)
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    metrics = self._validate_and_log(writer)
                if bar is not None:
                    bar.update(self.step, self.elapsed, stats, self.last_val)
                if self.step % cfg.checkpoint_every == 0:
                    if steps_file is not None:
                        steps_file.flush()
                    self._save("last.pt")
        finally:
            self._close_batches()
            if steps_file is not None:
                steps_file.close()
            if bar is not None:
                bar.close()
        if not metrics or metrics.get("step") != self.step:
            metrics = self._validate_and_log(writer)
        self._save("last.pt")
        if writer is not None:
            writer.close()
        return metrics

    def _validate_and_log(self, writer) -> dict[str, float]:
        metrics = self.validate() | {"step": self.step, "seconds": round(self.elapsed, 2)}
        self.last_val = metrics
        score = metrics.get("val_iou_3d", metrics["val_sil_iou"])
        if self.main:
            with open(self.out / "val.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            if writer is not None:
                for k, v in metrics.items():
                    if k.startswith("val_"):
                        writer.add_scalar(f"val/{k[4:]}", v, self.step)
        if score > self.best:
            self.best = score
            self._save("best.pt")
        return metrics

    @torch.no_grad()
    def _log_images(self, writer) -> None:
        """Input, predicted and ground-truth silhouettes of 4 validation objects."""
        data = self.val_data
        index = torch.arange(min(4, len(data)))
        V = data.n_views
        views = torch.arange(0, V, max(1, V // 4))[:4].expand(len(index), -1)
        inputs, sil, cams = self._val_batch(index, views)
        self.net.eval()
        pred = self.transformer(self.pipeline.predict_views(inputs), cams)
        s = sil.shape[-1]
        inp = F.interpolate(self.pipeline.prepare(inputs), size=(s, s), mode="area")
        inp = inp if inp.shape[1] == 3 else inp.expand(-1, 3, -1, -1)
        rows = [
            torch.cat(
                [inp[b], *pred[b].expand(-1, 3, -1, -1), *sil[b].expand(-1, 3, -1, -1)], dim=-1
            )
            for b in range(len(index))
        ]
        writer.add_image("val/input_pred_gt", torch.cat(rows, dim=-2).clamp(0, 1).cpu(), self.step)


class _Bar:
    """The training bar: elapsed / budget, time left, step, loss and the latest val IoU."""

    def __init__(self, cfg, step: int, elapsed: float) -> None:
        from tqdm import tqdm

        self.cfg, self.start_step, self.start_elapsed = cfg, step, elapsed
        self.bar = tqdm(total=1000, desc="train", bar_format="{desc} |{bar:20}|{postfix}")
        self.running: float | None = None
        self.last = 0.0

    def update(self, step: int, elapsed: float, stats: dict, val: dict) -> None:
        iou = stats.get("sil_iou", float("nan"))
        if self.running is None or math.isnan(self.running):
            self.running = iou
        else:
            self.running = 0.9 * self.running + 0.1 * iou
        now = time.perf_counter()
        if now - self.last < 0.5 and step < self.cfg.max_steps:
            return
        self.last = now
        cfg = self.cfg
        fraction, text = progress_text(
            elapsed, step, cfg.max_steps, cfg.max_minutes, self.start_step, self.start_elapsed
        )
        val_text = "val IoU -"
        if val:
            v = val.get("val_iou_3d", val.get("val_sil_iou"))
            kind = "3D" if "val_iou_3d" in val else "sil"
            val_text = f"val {kind} IoU {v:.3f} (step {val['step']})"
        self.bar.n = int(1000 * fraction)
        self.bar.set_description_str(f"train {text}", refresh=False)
        self.bar.set_postfix_str(
            f"step {step}, loss {stats['loss']:.4f}, sil IoU {self.running:.3f}, {val_text}"
        )

    def close(self) -> None:
        self.bar.close()


def _tensorboard(path: Path, purge_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is pinned; keep training without it
        return None
    return SummaryWriter(str(path), purge_step=purge_step)


def _truncate_csv(path: Path, step: int) -> None:
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


def _truncate_jsonl(path: Path, step: int) -> None:
    if not path.exists():
        return
    lines = [
        ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)
