"""The Restore dock widget: pick an image, a restorer and its weights, run it in the background.

A magicgui ``Container`` (so scripts and tests can set every field and call :meth:`RestoreWidget.run`).
The widget only collects settings into a :class:`~._worker.Job`; the work happens in
:func:`~._worker.iter_restoration` inside a napari ``thread_worker``, whose signals drive the
progress bar (``yielded``), add the output layer (``returned``, main thread), report errors
(``errored``) and reset the UI (``finished``). Cancel sets an event the engine checks between
sampling steps; a cancelled run adds no layer.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from ..engine.axes import LOOP_AXES, validate_axes
from ..restorer import RestorationCancelled, RestorerInfo
from ._layers import SourceLayer, output_layer, plane_selection, suggest_axes
from ._worker import Job, Outcome, Progress, friendly_error, iter_restoration, run_restoration, threads_disabled

if TYPE_CHECKING:
    import napari

__all__ = ["RestoreWidget"]

LOAD = "__load_checkpoint__"
HEADER = "__header__:"
TASK_ORDER = ("denoise", "deblur", "super-resolution", "inpaint")
BUILTIN = "napari-diffir (built-in)"
INT_LIMIT = 2**31 - 1
ERROR_STYLE = "color: #e0685f;"
OK_STYLE = ""


@dataclass(frozen=True)
class _Checkpoint:
    """A checkpoint file the user loaded: which restorer runs it and what was detected."""

    restorer: str
    label: str
    summary: str
    path: str
    detected: str = ""


def _task_title(task: str) -> str:
    return {"super-resolution": "Super-resolution"}.get(task, task[:1].upper() + task[1:])


def bundled_weights(info: RestorerInfo) -> str | None:
    """The weights a restorer ships with (bundled models), or None."""
    if info.weights is not None:
        return str(info.weights)
    return info.bundled_weights


def takes_weights(info: RestorerInfo) -> bool:
    """Whether a restorer takes ``weights=`` (DiffIR, SRDiff, plugins that declare it)."""
    return info.weights_policy != "none"


def _is_bundled(info: RestorerInfo) -> bool:
    return info.source == BUILTIN and bundled_weights(info) is not None


def restorer_choices(infos: list[RestorerInfo]) -> list[tuple[str, str]]:
    """Combo-box entries: bundled models first, then one group per task; headers are disabled."""
    groups: dict[str, list[RestorerInfo]] = {}
    for info in infos:
        key = "Bundled models" if _is_bundled(info) else _task_title(info.task)
        groups.setdefault(key, []).append(info)
    order = ["Bundled models"] + [_task_title(t) for t in TASK_ORDER]
    keys = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    choices: list[tuple[str, str]] = []
    for key in keys:
        choices.append((f"— {key} —", HEADER + key))
        members = sorted(groups[key], key=lambda i: (i.source != BUILTIN, i.display_name.lower()))
        for info in members:
            label = info.display_name
            if info.source and info.source != BUILTIN:
                label += f"  [{info.source}]"
            choices.append((f"  {label}", info.name))
    return choices


def device_choices() -> list[str]:
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        choices.append("mps")
    return choices


def device_indicator() -> tuple[str, str]:
    """(text, colour) describing what torch sees, with a hint for CPU-only torch on a GPU machine."""
    import torch

    from ..engine.device import describe_devices

    text = describe_devices()
    if torch.cuda.is_available() or "MPS" in text:
        colour = "#5fb760"
    elif "no CUDA support" in text:
        colour = "#e5a03d"
    else:
        colour = "#9a9a9a"
    return f"● {text} · torch {torch.__version__}", colour


def shown(widget) -> bool:
    """Whether a field is part of the form now (``visible`` is False until the dock is shown)."""
    return not widget.native.isHidden()


def _unwrap(obj: Any) -> Any:
    """The napari object behind a ``PublicOnlyProxy`` (plugins may be handed proxies)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Any, b: Any) -> bool:
    return _unwrap(a) is _unwrap(b)


def _layer_data(layer) -> Any:
    """The full-resolution array of an image layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class RestoreWidget(Container):
    """Restore the selected image layer with any registered restorer; output goes to a new layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._infos: dict[str, RestorerInfo] = {}
        self._checkpoints: dict[str, tuple[str, str, str]] = {}  # path -> (family, short, summary)
        self._option_widgets: dict[str, Any] = {}
        self._weights_before = None
        self._updating = False
        self._running = False
        self._cancel_event: threading.Event | None = None
        self._future: Future | None = None
        self._result: Any = None
        self._worker = None
        self.last_outcome: Outcome | None = None

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
        self._tile = LineEdit(name="tile_size", label="Tile size", value="auto",
                              tooltip="Tile side in input pixels: 'auto' (from the model and free "
                              "memory), 'none' (whole image at once) or a number >= 32")
        self._overlap = LineEdit(name="tile_overlap", label="Tile overlap", value="auto",
                                 tooltip="Overlap between tiles in pixels: 'auto' (the model's halo) or a number")
        self._device = ComboBox(name="device", label="Device", choices=device_choices(), value="auto")
        self._device_info = Label(name="device_info", label=" ")
        self._precision = ComboBox(name="precision", label="Precision", choices=["fp32", "bf16", "fp16"], value="fp32",
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

        self._image.changed.connect(self._on_image_changed)
        self._restorer.changed.connect(self._on_restorer_changed)
        self._weights.changed.connect(self._on_weights_changed)
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
            data = _layer_data(layer)
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
        about = info.description or info.display_name
        details = [f"task: {info.task}"]
        if info.scale > 1 and info.option("scale") is None:
            details.append(f"x{info.scale}")
        if info.source:
            details.append(f"from {info.source}")
        self._about.value = f"{about} ({', '.join(details)})"
        self._build_options(info)
        self._build_weights(info)
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
            widget = _option_widget(opt)
            widget.changed.connect(self._validate)
            self._option_widgets[opt.name] = widget
            self._options.append(widget)
        self._options.visible = bool(info.options)

    def _build_weights(self, info: RestorerInfo) -> None:
        """Bundled weights (if any), the checkpoints loaded for this restorer, 'Load checkpoint…'."""
        choices: list[tuple[str, Any]] = []
        bundled = bundled_weights(info)
        accepts = takes_weights(info)
        if bundled is not None:
            choices.append((f"bundled: {os.path.basename(bundled)}", None))
        if accepts:
            if bundled is None:
                choices.append(("none selected", None))
            for path, ckpt in self._checkpoints.items():
                if ckpt.restorer == info.name:
                    choices.append((ckpt.label, path))
            choices.append(("Load checkpoint…", LOAD))
        elif bundled is None:
            choices.append(("not used", None))
        self._updating = True
        try:
            self._weights.choices = choices
            first = choices[0][1]
            self._weights.value = first
            self._weights_before = first
        finally:
            self._updating = False
        self._weights.enabled = accepts
        self._show_weights_info()

    def _show_weights_info(self, error: str | None = None) -> None:
        value = self._weights.value
        if error:
            self._weights_info.value = error
            self._weights_info.native.setStyleSheet(ERROR_STYLE)
            self._weights_info.visible = True
            return
        self._weights_info.native.setStyleSheet(OK_STYLE)
        ckpt = self._checkpoints.get(value) if isinstance(value, str) else None
        self._weights_info.value = (ckpt.detected or ckpt.summary) if ckpt else ""
        self._weights_info.tooltip = ckpt.summary if ckpt else ""
        self._weights_info.visible = bool(ckpt)

    def _on_weights_changed(self, *_: Any) -> None:
        if self._updating:
            return
        if self._weights.value == LOAD:
            path = self._ask_checkpoint_path()
            if not path or not self.load_checkpoint(path):
                self._updating = True
                try:
                    self._weights.value = self._weights_before
                finally:
                    self._updating = False
            return
        self._weights_before = self._weights.value
        self._show_weights_info()
        self._validate()

    def _ask_checkpoint_path(self) -> str | None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "Load a DiffIR or SRDiff checkpoint", "",
            "Checkpoints (*.pth *.pt *.ckpt *.safetensors);;All files (*)",
        )
        return path or None

    def load_checkpoint(self, path: "str | os.PathLike") -> bool:
        """Inspect the checkpoint at ``path`` and select it, with the restorer that runs it.

        The detected architecture is shown under the weights picker; a file that is not a
        usable checkpoint leaves the selection unchanged and says why (no traceback).
        """
        from ..checkpoints import CheckpointError, UnsupportedCheckpointError, load_checkpoint
        from ..routing import restorer_for_checkpoint

        path = os.fspath(path)
        name = os.path.basename(path)
        current = self.info
        try:
            loaded = load_checkpoint(path)
        except UnsupportedCheckpointError as exc:
            if current is not None and takes_weights(current) and current.checkpoint_family is None:
                # a third-party restorer with its own weights format: pass the file through
                self._checkpoints[path] = _Checkpoint(
                    current.name, f"{name}", f"{name}: passed to {current.display_name} as is", path)
                self._select_weights(current.name, path)
                return True
            self._show_weights_info(f"Cannot use {name}: {exc}")
            return False
        except CheckpointError as exc:
            self._show_weights_info(f"Cannot use {name}: {exc}")
            return False
        except Exception as exc:  # never a traceback in the widget
            self._show_weights_info(f"Cannot read {name} ({type(exc).__name__}: {exc})")
            return False
        desc = dict(loaded.description)
        family = loaded.family
        target = restorer_for_checkpoint(family, desc.get("task"), self._infos.values())
        if target is None:
            self._show_weights_info(
                f"{name} is a {family} checkpoint, but no '{family}' restorer is installed.")
            return False
        keys = ("architecture", "variant", "task", "scale", "in_channels", "dim", "hidden_size",
                "params_human", "timesteps")
        shown = ", ".join(f"{k.replace('_', ' ')} {desc[k]}" for k in keys if k in desc)
        detected = f"Detected {family}: {shown}" if shown else f"Detected {family}"
        self._checkpoints[path] = _Checkpoint(target, f"{name} ({family})", loaded.summary(), path,
                                              detected=detected)
        self._select_weights(target, path)
        return True

    def _select_weights(self, restorer: str, path: str) -> None:
        if self._restorer.value != restorer:
            self._restorer.value = restorer  # rebuilds the weights list, which now holds ``path``
        else:
            self._build_weights(self._infos[restorer])
        self._updating = True
        try:
            self._weights.value = path
            self._weights_before = path
        finally:
            self._updating = False
        self._show_weights_info()
        self._validate()

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
        else:
            try:
                self._checked_axes(layer)
            except ValueError as exc:
                out.append(str(exc))
        if info is not None:
            if info.weights_policy == "required" and self._weights.value in (None, LOAD):
                out.append(f"'{info.name}' needs weights: choose 'Load checkpoint…'.")
            if info.needs_mask and self._mask.value is None:
                out.append(f"'{info.name}' fills a mask: add a Labels or Shapes layer and choose it as Mask.")
            if self._precision.value != "fp32" and not info.supports_half:
                out.append(f"'{info.name}' supports only fp32 precision.")
            for name, widget in self._option_widgets.items():
                try:
                    _option_value(info.option(name), widget)
                except ValueError as exc:
                    out.append(str(exc))
        for parse, widget in ((parse_tile, self._tile), (parse_overlap, self._overlap),
                              (parse_steps, self._steps), (parse_seed, self._seed)):
            if widget is self._tile or widget is self._overlap or shown(widget):
                try:
                    parse(widget.value)
                except ValueError as exc:
                    out.append(str(exc))
        try:
            tile, overlap = parse_tile(self._tile.value), parse_overlap(self._overlap.value)
            if isinstance(tile, int) and overlap is not None and overlap >= tile:
                out.append("Tile overlap must be smaller than the tile size.")
        except ValueError:
            pass
        if self._precision.value == "fp16" and self._resolved_device() == "cpu":
            out.append("fp16 is not supported on the CPU: use bf16 or fp32.")
        return out

    def _resolved_device(self) -> str:
        from ..engine.device import resolve_device

        try:
            return resolve_device(self._device.value).type
        except ValueError:
            return "?"

    def _checked_axes(self, layer) -> str:
        data = _layer_data(layer)
        axes = validate_axes(self._axes.value or "", tuple(data.shape))
        if layer.rgb and not axes.endswith("C"):
            raise ValueError(f"axes {axes!r}: an RGB layer's last axis is its colour channel, C")
        return axes

    @staticmethod
    def _loop_axes(axes: str, layer) -> str:
        shape = _layer_data(layer).shape
        return "".join(a for a, n in zip(axes, shape) if a in LOOP_AXES and n > 1)

    def _validate(self, *_: Any) -> None:
        layer = self._image.value
        axes_ok = True
        if layer is not None:
            try:
                axes = self._checked_axes(layer)
                self._slice.visible = bool(self._loop_axes(axes, layer))
            except ValueError:
                axes_ok = False
        else:
            self._slice.visible = False
        self._axes.native.setStyleSheet("" if axes_ok else "border: 1px solid #e0685f;")
        if self._running:
            return
        problems = self.problems()
        self._run.enabled = not problems
        self._status.value = problems[0] if problems else ""
        self._status.native.setStyleSheet(ERROR_STYLE if problems else OK_STYLE)

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return self._running

    def make_job(self) -> tuple[Job, dict]:
        """The engine job for the current settings, plus what the output layer needs."""
        problems = self.problems()
        if problems:
            raise ValueError(problems[0])
        layer = self._image.value
        info = self.info
        data = _layer_data(layer)
        axes = self._checked_axes(layer)
        source = SourceLayer.from_layer(layer)
        offsets = None
        index = None
        if self._slice.value and self._loop_axes(axes, layer):
            position = layer.world_to_data(self._viewer.dims.point)
            index, offsets = plane_selection(axes, tuple(data.shape), position)
            data = np.asarray(data[index])  # only this plane is read, also from dask/zarr
        options = {name: _option_value(info.option(name), w) for name, w in self._option_widgets.items()}
        options = {k: v for k, v in options.items() if v is not None}
        weights = self._weights.value if takes_weights(info) and self._weights.value != LOAD else None
        mask = self._mask_array(layer, axes, index) if info.needs_mask else None
        job = Job(
            data=data,
            restorer=info.name,
            axes=axes,
            rgb=bool(layer.rgb),
            weights=weights,
            tile_size=parse_tile(self._tile.value),
            tile_overlap=parse_overlap(self._overlap.value),
            device=self._device.value,
            precision=self._precision.value,
            steps=parse_steps(self._steps.value) if shown(self._steps) else None,
            seed=parse_seed(self._seed.value) if shown(self._seed) else None,
            mask=mask,
            output_dtype="input" if self._dtype.value == "input" else None,
            options=options,
        )
        context = {"source": source, "axes": axes, "offsets": offsets, "layer": layer}
        return job, context

    def _mask_array(self, layer, axes: str, index) -> np.ndarray:
        from napari.layers import Shapes

        mask_layer = self._mask.value
        shape = tuple(_layer_data(layer).shape)
        no_c = tuple(n for a, n in zip(axes, shape) if a != "C")
        if isinstance(mask_layer, Shapes):
            mask = np.asarray(mask_layer.to_labels(labels_shape=no_c))
        else:
            mask = np.asarray(_layer_data(mask_layer))
        if index is not None and mask.shape == no_c:
            mask = mask[tuple(i for a, i in zip(axes, index) if a != "C")]
        return mask

    def run(self, wait: bool = False, timeout: float | None = None) -> Future:
        """Start a restoration with the current settings; the Future resolves to the new layer.

        The Future is resolved after the UI has been reset; it is cancelled when the run is
        cancelled and holds the exception when the run fails. ``wait=True`` (for scripts)
        keeps the Qt event loop going until the run has finished or ``timeout`` seconds passed.
        """
        future = self._start()
        if wait:
            _process_events_until(future.done, timeout)
        return future

    def _start(self) -> Future:
        if self._running:
            raise RuntimeError("A restoration is already running; wait for it or cancel it first.")
        future: Future = Future()
        try:
            job, context = self.make_job()
        except ValueError as exc:
            self._report_error(exc)
            future.set_exception(exc)
            return future
        self._future = future
        self._result = None
        self._cancel_event = threading.Event()
        self._set_running(True)
        if threads_disabled():
            self._run_synchronously(job, context)
            return future
        from napari.qt.threading import create_worker

        worker = create_worker(iter_restoration, job, self._cancel_event, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda outcome: self._on_returned(outcome, context))
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        return future

    def _run_synchronously(self, job: Job, context: dict) -> None:
        import time

        t0 = time.perf_counter()

        def progress(done: float, total: int, message: str) -> None:
            self._on_progress(Progress(done, total, message, time.perf_counter() - t0))

        try:
            outcome = run_restoration(job, progress, self._cancel_event)
        except BaseException as exc:
            self._on_errored(exc)
        else:
            self._on_returned(outcome, context)
        finally:
            self._on_finished()

    def cancel(self, *_: Any) -> None:
        """Ask the running restoration to stop (within one sampling step); adds no layer."""
        if self._running and self._cancel_event is not None:
            self._cancel_event.set()
            self._cancel.enabled = False
            self._status.value = "Cancelling…"

    def _on_run_clicked(self, *_: Any) -> None:
        if not self._running:
            self.run()

    def _set_running(self, running: bool) -> None:
        self._running = running
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

    def _cancelled(self) -> bool:
        return self._cancel_event is not None and self._cancel_event.is_set()

    def _on_progress(self, progress: Progress) -> None:
        if not self._alive():
            return
        self._progress.value = int(round(progress.fraction * 1000))
        if not self._cancelled():
            self._status.value = progress.text()

    def _on_returned(self, outcome: Outcome, context: dict) -> None:
        from napari.layers import Layer

        self.last_outcome = outcome
        if self._cancelled():  # finished just as Cancel was pressed: still add nothing
            self._result = RestorationCancelled("restoration cancelled")
            return
        data, kwargs, _kind = output_layer(
            outcome.data, context["source"], axes=context["axes"], restorer=outcome.restorer,
            factor=outcome.scale, offsets=context["offsets"], provenance=outcome.provenance(),
        )
        layer = self._viewer.add_layer(Layer.create(data, kwargs, "image"))
        self._result = layer
        self._done_message = f"Done in {outcome.seconds:.1f} s: added '{layer.name}'."

    def _on_errored(self, exc: BaseException) -> None:
        self._result = exc
        if not isinstance(exc, RestorationCancelled):
            self._report_error(exc)

    def _on_aborted(self) -> None:  # cancelled from napari's activity dock (worker.quit)
        if self._cancel_event is not None:
            self._cancel_event.set()
        self._result = RestorationCancelled("restoration cancelled")

    def _on_destroyed(self, *_: Any) -> None:
        """The dock was closed and Qt deleted the widget: stop a running restoration."""
        if self._cancel_event is not None:
            self._cancel_event.set()

    def _report_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        message = friendly_error(exc)
        if self._alive():
            self._status.value = message
            self._status.native.setStyleSheet(ERROR_STYLE)
        show_error(f"napari-diffir: {message}")

    def _on_finished(self) -> None:
        """Reset the UI (always, also after errors and cancel), then resolve the Future."""
        result, future = self._result, self._future
        self._worker = None
        self._running = False
        cancelled = isinstance(result, RestorationCancelled) or (result is None and self._cancelled())
        if self._alive():
            self._set_running(False)
            if cancelled:
                self._progress.value = 0
                self._status.value = "Cancelled: no layer was added."
                self._status.native.setStyleSheet(OK_STYLE)
            elif not isinstance(result, BaseException):
                self._progress.value = 1000
                self._status.value = getattr(self, "_done_message", "Done.")
            self._validate_quietly(keep_status=True)
        if future is None:
            return
        if cancelled:
            future.cancel()
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def _validate_quietly(self, keep_status: bool = False) -> None:
        status, style = self._status.value, self._status.native.styleSheet()
        self._validate()
        if keep_status and self._run.enabled:
            self._status.value = status
            self._status.native.setStyleSheet(style)


def _process_events_until(done, timeout: float | None) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = None if timeout is None else time.monotonic() + timeout
    while not done() and (end is None or time.monotonic() < end):
        if app is not None:
            app.processEvents()
        time.sleep(0.01)


def _parse_int(text: Any, words: tuple[str, ...], what: str, minimum: int) -> "int | str | None":
    """``text`` as an int >= ``minimum``, or the first of ``words`` if it is one of them."""
    value = str(text).strip().lower()
    if value in words:
        return value
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{what} must be {' or '.join(repr(w) for w in words)} or a whole number, "
                         f"not {str(text)!r}") from None
    if number < minimum:
        raise ValueError(f"{what} must be at least {minimum}, not {number}")
    return number


def parse_tile(text: Any) -> "int | str | None":
    """'auto' -> 'auto', 'none' -> None (whole image), else an int >= 32."""
    value = _parse_int(text, ("auto", "none"), "Tile size", 32)
    return None if value == "none" else value


def parse_overlap(text: Any) -> int | None:
    """'auto' -> None (the restorer's halo), else an int >= 0."""
    value = _parse_int(text, ("auto",), "Tile overlap", 0)
    return None if value == "auto" else value


def parse_steps(text: Any) -> int | None:
    value = _parse_int(text, ("default",), "Steps", 1)
    return None if value == "default" else value


def parse_seed(text: Any) -> int | None:
    value = _parse_int(text, ("random",), "Seed", 0)
    if isinstance(value, int) and value > INT_LIMIT:
        raise ValueError(f"Seed must be at most {INT_LIMIT}, not {value}")
    return None if value == "random" else value


def _option_widget(opt):
    """A magicgui widget for one restorer option (choices, bool, int, float, or text)."""
    kw = {"label": opt.name.replace("_", " ").capitalize(), "tooltip": opt.help or None, "name": opt.name}
    if opt.choices is not None:
        choices = [(str(c), c) for c in opt.choices]
        if opt.default is None or opt.default not in opt.choices:
            choices.insert(0, ("default", None))  # the restorer decides (e.g. from its checkpoint)
        return ComboBox(choices=choices, value=opt.default if opt.default in opt.choices else None, **kw)
    if opt.type is bool:
        return CheckBox(value=bool(opt.default), **kw)
    if opt.type in (int, float) and opt.default is not None:
        cls = SpinBox if opt.type is int else FloatSpinBox
        lo = opt.min if opt.min is not None else -INT_LIMIT
        hi = opt.max if opt.max is not None else INT_LIMIT
        extra = {} if opt.type is int else {"step": _float_step(opt)}
        return cls(min=lo, max=hi, value=opt.default, **extra, **kw)
    return LineEdit(value="" if opt.default is None else str(opt.default), **kw)


def _float_step(opt) -> float:
    span = (opt.max if opt.max is not None else 10.0) - (opt.min if opt.min is not None else 0.0)
    return float(10 ** np.floor(np.log10(max(span, 1e-6) / 100)))


def _option_value(opt, widget) -> Any:
    """The validated value of an option widget (empty text means the restorer's default)."""
    value = widget.value
    if isinstance(widget, LineEdit):
        if not str(value).strip():
            return None
        value = str(value).strip()
    return opt.validate(value)
