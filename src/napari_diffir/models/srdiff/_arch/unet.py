"""The conditional noise predictor of SRDiff, with the official release's structure and quirks.

- The LR condition (RRDB trunk features) is projected to HR resolution by a transposed conv and
  added once, after the first level's two ResnetBlocks.
- The decoder has one level fewer than the encoder and every decoder level upsamples; the
  full-resolution skip (the one holding the condition) is pushed but never popped.
- No normalisation, Mish everywhere, reflection padding.

``forward`` also accepts the condition already projected (:meth:`Unet.project_cond`), so a sampler
computes that projection once per image instead of once per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import Block, Downsample, ResnetBlock, SinusoidalPosEmb, Upsample

__all__ = ["Unet"]


class Unet(nn.Module):
    """Predicts the noise in a residual ``x_t`` at step ``t`` given RRDB features of the LR image."""

    def __init__(
        self, *, dim: int = 64, in_channels: int = 3, out_dim: int = 3,
        dim_mults: Sequence[int] = (1, 2, 3, 4), cond_channels: int = 96, scale: int = 4,
    ) -> None:
        super().__init__()
        dim_mults = tuple(int(m) for m in dim_mults)
        if not dim_mults or dim_mults[0] != 1 or min(dim_mults) < 1:
            raise ValueError(f"Unet dim_mults must start with 1 (final_conv is {dim} wide), but got {dim_mults}")
        if scale < 2 or scale % 2:
            raise ValueError(f"Unet scale must be an even integer, but got {scale!r}")
        self.hyperparameters = dict(dim=dim, in_channels=in_channels, out_dim=out_dim,
                                    dim_mults=dim_mults, cond_channels=cond_channels, scale=scale)
        dims = [in_channels, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        n_levels = len(in_out)
        self.size_multiple = 2 ** (n_levels - 1)
        """HR height and width must be multiples of this (one halving per level but the last)."""

        self.cond_proj = nn.ConvTranspose2d(cond_channels, dim, scale * 2, scale, scale // 2)
        self.time_pos_emb = SinusoidalPosEmb(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == n_levels - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(d_in, d_out, time_emb_dim=dim),
                ResnetBlock(d_out, d_out, time_emb_dim=dim),
                nn.Identity() if last else Downsample(d_out),
            ]))
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, time_emb_dim=dim)
        self.mid_block2 = ResnetBlock(mid, mid, time_emb_dim=dim)
        for d_in, d_out in reversed(in_out[1:]):  # official quirk: no decoder level for in_out[0]
            self.ups.append(nn.ModuleList([
                ResnetBlock(d_out * 2, d_in, time_emb_dim=dim),
                ResnetBlock(d_in, d_in, time_emb_dim=dim),
                Upsample(d_in),
            ]))
        self.final_conv = nn.Sequential(Block(dim, dim), nn.Conv2d(dim, out_dim, 1))

    def project_cond(self, feas: Sequence[torch.Tensor]) -> torch.Tensor:
        """The HR-resolution condition from RRDB trunk features (every third from index 2)."""
        return self.cond_proj(torch.cat(list(feas[2::3]), 1))

    def forward(
        self, x: torch.Tensor, time: torch.Tensor, cond: Sequence[torch.Tensor] | torch.Tensor,
        img_lr_up: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise estimate for ``x`` (B, C, H, W) at integer steps ``time`` (B,).

        ``cond`` is the RRDB feature list (official call) or its :meth:`project_cond` output.
        ``img_lr_up`` is accepted for call compatibility and unused (official ``up_input: false``).
        """
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"Unet input height and width must be multiples of {self.size_multiple}, "
                f"but got {h}x{w}")
        if not torch.is_tensor(cond):
            cond = self.project_cond(cond)
        t = self.mlp(self.time_pos_emb(time))
        skips = []
        for i, (res1, res2, down) in enumerate(self.downs):
            x = res2(res1(x, t), t)
            if i == 0:
                x = x + cond
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_block1(x, t), t)
        for res1, res2, up in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = up(res2(res1(x, t), t))
        return self.final_conv(x)
