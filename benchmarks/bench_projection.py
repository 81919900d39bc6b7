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

``--fit`` measures the fused CPU kernels at one volume per call, as ``fit_volume`` calls
them (B=1, V=11, 64^3 and its R/2 stage 32^3, 160 x 120, D = 1.5 R), and at 8 volumes,
forward and forward + backward, max and absorption, on a fit-like, a random and a binary
volume, against the frozen pre-change kernels of ``benchmarks/_baseline`` (commit 8518479)
in the same run, old and new alternated in fresh subprocesses; then one default 64^3 fit
with each. ``--omp-check`` measures training steps/s and projection time with persp3d's own
OpenMP policy (no variable), with ``OMP_WAIT_POLICY=PASSIVE`` set outside, and with torch
imported first (the old default).

    python benchmarks/bench_projection.py --fit                    # ~10 min on 2 busy cores
    python benchmarks/bench_projection.py --fit --volumes fit --no-fit-run
    python benchmarks/bench_projection.py --omp-check --omp-rounds 3
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

# persp3d before torch: it sets OMP_WAIT_POLICY, as for every entry point.
import persp3d  # noqa: F401

# isort: split
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


def run_child(
    args: list[str],
    timeout: float,
    passive: bool = False,
    flag: str = "--child",
    malloc_threshold: bool = True,
) -> dict:
    """Run this script with ``flag`` and ``args`` in a fresh process; its last stdout line
    is the JSON result (or ``{"skipped": why}``)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if malloc_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        out = subprocess.run(
            [sys.executable, __file__, flag, *args],
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
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-kernel":
        return _child_kernel(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--fit", action="store_true", help="one-volume kernels and a whole fit, old vs new"
    )
    parser.add_argument("--volumes", nargs="+", default=["fit", "rand"], choices=VOLUME_KINDS)
    parser.add_argument("--no-fit-run", action="store_true", help="--fit without the fits")
    parser.add_argument(
        "--omp-check", action="store_true", help="steps/s with and without OMP_WAIT_POLICY"
    )
    parser.add_argument("--omp-rounds", type=int, default=3)
    parser.add_argument("--omp-steps", type=int, default=10)
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

    if args.fit or args.omp_check:
        rows = run_fit_benchmark(args) if args.fit else []
        if args.omp_check:
            rows += run_omp_check(args)
        if args.json:
            suffix = "_fit" if args.fit else "_omp"
            path = os.path.splitext(args.json)[0] + suffix + ".json"
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            meta = {
                "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "load_average_end": os.getloadavg()[0],
                "versions": _versions(),
            }
            with open(path, "w") as f:
                json.dump({**meta, "rows": rows}, f, indent=2)
            print(f"wrote {path}")
        return 0

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


# -- one-volume kernels against the frozen baseline (--fit), OpenMP policy (--omp-check) ----
# (B, V, R, h, w, D): the fit's finest stage (64^3, D = 1.5 R), its R/2 stage, 8 volumes.
FIT_SIZES = [(1, 11, 64, 120, 160, 96), (1, 11, 32, 120, 160, 48), (8, 11, 64, 120, 160, 96)]
VOLUME_KINDS = ("fit", "rand", "binary")


def _fit_like_volume(R: int, kind: str, B: int = 1) -> torch.Tensor:
    """``(B, 1, R, R, R)`` test volumes: ``fit`` looks like a fitted occupancy (a procedural
    chair's voxels as logits -8.5 / +8, box-blurred, through a sigmoid: 2e-4 outside, near 1
    inside, as ``fit_volume`` leaves it), ``rand`` is uniform noise (the default
    benchmark's), ``binary`` the chair's 0/1 voxels (ties for max)."""
    if kind == "rand":
        torch.manual_seed(0)
        return torch.rand(B, 1, R, R, R)
    from persp3d.datasets.shapes import make_shape

    voxels = torch.from_numpy(make_shape("chair", 3).voxels(R)).float().reshape(1, 1, R, R, R)
    if kind == "binary":
        return voxels.expand(B, 1, R, R, R).contiguous()
    logits = torch.nn.functional.avg_pool3d(voxels * 16.5 - 8.5, 3, stride=1, padding=1)
    return torch.sigmoid(logits).expand(B, 1, R, R, R).contiguous()


def _kernel_module(which: str):
    """``new``: persp3d's fused CPU kernels; ``old``: the frozen copy (benchmarks/_baseline)."""
    if which == "old":
        sys.path.insert(0, ROOT)
        from benchmarks._baseline import cpu as module
    else:
        from persp3d.kernels import cpu as module
    return module


def measure_kernel(which, B, V, R, h, w, D, mode, backward, kind, repeats) -> dict:
    """Child: seconds (median wall, and CPU) per fused call of one kernel version."""
    import persp3d as p3
    from persp3d.projection import _prepare

    module = _kernel_module(which)
    cams = p3.orbit_cameras(n_views=V, image_size=(h, w), elevation=20.0)
    volume = _fit_like_volume(R, kind, B)
    frustum, per_volume = _prepare(volume, cams, None, D, None, "depth", None, None)
    geometry = (
        frustum.origins.reshape(-1, 3),
        frustum.directions.reshape(-1, h, w, 3),
        frustum.depths.reshape(-1, D),
    )

    def call():
        v = volume.clone().requires_grad_(backward)
        out = module.fused_project_cpu(v, *geometry, per_volume, mode)
        if backward:
            out.backward(torch.ones_like(out))

    call()  # warm-up (numba's cache)
    times, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        call()
        times.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds() - c0)
    times.sort()
    cpus.sort()
    return {"seconds": times[len(times) // 2], "cpu_seconds": cpus[len(cpus) // 2]}


def measure_fit(which: str) -> dict:
    """Child: one default ``fit_volume`` (64^3, 11 views of 160 x 120 of a procedural chair)
    with the current kernels or the frozen baseline patched in."""
    import persp3d as p3
    import persp3d.kernels.cpu as current

    if which == "old":
        current.fused_project_cpu = _kernel_module("old").fused_project_cpu
    voxels = _fit_like_volume(64, "binary")
    cams = p3.orbit_cameras(n_views=11, image_size=(120, 160), elevation=20.0)
    with torch.no_grad():
        sil = p3.project(voxels, cams, depth_samples=128, backend="reference")[0]
    sil = (sil > 0.5).float()  # (11, 1, 120, 160)
    p3.fit_volume(cams, sil, 64, steps=[1, 1])  # warm-up
    t0, c0 = time.perf_counter(), _cpu_seconds()
    result = p3.fit_volume(cams, sil, 64)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    occupied = result.occupancy > 0.5
    iou = (occupied & (voxels > 0.5)).sum() / (occupied | (voxels > 0.5)).sum()
    return {"seconds": seconds, "cpu_seconds": cpu, "misfit": result.misfit, "iou": float(iou)}


def run_fit_benchmark(args) -> list[dict]:
    """One-volume projection (and 8 volumes) and a whole fit, baseline vs current kernels,
    each in a fresh subprocess, alternating old / new so that both see the same load."""
    print(
        f"fused CPU kernels: frozen baseline (benchmarks/_baseline, commit 8518479) vs current; "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f}; Msamples/s = B V h w D / median wall time"
    )
    header = (
        f"{'size':30} {'volume':7} {'mode':10} {'pass':8} {'old Ms/s':>9} {'new Ms/s':>9} "
        f"{'x wall':>7} {'x cpu':>7}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for B, V, R, h, w, D in FIT_SIZES:
        name = f"B{B} V{V} {R}^3 {w}x{h} D{D}"
        samples = B * V * h * w * D
        for kind in args.volumes:
            for mode in ("absorption", "max"):
                for backward in (False, True):
                    res = {}
                    for which in ("old", "new"):
                        child = ["kernel", which, B, V, R, h, w, D, mode, int(backward), kind]
                        res[which] = run_child_args(
                            [*map(str, child), "--repeats", str(args.repeats)], args.timeout
                        )
                    row = {"size": name, "volume": kind, "mode": mode, "samples": samples}
                    row["pass"] = "fwd+bwd" if backward else "fwd"
                    row.update({f"{k}_{m}": v for k, r in res.items() for m, v in r.items()})
                    line = f"{name:30} {kind:7} {mode:10} {row['pass']:8} "
                    if "seconds" in res["old"] and "seconds" in res["new"]:
                        row["old_msamples_per_s"] = samples / res["old"]["seconds"] / 1e6
                        row["new_msamples_per_s"] = samples / res["new"]["seconds"] / 1e6
                        row["ratio_wall"] = res["old"]["seconds"] / res["new"]["seconds"]
                        row["ratio_cpu"] = res["old"]["cpu_seconds"] / res["new"]["cpu_seconds"]
                        line += (
                            f"{row['old_msamples_per_s']:9.1f} {row['new_msamples_per_s']:9.1f} "
                            f"{row['ratio_wall']:7.2f} {row['ratio_cpu']:7.2f}"
                        )
                    else:
                        line += f"skipped: {res['old'].get('skipped') or res['new'].get('skipped')}"
                    rows.append(row)
                    print(line, flush=True)
    if not args.no_fit_run:
        fits = {w: run_child_args(["fit", w], args.timeout) for w in ("old", "new")}
        for which, res in fits.items():
            rows.append({"fit": which, **res})
            if "seconds" in res:
                print(
                    f"fit_volume 64^3, 11 views 160x120, defaults, {which} kernels: "
                    f"{res['seconds']:.1f} s wall, {res['cpu_seconds']:.1f} s CPU, misfit "
                    f"{res['misfit']:.5f}, IoU vs voxels {res['iou']:.3f}"
                )
            else:
                print(f"fit ({which}): {res.get('skipped')}")
        if all("seconds" in r for r in fits.values()):
            print(
                f"fit: {fits['old']['seconds'] / fits['new']['seconds']:.2f}x faster (wall), "
                f"{fits['old']['cpu_seconds'] / fits['new']['cpu_seconds']:.2f}x (CPU)"
            )
    return rows


_OMP_CHILD = r"""
import os, sys
if {torch_first}:
    import torch
sys.path.insert(0, {here!r})
import bench_projection as bench
print(bench.json.dumps(bench.measure_policy({steps})))
"""


def measure_policy(steps: int) -> dict:
    """Child: steps/s of a short synthetic training loop (the default model, batch 16 with 8
    per-object views, max projection to 32 x 32 at D = 48, as ``persp3d train``) and the
    fused projection's fwd+bwd time (B=1, V=11, 64^3, 160 x 120, D=96, absorption)."""
    import persp3d as p3
    from persp3d.models import OccupancyPredictor

    torch.manual_seed(0)
    model = OccupancyPredictor()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    B, V = 16, 8
    base = p3.orbit_cameras(n_views=V, image_size=(32, 32))
    cams = p3.Cameras(
        base.K.expand(B, V, 3, 3), base.R.expand(B, V, 3, 3), base.t.expand(B, V, 3), (32, 32)
    )
    images = torch.rand(B, 3, 64, 64)
    target = (torch.rand(B, V, 1, 32, 32) > 0.5).float()

    def step():
        occupancy = torch.sigmoid(model(images))
        sil = p3.project(occupancy, cams, depth_samples=48, mode="max")
        loss = (sil - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    steps_per_s = steps / (time.perf_counter() - t0)
    one = measure_kernel("new", 1, 11, 64, 120, 160, 96, "absorption", True, "fit", 3)
    return {
        "policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "torch_first": bool(getattr(p3, "_TORCH_FIRST", False)),
        "steps_per_s": steps_per_s,
        "projection_seconds": one["seconds"],
    }


def run_omp_check(args) -> list[dict]:
    """Training steps/s and one-volume projection time under three start-ups, alternated
    ``--omp-rounds`` times: persp3d imported first with no variable (the default as shipped),
    ``OMP_WAIT_POLICY=PASSIVE`` set outside, and torch imported first with no variable (what
    every entry point did before persp3d set the policy itself)."""
    cases = {
        "default (no variable)": (False, None),
        "PASSIVE set outside": (False, "PASSIVE"),
        "torch first, no variable": (True, None),
    }
    print(f"OpenMP wait policy check: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    results: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(args.omp_rounds):
        for name, (torch_first, policy) in cases.items():
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            code = _OMP_CHILD.format(torch_first=torch_first, here=HERE, steps=args.omp_steps)
            try:
                out = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, env=env,
                    timeout=args.timeout,
                )  # fmt: skip
                results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError):
                print(f"{name}: failed: {(out.stderr or '?').strip()[-300:]}")
    rows = []
    print(f"{'start-up':28} {'policy seen':12} {'train steps/s':>14} {'projection s':>13}")
    for name, runs in results.items():
        if not runs:
            continue
        steps = sorted(r["steps_per_s"] for r in runs)[len(runs) // 2]
        proj = sorted(r["projection_seconds"] for r in runs)[len(runs) // 2]
        rows.append({"case": name, "runs": runs, "steps_per_s": steps, "projection_seconds": proj})
        print(f"{name:28} {runs[0]['policy']:12} {steps:14.2f} {proj:13.3f}")
    return rows


def run_child_args(args: list[str], timeout: float) -> dict:
    """One ``--child-kernel`` measurement (old vs new kernel) in a fresh process."""
    return run_child(args, timeout, flag="--child-kernel", malloc_threshold=False)


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


def _child_kernel(argv: list[str]) -> int:
    """``kernel which B V R h w D mode backward volume [--repeats n]`` or ``fit which``."""
    repeats = 3
    if "--repeats" in argv:
        i = argv.index("--repeats")
        repeats = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    if argv[0] == "fit":
        res = measure_fit(argv[1])
    else:
        which, B, V, R, h, w, D, mode, backward, kind = argv[1:]
        res = measure_kernel(
            which, int(B), int(V), int(R), int(h), int(w), int(D), mode, backward == "1",
            kind, repeats,
        )  # fmt: skip
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
