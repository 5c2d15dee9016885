"""The Restore dock widget: pick an image, a restorer and its weights, run it in the background.

A magicgui ``Container`` (so scripts and tests can set every field and call :meth:`RestoreWidget.run`).
The form parses its fields with the engine's ``from_text`` and disables Run with the engine's
``check()``; it only collects the settings into a :class:`~._worker.Job`. The work happens in
:func:`~._worker.iter_restoration` inside a napari ``thread_worker`` run by :class:`~._runner.Runner`:
progress drives the bar, the returned result becomes a new layer (main thread), errors are
reported, and the UI resets when the run finishes. Cancel sets an event the engine checks
between sampling steps; a cancelled run adds no layer.

The pieces: ``_catalogue`` (restorer menu, weights choices; no Qt), ``_weights`` (the weights
field), ``_options`` (one widget per restorer option), ``_device`` (device list and indicator),
``_inputs`` (layers to arrays, axes and masks), ``_runner`` (threads, cancel, the Future).
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton

from ..engine.check import check
from ..engine.settings import DEFAULTS, RestoreSettings, SettingsError, from_text
from ..restorer import RestorerInfo
from ._catalogue import (
    HEADER,
    LOAD,
    describe,
    restorer_choices,
    takes_weights,
    weights_problem,
)
from ._device import device_choices, device_indicator
from ._inputs import checked_axes, layer_data, loop_axes, mask_array, mask_shape, rgb_problem
from ._layers import SourceLayer, output_layer, plane_selection, suggest_axes
from ._options import option_value, option_widget
from ._runner import Runner, process_events_until
from ._weights import ERROR_STYLE, WeightsPicker
from ._worker import Job, Progress, friendly_error

if TYPE_CHECKING:
    import napari

    from ..engine.result import Result

__all__ = ["RestoreWidget"]

OK_STYLE = ""
LABELS = {"tile_size": "Tile size", "tile_overlap": "Tile overlap", "steps": "Steps", "seed": "Seed"}
"""How the text settings are named in the form (in messages)."""


def shown(widget) -> bool:
    """Whether a field is part of the form now (``visible`` is False until the dock is shown)."""
    return not widget.native.isHidden()


def _unwrap(obj: Any) -> Any:
    """The napari object behind a ``PublicOnlyProxy`` (plugins may be handed proxies)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Any, b: Any) -> bool:
    return _unwrap(a) is _unwrap(b)


class RestoreWidget(Container):
    """Restore the selected image layer with any registered restorer; output goes to a new layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._infos: dict[str, RestorerInfo] = {}
        self._option_widgets: dict[str, Any] = {}
        self._updating = False
        self._done_message = "Done."
        self._runner = Runner(progress=self._on_progress, returned=self._on_returned,
                              failed=self._report_error, finished=self._on_finished)

        self._image = ComboBox(name="image", label="Image", choices=self._image_choices)
        self._restorer = ComboBox(name="restorer", label="Restorer")
        self._about = Label(name="about", label=" ")
        self._weights = ComboBox(name="weights", label="Weights")
        self._weights_info = Label(name="weights_info", label=" ")
        self._options = Container(name="restorer_options", labels=True, label="Options")
        self._steps = LineEdit(name="steps", label="Steps", value="default",
                               tooltip="Sampling steps: 'default' (the restorer's) or a number")
        self._seed = LineEdit(name="seed", label="Seed", value="random",
                              tooltip="Same seed, same result; 'random' draws one and records it")
        self._mask = ComboBox(name="mask", label="Mask", choices=self._mask_choices, nullable=True,
                              tooltip="Labels or Shapes layer: pixels to fill (> 0)")
        self._axes = LineEdit(name="axes", label="Axes", tooltip="One letter per dimension from S T Z C Y X")
        self._slice = CheckBox(name="current_slice", text="Current slice only", tooltip="Restore only the plane on screen")
        self._tile = LineEdit(name="tile_size", label="Tile size", value=DEFAULTS.tile_size,
                              tooltip="Tile side in input pixels: 'auto' (from the model and free "
                              "memory), 'none' (whole image at once) or a number >= 32")
        self._overlap = LineEdit(name="tile_overlap", label="Tile overlap", value="auto",
                                 tooltip="Overlap between tiles in pixels: 'auto' (the model's halo) or a number")
        self._device = ComboBox(name="device", label="Device", choices=device_choices(), value=DEFAULTS.device)
        self._device_info = Label(name="device_info", label=" ")
        self._precision = ComboBox(name="precision", label="Precision", choices=["fp32", "bf16", "fp16"],
                                   value=DEFAULTS.precision,
                                   tooltip="bf16/fp16 autocast: faster on recent hardware, slightly less exact")
        self._dtype = ComboBox(name="output_type", label="Output type", choices=[("float32", "float32"), ("same as input", "input")],
                               value="float32")
        self._run = PushButton(name="run_button", text="Run")
        self._cancel = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self._progress = ProgressBar(name="progress", label="Progress", min=0, max=1000, value=0)
        self._status = Label(name="status", label=" ")

        for w in (self._about, self._weights_info, self._device_info, self._status):
            w.native.setWordWrap(True)
        text, colour = device_indicator()
        self._device_info.value = text
        self._device_info.native.setStyleSheet(f"color: {colour};")
        self._device_info.tooltip = text

        self.extend([
            self._image, self._restorer, self._about, self._weights, self._weights_info,
            self._options, self._steps, self._seed, self._mask, self._axes, self._slice,
            self._tile, self._overlap, self._device, self._device_info, self._precision,
            self._dtype, self._run, self._cancel, self._progress, self._status,
        ])

        self._picker = WeightsPicker(self._weights, self._weights_info, load_requested=self._load_from_dialog,
                                     select=self._select_restorer, changed=self._validate)
        self._image.changed.connect(self._on_image_changed)
        self._restorer.changed.connect(self._on_restorer_changed)
        for w in (self._axes, self._mask, self._slice, self._tile, self._overlap, self._device,
                  self._precision, self._steps, self._seed):
            w.changed.connect(self._validate)
        self._run.changed.connect(self._on_run_clicked)
        self._cancel.changed.connect(self.cancel)
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            getattr(events, name).connect(self._on_layers_changed)
        self.native.destroyed.connect(self._on_destroyed)

        self.refresh_restorers()
        self._image.reset_choices()
        self._mask.reset_choices()
        active = viewer.layers.selection.active
        for choice in self._image.choices:
            if active is not None and _same(choice, active):
                self._image.value = choice
        self._on_image_changed()

    # ------------------------------------------------------------------ choices

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _mask_choices(self, _widget=None) -> list[tuple[str, Any]]:
        from napari.layers import Labels, Shapes

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, (Labels, Shapes))]

    def _on_layers_changed(self, event=None) -> None:
        before = self._image.value
        self._image.reset_choices()
        self._mask.reset_choices()
        if before is None and self._image.value is None and self._image.choices:
            self._image.value = self._image.choices[-1]
        if not _same(self._image.value, before):
            self._on_image_changed()
        self._validate()

    def reset_choices(self, *_: Any) -> None:
        """Called by napari when layers change; also picks up newly registered restorers.

        Only the layer pickers and the restorer list are refreshed: the restorer's option
        widgets keep what the user set.
        """
        self._on_layers_changed()
        self.refresh_restorers()

    def refresh_restorers(self) -> None:
        """List every registered restorer (built-in and third-party), grouped as in the menu."""
        from ..registry import list_restorers

        infos = list_restorers()
        if {i.name: i for i in infos} == self._infos and self._restorer.choices:
            return  # nothing new: keep the selection and its options untouched
        current = self._restorer.value
        self._infos = {i.name: i for i in infos}
        choices = restorer_choices(infos)
        self._updating = True
        try:
            self._restorer.choices = choices
            model = self._restorer.native.model()
            for row, (_label, value) in enumerate(choices):
                if value.startswith(HEADER) and hasattr(model, "item"):
                    item = model.item(row)
                    item.setEnabled(False)
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
            names = [v for _l, v in choices if not v.startswith(HEADER)]
            if current in names:
                self._restorer.value = current
            elif names:
                self._restorer.value = names[0]
        finally:
            self._updating = False
        self._on_restorer_changed()

    # ------------------------------------------------------------------ reactions

    @property
    def info(self) -> RestorerInfo | None:
        """The selected restorer's info (None if nothing is registered)."""
        return self._infos.get(self._restorer.value)

    def _on_image_changed(self, *_: Any) -> None:
        layer = self._image.value
        if layer is not None:
            data = layer_data(layer)
            self._axes.value = suggest_axes(data.shape, bool(layer.rgb), getattr(layer, "axis_labels", None))
            self._dtype.value = "input" if layer.rgb else self._dtype.value
        self._validate()

    def _on_restorer_changed(self, *_: Any) -> None:
        if self._updating:
            return
        info = self.info
        if info is None:
            if isinstance(self._restorer.value, str) and self._restorer.value.startswith(HEADER):
                self._select_first_after_header()
            return
        self._about.value = describe(info)
        self._build_options(info)
        self._picker.show(info)
        stoch = info.stochastic
        self._steps.visible = info.sampling_steps and info.option("steps") is None
        self._seed.visible = stoch and info.option("seed") is None
        self._mask.visible = info.needs_mask
        self._validate()

    def _select_first_after_header(self) -> None:
        """A group header got selected (only possible from code): select the first restorer."""
        names = [c for c in self._restorer.choices if not str(c).startswith(HEADER)]
        if names:
            self._restorer.value = names[0]

    def _build_options(self, info: RestorerInfo) -> None:
        self._options.clear()
        self._option_widgets = {}
        for opt in info.options:
            widget = option_widget(opt)
            widget.changed.connect(self._validate)
            self._option_widgets[opt.name] = widget
            self._options.append(widget)
        self._options.visible = bool(info.options)

    def _select_restorer(self, name: str) -> None:
        if self._restorer.value != name:
            self._restorer.value = name  # shows its options and weights
        else:
            self._picker.show(self._infos[name])

    def _load_from_dialog(self) -> bool:
        path = self._ask_checkpoint_path()
        return bool(path) and self.load_checkpoint(path)

    def _ask_checkpoint_path(self) -> str | None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "Load a DiffIR or SRDiff checkpoint", "",
            "Checkpoints (*.pth *.pt *.ckpt *.safetensors);;All files (*)",
        )
        return path or None

    def load_checkpoint(self, path: str | os.PathLike) -> bool:
        """Inspect the checkpoint at ``path`` and select it, with the restorer that runs it.

        The detected architecture is shown under the weights picker; a file that is not a
        usable checkpoint leaves the selection unchanged and says why (no traceback).
        """
        return self._picker.load(os.fspath(path), self.info, self._infos)

    # ------------------------------------------------------------------ validation

    def problems(self) -> list[str]:
        """Why Run is disabled right now (empty when everything is valid)."""
        out: list[str] = []
        info = self.info
        layer = self._image.value
        if info is None:
            out.append("No restorer is registered.")
        if layer is None:
            out.append("Add or open an image layer to restore.")
        elif rgb := rgb_problem(layer, self._axes.value):
            out.append(rgb)
        if info is not None:
            weights = weights_problem(info, self._weights.value)
            if weights:
                out.append(weights)
            for name, widget in self._option_widgets.items():
                try:
                    option_value(info.option(name), widget)
                except ValueError as exc:
                    out.append(str(exc))
        try:
            settings = self._settings(layer)
        except SettingsError as exc:
            return out + [str(p) for p in exc.problems]
        if layer is not None:
            data = layer_data(layer)
            for problem in check(info, data.shape, data.dtype, settings, device_type=self._resolved_device(),
                                 mask_shape=self._mask_shape(layer, info)):
                if problem.field == "mask" and self._mask.value is None:  # say which field to set
                    out.append(f"'{info.name}' fills a mask: add a Labels or Shapes layer and choose it as Mask.")
                else:
                    out.append(str(problem))
        return out

    def _settings(self, layer) -> RestoreSettings:
        """The settings the form holds (without weights and options, which make_job adds)."""
        return from_text(
            labels=LABELS, axes=self._axes.value or "", rgb=None if layer is None else bool(layer.rgb),
            tile_size=self._tile.value, tile_overlap=self._overlap.value, device=self._device.value,
            precision=self._precision.value,
            steps=self._steps.value if shown(self._steps) else None,
            seed=self._seed.value if shown(self._seed) else None,
            output_dtype="input" if self._dtype.value == "input" else None,
        )

    def _resolved_device(self) -> str:
        from ..engine.device import resolve_device

        try:
            return resolve_device(self._device.value).type
        except ValueError:
            return "?"

    def _mask_shape(self, layer, info: RestorerInfo | None) -> tuple[int, ...] | None:
        needed = info is not None and info.needs_mask
        return mask_shape(layer, self._mask.value, self._axes.value) if needed else None

    def _validate(self, *_: Any) -> None:
        layer = self._image.value
        axes_ok = True
        if layer is not None:
            try:
                axes = checked_axes(layer, self._axes.value)
                self._slice.visible = bool(loop_axes(axes, layer))
            except ValueError:
                axes_ok = False
        else:
            self._slice.visible = False
        self._axes.native.setStyleSheet("" if axes_ok else "border: 1px solid #e0685f;")
        if self.running:
            return
        problems = self.problems()
        self._run.enabled = not problems
        self._status.value = problems[0] if problems else ""
        self._status.native.setStyleSheet(ERROR_STYLE if problems else OK_STYLE)

    # ------------------------------------------------------------------ running

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
        weights = self._weights.value if takes_weights(info) and self._weights.value != LOAD else None
        mask = mask_array(layer, self._mask.value, axes, index) if info.needs_mask else None
        settings = dataclasses.replace(self._settings(layer), axes=axes, weights=weights, options=options)
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
        if running:
            self._progress.value = 0
            self._status.native.setStyleSheet(OK_STYLE)
            self._status.value = "Starting…"

    def _alive(self) -> bool:
        """False once the dock has been closed and Qt deleted the widget (the run may still end)."""
        from qtpy import sip

        try:
            return not sip.isdeleted(self.native)
        except (TypeError, RuntimeError):
            return False

    def _on_progress(self, progress: Progress) -> None:
        if not self._alive():
            return
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
        layer = self._viewer.add_layer(Layer.create(data, kwargs, "image"))
        self._done_message = f"Done in {result.seconds:.1f} s: added '{layer.name}'."
        return layer

    def _on_destroyed(self, *_: Any) -> None:
        """The dock was closed and Qt deleted the widget: stop a running restoration."""
        self._runner.cancel()

    def _report_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        message = friendly_error(exc)
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

    def _validate_quietly(self, keep_status: bool = False) -> None:
        status, style = self._status.value, self._status.native.styleSheet()
        self._validate()
        if keep_status and self._run.enabled:
            self._status.value = status
            self._status.native.setStyleSheet(style)
