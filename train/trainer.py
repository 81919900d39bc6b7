"""The training loop: OccupancyPredictor + PerspectiveTransformer + multi-view silhouettes.

Joins the pieces of the data path: image -> network -> volume -> perspective transformer ->
silhouettes -> loss against the ground-truth silhouettes of sampled views (no 3D labels),
or the voxel BCE of the 3D-supervised baseline. Everything random in a step (the batch, the
input view, the supervising views) is drawn from a generator seeded by ``(seed, step)``, so a
run resumed from a checkpoint repeats the uninterrupted run step for step.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from persp3d.cameras import Cameras
from persp3d.losses import silhouette_bce, silhouette_l2, soft_iou_loss, voxel_bce
from persp3d.metrics import iou_3d, silhouette_scores
from persp3d.models.occupancy import OccupancyPredictor
from persp3d.train.checkpoint import load_checkpoint, save_checkpoint
from persp3d.train.config import Config, DataConfig
from persp3d.transformer import PerspectiveTransformer

__all__ = ["MultiViewTensors", "Trainer", "build_dataset", "load_model"]

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def build_dataset(cfg: DataConfig, split: str, progress: bool = True):
    """The dataset of ``cfg`` for ``split`` (generating the procedural default if needed)."""
    from persp3d.datasets.multiview import MultiViewFolder
    from persp3d.datasets.procedural import ProceduralConfig, ProceduralShapes, default_data_dir

    if cfg.kind == "procedural":
        root = Path(cfg.root) if cfg.root else default_data_dir() / "procedural"
        config = (
            None
            if (root / "manifest.json").exists()
            else ProceduralConfig(per_category=cfg.per_category)
        )
        return ProceduralShapes(
            root,
            split,
            config,
            progress=progress,
            categories=cfg.categories,
            voxel_resolution=cfg.voxel_resolution,
        )
    if cfg.kind == "folder":
        if not cfg.root:
            raise ValueError("data.root must name the dataset folder when data.kind is 'folder'")
        return MultiViewFolder(
            cfg.root, split, categories=cfg.categories, voxel_resolution=cfg.voxel_resolution
        )
    raise ValueError(f"data.kind must be 'procedural' or 'folder'; got {cfg.kind!r}")


@dataclass
class MultiViewTensors:
    """A split held in memory: ``images (N, V, 3, H, W)`` and ``silhouettes (N, V, 1, H, W)``
    as uint8, cameras ``K, R (N, V, 3, 3)``, ``t (N, V, 3)``, ``voxels (N, 1, R, R, R)``."""

    images: torch.Tensor
    silhouettes: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    image_size: tuple[int, int]
    voxels: torch.Tensor | None
    categories: list[str]
    ids: list[str]

    @classmethod
    def from_dataset(cls, dataset, limit: int | None = None) -> MultiViewTensors:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        if n == 0:
            raise ValueError(f"{dataset!r} holds no samples")
        images, sils, Ks, Rs, ts, voxels, cats, ids = [], [], [], [], [], [], [], []
        for i in range(n):
            s = dataset[i]
            images.append((s["images"] * 255).round().to(torch.uint8))
            sils.append((s["silhouettes"] * 255).round().to(torch.uint8))
            cams = s["cameras"]
            Ks.append(cams.K.float())
            Rs.append(cams.R.float())
            ts.append(cams.t.float())
            if "voxels" in s:
                voxels.append(s["voxels"].float())
            cats.append(s["category"])
            ids.append(s["id"])
        return cls(
            torch.stack(images),
            torch.stack(sils),
            torch.stack(Ks),
            torch.stack(Rs),
            torch.stack(ts),
            cams.image_size,
            torch.stack(voxels) if len(voxels) == n else None,
            cats,
            ids,
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def cameras(self, index: torch.Tensor, views: torch.Tensor) -> Cameras:
        """Cameras of objects ``index (B,)`` and views ``views (B, k)`` -> batch ``(B, k)``."""
        rows = index[:, None].expand_as(views)
        return Cameras(
            self.K[rows, views],
            self.R[rows, views],
            self.t[rows, views],
            self.image_size,
            validate=False,
        )


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def load_model(
    path: str | os.PathLike, map_location: str = "cpu"
) -> tuple[OccupancyPredictor, Config, dict]:
    """A trained network from a checkpoint file or a run folder (its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    state = load_checkpoint(path, map_location)
    for key in ("model", "config"):
        if key not in state:
            raise ValueError(f"{path} is not a persp3d training checkpoint (no {key!r})")
    config = Config.from_dict(json.loads(state["config"]))
    model = OccupancyPredictor(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, state


class Trainer:
    """Trains an :class:`OccupancyPredictor` as configured; see :meth:`fit`.

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), it trains with DistributedDataParallel:
    each process takes its share of every batch (gloo on CPU, NCCL on GPU).
    """

    def __init__(self, config: Config, resume: bool = False) -> None:
        self.config = config
        cfg = config.train
        if cfg.supervision not in ("silhouette", "voxel", "both"):
            raise ValueError(
                f"train.supervision must be silhouette, voxel or both; got {cfg.supervision!r}"
            )
        if config.data.input not in ("rgb", "silhouette"):
            raise ValueError(f"data.input must be rgb or silhouette; got {config.data.input!r}")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.main = self.rank == 0
        self.out = Path(cfg.out)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)

        in_channels = 3 if config.data.input == "rgb" else 1
        if config.model.in_channels != in_channels:
            config.model.in_channels = in_channels
        torch.manual_seed(cfg.seed)
        self.model = OccupancyPredictor(config.model).to(self.device)
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
        self.transformer = PerspectiveTransformer(
            depth_samples=cfg.depth_samples,
            out_size=(cfg.projection_size,) * 2,
            mode=cfg.projection_mode,
            backend=cfg.projection_backend,
        )
        self.step = 0
        self.best = -1.0
        self.elapsed = 0.0
        if resume:
            self._resume()

    # -- data ------------------------------------------------------------------------------
    def _load_data(self) -> None:
        progress = self.config.train.progress and self.main
        if self.world > 1 and not self.main:
            torch.distributed.barrier()  # let rank 0 generate the data first
        train_set = build_dataset(self.config.data, "train", progress)
        val_set = build_dataset(self.config.data, "val", progress)
        if self.world > 1 and self.main:
            torch.distributed.barrier()
        self.train_data = MultiViewTensors.from_dataset(train_set)
        self.val_data = MultiViewTensors.from_dataset(val_set, self.config.train.val_objects)

    def _batch(
        self,
        data: MultiViewTensors,
        index: torch.Tensor,
        input_view: torch.Tensor,
        views: torch.Tensor,
    ):
        cfg = self.config.train
        if self.config.data.input == "rgb":
            image = data.images[index, input_view].float() / 255.0  # (B, 3, H, W)
        else:
            image = data.silhouettes[index, input_view].float() / 255.0  # (B, 1, H, W)
        rows = index[:, None].expand_as(views)
        sil = data.silhouettes[rows, views].float() / 255.0  # (B, k, 1, H, W)
        B, k = views.shape
        H = sil.shape[-1]
        if H != cfg.projection_size:
            sil = F.adaptive_avg_pool2d(sil.reshape(B * k, 1, H, H), cfg.projection_size).reshape(
                B, k, 1, cfg.projection_size, cfg.projection_size
            )
        cams = data.cameras(index, views)
        voxels = data.voxels[index] if data.voxels is not None else None
        to = self.device
        return image.to(to), sil.to(to), cams.to(to), None if voxels is None else voxels.to(to)

    def _step_indices(self, step: int):
        """Objects, input view and supervising views of ``step`` (this process's share)."""
        cfg = self.config.train
        n = len(self.train_data)
        per_epoch = max(1, n // cfg.batch_size)
        epoch, pos = divmod(step, per_epoch)
        order = torch.randperm(n, generator=_step_generator(cfg.seed, -1 - epoch))
        index = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
        if len(index) < cfg.batch_size:
            index = torch.cat([index, order[: cfg.batch_size - len(index)]])
        gen = _step_generator(cfg.seed, step)
        V = self.train_data.images.shape[1]
        input_view = torch.randint(V, (len(index),), generator=gen)
        k = V if cfg.views_per_step <= 0 else min(cfg.views_per_step, V)
        views = torch.rand(len(index), V, generator=gen).argsort(dim=1)[:, :k]
        share = slice(self.rank, None, self.world)
        return index[share], input_view[share], views[share]

    # -- one step --------------------------------------------------------------------------
    def losses(self, logits, image, sil, cams, voxels) -> dict[str, torch.Tensor]:
        cfg = self.config.train
        out: dict[str, torch.Tensor] = {}
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

    def train_step(self) -> dict[str, float]:
        cfg = self.config.train
        self.net.train()
        index, input_view, views = self._step_indices(self.step)
        image, sil, cams, voxels = self._batch(self.train_data, index, input_view, views)
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=cfg.amp and self.device.type == "cuda"
        ):
            logits = self.net(image)
        terms = self.losses(logits.float(), image, sil, cams, voxels)
        loss = sum(v for k, v in terms.items() if not k.startswith("_"))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        stats = {"loss": float(loss.detach())} | {
            k.lstrip("_"): float(v.detach()) for k, v in terms.items()
        }
        if self.world > 1:
            t = torch.tensor(list(stats.values()), dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            stats = dict(zip(stats, (t / self.world).tolist()))
        return stats

    # -- validation ------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """3D IoU (threshold sweep) and silhouette IoU on all views of the validation objects."""
        self.net.eval()
        data = self.val_data
        V = data.images.shape[1]
        ious = {th: [] for th in THRESHOLDS}
        sil_iou = []
        for start in range(0, len(data), 16):
            index = torch.arange(start, min(start + 16, len(data)))
            input_view = (index * 7) % V
            views = torch.arange(V).expand(len(index), V)
            image, sil, cams, voxels = self._batch(data, index, input_view, views)
            occ = torch.sigmoid(self.model(image))
            if voxels is not None:
                for th in THRESHOLDS:
                    ious[th].append(iou_3d(occ, voxels, th))
            pred = self.transformer(occ, cams)
            sil_iou.append(silhouette_scores(pred, sil)["iou"].mean(dim=(1, 2)))
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
        path = self.out / "last.pt"
        state = load_checkpoint(path, map_location=self.device)
        saved = Config.from_dict(json.loads(state["config"]))
        if saved.model != self.config.model:
            raise ValueError(f"{path} was trained with another model configuration: {saved.model}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.best = float(state["best"])
        self.elapsed = float(state["elapsed"])
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
        self._load_data()
        writer = _tensorboard(self.out / "tb") if self.main else None
        bar = None
        if self.main and cfg.progress:
            from tqdm import tqdm

            total = cfg.max_steps if cfg.max_steps < 2**31 else None  # None: a time limit
            bar = tqdm(total=total, initial=self.step, desc="train", dynamic_ncols=True)
        steps_file = None
        if self.main:
            new = not (self.out / "steps.csv").exists()
            steps_file = open(self.out / "steps.csv", "a", newline="")
            if new:
                steps_file.write("step,loss,sil_iou,seconds\n")
        running = None
        metrics: dict[str, float] = {}
        start = time.perf_counter() - self.elapsed
        try:
            while self.step < cfg.max_steps:
                if cfg.max_minutes and (time.perf_counter() - start) / 60 >= cfg.max_minutes:
                    break
                stats = self.train_step()
                self.elapsed = time.perf_counter() - start
                iou = stats.get("sil_iou", float("nan"))
                running = (
                    iou if running is None or math.isnan(running) else 0.9 * running + 0.1 * iou
                )
                if self.main:
                    steps_file.write(
                        f"{self.step},{stats['loss']:.8g},{iou:.6f},{self.elapsed:.2f}\n"
                    )
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{stats['loss']:.4f}", iou=f"{running:.3f}")
                    if writer is not None and self.step % cfg.log_every == 0:
                        for k, v in stats.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        if self.step % (10 * cfg.log_every) == 0:
                            self._log_images(writer)
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    metrics = self._validate_and_log(writer)
                if self.step % cfg.checkpoint_every == 0:
                    if steps_file is not None:
                        steps_file.flush()
                    self._save("last.pt")
        finally:
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
        V = data.images.shape[1]
        views = torch.arange(0, V, max(1, V // 4))[:4].expand(len(index), -1)
        image, sil, cams, _ = self._batch(data, index, torch.zeros_like(index), views)
        self.net.eval()
        pred = self.transformer(torch.sigmoid(self.model(image)), cams)
        s = sil.shape[-1]
        inp = F.interpolate(image, size=(s, s), mode="area")
        inp = inp if inp.shape[1] == 3 else inp.expand(-1, 3, -1, -1)
        rows = [
            torch.cat(
                [inp[b], *pred[b].expand(-1, 3, -1, -1), *sil[b].expand(-1, 3, -1, -1)], dim=-1
            )
            for b in range(len(index))
        ]
        writer.add_image("val/input_pred_gt", torch.cat(rows, dim=-2).clamp(0, 1), self.step)


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is pinned; keep training without it
        return None
    return SummaryWriter(str(path))


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
