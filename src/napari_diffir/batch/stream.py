"""``restore_file``: restore a TIFF or (OME-)Zarr chunk by chunk into an OME-Zarr or TIFF.

Memory stays bounded by a few tiles per worker: the input is read lazily, each tile is restored
by a dask task (the in-memory run's tiles, whatever the chunks), and each output block, summed
from the tiles that overlap it, is written by a task straight into the output Zarr that returns
only its index. The run works in ``OUTPUT.partial/``; a progress manifest there
records each finished block (after its data is fully written, atomically), so an interrupted run
resumes where it stopped without trusting a half-written chunk. On success the partial folder is
renamed to OUTPUT (Zarr) or converted band by band to a TIFF written under a temporary name and
renamed, so OUTPUT only ever appears complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.axes import LOOP_AXES, Layout
from ..engine.check import check
from ..engine.device import local_device
from ..engine.execute import has_plane_statistics
from ..engine.lazy import fit_normalizer_dask
from ..engine.normalize import Normalizer
from ..engine.plan import Plan, build_restorer, plan, resolve_tile
from ..engine.result import Result
from ..engine.run import run
from ..engine.settings import DEFAULTS, RestoreSettings, from_text
from ..io.identity import content_identity
from ..io.omezarr import create_ome_zarr, forget_output_array, ngff_order, open_output_array
from ..io.outputs import OutputLock, check_not_input, check_output, check_space, publish_file
from ..io.source import is_tiff_path, is_zarr_path, open_image
from ..restorer import Restorer
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
    import torch

    from ..engine.device import free_memory_bytes

    return n_pixels * 4 * 3 > STREAM_FRACTION * free_memory_bytes(torch.device("cpu"))


def restore_file(
    input: str,
    output: str,
    restorer: str | Restorer,
    *,
    settings: RestoreSettings = DEFAULTS,
    chunk: int | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **values: Any,
) -> StreamResult:
    """Restore ``input`` into ``output`` block by block; see the module docstring.

    :param settings: how to restore (a :class:`~napari_diffir.engine.settings.RestoreSettings`);
        keywords of :func:`napari_diffir.restore` (``weights=``, ``seed=``, ...) replace its fields.
    :param chunk: Y/X side of an output block in input pixels (default: the tile size). The
        tiles are the in-memory run's whatever the blocks; a block is done when the tiles that
        overlap it are.
    :param scheduler: ``threads`` (default), ``processes``, ``synchronous``, ``local[:N]`` or a
        ``tcp://`` address (see :mod:`napari_diffir.batch.executors`).
    :param resume: continue an interrupted run with the same settings (default); ``False``
        discards it.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr) if progress else None)
    started = time.perf_counter()
    settings = from_text(settings, **values)
    job = _plan(input, output, restorer, settings, chunk, overwrite, workers)
    # the result is written once into the partial Zarr, and once more for a TIFF output
    nbytes = math.prod(job.out_shape) * np.dtype(job.engine.result_dtype).itemsize
    check_space(job.dst, nbytes * (2 if job.kind == "tiff" else 1))
    with OutputLock(job.dst):  # a second run into this output fails here, before any work
        check_output(job.dst, overwrite, folder_ok=job.kind == "zarr")  # it may have finished meanwhile
        return _locked_run(job, settings, scheduler, workers, overwrite, resume, progress, say, started)


def _locked_run(job, settings, scheduler, workers, overwrite, resume, progress, say, started) -> StreamResult:
    """Resume or start, run every block, publish: while holding the output's lock."""
    from .executors import open_scheduler

    manifest = _resumable(job, settings.seed, resume, overwrite, say)
    with open_scheduler(scheduler, workers=workers) as sched:  # connect before writing anything
        if manifest is None:
            manifest = _start(job)
        else:
            say(f"resuming {os.path.basename(job.partial)}: {manifest.finished} of "
                f"{manifest.total} chunks already done")
        state = manifest.state
        engine = dataclasses.replace(
            job.engine, seed=state["seed"],
            normalizer=Normalizer(np.asarray(state["lo"], float), np.asarray(state["hi"], float)),
        )
        result = run(engine)
        out = result.data
        if out.numblocks != manifest.grid:
            raise RuntimeError(f"block grid {out.numblocks} differs from the manifest's {manifest.grid}")
        tasks = _write_tasks(out, manifest, job.partial, job.perm)
        resumed = manifest.finished
        try:
            _run(tasks, manifest, sched, progress, job.name)
        except (KeyboardInterrupt, Exception):
            if manifest.finished > resumed or resumed:
                say(f"stopped: {manifest.finished} of {manifest.total} chunks are kept in "
                    f"{job.partial}; rerun the same command to resume")
            raise
    forget_output_array(job.partial)
    seconds = time.perf_counter() - started
    _finish(job, state, dataclasses.replace(result, seconds=seconds), overwrite)
    return StreamResult(
        output=job.dst, shape=job.out_shape, dtype=str(engine.result_dtype), axes=job.out_axes,
        chunks_total=manifest.total, chunks_computed=len(tasks), chunks_resumed=resumed,
        seconds=seconds,
    )


@dataclass
class _StreamPlan:
    """Everything decided before any block runs (and checked again on resume)."""

    source: Any
    engine: Plan
    """The engine's plan of the input, rechunked to the processing blocks."""
    name: str
    out_axes: str
    perm: list
    out_shape: tuple
    kind: str
    dst: str
    partial: str
    manifest_path: str
    signature: dict


def _plan(input, output, restorer, settings: RestoreSettings, chunk, overwrite, workers=None) -> _StreamPlan:
    src, dst = os.path.abspath(str(input)).rstrip("/\\"), os.path.abspath(str(output)).rstrip("/\\")
    check_not_input(src, dst)
    kind = output_kind(dst)
    check_output(dst, overwrite, folder_ok=kind == "zarr")
    check_not_input(src, dst + ".partial")
    source = open_image(src, settings.axes)
    ax = source.axes
    layout = Layout(ax, tuple(int(n) for n in source.data.shape))
    if kind == "tiff" and "S" in ax:
        raise ValueError("TIFF cannot store the S (samples) axis; write an OME-Zarr output instead")
    settings = dataclasses.replace(settings, axes=ax)

    # the blocks are sized from the tile, so it is decided first (and checked: a block size is
    # never computed from a setting the plan would refuse)
    instance = build_restorer(restorer, settings, lazy=True)[0]
    info = instance.info
    if info.standardize_output is not None:
        raise ValueError(
            f"{info.display_name!r} maps its output to the input's mean and standard deviation, from statistics "
            "of the whole output, which a chunk-by-chunk run cannot give (nor resume); restore the image in "
            "memory or as a dask array (napari_diffir.restore) instead")
    problems = check(info, layout.shape, source.data.dtype, settings)
    if problems:
        raise ValueError(str(problems[0]))
    # as plan() decides it in memory (a DiffIR plane that fits is one tile there, so here too),
    # unless the concurrent tasks' whole planes would not fit this machine's memory together
    tile = resolve_tile(settings.tile_size, info, layout.yx, local_device(settings.device),
                        whole_plane_first=has_plane_statistics(instance),
                        concurrent=min(workers or os.cpu_count() or 1, int(np.prod(layout.loop_shape or (1,)))))
    if settings.tile_size is None:  # no tiling still streams: tiles of at most 1024 pixels
        tile = min(tile, 1024)
    chunk = _chunk_size(chunk, tile, info.multiple_of)
    x = source.data.rechunk({i: 1 if a in LOOP_AXES else chunk if a in "YX" else -1 for i, a in enumerate(ax)})
    engine = plan(x, restorer, dataclasses.replace(settings, tile_size=tile))

    name = info.name if isinstance(restorer, Restorer) else str(restorer)
    who = type(restorer).__qualname__ if isinstance(restorer, Restorer) else None
    out_axes, perm = ngff_order(ax)
    full_shape = layout.output_shape(engine.channels.out_channels, info.scale)
    signature = {
        "input": src, "input_identity": _identity(src), "input_shape": list(layout.shape),
        "input_dtype": str(x.dtype), "axes": ax, "restorer": name, "restorer_class": who,
        "weights": _weights_identity(settings.weights), "options": sorted((settings.options or {}).items()),
        "scale": info.scale, "chunks": [list(c) for c in engine.data.chunks], "tile_overlap": engine.overlap,
        "tile_size": engine.tile, "steps": settings.steps, "precision": settings.precision,
        "normalize": settings.normalize, "percentiles": list(settings.percentiles),
        "output_dtype": str(engine.result_dtype), "format": kind,
        **({"tta": True} if settings.tta else {}),  # only when set: earlier runs' signatures still match
    }
    partial = dst + ".partial"
    return _StreamPlan(
        source=source, engine=engine, name=name, out_axes=out_axes, perm=perm,
        out_shape=tuple(full_shape[p] for p in perm), kind=kind, dst=dst, partial=partial,
        manifest_path=os.path.join(partial, MANIFEST_NAME), signature=signature,
    )


def _start(job: _StreamPlan) -> Manifest:
    """Fit the normaliser, create the empty output in the partial folder, then the manifest."""
    engine = job.engine
    norm = fit_normalizer_dask(engine.data, engine.layout, engine.settings.normalize, engine.settings.percentiles)
    shutil.rmtree(job.partial, ignore_errors=True)
    os.makedirs(job.partial)
    s = engine.info.scale
    pixel_size, units, origin = _output_geometry(job.source, s)
    create_ome_zarr(
        job.partial, job.out_shape, engine.result_dtype,
        _store_chunks(engine.data.chunks, engine.layout.axes, job.perm, s, job.out_shape),
        job.out_axes, pixel_size, units, origin, name=os.path.basename(job.dst),
    )
    known = {a: v / s if a in "YX" else v for a, v in job.source.pixel_size.items()}
    state = {"seed": engine.seed, "lo": norm.lo.tolist(), "hi": norm.hi.tolist(),
             "pixel_size": known, "units": units}
    manifest = Manifest(job.manifest_path, tuple(len(c) for c in engine.data.chunks), job.signature, state)
    manifest.save()  # written last: a partial folder without it is never trusted
    return manifest


def _chunk_size(chunk, tile: int, m: int) -> int:
    if chunk is None:  # blocks of one tile: each needs the few tiles that overlap it
        return max(m, tile // m * m)
    if isinstance(chunk, str):
        try:
            chunk = int(chunk)
        except ValueError:
            raise ValueError(f"chunk must be an integer number of pixels, but got {chunk!r}") from None
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, but got {chunk!r}")
    return int(chunk)


def _identity(path: str) -> str | None:
    """The content fingerprint of a file or folder input (a changed input must not be resumed)."""
    return content_identity(path) if os.path.exists(path) else None


def _weights_identity(weights: Any):
    if weights is None:
        return None
    w = str(weights)
    return [os.path.abspath(w), _identity(w)] if os.path.isfile(w) else w


def _resumable(job: _StreamPlan, seed, resume: bool, overwrite: bool, say) -> Manifest | None:
    """The manifest of an interrupted run to continue, or None to start afresh."""
    partial = job.partial
    if not os.path.exists(partial):
        return None
    old = Manifest.load(job.manifest_path)
    if old is None:
        say(f"discarding {partial}: no readable progress manifest, nothing in it can be trusted")
        return None
    if not resume or overwrite:
        say(f"discarding the unfinished run in {partial}")
        return None
    changes = differences(old.signature, job.signature)
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
    try:
        arr[region] = np.transpose(block, perm)
    except OSError as exc:  # a full or read-only disk: name the folder, keep the finished blocks
        if exc.errno is None or exc.filename:
            raise
        raise OSError(exc.errno, f"{exc.strerror or exc} while writing", partial) from exc
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


def _finish(job: _StreamPlan, state: dict, result: Result, overwrite: bool) -> None:
    """Record the provenance, publish the result at ``dst`` in one rename, drop the partial folder."""
    import zarr

    os.remove(job.manifest_path)
    meta = {**result.provenance(), "input": job.signature["input"], "axes": job.signature["axes"]}
    if job.kind == "zarr":
        zarr.open_group(job.partial, mode="r+").attrs["napari_diffir"] = meta
        _replace_dir(job.partial, job.dst, overwrite)
        return
    from ..io.tiff import write_tiff_from_zarr

    arr = zarr.open_array(os.path.join(job.partial, "0"), mode="r")
    fd, tmp = tempfile.mkstemp(prefix=".napari-diffir-", suffix=".ome.tif", dir=os.path.dirname(job.dst))
    os.close(fd)
    try:
        write_tiff_from_zarr(tmp, arr, job.out_axes, state.get("pixel_size", {}),
                             state.get("units", {}), description=json.dumps(meta))
        publish_file(tmp, job.dst, overwrite)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            raise OSError(exc.errno, f"{exc.strerror or exc} while writing", job.dst) from exc
        raise
    shutil.rmtree(job.partial, ignore_errors=True)


def _replace_dir(new: str, dst: str, overwrite: bool) -> None:
    if os.path.lexists(dst) and not overwrite:  # appeared during the run; keep both, say so
        raise FileExistsError(f"Output {dst!r} appeared while this run was writing it; the result "
                              f"stays in {new}, pass --overwrite to replace it")
    if os.path.lexists(dst):  # --overwrite: move the old output aside first, delete it last
        old = dst + f".old-{os.getpid()}"
        os.rename(dst, old)
        os.rename(new, dst)
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:  # a file, or a symlink (removed itself: what it points to is not ours)
            os.remove(old)
    else:
        os.rename(new, dst)
