"""Channel-wise layer norms of DIRformer (Restormer's two variants).

Mirrors the state-dict layout of Zj-BinXia/DiffIR @ 293f86c (``S2_arch.py``: ``LayerNorm`` with one
child ``body`` holding ``weight`` and, for the bias variant, ``bias``). Written fresh for this
project; the math follows docs/spec §2.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BiasFree_LayerNorm", "LayerNorm", "WithBias_LayerNorm", "LAYER_NORM_TYPES"]

LAYER_NORM_TYPES = ("WithBias", "BiasFree")
_EPS = 1e-5


class BiasFree_LayerNorm(nn.Module):
    """``x / sqrt(var_C(x) + eps) * weight`` over the last axis.

    The variance is taken around the mean, but the mean is *not* subtracted from ``x``
    (Restormer's "bias-free" form, used by the SR checkpoints).
    """

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(-1, keepdim=True, correction=0)
        return x * torch.rsqrt(var + _EPS) * self.weight


class WithBias_LayerNorm(nn.Module):
    """Ordinary layer norm over the last axis (``eps`` 1e-5, learned weight and bias)."""

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, _EPS)


class LayerNorm(nn.Module):
    """Normalise a ``(B, C, H, W)`` map over C at every pixel.

    The permutation to channels-last is a view; on a channels-last input it is also contiguous,
    so the norm runs without a copy and hands a channels-last map to the next 1x1 convolution.
    """

    def __init__(self, dim: int, LayerNorm_type: str) -> None:
        super().__init__()
        if LayerNorm_type not in LAYER_NORM_TYPES:
            raise ValueError(
                f"LayerNorm_type must be one of {list(LAYER_NORM_TYPES)}, but got {LayerNorm_type!r}"
            )
        self.body = BiasFree_LayerNorm(dim) if LayerNorm_type == "BiasFree" else WithBias_LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
