"""Runs the widget's jobs: in a napari ``thread_worker`` (or synchronously), behind a Future.

The :class:`Runner` owns what a run needs apart from the form: the cancel event, the worker and
the ``concurrent.futures.Future`` that ``RestoreWidget.run()`` returns. It tells the widget what
happened through four callbacks (progress, returned, failed, finished) and resolves the Future
only after ``finished``, so a caller that waits on it sees the form reset already.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..engine.result import Result
from ..restorer import RestorationCancelled
from ._worker import Job, LoadClock, Progress, iter_restoration, run_restoration, threads_disabled

__all__ = ["Runner", "process_events_until"]


class Runner:
    """One restoration at a time; the caller checks :attr:`running` before :meth:`start`."""

    def __init__(
        self,
        *,
        progress: Callable[[Progress], None],
        returned: Callable[[Result, Any], Any],
        failed: Callable[[BaseException], None],
        finished: Callable[[bool, Any], None],
    ) -> None:
        """
        :param progress: called with every :class:`~._worker.Progress` (main thread).
        :param returned: called with the Result and the run's context unless the run was
            cancelled; what it returns (the new layer) resolves the Future.
        :param failed: called with the error of a run that failed (not for a cancelled one).
        :param finished: called with (cancelled, outcome) after every run, before the Future
            resolves; the outcome is what ``returned`` gave, or the error.
        """
        self._progress, self._returned, self._failed, self._finished = progress, returned, failed, finished
        self.running = False
        self.worker = None
        self.result: Result | None = None
        """The Result of the last run that returned one."""
        self._cancel: threading.Event | None = None
        self._future: Future | None = None
        self._outcome: Any = None

    @property
    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def start(self, job: Job, context: Any = None) -> Future:
        """Run ``job`` in a worker thread (synchronously with ``NAPARI_DIFFIR_NOTHREADS=1``)."""
        future: Future = Future()
        self._future, self._outcome = future, None
        self._cancel = threading.Event()
        self.running = True
        if threads_disabled():
            self._run_synchronously(job, context)
            return future
        from napari.qt.threading import create_worker

        worker = create_worker(iter_restoration, job, self._cancel, _ignore_errors=True)
        worker.yielded.connect(self._progress)
        worker.returned.connect(lambda result: self._on_returned(result, context))
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return future

    def cancel(self) -> None:
        """Ask the running restoration to stop within one sampling step; it adds nothing."""
        if self._cancel is not None:
            self._cancel.set()

    def _run_synchronously(self, job: Job, context: Any) -> None:
        t0 = time.perf_counter()
        clock = LoadClock(t0)

        def progress(done: float, total: int, message: str) -> None:
            now = time.perf_counter()
            self._progress(Progress(done, total, message, now - t0, clock.loading(message, now)))

        try:
            result = run_restoration(job, progress, self._cancel)
        except BaseException as exc:
            self._on_errored(exc)
        else:
            self._on_returned(result, context)
        finally:
            self._on_finished()

    def _on_returned(self, result: Result, context: Any) -> None:
        self.result = result
        if self.cancelled:  # finished just as Cancel was pressed: still add nothing
            self._outcome = RestorationCancelled("restoration cancelled")
            return
        self._outcome = self._returned(result, context)

    def _on_errored(self, exc: BaseException) -> None:
        self._outcome = exc
        if not isinstance(exc, RestorationCancelled):
            self._failed(exc)

    def _on_aborted(self) -> None:  # cancelled from napari's activity dock (worker.quit)
        self.cancel()
        self._outcome = RestorationCancelled("restoration cancelled")

    def _on_finished(self) -> None:
        outcome, future = self._outcome, self._future
        self.worker = None
        self.running = False
        cancelled = isinstance(outcome, RestorationCancelled) or (outcome is None and self.cancelled)
        self._finished(cancelled, outcome)
        if future is None:
            return
        if cancelled:
            future.cancel()
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def process_events_until(done: Callable[[], bool], timeout: float | None) -> None:
    """Keep the Qt event loop going until ``done()`` or ``timeout`` seconds (for scripts)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = None if timeout is None else time.monotonic() + timeout
    while not done() and (end is None or time.monotonic() < end):
        if app is not None:
            app.processEvents()
        time.sleep(0.01)
