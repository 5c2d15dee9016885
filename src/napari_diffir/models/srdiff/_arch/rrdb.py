"""The LR encoder of SRDiff: ESRGAN's RRDBNet (no batch norm) that also returns trunk features.

Pre-trained on its own with an L1 loss (it is then a plain x``scale`` SR network) and frozen while
the diffusion U-Net trains; SRDiff only uses its trunk features as the condition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import RRDB

__all__ = ["RRDBNet", "cond_channels"]

SCALES = (2, 4, 8)


def cond_channels(nf: int, nb: int) -> int:
    """Channels of the condition: every third trunk feature from index 2 (``feas[2::3]``)."""
    return nf * ((nb + 1) // 3)


class RRDBNet(nn.Module):
    """ESRGAN generator with nearest-neighbour x2 stages (``upconv1``, ``upconv2``[, ``upconv3``]).

    Input and output are in [-1, 1] (mapped to [0, 1] inside, as the official code does). With
    ``get_fea=True`` it returns ``(sr, feas)`` where ``feas`` holds the output of every trunk block
    plus the fused trunk feature (``nb + 1`` LR-resolution tensors).
    """

    def __init__(
        self, *, in_nc: int = 3, out_nc: int = 3, nf: int = 32, nb: int = 8, gc: int | None = None,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"RRDBNet scale must be one of {SCALES}, but got {scale!r}")
        if nb < 2:
            raise ValueError(f"RRDBNet needs nb >= 2 blocks to give SRDiff a condition, but got {nb}")
        gc = nf // 2 if gc is None else gc
        self.hyperparameters = dict(in_nc=in_nc, out_nc=out_nc, nf=nf, nb=nb, gc=gc, scale=scale)
        self.scale = scale
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1)
        self.RRDB_trunk = nn.ModuleList(RRDB(nf, gc) for _ in range(nb))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.n_up = scale.bit_length() - 1
        for i in range(1, self.n_up + 1):
            setattr(self, f"upconv{i}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)

    @property
    def cond_channels(self) -> int:
        h = self.hyperparameters
        return cond_channels(h["nf"], h["nb"])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ``nb + 1`` trunk features of an LR image in [-1, 1]."""
        return self._trunk(x)[1]

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fea_first = fea = self.conv_first((x + 1) / 2)
        feas = []
        for block in self.RRDB_trunk:
            fea = block(fea)
            feas.append(fea)
        fea = fea_first + self.trunk_conv(fea)
        feas.append(fea)
        return fea, feas

    def forward(self, x: torch.Tensor, get_fea: bool = False):
        fea, feas = self._trunk(x)
        for i in range(1, self.n_up + 1):
            up = getattr(self, f"upconv{i}")
            fea = F.leaky_relu(up(F.interpolate(fea, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.HRconv(fea), 0.2))
        out = out.clamp(0, 1) * 2 - 1
        return (out, feas) if get_fea else out
