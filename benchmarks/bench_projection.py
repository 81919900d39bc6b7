"""Time and peak memory of persp3d's projection against the naive baseline, in one run.

The baseline is ``grid_sample`` on the full frustum grid followed by ``amax`` along depth
(``persp3d.naive_project``). Each (method, size) runs in a fresh subprocess: one warm-up
call at full size, then the peak resident memory is reset (``/proc/self/clear_refs``) and
``repeats`` timed calls are made; the peak is the growth of the resident set over the
timed calls. Every figure is also reported as a ratio to the baseline of the same size.

    python benchmarks/bench_projection.py                 # the default sizes
    python benchmarks/bench_projection.py --quick         # one small size
    python benchmarks/bench_projection.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, B, V, R, h, D): PTN's 32^3 volume at 32x32 and 64x64 silhouettes and 24 views.
DEFAULT_SIZES = [
    ("B8 V24 32^3 64x64 D64", 8, 24, 32, 64, 64),
    ("B1 V24 32^3 32x32 D32", 1, 24, 32, 32, 32),
    ("B8 V24 32^3 32x32 D64", 8, 24, 32, 32, 64),
    ("B8 V24 32^3 64x64 D128", 8, 24, 32, 64, 128),
]
QUICK_SIZES = [("B2 V8 32^3 32x32 D32", 2, 8, 32, 32, 32)]
METHODS = ["naive", "reference"]


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(method: str, B: int, V: int, R: int, hw: int, D: int, backward: bool, repeats: int):
    """Run in the child process: returns seconds per call and peak MiB above the start."""
    import persp3d as p3

    torch.manual_seed(0)
    cams = p3.orbit_cameras(n_views=V, image_size=(hw, hw))
    volume = torch.rand(B, 1, R, R, R)

    def call():
        v = volume.clone().requires_grad_(backward)
        out = p3.project(v, cams, depth_samples=D, backend=method)
        if backward:
            out.sum().backward()

    call()  # warm-up: thread pools, allocator, first-call costs
    exact = _reset_peak()
    start_rss = _status_mib("VmRSS:")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    peak = _status_mib("VmHWM:") - start_rss
    times.sort()
    return {"seconds": times[len(times) // 2], "peak_mib": peak, "peak_exact": exact}


def run_child(args: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONUNBUFFERED="1")
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small size only")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        method, B, V, R, hw, D, backward = args.child
        res = measure(
            method, int(B), int(V), int(R), int(hw), int(D), backward == "1", args.repeats
        )
        print(json.dumps(res))
        return 0

    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    rows = []
    header = f"{'size':26} {'pass':8} {'method':10} {'time (s)':>9} {'x faster':>9} {'peak MiB':>9} {'x leaner':>9} {'Msamples/s':>10}"
    print(
        f"persp3d projection benchmark; torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(header)
    print("-" * len(header))
    for name, B, V, R, hw, D in sizes:
        for backward in (False, True):
            base = None
            for method in args.methods:
                res = run_child(
                    [
                        method,
                        str(B),
                        str(V),
                        str(R),
                        str(hw),
                        str(D),
                        "1" if backward else "0",
                        "--repeats",
                        str(args.repeats),
                    ]
                )
                if base is None:
                    base = res
                samples = B * V * hw * hw * D
                row = {
                    "size": name,
                    "B": B,
                    "V": V,
                    "R": R,
                    "hw": hw,
                    "D": D,
                    "pass": "fwd+bwd" if backward else "fwd",
                    "method": method,
                    **res,
                    "speedup_vs_naive": base["seconds"] / res["seconds"],
                    "memory_ratio_vs_naive": base["peak_mib"] / max(res["peak_mib"], 1e-3),
                    "msamples_per_s": samples / res["seconds"] / 1e6,
                }
                rows.append(row)
                print(
                    f"{name:26} {row['pass']:8} {method:10} {res['seconds']:9.3f} "
                    f"{row['speedup_vs_naive']:9.2f} {res['peak_mib']:9.1f} "
                    f"{row['memory_ratio_vs_naive']:9.1f} {row['msamples_per_s']:10.1f}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"torch": torch.__version__, "cpus": os.cpu_count(), "rows": rows}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
