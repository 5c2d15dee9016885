"""Restoration of dask arrays: the in-memory run's tiles, one dask task each, whatever the chunks.

``restore(dask_array, ...)`` plans as for any array, then :func:`graph` builds the dask graph of
the plan. The tiling is decided from the whole plane (:meth:`~.plan.Plan.tiling`), exactly
as in memory, so the input's chunks only decide how the output is cut: each tile is one task
that reads the input chunks it overlaps and returns its restored pixels times their blend
weight; each output chunk sums the tiles that overlap it and divides by their weights. A
restorer with statistics of the whole plane (:meth:`Restorer.prepare_plane`, DiffIR) gets one
more task per plane chunk that computes them, which its tiles share. The whole array is never
loaded: a tile task holds one tile, a statistics task the plane chunk it reads.

Results equal the in-memory ones because everything is decided once, up front: the tiles and
their weights, the per-channel normaliser (percentiles of the same strided sample
``fit_normalizer`` uses), the seed and each plane's global number (its seeds), and stochastic
restorers cut their noise from one image-wide field at each tile's place.

Workers rebuild a named restorer from (name, weights, options) and keep it in a per-process
cache, so a model is loaded once per worker process, not once per task.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..restorer import Restorer
from .axes import LOOP_AXES, Layout
from .check import check_finite
from .device import resolve_device
from .execute import Execution, finish, needs_plane_statistics
from .heap import release_free_memory
from .mask import work_mask
from .memory import forward_bytes, memory_gate, tile_budget
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
from .tiling import PlaneTiling, pad_to

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["block_stats", "cached_restorer", "graph", "plan_chunks", "reset_block_stats"]

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
    """What this process has restored: ``blocks`` (tile tasks), ``max_block_elements`` and
    ``max_block_shape`` (the largest input tile a task read), ``models_loaded`` and ``pid``.
    Lets tests and users check that no worker ever held more than one tile's input
    (``client.run(block_stats)`` on a cluster)."""
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

    Output chunks are ``plan.data``'s, scaled by the restorer's factor along Y and X (C in one
    chunk of the output channels).
    """
    import dask
    import dask.array as da

    x, layout, info = plan.data, plan.layout, plan.info
    norm = plan.normalizer
    if norm is None:
        norm = fit_normalizer_dask(x, layout, plan.settings.normalize, plan.settings.percentiles)
    problem = norm.representable_problem(x.dtype, plan.output_dtype)
    if problem is not None:  # before any task runs
        raise ValueError(problem)
    eps = plan.info.standardize_output
    # with a whole-output statistic to apply, blocks give float intensities and the cast comes last
    output_dtype = plan.output_dtype if eps is None else working_dtype(plan.output_dtype)
    template = dataclasses.replace(
        plan, data=None, mask=None, normalizer=norm, restorer=plan.restorer if plan.spec is None else None,
        output_dtype=output_dtype)
    h, w = layout.yx
    tiling = plan.tiling(h, w)
    ax = layout.axes
    yi, xi = ax.index("Y"), ax.index("X")
    grid = _Grid(x.chunks, yi, xi)
    blocks = x.to_delayed()
    masks = None if plan.mask is None else plan.mask.to_delayed()
    name = f"napari-diffir-{_token(template, x, plan.mask, tiling)}"
    states = needs_plane_statistics(plan.restorer, tiling)
    dtype = template.result_dtype
    out = np.empty(blocks.shape, dtype=object)
    for loop in grid.loops():
        key = "-".join(map(str, loop))
        ids = grid.plane_ids(loop, layout)
        state = None
        if states:
            whole = ((0, h), (0, w))
            state = dask.delayed(_PlaneTask(template, tiling, ids), pure=False)(
                grid.parts(blocks, loop, *whole), grid.parts(masks, loop, *whole),
                dask_key_name=f"{name}-plane-{key}")
        pieces = {}
        for k, t in enumerate(tiling.tiles):
            cut = ((t.y0, min(t.y0 + t.h, h)), (t.x0, min(t.x0 + t.w, w)))
            pieces[k] = dask.delayed(_TileTask(template, tiling, k, ids), pure=False)(
                grid.parts(blocks, loop, *cut), grid.parts(masks, loop, *cut), state,
                dask_key_name=f"{name}-tile-{key}-{k}")
        for iy, (cy0, cy1) in enumerate(grid.spans(yi)):
            for ix, (cx0, cx1) in enumerate(grid.spans(xi)):
                touching = tiling.touching(cy0, cy1, cx0, cx1)
                index = grid.index(loop, iy, ix)
                shape = grid.block_shape(index, layout, plan.channels.out_channels, info.scale)
                task = _ChunkTask(template, tiling, touching, (cy0, cy1, cx0, cx1), grid.block_input_shape(index))
                value = dask.delayed(task, pure=False)(
                    [pieces[k] for k in touching], dask_key_name=f"{name}-chunk-{key}-{iy}-{ix}")
                out[index] = da.from_delayed(value, shape, dtype=dtype, meta=np.empty((0,) * x.ndim, dtype))
    y = da.block(out.tolist())
    if eps is None:
        return y
    y = standardize_lazy(y, layout, norm, eps, plan.channels.out_channels)
    if plan.output_dtype is None:
        return y.astype(np.float32)
    return y.map_blocks(to_dtype, plan.output_dtype, dtype=plan.output_dtype)


def _token(template: Plan, x, mask, tiling) -> str:
    from dask.base import tokenize

    # a named restorer is fully described by its spec; an instance's state can change between
    # calls, so its graphs are never shared (no stale results from dask caches)
    who = template.spec if template.spec is not None else ("instance", uuid.uuid4().hex)
    params = repr(dataclasses.replace(template, restorer=None, spec=None))
    return tokenize(x.name, None if mask is None else mask.name, who, params, x.chunks, tiling)


class _Grid:
    """The input's chunk grid: which chunks a region needs, where each chunk starts."""

    def __init__(self, chunks: tuple, yi: int, xi: int) -> None:
        self.chunks = chunks
        self.yi, self.xi = yi, xi
        self.starts = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in chunks]

    def loops(self):
        """Chunk indices along every axis but Y and X (C is one chunk)."""
        yield from np.ndindex(*[1 if d in (self.yi, self.xi) else len(c) for d, c in enumerate(self.chunks)])

    def spans(self, axis: int) -> list[tuple[int, int]]:
        st = self.starts[axis]
        return [(int(st[i]), int(st[i + 1])) for i in range(len(st) - 1)]

    def index(self, loop, iy: int, ix: int) -> tuple[int, ...]:
        idx = list(loop)
        idx[self.yi], idx[self.xi] = iy, ix
        return tuple(idx)

    def _range(self, axis: int, a: int, b: int) -> range:
        st = self.starts[axis]
        return range(int(np.searchsorted(st, a, "right")) - 1, int(np.searchsorted(st, b, "left")))

    def parts(self, blocks, loop, rows: tuple[int, int], cols: tuple[int, int]):
        """The chunks of ``blocks`` (nested Y, X lists) covering ``rows`` and ``cols`` (input
        pixel ranges), with the (y, x) start of the first one; None for no blocks."""
        if blocks is None:
            return None
        rows, cols = self._range(self.yi, *rows), self._range(self.xi, *cols)
        nested = [[blocks[self.index(loop, i, j)] for j in cols] for i in rows]
        return nested, (int(self.starts[self.yi][rows[0]]), int(self.starts[self.xi][cols[0]]))

    def block_input_shape(self, index) -> tuple[int, ...]:
        return tuple(int(c[i]) for c, i in zip(self.chunks, index))

    def block_shape(self, index, layout: Layout, channels: int, scale: int) -> tuple[int, ...]:
        """The output block's shape: the input chunk's, Y/X times ``scale``, C = ``channels``."""
        shape = list(self.block_input_shape(index))
        shape[self.yi] *= scale
        shape[self.xi] *= scale
        if "C" in layout.axes:
            shape[layout.axes.index("C")] = channels
        return tuple(shape)

    def plane_ids(self, loop, layout: Layout) -> tuple[int, ...]:
        """Global plane number (as in the in-memory run) of each plane of a loop chunk."""
        loops = [i for i, a in enumerate(layout.axes) if a in LOOP_AXES]
        if not loops:
            return (0,)
        sizes = [int(self.chunks[i][loop[i]]) for i in loops]
        local = np.indices(sizes).reshape(len(loops), -1)
        glob = local + np.array([int(self.starts[i][loop[i]]) for i in loops])[:, None]
        return tuple(np.ravel_multi_index(tuple(glob), layout.loop_shape).tolist())


def plan_chunks(chunks: tuple, layout: Layout) -> tuple:
    """Chunks to process, from the input's: C goes into one chunk (a tile needs all channels);
    the others stay as they are (the tiles do not depend on them)."""
    return tuple((sum(int(n) for n in c),) if a == "C" else tuple(int(n) for n in c)
                 for a, c in zip(layout.axes, chunks))


def _join(parts, yi: int, xi: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The array of nested (Y, X) chunk lists, and the (y, x) start of its first chunk."""
    nested, start = parts
    rows = [np.concatenate([np.asarray(b) for b in row], axis=xi) for row in nested]
    return np.concatenate(rows, axis=yi), start


class _Task:
    """What the graph's tasks share: the whole image's plan (without its data and without a
    named restorer's instance), its tiling, and a worker-side engine for one region."""

    def __init__(self, plan: Plan, tiling: PlaneTiling) -> None:
        self.plan = plan
        self.tiling = tiling

    def _region(self, parts, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        ax = self.plan.layout.axes
        yi, xi = ax.index("Y"), ax.index("X")
        data, (oy, ox) = _join(parts, yi, xi)
        index = [slice(None)] * data.ndim
        index[yi], index[xi] = slice(rows[0] - oy, rows[1] - oy), slice(cols[0] - ox, cols[1] - ox)
        return data[tuple(index)]

    def _engine(self, region: np.ndarray, plane_ids: tuple[int, ...]) -> Execution:
        p = self.plan
        restorer = p.restorer if p.spec is None else cached_restorer(p.spec, p.device)
        device = resolve_device(p.device)
        restorer.to(device)
        layout = Layout(p.layout.axes, tuple(int(n) for n in region.shape))
        return Execution(dataclasses.replace(p, layout=layout, restorer=restorer, device=device,
                                             plane_ids=plane_ids), None, None)

    def _within_memory(self, device, yx: tuple[int, int]):
        """Hold this process's memory gate for one forward over ``yx`` (a threaded scheduler runs
        several tasks at once; a whole plane in one tile can take several tiles' memory)."""
        whole = len(self.tiling.tiles) == 1
        return memory_gate(device).hold(forward_bytes(self.plan.info, yx, whole_plane=whole),
                                        lambda: tile_budget(device))

    def _mask(self, parts, rows, cols, layout: Layout) -> np.ndarray | None:
        if parts is None:
            return None
        m = self._region(parts, rows, cols)
        ax = layout.axes
        return work_mask(m[(slice(None),) * ax.index("C") + (0,)] if "C" in ax else m, layout)

    def _pad(self, a: np.ndarray, h: int, w: int) -> np.ndarray:
        """``a`` (..., y, x) padded at the bottom/right to (h, w) as the whole plane is padded."""
        t = torch.from_numpy(np.ascontiguousarray(a))
        lead = t.shape[:-2]
        t = t.reshape(1, -1, *t.shape[-2:])
        return pad_to(t, h, w, self.tiling.pad_mode()).reshape(*lead, h, w).numpy()


class _PlaneTask(_Task):
    """Each plane's restorer statistics (:meth:`Restorer.prepare_plane`), per channel group."""

    def __init__(self, plan: Plan, tiling: PlaneTiling, plane_ids: tuple[int, ...]) -> None:
        super().__init__(plan, tiling)
        self.plane_ids = plane_ids

    def __call__(self, parts, mask_parts) -> list[list[Any]]:
        tl = self.tiling
        region = self._region(parts, (0, tl.h), (0, tl.w))
        check_finite(region)
        engine = self._engine(region, self.plane_ids)
        layout = engine.plan.layout
        work, mask = layout.to_work(region), self._mask(mask_parts, (0, tl.h), (0, tl.w), layout)
        groups = engine.plan.channels.groups
        states = []
        t = tl.tiles[0]  # the statistics run tile by tile: one tile's forward at a time
        with self._within_memory(engine.plan.device, (t.h, t.w)):
            for n in range(work.shape[0]):
                plane = self._pad(self.plan.normalizer.forward(np.asarray(work[n])), tl.ph, tl.pw)
                m = None if mask is None else self._pad(mask[n if mask.shape[0] > 1 else 0], tl.ph, tl.pw)
                states.append([engine.prepare(plane[g.inputs], m, n, gi) for gi, g in enumerate(groups)])
        return states


class _TileTask(_Task):
    """One tile of every plane of a plane chunk, restored and times its blend weight:
    (N, C_out, h*s, w*s) in the working layout."""

    def __init__(self, plan: Plan, tiling: PlaneTiling, k: int, plane_ids: tuple[int, ...]) -> None:
        super().__init__(plan, tiling)
        self.k, self.plane_ids = k, plane_ids

    def __call__(self, parts, mask_parts, states) -> np.ndarray:
        tl, t = self.tiling, self.tiling.tiles[self.k]
        rows, cols = (t.y0, min(t.y0 + t.h, tl.h)), (t.x0, min(t.x0 + t.w, tl.w))
        region = self._region(parts, rows, cols)
        _record_block(region.shape)
        check_finite(region)
        engine = self._engine(region, self.plane_ids)
        p = engine.plan
        work, mask = p.layout.to_work(region), self._mask(mask_parts, rows, cols, p.layout)
        s = tl.scale
        piece = np.empty((work.shape[0], p.channels.out_channels, t.h * s, t.w * s), np.float32)
        with self._within_memory(p.device, (t.h, t.w)):
            for n in range(work.shape[0]):
                plane = self._pad(p.normalizer.forward(np.asarray(work[n])), t.h, t.w)
                m = None if mask is None else self._pad(mask[n if mask.shape[0] > 1 else 0], t.h, t.w)
                for gi, group in enumerate(p.channels.groups):
                    state = None if states is None else states[n][gi]
                    out = engine.weighted_tile(plane[group.inputs], m, t, tl, n, gi, state, self.k)
                    piece[n, group.outputs] = out.mean(axis=0, keepdims=True) if group.average else out
            release_free_memory()  # tiles run in several threads: each one's heap would keep its forward
        return piece


class _ChunkTask(_Task):
    """One output chunk: the weighted tiles that overlap it, summed and divided by their weights."""

    def __init__(self, plan: Plan, tiling: PlaneTiling, touching: list[int], core, input_shape) -> None:
        super().__init__(plan, tiling)
        self.touching, self.core, self.input_shape = touching, core, input_shape

    def __call__(self, pieces) -> np.ndarray:
        cy0, cy1, cx0, cx1 = self.core
        s = self.tiling.scale
        n, c = pieces[0].shape[:2]
        acc = np.zeros((n, c, (cy1 - cy0) * s, (cx1 - cx0) * s), np.float32)
        wsum = np.zeros(acc.shape[-2:], np.float32)
        for k, piece in zip(self.touching, pieces, strict=True):
            t = self.tiling.tiles[k]
            a0, a1 = max(t.y0, cy0), min(t.y0 + t.h, cy1)
            b0, b1 = max(t.x0, cx0), min(t.x0 + t.w, cx1)
            dst = (slice((a0 - cy0) * s, (a1 - cy0) * s), slice((b0 - cx0) * s, (b1 - cx0) * s))
            src = (slice((a0 - t.y0) * s, (a1 - t.y0) * s), slice((b0 - t.x0) * s, (b1 - t.x0) * s))
            acc[(Ellipsis, *dst)] += piece[(Ellipsis, *src)]
            wsum[dst] += self.tiling.weight(t)[src]
        layout = Layout(self.plan.layout.axes, self.input_shape)
        return finish(self.plan, acc / wsum, self.plan.normalizer, layout)


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
