"""Fixed cells on an image plane: where plane statistics are gathered and how they are blended.

Two uses, both tied to the plane and never to the tiles a restoration happens to be cut into:

- :class:`Cells` splits one axis into cells of a fixed size. Statistics are summed per cell and
  read back at any pixel through tent (linear) weights between cell centres, a partition of
  unity that is constant beyond the outer centres. One cell spanning the axis (``size=None``)
  is the global case: weight 1 everywhere.
- :func:`walk` visits the plane in compute cells (a core plus a halo of context), the unit of
  work and memory of the statistics passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import torch

__all__ = ["Cells", "Window", "walk"]


@dataclass(frozen=True)
class Cells:
    """Cells ``[i * size, min((i + 1) * size, length))`` along one axis of ``length`` pixels.

    ``size=None`` is one cell over the whole axis.
    """

    length: int
    size: int | None = None

    @property
    def step(self) -> int:
        return self.length if self.size is None else self.size

    @property
    def count(self) -> int:
        return -(-self.length // self.step)

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.step, min((i + 1) * self.step, self.length)

    def overlapping(self, start: int, stop: int) -> range:
        """Indices of the cells that intersect ``[start, stop)``."""
        return range(start // self.step, -(-stop // self.step))

    def weights(self, positions: torch.Tensor) -> torch.Tensor:
        """(count, len(positions)) tent weights of each cell at ``positions`` (float64, pixels).

        Each column sums to 1: linear between neighbouring cell centres, 1 for the nearest cell
        beyond the first or last centre.
        """
        pos = positions.to(torch.float64)
        if self.count == 1:
            return torch.ones(1, pos.numel(), dtype=torch.float64, device=pos.device)
        centres = torch.tensor(
            [sum(self.bounds(i)) / 2 for i in range(self.count)], dtype=torch.float64, device=pos.device
        )
        pos = pos.clamp(centres[0], centres[-1])
        right = torch.searchsorted(centres, pos, right=True).clamp(1, self.count - 1)
        left = right - 1
        frac = (pos - centres[left]) / (centres[right] - centres[left])
        w = torch.zeros(self.count, pos.numel(), dtype=torch.float64, device=pos.device)
        cols = torch.arange(pos.numel(), device=pos.device)
        w[left, cols] = 1 - frac
        w[right, cols] += frac
        return w


@dataclass(frozen=True)
class Window:
    """A compute cell: the ``core`` whose statistics it contributes and the ``extent`` it runs on.

    Both are ``(y0, y1, x0, x1)`` in plane pixels; the extent is the core plus the halo, clipped
    to the plane (so the network's zero padding falls on the plane border, as in an untiled run).
    """

    core: tuple[int, int, int, int]
    extent: tuple[int, int, int, int]


def walk(height: int, width: int, cell: int, halo: int) -> Iterator[Window]:
    """Compute cells of ``cell`` x ``cell`` core pixels covering the plane, each with ``halo``."""
    for y0 in range(0, height, cell):
        for x0 in range(0, width, cell):
            y1, x1 = min(y0 + cell, height), min(x0 + cell, width)
            yield Window(
                (y0, y1, x0, x1),
                (max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo)),
            )
