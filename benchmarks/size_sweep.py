"""Model size from quality per training hour: DiffIR denoisers of several widths and depths, same budget.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/size_sweep.py --data DnCNN/.../Train400 builtin:skimage
        builtin:nuclei builtin:timelapse builtin:synthetic --runs runs/size-sweep
        [--sizes d16,d24,d32,d24-deep] [--s1-minutes 8] [--s2-minutes 17] [--json out.json]

Each size trains from scratch the way the bundled denoiser was first trained: stage 1 (CPEN_S1
sees the ground truth) for ``--s1-minutes``, then stage 2 (blind, from stage 1) for
``--s2-minutes``, one thread, the same data, patches, batch, seed and validation images (the
image split of the training sources; no test set is read). ``--max-minutes`` makes the loop fit
its learning-rate schedule to the budget, so every size gets a complete schedule in the same
wall time. The table reports parameters, seconds per step, steps done and the stage-2
validation PSNR over wall time (both stages counted), which is the figure a size is chosen by.

Rerunning the same command resumes: a stage that finished its budget (its run directory holds
``sweep-done``) is not trained again; an interrupted one resumes from its checkpoint and keeps
the schedule fitted at its start. Short budgets favour small models; the curves' slopes at the
end say whether a larger one would overtake with more hours.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

SIZES = {
    # name: (dim, num_blocks, refinement blocks); heads 1,2,4,8 and CPEN width 16 throughout
    "d16": (16, "1,2,2,2", 1),
    "d24": (24, "1,2,2,2", 1),  # the bundled diffir-denoise
    "d32": (32, "1,2,2,2", 1),
    "d24-deep": (24, "2,3,3,4", 2),
}


DONE = "sweep-done"  # written when a stage's budget ran out (final.json is rewritten at every validation)


def _common(args) -> list[str]:
    return ["--task", "denoise", "--scale", "1", "--channels", "1", "--heads", "1,2,4,8", "--ffn", "2.0",
            "--layernorm", "WithBias", "--n-encoder-res", "2", "--n-feats", "16",
            "--data", *args.data, "--n-synthetic", str(args.n_synthetic), "--val-split", "image",
            "--val-fraction", "0.1", "--val-count", "32", "--patch-size", str(args.patch_size),
            "--batch-size", str(args.batch_size), "--seed", "0", "--threads", "1", "--quiet",
            "--amp", "bf16", "--device", "cpu", "--workers", "0", "--steps", "100000"]


def _train(stage_args: list[str], out: Path, minutes: float, val_every: int) -> None:
    if (out / DONE).exists():
        print(f"{out}: done, kept", flush=True)
        return
    cmd = ["napari-diffir", "train", "diffir", *stage_args, "--out", str(out), "--max-minutes", f"{minutes:g}",
           "--val-every", str(val_every)]
    print("$ " + shlex.join(cmd), flush=True)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env)
    (out / DONE).write_text(shlex.join(cmd) + "\n")


def _vals(run: Path) -> list[dict]:
    return [e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if e.get("event") == "val"]


def _params(weights: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def summarise(name: str, root: Path) -> dict:
    """One size's row: parameters, s/step, steps and the stage-2 validation curve on a shared clock."""
    s1, s2 = root / name / "s1", root / name / "s2"
    c1, c2 = (json.loads((d / "final.json").read_text()) for d in (s1, s2))
    t1 = c1["training"]["wall_time_s"]
    curve = [{"step": v["step"], "hours": round((t1 + v["wall_time_s"]) / 3600, 3), "psnr": v["psnr"]}
             for v in _vals(s2)]
    best = max(curve, key=lambda v: v["psnr"])
    tail = curve[-3:]
    slope = ((tail[-1]["psnr"] - tail[0]["psnr"]) / (tail[-1]["hours"] - tail[0]["hours"])
             if len(tail) > 1 and tail[-1]["hours"] > tail[0]["hours"] else None)
    dim, blocks, refinement = SIZES[name]
    return {
        "size": name, "dim": dim, "num_blocks": blocks, "refinement": refinement,
        "params": _params(s2 / "final.safetensors"),
        "s1_steps": c1["training"]["steps"], "s1_val_psnr": c1["validation"]["best"]["psnr"],
        "s2_steps": c2["training"]["steps"],
        "s2_s_per_step": round(c2["training"]["wall_time_s"] / max(1, c2["training"]["steps"]), 3),
        "hours": round((t1 + c2["training"]["wall_time_s"]) / 3600, 3),
        "val_psnr_best": best["psnr"], "val_psnr_best_step": best["step"],
        "db_per_hour_at_end": None if slope is None else round(slope, 2),
        "curve": curve,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True, metavar="SRC", help="training sources (as `napari-diffir train --data`)")
    p.add_argument("--runs", required=True, help="directory for the runs (resume state; outside the repository)")
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--s1-minutes", type=float, default=8.0)
    p.add_argument("--s2-minutes", type=float, default=17.0)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--n-synthetic", type=int, default=48)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--summary-only", action="store_true", help="train nothing; tabulate the runs there are")
    p.add_argument("--json", help="write the rows as JSON")
    args = p.parse_args(argv)
    names = args.sizes.split(",")
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        p.error(f"unknown sizes {unknown}; known: {', '.join(SIZES)}")
    root = Path(args.runs)
    rows = []
    for name in names:
        dim, blocks, refinement = SIZES[name]
        arch = ["--dim", str(dim), "--num-blocks", blocks, "--refinement", str(refinement)]
        if not args.summary_only:
            base = _common(args) + arch
            _train(["--stage", "1", *base], root / name / "s1", args.s1_minutes, args.val_every)
            _train(["--stage", "2", *base, "--s1", str(root / name / "s1" / "best.safetensors")],
                   root / name / "s2", args.s2_minutes, args.val_every)
        if (root / name / "s2" / DONE).exists():
            rows.append(summarise(name, root))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}), flush=True)
    print("\n| size | dim | blocks | params | stage-2 s/step | steps (s1+s2) | hours | val PSNR (best) | dB/h at end |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['dim']} | {r['num_blocks']} +{r['refinement']} | {r['params'] / 1e6:.3f} M | "
              f"{r['s2_s_per_step']} | {r['s1_steps']}+{r['s2_steps']} | {r['hours']} | {r['val_psnr_best']} | "
              f"{r['db_per_hour_at_end']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
