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

from .onednn import autocast_dtype, onednn_available, traced
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
        return self._conv(x, *self._weights(x, part, width), part)

    def gelu_gate(self, x1: torch.Tensor, x2: torch.Tensor, parts: tuple[slice, slice], width: int) -> torch.Tensor:
        """``gelu(conv(x1)) * conv(x2)`` for the two halves ``parts`` of a depthwise convolution
        (see :meth:`apply_to`). For bf16 channels-last maps on the CPU, oneDNN runs the GELU and
        the product as post-ops of the two convolutions (the map is read and written once
        instead of three more times: -25 % for the official SR FFN's 288-channel halves at 1
        thread; in float32 the fused ops are slower, so float32 keeps the separate ones)."""
        w1, b1 = self._weights(x1, parts[0], width)
        w2, b2 = self._weights(x2, parts[1], width)
        if _fused_gate_fits(x1, x2, w1, b1, b2):
            op = torch.ops.mkldnn._convolution_pointwise
            geometry = (list(self.padding), list(self.stride), list(self.dilation), width)
            gate = op(x1, w1, b1, *geometry, "gelu", [], "none")
            return op.binary(x2, gate, w2, b2, *geometry, "mul", None, None, [], None)
        return F.gelu(self._conv(x1, w1, b1, parts[0])).mul_(self._conv(x2, w2, b2, parts[1]))

    def _weights(self, x: torch.Tensor, part: slice | None, width: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias :meth:`apply_to` convolves with: cast once under autocast, cut to
        ``part`` and padded to ``width`` (cached while the weights stay the same)."""
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

            return cached(self, name, params, build)
        if part is not None:
            weight, bias = self._part(weight, bias, part, width)
        return weight, bias

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


def _fused_gate_fits(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, b1: torch.Tensor | None,
                     b2: torch.Tensor | None) -> bool:
    """Whether oneDNN's convolution with GELU / product post-ops can run :meth:`InferenceConv2d.gelu_gate`:
    bf16 channels-last CPU maps, bf16 weights (cast by autocast's route), no autograd or tracing."""
    if not _FUSED or traced() or torch.is_grad_enabled():
        return False
    if x1.device.type != "cpu" or x1.dtype != torch.bfloat16 or x2.dtype != x1.dtype or x2.shape != x1.shape:
        return False
    if weight.dtype != x1.dtype or any(b is not None and b.dtype != x1.dtype for b in (b1, b2)):
        return False
    return all(x.is_contiguous(memory_format=torch.channels_last) for x in (x1, x2))


_FUSED = onednn_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
