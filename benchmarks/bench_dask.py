"""dask schedulers on a Zarr volume: threads vs. processes vs. a LocalCluster (and in-memory).

Writes a uint16 Zarr volume, then restores it to OME-Zarr with ``restore_file`` (the CLI's
streaming path) under each scheduler, and once in memory for reference. Reports wall time
(including worker start-up, which is what a user waits for), throughput in input megapixels per
second and the peak RSS of the driving process. Prints a table, optionally writes JSON.

    python benchmarks/bench_dask.py
    python benchmarks/bench_dask.py --restorer tv --shape 16 1024 1024 --chunk 256 --json dask.json
    python benchmarks/bench_dask.py --schedulers threads local:2 tcp://scheduler:8786
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

SCHEDULERS = ("threads", "processes", "local:2")


def _volume(path: str, shape, chunks):
    import numpy as np
    import zarr

    rng = np.random.default_rng(0)
    z = zarr.create_array(path, shape=shape, chunks=chunks, dtype="uint16")
    y, x = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32) / shape[1]
    for i in range(shape[0]):
        plane = 1500 + 600 * np.sin(9 * x + i) * np.cos(7 * y) + rng.normal(0, 60, shape[1:])
        z[i] = np.clip(plane, 0, 65535).astype(np.uint16)
    return z


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--restorer", default="lanczos")
    p.add_argument("--weights")
    p.add_argument("--shape", nargs=3, type=int, default=[8, 1024, 1024], metavar=("Z", "Y", "X"))
    p.add_argument("--chunk", type=int, default=256, help="processing block side (Y/X)")
    p.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS))
    p.add_argument("--workers", type=int, default=2, help="threads/processes for the local schedulers")
    p.add_argument("--no-in-memory", action="store_true", help="skip the in-memory reference run")
    p.add_argument("--option", "-o", action="append", help="restorer option NAME=VALUE")
    p.add_argument("--json")
    p.add_argument("--plot", help="write a PNG bar chart of the throughput here (needs matplotlib)")
    args = p.parse_args(argv)
    options = dict(kv.split("=", 1) for kv in args.option or [])

    import napari_diffir as nd
    from napari_diffir.batch import restore_file

    tmp = tempfile.mkdtemp(prefix="bench-dask-")
    rows = []
    try:
        src = os.path.join(tmp, "in.zarr")
        z = _volume(src, tuple(args.shape), (1, args.chunk, args.chunk))
        mp = z.size / 1e6
        if not args.no_in_memory:
            t0 = time.perf_counter()
            nd.restore(z[:], args.restorer, weights=args.weights, options=options, axes="ZYX", seed=0)
            rows.append({"scheduler": "in-memory (numpy)", "seconds": time.perf_counter() - t0})
        for sched in args.schedulers:
            out = os.path.join(tmp, f"out-{len(rows)}.ome.zarr")
            t0 = time.perf_counter()
            result = restore_file(src, out, args.restorer, weights=args.weights, options=options, chunk=args.chunk,
                                  scheduler=sched, workers=args.workers, seed=0, progress=False)
            rows.append({"scheduler": sched, "seconds": time.perf_counter() - t0,
                         "chunks": result.chunks_total})
            shutil.rmtree(out, ignore_errors=True)
            print(f"{sched:>20}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in rows:
        r["mp_per_s"] = mp / r["seconds"]
    report = {
        "restorer": args.restorer, "shape": args.shape, "chunk": args.chunk, "megapixels": mp,
        "workers": args.workers, "peak_rss_driver_mib": _peak_rss_mib(), "rows": rows,
        "machine": {"cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
                    "python": platform.python_version()},
    }
    print(f"\n{args.restorer} on a {'x'.join(map(str, args.shape))} uint16 Zarr volume ({mp:.1f} MP), "
          f"{args.chunk}² blocks, {args.workers} workers; {os.cpu_count()} CPUs, load average "
          f"{report['machine']['load_avg_1min']:.1f}\n")
    print("| scheduler | wall time (s) | input MP/s |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['scheduler']} | {r['seconds']:.2f} | {r['mp_per_s']:.2f} |")
    print(f"\npeak RSS of the driving process: {report['peak_rss_driver_mib']:.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    if args.plot:
        plot([report], args.plot)
    return 0


def plot(reports, path: str) -> None:
    """Throughput per scheduler, one group of bars per report (restorer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["scheduler"] for r in reports[0]["rows"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(reports)
    for i, rep in enumerate(reports):
        vals = [next((r["mp_per_s"] for r in rep["rows"] if r["scheduler"] == n), 0) for n in names]
        ax.bar([k + i * width for k in range(len(names))], vals, width, label=rep["restorer"])
    ax.set_xticks([k + width * (len(reports) - 1) / 2 for k in range(len(names))], names)
    ax.set_ylabel("input megapixels / s")
    shape = "x".join(map(str, reports[0]["shape"]))
    ax.set_title(f"{shape} uint16 Zarr volume, {reports[0]['chunk']}² blocks, wall time incl. start-up")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
