"""Building blocks of the SRDiff networks, named as in the official release so keys match.

Every ``nn.Sequential`` below exists only to reproduce an official state-dict index (``block.1``,
``conv.1``, ``mlp.1`` ...); layers without parameters sit at the indices the official code gives
them. The U-Net uses no normalisation layer (the official code hard-codes ``groups = 0``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Block",
    "Downsample",
    "Mish",
    "RRDB",
    "ResidualDenseBlock",
    "ResnetBlock",
    "SinusoidalPosEmb",
    "Upsample",
]


class SinusoidalPosEmb(nn.Module):
    """Transformer-style embedding of the raw integer diffusion step (0 .. T-1, not rescaled).

    The frequencies are a non-persistent buffer (official checkpoints carry no such key); they
    are computed in float32 exactly as the official code does, so embeddings match bit for bit.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb needs an even dim >= 4, but got {dim}")
        self.dim = dim
        half = dim // 2
        freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Mish(nn.Module):
    """``x * tanh(softplus(x))``, as ``nn.Mish``, computed faster when no gradient is needed.

    ATen's Mish kernel costs about 13 element-wise passes (a fifth of a U-Net step). With
    ``n = e^x (e^x + 2)``, ``tanh(softplus(x)) = n / (n + 2)`` exactly; that is four cheap passes
    (``x`` clamped at 20, where the factor is 1 in float32, so ``e^x`` cannot overflow). Half
    precision inputs are computed in float32 and rounded once. Gradients use ``F.mish``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.mish(x)
        e = x.float().clamp(max=20.0).exp_()
        n = (e + 2).mul_(e)
        return n.div_(n + 2).mul_(x).to(x.dtype)


class Block(nn.Module):
    """Reflection-padded 3x3 conv followed by Mish (weights at ``block.1``)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim_out, 3), Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    """Two Blocks with the time embedding added in between, plus a (1x1 if widths differ) skip."""

    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block(dim, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        h = h + self.mlp(time_emb)[:, :, None, None]
        h = self.block2(h)
        return h + self.res_conv(x)


class Downsample(nn.Module):
    """Reflection-padded stride-2 3x3 conv (weights at ``conv.1``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Stride-2 4x4 transposed conv (weights at ``conv.0``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.ConvTranspose2d(dim, dim, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResidualDenseBlock(nn.Module):
    """ESRGAN's five-conv dense block: each conv sees the input and all earlier outputs."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a scaled skip."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock(nf, gc)
        self.RDB2 = ResidualDenseBlock(nf, gc)
        self.RDB3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x
