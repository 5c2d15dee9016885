"""Run and Cancel: the job the form describes, its progress and status, and the layer it adds.

Mixed into :class:`~._widget.RestoreWidget`. The work runs in :func:`~._worker.iter_restoration`
inside a napari ``thread_worker`` driven by :class:`~._runner.Runner`: progress drives the bar,
the returned result becomes a new layer (main thread), errors are reported, and the UI resets
when the run finishes. A cancelled run adds no layer.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from ._catalogue import LOAD, default_steps, takes_weights, widget_message
from ._form import OK_STYLE
from ._inputs import checked_axes, layer_data, loop_axes, mask_array
from ._layers import SourceLayer, output_layer, plane_selection
from ._options import option_value
from ._runner import process_events_until
from ._weights import ERROR_STYLE
from ._worker import LOADING, Job, Progress, friendly_error

if TYPE_CHECKING:
    from ..engine.result import Result

__all__ = ["RunControls"]


class RunControls:
    """Start, cancel and finish a restoration, and show how far it has come."""

    @property
    def running(self) -> bool:
        return self._runner.running

    @property
    def last_result(self) -> Result | None:
        """The Result of the last run that finished (its data and provenance)."""
        return self._runner.result

    @property
    def _worker(self):
        """The napari worker of the running restoration (None when idle)."""
        return self._runner.worker

    def make_job(self) -> tuple[Job, dict]:
        """The engine job for the current settings, plus what the output layer needs."""
        problems = self.problems()
        if problems:
            raise ValueError(problems[0])
        layer = self._image.value
        info = self.info
        data = layer_data(layer)
        axes = checked_axes(layer, self._axes.value)
        source = SourceLayer.from_layer(layer)
        offsets = None
        index = None
        if self._slice.value and loop_axes(axes, layer):
            position = layer.world_to_data(self._viewer.dims.point)
            index, offsets = plane_selection(axes, tuple(data.shape), position)
            data = np.asarray(data[index])  # only this plane is read, also from dask/zarr
        options = {name: option_value(info.option(name), w) for name, w in self._option_widgets.items()}
        options = {k: v for k, v in options.items() if v is not None}
        settings = self._settings(layer)
        if "steps" in self._option_widgets:
            # the restorer's Steps option runs as the engine's steps, so the output records them
            steps = options.pop("steps", None)
            if steps is None:
                steps = default_steps(options.get("sampler"), self._timesteps())
            settings = dataclasses.replace(settings, steps=steps)
        weights = self._weights.value if takes_weights(info) and self._weights.value != LOAD else None
        mask = mask_array(layer, self._mask.value, axes, index) if info.needs_mask else None
        settings = dataclasses.replace(settings, axes=axes, weights=weights, options=options)
        context = {"source": source, "axes": axes, "offsets": offsets, "layer": layer}
        return Job.of(data, info.name, settings, mask=mask), context

    def run(self, wait: bool = False, timeout: float | None = None) -> Future:
        """Start a restoration with the current settings; the Future resolves to the new layer.

        The Future is resolved after the UI has been reset; it is cancelled when the run is
        cancelled and holds the exception when the run fails. ``wait=True`` (for scripts)
        keeps the Qt event loop going until the run has finished or ``timeout`` seconds passed.
        """
        future = self._start()
        if wait:
            process_events_until(future.done, timeout)
        return future

    def _start(self) -> Future:
        if self.running:
            raise RuntimeError("A restoration is already running; wait for it or cancel it first.")
        try:
            job, context = self.make_job()
        except ValueError as exc:
            self._report_error(exc)
            future: Future = Future()
            future.set_exception(exc)
            return future
        self._set_running(True)
        return self._runner.start(job, context)

    def cancel(self, *_: Any) -> None:
        """Ask the running restoration to stop (within one sampling step); adds no layer."""
        if self.running:
            self._runner.cancel()
            self._cancel.enabled = False
            self._status.value = "Cancelling…"

    def _on_run_clicked(self, *_: Any) -> None:
        if not self.running:
            self.run()

    def _set_running(self, running: bool) -> None:
        self._run.enabled = not running
        self._cancel.enabled = running
        self._progress.native.setRange(0, 1000)
        if running:
            self._progress.value = 0
            self._status.native.setStyleSheet(OK_STYLE)
            self._status.value = "Starting…"

    def _on_progress(self, progress: Progress) -> None:
        if not self._alive():
            return
        loading = progress.message == LOADING
        self._progress.native.setRange(0, 0 if loading else 1000)  # a busy bar while the model loads
        self._progress.value = int(round(progress.fraction * 1000))
        if not self._runner.cancelled:
            self._status.value = progress.text()

    def _on_returned(self, result: Result, context: dict):
        """Add the output layer (main thread); it resolves the run's Future."""
        from napari.layers import Layer

        data, kwargs, _kind = output_layer(
            result.data, context["source"], axes=context["axes"], restorer=result.restorer,
            factor=result.scale, offsets=context["offsets"], provenance=result.provenance(),
        )
        self._adding_output = True
        try:
            layer = self._viewer.add_layer(Layer.create(data, kwargs, "image"))
        finally:
            self._adding_output = False
        self._done_message = f"Done in {result.seconds:.1f} s: added '{layer.name}'."
        return layer


    def _report_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        message = widget_message(friendly_error(exc))
        if self._alive():
            self._status.value = message
            self._status.native.setStyleSheet(ERROR_STYLE)
        show_error(f"napari-diffir: {message}")

    def _on_finished(self, cancelled: bool, outcome: Any) -> None:
        """Reset the UI (always, also after errors and cancel); the Future resolves after this."""
        if not self._alive():
            return
        self._set_running(False)
        if cancelled:
            self._progress.value = 0
            self._status.value = "Cancelled: no layer was added."
            self._status.native.setStyleSheet(OK_STYLE)
        elif not isinstance(outcome, BaseException):
            self._progress.value = 1000
            self._status.value = self._done_message
        self._validate_quietly(keep_status=True)
