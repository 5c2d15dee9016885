"""Tiles with overlap, padding to a size multiple, and smooth blending (correct for scale > 1).

Each tile is restored on its own and written into an accumulator with a weight that is 1 in the
tile's interior and ramps down over the part of the overlap nearest the tile's inner edges (never
at the image border). The outermost quarter of each overlap is weighted zero, which discards the
pixels a convolutional model computes from padding, so tiled and untiled results of a
deterministic local model agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Tile:
    y0: int
    x0: int
    h: int
    w: int


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Starts covering ``length`` with ``tile``-long tiles overlapping by >= ``overlap``.

    Starts are multiples of ``align`` (when ``length`` and ``tile`` are), so models with internal
    down-sampling see the same pixel grid in every tile as on the whole image.
    """
    if length <= tile:
        return [0]
    step = max(align, (tile - overlap) // align * align)
    starts = list(range(0, length - tile, step))
    starts.append((length - tile) // align * align)
    return sorted(set(starts))


def even_tile(length: int, tile: int, overlap: int, align: int = 1) -> int:
    """The smallest tile (<= ``tile``, a multiple of ``align``) that covers ``length`` with as
    few tiles as ``tile`` would: an image just over one tile wide is cut into two halves plus the
    overlap instead of two full tiles and a third, so little work is done twice."""
    if length <= tile:
        return length
    n = -(-(length - overlap) // max(1, tile - overlap))
    even = -(-(length + (n - 1) * overlap) // n)
    even = -(-even // align) * align
    return min(tile, max(even, overlap + align))


def make_tiles(h: int, w: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    th, tw = even_tile(h, tile, overlap, align), even_tile(w, tile, overlap, align)
    return [
        Tile(y, x, th, tw)
        for y in tile_starts(h, th, overlap, align)
        for x in tile_starts(w, tw, overlap, align)
    ]


def _ramp(n: int, start_inner: bool, end_inner: bool, overlap: int) -> np.ndarray:
    """1-D weights of length ``n`` (output pixels), ramped only at inner edges."""
    wgt = np.ones(n, np.float64)
    if overlap <= 0:
        return wgt
    cut = overlap // 4
    ramp_len = max(1, overlap - 2 * cut)
    ramp = (np.arange(1, ramp_len + 1) / (ramp_len + 1)) ** 1.0
    prof = np.concatenate([np.full(cut, 1e-6), ramp])[: n]
    if start_inner:
        wgt[: prof.size] = prof
    if end_inner:
        wgt[n - prof.size :] = np.minimum(wgt[n - prof.size :], prof[::-1])
    return wgt


def blend_weight(tile: Tile, h: int, w: int, overlap: int, scale: int) -> np.ndarray:
    """(h*s, w*s) weight of ``tile`` inside an image of (h, w) input pixels."""
    wy = _ramp(tile.h * scale, tile.y0 > 0, tile.y0 + tile.h < h, overlap * scale)
    wx = _ramp(tile.w * scale, tile.x0 > 0, tile.x0 + tile.w < w, overlap * scale)
    return np.outer(wy, wx).astype(np.float32)


def padded_size(n: int, multiple: int, minimum: int) -> int:
    n = max(n, minimum)
    return -(-n // multiple) * multiple


def pad_to(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom/right to (ph, pw): reflect where possible, else replicate."""
    h, w = x.shape[-2:]
    dh, dw = ph - h, pw - w
    if dh == 0 and dw == 0:
        return x
    mode = "reflect" if dh < h and dw < w else "replicate"
    return F.pad(x, (0, dw, 0, dh), mode=mode)
