"""The bundled default models: small single-channel DiffIR and SRDiff nets trained by the project.

They are what a new user runs first, so they are registered before everything else (the widget
lists them first). Each is the generic DiffIR/SRDiff restorer with fixed weights from
``restorers/weights/<name>.safetensors``; the JSON model card next to the weights records the
architecture, training data (only redistributable data from installable packages), steps,
wall time, validation figures and the exact training command. A model whose weights file is
missing (e.g. a source checkout without them) is simply not registered.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from ..restorer import Option
from .diffir import DiffIRRestorer
from .srdiff import SRDiffRestorer

__all__ = ["BUNDLED", "WEIGHTS_DIR", "DiffIRDenoise", "DiffIRSR4", "SRDiffSR4", "model_card", "register_restorers"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def model_card(name: str) -> dict[str, Any]:
    """The JSON model card of a bundled model (architecture, data, steps, metrics, command)."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No model card for bundled model {name!r} at {path}")
    return json.loads(path.read_text())


_DATA_NOTE = (
    "Trained by napari-diffir on natural images (Train400) and microscopy-like images (cells3d nuclei, "
    "2D_timelapse, scikit-image samples, synthetic fluorescence); its model card lists the data, steps "
    "and measured quality (napari_diffir.restorers.bundled.model_card({name!r}))."
)


class DiffIRDenoise(DiffIRRestorer):
    """Blind denoising of grayscale/fluorescence images (Gaussian and Poisson–Gaussian noise)."""

    info = DiffIRRestorer.info.replace(
        name="diffir-denoise",
        display_name="DiffIR denoise (bundled)",
        task="denoise",
        in_channels=1,
        description="Blind denoiser for grayscale and fluorescence images (shot + read noise or "
        "Gaussian noise, level not needed). " + _DATA_NOTE.format(name="diffir-denoise"),
        weights_policy="optional",
        bundled_weights=str(weights_path("diffir-denoise")),
        accepted_tasks=("deblur",),  # the same-size DIRformer variant with a global residual
    )


class DiffIRSR4(DiffIRRestorer):
    """x4 super-resolution of grayscale/fluorescence images (bicubic degradation)."""

    info = DiffIRRestorer.info.replace(
        name="diffir-sr4",
        display_name="DiffIR x4 super-resolution (bundled)",
        task="super-resolution",
        scale=4,
        in_channels=1,
        description="x4 super-resolution for grayscale and fluorescence images. "
        + _DATA_NOTE.format(name="diffir-sr4"),
        weights_policy="optional",
        bundled_weights=str(weights_path("diffir-sr4")),
        accepted_tasks=("sr",),
    )


SRDIFF_SR4_TEMPERATURE = 0.5
"""srdiff-sr4's sampling temperature: the largest whose PSNR on the validation images of its
training split is within 0.1 dB of the best (``benchmarks/srdiff_temperature.py``; 1, the
release's sampler, is 1.5 dB lower there: this small model's texture is mostly invented)."""


def _with_default(options: tuple[Option, ...], name: str, value: Any) -> tuple[Option, ...]:
    return tuple(dataclasses.replace(o, default=value) if o.name == name else o for o in options)


class SRDiffSR4(SRDiffRestorer):
    """x4 residual-diffusion super-resolution of grayscale/fluorescence images."""

    info = SRDiffRestorer.info.replace(
        name="srdiff-sr4",
        display_name="SRDiff x4 super-resolution (bundled)",
        in_channels=1,
        description="x4 diffusion super-resolution for grayscale and fluorescence images. "
        + _DATA_NOTE.format(name="srdiff-sr4"),
        weights_policy="optional",
        bundled_weights=str(weights_path("srdiff-sr4")),
        options=_with_default(SRDiffRestorer.info.options, "temperature", SRDIFF_SR4_TEMPERATURE),
    )


BUNDLED = (DiffIRDenoise, DiffIRSR4, SRDiffSR4)


@hookimpl
def register_restorers(register):
    """Register every bundled model whose weights file is installed."""
    for cls in BUNDLED:
        if weights_path(cls.info.name).is_file():
            register(cls)
