"""MATLAB-compatible bicubic imresize: official golden values, kernel facts, numpy/torch agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_diffir.resize import imresize, imresize_torch, resize_weights

GOLDEN = Path(__file__).parent / "data" / "srdiff" / "resize_official.npz"


def _golden_cases():
    data = np.load(GOLDEN)
    n = len([k for k in data.files if k.startswith("scale")])
    return [(data[f"in_{kind}{i}"], float(data[f"scale{i}"]), data[f"out_{kind}{i}"], kind)
            for i in range(n) for kind in ("f", "u")]


@pytest.mark.parametrize("image,scale,expected,kind", _golden_cases(),
                         ids=lambda v: str(v) if isinstance(v, (float, str)) else None)
def test_matches_the_official_matlab_resize(image, scale, expected, kind):
    """Outputs equal SRDiff's utils/matlab_resize.imresize (floats to 1e-6, uint8 exactly)."""
    out = imresize(image, scale)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    if kind == "u":
        assert np.array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_upscaling_uses_keys_cubic_weights():
    """An interior impulse upscaled x2 spreads with Keys (a=-0.5) weights at distances 1/4, 3/4, ..."""
    x = np.zeros(9)
    x[4] = 1.0
    out = imresize(np.tile(x, (4, 1)), 2)[0]
    # Output pixel k samples input coordinate k/2 - 1/4: pixels 5..12 lie 1.75, 1.25, ..., 1.75 from pixel 4.
    keys = [-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375]
    np.testing.assert_allclose(out[5:13], keys, atol=1e-12)
    assert np.all(out[:5] == 0) and np.all(out[13:] == 0)
    assert out.sum() == pytest.approx(2.0)  # each input pixel contributes to 2 outputs x weights summing to 1


def test_weights_are_normalised_and_mirror_the_border():
    """Rows of weights sum to 1 and taps past the border reflect into the image (symmetric)."""
    for n_in, n_out, s in ((4, 16, 4.0), (16, 4, 0.25), (7, 5, 0.7)):
        w, idx = resize_weights(n_in, n_out, s)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        assert idx.min() >= 0 and idx.max() < n_in
    _, idx = resize_weights(4, 8, 2.0)
    # First output pixel samples coordinate -1/4: taps -2, -1, 0, 1 mirror to 1, 0, 0, 1.
    assert list(idx[0]) == [1, 0, 0, 1]


def test_linear_ramps_survive_away_from_borders():
    """Cubic convolution reproduces linear functions: interior pixels of a ramp stay on the ramp."""
    ramp = np.add.outer(np.arange(24.0), 2 * np.arange(20.0))
    for s in (2, 4, 0.5, 0.25):
        out = imresize(ramp, s)
        u = (np.arange(1, out.shape[0] + 1) / s + 0.5 * (1 - 1 / s)) - 1  # 0-based input coordinate
        v = (np.arange(1, out.shape[1] + 1) / s + 0.5 * (1 - 1 / s)) - 1
        expected = np.add.outer(u, 2 * v)
        margin = int(np.ceil(3 * max(s, 1 / s)))
        inner = (slice(margin, -margin), slice(margin, -margin))
        np.testing.assert_allclose(out[inner], expected[inner], atol=1e-9)


def test_output_size_dtype_and_channels():
    """Sizes are ceil(scale * n); uint8 stays uint8, float32 stays float32; channels are independent."""
    rgb = np.random.default_rng(0).random((10, 7, 3)).astype(np.float32)
    out = imresize(rgb, 0.5)
    assert out.shape == (5, 4, 3) and out.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(out[..., c], imresize(rgb[..., c], 0.5), atol=1e-7)
    u8 = (rgb * 255).astype(np.uint8)
    assert imresize(u8, 3).dtype == np.uint8 and imresize(u8, 3).shape == (30, 21, 3)
    const = np.full((6, 6), 0.3)
    np.testing.assert_allclose(imresize(const, 4), 0.3)
    np.testing.assert_allclose(imresize(const, 1 / 3), 0.3)


def test_integer_images_are_clipped_and_rounded():
    """uint8 overshoot at a hard edge is clipped to 0..255 (the float result leaves the range)."""
    edge = np.zeros((8, 8), np.uint8)
    edge[:, 4:] = 255
    f = imresize(edge.astype(np.float64), 4)
    assert f.min() < 0 and f.max() > 255
    u = imresize(edge, 4)
    assert u.min() == 0 and u.max() == 255
    # rounded after each axis (as MATLAB), so within one grey level of the clipped float result
    assert np.abs(u.astype(float) - np.clip(f, 0, 255)).max() <= 1.0


def test_torch_version_agrees_with_numpy():
    """imresize_torch on (C, H, W) equals imresize on (H, W, C) to float precision."""
    img = np.random.default_rng(1).random((2, 9, 11))
    for s in (4, 0.25, 0.7):
        t = imresize_torch(torch.from_numpy(img), s).numpy()
        n = np.moveaxis(imresize(np.moveaxis(img, 0, -1), s), -1, 0)
        np.testing.assert_allclose(t, n, atol=1e-12)
    t32 = imresize_torch(torch.from_numpy(img).float()[None], 4)
    assert t32.dtype == torch.float32 and t32.shape == (1, 2, 36, 44)


def test_bad_input_is_refused_and_the_caller_array_kept():
    """Wrong ndim, dtype or scale raise ValueError; the input is never modified."""
    img = np.random.default_rng(2).random((6, 6))
    before = img.copy()
    imresize(img, 2)
    assert np.array_equal(img, before)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\) array, but got shape \(1, 6, 6, 1\)"):
        imresize(img[None, ..., None], 2)
    with pytest.raises(ValueError, match="positive number, but got 0"):
        imresize(img, 0)
    with pytest.raises(ValueError, match="positive number, but got 'x'"):
        imresize(img, "x")
    with pytest.raises(ValueError, match="dtype bool"):
        imresize(img > 0.5, 2)
    with pytest.raises(ValueError, match="float tensor"):
        imresize_torch(torch.zeros(4, 4, dtype=torch.uint8), 2)


def test_torch_version_traces_under_torch_compile():
    """The resize matrices are built eagerly, so a compiled training step (which upsamples the LR
    batch) traces without touching the cached numpy weights, and gives the eager result."""
    import warnings

    import torch

    from napari_diffir.resize import imresize_torch

    x = torch.rand(2, 1, 12, 10)

    def step(t):
        return imresize_torch(t, 4) * 2 - 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. dynamo tracing into the lru_cache
        out = torch.compile(step, backend="eager")(x)
    torch.testing.assert_close(out, step(x), atol=0, rtol=0)
    assert out.shape == (2, 1, 48, 40)
