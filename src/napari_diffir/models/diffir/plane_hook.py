"""Run DIRformer's attention and feed-forward blocks with a whole plane's statistics.

The transposed attention of a tile builds each head's (C/h x C/h) map from sums over the tile's
pixels (the norms of the q and k rows and the Gram ``q k^T``), and the IPR modulation is one
vector per tile. Everything else in DIRformer is local. :class:`PlaneHook`, installed through
``PLANE_HOOK`` for one forward, replaces both by the plane's values (one per plane, or one per
fixed cell blended between cell centres), and can sum the attention statistics of the pixels a
compute cell is responsible for (:class:`AttentionSums`). Attention layers are numbered in
the order a forward calls them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from ._arch.dirformer import Attention, FeedForward, _ipr_affine, _modulated_pointwise, _pointwise, cosine_attention
from .plane_cells import Cells

__all__ = ["AttentionSums", "PlaneHook", "StopForward"]

Region = tuple[int, int, int, int]  # (y0, y1, x0, x1) in plane input pixels


class StopForward(Exception):
    """Raised by the hook once the last layer it was asked to collect has been summed."""


def _support(weights: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(cell, start, stop)`` for each cell with weight somewhere in a (cells, n) tent matrix."""
    out = []
    for i in range(weights.shape[0]):
        nz = torch.nonzero(weights[i] > 0).flatten()
        if nz.numel():
            out.append((i, int(nz[0]), int(nz[-1]) + 1))
    return out


class AttentionSums:
    """Per cell and attention layer: sums over pixels of ``q_i^2``, ``k_j^2`` and ``q_i k_j``.

    Accumulated in float64; :meth:`attention` turns them into the layer's attention maps exactly
    as :meth:`Attention.attention_map` does for the pixels of one tile.
    """

    def __init__(self, cells: tuple[Cells, Cells]) -> None:
        self.cells = cells
        self.qq: dict[int, torch.Tensor] = {}
        self.kk: dict[int, torch.Tensor] = {}
        self.qk: dict[int, torch.Tensor] = {}
        self.temperature: dict[int, torch.Tensor] = {}

    def add(self, layer: int, module: Attention, q: torch.Tensor, k: torch.Tensor,
            size: tuple[int, int], stride: int, origin: tuple[int, int], core: Region) -> None:
        """Add the pixels of ``core`` from a tile at ``origin`` (q, k: (1, heads, d, h*w))."""
        heads, d = q.shape[1], q.shape[2]
        q4, k4 = q.reshape(heads, d, *size), k.reshape(heads, d, *size)
        if layer not in self.qq:
            ny, nx = self.cells[0].count, self.cells[1].count
            self.qq[layer] = torch.zeros(ny, nx, heads, d, dtype=torch.float64, device=q.device)
            self.kk[layer] = torch.zeros_like(self.qq[layer])
            self.qk[layer] = torch.zeros(ny, nx, heads, d, d, dtype=torch.float64, device=q.device)
            self.temperature[layer] = module.temperature.detach()
        y0, y1, x0, x1 = core
        for ci, r0, r1 in _pieces(self.cells[0], y0, y1, origin[0], stride):
            for cj, c0, c1 in _pieces(self.cells[1], x0, x1, origin[1], stride):
                qs = q4[:, :, r0:r1, c0:c1].reshape(heads, d, -1).float()
                ks = k4[:, :, r0:r1, c0:c1].reshape(heads, d, -1).float()
                self.qq[layer][ci, cj] += qs.square().sum(-1)
                self.kk[layer][ci, cj] += ks.square().sum(-1)
                self.qk[layer][ci, cj] += qs @ ks.transpose(-2, -1)

    def attention(self, layer: int) -> torch.Tensor:
        """(ny, nx, heads, d, d) float32 attention maps of ``layer``, one per cell."""
        return cosine_attention(self.qk[layer], self.qq[layer].sqrt(), self.kk[layer].sqrt(),
                                self.temperature[layer].double()).float()


def _pieces(cells: Cells, start: int, stop: int, origin: int, stride: int):
    """``(cell, first, last)`` rows of a layer (at ``stride``) in each cell's part of ``[start, stop)``."""
    for i in cells.overlapping(start, stop):
        a, b = cells.bounds(i)
        a, b = max(a, start), min(b, stop)
        if b > a:
            yield i, (a - origin) // stride, (b - origin) // stride


class PlaneHook:
    """One forward of a tile at ``origin`` (plane input pixels) with plane statistics.

    :param ipr: (ny, nx, D) prior per cell of ``ipr_cells`` (1 x 1: one for the plane).
    :param attention: per attention layer, (ny, nx, heads, d, d) maps per cell of
        ``attention_cells``, or None: that layer uses the tile's own statistics.
    :param sums: where to add the statistics of the layers in ``collect`` over ``core``.
    :param stop_after: raise :class:`StopForward` once this layer has been summed.
    """

    def __init__(
        self,
        *,
        origin: tuple[int, int],
        size: tuple[int, int],
        ipr: torch.Tensor,
        ipr_cells: tuple[Cells, Cells],
        attention: Sequence[torch.Tensor | None],
        attention_cells: tuple[Cells, Cells],
        sums: AttentionSums | None = None,
        collect: Collection[int] = (),
        core: Region | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.origin, self.size = origin, size
        self.ipr, self.ipr_cells = ipr, ipr_cells
        self.maps, self.attention_cells = attention, attention_cells
        self.sums, self.collect, self.core, self.stop_after = sums, collect, core, stop_after
        self.calls = 0

    def _stride(self, x: torch.Tensor) -> int:
        return self.size[0] // x.shape[-2]

    def _weights(self, cells: tuple[Cells, Cells], x: torch.Tensor, stride: int):
        """Tent weights (ny, h) and (nx, w) at the centres of ``x``'s pixels (in plane pixels)."""
        out = []
        for axis, n in ((0, x.shape[-2]), (1, x.shape[-1])):
            centres = self.origin[axis] + (torch.arange(n, device=x.device, dtype=torch.float64) + 0.5) * stride
            out.append(cells[axis].weights(centres))
        return out

    def _modulated(self, kernel: nn.Module, conv: nn.Conv2d, x: torch.Tensor,
                   ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None) -> torch.Tensor:
        """``conv(LN-affine(x) * gamma + beta)`` with the plane's (or the pixel's blended) prior."""
        ny, nx, dim = self.ipr.shape
        if ny * nx == 1:
            scale, shift = _ipr_affine(kernel, self.ipr.view(1, dim), x.shape[0], ln_weight, ln_bias)
            return _modulated_pointwise(x, conv, scale, shift)
        # (x_hat * w + b) * gamma + beta is linear in the prior: blend the cells' (scale, shift)
        scale, shift = _ipr_affine(kernel, self.ipr.view(-1, dim), ny * nx, ln_weight, ln_bias)
        wy, wx = self._weights(self.ipr_cells, x, self._stride(x))
        rows, cols = _support(wy), _support(wx)
        iy = [i for i, *_ in rows]
        jx = [j for j, *_ in cols]
        wy, wx = wy[iy].to(scale.dtype), wx[jx].to(scale.dtype)

        def blend(values: torch.Tensor) -> torch.Tensor:
            v = values.view(ny, nx, -1)[iy][:, jx]  # (cells y, cells x, C)
            per_pixel = torch.einsum("iy,jx,ijc->yxc", wy, wx, v)
            return per_pixel.permute(2, 0, 1).unsqueeze(0).to(x.dtype)

        return _pointwise(torch.addcmul(blend(shift), x, blend(scale)), conv)

    def attention(self, module: Attention, x: torch.Tensor, z: torch.Tensor,
                  ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None) -> torch.Tensor:
        layer = self.calls
        self.calls += 1
        stride = self._stride(x)
        q, k, v = module.split(module.qkv_dwconv(self._modulated(module.kernel, module.qkv, x, ln_weight, ln_bias)))
        if self.sums is not None and layer in self.collect:
            assert self.core is not None
            self.sums.add(layer, module, q, k, tuple(x.shape[-2:]), stride, self.origin, self.core)
        if layer == self.stop_after:
            raise StopForward
        maps = self.maps[layer] if layer < len(self.maps) else None
        if maps is None:
            return module.attend(module.attention_map(q, k), v)
        if maps.shape[0] * maps.shape[1] == 1:
            return module.attend(maps[0, 0].unsqueeze(0), v)
        return self._blended(module, maps, v, stride)

    def _blended(self, module: Attention, maps: torch.Tensor, v: torch.Tensor, stride: int) -> torch.Tensor:
        """``sum_c w_c(p) * attend(map_c, v)(p)``: each cell's map applied where its weight is > 0."""
        wy, wx = self._weights(self.attention_cells, v, stride)
        out = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        for i, r0, r1 in _support(wy):
            for j, c0, c1 in _support(wx):
                part = module.attend(maps[i, j].unsqueeze(0), v[:, :, r0:r1, c0:c1])
                weight = (wy[i, r0:r1, None] * wx[j, None, c0:c1]).to(part.dtype)
                out[:, :, r0:r1, c0:c1] += part * weight
        return out

    def feed_forward(self, module: FeedForward, x: torch.Tensor, z: torch.Tensor,
                     ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None) -> torch.Tensor:
        return module.gate(self._modulated(module.kernel, module.project_in, x, ln_weight, ln_bias))
