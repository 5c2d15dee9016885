"""An untiled DIRformer forward whose transformer blocks run in row strips.

A plain forward of a whole plane holds each block's temporaries for every pixel at once (the
normed map, q, k, v, the FFN's expansion): about 2.7 GiB for the bundled denoiser at 1024² in
float32, which is why large planes are tiled, and a tiled plane then needs its statistics first
(:mod:`.planewise`, several forwards' worth of work). :class:`StripHook` keeps only the block's
input and output maps (and v) for the whole plane and computes everything else a strip of rows
at a time: the attention sums its statistics over the strips (one pass that also keeps v),
then adds the plane's attention to the input strip by strip; the feed-forward, which is local,
runs each strip with the one row of context its 3x3 depthwise convolution needs. The result is
the plain forward's (the same sums, taken in another order) at about the cost of one forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ._arch.dirformer import PLANE_HOOK, TransformerBlock, _gram, _ipr_affine, _is_channels_last, _modulated_pointwise, cosine_attention

__all__ = ["StripHook", "in_strips", "strip_rows"]

HALO = 1
"""Rows of context a strip needs: the 3x3 depthwise convolutions are the blocks' only non-pointwise ops."""


def strip_rows(height: int, rows: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive strips of at most ``rows`` rows covering ``height``."""
    if rows < 1:
        raise ValueError(f"A strip needs at least one row, but got rows={rows}")
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


class StripHook:
    """Installed through ``PLANE_HOOK`` for one forward: every transformer block of the forward
    runs over strips of about ``pixels`` pixels (at least one row) of its map."""

    def __init__(self, pixels: int = 64 * 1024) -> None:
        self.pixels = pixels

    def _strips(self, x: torch.Tensor) -> Iterator[tuple[int, int, int, int]]:
        """``(r0, r1, a0, a1)``: a strip's rows and the rows it reads (with the halo)."""
        h, w = x.shape[-2:]
        for r0, r1 in strip_rows(h, max(1, self.pixels // max(1, w))):
            yield r0, r1, max(0, r0 - HALO), min(h, r1 + HALO)

    def block(self, block: TransformerBlock, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x + DMTA(LN(x))``, then that plus ``DGFN(LN(.))``, strip by strip."""
        token = PLANE_HOOK.set(None)  # the modules' own forwards inside a strip
        try:
            return self._feed_forward(block, self._attention(block, x, z), z)
        finally:
            PLANE_HOOK.reset(token)

    def _attention(self, block: TransformerBlock, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        gram = qq = kk = v_plane = affine = None
        for r0, r1, a0, a1 in self._strips(x):
            x_hat, ln_weight, ln_bias = block.norm1.normalize(x[..., a0:a1, :])
            if affine is None:  # the modulation is the same for every strip: the plane's IPR
                affine = _ipr_affine(attn.kernel, z, x.shape[0], ln_weight, ln_bias)
            qkv = attn.qkv_dwconv(_modulated_pointwise(x_hat, attn.qkv, *affine))
            q, k, v = attn.split(qkv[..., r0 - a0 : r1 - a0, :])
            g = _gram(q, k).float()
            sq = q.square().sum(-1, dtype=torch.float32)
            sk = k.square().sum(-1, dtype=torch.float32)
            gram, qq, kk = (g, sq, sk) if gram is None else (gram + g, qq + sq, kk + sk)
            if v_plane is None:
                v_plane = _plane_like(v, x)
            v_plane[..., r0:r1, :] = v
        maps = cosine_attention(gram, qq.sqrt(), kk.sqrt(), attn.temperature)  # as Attention.attention_map
        out = _plane_like(x, x)
        for r0, r1, _, _ in self._strips(x):
            torch.add(x[..., r0:r1, :], attn.attend(maps, v_plane[..., r0:r1, :]), out=out[..., r0:r1, :])
        return out

    def _feed_forward(self, block: TransformerBlock, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = _plane_like(x, x)
        for r0, r1, a0, a1 in self._strips(x):
            x_hat, ln_weight, ln_bias = block.norm2.normalize(x[..., a0:a1, :])
            part = block.ffn(x_hat, z, ln_weight, ln_bias)[..., r0 - a0 : r1 - a0, :]
            torch.add(x[..., r0:r1, :], part, out=out[..., r0:r1, :])
        return out


@contextlib.contextmanager
def in_strips(pixels: int = 64 * 1024) -> Iterator[StripHook]:
    """Within this context, every DIRformer forward runs its transformer blocks in strips of
    about ``pixels`` pixels."""
    token = PLANE_HOOK.set(StripHook(pixels))
    try:
        yield PLANE_HOOK.get()
    finally:
        PLANE_HOOK.reset(token)


def _plane_like(part: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """An empty map with ``part``'s batch, channels and dtype and ``x``'s rows and columns, in
    ``x``'s memory layout (so the next block sees the layout a plain forward gives it)."""
    layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return torch.empty((*part.shape[:2], *x.shape[-2:]), dtype=part.dtype, device=part.device, memory_format=layout)
