"""The input-size multiple each trainable model needs, without building it (the form checks it per keystroke).

DiffIR's DIRformer downsamples three times (x8) at the low resolution; for SR its pixel-unshuffle
stem asks for 8 x (4 / scale). SRDiff's U-Net halves the high resolution once per level after the
first, and the RRDB alone takes any size.
"""

from __future__ import annotations

__all__ = ["input_multiple", "patch_multiple"]


def input_multiple(family: str, scale: int, stage: str, levels: int = 4) -> int:
    """The multiple the model's (low-resolution) input side must be.

    :param stage: ``"rrdb"`` for SRDiff's encoder pre-training, anything else otherwise.
    :param levels: the SRDiff U-Net's number of levels (``len(dim_mults)``).
    """
    if family == "diffir":
        return 8 * (4 // scale) if scale > 1 else 8
    if stage == "rrdb":
        return 1
    return max(1, 2 ** (levels - 1) // scale)


def patch_multiple(family: str, scale: int, stage: str, levels: int = 4) -> int:
    """The multiple a GT training patch side must be: scale x the input multiple."""
    return scale * input_multiple(family, scale, stage, levels)
