"""Restoration of dask arrays: one lazy graph of blocks with halos, each restored by the engine.

``restore(dask_array, ...)`` lands here. The whole array is never loaded: every Y/X chunk is
restored on its own together with a halo of ``tile_overlap`` pixels taken from its neighbours
(``map_overlap`` for same-size restorers; ``overlap`` + ``map_blocks`` with chunks scaled by the
restorer's factor + ``trim_internal`` for super-resolution). At the image border no halo is
invented (``boundary="none"``), so a block sees exactly the edge the in-memory run sees.

Blocks agree with the in-memory result because everything global is decided once, up front:
the per-channel normaliser (percentiles of the same strided sample ``fit_normalizer`` uses), the
seed, and each block's place in the image (its (y, x) offset and global plane numbers), which
stochastic restorers use to cut their tile from one image-wide noise field.

Workers rebuild a named restorer from (name, weights, options) and keep it in a per-process
cache, so a model is loaded once per worker process, not once per chunk.
"""

from __future__ import annotations

import inspect
import os
import random
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..restorer import Restorer
from .axes import LOOP_AXES, Layout, default_axes, validate_axes
from .normalize import Normalizer, _subsample, fit_normalizer

__all__ = ["restore_dask", "block_stats", "reset_block_stats", "cached_restorer", "plan_chunks"]

MIN_BLOCK = 4
"""Smallest block side the engine accepts (a chunk must also be at least the halo)."""

_SAMPLE_LIMIT = inspect.signature(_subsample).parameters["limit"].default


# ---------------------------------------------------------------------------------------------
# Per-process model cache and block statistics


@dataclass(frozen=True)
class RestorerSpec:
    """What a worker needs to rebuild a registered restorer: small, picklable, hashable."""

    name: str
    weights: str | None
    options: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, name: str, weights: Any, options: dict | None) -> "RestorerSpec":
        opts = tuple(sorted((str(k), v) for k, v in (options or {}).items()))
        return cls(name, None if weights is None else str(weights), opts)


_cache: dict[tuple, Restorer] = {}
_cache_lock = threading.Lock()
_stats_lock = threading.Lock()
_stats: dict[str, Any] = {}


def cached_restorer(spec: RestorerSpec, device: str = "auto") -> Restorer:
    """The restorer for ``spec`` in this process, built (and its weights read) only once."""
    from .restore import resolve_restorer

    key = (spec.name, spec.weights, spec.options, str(device))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = resolve_restorer(spec.name, spec.weights, dict(spec.options))
            _record("models_loaded", 1)
        return _cache[key]


def _record(counter: str, amount: int) -> None:
    with _stats_lock:
        _stats.setdefault("pid", os.getpid())
        _stats[counter] = _stats.get(counter, 0) + amount


def _record_block(shape: tuple[int, ...]) -> None:
    with _stats_lock:
        _stats.setdefault("pid", os.getpid())
        _stats["blocks"] = _stats.get("blocks", 0) + 1
        size = int(np.prod(shape))
        if size > _stats.get("max_block_elements", 0):
            _stats["max_block_elements"] = size
            _stats["max_block_shape"] = tuple(int(n) for n in shape)


def block_stats() -> dict[str, Any]:
    """What this process has restored: ``blocks``, ``max_block_elements`` (input block incl.
    halo), ``max_block_shape``, ``models_loaded`` and ``pid``. Lets tests and users check that
    no worker ever held more than one block (``client.run(block_stats)`` on a cluster)."""
    with _stats_lock:
        out = {"pid": os.getpid(), "blocks": 0, "max_block_elements": 0, "max_block_shape": None,
               "models_loaded": 0}
        out.update(_stats)
        return out


def reset_block_stats() -> None:
    with _stats_lock:
        _stats.clear()


# ---------------------------------------------------------------------------------------------
# The graph


def restore_dask(
    data: Any,
    restorer: "str | Restorer",
    *,
    axes: str | None = None,
    weights: Any = None,
    tile_size: "int | str | None" = "auto",
    tile_overlap: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    steps: int | None = None,
    seed: int | None = None,
    mask: Any = None,
    normalize: str = "percentile",
    percentiles: tuple[float, float] = (1.0, 99.8),
    output_dtype: Any = None,
    rgb: bool | None = None,
    options: dict | None = None,
    normalizer: Normalizer | None = None,
):
    """Lazy restoration of the dask array ``data``; returns a dask array (nothing is computed
    except the normalisation percentiles, read from a bounded strided sample).

    Arguments are those of :func:`napari_diffir.restore`. Y/X chunks are the processing blocks
    (each is restored with a halo of ``tile_overlap`` pixels and split further into
    ``tile_size`` tiles if larger); rechunk first to choose them. The C axis is merged into one
    chunk because restorers map channels together. ``normalizer`` skips the percentile pass
    (a resumed run reuses the one it fitted before).
    """
    import dask.array as da

    from .restore import _channel_groups, _tile_size

    x = data
    if x.size == 0:
        raise ValueError(f"The image is empty (shape {x.shape})")
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"Expected a numeric image, but got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError("Complex images are not supported; pass the magnitude or real part")
    ax = validate_axes(axes, x.shape) if axes is not None else default_axes(x.shape, rgb)
    layout = Layout(ax, tuple(int(n) for n in x.shape))

    if isinstance(restorer, Restorer):
        if weights is not None or options:
            raise ValueError("weights= and options= apply to a restorer name, not to a Restorer instance")
        spec, instance = None, restorer
    elif isinstance(restorer, str):
        spec = RestorerSpec.of(restorer, weights, options)
        instance = cached_restorer(spec, device)  # validates name/options/weights now, not in a worker
    else:
        raise ValueError(f"restorer must be a registered name or a Restorer, but got {type(restorer).__name__}")
    info = instance.info
    _check_device_name(device, precision)
    if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ValueError(f"steps must be a positive integer, but got {steps!r}")
    _groups, out_channels, _ = _channel_groups(layout, info)
    # one tile size for every block ("auto" resolved here: workers' free memory differs)
    tile_size = _tile_size(tile_size, info, *layout.yx, _client_device(device))
    halo = info.tile_overlap if tile_overlap is None else int(tile_overlap)
    if halo < 0:
        raise ValueError(f"tile_overlap must be >= 0, but got {tile_overlap!r}")
    m = info.multiple_of
    halo = -(-halo // m) * m  # blocks then start on the model's pixel grid, as tiles do
    if output_dtype == "input":
        out_dtype = np.dtype(x.dtype)
    elif output_dtype is not None:
        out_dtype = np.dtype(output_dtype)
    else:
        out_dtype = None
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)

    x = x.rechunk(plan_chunks(x.chunks, layout, halo, info.name, multiple=m))
    norm = normalizer or fit_normalizer_dask(x, layout, normalize, percentiles)
    mask_full = _mask_like(mask, x, layout, info) if (mask is not None or info.needs_mask) else None

    s = info.scale
    fn = _BlockRestorer(
        spec=spec, instance=instance if spec is None else None, axes=ax,
        chunks=tuple(x.chunks), halo=halo, image_yx=layout.yx, loop_shape=layout.loop_shape,
        tile_size=tile_size, tile_overlap=tile_overlap, device=device, precision=precision,
        steps=steps, seed=int(seed), normalizer=norm, output_dtype=out_dtype,
    )
    dtype = out_dtype or np.dtype(np.float32)
    yi, xi = ax.index("Y"), ax.index("X")
    depth = {yi: halo, xi: halo}
    arrays = [x] if mask_full is None else [x, mask_full]
    meta = np.empty((0,) * x.ndim, dtype)
    same_channels = "C" not in ax or out_channels == layout.channels
    if s == 1 and same_channels:
        return da.map_overlap(
            fn, *arrays, depth=depth, boundary="none", trim=True, dtype=dtype, meta=meta,
            allow_rechunk=False, name=f"napari-diffir-{fn.token(x, mask_full)}",
        )
    expanded = [da.overlap.overlap(a, depth=depth, boundary="none", allow_rechunk=False) for a in arrays]
    out_chunks = []
    for i, (a, chunks) in enumerate(zip(ax, expanded[0].chunks)):
        if a in "YX":
            out_chunks.append(tuple(c * s for c in chunks))
        elif a == "C":
            out_chunks.append((out_channels,))
        else:
            out_chunks.append(chunks)
    y = da.map_blocks(
        fn, *expanded, chunks=tuple(out_chunks), dtype=dtype, meta=meta,
        name=f"napari-diffir-{fn.token(x, mask_full)}",
    )
    return da.overlap.trim_internal(y, {yi: halo * s, xi: halo * s}, boundary="none")


def plan_chunks(
    chunks: tuple, layout: Layout, halo: int, name: str = "the restorer", multiple: int = 1
) -> tuple:
    """Chunks to process, from the input's.

    C goes into one chunk. Y/X chunk boundaries are moved to multiples of ``multiple`` (the
    model's size multiple), so every block is padded and tiled exactly like the whole image
    there. A last Y/X chunk smaller than the halo joins its neighbour; any other chunk smaller
    than the halo is an error that names the fix.
    """
    out = []
    for a, c in zip(layout.axes, chunks):
        c = tuple(int(n) for n in c)
        if a == "C":
            c = (sum(c),)
        elif a in "YX" and len(c) > 1:
            if any(n % multiple for n in c[:-1]):
                c = _regular(sum(c), -(-c[0] // multiple) * multiple)
            need = max(halo, MIN_BLOCK)
            if len(c) > 1 and c[-1] < need:
                c = c[:-2] + (c[-2] + c[-1],)
            if len(c) > 1 and min(c) < need:
                raise ValueError(
                    f"The {a} chunks of the input ({_fmt_chunks(c)}) are smaller than the halo of "
                    f"{halo} pixels that {name!r} needs around each block (tile_overlap); rechunk "
                    f"to at least {need} pixels along {a} (e.g. --chunk {max(need, 256)} on the "
                    f"command line, or data.rechunk(...)), or pass a smaller tile_overlap"
                )
        out.append(c)
    return tuple(out)


def _regular(length: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, length - i) for i in range(0, length, size))


def _fmt_chunks(c: tuple[int, ...]) -> str:
    return ", ".join(map(str, c)) if len(c) <= 6 else f"{c[0]}, {c[1]}, ..., {c[-1]}"


def _check_device_name(device: Any, precision: str) -> None:
    """Check spelling here; availability is checked by each worker (its GPUs may differ)."""
    import torch

    from .device import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, but got {precision!r}")
    if isinstance(device, torch.device) or str(device).strip().lower() == "auto":
        return
    try:
        torch.device(str(device).strip().lower())
    except RuntimeError:
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None


def _client_device(device: Any):
    """The device ``auto`` tile sizes are computed for: ``device`` if usable here, else CPU."""
    import torch

    from .device import resolve_device

    try:
        return resolve_device(device)
    except ValueError:
        return torch.device("cpu")


def _mask_like(mask: Any, x, layout: Layout, info):
    """The mask as a uint8 dask array with ``x``'s shape and chunks except a single C entry."""
    import dask.array as da

    if mask is None:
        raise ValueError(f"Restorer {info.name!r} needs a mask (1 = pixels to fill); pass mask=")
    m = mask if type(mask).__module__.startswith("dask.") else da.from_array(np.asarray(mask), chunks=-1)
    h, w = layout.yx
    no_c = tuple(n for a, n in zip(layout.axes, layout.shape) if a != "C")
    if tuple(m.shape) == (h, w):
        shape = tuple(n if a in "YX" else 1 for a, n in zip(layout.axes, layout.shape))
        m = m.reshape(shape)
    elif tuple(m.shape) == no_c:
        if "C" in layout.axes:
            m = da.expand_dims(m, layout.axes.index("C"))
    else:
        raise ValueError(
            f"mask has shape {tuple(m.shape)}, but expected {(h, w)} (Y, X) or {no_c} (the image without C)"
        )
    target = tuple(1 if a == "C" else n for a, n in zip(layout.axes, layout.shape))
    chunks = tuple((1,) if a == "C" else c for a, c in zip(layout.axes, x.chunks))
    return da.broadcast_to((m > 0).astype(np.uint8), target).rechunk(chunks)


class _BlockRestorer:
    """The task run on every block: place it in the image, restore it with the engine."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def token(self, x, mask) -> str:
        from dask.base import tokenize

        # a named restorer is fully described by its spec; an instance's state can change
        # between calls, so its graphs are never shared (no stale results from dask caches)
        who = self.spec if self.spec is not None else ("instance", uuid.uuid4().hex)
        params = {k: v for k, v in self.__dict__.items() if k not in ("spec", "instance")}
        return tokenize(x.name, None if mask is None else mask.name, who, repr(sorted(params.items(), key=str)))

    def __call__(self, block: np.ndarray, mask: np.ndarray | None = None, block_id=None) -> np.ndarray:
        from .restore import prepare

        _record_block(block.shape)
        restorer = self.instance if self.spec is None else cached_restorer(self.spec, self.device)
        offsets = self._offsets(block_id)
        ax = self.axes
        origin = (offsets[ax.index("Y")], offsets[ax.index("X")])
        block_mask = None
        if mask is not None:
            block_mask = mask[(slice(None),) * ax.index("C") + (0,)] if "C" in ax else mask
        run = prepare(
            block, restorer, axes=ax, tile_size=self.tile_size, tile_overlap=self.tile_overlap,
            device=self.device, precision=self.precision, steps=self.steps, seed=self.seed,
            mask=block_mask, normalizer=self.normalizer, output_dtype=self.output_dtype,
            origin_offset=origin, plane_ids=self._plane_ids(block.shape, offsets),
            image_yx=self.image_yx,
        )
        return run.execute()

    def _offsets(self, block_id) -> list[int]:
        """Global start of this (halo-extended) block along every axis."""
        offsets = []
        for a, chunks, i in zip(self.axes, self.chunks, block_id):
            start = int(sum(chunks[:i]))
            if a in "YX" and i > 0:
                start -= self.halo
            offsets.append(start)
        return offsets

    def _plane_ids(self, shape, offsets) -> list[int]:
        """Global plane number (as in the in-memory run) of each plane of the block."""
        loops = [i for i, a in enumerate(self.axes) if a in LOOP_AXES]
        if not loops:
            return [0]
        local = np.indices([shape[i] for i in loops]).reshape(len(loops), -1)
        glob = local + np.array([offsets[i] for i in loops])[:, None]
        return np.ravel_multi_index(tuple(glob), self.loop_shape).tolist()


# ---------------------------------------------------------------------------------------------
# Normalisation over the whole lazy array


def fit_normalizer_dask(x, layout: Layout, mode: str, percentiles: tuple[float, float]) -> Normalizer:
    """The normaliser ``fit_normalizer`` would fit on the in-memory array, from the same sample.

    ``fit_normalizer`` takes every k-th value of each channel's flattened (N, Y, X) data. Here
    each chunk contributes the values at those same flat positions, so the sample (and the
    percentiles) are identical while no task reads more than one chunk.
    """
    import dask

    channels = layout.channels
    if mode not in ("percentile", "minmax"):
        return fit_normalizer(np.zeros((1, channels, 1, 1), x.dtype), mode, percentiles)
    perm = [layout.axes.index(a) for a in layout.order]
    work = x.transpose(perm)
    if "C" not in layout.axes:  # give the work array its C axis
        work = work[(slice(None),) * (work.ndim - 2) + (None,)]
    c_axis = work.ndim - 3
    flat_shape = tuple(n for i, n in enumerate(work.shape) if i != c_axis)
    total = int(np.prod(flat_shape))
    stride = 1 if total <= _SAMPLE_LIMIT else total // _SAMPLE_LIMIT + 1
    blocks = work.to_delayed()
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in work.chunks]
    tasks = []
    for idx in np.ndindex(blocks.shape):
        origin = tuple(int(starts[d][i]) for d, i in enumerate(idx) if d != c_axis)
        tasks.append(dask.delayed(_sample_block)(blocks[idx], origin, flat_shape, c_axis, stride))
    parts = dask.compute(*tasks)
    sample = np.concatenate(parts, axis=1)  # (C, n)
    if np.issubdtype(sample.dtype, np.floating) and not np.isfinite(sample).all():
        raise ValueError("The image contains NaN or infinite values; replace them first")
    return fit_normalizer(sample.T[:, :, None, None], mode, percentiles)


def _sample_block(block: np.ndarray, origin, flat_shape, c_axis: int, stride: int) -> np.ndarray:
    """(C, n) values of ``block`` whose flat index in ``flat_shape`` is a multiple of ``stride``."""
    block = np.moveaxis(np.asarray(block), c_axis, 0)
    if stride == 1:
        return block.reshape(block.shape[0], -1)
    flat = np.zeros((1,) * (block.ndim - 1), np.int64)
    mult = 1
    for d in reversed(range(block.ndim - 1)):
        pos = np.arange(block.shape[d + 1], dtype=np.int64) + origin[d]
        flat = flat + (pos * mult % stride).reshape([-1 if i == d else 1 for i in range(block.ndim - 1)])
        mult = mult * flat_shape[d] % stride
    keep = (flat % stride) == 0
    return block[:, keep]
