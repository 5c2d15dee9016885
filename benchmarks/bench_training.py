"""Training throughput of the bundled model recipes: steps/s and samples/s, CPU time per step.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_training.py [--steps 10] [--models diffir-denoise,...]
        [--variants fp32,bf16,bf16-cl] [--compile] [--threads 1] [--json out.json]

Each row times ``napari_diffir.training.loop.train_step`` (forward, backward, Adam; what the
training loop runs per step) on random batches of the bundled recipe's shape, after warm-up
steps, in this one process. Variants: ``fp32``; ``bf16`` (CPU bf16 autocast, the training
default); ``bf16-cl`` (bf16 + channels-last weights and inputs); ``--compile`` adds
``torch.compile`` of the stage's loss. CPU time (``time.process_time``) is reported beside
wall time because a shared machine makes wall time noisy; steps/s is computed from CPU time
divided by the thread count, i.e. what one dedicated core per thread would give.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import torch  # noqa: E402

RECIPES = {
    # name: (family, architecture, batch, LR patch, GT patch)
    "diffir-denoise": ("diffir", dict(task="deblur", scale=1), 8, 48, 48),
    "diffir-sr4": ("diffir", dict(task="sr", scale=4), 8, 32, 128),
    "srdiff-sr4": ("srdiff", dict(scale=4), 8, 16, 64),
}


def build(name: str):
    """The stage the bundled recipe trains (DiffIR stage 2 fine-tune; SRDiff diffusion)."""
    from napari_diffir.training.diffir import DiffIRConfig, Stage2
    from napari_diffir.training.srdiff import DiffusionStage, SRDiffConfig

    family, arch, *_ = RECIPES[name]
    if family == "diffir":
        return Stage2(DiffIRConfig(**arch), None, 0.0)
    cfg = SRDiffConfig(**arch)
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rrdb.safetensors")
        save_file({k: v.contiguous() for k, v in cfg.rrdb().state_dict().items()}, path)
        return DiffusionStage(cfg, path)


def measure(name: str, variant: str, steps: int, warmup: int, compiled: bool) -> dict:
    from napari_diffir.training.loop import train_step

    torch.manual_seed(0)
    stage = build(name)
    _, _, batch, lq_size, gt_size = RECIPES[name]
    lq = torch.rand(batch, 1, lq_size, lq_size)
    gt = torch.rand(batch, 1, gt_size, gt_size)
    if variant.endswith("-cl"):
        stage.net.to(memory_format=torch.channels_last)
        lq, gt = (t.contiguous(memory_format=torch.channels_last) for t in (lq, gt))
    if compiled:
        stage.loss = torch.compile(stage.loss)
    opt = torch.optim.Adam(stage.parameters(), lr=1e-4)
    amp = "none" if variant == "fp32" else "bf16"
    t_compile = time.perf_counter()
    for i in range(warmup):
        train_step(stage, opt, lq, gt, i, 10_000, 1e-4, amp)
    t_compile = time.perf_counter() - t_compile
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(steps):
        train_step(stage, opt, lq, gt, warmup + i, 10_000, 1e-4, amp)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    per_step = cpu / steps / torch.get_num_threads()
    return {"model": name, "variant": variant + ("+compile" if compiled else ""), "batch": batch,
            "cpu_s_per_step": round(cpu / steps, 4), "wall_s_per_step": round(wall / steps, 4),
            "steps_per_s": round(1 / per_step, 3), "samples_per_s": round(batch / per_step, 2),
            "warmup_s": round(t_compile, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(RECIPES))
    p.add_argument("--variants", default="fp32,bf16,bf16-cl")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of each variant")
    p.add_argument("--json", help="write the rows as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        base = None
        for variant in args.variants.split(","):
            for compiled in (False, True) if args.compile else (False,):
                try:
                    row = measure(name, variant, args.steps, args.warmup, compiled)
                except Exception as exc:  # noqa: BLE001 - report and go on with the other rows
                    row = {"model": name, "variant": variant + ("+compile" if compiled else ""),
                           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
                if "steps_per_s" in row:
                    base = base or row["steps_per_s"]
                    row["speedup_vs_first"] = round(row["steps_per_s"] / base, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n| model | variant | CPU s/step | steps/s | samples/s | x first | (torch {torch.__version__}, "
          f"{args.threads} thread) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['variant']} | failed: {r['error']} | | | | |")
        else:
            print(f"| {r['model']} | {r['variant']} | {r['cpu_s_per_step']} | {r['steps_per_s']} | "
                  f"{r['samples_per_s']} | {r['speedup_vs_first']} | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
