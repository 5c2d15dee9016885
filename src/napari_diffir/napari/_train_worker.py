"""The Train widget's job without Qt: training in a child process, its progress as a generator.

:func:`iter_training` writes the layers into the run folder, then runs
:func:`napari_diffir.training.session.run_job` (the CLI's training code) in a *separate process*
and yields every :class:`~napari_diffir.training.session.JobProgress` it reports, then returns
the saved model's path. A thread would share the interpreter lock with the viewer: importing
and preparing the training stack froze napari for 0.3-0.7 s at a time in a thread, never in a
process. The widget wraps the generator in a napari ``thread_worker``; tests can iterate it
directly. Cancel is a ``threading.Event``, passed on to the child, whose loop looks at it before
every step: the run then checkpoints and raises
:class:`~napari_diffir.training.loop.TrainingCancelled`, and no model is saved.
``NAPARI_DIFFIR_NOTHREADS=1`` trains in the calling thread instead (debugging).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ._train_form import TrainSettings, make_job
from ._worker import threads_disabled

__all__ = ["fraction_done", "iter_training", "progress_text"]

POLL_SECONDS = 0.05


def iter_training(settings: TrainSettings, arrays: dict[str, Any], description: dict, cancel: threading.Event,
                  threads: int | None = None) -> Generator[Any, None, Path]:
    """Yield the job's progress reports (and log lines as ``str``); return the saved weights path."""
    job = make_job(settings, {k: np.asarray(v) for k, v in arrays.items()}, description, threads)
    if threads_disabled():  # in this thread; the reports come after the run
        from ..training.session import run_job

        reports: list = []
        try:
            path = run_job(job, progress=reports.append, cancel=cancel)
        finally:
            yield from reports
        return path
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # never fork a process that runs Qt
    messages, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_train_child, args=(job, messages, stop), name="napari-diffir-train", daemon=True)
    _start_without_main(child)
    outcome: tuple | None = None
    try:
        while outcome is None:
            if cancel.is_set():
                stop.set()
            try:
                item = messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not child.is_alive():
                    try:  # the last message may still be in the pipe
                        item = messages.get(timeout=1.0)
                    except queue.Empty:
                        raise RuntimeError(f"The training process ended without a result "
                                           f"(exit code {child.exitcode})") from None
                else:
                    continue
            if isinstance(item, tuple) and item and item[0] in ("saved", "failed"):
                outcome = item
            else:
                yield item
    finally:
        if outcome is None:  # the consumer stopped listening: stop the child too
            stop.set()
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()
    if outcome[0] == "failed":
        raise outcome[1]
    from .. import registry

    registry.reload()  # the child registered the model in its own process; this one learns it now,
    registry.list_restorers()  # here, so that the viewer's thread finds the catalogue ready
    return outcome[1]


def _start_without_main(child: Any) -> None:
    """Start a spawned child that does not run the user's ``__main__`` again.

    A spawned process re-imports the parent's main script; a napari session started from a
    script without an ``if __name__ == "__main__"`` guard would open a second viewer there. The
    child needs nothing from ``__main__`` (its target lives in this package), so it is shown an
    empty one while the child's start-up data is collected.
    """
    import sys
    import types

    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        child.start()
    finally:
        sys.modules["__main__"] = main


def _train_child(job: Any, messages: Any, stop: Any) -> None:
    """The child process: run the job, send progress, log lines and the outcome back."""
    from ..training.session import run_job

    try:
        path = run_job(job, progress=messages.put, cancel=stop, log=messages.put)
    except BaseException as exc:  # sent to the parent, raised there
        messages.put(("failed", exc))
    else:
        messages.put(("saved", path))


def fraction_done(p: Any) -> float:
    """The whole job's fraction done, from a stage's steps or its time (whichever is further)."""
    r = p.report
    stage = r.step / r.total if r.total else 0.0
    if r.eta_s is not None and r.elapsed_s + r.eta_s > 0:
        stage = max(stage, r.elapsed_s / (r.elapsed_s + r.eta_s))
    if r.event == "done":
        stage = 1.0
    return min(1.0, (p.index + stage) / p.count)


def progress_text(p: Any) -> str:
    """``Stage 1/2 (diffir-s1) · step 120 · loss 0.0213 · val PSNR 28.41 dB · 3:10 left``."""
    from ._worker import format_seconds

    r = p.report
    parts = [f"Stage {p.index + 1}/{p.count} ({r.stage})" if p.count > 1 else r.stage, f"step {r.step}"]
    if r.loss is not None:
        parts.append(f"loss {r.loss:.4f}")
    if r.validation:
        parts.append(f"val PSNR {r.validation['psnr']:.2f} dB")
    if r.event == "done":
        parts.append("stage done")
    elif r.eta_s is not None:
        parts.append(f"{format_seconds(r.eta_s)} left" + (" in this stage" if p.count > 1 else ""))
    return " · ".join(parts)
