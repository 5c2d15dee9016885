"""The bundled default models: small single-channel DiffIR and SRDiff nets trained by the project.

They are what a new user runs first, so they are registered before everything else (the widget
lists them first). Each is the generic DiffIR/SRDiff restorer with fixed weights from
``restorers/weights/<name>.safetensors``; the JSON model card next to the weights records the
architecture, training data (only redistributable data from installable packages), steps,
wall time, validation figures and the exact training command. A model whose weights file is
missing (e.g. a source checkout without them) is simply not registered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from .card_options import with_card_defaults
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


def _card_if_any(name: str) -> dict[str, Any]:
    """The card, or ``{}`` in a checkout without it (the model is then not registered)."""
    try:
        return model_card(name)
    except FileNotFoundError:
        return {}


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
        options=with_card_defaults(DiffIRRestorer.info.options, _card_if_any("diffir-denoise")),
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
        options=with_card_defaults(DiffIRRestorer.info.options, _card_if_any("diffir-sr4")),
        accepted_tasks=("sr",),
    )


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
        # its card records the sampling temperature (chosen on validation images; the release's is 1)
        options=with_card_defaults(SRDiffRestorer.info.options, _card_if_any("srdiff-sr4")),
    )


BUNDLED = (DiffIRDenoise, DiffIRSR4, SRDiffSR4)


@hookimpl
def register_restorers(register):
    """Register every bundled model whose weights file is installed."""
    for cls in BUNDLED:
        if weights_path(cls.info.name).is_file():
            register(cls)
