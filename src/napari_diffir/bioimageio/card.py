"""The human side of an exported package: documentation text, citations and the cover image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CITATIONS", "documentation", "write_cover"]

CITATIONS = {
    "diffir": ("Xia, B., Zhang, Y., Wang, S., Wang, Y., Wu, X., Tian, Y., Yang, W., Van Gool, L. "
               "DiffIR: Efficient Diffusion Model for Image Restoration. ICCV 2023.", "10.48550/arXiv.2303.09472"),
    "srdiff": ("Li, H., Yang, Y., Chang, M., Chen, S., Feng, H., Xu, Z., Li, Q., Chen, Y. "
               "SRDiff: Single image super-resolution with diffusion probabilistic models. "
               "Neurocomputing 479, 47-59 (2022).", "10.48550/arXiv.2104.14951"),
}
"""Family -> (citation text, DOI) of the paper that introduced the architecture."""


def documentation(*, name: str, family: str, description: str, card: dict[str, Any] | None,
                  run: dict[str, Any], tolerance: float) -> str:
    """Markdown for the package's ``documentation`` field, from the model card where there is one."""
    text, doi = CITATIONS[family]
    lines = [f"# {name}", "", description, "",
             "## How this package runs", "",
             "- Input: one 2-D image per sample (`batch, channel, y, x`), float32. Preprocessing scales each "
             "channel so that its 1st percentile maps to 0 and its 99.8th to 1 (napari-diffir's default "
             "`normalize='percentile'`).",
             "- Output: the restored image in the same normalised units (multiply by p99.8 - p1 of the input "
             "and add p1 to get intensities, which is what `napari_diffir.restore` returns).",
             f"- Random draws are fixed: seed {run['seed']} (tile seed {run['tile_seed']}). The package gives "
             f"what `napari_diffir.restore(image, {run['restorer']!r}, seed={run['seed']}, tile_size=None)` "
             "gives, to the tolerance below. A tiled run draws each tile's noise from the tile's own origin, "
             "so it differs from napari-diffir's tiled run, whose noise field spans the whole image.",
             ]
    if run.get("sampler"):
        lines.append(f"- Sampler: {run['sampler']}, {run['steps']} steps, eta {run['eta']}, "
                     f"temperature {run.get('temperature', 1.0)}.")
    lines += [f"- Reproducibility tolerance: absolute {tolerance:g} (normalised units) on CPU, float32.", ""]
    if card:
        lines += _card_sections(card)
    lines += ["## Reference", "", f"{text} doi:{doi}", "",
              "Exported by napari-diffir (`napari-diffir export`); the architecture file is napari-diffir's "
              "own implementation, which loads the official checkpoints key for key.", ""]
    return "\n".join(lines)


def _card_sections(card: dict[str, Any]) -> list[str]:
    lines = ["## Training data", ""]
    for item in card.get("data_provenance", []):
        lines.append(f"- {item.get('source')}: {item.get('what', '')} (licence: {item.get('license', 'unknown')})")
    training = card.get("training", {})
    lines += ["", "## Training", "",
              f"- {card.get('total_steps', training.get('steps', '?'))} steps in total "
              f"({card.get('total_wall_time_s', 0) / 3600:.1f} h), last stage {training.get('stage', '?')}: "
              f"batch {training.get('batch_size', '?')} x {training.get('patch_size', '?')} px, "
              f"lr {training.get('base_lr', '?')}, EMA {training.get('ema', '?')}.",
              f"- Command: `{training.get('command', '?')}`", ""]
    validation = card.get("validation", {})
    best = validation.get("best")
    before = card.get("validation_input")
    if best or before:
        lines += ["## Validation", ""]
        if before:
            lines.append(f"- {before.get('what', 'input')}: PSNR {before.get('psnr')} dB, SSIM {before.get('ssim')}")
        if isinstance(best, dict):
            lines.append(f"- this model (step {best.get('step', '?')}): PSNR {best.get('psnr')} dB, "
                         f"SSIM {best.get('ssim')}")
        lines.append("")
    if card.get("license"):
        lines += ["## Licence", "", str(card["license"]), ""]
    return lines


def write_cover(path: Path, test_input: np.ndarray, test_output: np.ndarray) -> Path:
    """A PNG of input | output (first channel, 0..1 shown as 0..255), the input scaled to the output's size."""
    from PIL import Image

    out = np.asarray(test_output, np.float32)[0, 0]
    inp = np.asarray(test_input, np.float32)[0, 0]
    lo, hi = np.percentile(inp, [1, 99.8])
    inp = (inp - lo) / max(float(hi - lo), 1e-12)
    s = out.shape[0] // inp.shape[0]
    inp = np.kron(inp, np.ones((s, s), np.float32))
    both = np.concatenate([inp, out], axis=1)
    Image.fromarray((np.clip(both, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path
