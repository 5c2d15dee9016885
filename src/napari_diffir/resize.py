"""MATLAB-compatible bicubic resizing (``imresize``), antialiased when shrinking.

SRDiff's data pipeline makes its LR images and its ``img_lr_up`` with MATLAB's bicubic
``imresize``; reproducing that kernel (Keys a = -0.5, widened by 1/scale when shrinking, symmetric
borders, weights normalised per output pixel) is what lets official checkpoints see the inputs
they were trained on. One function computes the per-axis weights; :func:`imresize` applies them
to numpy arrays (channel-last) and :func:`imresize_torch` to ``(..., H, W)`` tensors.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["imresize", "imresize_torch", "output_size", "resize_weights"]

KERNEL_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def output_size(size: int, scale: float) -> int:
    """MATLAB's output length for one axis: ``ceil(scale * size)``."""
    return int(math.ceil(scale * size))


def _check_scale(scale) -> float:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"imresize scale must be a positive number, but got {scale!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"imresize scale must be a positive number, but got {scale!r}")
    return s


@lru_cache(maxsize=64)
def resize_weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-pixel ``(weights, indices)``, each ``(out_len, taps)``, for one axis.

    Output pixel ``i`` (1-based) maps to input coordinate ``u = i/scale + (1 - 1/scale)/2``; when
    shrinking, the kernel is stretched by ``1/scale`` (antialiasing). Indices past the border are
    mirrored (MATLAB's ``symmetric`` padding) and taps that are zero for every pixel are dropped.
    The arrays are read-only because they are cached.
    """
    if scale < 1:
        width = KERNEL_WIDTH / scale
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
    else:
        width = KERNEL_WIDTH
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = (left[:, None] + np.arange(taps) - 1).astype(np.int64)
    weights = kernel(u[:, None] - idx - 1)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate((np.arange(in_len), np.arange(in_len - 1, -1, -1)))
    idx = mirror[np.mod(idx, mirror.size)]
    keep = np.any(weights != 0, axis=0)
    weights, idx = weights[:, keep], idx[:, keep]
    weights.setflags(write=False)
    idx.setflags(write=False)
    return weights, idx


def _axis_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """The same weights as a dense ``(out_len, in_len)`` matrix (mirrored taps summed)."""
    weights, idx = resize_weights(in_len, out_len, scale)
    m = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(m, (np.repeat(np.arange(out_len), idx.shape[1]), idx.ravel()), weights.ravel())
    return m


def _round_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.around(np.clip(values, info.min, info.max)).astype(dtype)


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize a 2-D ``(H, W)`` or channel-last ``(H, W, C)`` array by ``scale`` like MATLAB.

    The output is ``ceil(scale * H) x ceil(scale * W)``. Rows are resized first, then columns, in
    float64. Integer images are clipped and rounded back to their dtype after *each* axis (as
    MATLAB and SRDiff's data pipeline do); float images keep their dtype (float16 becomes
    float32) and are not clipped. The input array is never modified.
    """
    s = _check_scale(scale)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize expects a (H, W) or (H, W, C) array, but got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"imresize expects an integer or float array, but got dtype {arr.dtype}")
    if min(arr.shape[:2]) < 1:
        raise ValueError(f"imresize expects a non-empty image, but got shape {arr.shape}")
    out_h, out_w = output_size(arr.shape[0], s), output_size(arr.shape[1], s)
    integer = np.issubdtype(arr.dtype, np.integer)
    out = arr
    for axis, (n_in, n_out) in enumerate(((arr.shape[0], out_h), (arr.shape[1], out_w))):
        weights, idx = resize_weights(n_in, n_out, s)
        taken = np.take(out, idx, axis=axis).astype(np.float64)  # (.., n_out, taps, ..)
        w = weights.reshape(weights.shape + (1,) * (out.ndim - axis - 1))
        out = (taken * w).sum(axis=axis + 1)
        if integer:
            out = _round_to(out, arr.dtype)
    if integer:
        return out
    return out.astype(np.float32 if arr.dtype == np.float16 else arr.dtype, copy=False)


def imresize_torch(x, scale: float):
    """:func:`imresize` for a float tensor ``(..., H, W)`` (channel-first), on its device and dtype.

    Applies the same per-axis weights as dense matrices, which is fast for tile-sized inputs.
    Float only: there is no per-axis rounding.
    """
    import torch

    s = _check_scale(scale)
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError(f"imresize_torch expects a float tensor (..., H, W), but got {type(x).__name__} "
                         f"{getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}")
    h, w = x.shape[-2:]
    build = torch.compiler.disable(_axis_matrix_tensor)  # numpy-built constants: eager, never traced
    mh = build(h, output_size(h, s), s).to(dtype=x.dtype, device=x.device)
    mw = build(w, output_size(w, s), s).to(dtype=x.dtype, device=x.device)
    return mh @ x @ mw.T


@lru_cache(maxsize=64)
def _axis_matrix_tensor(in_len: int, out_len: int, scale: float):
    """:func:`_axis_matrix` as a float64 CPU tensor (cached; callers cast and move a copy)."""
    import torch

    return torch.from_numpy(_axis_matrix(in_len, out_len, scale))
