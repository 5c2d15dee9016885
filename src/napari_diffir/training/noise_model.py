"""A synthetic noise model fitted to the user's own noisy images, for training a denoiser on clean ones.

A microscope's noise is shot noise plus read noise (Poisson–Gaussian): the variance grows
linearly with the signal, ``var(x) = x / peak + (read / peak)^2`` in the units of a [0, 1]
image, where ``peak`` is the photon count at intensity 1 and ``read`` the read noise in
photons (the parametrisation of :func:`~napari_diffir.training.degradations.add_poisson_gaussian_noise`).
:func:`estimate_noise` fits that line to a noisy image (Foi et al.'s local mean / variance
regression, on the diagonal Haar detail, which cancels smooth signal), so that the clean
training images can be degraded like the data the model will restore.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import TrainingDataError
from .degradations import Degradation

__all__ = ["NoiseModel", "estimate_noise", "estimate_noise_of"]

KINDS = ("gaussian", "poisson-gaussian")


@dataclass(frozen=True)
class NoiseModel:
    """A noise level in the units of a [0, 1] (percentile-normalised) image."""

    kind: str
    """``"gaussian"`` (``sigma``) or ``"poisson-gaussian"`` (``peak``, ``read``)."""
    sigma: float = 0.0
    """Standard deviation of Gaussian noise, image units."""
    peak: float = 0.0
    """Photons at intensity 1 (shot noise); smaller is noisier."""
    read: float = 0.0
    """Gaussian read noise, in photons."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Noise kind must be one of {', '.join(KINDS)}, but got {self.kind!r}")
        if self.kind == "gaussian" and not self.sigma > 0:
            raise ValueError(f"Gaussian noise needs a sigma > 0, but got {self.sigma}")
        if self.kind == "poisson-gaussian" and not (self.peak > 0 and self.read >= 0):
            raise ValueError(f"Poisson–Gaussian noise needs peak > 0 and read >= 0, but got {self.peak}, {self.read}")

    @classmethod
    def parse(cls, spec: str) -> NoiseModel:
        """``gaussian:SIGMA`` or ``poisson-gaussian:PEAK,READ`` (the ``--noise`` syntax)."""
        kind, _, values = str(spec).partition(":")
        try:
            numbers = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            numbers = []
        if kind == "gaussian" and len(numbers) == 1:
            return cls("gaussian", sigma=numbers[0])
        if kind == "poisson-gaussian" and len(numbers) == 2:
            return cls("poisson-gaussian", peak=numbers[0], read=numbers[1])
        raise ValueError(f"Expected a noise model 'gaussian:SIGMA' or 'poisson-gaussian:PEAK,READ', but got {spec!r}")

    def spec(self) -> str:
        """The text :meth:`parse` reads back (what the model card's command records)."""
        if self.kind == "gaussian":
            return f"gaussian:{self.sigma:.4g}"
        return f"poisson-gaussian:{self.peak:.4g},{self.read:.4g}"

    def describe(self) -> str:
        """A line for people: the level and what it means."""
        if self.kind == "gaussian":
            return f"Gaussian, sigma {self.sigma:.3f} ({self.sigma * 255:.1f}/255)"
        return f"Poisson–Gaussian, {self.peak:.3g} photons at full intensity, read noise {self.read:.2g} photons"

    def degradation(self, jitter: float = 0.25) -> Degradation:
        """Training degradation around this level (+-``jitter``, so the model tolerates a
        slightly different level; it stays blind at inference)."""
        lo, hi = 1.0 - jitter, 1.0 + jitter
        if self.kind == "gaussian":
            return Degradation(scale=1, p_noise=1.0, p_gaussian=1.0, gaussian_sigma=(self.sigma * lo, self.sigma * hi))
        return Degradation(scale=1, p_noise=1.0, p_gaussian=0.0, photons=(self.peak / hi, self.peak / lo),
                           read_noise=(self.read * lo, self.read * hi))


def _haar_pairs(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local means and diagonal Haar details of the 2x2 blocks of ``plane``."""
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    p = plane[:h, :w].astype(np.float64)
    a, b, c, d = p[0::2, 0::2], p[0::2, 1::2], p[1::2, 0::2], p[1::2, 1::2]
    return ((a + b + c + d) / 4).ravel(), ((a - b - c + d) / 2).ravel()


def estimate_noise(image: np.ndarray, bins: int = 16) -> NoiseModel:
    """Fit ``var = slope * mean + offset`` to ``image`` (2-D or a stack of planes, in the units the
    model is wanted in: normalise it first as the training images are) and return the model.

    The signal-dependent (Poisson) part is kept when its slope is significant (three standard
    errors of the fit) and the fitted variance of the bright pixels (90th percentile) is at
    least 1.5 times that of the dark ones (10th); otherwise the result is Gaussian with the
    median level.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim < 2 or min(a.shape[-2:]) < 8:
        raise TrainingDataError(f"Estimating the noise needs an image of at least 8x8 pixels, but got shape {a.shape}")
    planes = a.reshape(-1, *a.shape[-2:])
    planes = planes[:: max(1, len(planes) // 8)]  # up to ~8 planes of a stack are plenty
    means, details = zip(*(_haar_pairs(p) for p in planes))
    m, d = np.concatenate(means), np.concatenate(details)
    if not np.isfinite(d).all() or not np.any(d):
        raise TrainingDataError("The noisy image has no measurable noise (it is constant or not finite)")
    edges = np.unique(np.quantile(m, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, len(edges) - 2)
    centers, variances, counts = [], [], []
    for i in range(len(edges) - 1):
        sel = d[idx == i]
        if sel.size < 50:
            continue
        mad = np.median(np.abs(sel - np.median(sel)))
        centers.append(float(np.median(m[idx == i])))
        variances.append(float((1.4826 * mad) ** 2))
        counts.append(sel.size)
    if len(centers) < 2:
        raise TrainingDataError("The noisy image is too small or too flat to estimate its noise level")
    x, y, wts = np.array(centers), np.array(variances), np.sqrt(counts)
    (slope, offset), cov = np.polyfit(x, y, 1, w=wts, cov="unscaled" if len(x) < 4 else True)
    dark, bright = (float(v) for v in np.quantile(m, [0.1, 0.9]))
    offset = max(float(offset), 0.0)
    significant = slope > 3 * np.sqrt(max(cov[0, 0], 0.0))
    if significant and slope * bright + offset >= 1.5 * (slope * dark + offset):
        peak = 1.0 / slope
        return NoiseModel("poisson-gaussian", peak=float(peak), read=float(np.sqrt(offset) * peak))
    sigma = float(np.sqrt(np.median(y)))
    if not sigma > 0:
        raise TrainingDataError("The noisy image has no measurable noise (its fine detail is zero)")
    return NoiseModel("gaussian", sigma=sigma)


def estimate_noise_of(planes: list[np.ndarray]) -> NoiseModel:
    """The noise model of a user's noisy planes (a file's or a layer's), each normalised by its
    own percentiles as training and inference normalise them; up to 8 planes are used."""
    from .data import percentile_normalize

    if not planes:
        raise TrainingDataError("No noisy image given to estimate the noise from")
    picked = planes[:: max(1, len(planes) // 8)][:8]
    shapes = {p.shape for p in picked}
    if len(shapes) > 1:
        picked = [p for p in picked if p.shape == picked[0].shape]
    return estimate_noise(np.stack([percentile_normalize(p) for p in picked]))
