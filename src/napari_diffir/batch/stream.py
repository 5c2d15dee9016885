"""``restore_file``: restore a TIFF or (OME-)Zarr chunk by chunk into an OME-Zarr or TIFF.

Memory stays bounded by a few blocks per worker: the input is read lazily, each block (one chunk
plus its halo) is restored by a dask task that writes its result straight into the output Zarr
and returns only its index. The run works in ``OUTPUT.partial/``; a progress manifest there
records each finished block (after its data is fully written, atomically), so an interrupted run
resumes where it stopped without trusting a half-written chunk. On success the partial folder is
renamed to OUTPUT (Zarr) or converted band by band to a TIFF written under a temporary name and
renamed, so OUTPUT only ever appears complete.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..engine.axes import LOOP_AXES, Layout
from ..engine.lazy import (
    RestorerSpec, _client_device, cached_restorer, fit_normalizer_dask, plan_chunks, restore_dask,
)
from ..engine.normalize import Normalizer
from ..restorer import Restorer
from ..io.omezarr import create_ome_zarr, forget_output_array, ngff_order, open_output_array
from ..io.source import is_tiff_path, is_zarr_path, open_image
from .manifest import MANIFEST_NAME, Manifest, differences

MAX_STORE_CHUNK = 1024
"""Largest Y/X side of an output Zarr chunk (a divisor of the processing block)."""


@dataclass
class StreamResult:
    output: str
    shape: tuple[int, ...]
    dtype: str
    axes: str
    chunks_total: int
    chunks_computed: int
    chunks_resumed: int
    seconds: float


def output_kind(path: str) -> str:
    if is_zarr_path(path):
        return "zarr"
    if is_tiff_path(path):
        return "tiff"
    raise ValueError(
        f"Cannot tell the output format from {path!r}; name it *.ome.zarr / *.zarr or *.tif / *.ome.tif"
    )


STREAM_FRACTION = 0.25
"""A TIFF whose pixels need more than this share of the available memory is streamed."""


def should_stream(input: str, output: str, *, chunk: Any = None, scheduler: Any = None) -> bool:
    """Whether the CLI streams: Zarr in or out, ``--chunk``/``--scheduler``, or a TIFF too large
    to restore in memory (its float32 working copy alone would take a quarter of free RAM)."""
    if chunk is not None or scheduler is not None or is_zarr_path(input) or is_zarr_path(output):
        return True
    if not (os.path.isfile(input) and is_tiff_path(input)):
        return False
    try:
        import tifffile

        with tifffile.TiffFile(input) as tif:
            n_pixels = int(np.prod(tif.series[0].shape))
    except Exception:  # unreadable: let the in-memory reader produce the error message
        return False
    from ..engine.device import free_memory_bytes
    import torch

    return n_pixels * 4 * 3 > STREAM_FRACTION * free_memory_bytes(torch.device("cpu"))


def restore_file(
    input: str,
    output: str,
    restorer: "str | Restorer",
    *,
    weights: Any = None,
    options: dict | None = None,
    axes: str | None = None,
    chunk: int | None = None,
    tile_size: "int | str | None" = "auto",
    tile_overlap: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    steps: int | None = None,
    seed: int | None = None,
    normalize: str = "percentile",
    percentiles: tuple[float, float] = (1.0, 99.8),
    output_dtype: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> StreamResult:
    """Restore ``input`` into ``output`` block by block; see the module docstring.

    :param chunk: Y/X side of a processing block in input pixels (default: the tile size minus
        twice the halo, so one block is one model call).
    :param scheduler: ``threads`` (default), ``processes``, ``synchronous``, ``local[:N]`` or a
        ``tcp://`` address (see :mod:`napari_diffir.batch.executors`).
    :param resume: continue an interrupted run with the same settings (default); ``False``
        discards it.
    Other parameters are those of :func:`napari_diffir.restore`.
    """
    from .executors import open_scheduler

    say = log or (lambda msg: print(msg, file=sys.stderr) if progress else None)
    started = time.perf_counter()
    plan = _plan(input, output, restorer, weights, options, axes, chunk, tile_size, tile_overlap,
                 device, precision, steps, normalize, percentiles, output_dtype, overwrite)
    manifest = _resumable(plan, seed, resume, overwrite, say)
    with open_scheduler(scheduler, workers=workers) as sched:  # connect before writing anything
        if manifest is None:
            manifest = _start(plan, seed)
        else:
            say(f"resuming {os.path.basename(plan.partial)}: {manifest.finished} of "
                f"{manifest.total} chunks already done")
        state = manifest.state
        out = restore_dask(
            plan.x, plan.restorer_arg, axes=plan.layout.axes, weights=plan.weights_arg,
            options=plan.options_arg, tile_size=plan.tile, tile_overlap=plan.halo, device=device,
            precision=precision, steps=steps, seed=state["seed"], normalize=normalize,
            percentiles=percentiles, output_dtype=plan.out_dtype,
            normalizer=Normalizer(np.asarray(state["lo"], float), np.asarray(state["hi"], float)),
        )
        if out.numblocks != manifest.grid:
            raise RuntimeError(f"block grid {out.numblocks} differs from the manifest's {manifest.grid}")
        tasks = _write_tasks(out, manifest, plan.partial, plan.perm)
        resumed = manifest.finished
        try:
            _run(tasks, manifest, sched, progress, plan.name)
        except (KeyboardInterrupt, Exception):
            if manifest.finished > resumed or resumed:
                say(f"stopped: {manifest.finished} of {manifest.total} chunks are kept in "
                    f"{plan.partial}; rerun the same command to resume")
            raise
    forget_output_array(plan.partial)
    _finish(plan, state)
    return StreamResult(
        output=plan.dst, shape=plan.out_shape, dtype=str(plan.out_dtype), axes=plan.out_axes,
        chunks_total=manifest.total, chunks_computed=len(tasks), chunks_resumed=resumed,
        seconds=time.perf_counter() - started,
    )


@dataclass
class _Plan:
    """Everything decided before any block runs (and checked again on resume)."""

    source: Any
    layout: Layout
    x: Any
    """The input, rechunked to the processing blocks."""
    name: str
    restorer_arg: Any
    weights_arg: Any
    options_arg: Any
    scale: int
    tile: Any
    halo: int
    out_dtype: np.dtype
    out_axes: str
    perm: list
    out_shape: tuple
    kind: str
    dst: str
    partial: str
    manifest_path: str
    signature: dict
    meta: dict


def _plan(input, output, restorer, weights, options, axes, chunk, tile_size, tile_overlap, device,
          precision, steps, normalize, percentiles, output_dtype, overwrite) -> _Plan:
    from ..engine.restore import _channel_groups, _tile_size

    src, dst = os.path.abspath(str(input)).rstrip("/\\"), os.path.abspath(str(output)).rstrip("/\\")
    if src == dst:
        raise ValueError("OUTPUT is the same as INPUT; napari-diffir never overwrites its input")
    kind = output_kind(dst)
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"Output {output!r} exists; pass --overwrite to replace it")
    if not os.path.isdir(os.path.dirname(dst)):
        raise FileNotFoundError(f"Output folder {os.path.dirname(dst)!r} does not exist")
    source = open_image(src, axes)
    ax = source.axes
    layout = Layout(ax, tuple(int(n) for n in source.data.shape))
    if kind == "tiff" and "S" in ax:
        raise ValueError("TIFF cannot store the S (samples) axis; write an OME-Zarr output instead")

    if isinstance(restorer, Restorer):  # an instance travels in the graph (pickled per process)
        instance, name, who = restorer, restorer.info.name, type(restorer).__qualname__
        restorer_arg, weights_arg, options_arg = restorer, None, None
    else:  # a name: each worker process builds and caches its own model
        instance = cached_restorer(RestorerSpec.of(restorer, weights, options), device)
        name, who = str(restorer), None
        restorer_arg, weights_arg, options_arg = name, weights, options
    info = instance.info
    s, m = info.scale, info.multiple_of
    halo = -(-(info.tile_overlap if tile_overlap is None else int(tile_overlap)) // m) * m
    tile = _tile_size(tile_size, info, *layout.yx, _client_device(device))
    # tile_size=None (no tiling) still streams: blocks of at most 1024 pixels, each restored whole
    chunk = _chunk_size(chunk, min(tile, 1024) if tile_size is None else tile, halo, m)
    x = source.data.rechunk({i: 1 if a in LOOP_AXES else chunk if a in "YX" else -1 for i, a in enumerate(ax)})
    x = x.rechunk(plan_chunks(x.chunks, layout, halo, name, multiple=m))
    out_dtype = np.dtype(np.float32) if output_dtype is None else (
        np.dtype(x.dtype) if output_dtype == "input" else np.dtype(output_dtype))
    out_axes, perm = ngff_order(ax)
    full_shape = layout.output_shape(_channel_groups(layout, info)[1], s)
    signature = {
        "input": src, "input_identity": _identity(src), "input_shape": list(layout.shape),
        "input_dtype": str(x.dtype), "axes": ax, "restorer": name, "restorer_class": who,
        "weights": _weights_identity(weights), "options": sorted((options or {}).items()),
        "scale": s, "chunks": [list(c) for c in x.chunks], "halo": halo, "tile_size": tile,
        "steps": steps, "precision": precision, "normalize": normalize,
        "percentiles": list(percentiles), "output_dtype": str(out_dtype), "format": kind,
    }
    meta = {"restorer": name, "weights": None if weights is None else str(weights),
            "options": dict(options or {}), "steps": steps, "scale": s, "input": src, "axes": ax}
    partial = dst + ".partial"
    return _Plan(
        source=source, layout=layout, x=x, name=name, restorer_arg=restorer_arg,
        weights_arg=weights_arg, options_arg=options_arg, scale=s, tile=tile, halo=halo,
        out_dtype=out_dtype, out_axes=out_axes, perm=perm,
        out_shape=tuple(full_shape[p] for p in perm), kind=kind, dst=dst, partial=partial,
        manifest_path=os.path.join(partial, MANIFEST_NAME), signature=signature, meta=meta,
    )


def _start(plan: _Plan, seed) -> Manifest:
    """Fit the normaliser, create the empty output in the partial folder, then the manifest."""
    seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    norm = fit_normalizer_dask(plan.x, plan.layout, plan.signature["normalize"],
                               tuple(plan.signature["percentiles"]))
    shutil.rmtree(plan.partial, ignore_errors=True)
    os.makedirs(plan.partial)
    s = plan.scale
    pixel_size, units, origin = _output_geometry(plan.source, s)
    meta = {**plan.meta, "seed": seed}
    create_ome_zarr(
        plan.partial, plan.out_shape, plan.out_dtype,
        _store_chunks(plan.x.chunks, plan.layout.axes, plan.perm, s, plan.out_shape),
        plan.out_axes, pixel_size, units, origin, attrs={"napari_diffir": meta},
        name=os.path.basename(plan.dst),
    )
    known = {a: v / s if a in "YX" else v for a, v in plan.source.pixel_size.items()}
    state = {"seed": seed, "lo": norm.lo.tolist(), "hi": norm.hi.tolist(), "meta": meta,
             "pixel_size": known, "units": units}
    manifest = Manifest(plan.manifest_path, tuple(len(c) for c in plan.x.chunks), plan.signature, state)
    manifest.save()  # written last: a partial folder without it is never trusted
    return manifest


def _chunk_size(chunk, tile: int, halo: int, m: int) -> int:
    if chunk is None:
        # one block (chunk + halo on both sides) fills one tile: one model call per block
        chunk = max(tile - 2 * halo, halo, 32)
        return max(m, chunk // m * m)
    if isinstance(chunk, str):
        try:
            chunk = int(chunk)
        except ValueError:
            raise ValueError(f"chunk must be an integer number of pixels, but got {chunk!r}") from None
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, but got {chunk!r}")
    return int(chunk)


def _identity(path: str) -> list:
    """Size and modification time of a file input (a changed input must not be resumed)."""
    if os.path.isfile(path):
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    return []


def _weights_identity(weights: Any):
    if weights is None:
        return None
    w = str(weights)
    return [os.path.abspath(w), *_identity(w)] if os.path.isfile(w) else w


def _resumable(plan: _Plan, seed, resume: bool, overwrite: bool, say) -> Manifest | None:
    """The manifest of an interrupted run to continue, or None to start afresh."""
    partial = plan.partial
    if not os.path.exists(partial):
        return None
    old = Manifest.load(plan.manifest_path)
    if old is None:
        say(f"discarding {partial}: no readable progress manifest, nothing in it can be trusted")
        return None
    if not resume or overwrite:
        say(f"discarding the unfinished run in {partial}")
        return None
    changes = differences(old.signature, plan.signature)
    if seed is not None and old.state.get("seed") != seed:
        changes.append(f"seed: {old.state.get('seed')!r} -> {seed!r}")
    if changes:
        raise ValueError(
            f"{partial} holds an unfinished run with other settings ({'; '.join(changes)}); rerun "
            "with the same settings to resume it, or pass --overwrite to start over"
        )
    return old


def _output_geometry(source, s: int) -> tuple[dict, dict, dict]:
    """Pixel sizes divided by the scale on Y/X, and translations that keep pixel centres put
    (an unknown Y/X size counts as 1, so the output overlays the input in napari)."""
    pixel_size = dict(source.pixel_size)
    units = dict(source.units)
    origin = dict(source.origin)
    if s != 1:
        for a in "YX":
            size = pixel_size.get(a, 1.0)
            pixel_size[a] = size / s
            origin[a] = origin.get(a, 0.0) + (0.5 / s - 0.5) * size
    return pixel_size, units, origin


def _store_chunks(chunks, ax: str, perm: list[int], s: int, out_shape) -> list[int]:
    """Output Zarr chunks (NGFF order) that tile every restored block exactly."""
    out = []
    for p in perm:
        a = ax[p]
        if a in LOOP_AXES:
            out.append(1)
        elif a == "C":
            out.append(out_shape[p])
        else:
            sizes = [c * s for c in chunks[p]]
            g = math.gcd(*sizes[:-1]) if len(sizes) > 1 else sizes[0]
            out.append(_largest_divisor_at_most(g, MAX_STORE_CHUNK))
    return out


def _largest_divisor_at_most(n: int, limit: int) -> int:
    if n <= limit:
        return n
    return max(d for d in range(1, limit + 1) if n % d == 0)


def _write_tasks(out, manifest: Manifest, partial: str, perm: list[int]) -> list:
    import dask

    blocks = out.to_delayed()
    starts = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in out.chunks]
    tasks = []
    for idx in np.ndindex(blocks.shape):
        if manifest.is_done(idx):
            continue
        region = [slice(int(starts[d][i]), int(starts[d][i + 1])) for d, i in enumerate(idx)]
        tasks.append(dask.delayed(_store_block, pure=False)(
            blocks[idx], partial, tuple(region[p] for p in perm), tuple(perm), tuple(int(i) for i in idx)))
    return tasks


def _store_block(block: np.ndarray, partial: str, region, perm, index):
    """Write one restored block into its region of the output (in a worker); return its index."""
    arr = open_output_array(partial)
    arr[region] = np.transpose(block, perm)
    return index


def _run(tasks, manifest: Manifest, sched, progress, name) -> None:
    from tqdm import tqdm

    bar = tqdm(total=manifest.total, initial=manifest.finished, unit="chunk", desc=f"restore {name}",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        def finished(index) -> None:
            manifest.mark(tuple(index))  # only now is the block trusted by a resume
            bar.update(1)

        sched.compute_each(tasks, finished)
    finally:
        bar.close()


def _finish(plan: _Plan, state: dict) -> None:
    """Publish the finished result at ``dst`` in one rename; drop the partial folder."""
    os.remove(plan.manifest_path)
    if plan.kind == "zarr":
        _replace_dir(plan.partial, plan.dst)
        return
    import zarr

    from ..io.tiff import write_tiff_from_zarr

    arr = zarr.open_array(os.path.join(plan.partial, "0"), mode="r")
    fd, tmp = tempfile.mkstemp(prefix=".napari-diffir-", suffix=".ome.tif", dir=os.path.dirname(plan.dst))
    os.close(fd)
    try:
        write_tiff_from_zarr(tmp, arr, plan.out_axes, state.get("pixel_size", {}),
                             state.get("units", {}), description=json.dumps(state.get("meta", {})))
        os.replace(tmp, plan.dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    shutil.rmtree(plan.partial, ignore_errors=True)


def _replace_dir(new: str, dst: str) -> None:
    if os.path.exists(dst):  # --overwrite: move the old output aside first, delete it last
        old = dst + f".old-{os.getpid()}"
        os.rename(dst, old)
        os.rename(new, dst)
        if os.path.isdir(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)
    else:
        os.rename(new, dst)
