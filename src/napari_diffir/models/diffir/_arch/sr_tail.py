"""DIRformer's x4 super-resolution head, and the same map computed as one convolution.

The head (EDSR's upsampler, keys ``tail.0.0``, ``tail.0.2``, ``tail.1``) is 3x3 conv to 4n
channels, pixel shuffle, 3x3 conv to 4n, pixel shuffle, 3x3 conv to the output channels: linear
throughout. At the body's resolution it is therefore one 5x5 convolution from n channels to
16 output channels per image channel (one per position in the 4x4 output cell), followed by a
pixel shuffle by 4: for the official SR x4 net at 64² input, 0.6 G multiply-adds instead of
12.3 G (the 128 -> 512 convolution at 128² alone is 9.7 G, a quarter of the whole network).

The two forms differ only near the border, where the original zero-pads its intermediate maps:
the outermost 3 output pixels on each side. :meth:`X4Tail.forward` computes those strips with
the original convolutions on just the input rows and columns they depend on
(:func:`_exact_region`), so inference gives the original head's values up to float rounding.
The composed weights are built in float64 on first use and kept until a weight changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .onednn import traced
from .weight_cache import cached, cast

__all__ = ["X4Tail"]

_BORDER = 3  # output pixels per side where the composed convolution differs from the head


class X4Tail(nn.Sequential):
    """``Sequential(Sequential(conv, PixelShuffle(2), conv, PixelShuffle(2)), conv)``, all 3x3.

    Training (autograd), tracing and compiling run the layers as they are; inference takes the
    composed convolution plus exact border strips.
    """

    def __init__(self, width: int, out_channels: int) -> None:
        upsampler = nn.Sequential(
            nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2),
            nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2),
        )
        super().__init__(upsampler, nn.Conv2d(width, out_channels, 3, padding=1))

    def convs(self) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
        return self[0][0], self[0][2], self[1]

    def _params(self) -> list[torch.Tensor]:
        """Every weight and bias of the three convolutions: what the cached derived kernels depend on."""
        return [p for conv in self.convs() for p in (conv.weight, conv.bias)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rows, cols = 4 * x.shape[-2], 4 * x.shape[-1]
        if torch.is_grad_enabled() or traced() or min(rows, cols) <= 2 * _BORDER:
            return super().forward(x)
        weight, bias = self.composed(x.dtype)
        out = F.pixel_shuffle(F.conv2d(x, weight, bias, padding=2), 4)
        if out.dtype != x.dtype:  # autocast: the strips come out in the same precision
            x = x.to(out.dtype)
        convs = [(cast(c, "weight", c.weight, x.dtype), cast(c, "bias", c.bias, x.dtype)) for c in self.convs()]
        b = _BORDER
        for r0, r1 in ((0, b), (rows - b, rows)):  # top and bottom strips, full width
            out[:, :, r0:r1, :] = _exact_region(convs, x, (r0, r1), (0, cols))
        # the left and right strips are tall and 4 pixels wide, where oneDNN's convolutions run
        # 2-2.5x slower than on wide ones: they are computed on the transposed map
        xt, transposed = x.transpose(-1, -2), self.transposed(x.dtype)
        for c0, c1 in ((0, b), (cols - b, cols)):
            out[:, :, b : rows - b, c0:c1] = _exact_region(transposed, xt, (c0, c1), (b, rows - b)).transpose(-1, -2)
        return out

    def transposed(self, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of the three convolutions acting on spatially transposed maps, in ``dtype``.

        A convolution commutes with the transpose when its kernel is transposed; a pixel shuffle
        does when the two sub-pixel bits of its input channels are swapped (channel
        ``4c + 2i + j`` becomes ``4c + 2j + i``), so the first two convolutions' outputs are
        permuted so.
        """
        convs = self.convs()

        def build() -> list[tuple[torch.Tensor, torch.Tensor]]:
            out = []
            for step, conv in enumerate(convs):
                weight, bias = conv.weight.detach(), conv.bias.detach()
                if step < 2:
                    perm = torch.arange(weight.shape[0], device=weight.device).view(-1, 2, 2).transpose(1, 2).reshape(-1)
                    weight, bias = weight[perm], bias[perm]
                out.append((weight.transpose(-1, -2).contiguous().to(dtype), bias.to(dtype)))
            return out

        return cached(self, f"transposed:{dtype}", self._params(), build)

    def composed(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (16 * out, n, 5, 5) weight and bias of the head as one convolution, in ``dtype``
        (default: the weights'), cached until a weight changes."""
        params = self._params()
        dtype = params[0].dtype if dtype is None else dtype

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            weight, bias = compose(*self.convs())
            return weight.to(dtype), bias.to(dtype)

        return cached(self, f"composed:{dtype}", params, build)


def compose(conv1: nn.Conv2d, conv2: nn.Conv2d, conv3: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (16 * out, n, 5, 5) and bias of ``conv3(shuffle(conv2(shuffle(conv1(x)))))``, float64.

    Output channel ``k * 16 + a * 4 + b`` is image channel ``k`` at position ``(a, b)`` of the
    4x4 cell (``F.pixel_shuffle(y, 4)`` order). Built stage by stage from the output back:
    a 3x3 tap at the finer grid reads the coarser grid at offset ``floor((phase + tap) / 2)``,
    sub-pixel ``(phase + tap) mod 2``; each convolution then widens the kernel by its 3x3 taps.
    """
    w1, w2, w3 = (c.weight.detach().double() for c in (conv1, conv2, conv3))
    b1, b2, b3 = (c.bias.detach().double() for c in (conv1, conv2, conv3))
    k_out, n = w3.shape[0], w3.shape[1]
    # conv3 after the second shuffle: a 3x3 kernel at the 2x grid, on conv2's 4n channels
    a = w3.new_zeros(k_out, 2, 2, n, 2, 2, 3, 3)  # (k, p2, q2, m, i, j, du, dv)
    for p in range(2):
        for q in range(2):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    a[:, p, q, :, (p + dy) % 2, (q + dx) % 2, (p + dy) // 2 + 1, (q + dx) // 2 + 1] += w3[:, :, dy + 1, dx + 1]
    a = a.reshape(k_out * 4, 4 * n, 3, 3)
    bias12 = b3.repeat_interleave(4) + a.sum((2, 3)) @ b2
    # ... after conv2: 5x5 at the 2x grid, on the n channels of the first shuffle's output
    b = _after(a, w2)
    # ... after the first shuffle: 3x3 at the body grid, on conv1's 4n channels
    c = w3.new_zeros(k_out, 2, 2, 2, 2, n, 2, 2, 3, 3)  # (k, p1, p2, q1, q2, c, i, j, g, h)
    b6 = b.reshape(k_out, 2, 2, n, 5, 5)
    for p in range(2):
        for q in range(2):
            for e in range(-2, 3):
                for f in range(-2, 3):
                    c[:, p, :, q, :, :, (p + e) % 2, (q + f) % 2, (p + e) // 2 + 1, (q + f) // 2 + 1] += b6[..., e + 2, f + 2]
    c = c.reshape(k_out * 16, 4 * n, 3, 3)
    bias48 = bias12.reshape(k_out, 1, 2, 1, 2).expand(k_out, 2, 2, 2, 2).reshape(-1) + c.sum((2, 3)) @ b1
    # ... after conv1: 5x5 at the body grid
    return _after(c, w1), bias48


def _after(kernel: torch.Tensor, conv_weight: torch.Tensor) -> torch.Tensor:
    """The kernel of ``conv(kernel) ∘ conv(conv_weight)`` (3x3 ``kernel``, 3x3 ``conv_weight``): 5x5."""
    out = kernel.new_zeros(kernel.shape[0], conv_weight.shape[1], 5, 5)
    for u in range(3):
        for v in range(3):
            out[:, :, u : u + 3, v : v + 3] += torch.einsum("om,mcyx->ocyx", kernel[:, :, u, v], conv_weight)
    return out


def _exact_region(convs: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                  rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """The head's output over ``rows`` x ``cols`` (output pixels), from the input it depends on.

    ``convs``: the (weight, bias) of the three convolutions, in ``x``'s dtype.

    Walks back from the region to the input rows and columns each layer needs (a 3x3 convolution
    one more on each side, within its map; a shuffle the coarser cells under them), then runs the
    layers forward on those crops, with zeros only where the original map ends.
    """
    plans = [_axis_plan(rows, x.shape[-2]), _axis_plan(cols, x.shape[-1])]
    (y0, y1), (x0, x1) = plans[0][0][0], plans[1][0][0]
    t = x[:, :, y0:y1, x0:x1]
    for step, (weight, bias) in enumerate(convs):
        pad_y, pad_x = plans[0][step][1], plans[1][step][1]
        t = F.conv2d(F.pad(t, (*pad_x, *pad_y)), weight, bias)
        if step < 2:
            t = F.pixel_shuffle(t, 2)
            (sy, ly), (sx, lx) = plans[0][step + 1][2], plans[1][step + 1][2]
            t = t[:, :, sy : sy + ly, sx : sx + lx]
    return t


def _axis_plan(region: tuple[int, int], size: int):
    """Per convolution (in forward order): the input interval it reads (clipped to its map), the
    zero padding that replaces the clipped part, and where that input starts in the upsampled
    output of the layer before (offset, length)."""
    o0, o1 = region
    plans = []
    for level in (2, 1, 0):  # conv3 at 4x, conv2 at 2x, conv1 at the body grid
        n = size << level
        i0, i1 = max(o0 - 1, 0), min(o1 + 1, n)
        pads = (i0 - (o0 - 1), (o1 + 1) - i1)
        coarse = (i0 // 2, -(-i1 // 2))  # the shuffle input cells under [i0, i1)
        plans.append(((i0, i1), pads, (i0 - 2 * coarse[0], i1 - i0)))
        o0, o1 = coarse
    plans.reverse()
    return plans
