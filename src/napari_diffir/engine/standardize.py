"""The output mapped to the input's mean and standard deviation, from statistics of the whole output.

bioimage.io's ``scale_mean_variance`` (with the input as reference) standardises a model's output
by the output's own mean and standard deviation and gives it the input's. Those are statistics of
the whole restored image, so the engine applies the map once every tile (and, for a dask array,
every block) is done, never to a tile: a tiled run gives what an untiled one gives. Declared by
``RestorerInfo.standardize_output`` (its ``eps``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .axes import Layout
from .normalize import Normalizer, channel_moments, mean_std

__all__ = ["standardize", "standardize_lazy"]


def standardize(work: np.ndarray, eps: float) -> None:
    """In place: each channel of the normalised (N, C, Y, X) output to zero mean and unit variance
    (``(y - mean) / (std + eps)``, statistics over all planes); the normaliser's inverse then gives
    it the input's mean and standard deviation."""
    mean, std = (v[:, None, None] for v in mean_std([channel_moments(work[n]) for n in range(work.shape[0])]))
    for n in range(work.shape[0]):
        work[n] = (work[n] - mean) / (std + eps)


def standardize_lazy(y: Any, layout: Layout, norm: Normalizer, eps: float, channels: int) -> Any:
    """The same map on a lazy output already in intensities ``Y = y * span + lo``:
    ``(Y - mean(Y)) / (std(Y) + eps * span) * span + lo``, with the statistics of the whole array
    (dask holds the restored blocks until they are known)."""
    lo, span = (v[:, 0, 0] for v in norm._lo_span(channels))
    c = layout.axes.index("C") if "C" in layout.axes else None
    others = tuple(i for i in range(y.ndim) if i != c)
    mean = y.mean(axis=others, dtype=np.float64)
    std = y.std(axis=others, dtype=np.float64)
    shape = [1] * y.ndim
    if c is not None:
        shape[c] = channels

    def per_channel(v):
        return v.reshape(shape)

    return (y - per_channel(mean)) / per_channel(std + eps * span) * per_channel(span) + per_channel(lo)

