"""SRDiff as a bioimage.io package runs it: one deterministic ``forward(x) -> y``.

bioimage.io calls ``forward`` on a float32 batch ``(B, C, h, w)`` in [0, 1] (its preprocessing
scales the 1st..99.8th percentile to 0..1, as napari-diffir's engine does) and expects the
super-resolved batch back. Every draw of the sampler (``x_T`` and any per-step noise) is cut
from the engine's noise field (:mod:`napari_diffir.noise`) at the origin with the tile seed
fixed at export, so the package reproduces ``napari_diffir.restore(..., seed=S,
tile_size=None)``. This module is copied, with the model modules, into the package's single
architecture file (:mod:`.flatten`), so it imports nothing from napari-diffir but those modules.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.srdiff._diffusion import SRDiff
from ..noise import field_noise

__all__ = ["PackagedSRDiff"]


class PackagedSRDiff(nn.Module):
    """SRDiff with its sampler (and every draw it makes) fixed: ``x`` in [0, 1] -> SR in [0, 1].

    :param hyperparameters: ``SRDiff.hyperparameters`` (the constructor's keywords).
    :param seed: the tile seed the engine derives from the run's seed.
    :param sampler: ``ddpm``, ``ddim``, ``dpm++2m`` or ``dpm++2m-sde``.
    :param steps: sampling steps (``None``: the sampler's default).
    :param eta: DDIM stochasticity (its draws come from the fixed field too).
    :param temperature: scale of every draw (1: the model's distribution; see ``SRDiff.sample``).
    """

    def __init__(self, *, hyperparameters: dict, seed: int, sampler: str, steps: int | None = None,
                 eta: float = 0.0, temperature: float = 1.0) -> None:
        super().__init__()
        self.model = SRDiff(**hyperparameters)
        self.seed, self.sampler, self.steps, self.eta = int(seed), str(sampler), steps, float(eta)
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seed = self.seed

        def noise(like: torch.Tensor, stream: int) -> torch.Tensor:
            b, c, h, w = like.shape
            z = field_noise(seed, stream, c, 0, 0, h, w, device=like.device).to(like.dtype)
            return z.unsqueeze(0).expand(b, -1, -1, -1).clone()

        img_lr = x.float() * 2 - 1
        sr = self.model.sample(img_lr, self.model.upsample_lr(img_lr), steps=self.steps, sampler=self.sampler,
                               eta=self.eta, noise=noise, temperature=self.temperature)
        return ((sr + 1) / 2).to(x.dtype)
