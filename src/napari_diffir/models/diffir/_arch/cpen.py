"""CPEN: the compact IR-prior extraction network of DiffIR (stage-1 and stage-2 forms).

Attribute names mirror ``CPEN`` and ``common.ResBlock`` of Zj-BinXia/DiffIR @ 293f86c
(``S1_arch.py``/``S2_arch.py`` of every sub-project). Written fresh for this project.

The network maps an image (stage 2: the degraded image; stage 1: the degraded image and its
ground truth) to one vector per image, the image-restoration prior (IPR) of ``4 * n_feats``
values (256 in every official model). Inputs are first folded to the x4-LR resolution with
pixel-unshuffle, so CPEN sees the same grid for SR x4/x2/x1, deblurring and inpainting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inference_conv import InferenceConv2d

__all__ = ["CPEN", "ResBlock"]


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.1, inplace=True)


class ResBlock(nn.Module):
    """EDSR residual block without batch norm or scaling: ``x + conv(lrelu(conv(x)))``."""

    def __init__(self, n_feats: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            InferenceConv2d(n_feats, n_feats, kernel_size, padding=pad), _act(),
            InferenceConv2d(n_feats, n_feats, kernel_size, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class CPEN(nn.Module):
    """Image(s) -> IPR vector of ``4 * n_feats`` values.

    :param lq_channels: channels of the degraded input (4 for inpainting: RGB plus mask).
    :param lq_unshuffle: pixel-unshuffle factor applied to the degraded input (SR x4: 1, x2: 2,
        x1: 4; deblurring and inpainting: 4).
    :param gt_channels: channels of the ground truth (stage 1; folded by 4), or 0 (stage 2).
    """

    def __init__(
        self,
        *,
        n_feats: int = 64,
        n_encoder_res: int = 6,
        lq_channels: int = 3,
        lq_unshuffle: int = 1,
        gt_channels: int = 0,
    ) -> None:
        super().__init__()
        self.lq_unshuffle = lq_unshuffle
        self.gt_channels = gt_channels
        in_channels = lq_channels * lq_unshuffle**2 + gt_channels * 16
        self.E = nn.Sequential(
            InferenceConv2d(in_channels, n_feats, 3, padding=1), _act(),
            *(ResBlock(n_feats) for _ in range(n_encoder_res)),
            InferenceConv2d(n_feats, n_feats * 2, 3, padding=1), _act(),
            InferenceConv2d(n_feats * 2, n_feats * 2, 3, padding=1), _act(),
            InferenceConv2d(n_feats * 2, n_feats * 4, 3, padding=1), _act(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.mlp = nn.Sequential(
            nn.Linear(n_feats * 4, n_feats * 4), _act(),
            nn.Linear(n_feats * 4, n_feats * 4), _act(),
        )

    def forward(self, lq: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(self.E(self._input(lq, gt)).flatten(1))

    def features(self, lq: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """The per-pixel map that ``E`` ends by averaging: ``forward == mlp(features.mean((2, 3)))``.

        A mean over pixels, so a whole plane's pooled features can be summed cell by cell.
        """
        return self.E[:-1](self._input(lq, gt))

    def _input(self, lq: torch.Tensor, gt: torch.Tensor | None) -> torch.Tensor:
        feat = F.pixel_unshuffle(lq, self.lq_unshuffle) if self.lq_unshuffle > 1 else lq
        if self.gt_channels:
            if gt is None:
                raise ValueError("Stage-1 CPEN needs the ground truth image (gt) next to the input")
            feat = torch.cat([feat, F.pixel_unshuffle(gt, 4)], dim=1)
        return feat
