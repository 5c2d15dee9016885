"""What the Restore widget hands the engine from napari layers: data, checked axes and the mask.

Functions of layers and typed text, without Qt, so the form's rules are plain to test.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.axes import LOOP_AXES, validate_axes

__all__ = ["ambiguous_axes", "checked_axes", "layer_data", "loop_axes", "mask_array", "mask_shape", "rgb_problem"]


def layer_data(layer) -> Any:
    """The full-resolution array of an image layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def rgb_problem(layer, axes_text: str) -> str | None:
    """napari shows an RGB layer's last axis as colour, so that axis must be C."""
    if not layer.rgb:
        return None
    try:
        axes = validate_axes(axes_text or "", tuple(layer_data(layer).shape))
    except ValueError:
        return None  # the engine's check names it
    return None if axes.endswith("C") else f"axes {axes!r}: an RGB layer's last axis is its colour channel, C"


def checked_axes(layer, axes_text: str) -> str:
    """The typed axes, upper-cased; raises ``ValueError`` saying what is wrong with them."""
    axes = validate_axes(axes_text or "", tuple(layer_data(layer).shape))
    problem = rgb_problem(layer, axes_text)
    if problem:
        raise ValueError(problem)
    return axes


def loop_axes(axes: str, layer) -> str:
    """The axes looped over (S, T, Z) that have more than one plane."""
    shape = layer_data(layer).shape
    return "".join(a for a, n in zip(axes, shape) if a in LOOP_AXES and n > 1)


def mask_shape(layer, mask_layer, axes_text: str) -> tuple[int, ...] | None:
    """The shape :func:`mask_array` will give, without rasterising (None: not known yet)."""
    from napari.layers import Shapes

    if mask_layer is None:
        return None
    if not isinstance(mask_layer, Shapes):
        return tuple(layer_data(mask_layer).shape)
    shape = tuple(layer_data(layer).shape)  # shapes are rasterised to the image without C
    try:
        axes = validate_axes(axes_text or "", shape)
    except ValueError:
        return None  # the engine's check names the axes first
    return tuple(n for a, n in zip(axes, shape) if a != "C")


def mask_array(layer, mask_layer, axes: str, index) -> np.ndarray:
    """A Labels layer's data or a Shapes layer rasterised, cut like the image (``index``)."""
    from napari.layers import Shapes

    shape = tuple(layer_data(layer).shape)
    no_c = tuple(n for a, n in zip(axes, shape) if a != "C")
    if isinstance(mask_layer, Shapes):
        mask = np.asarray(mask_layer.to_labels(labels_shape=no_c))
    else:
        mask = np.asarray(layer_data(mask_layer))
    if index is not None and mask.shape == no_c:
        mask = mask[tuple(i for a, i in zip(axes, index) if a != "C")]
    return mask


AMBIGUOUS_PLANES = 4
"""A stack with this many planes or fewer may as well be channels (2 to 4 colours)."""


def ambiguous_axes(layer, axes_text: str) -> str | None:
    """A hint (with a link that switches the axes) when the first axis may be C rather than Z/T.

    E.g. a (2, 256, 256) image defaults to ZYX, but two planes are more often two channels.
    """
    if layer.rgb:
        return None
    shape = tuple(layer_data(layer).shape)
    try:
        axes = validate_axes(axes_text or "", shape)
    except ValueError:
        return None
    if "C" in axes or len(axes) < 3 or axes[0] not in "ZT" or not 2 <= shape[0] <= AMBIGUOUS_PLANES:
        return None
    other = "C" + axes[1:]
    kind = {"Z": "planes", "T": "time points"}[axes[0]]
    return (f"{shape[0]} {kind} along {axes[0]}; if they are channels, "
            f'<a href="{other}">use {other}</a>.')
