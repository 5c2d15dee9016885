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

    def output_slices(self, scale: int) -> tuple[slice, slice]:
        """The tile's (Y, X) slices in the output, ``scale`` output pixels per input pixel."""
        return slice(self.y0 * scale, (self.y0 + self.h) * scale), slice(self.x0 * scale, (self.x0 + self.w) * scale)


@dataclass(frozen=True)
class PlaneTiling:
    """How one image plane is cut: its padded size, the tiles, their overlap and blend weights.

    Decided from the whole plane only, so an in-memory run, every dask chunk and every streamed
    block restore the same tiles and blend them with the same weights.
    """

    h: int
    w: int
    ph: int
    pw: int
    tiles: tuple[Tile, ...]
    overlap: int
    scale: int

    def weight(self, t: Tile) -> np.ndarray:
        """The tile's (h*s, w*s) blend weight (all ones when one tile covers the plane)."""
        if len(self.tiles) == 1:
            return np.ones((t.h * self.scale, t.w * self.scale), np.float32)
        return blend_weight(t, self.ph, self.pw, self.overlap, self.scale)

    def pad_mode(self) -> str:
        """How the plane is padded to (ph, pw) (:func:`pad_to`'s rule for the whole plane)."""
        return "reflect" if self.ph - self.h < self.h and self.pw - self.w < self.w else "replicate"

    def touching(self, y0: int, y1: int, x0: int, x1: int) -> list[int]:
        """Indices of the tiles that overlap input rows [y0, y1) and columns [x0, x1)."""
        return [k for k, t in enumerate(self.tiles)
                if t.y0 < y1 and y0 < t.y0 + t.h and t.x0 < x1 and x0 < t.x0 + t.w]


def plane_tiling(h: int, w: int, tile: int, overlap: int, multiple: int, min_size: int, scale: int) -> PlaneTiling:
    """The tiles of an (h, w) plane: padded once to ``multiple``, cut into aligned tiles of at
    most ``tile`` pixels that overlap by ``overlap`` (at most half a tile)."""
    ph, pw = padded_size(h, multiple, min_size), padded_size(w, multiple, min_size)
    tile = max(padded_size(min_size, multiple, 1), min(tile, max(ph, pw)) // multiple * multiple)
    overlap = min(overlap, tile // 2)
    return PlaneTiling(h, w, ph, pw, tuple(make_tiles(ph, pw, tile, overlap, align=multiple)), overlap, scale)


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


def pad_to(x: torch.Tensor, ph: int, pw: int, mode: str | None = None) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom/right to (ph, pw): reflect where possible, else replicate
    (``mode`` forces one: a tile at the border of a plane is padded as the plane is)."""
    h, w = x.shape[-2:]
    dh, dw = ph - h, pw - w
    if dh == 0 and dw == 0:
        return x
    if mode is None:
        mode = "reflect" if dh < h and dw < w else "replicate"
    return F.pad(x, (0, dw, 0, dh), mode=mode)
