"""Intensity normalisation to the range a restorer works in, and its inverse.

Every mode is a per-channel affine map whose statistics are taken once over the whole image (all
planes), never per tile, so a tiled run normalises exactly as an untiled one: percentiles to
[0, 1] (``percentile``, ``minmax``), the dtype's range (``dtype``), zero mean and unit variance
(``meanstd``, bioimage.io's ``zero_mean_unit_variance``), or nothing (``none``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("percentile", "minmax", "dtype", "meanstd", "none")
DEFAULT_PERCENTILES = (1.0, 99.8)
MIN_LEVELS = 1024
"""Fewest distinct output values across an image's range that a float output must offer (unless
the input itself has fewer)."""
MEANSTD_EPS = 1e-6
"""Added to the standard deviation by ``meanstd`` (as bioimage.io's ``zero_mean_unit_variance``)."""


@dataclass(frozen=True)
class Normalizer:
    """Per-channel affine map ``(x - lo) / (hi - lo)``; ``lo``/``hi`` have one entry per channel
    (``meanstd``: ``lo`` the mean, ``hi - lo`` the standard deviation plus ``MEANSTD_EPS``)."""

    lo: np.ndarray
    hi: np.ndarray

    def forward(self, plane: np.ndarray) -> np.ndarray:
        """(C, Y, X) -> float32 normalised (C, Y, X).

        The offset is subtracted in float64 before the cast: ``2**40 + k`` (int64) or
        ``1e9 + k`` (float64) would lose ``k`` in float32 before the subtraction.
        """
        lo, span = self._lo_span(plane.shape[0])
        out = np.empty(plane.shape, np.float32)
        for rows in _bands(plane.shape):  # float64 a band at a time: no plane-sized temporaries
            out[:, rows] = (plane[:, rows].astype(np.float64, copy=False) - lo) / span
        return out

    def inverse(self, plane: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Normalised (C, Y, X) -> intensities in ``dtype`` (computed in float64)."""
        lo, span = self._lo_span(plane.shape[0])
        out = np.empty(plane.shape, dtype)
        for rows in _bands(plane.shape):
            out[:, rows] = plane[:, rows].astype(np.float64, copy=False) * span + lo
        return out

    def _lo_span(self, channels: int):
        lo = np.asarray(self.lo, np.float64)
        hi = np.asarray(self.hi, np.float64)
        if lo.size != channels:  # a restorer changed the channel count (e.g. RGB -> gray)
            lo, hi = np.full(channels, lo.mean()), np.full(channels, hi.mean())
        span = hi - lo
        span[span <= 0] = 1.0
        return lo[:, None, None], span[:, None, None]

    def representable_problem(self, input_dtype, output_dtype) -> str | None:
        """Why a result in ``output_dtype`` (``None``: float32) cannot hold this image's values.

        Refused: a range that is not finite, values beyond the dtype's range, and a range the
        dtype resolves in fewer steps than the input does (``1e9 + [0, 1000]`` in float32 has
        16 distinct values).
        """
        lo, hi = np.asarray(self.lo, np.float64), np.asarray(self.hi, np.float64)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and np.isfinite(hi - lo).all()):
            return ("The image's intensity range is not finite (it spans more than float64 can hold); "
                    "rescale it first")
        out = np.dtype(np.float32 if output_dtype is None else output_dtype)
        if not np.issubdtype(out, np.floating):
            return None  # integers are rounded and clipped by design
        largest = float(np.max(np.maximum(np.abs(lo), np.abs(hi))))
        span = float(np.min(hi - lo))
        hint = "pass output_dtype='float64' (or 'input'), or subtract the offset first"
        if largest > float(np.finfo(out).max):
            return f"The image's values (up to {largest:.3g}) exceed the range of {out} output; {hint}"
        step = float(np.spacing(out.type(largest)))
        given = np.dtype(input_dtype)
        own = 1.0 if np.issubdtype(given, np.integer) else float(np.spacing(given.type(largest)))
        if step > max(own, span / MIN_LEVELS):
            return (f"{out} output cannot resolve this image: its values around {largest:.6g} spread over "
                    f"only {span:.6g}, and {out} steps by {step:.3g} there; {hint}")
        return None


BAND_VALUES = 1 << 20
"""Values per band when normalising a plane (8 MiB of float64 temporaries at a time)."""


def _bands(shape: tuple[int, ...]) -> list[slice]:
    """Row slices of a (C, Y, X) plane, each holding about :data:`BAND_VALUES` values."""
    rows = max(1, BAND_VALUES // max(1, shape[0] * shape[-1]))
    return [slice(y, y + rows) for y in range(0, shape[1], rows)] or [slice(0, 0)]


def fit_normalizer(
    work: np.ndarray, mode: str = "percentile", percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> Normalizer:
    """Fit ``lo``/``hi`` per channel over the whole (N, C, Y, X) array, so all slices share them."""
    if mode not in MODES:
        raise ValueError(f"normalize must be one of {MODES}, but got {mode!r}")
    channels = work.shape[1]
    if mode == "none":
        return Normalizer(np.zeros(channels), np.ones(channels))
    if mode == "meanstd":
        return meanstd_normalizer([channel_moments(np.asarray(work[n])) for n in range(work.shape[0])])
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


def channel_moments(block: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """(C, 3): count, mean and sum of squared deviations of each channel of ``block``, in float64."""
    values = np.moveaxis(block, channel_axis, 0).reshape(block.shape[channel_axis], -1).astype(np.float64)
    mean = values.mean(axis=1)
    m2 = ((values - mean[:, None]) ** 2).sum(axis=1)
    return np.stack([np.full(mean.shape, float(values.shape[1])), mean, m2], axis=1)


def mean_std(parts) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population, as bioimage.io's) standard deviation from the
    :func:`channel_moments` of an image's parts (planes or chunks), combined exactly (Chan et
    al.), so chunked and whole-image statistics agree."""
    parts = [p for p in parts if p[0, 0] > 0]
    n, mean, m2 = (np.asarray(v, np.float64) for v in parts[0].T)
    for part in parts[1:]:
        nb, mb, m2b = part.T
        total = n + nb
        delta = mb - mean
        mean = mean + delta * nb / total
        m2 = m2 + m2b + delta**2 * n * nb / total
        n = total
    return mean, np.sqrt(m2 / n)


def meanstd_normalizer(parts) -> Normalizer:
    """The ``meanstd`` normaliser of an image from the :func:`channel_moments` of its parts."""
    mean, std = mean_std(parts)
    return Normalizer(mean, mean + std + MEANSTD_EPS)


def _subsample(channel: np.ndarray, limit: int = 4_000_000) -> np.ndarray:
    """At most ``limit`` evenly strided values: percentiles of huge stacks without a full copy."""
    flat = channel.reshape(-1) if channel.flags.c_contiguous else channel.ravel()
    if flat.size <= limit:
        return flat
    return flat[:: flat.size // limit + 1]


def working_dtype(output_dtype) -> np.dtype:
    """The float dtype a result is assembled in: float64 where float32 would lose what the
    output can hold (float64 and 32/64-bit integer outputs), else float32."""
    if output_dtype is None:
        return np.dtype(np.float32)
    out = np.dtype(output_dtype)
    if out.itemsize >= 8 or (np.issubdtype(out, np.integer) and out.itemsize >= 4):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def to_dtype(image: np.ndarray, dtype) -> np.ndarray:
    """Cast float output to ``dtype``: integers are rounded and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        top = float(info.max)
        if int(top) > info.max:  # 2**63 - 1 rounds up to 2**63 in float64, which would wrap
            top = float(np.nextafter(top, 0.0))
        return np.clip(np.rint(image), float(info.min), top).astype(dtype)
    return image.astype(dtype, copy=False)
