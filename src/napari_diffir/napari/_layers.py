"""Output layers: what a restored array needs to overlay its input exactly in the viewer.

Pure functions over plain values (no viewer), so the geometry is testable on its own.

Geometry. napari puts the centre of data pixel ``i`` at world ``translate + L @ i`` where
``L = rotate @ shear @ diag(scale)``. Every upscaling restorer here samples output pixel ``j``
at input coordinate ``(j + 0.5) / s - 0.5`` (pixel centres aligned, as MATLAB ``imresize``,
Lanczos and the SR models do). So the output overlays the input when, along Y and X,
``scale' = scale / s`` and ``translate' = translate + L @ d`` with ``d = -(0.5 - 0.5 / s)``
(in input pixels). A plane cut out of a stack ("current slice only") keeps its singleton
dimensions and is shifted by ``L @ index`` along the cut axes, so it appears at its own Z/T.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.axes import LOOP_AXES, default_axes, validate_axes

__all__ = [
    "SourceLayer",
    "contrast_limits",
    "layer_axes",
    "output_layer",
    "output_transform",
    "plane_selection",
    "suggest_axes",
]


@dataclass(frozen=True)
class SourceLayer:
    """The display properties of an input image layer that its restored output inherits."""

    name: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    rotate: np.ndarray | None = None
    shear: np.ndarray | None = None
    affine: np.ndarray | None = None
    units: tuple | None = None
    axis_labels: tuple | None = None
    rgb: bool = False
    colormap: Any = "gray"
    blending: str = "translucent"
    gamma: float = 1.0
    opacity: float = 1.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_layer(cls, layer) -> SourceLayer:
        return cls(
            name=layer.name,
            scale=tuple(float(v) for v in layer.scale),
            translate=tuple(float(v) for v in layer.translate),
            rotate=np.asarray(layer.rotate, float),
            shear=np.asarray(layer.shear, float),
            affine=np.asarray(layer.affine.affine_matrix, float),
            units=tuple(getattr(layer, "units", ()) or ()) or None,
            axis_labels=tuple(getattr(layer, "axis_labels", ()) or ()) or None,
            rgb=bool(getattr(layer, "rgb", False)),
            colormap=layer.colormap,
            blending=str(layer.blending),
            gamma=float(layer.gamma),
            opacity=float(layer.opacity),
        )

    def linear(self) -> np.ndarray:
        """``rotate @ shear @ diag(scale)``: maps data-pixel offsets to world offsets."""
        from napari.utils.transforms import Affine

        return Affine(
            scale=self.scale, rotate=self.rotate, shear=self.shear, ndim=len(self.scale)
        ).linear_matrix


def layer_axes(axes: str, rgb: bool) -> str:
    """The letters of the layer's dimensions: the data axes without the RGB(A) channel."""
    if rgb:
        if not axes.endswith("C"):
            raise ValueError(f"An RGB layer's axes must end with C, but got {axes!r}")
        return axes[:-1]
    return axes


def suggest_axes(shape: tuple[int, ...], rgb: bool, axis_labels: Any = None) -> str:
    """The axes the widget proposes for a layer.

    The layer's ``axis_labels`` when a reader set them to axis letters (e.g. ``t, y, x``),
    else the engine's default for the shape: YX, ZYX, TZYX, TZCYX, or ...YXC for RGB.
    """
    shape = tuple(shape)
    labels = [str(a).strip().upper() for a in (axis_labels or ())]
    if labels and all(len(a) == 1 for a in labels):
        guess = "".join(labels) + ("C" if rgb else "")
        try:
            return validate_axes(guess, shape)
        except ValueError:
            pass
    return default_axes(shape, rgb=rgb)


def plane_selection(
    axes: str, shape: tuple[int, ...], data_position: Any
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Index of the currently shown plane, keeping every dimension (length 1 along S/T/Z).

    :param data_position: the viewer position in the layer's *data* coordinates, one value per
        layer dimension (``layer.world_to_data(viewer.dims.point)``); an RGB channel axis has none.
    :returns: the index tuple for the data array and the offset (in data pixels, per layer
        dimension) of the cut-out plane, for :func:`output_transform`.
    """
    axes = validate_axes(axes, tuple(shape))
    pos = list(np.asarray(data_position, float))
    index: list[slice] = []
    offsets = np.zeros(len(pos))
    for k, (a, n) in enumerate(zip(axes, shape)):
        if a in LOOP_AXES and k < len(pos):
            i = int(np.clip(np.round(pos[k]), 0, n - 1))
            index.append(slice(i, i + 1))
            offsets[k] = i
        else:
            index.append(slice(None))
    return tuple(index), offsets


def output_transform(
    source: SourceLayer, axes: str, factor: int, offsets: np.ndarray | None = None
) -> dict[str, tuple[float, ...]]:
    """``scale`` and ``translate`` that make an output (upscaled by ``factor``) overlay its input.

    :param axes: the layer's dimension letters (see :func:`layer_axes`), one per ``source.scale``.
    :param offsets: extra data-pixel offsets per dimension (from :func:`plane_selection`).
    """
    ndim = len(source.scale)
    if len(axes) != ndim:
        raise ValueError(f"axes {axes!r} do not match the layer's {ndim} dimensions")
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, but got {factor!r}")
    shift = np.zeros(ndim) if offsets is None else np.asarray(offsets, float).copy()
    scale = np.asarray(source.scale, float).copy()
    for k, a in enumerate(axes):
        if a in "YX":
            shift[k] += -(0.5 - 0.5 / factor)
            scale[k] /= factor
    translate = np.asarray(source.translate, float) + source.linear() @ shift
    return {"scale": tuple(scale.tolist()), "translate": tuple(translate.tolist())}


def contrast_limits(data: np.ndarray, limit: int = 4_000_000) -> list[float]:
    """Min/max of the restored data (strided sample for huge arrays), never an empty range."""
    flat = np.asarray(data).reshape(-1)
    if flat.size > limit:
        flat = flat[:: flat.size // limit + 1]
    finite = flat[np.isfinite(flat)] if np.issubdtype(flat.dtype, np.floating) else flat
    if finite.size == 0:
        return [0.0, 1.0]
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return [lo, hi]


def output_layer(
    data: np.ndarray,
    source: SourceLayer,
    *,
    axes: str,
    restorer: str,
    factor: int = 1,
    offsets: np.ndarray | None = None,
    provenance: dict | None = None,
) -> tuple[np.ndarray, dict, str]:
    """A napari ``LayerDataTuple`` for the restored ``data`` of ``source``.

    :param axes: the *data* axes of the input (with C for RGB), as given to the engine.
    :param provenance: restorer, weights, steps, seed, tile, device, version ... recorded in
        ``metadata["napari_diffir"]``.
    """
    dims = layer_axes(axes, source.rgb)
    kwargs: dict[str, Any] = {
        "name": f"{source.name} [{restorer}]",
        **output_transform(source, dims, factor, offsets),
        "blending": source.blending,
        "opacity": source.opacity,
        "metadata": {"napari_diffir": dict(provenance or {})},
    }
    if source.rotate is not None:
        kwargs["rotate"] = source.rotate
    if source.shear is not None:
        kwargs["shear"] = source.shear
    if source.affine is not None:
        kwargs["affine"] = source.affine
    if source.units is not None:
        kwargs["units"] = source.units
    if source.axis_labels is not None:
        kwargs["axis_labels"] = source.axis_labels
    if source.rgb:
        kwargs["rgb"] = True
    else:
        kwargs["colormap"] = source.colormap
        kwargs["gamma"] = source.gamma
        kwargs["contrast_limits"] = contrast_limits(data)
    return data, kwargs, "image"
