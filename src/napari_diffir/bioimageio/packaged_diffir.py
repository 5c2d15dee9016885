"""DiffIR as a bioimage.io package runs it: one deterministic ``forward(x) -> y``.

bioimage.io calls ``forward`` on a float32 batch ``(B, C, H, W)`` that its preprocessing has
already scaled (1st..99.8th percentile -> 0..1, as napari-diffir's engine does) and expects the
restored batch back. napari-diffir's DiffIR restorer starts the 4-step IPR diffusion from the
engine's image-wide noise vector (:meth:`~napari_diffir.TileContext.noise_vector`); here that
vector is computed once from the tile seed fixed at export, so the package reproduces
``napari_diffir.restore(..., seed=S, tile_size=None)``. This module is copied, with the model
modules, into the package's single architecture file (:mod:`.flatten`), so it imports nothing
from napari-diffir but those modules.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.diffir._arch.diffir import DiffIRS2
from ..noise import field_noise

__all__ = ["PackagedDiffIR"]

_VECTOR_STREAM = 1_000_000
"""Stream of the engine's image-wide noise vectors (``TileContext.noise_vector``)."""


class PackagedDiffIR(nn.Module):
    """DiffIR stage 2 with its 4-step IPR diffusion started from a fixed noise vector.

    :param hyperparameters: ``DiffIRS2.hyperparameters`` (the constructor's keywords).
    :param seed: the tile seed the engine derives from the run's seed (see the package's config).
    """

    def __init__(self, *, hyperparameters: dict, seed: int) -> None:
        super().__init__()
        self.model = DiffIRS2(**hyperparameters)
        n = self.model.ipr_dim
        start = field_noise(seed, _VECTOR_STREAM, 1, 0, 0, 1, n).reshape(1, n)
        self.register_buffer("ipr_start", start, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.ipr_start.to(x.dtype).expand(x.shape[0], -1)
        return self.model.restore(x, noise=noise)
