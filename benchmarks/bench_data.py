"""Training data at scale: peak memory and objects/s, in memory vs streamed with workers.

Writes a persp3d-multiview dataset folder of N objects in the default's format (24 views of
64 x 64, depth, 32^3 and 64^3 voxels; each file a copy of one of 24 procedural objects, so
generation takes seconds), then, in a fresh process per setting, trains the default model
(batch 16, 8 supervising views of 32 x 32) for a few steps and reports the process's peak
resident memory (main process and largest worker), the start-up time (opening the split,
reading it into memory when in-memory), the training throughput in objects/s and the CPU
time per object of the main process and its workers together, and the CPU time the data
path alone takes per training item (read, decode, pick the step's views, pool the
silhouettes; one thread, no training). On a busy machine the wall-clock figures follow the
load; the data path's CPU time is what streaming adds to each object's training.

    python benchmarks/bench_data.py                         # 1k, 10k; streamed 0/1/2 workers, in memory at 1k
    python benchmarks/bench_data.py --sizes 1000 10000 40000 --steps 30
    python benchmarks/bench_data.py --json results.json

In-memory runs are skipped above ``--max-in-memory`` objects (they need about 0.4 MB per
object: 17 GB at 40k).

Measured on the shared 2-core development machine (load average 5-12 from other jobs, so
the wall-clock objects/s vary by +-40% between identical runs; CPU figures are steadier),
``--sizes 1000 10000 40000 --steps 12``::

     objects    mode workers  start s  CPU ms/obj  data ms/obj  main MB  worker MB
        1000  memory       0      9.2        13.0         0.56     1607          0
        1000  stream       0      0.6        12.8         1.27     1193          0
        1000  stream       2      0.4        16.0         1.43     1197        626
       10000  stream       0      2.3        14.7         1.43     1207          0
       10000  stream       2      3.9        16.7         1.79     1207        626
       40000  stream       0     11.9        14.3         1.49     1226          0
       40000  stream       2     12.3        15.6         1.49     1234        626

Peak memory of the streamed runs grows 3% from 1k to 40k objects (the manifest); in memory
it is 400 MB more at 1k already.

On the same machine quiet (load 1.3, nothing else running), ``--sizes 1000 --steps 20
--repeat 3`` (medians of 3 interleaved runs, objects/s and the ratio to in memory)::

    in memory          107.1 obj/s   13.3 ms CPU/obj   1330 MB   start 4.9 s
    streamed, 0 workers 103.5  (0.97)  13.6               938        0.3
    streamed, 1 worker  107.1  (1.00)  14.7               940 + 450  0.4
    streamed, 2 workers 111.6  (1.04)  14.7               940 + 450  0.4

so ``data.in_memory: auto`` streams whenever ``data.workers`` > 0 and holds small splits in
memory only without workers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_ITEMS = 24


def make_folder(root: Path, n: int, base: Path) -> Path:
    """A dataset folder of ``n`` objects (copies of the base items), all in the train split
    but 32 in val; the files are written once (``root/items``) and hard-linked into each."""
    from persp3d.datasets.cache import FORMAT_NAME, FORMAT_VERSION, file_sha256

    bases = sorted(base.glob("*.npz"))
    shas = {p.name: file_sha256(p) for p in bases}
    items_dir = root / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        src = bases[i % len(bases)]
        rel = f"items/{i // 1000:03d}/{i:06d}.npz"
        dst = root / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        split = "val" if i < 32 else "train"
        items.append(
            {
                "id": f"{i:06d}",
                "category": src.stem.split("_")[0],
                "split": split,
                "file": rel,
                "sha256": shas[src.name],
                "bytes": dst.stat().st_size,
            }
        )
    folder = root / f"n{n}"
    for it in items:  # hard links: each folder holds its files, the disk holds them once
        dst = folder / it["file"]
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(root / it["file"], dst)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "created_with": "benchmarks/bench_data.py",
        "kind": "bench",
        "config": {"voxel_resolutions": [32, 64], "n_views": 24, "image_size": 64},
        "complete": True,
        "items": items,
        "skipped": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def make_base(base: Path) -> Path:
    from persp3d.datasets.cache import write_item
    from persp3d.datasets.procedural import ProceduralConfig, procedural_item
    from persp3d.datasets.shapes import CATEGORIES

    base.mkdir(parents=True, exist_ok=True)
    if len(list(base.glob("*.npz"))) >= BASE_ITEMS:
        return base
    config = ProceduralConfig()
    cats = list(CATEGORIES)
    for k in range(BASE_ITEMS):
        cat = cats[k % len(cats)]
        write_item(base / f"{cat}_{k:03d}.npz", procedural_item(config, cat, k))
    return base


def child(folder: str, mode: str, workers: int, steps: int, threads: int) -> dict:
    """One measurement (run in a fresh process)."""
    import torch

    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    torch.set_num_threads(threads)
    overrides = [
        f"data.root={folder}",
        "data.kind=folder",
        f"data.in_memory={'true' if mode == 'memory' else 'false'}",
        f"data.workers={workers}",
        "train.progress=false",
        "train.val_objects=8",
        f"train.out={tempfile.mkdtemp()}",
        f"train.threads={threads}",
        f"train.max_steps={3 + steps}",  # the loader reads exactly the measured batches
        # the visual-hull target is carved once per object (about 70 ms, by whichever
        # process reads the object): the same work in every mode, left out of the data path
        "train.loss_hull=0",
    ]
    trainer = Trainer(load_config(None, overrides))
    t0 = time.perf_counter()
    trainer._load_data()
    startup = time.perf_counter() - t0
    # the data path alone: CPU time of this process to make 160 training items
    samples, n = trainer.samples, len(trainer.samples)
    c0 = time.process_time()
    for k in range(160):
        samples[((k * 7919) % n, 10_000 + k // 16, k % 16)]
    data_cpu = (time.process_time() - c0) / 160
    warmup = 3
    times = []
    cpu = lambda who: sum(resource.getrusage(who)[:2])  # noqa: E731 - user + system seconds
    for k in range(warmup + steps):
        if k == warmup:
            cpu0 = cpu(resource.RUSAGE_SELF)
        t = time.perf_counter()
        trainer.train_step()
        if k >= warmup:
            times.append(time.perf_counter() - t)
    cpu_main = cpu(resource.RUSAGE_SELF) - cpu0
    batch = trainer.config.train.batch_size
    total = sum(times)
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainer._close_batches()
    time.sleep(1.0)  # let the workers exit so their peak and CPU time are counted
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # the workers read warmup + steps batches (and the validation objects): charge their
    # share of the measured steps
    cpu_workers = cpu(resource.RUSAGE_CHILDREN) * steps / (warmup + steps)
    return {
        "objects": len(trainer.samples),
        "mode": mode,
        "workers": workers,
        "startup_s": round(startup, 2),
        "objects_per_s": round(batch * steps / total, 2),
        "median_step_s": round(statistics.median(times), 4),
        "cpu_ms_per_object": round(1e3 * (cpu_main + cpu_workers) / (batch * steps), 1),
        "data_cpu_ms_per_object": round(1e3 * data_cpu, 2),
        "peak_rss_main_mb": round(main_rss, 1),
        "peak_rss_worker_mb": round(child_rss, 1) if workers else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-in-memory", type=int, default=1000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure every setting this many times, interleaved"
    )
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "persp3d-bench-data"))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", nargs=3, metavar=("FOLDER", "MODE", "WORKERS"))
    args = parser.parse_args(argv)
    if args.child:
        folder, mode, workers = args.child
        print(json.dumps(child(folder, mode, int(workers), args.steps, args.threads)))
        return 0

    root = Path(args.root)
    t0 = time.perf_counter()
    base = make_base(root / "base")
    folders = {n: make_folder(root, n, base) for n in sorted(args.sizes)}
    print(f"datasets ready in {time.perf_counter() - t0:.0f} s under {root}", flush=True)
    settings = [("stream", w) for w in args.workers]
    results = []
    header = (
        f"{'objects':>8} {'mode':>7} {'workers':>7} {'start s':>8} {'obj/s':>7} "
        f"{'CPU ms/obj':>10} {'data ms/obj':>11} {'main MB':>8} {'worker MB':>9}"
    )
    print(header, flush=True)
    for n, folder in folders.items():
        todo = ([("memory", 0)] if n <= args.max_in_memory else []) + settings
        for mode, workers in todo * args.repeat:
            cmd = [sys.executable, __file__, "--child", str(folder), mode, str(workers)]
            cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(
                f"{n:>8} {mode:>7} {workers:>7} {r['startup_s']:>8.1f} "
                f"{r['objects_per_s']:>7.1f} {r['cpu_ms_per_object']:>10.1f} "
                f"{r['data_cpu_ms_per_object']:>11.2f} "
                f"{r['peak_rss_main_mb']:>8.0f} "
                f"{r['peak_rss_worker_mb']:>9.0f}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
