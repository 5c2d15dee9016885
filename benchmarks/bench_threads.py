"""Threads on a busy machine: 1 thread against torch's default, with and without passive OpenMP.

Each configuration runs in a fresh process, because OpenMP reads ``OMP_WAIT_POLICY`` once, when
torch is imported:

* ``package``: as napari-diffir runs by default (the package sets ``OMP_WAIT_POLICY=PASSIVE``
  on import when the variable is unset);
* ``spinning``: torch imported before napari-diffir with the variable unset, i.e. the OpenMP
  runtime's default (worker threads spin at barriers) — how the engine ran before.

For each workload and configuration the child restores a held-out image (scikit-image
``camera``) ``--repeats`` times after a warm-up; the table gives the medians of wall and process
CPU seconds and the wall time relative to 1 thread in the same configuration. The cores must be
busy with other work for the effect to show: ``--load N`` starts N busy-looping processes for
the duration (ended when the script ends), in addition to whatever else runs.

    python benchmarks/bench_threads.py --threads 1 2 --repeats 5
    python benchmarks/bench_threads.py --load 2 --json threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKLOADS = {
    # name: (restorer, restore() keywords, input side)
    "diffir-denoise": ("diffir-denoise", dict(tile_size=None), 192),
    "srdiff-sr4": ("srdiff-sr4", dict(tile_size=None, steps=4, seed=0), 48),
}

CHILD = r"""
import json, os, sys, time
mode, restorer, kwargs = sys.argv[1], sys.argv[3], json.loads(sys.argv[6])
threads, side, repeats = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
if mode == "spinning":
    import torch  # first: the package cannot choose the wait policy any more
import numpy as np
from skimage import data
import napari_diffir as nd
import torch
torch.set_num_threads(threads)
cam = data.camera().astype(np.float32) / 255
x = cam[100:100 + side, 150:150 + side]
x = x + np.random.default_rng(0).normal(0, 25 / 255, x.shape).astype(np.float32)
nd.restore(x[:64, :64], restorer, device="cpu", normalize="none", **kwargs)  # warm-up
rows = []
for _ in range(repeats):
    w, c = time.perf_counter(), time.process_time()
    nd.restore(x, restorer, device="cpu", normalize="none", **kwargs)
    rows.append((time.perf_counter() - w, time.process_time() - c))
print(json.dumps(dict(policy=os.environ.get("OMP_WAIT_POLICY"), threads=torch.get_num_threads(), rows=rows)))
"""


def child(mode: str, threads: int, workload: str, repeats: int) -> dict:
    restorer, kwargs, side = WORKLOADS[workload]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(threads), restorer, str(side), str(repeats), json.dumps(kwargs)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_load(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--modes", nargs="+", default=["package", "spinning"], choices=["package", "spinning"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--load", type=int, default=0, help="busy-looping processes to start meanwhile")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    load = start_load(args.load)
    rows = []
    try:
        for workload in args.workloads:
            for mode in args.modes:
                for threads in args.threads:
                    r = child(mode, threads, workload, args.repeats)
                    rows.append(dict(workload=workload, mode=mode, policy=r["policy"], threads=r["threads"],
                                     wall_s=statistics.median(w for w, _ in r["rows"]),
                                     cpu_s=statistics.median(c for _, c in r["rows"]), runs=r["rows"]))
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    one = {(r["workload"], r["mode"]): r["wall_s"] for r in rows if r["threads"] == 1}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end, "
          f"{args.load} extra busy processes, medians of {args.repeats}")
    print(f"{'workload':<15} {'mode':<9} {'OMP_WAIT_POLICY':<16} {'threads':>7} {'wall s':>8} {'cpu s':>8} {'wall / 1 thread':>16}")
    for r in rows:
        base = one.get((r["workload"], r["mode"]))
        rel = f"{r['wall_s'] / base:16.2f}" if base else f"{'':>16}"
        print(f"{r['workload']:<15} {r['mode']:<9} {r['policy'] or '(unset)':<16} {r['threads']:>7} "
              f"{r['wall_s']:8.2f} {r['cpu_s']:8.2f} {rel}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(cores=os.cpu_count(), load=args.load, rows=rows), indent=2))


if __name__ == "__main__":
    main()
