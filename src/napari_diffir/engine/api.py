"""``napari_diffir.restore``: the engine's one entry point, for arrays in memory and for dask.

An array in memory is validated and restored now (:mod:`.restore`); a dask array becomes a lazy
graph of blocks (:mod:`.lazy`), each of which the in-memory path restores. Only this module
imports both, so the import arrows inside the engine point one way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..restorer import Restorer
from .axes import as_array
from .lazy import restore_dask
from .restore import ProgressFn, prepare


def restore(
    data: Any,
    restorer: "str | Restorer",
    *,
    axes: str | None = None,
    weights: str | None = None,
    tile_size: "int | str | None" = "auto",
    tile_overlap: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    steps: int | None = None,
    seed: int | None = None,
    mask: Any = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
    normalize: str = "percentile",
    percentiles: tuple[float, float] = (1.0, 99.8),
    output_dtype: Any = None,
    rgb: bool | None = None,
    options: dict | None = None,
) -> np.ndarray:
    """Restore ``data`` with ``restorer`` and return a new array (the input is never modified).

    :param data: numpy array, array-like (Zarr, tifffile, napari layer) or dask array (lazy result).
    :param restorer: a registered name (see ``list_restorers()``) or a :class:`Restorer` instance.
    :param axes: letters from ``STZCYX`` naming each dimension; defaults from ``ndim`` (and RGB).
    :param weights: checkpoint for restorers that take one (official DiffIR/SRDiff files too).
    :param tile_size: tile side in input pixels, ``"auto"`` (from the restorer and free memory)
        or ``None`` (whole image at once).
    :param tile_overlap: overlap between tiles in input pixels (default: the restorer's halo).
    :param device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda[:N]`` or ``mps``.
    :param precision: ``fp32``, ``fp16`` or ``bf16`` (autocast).
    :param steps: sampling steps for diffusion restorers (default: the restorer's).
    :param seed: makes stochastic restorers reproducible (drawn at random and recorded if None).
    :param mask: inpainting mask, same Y/X shape as the image (or the image without C); >0 = fill.
    :param progress: ``progress(done, total, message)`` called per tile and sampling step;
        ``done`` is fractional while a tile is being sampled.
    :param cancel: an event (``is_set()``) or a callable returning True to stop; the run then
        raises :class:`RestorationCancelled` within one step and returns nothing.
    :param normalize: ``percentile`` (default), ``minmax``, ``dtype`` or ``none``.
    :param output_dtype: ``None`` for float32, ``"input"`` for the input dtype (clipped), or a dtype.
    :param options: extra restorer options (e.g. ``{"sampler": "ddim"}``) when a name is given.
    """
    if _is_dask(data):
        return restore_dask(
            data, restorer, axes=axes, weights=weights, tile_size=tile_size,
            tile_overlap=tile_overlap, device=device, precision=precision, steps=steps,
            seed=seed, mask=mask, normalize=normalize, percentiles=percentiles,
            output_dtype=output_dtype, rgb=rgb, options=options,
        )
    array = as_array(data)
    run = prepare(
        array, restorer, axes=axes, weights=weights, tile_size=tile_size,
        tile_overlap=tile_overlap, device=device, precision=precision, steps=steps, seed=seed,
        mask=mask, normalize=normalize, percentiles=percentiles, output_dtype=output_dtype,
        rgb=rgb, options=options,
    )
    return run.execute(progress=progress, cancel=cancel)


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask.")
