"""Time and peak memory of persp3d's projection against the naive baseline, in one run.

Methods, all at the same cameras and the same samples per ray:
    naive      ``grid_sample`` on the full frustum grid, then ``amax`` along depth
               (``persp3d.naive_project``): the baseline every ratio refers to.
    pytorch3d  PyTorch3D's ``VolumeRenderer`` (``NDCMultinomialRaysampler`` at the same
               depths, ``AbsorptionOnlyRaymarcher``) over ``Volumes`` that fill the same box,
               one volume copy per camera as PyTorch3D requires; it computes the absorption
               projection (equal to persp3d's ``mode="absorption"`` to 1e-6).
    reference  persp3d's chunked pure-PyTorch path (``backend="reference"``).
    fused      persp3d's fused ray-walking kernel (``backend="fused"``: numba on the CPU).

Each (method, size, pass) runs in a fresh subprocess: one warm-up call at full size (thread
pools, allocator, numba's kernel cache), then the peak resident memory is reset
(``/proc/self/clear_refs``) and ``repeats`` timed calls are made; the time is their median
and the peak is the growth of the resident set over them. Every figure is also given as a
ratio to the naive baseline of the same size, measured in the same run; the CPU time of all
the child's threads (spin-waiting included) is recorded too. The table is printed, the rows
are written as JSON and time is plotted against samples (PNG).

torch's idle OpenMP threads spin for a while after each parallel op; on a busy machine that
spinning competes with the fused kernel's own threads. ``--omp-passive`` runs every method
with ``OMP_WAIT_POLICY=PASSIVE`` to show the difference.

    python benchmarks/bench_projection.py                     # default sizes (~17 min, 2 cores)
    python benchmarks/bench_projection.py --sizes quick       # one small size
    python benchmarks/bench_projection.py --sizes full        # the issue's whole grid
    python benchmarks/bench_projection.py --size 8 24 32 64 64   # one size (the issue's target)
    python benchmarks/bench_projection.py --methods naive fused --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (B, V, R, hw, D): batch, views, volume resolution R^3, silhouettes hw x hw, depth samples.
TARGET = (8, 24, 32, 64, 64)  # the target size
SIZES = {
    "quick": [(2, 8, 32, 32, 32)],
    "default": [
        TARGET,
        (1, 24, 32, 32, 32),
        (8, 24, 32, 32, 64),
        (32, 24, 32, 32, 32),
        (8, 24, 32, 64, 128),
        (1, 24, 64, 128, 128),
    ],
    # PTN's 32^3 volume at 32x32 and 64x64, D = 32, 64, 128, batch 1, 8, 32, then 64^3 and
    # 128^3 volumes at 128x128.
    "full": [(B, 24, 32, hw, D) for hw in (32, 64) for D in (32, 64, 128) for B in (1, 8, 32)]
    + [(1, 24, 64, 128, 128), (8, 24, 64, 128, 128), (1, 24, 128, 128, 128)],
}
METHODS = ["naive", "pytorch3d", "reference", "fused"]
# Methods that hold every sample (and its gradient): skipped above --max-dense-samples.
DENSE = ("naive", "pytorch3d")


def size_name(B: int, V: int, R: int, hw: int, D: int) -> str:
    return f"B{B} V{V} {R}^3 {hw}x{hw} D{D}"


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


def _pytorch3d_call(volume, cams, D: int, backward: bool):
    """PyTorch3D's absorption renderer over the same cameras, box and depth samples."""
    from pytorch3d.renderer import (
        AbsorptionOnlyRaymarcher,
        NDCMultinomialRaysampler,
        VolumeRenderer,
    )
    from pytorch3d.structures import Volumes

    import persp3d as p3

    B = volume.shape[0]
    V = cams.batch_shape[0]
    R = volume.shape[-1]
    h, w = cams.image_size
    z = p3.depth_schedule(*p3.near_far(cams), D)  # (V, D), equal for orbit cameras
    raysampler = NDCMultinomialRaysampler(
        image_width=w,
        image_height=h,
        n_pts_per_ray=D,
        min_depth=float(z[0, 0]),
        max_depth=float(z[0, -1]),
    )
    renderer = VolumeRenderer(raysampler=raysampler, raymarcher=AbsorptionOnlyRaymarcher())
    batched = p3.Cameras(
        cams.K.expand(B, V, 3, 3), cams.R.expand(B, V, 3, 3), cams.t.expand(B, V, 3), (h, w)
    ).to_pytorch3d()  # B * V cameras

    def call():
        v = volume.clone().requires_grad_(backward)
        densities = v.unsqueeze(1).expand(B, V, *v.shape[1:]).reshape(B * V, *v.shape[1:])
        # PyTorch3D's volume locator maps local +-1 to the corner voxel centres whatever
        # align_corners says: voxel_size 1 / (R - 1) puts grid_sample's faces on the box.
        volumes = Volumes(
            densities=densities,
            voxel_size=1.0 / (R - 1),
            volume_translation=(0.0, 0.0, 0.0),
            align_corners=False,
        )
        images, _ = renderer(cameras=batched, volumes=volumes)  # (B * V, h, w, 1)
        if backward:
            images.sum().backward()

    return call


def measure(
    method: str, B: int, V: int, R: int, hw: int, D: int, backward: bool, repeats: int, mode: str
):
    """Run in the child process: returns seconds per call and peak MiB above the start."""
    import persp3d as p3

    torch.manual_seed(0)
    cams = p3.orbit_cameras(n_views=V, image_size=(hw, hw))
    volume = torch.rand(B, 1, R, R, R)

    if method == "pytorch3d":
        call = _pytorch3d_call(volume, cams, D, backward)
    else:

        def call():
            v = volume.clone().requires_grad_(backward)
            out = p3.project(v, cams, depth_samples=D, mode=mode, backend=method)
            if backward:
                out.sum().backward()

    t0 = time.perf_counter()
    call()  # warm-up: thread pools, allocator, numba's kernels, first-call costs
    first = time.perf_counter() - t0
    exact = _reset_peak()
    start_rss = _status_mib("VmRSS:")
    times = []
    cpu0 = _cpu_seconds()
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    cpu = (_cpu_seconds() - cpu0) / repeats
    peak = _status_mib("VmHWM:") - start_rss
    times.sort()
    return {
        "seconds": times[len(times) // 2],
        "seconds_min": times[0],
        "cpu_seconds": cpu,
        "first_call_seconds": first,
        "peak_mib": peak,
        "peak_exact": exact,
    }


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): a load-independent measure."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(args: list[str], timeout: float, passive: bool = False) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONUNBUFFERED="1")
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"skipped": f"failed: {last[:120]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    markers = {"naive": "o", "pytorch3d": "s", "reference": "^", "fused": "D"}
    for ax, pass_name in zip(axes, ("fwd", "fwd+bwd")):
        for method in markers:
            pts = sorted(
                (r["samples"], r["seconds"])
                for r in rows
                if r["method"] == method and r["pass"] == pass_name and "seconds" in r
            )
            if pts:
                xs, ys = zip(*pts)
                ax.loglog(xs, ys, marker=markers[method], linestyle="none", label=method)
        ax.set_title(f"{pass_name}")
        ax.set_xlabel("samples (B x V x h x w x D)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds per call")
    axes[1].legend()
    fig.suptitle(f"persp3d projection, {os.cpu_count()} CPUs, torch {torch.__version__}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _versions() -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version()}
    for name in ("numba", "pytorch3d"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", choices=sorted(SIZES), default="default")
    parser.add_argument("--quick", action="store_true", help="same as --sizes quick")
    parser.add_argument(
        "--size",
        nargs=5,
        type=int,
        action="append",
        metavar=("B", "V", "R", "HW", "D"),
        help="measure this size instead (repeatable), e.g. --size 8 24 32 64 64",
    )
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--mode", default="max", choices=["max", "absorption"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="run every method with OMP_WAIT_POLICY=PASSIVE (torch's idle OpenMP threads "
        "sleep instead of spinning, which otherwise competes with the fused kernel's threads)",
    )
    parser.add_argument(
        "--max-dense-samples",
        type=float,
        default=2.1e8,
        help="skip naive and pytorch3d above this many samples (they hold them all)",
    )
    parser.add_argument("--json", default=os.path.join(ROOT, "bench_results", "projection.json"))
    parser.add_argument("--plot", default=None, help="PNG path (default: next to --json)")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        method, B, V, R, hw, D, backward = args.child
        res = measure(
            method,
            int(B),
            int(V),
            int(R),
            int(hw),
            int(D),
            backward == "1",
            args.repeats,
            args.mode,
        )
        print(json.dumps(res))
        return 0

    sizes = (
        [tuple(size) for size in args.size]
        if args.size
        else SIZES["quick" if args.quick else args.sizes]
    )
    methods = [m for m in METHODS if m in args.methods]
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    policy = "PASSIVE" if args.omp_passive else os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"persp3d projection benchmark (mode {args.mode!r}; pytorch3d: absorption); "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, OMP_WAIT_POLICY {policy}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'size':26} {'pass':8} {'method':10} {'time (s)':>9} {'cpu (s)':>8} {'x faster':>9} "
        f"{'peak MiB':>9} {'x leaner':>9} {'Msamples/s':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    started = time.time()
    load_start = os.getloadavg()[0]
    for B, V, R, hw, D in sizes:
        name = size_name(B, V, R, hw, D)
        samples = B * V * hw * hw * D
        for backward in (False, True):
            base = None
            for method in methods:
                row = {
                    "size": name,
                    "B": B,
                    "V": V,
                    "R": R,
                    "hw": hw,
                    "D": D,
                    "samples": samples,
                    "pass": "fwd+bwd" if backward else "fwd",
                    "method": method,
                    "mode": "absorption" if method == "pytorch3d" else args.mode,
                }
                if method in DENSE and samples > args.max_dense_samples:
                    res = {"skipped": f"over --max-dense-samples {args.max_dense_samples:.3g}"}
                else:
                    child = [method, str(B), str(V), str(R), str(hw), str(D), str(int(backward))]
                    child += ["--repeats", str(args.repeats), "--mode", args.mode]
                    res = run_child(child, args.timeout, args.omp_passive)
                row.update(res)
                if method == "naive" and "seconds" in res:
                    base = res
                if "seconds" in res:
                    row["msamples_per_s"] = samples / res["seconds"] / 1e6
                    if base is not None:
                        row["speedup_vs_naive"] = base["seconds"] / res["seconds"]
                        row["memory_ratio_vs_naive"] = base["peak_mib"] / max(res["peak_mib"], 1e-3)
                rows.append(row)
                print(_format(row), flush=True)
    elapsed = time.time() - started
    print(
        f"({elapsed / 60:.1f} min; time: median wall-clock seconds per call; cpu: CPU seconds "
        "per call, all threads; x faster / x leaner: naive's time / peak over the method's)"
    )
    _summary(rows)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {
            "command": command,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "mode": args.mode,
            "repeats": args.repeats,
            "omp_wait_policy": policy,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
            "versions": _versions(),
        }
        with open(args.json, "w") as f:
            json.dump({**meta, "rows": rows}, f, indent=2)
        plot = args.plot or os.path.splitext(args.json)[0] + ".png"
        try:
            _plot(rows, plot)
        except ImportError:
            plot = "(matplotlib is not installed)"
        print(f"wrote {args.json} and {plot}")
    return 0


def _format(row: dict) -> str:
    lead = f"{row['size']:26} {row['pass']:8} {row['method']:10}"
    if "seconds" not in row:
        return f"{lead} {'skipped: ' + row['skipped']}"
    speed = row.get("speedup_vs_naive")
    lean = row.get("memory_ratio_vs_naive")
    return (
        f"{lead} {row['seconds']:9.3f} {row['cpu_seconds']:8.3f} "
        f"{'-' if speed is None else f'{speed:.2f}':>9} "
        f"{row['peak_mib']:9.1f} {'-' if lean is None else f'{lean:.1f}':>9} "
        f"{row['msamples_per_s']:10.1f}"
    )


def _summary(rows: list[dict]) -> None:
    """The issue's CPU targets at B=8, V=24, 32^3, 64x64, D=64, forward + backward."""
    target = size_name(*TARGET)
    for row in rows:
        if row["size"] == target and row["pass"] == "fwd+bwd" and row["method"] == "fused":
            if "speedup_vs_naive" in row:
                print(
                    f"target ({target}, fwd+bwd, fused vs naive): "
                    f"{row['speedup_vs_naive']:.1f}x faster (goal >= 10x), "
                    f"{row['memory_ratio_vs_naive']:.1f}x less peak memory (goal >= 20x)"
                )


if __name__ == "__main__":
    sys.exit(main())
