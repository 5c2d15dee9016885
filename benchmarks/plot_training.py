"""Learning curves of training runs: validation PSNR against steps and against CPU-core hours.

    python benchmarks/plot_training.py RUN_DIR [RUN_DIR ...] --out docs/learning_curves.png [--json curves.json]
        [--previous curves.json]

Each RUN_DIR is a ``napari-diffir train --out`` folder (its ``log.jsonl``). Runs that continue
one another (a fine-tune started with ``--init`` from the previous run's weights) are drawn as
one curve per model name when ``NAME=DIR1,DIR2`` is given: steps and hours add up in that order.
Each later run continues from the checkpoint it was initialised with (its card's
``initialised_from``). Hours are the runs' own wall time on one thread, i.e. CPU-core hours.
``--previous`` keeps the curves of an earlier ``--json`` (run folders do not outlive the
machine they trained on): they are drawn first, and a NAME given again replaces its curve.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_curve(run_dirs: list[Path]) -> list[dict]:
    """Validation points of consecutive runs, each run offset to where its weights came from.

    A run started with ``--init`` from an earlier run's best checkpoint continues that run's
    curve at the step (and wall time) of that checkpoint, read from its card's
    ``initialised_from``, not at the earlier run's last validation; without that record, at the
    last validation. Steps and hours are those of the weights' own history; hours an earlier run
    spent past the checkpoint taken are not on the curve (:func:`spent_hours` counts them).
    """
    points: list[dict] = []
    start = {"step": 0.0, "hours": 0.0}
    for i, d in enumerate(run_dirs):
        if i and points:
            init = _card(d).get("initialised_from", {}).get("training", {})
            if "steps" in init and "wall_time_s" in init:
                start = {"step": start["step"] + init["steps"], "hours": start["hours"] + init["wall_time_s"] / 3600}
            else:
                start = {"step": points[-1]["step"], "hours": points[-1]["hours"]}
        for r in _vals(d):
            points.append({"step": start["step"] + r["step"], "hours": start["hours"] + r["wall_time_s"] / 3600,
                           "psnr": r["psnr"], "run": d.name})
    return points


def spent_hours(run_dirs: list[Path]) -> float:
    """Wall hours of all the runs (one thread each: CPU-core hours), tails past a taken checkpoint included."""
    return sum(json.loads((d / "state.json").read_text())["wall_time"] for d in run_dirs
               if (d / "state.json").is_file()) / 3600


def _vals(d: Path) -> list[dict]:
    rows = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == "val"]


def _card(d: Path) -> dict:
    for name in ("final.json", "best.json"):
        if (d / name).is_file():
            return json.loads((d / name).read_text())
    return {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="RUN_DIR or NAME=RUN_DIR1,RUN_DIR2")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--json", help="also write the curves as JSON")
    p.add_argument("--previous", help="an earlier --json: keep its curves (replaced where a NAME is given again)")
    args = p.parse_args(argv)
    curves, spent = {}, {}
    if args.previous:
        curves = json.loads(Path(args.previous).read_text())
    for spec in args.runs:
        name, _, dirs = spec.rpartition("=")
        paths = [Path(x) for x in dirs.split(",")]
        name = name or paths[-1].parent.name
        curves[name], spent[name] = read_curve(paths), spent_hours(paths)

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
            total = f"{spent[name]:.2f} h spent" if name in spent else "from --previous"
            print(f"{name}: {len(pts)} validations, {pts[-1]['step']:.0f} steps, {pts[-1]['hours']:.2f} h "
                  f"({total}), first {pts[0]['psnr']:.2f} dB, best {best['psnr']:.2f} dB "
                  f"at step {best['step']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(curves, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
