"""Choose SRDiff's sampling temperature on validation images, never on a test set.

    python benchmarks/srdiff_temperature.py --data Train400 builtin:skimage builtin:nuclei \\
        builtin:timelapse builtin:synthetic --n-synthetic 48 [--weights runs/x/best.safetensors]

The images are the validation part of the training split (``--val-split image``, the same
``--val-fraction`` and ``--seed`` as ``napari-diffir train``), so none of them was trained on and
none is a standard test set. Each is cropped to a multiple of 4, downsampled x4 with MATLAB's
bicubic kernel and restored by ``napari_diffir.restore`` with the srdiff-sr4 restorer at every
temperature of the grid (same seed). Printed per temperature: mean PSNR (4-px border crop), SSIM
and LR-PSNR (the output downsampled again against the LR input). The suggested default is the
largest temperature within ``--tolerance`` dB of the best PSNR: keep as much of the sampler's
texture as fidelity allows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from quality import psnr, ssim


def validation_images(sources: list[str], n_synthetic: int, seed: int, fraction: float, limit: int | None):
    """The held-out planes of the training split, as ``napari-diffir train`` draws them."""
    from napari_diffir.training import data as D
    from napari_diffir.training.splits import split

    images = D.load_images(sources, min_size=64, n_synthetic=n_synthetic, seed=seed)
    _, val = split(images, "image", fraction, seed, 64)
    return val[:limit] if limit else val


def main(argv=None) -> int:
    import napari_diffir
    from napari_diffir.resize import imresize

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True, help="the training sources (as for napari-diffir train)")
    p.add_argument("--n-synthetic", type=int, default=48)
    p.add_argument("--seed", type=int, default=0, help="split seed (as training) and sampling seed")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None, help="at most this many validation images")
    p.add_argument("--weights", help="an SRDiff checkpoint to use instead of the bundled srdiff-sr4 weights")
    p.add_argument("--temperatures", default="0,0.25,0.5,0.75,1")
    p.add_argument("--sampler", default=None, help="sampler (default: the restorer's)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--tolerance", type=float, default=0.1, help="dB below the best PSNR still accepted")
    p.add_argument("--json", help="also write the results as JSON")
    args = p.parse_args(argv)

    val = validation_images(args.data, args.n_synthetic, args.seed, args.val_fraction, args.limit)
    pairs = []
    for _, clean in val:
        h, w = (s - s % 4 for s in clean.shape)
        hr = np.clip(clean[:h, :w], 0, 1).astype(np.float32)
        pairs.append((hr, imresize(hr.astype(np.float64), 0.25).astype(np.float32)))
    print(f"{len(pairs)} validation images (training split: fraction {args.val_fraction}, seed {args.seed})", flush=True)
    options = {k: v for k, v in (("weights", args.weights), ("sampler", args.sampler), ("steps", args.steps)) if v}
    rows = []
    for tau in (float(t) for t in args.temperatures.split(",")):
        restorer = napari_diffir.get_restorer("srdiff-sr4", temperature=tau, **options)
        scores = {"psnr": [], "ssim": [], "lr-psnr": []}
        for hr, lr in pairs:
            out = napari_diffir.restore(lr, restorer, seed=args.seed)
            scores["psnr"].append(psnr(hr, out, crop=4))
            scores["ssim"].append(ssim(hr, out, crop=4))
            scores["lr-psnr"].append(psnr(lr, imresize(np.clip(out, 0, 1).astype(np.float64), 0.25)))
        rows.append({"temperature": tau, **{k: float(np.mean(v)) for k, v in scores.items()}})
        print("  temperature {temperature:.2f}: PSNR {psnr:.3f}  SSIM {ssim:.4f}  LR-PSNR {lr-psnr:.2f}".format(
            **rows[-1]), flush=True)
    bicubic = float(np.mean([psnr(hr, imresize(lr.astype(np.float64), 4.0).astype(np.float32), crop=4)
                             for hr, lr in pairs]))
    best = max(r["psnr"] for r in rows)
    choice = max(r["temperature"] for r in rows if r["psnr"] >= best - args.tolerance)
    print(f"bicubic PSNR {bicubic:.3f}; best {best:.3f}; suggested temperature {choice:g} "
          f"(the largest within {args.tolerance} dB of the best)")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": len(pairs), "bicubic": bicubic, "rows": rows,
                                               "suggested": choice, "options": options,
                                               "data": args.data}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
