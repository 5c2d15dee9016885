"""Synthetic degradations that turn a clean [0, 1] image into a realistic low-quality input.

Microscopy noise is mostly shot noise plus camera read noise (Poisson–Gaussian), so blind
denoising is trained over a range of photon levels and read noises, mixed with plain Gaussian
noise over a sigma range (the classical benchmark). Super-resolution uses MATLAB-compatible
bicubic downsampling (``napari_diffir.resize.imresize``), as the SRDiff and DiffIR recipes do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Degradation",
    "add_gaussian_noise",
    "add_poisson_gaussian_noise",
    "bicubic_downsample",
    "gaussian_blur",
]


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation ``sigma`` (image units)."""
    return (image + rng.normal(0.0, sigma, image.shape)).astype(np.float32)


def add_poisson_gaussian_noise(
    image: np.ndarray, peak: float, read_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Shot noise for ``peak`` photons at intensity 1 plus Gaussian read noise (in photons).

    Returned in the input's units (divided by ``peak`` again), so the clean image stays the
    expected value of the noisy one.
    """
    photons = rng.poisson(np.clip(image, 0.0, None) * peak).astype(np.float32)
    photons += rng.normal(0.0, read_noise, image.shape).astype(np.float32)
    return photons / np.float32(peak)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian PSF blur (a widefield-like optical blur); ``sigma`` in pixels."""
    if sigma <= 0:
        return image.astype(np.float32)
    from scipy import ndimage

    return ndimage.gaussian_filter(image.astype(np.float32), sigma, mode="reflect")


def bicubic_downsample(image: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-compatible antialiased bicubic downsampling by an integer ``scale``."""
    from ..resize import imresize

    out = imresize(np.asarray(image, dtype=np.float64), 1.0 / scale)
    return np.asarray(out, dtype=np.float32)


@dataclass
class Degradation:
    """A random degradation model; ``__call__(clean, rng)`` returns the LQ image.

    Each call draws: an optional blur (``p_blur``, sigma in ``blur_sigma``), the SR
    downsampling when ``scale > 1``, then with probability ``p_noise`` one noise model:
    Gaussian (sigma in ``gaussian_sigma``, image units of the [0, 1] clean image) with
    probability ``p_gaussian``, otherwise Poisson–Gaussian (peak photons log-uniform in
    ``photons``, read noise uniform in ``read_noise`` photons).
    """

    scale: int = 1
    p_noise: float = 1.0
    p_gaussian: float = 0.5
    gaussian_sigma: tuple[float, float] = (0.0, 75.0 / 255.0)
    photons: tuple[float, float] = (1.0, 300.0)
    read_noise: tuple[float, float] = (0.0, 4.0)
    p_blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)

    @classmethod
    def preset(cls, name: str, scale: int = 1) -> Degradation:
        """Named recipes: ``denoise`` (blind Gaussian + Poisson–Gaussian), ``sr`` (bicubic only),
        ``sr-noisy`` (bicubic + mild noise), ``deblur`` (PSF blur + mild noise)."""
        if name == "denoise":
            return cls(scale=1)
        if name == "sr":
            return cls(scale=scale, p_noise=0.0)
        if name == "sr-noisy":
            return cls(scale=scale, p_noise=0.5, gaussian_sigma=(0.0, 10 / 255), photons=(50.0, 1000.0), read_noise=(0.0, 2.0))
        if name == "deblur":
            return cls(scale=1, p_blur=1.0, p_noise=0.7, gaussian_sigma=(0.0, 10 / 255), photons=(50.0, 1000.0))
        raise ValueError(f"Unknown degradation preset {name!r}; known: denoise, sr, sr-noisy, deblur")

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = clean.astype(np.float32)
        if self.p_blur > 0 and rng.random() < self.p_blur:
            x = gaussian_blur(x, float(rng.uniform(*self.blur_sigma)))
        if self.scale > 1:
            x = bicubic_downsample(x, self.scale)
        if self.p_noise > 0 and rng.random() < self.p_noise:
            if rng.random() < self.p_gaussian:
                x = add_gaussian_noise(x, float(rng.uniform(*self.gaussian_sigma)), rng)
            else:
                lo, hi = np.log(self.photons[0]), np.log(self.photons[1])
                peak = float(np.exp(rng.uniform(lo, hi)))
                x = add_poisson_gaussian_noise(x, peak, float(rng.uniform(*self.read_noise)), rng)
        return x

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
