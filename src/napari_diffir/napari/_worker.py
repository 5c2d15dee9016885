"""The restoration job behind the widget, without Qt: engine in a thread, progress as a generator.

:func:`iter_restoration` is a generator: it runs the engine in a plain thread and yields a
:class:`Progress` for every tile and sampling step the engine reports, then returns an
:class:`Outcome`. The widget wraps it in a napari ``thread_worker`` (progress is handled in the
main thread, layers are added there); tests and scripts can iterate it directly or call
:func:`run_restoration`. Cancel is a ``threading.Event``: the engine checks it between sampling
steps and tiles and raises :class:`~napari_diffir.RestorationCancelled`, so nothing is returned.

``NAPARI_DIFFIR_NOTHREADS=1`` makes the widget run jobs synchronously in the calling thread
(debugging, and CI machines where threads and Qt misbehave).
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import numpy as np

from ..restorer import RestorationCancelled, Restorer

__all__ = [
    "Job",
    "Outcome",
    "Progress",
    "friendly_error",
    "format_seconds",
    "iter_restoration",
    "run_restoration",
    "threads_disabled",
]

NOTHREADS_ENV = "NAPARI_DIFFIR_NOTHREADS"
POLL_SECONDS = 0.05


def threads_disabled() -> bool:
    return os.environ.get(NOTHREADS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def format_seconds(seconds: float) -> str:
    """``0:07``, ``3:12``, ``1:02:03``: compact durations for the progress line."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units (tiles; fractional inside a tile)."""

    done: float
    total: int
    message: str
    elapsed: float

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(max(self.done / self.total, 0.0), 1.0)

    @property
    def eta(self) -> float | None:
        """Seconds left at the average speed so far (None until some work is done)."""
        if self.done <= 0 or self.total <= 0:
            return None
        return max(self.elapsed * (self.total - self.done) / self.done, 0.0)

    def text(self) -> str:
        parts = [self.message] if self.message else []
        parts.append(f"{format_seconds(self.elapsed)} elapsed")
        eta = self.eta
        if eta is not None and self.fraction < 1.0:
            parts.append(f"~{format_seconds(eta)} left")
        return " · ".join(parts)


@dataclass
class Job:
    """What to restore and how: the arguments of :func:`napari_diffir.restore`."""

    data: Any
    restorer: "str | Restorer"
    axes: str | None = None
    rgb: bool | None = None
    weights: str | None = None
    tile_size: "int | str | None" = "auto"
    tile_overlap: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    steps: int | None = None
    seed: int | None = None
    mask: Any = None
    output_dtype: Any = None
    options: dict = field(default_factory=dict)

    def engine_kwargs(self) -> dict:
        return dict(
            axes=self.axes, rgb=self.rgb, weights=self.weights, tile_size=self.tile_size,
            tile_overlap=self.tile_overlap, device=self.device, precision=self.precision,
            steps=self.steps, seed=self.seed, mask=self.mask, output_dtype=self.output_dtype,
            options=dict(self.options) or None,
        )


@dataclass
class Outcome:
    """The restored array and what produced it (recorded in the output layer's metadata)."""

    data: np.ndarray
    restorer: str
    scale: int
    weights: str | None
    steps: int | None
    seed: int | None
    tile_size: Any
    tile_overlap: Any
    device: str
    precision: str
    seconds: float
    options: dict = field(default_factory=dict)

    def provenance(self) -> dict:
        from .. import __version__

        return {
            "restorer": self.restorer,
            "weights": self.weights,
            "steps": self.steps,
            "seed": self.seed,
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "device": self.device,
            "precision": self.precision,
            "options": dict(self.options),
            "seconds": round(self.seconds, 3),
            "version": __version__,
        }


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask.")


def run_restoration(
    job: Job,
    progress: Callable[[float, int, str], None] | None = None,
    cancel: Any = None,
) -> Outcome:
    """Run ``job`` in the calling thread; raises RestorationCancelled or the engine's error."""
    from ..engine.restore import _check_cancel, prepare, resolve_restorer

    t0 = time.perf_counter()
    _check_cancel(cancel)
    restorer = resolve_restorer(job.restorer, job.weights, job.options)  # loads weights once
    kwargs = job.engine_kwargs()
    kwargs.pop("weights")
    kwargs.pop("options")
    if kwargs["seed"] is None:  # decided here so the output can record it
        kwargs["seed"] = random.SystemRandom().randrange(2**31)
    if _is_dask(job.data):
        out = _compute_dask(job.data, restorer, kwargs, progress, cancel)
        tile, overlap, device = job.tile_size, kwargs["tile_overlap"], job.device
        if overlap is None:
            overlap = restorer.info.tile_overlap
    else:
        run = prepare(np.asarray(job.data), restorer, **kwargs)
        out = run.execute(progress=progress, cancel=cancel)
        tile, overlap, device = int(run.tile), int(run.overlap), str(run.device)
    info = restorer.info
    return Outcome(
        data=out,
        restorer=info.name,
        scale=info.scale,
        weights=str(job.weights) if job.weights is not None else info.weights,
        steps=job.steps if job.steps is not None else _default_steps(restorer),
        seed=kwargs["seed"] if info.stochastic else None,
        tile_size=tile,
        tile_overlap=overlap,
        device=device,
        precision=job.precision,
        seconds=time.perf_counter() - t0,
        options=dict(job.options),
    )


def _default_steps(restorer: Restorer) -> int | None:
    value = restorer.options.get("steps")
    if value is None:
        opt = restorer.info.option("steps")
        value = opt.default if opt is not None else None
    return value


def _compute_dask(data: Any, restorer: Restorer, kwargs: dict, progress, cancel) -> np.ndarray:
    """Build the engine's lazy graph and compute it here, block by block.

    The input is never loaded whole (each task reads one block plus its halo); progress counts
    restored blocks and cancel is checked before every task.
    """
    import dask
    from dask.callbacks import Callback

    from ..engine.restore import _check_cancel
    from ..engine import restore as engine_restore

    lazy = engine_restore(data, restorer, **kwargs)
    # graph optimisation renames intermediate keys; the output's own keys survive, one per block
    total = int(lazy.npartitions)
    state = {"done": 0}

    def pretask(key, dsk, st):
        _check_cancel(cancel)

    def posttask(key, result, dsk, st, worker_id):
        if _key_name(key) == lazy.name:
            state["done"] += 1
            if progress is not None:
                progress(state["done"], total, f"block {state['done']}/{total}")

    if progress is not None:
        progress(0.0, total, "starting")
    with Callback(pretask=pretask, posttask=posttask):
        (out,) = dask.compute(lazy, scheduler="threads")
    _check_cancel(cancel)
    return np.asarray(out)


def _key_name(key: Any) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


def iter_restoration(
    job: Job, cancel: threading.Event | None = None
) -> Generator[Progress, None, Outcome]:
    """Yield :class:`Progress` while the engine runs ``job`` in a thread; return the Outcome.

    Closing the generator early (or setting ``cancel``) stops the engine within one sampling
    step. Errors from the engine are re-raised here, in the generator's thread.
    """
    cancel = cancel if cancel is not None else threading.Event()
    updates: "queue.Queue[Progress]" = queue.Queue()
    result: dict[str, Any] = {}
    t0 = time.perf_counter()

    def report(done: float, total: int, message: str) -> None:
        updates.put(Progress(float(done), int(total), message, time.perf_counter() - t0))

    def target() -> None:
        try:
            result["outcome"] = run_restoration(job, report, cancel)
        except BaseException as exc:  # handed to the generator's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="napari-diffir-restore", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not updates.empty():
            try:
                item = updates.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            # collapse a burst of updates into the newest one: the UI only shows the latest
            while True:
                try:
                    item = updates.get_nowait()
                except queue.Empty:
                    break
            yield item
    finally:
        if thread.is_alive():  # closed early: stop the engine, let it finish its step
            cancel.set()
            thread.join(timeout=30)
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["outcome"]


def friendly_error(exc: BaseException) -> str:
    """One message that says what went wrong and what to change (no traceback)."""
    from ..engine.device import is_out_of_memory

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, RestorationCancelled):
        return "Restoration cancelled."
    if is_out_of_memory(exc) and not isinstance(exc, MemoryError):
        return (
            f"Out of memory ({text.splitlines()[0]}). Use a smaller tile size, precision bf16 "
            "(or fp16 on a GPU), or the CPU device."
        )
    if isinstance(exc, MemoryError):
        return f"Out of memory: {text}" if "memory" not in text.lower() else text
    if isinstance(exc, ValueError):
        return text
    return f"Restoration failed ({type(exc).__name__}): {text}"
