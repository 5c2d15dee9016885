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
        return bias_free_normalize(x) * self.weight


def bias_free_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / sqrt(var(x) + eps)`` over the last axis (the mean is not subtracted).

    ``Tensor.var`` over a short last axis is slow on CPU (~10x the passes below). Without
    autograd, on a dense last axis (a channels-last map), the variance is taken in two passes in
    float32 with in-place steps and ``x * rstd`` is rounded once to ``x``'s dtype: 0.27 ms against
    0.36 ms for the fused layer-norm kernel's ``rstd`` plus a bf16 product at (1, 64, 64, 128),
    0.19 against 0.46 ms in float32. Otherwise that kernel supplies ``1 / sqrt(var + eps)``
    (its ``rstd`` output has no gradient, hence the explicit two-pass variance when training).
    """
    if torch.is_grad_enabled() and x.requires_grad:
        centred = x - x.mean(-1, keepdim=True)
        return x * torch.rsqrt(centred.square().mean(-1, keepdim=True) + _EPS)
    if x.stride(-1) == 1 and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
        f = x.float()
        rstd = (f - f.mean(-1, keepdim=True)).square_().mean(-1, keepdim=True).add_(_EPS).rsqrt_()
        return f.mul_(rstd).to(x.dtype) if f is not x else x * rstd
    rstd = torch.native_layer_norm(x, (x.shape[-1],), None, None, _EPS)[2]
    return x * rstd


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

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(x_hat, weight, bias)`` with ``forward(x) == x_hat * weight + bias`` per channel.

        Lets a following 1x1 convolution absorb the affine part into its weights (one pass over
        the feature map fewer); ``bias`` is None for the bias-free variant.
        """
        y = x.permute(0, 2, 3, 1)
        if isinstance(self.body, BiasFree_LayerNorm):
            return bias_free_normalize(y).permute(0, 3, 1, 2), self.body.weight, None
        y = F.layer_norm(y, (y.shape[-1],), None, None, _EPS)
        return y.permute(0, 3, 1, 2), self.body.weight, self.body.bias
