"""An untiled DIRformer forward whose attention and feed-forward blocks run in row strips.

A plain forward of a whole plane holds each block's temporaries for every pixel at once (the
q, k, v maps, the FFN's expansion): about 3.3 GiB for the bundled denoiser at 1024², which is
why large planes are tiled, and a tiled plane then needs its statistics first
(:mod:`.planewise`, several forwards' worth of work). :class:`StripHook` keeps the whole-plane
feature maps between blocks but computes inside each block a strip of rows at a time, so the
temporaries are a strip's: the attention sums its statistics over the strips (one pass that
also keeps v) and then applies the plane's maps strip by strip; the feed-forward, which is
local, runs each strip with the one row of context its 3x3 depthwise convolution needs. The
result is the plain forward's (the same sums, taken in another order) at about the cost of one
forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ._arch.dirformer import PLANE_HOOK, Attention, FeedForward, _gram, _ipr_affine, _is_channels_last, _modulated_pointwise

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
    """Installed through ``PLANE_HOOK`` for one forward: every attention and feed-forward block
    of the forward runs over strips of about ``pixels`` pixels (at least one row) of its map."""

    def __init__(self, pixels: int = 64 * 1024) -> None:
        self.pixels = pixels

    def _strips(self, x: torch.Tensor) -> Iterator[tuple[int, int, int, int]]:
        """``(r0, r1, a0, a1)``: a strip's rows and the rows it reads (with the halo)."""
        h, w = x.shape[-2:]
        for r0, r1 in strip_rows(h, max(1, self.pixels // max(1, w))):
            yield r0, r1, max(0, r0 - HALO), min(h, r1 + HALO)

    def attention(self, module: Attention, x: torch.Tensor, z: torch.Tensor,
                  ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None) -> torch.Tensor:
        scale, shift = _ipr_affine(module.kernel, z, x.shape[0], ln_weight, ln_bias)
        gram = qq = kk = None
        v_plane = None
        for r0, r1, a0, a1 in self._strips(x):
            qkv = module.qkv_dwconv(_modulated_pointwise(x[..., a0:a1, :], module.qkv, scale, shift))
            q, k, v = module.split(qkv[..., r0 - a0 : r1 - a0, :])
            g = _gram(q, k).float()
            sq = q.square().sum(-1, keepdim=True, dtype=torch.float32)
            sk = k.square().sum(-1, keepdim=True, dtype=torch.float32)
            gram, qq, kk = (g, sq, sk) if gram is None else (gram + g, qq + sq, kk + sk)
            if v_plane is None:
                v_plane = _plane_like(v, x)
            v_plane[..., r0:r1, :] = v
        qn, kn = qq.sqrt().clamp_min(1e-12), kk.sqrt().clamp_min(1e-12)
        attn = (gram / (qn * kn.transpose(-2, -1)) * module.temperature).softmax(dim=-1)
        out = None
        for r0, r1, _, _ in self._strips(x):
            part = module.attend(attn, v_plane[..., r0:r1, :])
            if out is None:
                out = _plane_like(part, x)
            out[..., r0:r1, :] = part
        return out

    def feed_forward(self, module: FeedForward, x: torch.Tensor, z: torch.Tensor,
                     ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None) -> torch.Tensor:
        out = None
        token = PLANE_HOOK.set(None)  # the module's own forward for each strip
        try:
            for r0, r1, a0, a1 in self._strips(x):
                part = module(x[..., a0:a1, :], z, ln_weight, ln_bias)[..., r0 - a0 : r1 - a0, :]
                if out is None:
                    out = _plane_like(part, x)
                out[..., r0:r1, :] = part
        finally:
            PLANE_HOOK.reset(token)
        return out


@contextlib.contextmanager
def in_strips(pixels: int = 64 * 1024) -> Iterator[StripHook]:
    """Run the DIRformer forwards inside the block in strips of about ``pixels`` pixels."""
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
