"""The restoration job behind the widget, without Qt: engine in a thread, progress as a generator.

:func:`iter_restoration` is a generator: it runs the engine in a plain thread and yields a
:class:`Progress` for every tile and sampling step the engine reports, then returns the
engine's :class:`~napari_diffir.engine.result.Result`. The widget wraps it in a napari
``thread_worker`` (progress is handled in the main thread, layers are added there); tests and
scripts can iterate it directly or call :func:`run_restoration`. Cancel is a ``threading.Event``: the engine checks it between sampling
steps and tiles and raises :class:`~napari_diffir.RestorationCancelled`, so nothing is returned.

``NAPARI_DIFFIR_NOTHREADS=1`` makes the widget run jobs synchronously in the calling thread
(debugging, and CI machines where threads and Qt misbehave).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.result import Result
from ..engine.settings import FIELDS, RestoreSettings
from ..restorer import RestorationCancelled, Restorer

__all__ = [
    "LOADING",
    "Job",
    "LoadClock",
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


LOADING = "Loading the model…"
"""The message of the first phase of every run (building the restorer, reading its weights)."""


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units (tiles; fractional inside a tile)."""

    done: float
    total: int
    message: str
    elapsed: float
    loading: float = 0.0
    """Seconds the model took to load (not counted in the ETA, which is about the work left)."""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(max(self.done / self.total, 0.0), 1.0)

    @property
    def eta(self) -> float | None:
        """Seconds left at the average speed of the work so far (None until some is done)."""
        if self.done <= 0 or self.total <= 0:
            return None
        working = max(self.elapsed - self.loading, 0.0)
        return max(working * (self.total - self.done) / self.done, 0.0)

    def text(self) -> str:
        parts = [self.message] if self.message else []
        parts.append(f"{format_seconds(self.elapsed)} elapsed")
        eta = self.eta
        if eta is not None and self.fraction < 1.0:
            parts.append(f"~{format_seconds(eta)} left")
        return " · ".join(parts)


@dataclass(frozen=True)
class Job(RestoreSettings):
    """What to restore (data, restorer, mask) and how (the settings it extends)."""

    data: Any
    restorer: str | Restorer
    mask: Any = None

    @classmethod
    def of(cls, data: Any, restorer: str | Restorer, settings: RestoreSettings, mask: Any = None) -> Job:
        return cls(data, restorer, mask, **{name: getattr(settings, name) for name in FIELDS})

    @property
    def settings(self) -> RestoreSettings:
        return RestoreSettings(**{name: getattr(self, name) for name in FIELDS})


def run_restoration(
    job: Job,
    progress: Callable[[float, int, str], None] | None = None,
    cancel: Any = None,
) -> Result:
    """Run ``job`` in the calling thread; raises RestorationCancelled or the engine's error."""
    from ..engine.execute import check_cancel
    from ..engine.plan import plan
    from ..engine.resolve import resolve_restorer
    from ..engine.run import run

    t0 = time.perf_counter()
    check_cancel(cancel)
    settings = job.settings
    if progress is not None:
        progress(0.0, 0, LOADING)  # its own phase: total 0 says no work unit is done yet
    # built here, used for this run only: a dask layer's model is not kept in the engine's cache
    built = resolve_restorer(job.restorer, settings.weights, settings.options)
    p = plan(job.data, job.restorer, settings, mask=job.mask, built=built)
    result = run(p, progress, cancel)
    if p.lazy:
        result = dataclasses.replace(result, data=_compute_dask(result.data, progress, cancel))
    return dataclasses.replace(result, seconds=time.perf_counter() - t0)


def _compute_dask(lazy: Any, progress, cancel) -> np.ndarray:
    """Compute the engine's lazy graph here, block by block.

    The input is never loaded whole (each task reads the chunks of one tile); progress counts
    restored output blocks and cancel is checked before every task.
    """
    import dask
    from dask.callbacks import Callback

    from ..engine.execute import check_cancel

    # graph optimisation renames intermediate keys; the output's own keys survive, one per block
    total = int(lazy.npartitions)
    state = {"done": 0}

    def pretask(key, dsk, st):
        check_cancel(cancel)

    def posttask(key, result, dsk, st, worker_id):
        if _key_name(key) == lazy.name:
            state["done"] += 1
            if progress is not None:
                progress(state["done"], total, f"block {state['done']}/{total}")

    if progress is not None:
        progress(0.0, total, "starting")
    with Callback(pretask=pretask, posttask=posttask):
        (out,) = dask.compute(lazy, scheduler="threads")
    check_cancel(cancel)
    return np.asarray(out)


def _key_name(key: Any) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


class LoadClock:
    """How long the loading phase took: from the start to the first report that is not loading."""

    def __init__(self, t0: float) -> None:
        self.t0, self.until = t0, None

    def loading(self, message: str, now: float) -> float:
        if self.until is None and message != LOADING:
            self.until = now
        return (now if self.until is None else self.until) - self.t0


def iter_restoration(
    job: Job, cancel: threading.Event | None = None
) -> Generator[Progress, None, Result]:
    """Yield :class:`Progress` while the engine runs ``job`` in a thread; return its Result.

    Closing the generator early (or setting ``cancel``) stops the engine within one sampling
    step. Errors from the engine are re-raised here, in the generator's thread.
    """
    cancel = cancel if cancel is not None else threading.Event()
    updates: queue.Queue[Progress] = queue.Queue()
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    clock = LoadClock(t0)

    def report(done: float, total: int, message: str) -> None:
        now = time.perf_counter()
        updates.put(Progress(float(done), int(total), message, now - t0, clock.loading(message, now)))

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
            # collapse a burst of updates into the newest one: the UI only shows the latest,
            # but the end of the loading phase is never collapsed away (the ETA starts there)
            while True:
                try:
                    newer = updates.get_nowait()
                except queue.Empty:
                    break
                if item.message == LOADING and newer.message != LOADING:
                    yield item
                item = newer
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
