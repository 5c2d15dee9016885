"""Learning curves of training runs: validation PSNR against steps and against CPU-core hours.

    python benchmarks/plot_training.py RUN_DIR [RUN_DIR ...] --out docs/learning_curves.png [--json curves.json]

Each RUN_DIR is a ``napari-diffir train --out`` folder (its ``log.jsonl``). Runs that continue
one another (a fine-tune started with ``--init`` from the previous run's weights) are drawn as
one curve per model name when ``NAME=DIR1,DIR2`` is given: steps and hours add up in that order.
Hours are the runs' own wall time on one thread, i.e. CPU-core hours.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_curve(run_dirs: list[Path]) -> list[dict]:
    """Validation points of consecutive runs, with steps and hours offset by the earlier runs."""
    points: list[dict] = []
    step0 = hours0 = 0.0
    for d in run_dirs:
        rows = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines() if line.strip()]
        vals = [r for r in rows if r.get("event") == "val"]
        for r in vals:
            points.append({"step": step0 + r["step"], "hours": hours0 + r["wall_time_s"] / 3600,
                           "psnr": r["psnr"], "run": d.name})
        if vals:
            step0, hours0 = points[-1]["step"], points[-1]["hours"]
    return points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="RUN_DIR or NAME=RUN_DIR1,RUN_DIR2")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--json", help="also write the curves as JSON")
    args = p.parse_args(argv)
    curves = {}
    for spec in args.runs:
        name, _, dirs = spec.rpartition("=")
        paths = [Path(x) for x in dirs.split(",")]
        curves[name or paths[-1].parent.name] = read_curve(paths)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 2, figsize=(10, 3.2 * len(curves)), squeeze=False)
    for row, (name, pts) in zip(axes, curves.items()):
        for ax, key, label in ((row[0], "step", "training steps"), (row[1], "hours", "CPU-core hours")):
            ax.plot([q[key] for q in pts], [q["psnr"] for q in pts], marker=".")
            ax.set_xlabel(label)
            ax.set_ylabel("validation PSNR (dB)")
            ax.set_title(name)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    for name, pts in curves.items():
        if pts:
            best = max(pts, key=lambda q: q["psnr"])
            print(f"{name}: {len(pts)} validations, {pts[-1]['step']:.0f} steps, {pts[-1]['hours']:.2f} h, "
                  f"first {pts[0]['psnr']:.2f} dB, best {best['psnr']:.2f} dB at step {best['step']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(curves, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
