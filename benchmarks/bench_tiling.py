"""Tiled restoration of 512² → 4096² uint16 images: throughput, peak memory, linearity.

Every (restorer, size, mode) runs in its own Python process. The restorer is built and warmed
up on a small image first and the test image is made, then the peak resident set size is reset
(Linux ``/proc/self/clear_refs``) and measured over the run alone: it includes the interpreter,
torch, the model and the input array, but not the making of the test image. Model loading is
not timed. Modes:
``memory`` is ``napari_diffir.restore`` on a numpy array (the widget and ``restore`` CLI path);
``stream`` is ``restore_file`` from a TIFF to an OME-Zarr block by block (the big-data CLI
path), whose memory should not grow with the image. Prints a table and a linearity check (time
per megapixel should not grow with the image), optionally writes JSON and a plot.

    python benchmarks/bench_tiling.py                      # tv and lanczos (+ bundled models)
    python benchmarks/bench_tiling.py --restorers tv --sizes 512 1024 --json tiling.json
    python benchmarks/bench_tiling.py --modes memory stream --plot docs/images/perf_tiling.png
    python benchmarks/bench_tiling.py --restorers diffir --weights ckpt.pth --sizes 512 1024
    python benchmarks/bench_tiling.py --restorers diffir-denoise --sizes 4096 --modes stream --threads 2 \
        --trace rss.tsv                                    # RSS over time, kept if the run is stopped
    python benchmarks/bench_tiling.py --restorers diffir-denoise --sizes 1024 --planes 2 --modes stream --threads 2
                                                           # a (2, 1024, 1024) ZYX stack: two planes at once

Targets (issue 12) at 4096² with the default tile size: peak RSS below 1.5 GiB in memory, below
2 GiB streamed with 2 workers (``--threads 2``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

SIZES = (512, 1024, 2048, 4096)
LIMIT_GIB = {"memory": 1.5, "stream": 2.0}


def _image(size: int):
    """A uint16 fluorescence-like image: smooth blobs plus Poisson-ish noise (deterministic)."""
    import numpy as np

    rng = np.random.default_rng(size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 800 + 600 * np.sin(9 * x) * np.cos(7 * y) + 400 * np.sin(23 * (x + y))
    noise = rng.normal(0, 60, (size, size)).astype(np.float32)
    return np.clip(base + noise + 1000, 0, 65535).astype(np.uint16)


def child(args) -> dict:
    """One measurement in this process (called with --child)."""
    import numpy as np
    import torch

    import napari_diffir as nd

    torch.set_num_threads(args.threads or torch.get_num_threads())
    opts = dict(kv.split("=", 1) for kv in args.option or [])
    restorer = nd.get_restorer(args.restorers[0], **({"weights": args.weights} if args.weights else {}), **opts)
    nd.restore(_image(256), restorer, seed=0)  # warm-up: lazy imports, kernels, model on device
    img = _image(args.size)
    if args.planes > 1:  # a ZYX stack: the planes differ (rolled), so no restoration is reused
        img = np.stack([np.roll(img, 37 * k, axis=1) for k in range(args.planes)])
    axes = {"axes": "ZYX"} if args.planes > 1 else {}
    if args.trace:
        _start_trace(args.trace)
    cpu0 = _cpu_seconds()
    if args.mode == "stream":
        import tempfile

        import tifffile

        from napari_diffir.batch import restore_file

        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "in.tif")
            tifffile.imwrite(src, img)
            del img
            windowed = _reset_peak_rss()
            rss_before = _rss_mib()
            t0 = time.perf_counter()
            restore_file(src, os.path.join(tmp, "out.ome.zarr"), restorer, seed=0, output_dtype="input",
                         progress=False, workers=args.threads, **axes)
            seconds = time.perf_counter() - t0
    else:
        windowed = _reset_peak_rss()
        rss_before = _rss_mib()
        t0 = time.perf_counter()
        out = nd.restore(img, restorer, seed=0, output_dtype="input", **axes)
        seconds = time.perf_counter() - t0
        assert out.shape[-1] == args.size * restorer.info.scale and np.isfinite(out).all()
        del out
    cpu = _cpu_seconds() - cpu0
    from napari_diffir.engine.plan import plan

    shape_only = np.broadcast_to(np.uint16(0), (args.size, args.size))  # no memory: the run's peak stays its own
    tile = plan(shape_only, restorer).tile  # what the run used: "auto" may take a small plane whole
    return {
        "restorer": restorer.info.name, "mode": args.mode, "size": args.size, "planes": args.planes,
        "megapixels": args.planes * args.size**2 / 1e6,
        "scale": restorer.info.scale, "seconds": seconds, "mp_per_s": args.planes * args.size**2 / 1e6 / seconds,
        "peak_rss_mib": _peak_rss_mib(), "rss_before_run_mib": rss_before, "peak_is_run_only": windowed,
        "tile": tile, "threads": torch.get_num_threads(), "cpu_seconds": cpu,
        "work_ratio": _work_ratio(restorer.info, args.size, tile),
    }


def _start_trace(path: str, every: float = 2.0) -> None:
    """Append ``seconds  RSS MiB  peak MiB  tiles started`` to ``path`` every ``every`` s (a
    daemon thread; flushed per line, so a stopped run keeps its trace). Tiles are counted in
    streamed runs (dask tile tasks); while a tiled DiffIR run's count is 0 it computes the plane
    statistics."""
    import threading

    from napari_diffir.engine.lazy import block_stats

    t0 = time.perf_counter()
    fh = open(path, "w", buffering=1)
    fh.write("seconds\trss_mib\tpeak_mib\ttiles_started\n")

    def sample() -> None:
        while True:
            fh.write(f"{time.perf_counter() - t0:.1f}\t{_rss_mib():.0f}\t{_peak_rss_mib():.0f}\t"
                     f"{block_stats()['blocks']}\n")
            time.sleep(every)

    threading.Thread(target=sample, daemon=True).start()


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): robust against other load."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _work_ratio(info, size: int, tile: int) -> float:
    """Pixels the model's tiles compute / image pixels (the tile overlaps). Streaming restores the
    same tiles as memory (the engine's tiling of the whole plane);
    DiffIR's plane statistics (about 1.5 forwards of a plane taking several tiles) come on top."""
    from napari_diffir.engine.tiling import plane_tiling

    tiles = plane_tiling(size, size, tile, info.tile_overlap, info.multiple_of, info.min_size, 1).tiles
    return sum(x.h * x.w for x in tiles) / size**2


def _reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: VmHWM reset through /proc/self/clear_refs)."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """Peak RSS since the last reset (VmHWM), else since the process started (getrusage)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def _rss_mib() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _restorers(requested):
    if requested:
        return requested
    import napari_diffir as nd

    bundled = [i.name for i in nd.list_restorers() if i.weights and i.source == "napari-diffir (built-in)"]
    return ["tv", "lanczos", *bundled]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--restorers", nargs="+", help="restorer names (default: tv, lanczos and bundled models)")
    p.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    p.add_argument("--weights", help="checkpoint for a restorer that needs one")
    p.add_argument("--option", "-o", action="append", help="restorer option NAME=VALUE")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--planes", type=int, default=1, help="restore a ZYX stack of this many planes (default 1: YX)")
    p.add_argument("--modes", nargs="+", default=["memory"], choices=("memory", "stream"),
                   help="in-memory restore() and/or streamed restore_file() (default: memory)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--trace", help="write each run's RSS over time to this file (one run: give one size and mode)")
    p.add_argument("--plot", help="write a PNG plot (time and peak RSS vs pixels) here (needs matplotlib)")
    p.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    rows = []
    runs = [(n, m, z) for n in _restorers(args.restorers) for m in args.modes for z in args.sizes]
    for name, mode, size in runs:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--size", str(size), "--restorers", name,
               "--mode", mode]
        for flag, value in (("--weights", args.weights), ("--threads", args.threads), ("--trace", args.trace),
                            ("--planes", args.planes)):
            if value is not None:
                cmd += [flag, str(value)]
        for kv in args.option or []:
            cmd += ["--option", kv]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name} {size}²: failed\n{done.stderr.strip()[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['restorer']:>10} {mode:>6} {size:>5}²  {row['seconds']:8.2f} s  {row['mp_per_s']:7.2f} MP/s  "
              f"peak RSS {row['peak_rss_mib']:7.0f} MiB", file=sys.stderr, flush=True)
    report = {"machine": _machine(), "rows": rows, "linearity": _linearity(rows)}
    _print_table(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    if args.plot:
        plot(report, args.plot)
    return 0


def plot(report, path: str) -> None:
    """Time and peak RSS against megapixels, one line per restorer and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({(r["restorer"], r["mode"]) for r in report["rows"]}):
        rs = sorted((r for r in report["rows"] if (r["restorer"], r["mode"]) == key), key=lambda r: r["size"])
        mp = [r["megapixels"] for r in rs]
        label = f"{key[0]} ({key[1]})"
        ax_t.plot(mp, [r["seconds"] for r in rs], "o-", label=label)
        ax_m.plot(mp, [r["peak_rss_mib"] for r in rs], "o-", label=label)
    for mode, limit in LIMIT_GIB.items():
        ax_m.axhline(limit * 1024, color="red", ls="--", lw=1, label=f"{limit:g} GiB target ({mode})")
    mps = sorted({r["megapixels"] for r in report["rows"]})
    if len(mps) > 1:  # slope-1 guide: linear time is a parallel line on log-log axes
        t0 = min(r["seconds"] for r in report["rows"] if r["megapixels"] == mps[0])
        ax_t.plot(mps, [t0 * m / mps[0] for m in mps], "k:", lw=1, label="∝ pixels")
    ax_t.set_xscale("log")
    ax_t.set_yscale("log")
    for ax, ylabel in ((ax_t, "time (s)"), (ax_m, "peak RSS (MiB)")):
        ax.set_xlabel("input megapixels (512² … 4096²)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    ax_t.set_title("time vs. pixels (log-log)")
    ax_t.legend(fontsize=7, loc="lower right")
    ax_m.set_title("peak memory")
    ax_m.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _linearity(rows) -> dict:
    """Per restorer: seconds per megapixel at each size, relative to the median; least-squares fit."""
    import numpy as np

    out = {}
    for key in sorted({(r["restorer"], r["mode"]) for r in rows}):
        name = f"{key[0]} ({key[1]})"
        rs = sorted((r for r in rows if (r["restorer"], r["mode"]) == key), key=lambda r: r["size"])
        if len(rs) < 2:
            continue
        mp = np.array([r["megapixels"] for r in rs])
        t = np.array([r["seconds"] for r in rs])
        cpu = [r.get("cpu_seconds") for r in rs]
        work = [r.get("work_ratio") for r in rs]
        per_computed = [c / (m * w) for c, m, w in zip(cpu, mp, work)] if None not in cpu + work else None
        slope, intercept = np.polyfit(mp, t, 1)
        pred = slope * mp + intercept
        r2 = 1 - ((t - pred) ** 2).sum() / max(((t - t.mean()) ** 2).sum(), 1e-12)
        exponent = float(np.polyfit(np.log(mp), np.log(t), 1)[0])  # t ~ pixels**exponent
        out[name] = {"s_per_mp": (t / mp).tolist(), "fit_s_per_mp": float(slope), "fit_offset_s": float(intercept),
                     "r2": float(r2), "exponent": exponent, "cpu_s_per_computed_mp": per_computed}
    return out


def _machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0], "platform": platform.platform()}


def _print_table(report) -> None:
    rows = report["rows"]
    print(f"\nTiled restoration, uint16 input, default tile size "
          f"({report['machine']['cpus']} CPUs, load average {report['machine']['load_avg_1min']:.1f})\n")
    print("| restorer | mode | image | output | tile | computed/image px | time (s) | CPU (s) | MP/s "
          "| RSS before (MiB) | peak RSS (MiB) | under target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        out = r["size"] * r["scale"]
        limit = LIMIT_GIB[r["mode"]]
        ok = f"yes (< {limit:g} GiB)" if r["peak_rss_mib"] < limit * 1024 else f"**no** (> {limit:g} GiB)"
        cpu = f"{r['cpu_seconds']:.1f}" if "cpu_seconds" in r else "–"
        ratio = f"{r['work_ratio']:.2f}" if "work_ratio" in r else "–"
        print(f"| {r['restorer']} | {r['mode']} | {r['size']}² | {out}² | {r['tile']} | {ratio} | "
              f"{r['seconds']:.2f} | {cpu} | {r['mp_per_s']:.2f} | {r['rss_before_run_mib']:.0f} | "
              f"{r['peak_rss_mib']:.0f} | {ok} |")
    print("\nTime vs pixels (t = a·MP + b; exponent of t ~ pixels^k, 1.0 = linear; computed MP counts tile "
          "overlaps):\n")
    print("| restorer | s/MP per size | CPU s per computed MP, per size | a (s/MP) | b (s) | R² | k |")
    print("|---|---|---|---|---|---|---|")
    for name, lin in report["linearity"].items():
        per = ", ".join(f"{v:.2f}" for v in lin["s_per_mp"])
        comp = ", ".join(f"{v:.2f}" for v in lin["cpu_s_per_computed_mp"]) if lin.get("cpu_s_per_computed_mp") else "–"
        print(f"| {name} | {per} | {comp} | {lin['fit_s_per_mp']:.3f} | {lin['fit_offset_s']:.2f} | "
              f"{lin['r2']:.4f} | {lin['exponent']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
