"""Restoration of dask arrays: one lazy graph of blocks with halos, each restored by the engine.

``restore(dask_array, ...)`` plans as for any array, then :func:`graph` builds the dask graph of
the plan. The whole array is never loaded: every Y/X chunk is
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

import dataclasses
import inspect
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from ..restorer import Restorer
from .axes import LOOP_AXES, Layout
from .check import check_finite
from .device import resolve_device
from .execute import execute
from .mask import work_mask
from .normalize import (
    Normalizer,
    _subsample,
    channel_moments,
    fit_normalizer,
    meanstd_normalizer,
    to_dtype,
    working_dtype,
)
from .resolve import RestorerSpec
from .standardize import standardize_lazy

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["block_stats", "cached_restorer", "graph", "plan_chunks", "reset_block_stats"]

MIN_BLOCK = 4
"""Smallest block side the engine accepts (a chunk must also be at least the halo)."""

_SAMPLE_LIMIT = inspect.signature(_subsample).parameters["limit"].default


# ---------------------------------------------------------------------------------------------
# Per-process model cache and block statistics


_cache: dict[tuple, Restorer] = {}
_cache_lock = threading.Lock()
_stats_lock = threading.Lock()
_stats: dict[str, Any] = {}


def cached_restorer(spec: RestorerSpec, device: str = "auto") -> Restorer:
    """The restorer for ``spec`` in this process, built (and its weights read) only once."""
    key = (spec.name, spec.weights, spec.options, str(device))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = spec.build()
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


def graph(plan: Plan):
    """The lazy result of a dask :class:`~.plan.Plan` (nothing is computed except the
    normaliser's statistics, when the plan has none: percentiles from a bounded strided sample,
    or the exact mean/std from every chunk).

    Y/X chunks of ``plan.data`` are the processing blocks: each is restored with a halo of
    ``plan.halo`` pixels and split further into ``plan.tile`` tiles if larger.
    """
    x, layout = plan.data, plan.layout
    norm = plan.normalizer
    if norm is None:
        norm = fit_normalizer_dask(x, layout, plan.settings.normalize, plan.settings.percentiles)
    problem = norm.representable_problem(x.dtype, plan.output_dtype)
    if problem is not None:  # before any block runs
        raise ValueError(problem)
    eps = plan.info.standardize_output
    # with a whole-output statistic to apply, blocks give float intensities and the cast comes last
    output_dtype = plan.output_dtype if eps is None else working_dtype(plan.output_dtype)
    template = dataclasses.replace(
        plan, data=None, mask=None, normalizer=norm, restorer=plan.restorer if plan.spec is None else None,
        output_dtype=output_dtype)
    fn = _BlockTask(template, tuple(x.chunks))
    y = _block_graph(fn, plan, x, template.result_dtype)
    if eps is None:
        return y
    y = standardize_lazy(y, layout, norm, eps, plan.channels.out_channels)
    if plan.output_dtype is None:
        return y.astype(np.float32)
    return y.map_blocks(to_dtype, plan.output_dtype, dtype=plan.output_dtype)


def _block_graph(fn: _BlockTask, plan: Plan, x, dtype: np.dtype):
    """Every block restored with its halo, as one lazy array."""
    import dask.array as da

    layout, s = plan.layout, plan.info.scale
    ax = layout.axes
    yi, xi = ax.index("Y"), ax.index("X")
    halo = plan.halo
    depth = {yi: halo, xi: halo}
    mask = plan.mask
    arrays = [x] if mask is None else [x, mask]
    meta = np.empty((0,) * x.ndim, dtype)
    out_channels = plan.channels.out_channels
    name = f"napari-diffir-{fn.token(x, mask)}"
    if s == 1 and ("C" not in ax or out_channels == layout.channels):
        return da.map_overlap(
            fn, *arrays, depth=depth, boundary="none", trim=True, dtype=dtype, meta=meta,
            allow_rechunk=False, name=name,
        )
    expanded = [da.overlap.overlap(a, depth=depth, boundary="none", allow_rechunk=False) for a in arrays]
    out_chunks = []
    for a, chunks in zip(ax, expanded[0].chunks):
        if a in "YX":
            out_chunks.append(tuple(c * s for c in chunks))
        elif a == "C":
            out_chunks.append((out_channels,))
        else:
            out_chunks.append(chunks)
    y = da.map_blocks(fn, *expanded, chunks=tuple(out_chunks), dtype=dtype, meta=meta, name=name)
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


class _BlockTask:
    """The task run on every block: place it in the image, restore it with the engine."""

    def __init__(self, plan: Plan, chunks: tuple) -> None:
        self.plan = plan
        """The whole image's plan, without its data (and without a named restorer's instance)."""
        self.chunks = chunks

    def token(self, x, mask) -> str:
        from dask.base import tokenize

        # a named restorer is fully described by its spec; an instance's state can change
        # between calls, so its graphs are never shared (no stale results from dask caches)
        p = self.plan
        who = p.spec if p.spec is not None else ("instance", uuid.uuid4().hex)
        params = repr(dataclasses.replace(p, restorer=None, spec=None))
        return tokenize(x.name, None if mask is None else mask.name, who, params, self.chunks)

    def __call__(self, block: np.ndarray, mask: np.ndarray | None = None, block_id=None) -> np.ndarray:
        _record_block(block.shape)
        p = self.plan
        check_finite(block)
        restorer = p.restorer if p.spec is None else cached_restorer(p.spec, p.device)
        offsets = self._offsets(block_id)
        ax = p.layout.axes
        layout = Layout(ax, tuple(int(n) for n in block.shape))
        if mask is not None:
            mask = work_mask(mask[(slice(None),) * ax.index("C") + (0,)] if "C" in ax else mask, layout)
        return execute(dataclasses.replace(
            p, data=block, layout=layout, restorer=restorer, device=resolve_device(p.device), mask=mask,
            origin=(offsets[ax.index("Y")], offsets[ax.index("X")]),
            plane_ids=self._plane_ids(block.shape, offsets), image_yx=p.layout.yx,
        ))

    def _offsets(self, block_id) -> list[int]:
        """Global start of this (halo-extended) block along every axis."""
        offsets = []
        for a, chunks, i in zip(self.plan.layout.axes, self.chunks, block_id):
            start = int(sum(chunks[:i]))
            if a in "YX" and i > 0:
                start -= self.plan.halo
            offsets.append(start)
        return offsets

    def _plane_ids(self, shape, offsets) -> tuple[int, ...]:
        """Global plane number (as in the in-memory run) of each plane of the block."""
        loops = [i for i, a in enumerate(self.plan.layout.axes) if a in LOOP_AXES]
        if not loops:
            return (0,)
        local = np.indices([shape[i] for i in loops]).reshape(len(loops), -1)
        glob = local + np.array([offsets[i] for i in loops])[:, None]
        return tuple(np.ravel_multi_index(tuple(glob), self.plan.layout.loop_shape).tolist())


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
    if mode == "meanstd":  # exact moments per chunk, combined as fit_normalizer combines planes
        c_axis = layout.axes.index("C") if "C" in layout.axes else None
        parts = dask.compute(*[dask.delayed(_block_moments)(b, c_axis) for b in x.to_delayed().ravel()])
        return meanstd_normalizer(parts)
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


def _block_moments(block: np.ndarray, c_axis: int | None) -> np.ndarray:
    block = np.asarray(block)
    if c_axis is None:
        return channel_moments(block[None])
    return channel_moments(block, c_axis)


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
