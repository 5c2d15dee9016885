"""Classical baselines: Lanczos upscaling and blind non-local-means / TV denoising.

They make the engine testable without trained weights and stay as references in benchmarks.
torch is imported inside the methods, so that listing restorers stays cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..hookspecs import hookimpl
from ..restorer import Option, Restorer, RestorerInfo, TileContext

if TYPE_CHECKING:
    import torch


def lanczos_matrix(n_in: int, scale: int, a: int = 3) -> torch.Tensor:
    """(n_in*scale, n_in) Lanczos-``a`` resampling matrix; edges are handled by clamping indices."""
    import torch

    n_out = n_in * scale
    centers = (torch.arange(n_out, dtype=torch.float64) + 0.5) / scale - 0.5
    base = torch.floor(centers).long()
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    for k in range(-a + 1, a + 1):
        idx = base + k
        d = centers - idx.double()
        wgt = torch.sinc(d) * torch.sinc(d / a)
        wgt = torch.where(d.abs() < a, wgt, torch.zeros_like(wgt))
        mat.index_put_((torch.arange(n_out), idx.clamp(0, n_in - 1)), wgt, accumulate=True)
    return (mat / mat.sum(dim=1, keepdim=True)).float()


class Lanczos(Restorer):
    info = RestorerInfo(
        name="lanczos",
        display_name="Lanczos upscaling (baseline)",
        task="super-resolution",
        scale=2,
        in_channels=None,
        tile_overlap=8,
        tile_size=1024,
        bytes_per_pixel=64,
        options=(Option("scale", int, 2, choices=(2, 3, 4, 8), help="upscaling factor"),),
        description="Separable Lanczos-3 interpolation; the reference every SR model must beat.",
    )

    def __init__(self, scale: int | None = None, **options) -> None:
        super().__init__(scale=scale or 2, **options)
        self.info = type(self).info.replace(scale=scale or 2)

    def restore_tile(self, x: torch.Tensor, ctx: TileContext) -> torch.Tensor:
        import torch

        s = self.info.scale
        my = lanczos_matrix(x.shape[-2], s).to(x.device)
        mx = lanczos_matrix(x.shape[-1], s).to(x.device)
        return torch.einsum("yh,bchw,xw->bcyx", my, x.float(), mx)


class _SkimageDenoiser(Restorer):
    """Blind classical denoisers: the noise level is estimated per tile from the image itself."""

    def restore_tile(self, x: torch.Tensor, ctx: TileContext) -> torch.Tensor:
        import torch

        arr = x.detach().float().cpu().numpy()
        out = np.empty_like(arr)
        for b in range(arr.shape[0]):
            for c in range(arr.shape[1]):
                out[b, c] = self._denoise(arr[b, c])
        return torch.from_numpy(out).to(x.device)

    @staticmethod
    def _sigma(img: np.ndarray) -> float:
        from skimage.restoration import estimate_sigma

        sigma = float(estimate_sigma(img))
        # a flat tile has no detail to estimate noise from (skimage answers NaN): no noise
        return sigma if math.isfinite(sigma) else 0.0


class NonLocalMeans(_SkimageDenoiser):
    info = RestorerInfo(
        name="nlmeans",
        display_name="Non-local means (baseline)",
        task="denoise",
        in_channels=1,
        tile_overlap=16,
        tile_size=512,
        bytes_per_pixel=256,
        options=(Option("strength", float, 0.8, min=0.05, max=5.0, help="h as a multiple of the estimated sigma"),),
        description="scikit-image fast non-local means with a blindly estimated noise level.",
    )

    def _denoise(self, img: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_nl_means

        sigma = self._sigma(img)
        if sigma <= 0.0:  # nothing to remove, and h = 0 would divide by zero
            return img.astype(np.float32, copy=True)
        strength = self.options.get("strength") or 0.8
        return denoise_nl_means(
            img, h=strength * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
        ).astype(np.float32)


class TotalVariation(_SkimageDenoiser):
    info = RestorerInfo(
        name="tv",
        display_name="Total variation (baseline)",
        task="denoise",
        in_channels=1,
        tile_overlap=16,
        tile_size=512,
        bytes_per_pixel=256,
        options=(Option("strength", float, 1.0, min=0.05, max=10.0, help="TV weight as a multiple of the estimated sigma"),),
        description="scikit-image Chambolle total-variation denoising with a blindly estimated noise level.",
    )

    def _denoise(self, img: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_tv_chambolle

        strength = self.options.get("strength") or 1.0
        weight = max(strength * self._sigma(img), 1e-4)
        return denoise_tv_chambolle(img, weight=weight).astype(np.float32)


@hookimpl
def register_restorers(register):
    register(Lanczos)
    register(NonLocalMeans)
    register(TotalVariation)
