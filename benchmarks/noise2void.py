"""Noise2Void trained on each noisy held-out image itself (CAREamics), against diffir-denoise.

    pip install "napari-diffir[benchmark-n2v]"       # in its own venv, see docs/benchmarks.md
    python benchmarks/noise2void.py --json benchmarks/results/noise2void.json
    python benchmarks/noise2void.py --budget-s 20    # a quick check of the pipeline
    python benchmarks/noise2void.py --reuse-n2v benchmarks/results/noise2void.json \\
        --json benchmarks/results/noise2void.json  # re-measure diffir-denoise only

The issue's target: ``diffir-denoise`` (blind, ``napari_diffir.restore`` with defaults) beats
Noise2Void trained on the noisy image itself with 10 minutes of CPU per image. Images, noise
and seeds are those of ``benchmarks/quality.py`` (cells3d nuclei z = 30 and z = 45, min-max
scaled; Poisson-Gaussian and Gaussian noise, numpy seed 0), so both scripts score the same
noisy arrays. Noise2Void is CAREamics' default N2V (UNet, 64² patches, its own mean/std
normalisation and augmentations), trained on one thread until the process has used
``--budget-s`` seconds of CPU (training and its validation; data loading in-process), then
applied to the whole image from the weights at that moment.

N2V's figures do not depend on napari-diffir's weights, so ``--reuse-n2v`` takes them from
earlier JSON files and re-measures only diffir-denoise, NL-means and the noisy input; that run
needs no CAREamics.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402

DEFAULT_IMAGES = ("nuclei z=30", "nuclei z=45")
DEFAULT_NOISE = ("PG 30ph/2e", "PG 10ph/1e", "gauss 25")
N2V_SEED = 1
"""Seed of N2V's patches, masks and initial weights (CAREamics requires a seed > 0)."""


def noisy_inputs(images: list[str], levels: list[str]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(image, noise) -> (clean, noisy), exactly the arrays quality.py scores."""
    clean_images = quality.held_out_images()
    unknown = [i for i in images if i not in clean_images]
    if unknown:
        raise SystemExit(f"unknown image(s) {unknown}; held-out images are {sorted(clean_images)}")
    out = {}
    for name in images:
        noisy = quality.noisy_versions(clean_images[name], quick=False)
        missing = [level for level in levels if level not in noisy]
        if missing:
            raise SystemExit(f"unknown noise level(s) {missing}; quality.py's levels are {list(noisy)}")
        for level in levels:
            out[(name, level)] = (clean_images[name], noisy[level])
    return out


def train_n2v(noisy: np.ndarray, budget_s: float, work_dir: Path, seed: int, batch_size: int,
              patch: int, copies: int) -> tuple[np.ndarray, dict]:
    """Train CAREamics N2V on ``noisy`` alone for ``budget_s`` CPU seconds; return its prediction.

    CAREamics draws one epoch's random patches per image tile (16 of 64² from a 256² image),
    so a single image would make every epoch one batch and its ReduceLROnPlateau schedule
    (patience in epochs) would cut the learning rate every few steps; ``copies`` samples of the
    same image make an epoch ``copies`` times longer, about 16 batches for the default.
    """
    import careamics
    import torch
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config
    from lightning.pytorch import Callback

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    class CpuBudget(Callback):
        """Stops training once this process has spent the budget of CPU time on it."""

        def __init__(self):
            self.start = None
            self.steps = 0

        def on_train_start(self, trainer, module):
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.steps += 1
            if time.process_time() - self.start >= budget_s:
                trainer.should_stop = True

    config = create_advanced_n2v_config(
        experiment_name="n2v", data_type="array", axes="SYX", patch_size=[patch, patch],
        batch_size=batch_size, num_epochs=100_000, num_workers=0, seed=seed,
        trainer_params={"accelerator": "cpu", "devices": 1})
    budget = CpuBudget()
    n2v = CAREamist(config, work_dir=work_dir, callbacks=[budget], enable_progress_bar=False)
    wall = time.perf_counter()
    n2v.train(train_data=np.repeat(noisy[None], copies, axis=0))
    cpu_s = time.process_time() - budget.start
    wall_s = time.perf_counter() - wall
    ckpt = work_dir / "at_budget.ckpt"  # the weights when the budget ran out, not the last epoch-end checkpoint
    n2v.trainer.save_checkpoint(ckpt)
    predictions, _ = n2v.predict(noisy, axes="YX", checkpoint=ckpt)
    denoised = np.asarray(np.squeeze(predictions[0]), dtype=np.float32)
    if denoised.shape != noisy.shape:
        raise RuntimeError(f"N2V prediction has shape {denoised.shape}, the input {noisy.shape}")
    info = {"steps": budget.steps, "epochs": n2v.trainer.current_epoch, "cpu_s": round(cpu_s, 1),
            "wall_s": round(wall_s, 1), "batch_size": batch_size, "patch": patch, "copies": copies,
            "seed": seed, "careamics": careamics.__version__, "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    return denoised, info


def _reused_n2v(paths: list[str], inputs: dict) -> dict[tuple[str, str], dict]:
    """The N2V figures of earlier runs for every row of ``inputs``, checked against its noisy array."""
    rows = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            rows[(row["image"], row["noise"])] = row
    out = {}
    for (name, level), (clean, noisy) in inputs.items():
        if (name, level) not in rows:
            raise SystemExit(f"no N2V figures for {name} / {level} in {paths}")
        if abs(rows[(name, level)]["noisy"] - quality.psnr(clean, noisy)) > 1e-9:  # the noisy PSNR fingerprints it
            raise SystemExit(f"{name} / {level}: the noisy input differs from the one N2V was trained on in {paths}")
        out[(name, level)] = {k: rows[(name, level)][k] for k in ("n2v", "n2v ssim", "n2v training")}
    return out


def run(images: list[str], levels: list[str], budget_s: float, seed: int = 0, weights: str | None = None,
        reuse: list[str] | None = None, batch_size: int = 16, patch: int = 64, copies: int = 16) -> dict:
    import napari_diffir

    denoiser = napari_diffir.get_restorer("diffir-denoise", weights=weights) if weights else "diffir-denoise"
    inputs = noisy_inputs(images, levels)
    reused = _reused_n2v(reuse, inputs) if reuse else {}
    results = {"budget_cpu_s": budget_s, "weights": weights or "bundled", "machine": _machine(), "rows": []}
    for (name, level), (clean, noisy) in inputs.items():
        row = {"image": name, "noise": level}
        outs = {"noisy": noisy, "nlmeans": napari_diffir.restore(noisy, "nlmeans"),
                "diffir-denoise": napari_diffir.restore(noisy, denoiser, seed=seed)}
        for label, out in outs.items():
            row[label] = quality.psnr(clean, out)
            row[label + " ssim"] = quality.ssim(clean, out)
        if reuse:
            row.update(reused[(name, level)])
        else:
            with tempfile.TemporaryDirectory(prefix="n2v_") as work:
                denoised, info = train_n2v(noisy, budget_s, Path(work), N2V_SEED, batch_size, patch, copies)
            row["n2v"] = quality.psnr(clean, denoised)
            row["n2v ssim"] = quality.ssim(clean, denoised)
            row["n2v training"] = info
        row["met"] = row["diffir-denoise"] > row["n2v"]
        results["rows"].append(row)
        print(f"  {name} {level}: noisy {row['noisy']:.2f}  nlmeans {row['nlmeans']:.2f}  "
              f"N2V {row['n2v']:.2f} ({row['n2v training']['steps']} steps)  "
              f"diffir-denoise {row['diffir-denoise']:.2f}", flush=True)
    return results


def _machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def table(results: dict) -> str:
    lines = ["| image | noise | noisy | blind NL-means | Noise2Void (own image) | diffir-denoise | "
             "diffir-denoise > N2V |", "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        cells = [f"{r[k]:.2f} / {r[k + ' ssim']:.3f}" for k in ("noisy", "nlmeans", "n2v", "diffir-denoise")]
        margin = r["diffir-denoise"] - r["n2v"]
        verdict = f"{'met' if r['met'] else 'not met'} ({margin:+.2f} dB)"
        lines.append(f"| {r['image']} | {r['noise']} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=600.0, help="CPU seconds of N2V training per image (600)")
    p.add_argument("--images", default=",".join(DEFAULT_IMAGES), help="comma-separated held-out images")
    p.add_argument("--noise", default=",".join(DEFAULT_NOISE), help="comma-separated quality.py noise levels")
    p.add_argument("--seed", type=int, default=0, help="seed of diffir-denoise's sampler")
    p.add_argument("--weights", help="measure these diffir-denoise weights instead of the bundled ones")
    p.add_argument("--reuse-n2v", action="append", metavar="JSON",
                   help="take the N2V figures from this earlier --json output (repeatable) instead of training")
    p.add_argument("--batch-size", type=int, default=16, help="N2V batch size")
    p.add_argument("--patch", type=int, default=64, help="N2V patch size")
    p.add_argument("--copies", type=int, default=16, help="samples of the image per N2V epoch (see train_n2v)")
    p.add_argument("--json", help="also write the results as JSON")
    args = p.parse_args(argv)
    results = run(args.images.split(","), args.noise.split(","), args.budget_s, seed=args.seed,
                  weights=args.weights, reuse=args.reuse_n2v, batch_size=args.batch_size, patch=args.patch, copies=args.copies)
    print("\nPSNR (dB) / SSIM on [0, 1] data:\n")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
