"""``nn.Conv2d`` whose inference under autocast reuses its weights cast once.

In a bf16 forward under autocast, every convolution's float32 weight is cast again: autocast's
cache lasts one autocast region, i.e. one tile. :class:`InferenceConv2d` keeps the cast weight
(``weight_cache``) and passes it on, so autocast has nothing left to cast. Same parameters, keys
and values as ``nn.Conv2d``; without autocast, with autograd, tracing or compiling it runs
``nn.Conv2d``'s forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .onednn import autocast_dtype
from .weight_cache import cached, inference

__all__ = ["InferenceConv2d"]


class InferenceConv2d(nn.Conv2d):
    """``nn.Conv2d``; in inference under autocast, with its weights cast to autocast's dtype once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_to(x)

    def apply_to(self, x: torch.Tensor, part: slice | None = None, width: int | None = None) -> torch.Tensor:
        """This convolution of ``x``; with ``part`` (depthwise only), just those channels, of an
        ``x`` that holds only them (the FFN's two halves), followed by zero channels up to
        ``width`` (zero weights and biases for them)."""
        if part is not None and not (self.groups == self.in_channels == self.out_channels):
            raise ValueError("InferenceConv2d.apply_to(part=...) needs a depthwise convolution")
        weight, bias = self.weight, self.bias
        dtype = autocast_dtype(x.device.type)
        # autocast casts float32 (not float64) weights; a cast made once gives the same values
        cast_to = dtype if dtype is not None and weight.dtype == torch.float32 else None
        if (cast_to is not None or part is not None) and inference(weight):
            params = (weight,) if bias is None else (weight, bias)
            name = f"cast:{cast_to}:{None if part is None else (part.start, part.stop, width)}"

            def build() -> tuple[torch.Tensor, torch.Tensor | None]:
                w, b = self._part(weight.detach(), None if bias is None else bias.detach(), part, width)
                return (w, b) if cast_to is None else (w.to(cast_to), None if b is None else b.to(cast_to))

            return self._conv(x, *cached(self, name, params, build), part)
        if part is not None:
            weight, bias = self._part(weight, bias, part, width)
        return self._conv(x, weight, bias, part)

    @staticmethod
    def _part(weight: torch.Tensor, bias: torch.Tensor | None, part: slice | None,
              width: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if part is None:
            return weight, bias
        weight, bias = weight[part], None if bias is None else bias[part]
        extra = 0 if width is None else width - weight.shape[0]
        if extra:
            weight = F.pad(weight, (0, 0, 0, 0, 0, 0, 0, extra))
            bias = None if bias is None else F.pad(bias, (0, extra))
        return weight, bias

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, part: slice | None) -> torch.Tensor:
        if part is None:
            return self._conv_forward(x, weight, bias)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, x.shape[1])
