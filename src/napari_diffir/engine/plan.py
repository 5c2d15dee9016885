"""``plan()``: every decision of a restoration, made once, before any pixel is restored.

``restore()``, the widget, the CLI, dask graphs and the streaming path all run a :class:`Plan`:
the restorer (built once), the layout, the channel groups, the tile and its overlap, the
device, the output dtype and the seed. The rules behind those decisions live
here and in :mod:`.check` only, so no frontend restates them.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..restorer import Restorer, RestorerInfo
from .axes import Layout, as_array, axes_for
from .channels import ChannelMap, channel_map
from .check import check, check_finite
from .device import check_device_name, local_device, resolve_device, resolve_precision
from .execute import has_plane_statistics
from .lazy import cached_restorer, plan_chunks
from .mask import lazy_mask, work_mask
from .memory import forward_bytes, tile_budget
from .normalize import Normalizer
from .resolve import RestorerSpec, resolve_restorer
from .settings import DEFAULTS, MIN_TILE, Problem, RestoreSettings
from .tiling import PlaneTiling, plane_tiling

__all__ = ["Plan", "auto_tile_size", "draw_seed", "is_lazy", "plan", "resolve_tile", "round_halo"]


@dataclass(frozen=True)
class Plan:
    """A validated restoration, ready to run (see :func:`~.run.run`)."""

    data: Any
    """The input: a numpy array, or the dask array rechunked to the processing blocks."""
    layout: Layout
    restorer: Restorer | None
    """The restorer; ``None`` only in the copy a dask task carries of a named restorer's plan."""
    spec: RestorerSpec | None
    """How each worker process builds a named restorer; ``None`` when the instance travels."""
    info: RestorerInfo
    settings: RestoreSettings
    """The settings as given (weights and options as named; recorded in the provenance)."""
    device: Any
    """The torch device in memory; for a dask array the device name, which each worker resolves."""
    precision: str
    """``fp32``, ``fp16`` or ``bf16``: the settings' precision with ``auto`` resolved for the
    device (for a dask array, the device tiles are sized for here)."""
    channels: ChannelMap
    tile: int
    """Tile side in input pixels (``tile_size=None``: the whole image)."""
    overlap: int
    """Overlap between tiles in input pixels."""
    seed: int
    output_dtype: np.dtype | None
    """What the result is cast to; ``None`` leaves it float32."""
    mask: Any = None
    """The inpainting mask: (N or 1, Y, X) float32 in memory; a uint8 dask array lazily."""
    normalizer: Normalizer | None = None
    """The image's intensity normaliser; ``None`` until the run fits it on the whole image."""
    plane_ids: tuple[int, ...] | None = None
    """A dask task's global plane numbers (seeds), or ``None`` for the whole image."""

    @property
    def lazy(self) -> bool:
        return is_lazy(self.data)

    @property
    def result_dtype(self) -> np.dtype:
        return self.output_dtype if self.output_dtype is not None else np.dtype(np.float32)

    def tiling(self, h: int, w: int, tile: int | None = None) -> PlaneTiling:
        """The tiles of an (h, w) plane and their blending, with the plan's tile (or ``tile``, when
        out of memory halved it): one rule for the in-memory run and the dask graph."""
        i = self.info
        return plane_tiling(h, w, self.tile if tile is None else tile, self.overlap, i.multiple_of, i.min_size,
                            i.scale)


def plan(
    data: Any,
    restorer: str | Restorer,
    settings: RestoreSettings = DEFAULTS,
    *,
    mask: Any = None,
    normalizer: Normalizer | None = None,
    built: Restorer | None = None,
) -> Plan:
    """Check everything and decide everything; raises ``ValueError`` naming the first problem.

    :param data: numpy array, array-like (napari layer, Zarr, tifffile) or dask array.
    :param restorer: a registered name or a :class:`~napari_diffir.Restorer` instance.
    :param mask: inpainting mask, (Y, X) or the image's shape without C; > 0 = fill.
    :param normalizer: the normaliser to use instead of fitting one (a resumed run's).
    :param built: the restorer already built from ``restorer`` and the settings' weights and
        options; it is used (and, for a dask array, shipped in the graph) instead of building
        one, so a frontend can let the model go after its run instead of caching it.
    """
    lazy = is_lazy(data)
    if not lazy:
        data = as_array(data)
        check_finite(data)
    if mask is not None and not is_lazy(mask):
        mask = as_array(mask)
    shape, dtype = tuple(int(n) for n in data.shape), np.dtype(data.dtype)
    _raise(check(None, shape, dtype, settings))
    if built is not None:
        instance, spec = built, None
    else:
        instance, spec = build_restorer(restorer, settings, lazy)
    info = instance.info
    settings = prescribed_normalization(settings, info)
    layout = Layout(axes_for(shape, settings.axes, settings.rgb), shape)
    if lazy:
        check_device_name(settings.device)
        device, sizing = settings.device, local_device(settings.device)
    else:
        device = sizing = resolve_device(settings.device)
    tile = resolve_tile(settings.tile_size, info, layout.yx, sizing, whole_plane_first=has_plane_statistics(instance))
    _raise(check(
        info, shape, dtype, settings, device_type=None if lazy else device.type,
        mask_shape=None if mask is None else tuple(mask.shape),
        auto_tile=tile if settings.tile_size == "auto" else None,
    ))
    overlap = info.tile_overlap if settings.tile_overlap is None else int(settings.tile_overlap)
    if lazy:
        data = data.rechunk(plan_chunks(data.chunks, layout))
        mask = None if mask is None else lazy_mask(mask, data, layout)
    else:
        mask = None if mask is None else work_mask(mask, layout)
    return Plan(
        data=data, layout=layout, restorer=instance, spec=spec, info=info, settings=settings,
        device=device, precision=resolve_precision(settings.precision, sizing, info.supports_half),
        channels=channel_map(layout.channels, info), tile=tile, overlap=overlap,
        seed=_seed(settings.seed, info),
        output_dtype=settings.output_dtype_for(dtype), mask=mask, normalizer=normalizer,
    )


def prescribed_normalization(settings: RestoreSettings, info: RestorerInfo) -> RestoreSettings:
    """``settings`` with the normalisation the restorer prescribes (``info.normalize``), if any."""
    if info.normalize is None:
        return settings
    return dataclasses.replace(settings, normalize=info.normalize,
                               percentiles=info.percentiles or settings.percentiles)


def build_restorer(restorer: str | Restorer, settings: RestoreSettings, lazy: bool):
    """The restorer instance, and for a name given with a dask array the spec workers build it
    from (the instance then comes from the per-process cache that those workers share)."""
    if lazy and isinstance(restorer, str):
        spec = RestorerSpec.of(restorer, settings.weights, settings.options)
        return cached_restorer(spec, settings.device), spec  # checks name/options/weights now
    return resolve_restorer(restorer, settings.weights, settings.options), None


def is_lazy(data: Any) -> bool:
    """Whether ``data`` is a dask array (restored as a lazy graph of blocks)."""
    return type(data).__module__.startswith("dask.")


def resolve_tile(tile_size: int | str | None, info: RestorerInfo, yx: tuple[int, int], device,
                 whole_plane_first: bool = False, concurrent: int = 1) -> int:
    """The tile side: the whole image for ``None``, sized to ``device``'s memory for ``auto``.

    ``whole_plane_first``: with ``auto``, one tile covering the (Y, X) plane if its memory
    estimate fits the budget and is at most :data:`WHOLE_PLANE_FACTOR` times that of the
    restorer's own tile (twice for a plain forward, four times for a restorer that runs a whole
    plane in strips and declares ``info.plane_bytes_per_pixel``). For a restorer whose tiles share
    statistics of the whole plane (DiffIR), a tiled plane first costs a statistics pass of
    several forwards, so such a plane is restored untiled: faster and exact (bundled denoiser,
    1024²: 4.8 CPU-s in strips against 59 tiled). The rule is the same for numpy, dask and
    streamed data, so their results stay equal, except that ``concurrent`` whole planes (a
    streamed run's workers, each restoring a plane) must fit the budget together.
    """
    if tile_size is None:
        return max(yx)
    if isinstance(tile_size, str) and tile_size == "auto":
        tile = auto_tile_size(info, device)
        factor = WHOLE_PLANE_FACTOR[getattr(info, "plane_bytes_per_pixel", None) is not None]
        plane = forward_bytes(info, yx, whole_plane=True)
        if whole_plane_first and max(yx) > tile and plane <= factor * forward_bytes(info, (tile, tile)) and \
                plane * max(1, concurrent) <= tile_budget(device):
            return max(yx)
        return tile
    return int(tile_size)


WHOLE_PLANE_FACTOR = {False: 2, True: 4}
"""How many times a tile's memory an untiled plane may take (key: whether it runs in strips):
a strip forward holds the plane's feature maps but no whole-plane temporaries (1024² bundled
denoiser, fp32, peak growth: 1.4 GiB against 2.7 for the plain forward and 0.45 for a 384²
tile; ``benchmarks/bench_strips.py``)."""


def auto_tile_size(info: RestorerInfo, device) -> int:
    """The restorer's preferred tile, halved until its memory estimate fits in half the free memory."""
    tile = getattr(info, "tile_size", 512) or 512
    budget = tile_budget(device)
    while tile > MIN_TILE and forward_bytes(info, (tile, tile)) > budget:
        tile //= 2
    return max(tile, MIN_TILE)


def round_halo(overlap: int, multiple: int) -> int:
    """``overlap`` rounded up to a multiple of the model's size multiple."""
    return -(-int(overlap) // multiple) * multiple


def draw_seed() -> int:
    """A fresh seed for a run given none (recorded in its provenance, so it can be repeated)."""
    return random.SystemRandom().randrange(2**31)


def _seed(seed: int | None, info: RestorerInfo) -> int:
    """The seed given, a fresh one for a stochastic restorer, else 0: a restorer that draws noise
    without declaring it still repeats itself (and its provenance needs no seed)."""
    if seed is not None:
        return int(seed)
    return draw_seed() if info.stochastic else 0


def _raise(problems: list[Problem]) -> None:
    if problems:
        raise ValueError(str(problems[0]))
