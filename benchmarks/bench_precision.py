"""What bf16 costs: the bundled models restored in fp32 and in bf16 (and ``auto``) on held-out images.

For each bundled model and held-out scikit-image image (``camera``, ``coins``, ``moon``: not in
the training data), the degraded input (Gaussian noise sigma 25/255 for denoising, MATLAB-bicubic
x4 downscale for SR) is restored through ``napari_diffir.restore`` with ``precision="fp32"`` and
``"bf16"`` (same seed). The table gives PSNR against the ground truth for both, the PSNR of the
bf16 result against the fp32 one (their agreement), and process CPU seconds of each run. The
last line says what ``precision="auto"`` resolves to on this machine.

    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --side 256 --json precision.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

import napari_diffir as nd
from napari_diffir.engine.device import resolve_precision
from napari_diffir.resize import imresize

MODELS = {"diffir-denoise": "denoise", "diffir-sr4": "sr", "srdiff-sr4": "sr"}
IMAGES = ("camera", "coins", "moon")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ground_truth(name: str, side: int) -> np.ndarray:
    img = getattr(data, name)().astype(np.float32) / 255
    y, x = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    return np.ascontiguousarray(img[y : y + side, x : x + side])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--images", nargs="+", default=list(IMAGES))
    p.add_argument("--side", type=int, default=192, help="ground-truth side in pixels")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models:
        for image in args.images:
            gt = ground_truth(image, args.side)
            if MODELS[model] == "sr":
                lq = imresize(gt, 1 / 4).astype(np.float32)
            else:
                lq = (gt + np.random.default_rng(0).normal(0, 25 / 255, gt.shape)).astype(np.float32)
            out, cpu = {}, {}
            for precision in ("fp32", "bf16"):
                c0 = time.process_time()
                out[precision] = nd.restore(lq, model, precision=precision, seed=0, device="cpu",
                                            normalize="none", tile_size=None)
                cpu[precision] = time.process_time() - c0
            rows.append(dict(model=model, image=image, psnr_fp32=psnr(np.clip(out["fp32"], 0, 1), gt),
                             psnr_bf16=psnr(np.clip(out["bf16"], 0, 1), gt),
                             agreement_db=psnr(out["bf16"], out["fp32"]),
                             max_abs_diff=float(np.abs(out["bf16"] - out["fp32"]).max()),
                             cpu_fp32=cpu["fp32"], cpu_bf16=cpu["bf16"]))
    print(f"{args.side}x{args.side} ground truth, {torch.get_num_threads()} thread(s)")
    print(f"{'model':<15} {'image':<7} {'PSNR fp32':>9} {'PSNR bf16':>9} {'dPSNR':>7} {'bf16 vs fp32':>12} "
          f"{'max|d|':>8} {'CPU fp32':>8} {'CPU bf16':>8}")
    for r in rows:
        print(f"{r['model']:<15} {r['image']:<7} {r['psnr_fp32']:9.2f} {r['psnr_bf16']:9.2f} "
              f"{r['psnr_bf16'] - r['psnr_fp32']:+7.3f} {r['agreement_db']:9.1f} dB {r['max_abs_diff']:8.4f} "
              f"{r['cpu_fp32']:8.2f} {r['cpu_bf16']:8.2f}")
    print(f"precision='auto' on this CPU: {resolve_precision('auto', torch.device('cpu'))}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
