"""``napari_diffir.restore``: one pipeline from any array to a restored array, for every restorer.

Settings (:mod:`.settings`) -> checks (:mod:`.check`) -> plan (:mod:`.plan`) -> run
(:mod:`.execute` in memory, :mod:`.lazy` for dask arrays) -> result (:mod:`.result`).
The pipeline is imported on first use, so that the settings and checks (which the widget and the
CLI read without running anything) stay free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import DEFAULTS as D
from .settings import from_text

if TYPE_CHECKING:
    import numpy as np

    from ..restorer import Restorer
    from .execute import ProgressFn


def restore(
    data: Any,
    restorer: str | Restorer,
    *,
    axes: str | None = D.axes,
    weights: str | None = D.weights,
    tile_size: int | str | None = D.tile_size,
    tile_overlap: int | None = D.tile_overlap,
    device: str = D.device,
    precision: str = D.precision,
    steps: int | None = D.steps,
    seed: int | None = D.seed,
    mask: Any = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
    normalize: str = D.normalize,
    percentiles: tuple[float, float] = D.percentiles,
    output_dtype: Any = D.output_dtype,
    rgb: bool | None = D.rgb,
    options: dict | None = D.options,
    tta: bool = D.tta,
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
    :param precision: ``fp32``, ``fp16`` or ``bf16`` (autocast), or ``auto`` (bf16 where the device
        computes it natively, else fp32).
    :param steps: sampling steps for diffusion restorers (default: the restorer's).
    :param seed: makes stochastic restorers reproducible (drawn at random and recorded if None).
    :param mask: inpainting mask, same Y/X shape as the image (or the image without C); >0 = fill.
    :param progress: ``progress(done, total, message)`` called per tile and sampling step;
        ``done`` is fractional while a tile is being sampled.
    :param cancel: an event (``is_set()``) or a callable returning True to stop; the run then
        raises :class:`RestorationCancelled` within one step and returns nothing.
    :param normalize: ``percentile`` (default), ``minmax``, ``dtype``, ``meanstd`` (zero mean, unit
        variance over the whole image) or ``none``.
    :param output_dtype: ``None`` for float32, ``"input"`` for the input dtype (clipped), or a dtype.
    :param options: extra restorer options (e.g. ``{"sampler": "ddim"}``) when a name is given.
    :param tta: test-time augmentation: average the restorations of the eight flips and quarter
        turns of each plane (8x the time; tiles, dask blocks and seeds behave as without it).

    Settings may also be given as text, parsed as the CLI and the widget parse them (see
    :func:`~napari_diffir.engine.settings.from_text`).
    """
    from .plan import plan
    from .run import run

    settings = from_text(
        axes=axes, weights=weights, tile_size=tile_size, tile_overlap=tile_overlap, device=device,
        precision=precision, steps=steps, seed=seed, normalize=normalize, percentiles=percentiles,
        output_dtype=output_dtype, rgb=rgb, options=options, tta=tta,
    )
    return run(plan(data, restorer, settings, mask=mask), progress, cancel).data
