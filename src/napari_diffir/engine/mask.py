"""Inpainting masks in the engine's layouts: (N, Y, X) float32 in memory, uint8 dask blocks lazily.

Shapes are checked by :func:`~.check.check` first: a mask is (Y, X) or the image's shape without C.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .axes import Layout, as_array


def work_mask(mask: Any, layout: Layout) -> np.ndarray:
    """The mask as (N or 1, Y, X) float32, 1 where pixels are to be filled."""
    m = as_array(mask)
    if m.shape == layout.yx:
        return (m > 0).astype(np.float32)[None]
    sub = Layout("".join(a for a in layout.axes if a != "C"), m.shape)
    return (sub.to_work(m)[:, 0] > 0).astype(np.float32)


def lazy_mask(mask: Any, x, layout: Layout):
    """The mask as a uint8 dask array with ``x``'s shape and chunks, except a single C entry."""
    import dask.array as da

    m = mask if type(mask).__module__.startswith("dask.") else da.from_array(np.asarray(mask), chunks=-1)
    if tuple(m.shape) == layout.yx:
        m = m.reshape(tuple(n if a in "YX" else 1 for a, n in zip(layout.axes, layout.shape)))
    elif "C" in layout.axes:
        m = da.expand_dims(m, layout.axes.index("C"))
    target = tuple(1 if a == "C" else n for a, n in zip(layout.axes, layout.shape))
    chunks = tuple((1,) if a == "C" else c for a, c in zip(layout.axes, x.chunks))
    return da.broadcast_to((m > 0).astype(np.uint8), target).rechunk(chunks)
