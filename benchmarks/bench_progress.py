"""How well a tiled DiffIR run's progress fraction tracks its CPU time.

The plane statistics are most of a tiled DiffIR run, so the engine counts them in the progress
total at their estimated cost (``Restorer.plane_statistics_cost``). For each bundled model this
restores a random plane tiled, records the process CPU time of every progress report, and
prints the share of the bar and the share of the time the statistics took (before the first
tile), and the largest gap between the bar and the time over the run.

    OMP_NUM_THREADS=1 python benchmarks/bench_progress.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

CASES = [("diffir-denoise", 512, 256), ("diffir-sr4", 160, 64)]  # (model, plane side, tile)


def measure(name: str, size: int, tile: int) -> dict:
    from napari_diffir import restore

    x = np.random.default_rng(0).random((size, size), dtype=np.float32)
    rows: list[tuple[float, float, float, str]] = []
    t0 = time.process_time()
    restore(x, name, tile_size=tile, seed=0, progress=lambda d, t, m: rows.append((time.process_time() - t0, d, t, m)))
    seconds, total = rows[-1][0], rows[-1][2]
    first = next(r for r in rows if "tile 1/" in r[3])
    return {"model": name, "plane": size, "tile": tile, "cpu_s": round(seconds, 2),
            "statistics_bar_share": round(first[1] / total, 3), "statistics_time_share": round(first[0] / seconds, 3),
            "largest_gap": round(max(abs(d / total - s / seconds) for s, d, _, _ in rows), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    rows = [measure(*case) for case in CASES]
    print("| model | plane | tile | CPU s | statistics: share of bar | share of time | largest bar-time gap |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['plane']}² | {r['tile']} | {r['cpu_s']} | {r['statistics_bar_share']} | "
              f"{r['statistics_time_share']} | {r['largest_gap']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
