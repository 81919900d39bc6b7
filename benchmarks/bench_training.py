"""Training throughput (objects per second) with each projection backend, in one run.

Trains the default OccupancyPredictor self-supervised (batch 16, 8 supervising views of
32 x 32, 48 samples per ray) for a few steps per backend on the same data and reports the
median step time and objects per second, with the ratio to the naive baseline
(``grid_sample`` on the full frustum grid, then ``amax``).

    python benchmarks/bench_training.py [--data DIR] [--steps 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from persp3d.projection import BACKENDS
    from persp3d.train.config import load_config
    from persp3d.train.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="dataset folder (default: the procedural default)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--backends",
        nargs="+",
        default=[b for b in ("naive", "reference", "fused") if b in BACKENDS],
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for backend in args.backends:
        overrides = [
            f"train.projection_backend={backend}",
            "train.progress=false",
            f"train.out={tempfile.mkdtemp()}",
        ]
        if args.data:
            overrides += [f"data.root={args.data}", "data.kind=folder"]
        trainer = Trainer(load_config(None, overrides))
        trainer._load_data()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
        step = statistics.median(times[2:])  # skip warm-up (JIT compilation)
        results[backend] = step
        batch = trainer.config.train.batch_size
        print(
            f"{backend:10} {step:7.3f} s/step  {batch / step:7.1f} objects/s  "
            f"x{results[args.backends[0]] / step:5.2f} vs {args.backends[0]}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
