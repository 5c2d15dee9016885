"""Intensity normalisation to the [0, 1] range restorers work in, and its inverse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("percentile", "minmax", "dtype", "none")
DEFAULT_PERCENTILES = (1.0, 99.8)


@dataclass(frozen=True)
class Normalizer:
    """Per-channel affine map ``(x - lo) / (hi - lo)``; ``lo``/``hi`` have one entry per channel."""

    lo: np.ndarray
    hi: np.ndarray

    def forward(self, plane: np.ndarray) -> np.ndarray:
        """(C, Y, X) -> float32 normalised (C, Y, X)."""
        lo, span = self._lo_span(plane.shape[0])
        return ((plane.astype(np.float32, copy=False) - lo) / span).astype(np.float32, copy=False)

    def inverse(self, plane: np.ndarray) -> np.ndarray:
        lo, span = self._lo_span(plane.shape[0])
        return plane * span + lo

    def _lo_span(self, channels: int):
        lo = self.lo.astype(np.float32)
        hi = self.hi.astype(np.float32)
        if lo.size != channels:  # a restorer changed the channel count (e.g. RGB -> gray)
            lo, hi = np.full(channels, lo.mean(), np.float32), np.full(channels, hi.mean(), np.float32)
        span = hi - lo
        span[span <= 0] = 1.0
        return lo[:, None, None], span[:, None, None]


def fit_normalizer(
    work: np.ndarray, mode: str = "percentile", percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> Normalizer:
    """Fit ``lo``/``hi`` per channel over the whole (N, C, Y, X) array, so all slices share them."""
    if mode not in MODES:
        raise ValueError(f"normalize must be one of {MODES}, but got {mode!r}")
    channels = work.shape[1]
    if mode == "none":
        return Normalizer(np.zeros(channels), np.ones(channels))
    if mode == "dtype":
        if np.issubdtype(work.dtype, np.integer):
            info = np.iinfo(work.dtype)
            return Normalizer(np.full(channels, float(min(info.min, 0))), np.full(channels, float(info.max)))
        return Normalizer(np.zeros(channels), np.ones(channels))
    lo = np.empty(channels)
    hi = np.empty(channels)
    p_lo, p_hi = (0.0, 100.0) if mode == "minmax" else percentiles
    if not 0 <= p_lo < p_hi <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, but got {percentiles}")
    for c in range(channels):
        sample = _subsample(work[:, c])
        lo[c], hi[c] = np.percentile(sample, [p_lo, p_hi])
        if hi[c] <= lo[c]:  # a flat channel: keep values, avoid division by zero
            hi[c] = lo[c] + 1.0
    return Normalizer(lo, hi)


def _subsample(channel: np.ndarray, limit: int = 4_000_000) -> np.ndarray:
    """At most ``limit`` evenly strided values: percentiles of huge stacks without a full copy."""
    flat = channel.reshape(-1) if channel.flags.c_contiguous else channel.ravel()
    if flat.size <= limit:
        return flat
    return flat[:: flat.size // limit + 1]


def to_dtype(image: np.ndarray, dtype) -> np.ndarray:
    """Cast float output to ``dtype``: integers are rounded and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype, copy=False)
