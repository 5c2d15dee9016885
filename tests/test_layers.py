"""Output-layer geometry and properties, as pure functions (no viewer, no Qt window)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image

import napari_diffir as nd
from napari_diffir.napari._layers import (
    SourceLayer,
    contrast_limits,
    layer_axes,
    output_layer,
    output_transform,
    plane_selection,
    suggest_axes,
)


def _ramp(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return 3.0 * yy + 5.0 * xx + 10.0


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("rotate", [0.0, 30.0])
def test_upscaled_output_overlays_its_input_in_world_coordinates(factor, rotate):
    """Output pixel j sits, in world space, exactly where the input has the value it carries."""
    img = _ramp(24, 20)
    src = Image(img, scale=(0.7, 1.3), translate=(5.0, -2.0), rotate=rotate, name="in")
    out = nd.restore(img, "lanczos", options={"scale": factor}, normalize="none", tile_size=None)
    data, kwargs, kind = output_layer(out, SourceLayer.from_layer(src), axes="YX", restorer="lanczos",
                                      factor=factor)
    assert kind == "image" and data.shape == (24 * factor, 20 * factor)
    dst = Image(data, **kwargs)
    # interior output pixels (Lanczos reproduces a linear ramp away from the clamped border)
    for j in [(10, 11), (3 * factor, 5 * factor), (15 * factor + 1, 9 * factor + 2)]:
        world = dst.data_to_world(j)
        pos_in = src.world_to_data(world)
        expected = 3.0 * pos_in[0] + 5.0 * pos_in[1] + 10.0  # the ramp at that input position
        # Lanczos-3 reproduces a ramp to ~0.2 here; a centre misplaced by 0.1 px would be off by 0.8
        assert data[j] == pytest.approx(expected, abs=0.25)
        # and that is the pixel-centre rule (j + 0.5) / s - 0.5
        assert pos_in == pytest.approx([(v + 0.5) / factor - 0.5 for v in j], abs=1e-9)


def test_sr_scale_and_translate_values():
    src = SourceLayer(name="a", scale=(2.0, 0.5, 0.5), translate=(1.0, 10.0, 20.0))
    t = output_transform(src, "ZYX", 4)
    assert t["scale"] == pytest.approx((2.0, 0.125, 0.125))
    # shifted by -(0.5 - 0.5/4) input pixels = -0.375 * 0.5 along Y and X, not along Z
    assert t["translate"] == pytest.approx((1.0, 10.0 - 0.1875, 20.0 - 0.1875))
    same = output_transform(src, "ZYX", 1)
    assert same == {"scale": (2.0, 0.5, 0.5), "translate": (1.0, 10.0, 20.0)}
    with pytest.raises(ValueError, match="factor"):
        output_transform(src, "ZYX", 0)
    with pytest.raises(ValueError, match="do not match"):
        output_transform(src, "YX", 2)


def test_current_plane_keeps_its_dimensions_and_lands_on_its_plane():
    shape = (4, 5, 16, 16)  # TZYX
    index, offsets = plane_selection("TZYX", shape, [2.2, 3.9, 7.0, 1.0])
    assert index == (slice(2, 3), slice(4, 5), slice(None), slice(None))
    assert offsets.tolist() == [2.0, 4.0, 0.0, 0.0]
    src = Image(np.zeros(shape), scale=(10.0, 2.0, 1.0, 1.0), translate=(100.0, 1.0, 0.0, 0.0))
    t = output_transform(SourceLayer.from_layer(src), "TZYX", 1, offsets)
    assert t["translate"] == pytest.approx((120.0, 9.0, 0.0, 0.0))
    # clipped to the stack
    index, _ = plane_selection("ZYX", (3, 8, 8), [-4.0, 0.0, 0.0])
    assert index[0] == slice(0, 1)
    index, _ = plane_selection("ZYX", (3, 8, 8), [99.0, 0.0, 0.0])
    assert index[0] == slice(2, 3)


def test_plane_selection_with_channels_and_rgb():
    index, offsets = plane_selection("ZCYX", (6, 2, 8, 8), [3.0, 1.0, 0.0, 0.0])
    assert index == (slice(3, 4), slice(None), slice(None), slice(None))
    assert offsets.tolist() == [3.0, 0.0, 0.0, 0.0]
    # an RGB layer has no data coordinate for its colour axis
    index, offsets = plane_selection("TYXC", (5, 8, 8, 3), [1.0, 0.0, 0.0])
    assert index == (slice(1, 2), slice(None), slice(None), slice(None)) and len(offsets) == 3


def test_suggested_axes_use_reader_labels_else_the_shape():
    assert suggest_axes((5, 32, 32), False) == "ZYX"
    assert suggest_axes((5, 32, 32), False, ("t", "y", "x")) == "TYX"
    assert suggest_axes((32, 32, 3), True) == "YXC"
    assert suggest_axes((4, 32, 32, 3), True, ("t", "y", "x")) == "TYXC"
    assert suggest_axes((4, 6, 32, 32), False) == "TZYX"
    # napari's default labels ('-3', '-2', '-1') or nonsense fall back to the shape
    assert suggest_axes((5, 32, 32), False, ("-3", "-2", "-1")) == "ZYX"
    assert suggest_axes((5, 32, 32), False, ("y", "y", "x")) == "ZYX"
    assert layer_axes("TYXC", True) == "TYX" and layer_axes("CYX", False) == "CYX"
    with pytest.raises(ValueError, match="end with C"):
        layer_axes("CYX", True)


def test_contrast_limits_are_recomputed_from_the_output():
    assert contrast_limits(np.array([[1.0, 5.0], [np.nan, -2.0]])) == [-2.0, 5.0]
    assert contrast_limits(np.full((4, 4), 7, np.uint16)) == [7.0, 8.0]
    assert contrast_limits(np.full((2, 2), np.nan)) == [0.0, 1.0]
    big = np.arange(5_000_000, dtype=np.float32)
    lo, hi = contrast_limits(big)
    assert lo == 0.0 and hi > 4_990_000


def test_output_layer_copies_display_properties_and_records_provenance():
    src_layer = Image(np.zeros((8, 8), np.uint16), name="cells", colormap="magma", blending="additive",
                      gamma=0.7, opacity=0.6, contrast_limits=(0, 1000), units=("um", "um"))
    src = SourceLayer.from_layer(src_layer)
    out = np.linspace(0, 2, 64, dtype=np.float32).reshape(8, 8)
    data, kw, _ = output_layer(out, src, axes="YX", restorer="tv", provenance={"seed": 3, "steps": None})
    assert data is out
    assert kw["name"] == "cells [tv]"
    assert kw["colormap"].name == "magma" and kw["blending"] == "additive"
    assert kw["gamma"] == pytest.approx(0.7) and kw["opacity"] == pytest.approx(0.6)
    assert kw["contrast_limits"] == pytest.approx([0.0, 2.0])  # not the input's (0, 1000)
    assert kw["metadata"] == {"napari_diffir": {"seed": 3, "steps": None}}
    layer = Image(data, **kw)
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]


def test_rgb_output_stays_rgb_without_colormap():
    rgb = Image(np.zeros((8, 8, 3), np.uint8), name="photo", rgb=True)
    data, kw, _ = output_layer(np.zeros((16, 16, 3), np.uint8), SourceLayer.from_layer(rgb), axes="YXC",
                               restorer="lanczos", factor=2)
    assert kw["rgb"] is True and "colormap" not in kw and "contrast_limits" not in kw
    assert kw["scale"] == (0.5, 0.5)
    assert Image(data, **kw).rgb
