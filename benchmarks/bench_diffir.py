"""DiffIR inference speed: our inference path against a plain eager forward of the same weights.

For each configuration the same network (random weights unless ``--weights`` is given) runs as

* ``eager``: ``model.eval()`` and ``model(x)`` under ``torch.no_grad()`` in the default
  (contiguous) memory format, the IPR start drawn by ``torch.randn`` as upstream does. Our
  modules reproduce the official forward to < 1e-6 (see docs/models.md), so this is also the
  cost of the upstream code path; ``--official DIR`` times the official module too;
* ``ours``: what the ``diffir`` restorer runs: ``torch.inference_mode()``, channels-last
  network and input, ``DiffIRS2.restore`` with the same IPR start as ``eager``;
* ``ours-bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)`` (``precision="bf16"``);
* ``ours-compiled``: ``torch.compile`` of the same call (only with ``--compile``: compiling the
  full-size nets takes minutes on 2 cores).

Timings interleave the variants and keep the best of ``--rounds`` runs, wall and CPU time (CPU
time is far less disturbed by other processes on a shared machine). ``PSNR vs eager`` is the
agreement of each output with the eager fp32 output (range of the eager output as peak).
``CPU / official`` (with ``--official``) is each variant's CPU time over the official fp32
module's in the same round, median over the rounds: the figure least disturbed by other load. With
``--weights`` (a trained stage-2 checkpoint) the held-out scikit-image ``camera`` crop is
degraded as the checkpoint's task needs (Gaussian noise sigma 25/255, bicubic downscale, or a
box mask) and ``PSNR vs GT`` compares each variant with the ground truth.

    python benchmarks/bench_diffir.py                       # official SR x4 + small 1-channel
    python benchmarks/bench_diffir.py --config all --json bench_diffir.json
    python benchmarks/bench_diffir.py --weights denoise.safetensors --config none
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_diffir.models.diffir import DiffIRS2, from_state_dict

OFFICIAL_SR = dict(n_encoder_res=9, dim=64, num_blocks=[13, 1, 1, 1], num_refinement_blocks=13,
                   heads=[1, 2, 4, 8], ffn_expansion_factor=2.2, LayerNorm_type="BiasFree")
CONFIGS = {
    # name: (constructor kwargs, default input side in pixels)
    "sr4": (dict(OFFICIAL_SR, task="sr", scale=4), 48),
    "sr2": (dict(OFFICIAL_SR, task="sr", scale=2), 64),
    # the official S2 deblur config (DiffIR-demotionblur/options/train_DiffIRS2.yml): ffn 2, WithBias
    "deblur": (dict(n_encoder_res=5, dim=48, num_blocks=[3, 5, 6, 6], num_refinement_blocks=4,
                    ffn_expansion_factor=2, LayerNorm_type="WithBias", task="deblur"), 64),
    "inpaint": (dict(n_encoder_res=5, inp_channels=4, dim=52, num_blocks=[1, 1, 1, 9],
                     num_refinement_blocks=0, ffn_expansion_factor=1.8, task="inpaint"), 64),
    "small": (dict(dim=24, num_blocks=[1, 2, 2, 2], num_refinement_blocks=1, n_encoder_res=2, n_feats=16,
                   inp_channels=1, out_channels=1, task="deblur"), 128),
}
DEFAULT = ("sr4", "small")


def best_times(fns: dict, rounds: int) -> tuple[dict[str, tuple[float, float]], dict[str, list[float]]]:
    """Best (wall, CPU) seconds per callable, calling them in turn ``rounds`` times after a
    warm-up, and each callable's CPU seconds in every round (for per-round ratios)."""
    best = {k: (math.inf, math.inf) for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best[k] = (min(best[k][0], w), min(best[k][1], c))
            cpu[k].append(c)
    return best, cpu


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def official_task(directory: str) -> str:
    """Which variant an official checkout provides: 'sr', 'deblur' or 'inpaint'."""
    root = Path(directory)
    if (root / "archs" / "S2_arch.py").is_file():
        return "inpaint"
    source = (root / "DiffIR" / "archs" / "S2_arch.py").read_text()
    return "sr" if "pixel_unshufflev2" in source else "deblur"


def official_module(directory: str, hp: dict, sd: dict):
    """The upstream DiffIRS2 built from ``directory`` (a folder from which ``DiffIR.archs.S2_arch``
    or, for inpainting, ``archs.S2_arch`` imports, with basicsr and einops importable; used
    read-only, never copied into the project), loaded strictly with our state dict."""
    sys.path.insert(0, directory)
    try:
        from DiffIR.archs.S2_arch import DiffIRS2 as Official  # SR / deblur checkouts
    except ImportError:
        from archs.S2_arch import DiffIRS2 as Official  # inpainting checkout
    upstream = {k: v for k, v in hp.items() if k not in ("task", "n_feats", "scale", "dual_pixel_task")}
    if hp["task"] == "sr":
        upstream["scale"] = hp["scale"]
    if hp["task"] == "inpaint":
        upstream["dual_pixel_task"] = hp["dual_pixel_task"]
    with contextlib.redirect_stdout(io.StringIO()):
        net = Official(**upstream)
    net.load_state_dict(sd, strict=True)
    return net.eval()


def degrade(task: str, scale: int, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Degraded input for a held-out ground truth (and the inpainting mask)."""
    if task == "sr":
        from napari_diffir.resize import imresize

        return imresize(gt, 1 / scale).astype(np.float32), None
    if task == "inpaint":
        mask = np.zeros(gt.shape[:2], np.float32)
        mask[gt.shape[0] // 4 : gt.shape[0] // 2, gt.shape[1] // 3 : gt.shape[1] * 2 // 3] = 1
        return gt, mask
    return (gt + rng.normal(0, 25 / 255, gt.shape)).astype(np.float32), None


def run_case(name: str, model: DiffIRS2, x: torch.Tensor, args, gt: torch.Tensor | None = None,
             mask: torch.Tensor | None = None) -> dict:
    hp = model.hyperparameters
    torch.manual_seed(0)
    noise = torch.randn((x.shape[0], model.ipr_dim))
    fast = from_state_dict(model.state_dict()).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def eager():
        torch.manual_seed(0)  # upstream draws the IPR start with torch.randn
        with torch.no_grad():
            out = model(x)
        return out[0] if isinstance(out, tuple) else out

    def ours():
        with torch.inference_mode():
            return fast.restore(x_cl, noise=noise)

    def ours_bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return fast.restore(x_cl, noise=noise)

    fns = {"eager": eager, "ours": ours, "ours-bf16": ours_bf16}
    if args.official and official_task(args.official) == hp["task"]:
        official = official_module(args.official, hp, model.state_dict())

        def upstream():
            torch.manual_seed(0)
            with torch.no_grad():
                out = official(x)
            return out[0] if isinstance(out, tuple) else out

        fns = {"official": upstream, **fns}
    if args.compile:
        compiled = torch.compile(fast.restore)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x_cl, noise=noise)
        compile_s = time.perf_counter() - t0

        def ours_compiled():
            with torch.inference_mode():
                return compiled(x_cl, noise=noise)

        fns["ours-compiled"] = ours_compiled
    outputs = {k: fn().float() for k, fn in fns.items()}
    times, cpu_rounds = best_times(fns, args.rounds)
    ref = outputs["eager"]
    peak = float(ref.max() - ref.min()) or 1.0
    base_wall, base_cpu = times["eager"]
    rows = []
    for k, out in outputs.items():
        if mask is not None:  # compare the composited result, as the restorer returns it
            img = x[:, :-1]
            out = mask * out + (1 - mask) * img
        row = dict(config=name, variant=k, input=list(x.shape), wall_s=times[k][0], cpu_s=times[k][1],
                   speedup_wall=base_wall / times[k][0], speedup_cpu=base_cpu / times[k][1],
                   psnr_vs_eager=psnr(out, ref if mask is None else mask * ref + (1 - mask) * x[:, :-1], peak),
                   max_abs_diff=float((out - (ref if mask is None else mask * ref + (1 - mask) * x[:, :-1])).abs().max()))
        if "official" in cpu_rounds:  # CPU time / the official fp32 CPU time of the same round
            row["cpu_vs_official_median"] = statistics.median(
                c / o for c, o in zip(cpu_rounds[k], cpu_rounds["official"], strict=True))
        if gt is not None:
            row["psnr_vs_gt"] = psnr(out.clamp(0, 1), gt, 1.0)
        if k == "ours-compiled":
            row["compile_s"] = compile_s
        rows.append(row)
    if gt is not None:
        for row in rows:
            row["delta_psnr_vs_eager_db"] = row["psnr_vs_gt"] - rows[[r["variant"] for r in rows].index("eager")]["psnr_vs_gt"]
    return rows


def random_case(name: str, args) -> list[dict]:
    kwargs, side = CONFIGS[name]
    side = args.size or side
    torch.manual_seed(0)
    model = DiffIRS2(**kwargs).eval()
    side = max(model.multiple_of, side // model.multiple_of * model.multiple_of)
    x = torch.rand(1, model.hyperparameters["inp_channels"], side, side)
    mask = None
    if kwargs["task"] == "inpaint":
        mask = torch.zeros(1, 1, side, side)
        mask[..., side // 4 : side // 2, side // 4 : side // 2] = 1
        x = torch.cat([x[:, :-1] * (1 - mask), mask], 1)
    return run_case(name, model, x, args, mask=mask)


def weights_case(path: str, args) -> list[dict]:
    from skimage import data

    from napari_diffir.checkpoints import load_checkpoint

    model = load_checkpoint(path).model
    if not isinstance(model, DiffIRS2):
        raise SystemExit(f"{path} is not a DiffIR stage-2 checkpoint")
    hp = model.hyperparameters
    cam = data.camera().astype(np.float32) / 255  # held out from the project's training data
    m = model.multiple_of
    side = min(args.size or 128, cam.shape[0] // hp["scale"]) // m * m
    full = side * hp["scale"]
    y0 = (cam.shape[0] - full) // 2
    gt_np = cam[y0 : y0 + full, y0 : y0 + full]
    if hp["out_channels"] == 3:
        gt_np = np.repeat(gt_np[..., None], 3, -1)
    lq_np, mask_np = degrade(hp["task"], hp["scale"], gt_np, np.random.default_rng(0))

    def chw(a):
        return torch.from_numpy(np.ascontiguousarray(a if a.ndim == 2 else a.transpose(2, 0, 1)))

    gt = chw(gt_np).reshape(1, hp["out_channels"], *gt_np.shape[:2])
    x = chw(lq_np).reshape(1, hp["out_channels"], *lq_np.shape[:2])
    mask = None
    if mask_np is not None:
        mask = torch.from_numpy(mask_np)[None, None]
        x = torch.cat([x * (1 - mask), mask], 1)
    return run_case(f"weights:{Path(path).name}", model, x, args, gt=gt, mask=mask)


def print_table(rows: list[dict]) -> None:
    has_gt = any("psnr_vs_gt" in r for r in rows)
    has_official = any("cpu_vs_official_median" in r for r in rows)
    cw = max([6] + [len(r["config"]) for r in rows])
    head = f"{'config':<{cw}} {'variant':<14} {'wall s':>8} {'cpu s':>8} {'x wall':>7} {'x cpu':>7} {'PSNR vs eager':>14} {'max|d|':>9}"
    head += f" {'CPU / official':>14}" if has_official else ""
    head += f" {'PSNR vs GT':>11} {'dPSNR':>7}" if has_gt else ""
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (f"{r['config']:<{cw}} {r['variant']:<14} {r['wall_s']:8.3f} {r['cpu_s']:8.3f} {r['speedup_wall']:7.2f} "
                f"{r['speedup_cpu']:7.2f} {r['psnr_vs_eager']:14.2f} {r['max_abs_diff']:9.2e}")
        if has_official:
            line += f" {r.get('cpu_vs_official_median', math.nan):14.3f}"
        if has_gt and "psnr_vs_gt" in r:
            line += f" {r['psnr_vs_gt']:11.2f} {r['delta_psnr_vs_eager_db']:+7.3f}"
        print(line)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", nargs="+", default=list(DEFAULT),
                   help=f"random-weight configurations: {', '.join(CONFIGS)}, 'all' or 'none'")
    p.add_argument("--size", type=int, default=None, help="input side (LR side for SR) in pixels")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--weights", default=None, help="a trained DiffIR stage-2 checkpoint for PSNR vs GT")
    p.add_argument("--official", default=None,
                   help="directory from which the official S2_arch imports (times configs of its task)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(CONFIGS) if args.config == ["all"] else [] if args.config == ["none"] else args.config
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    rows: list[dict] = []
    for name in names:
        rows += random_case(name, args)
    if args.weights:
        rows += weights_case(args.weights, args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), best of {args.rounds}")
    print_table(rows)
    if args.json:
        meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), rounds=args.rounds)
        finite = [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows]
        Path(args.json).write_text(json.dumps(dict(meta=meta, rows=finite), indent=2))


if __name__ == "__main__":
    main()
