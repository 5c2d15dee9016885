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
from ..engine.settings import DEFAULTS, Problem, RestoreSettings, SettingsError, from_text
from ..restorer import RestorerInfo
from ._catalogue import (
    HEADER,
    LOAD,
    default_steps,
    default_steps_text,
    describe,
    fixed_scale,
    option_words,
    plain_description,
    restorer_choices,
    takes_weights,
    weights_problem,
    widget_message,
)
from ._device import probe_devices
from ._form import align_labels, compact, mark_invalid, section, text_line
from ._inputs import ambiguous_axes, checked_axes, layer_data, loop_axes, mask_array, mask_shape, rgb_problem
from ._layers import SourceLayer, output_layer, plane_selection, suggest_axes
from ._options import option_value, option_widget
from ._runner import Runner, process_events_until
from ._weights import ERROR_STYLE, WeightsPicker
from ._worker import LOADING, Job, Progress, friendly_error, threads_disabled

if TYPE_CHECKING:
    import napari

    from ..engine.result import Result

__all__ = ["RestoreWidget"]

OK_STYLE = ""
LABELS = {"tile_size": "Tile size", "tile_overlap": "Tile overlap", "steps": "Steps", "seed": "Seed"}
"""How the text settings are named in the form (in messages)."""
DEFAULT_TEXT = "restorer's default"
ADVANCED_CLOSED = "▸ Advanced"
ADVANCED_OPEN = "▾ Advanced"
HINTED = ("steps", "mask", "seed", "tile_size", "tile_overlap", "precision", "output_dtype")
"""Fields with a message line under them (besides Axes and Weights, which have their own)."""
ADVANCED_FIELDS = ("seed", "tile_size", "tile_overlap", "device", "precision", "output_dtype")
RUN_TEXT_CHARS = 28
"""How much of the layer's name the Run button shows ("Run on 'noisy nuclei'")."""


def shown(widget) -> bool:
    """Whether a field is part of the form now (``visible`` is False until the dock is shown)."""
    return not widget.native.isHidden()


def _unwrap(obj: Any) -> Any:
    """The napari object behind a ``PublicOnlyProxy`` (plugins may be handed proxies)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Any, b: Any) -> bool:
    return _unwrap(a) is _unwrap(b)


def _key(layer: Any) -> int:
    return id(_unwrap(layer))


class RestoreWidget(Container):
    """Restore the selected image layer with any registered restorer; output goes to a new layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self._infos: dict[str, RestorerInfo] = {}
        self._option_widgets: dict[str, Any] = {}
        self._option_hints: dict[str, Label] = {}
        self._updating = False
        self._was_docked = False
        self._adding_output = False
        self._dtype_chosen: dict[int, str] = {}
        """Output types the user chose, per layer (``id`` of the layer)."""
        self._setting_dtype = False
        self._device_type: str | None = None
        """The resolved type of 'auto' once torch has been imported in the background."""
        self._done_message = "Done."
        self._runner = Runner(progress=self._on_progress, returned=self._on_returned,
                              failed=self._report_error, finished=self._on_finished)

        self._image = compact(ComboBox(name="image", label="Image", choices=self._image_choices,
                                       tooltip="The image layer to restore; follows the layer list's selection"))
        self._restorer = compact(ComboBox(name="restorer", label="Restorer"), tooltip_follows=False)
        self._about = text_line("about")
        self._weights = compact(ComboBox(name="weights", label="Weights"))
        self._weights_info = text_line("weights_info")
        self._options = Container(name="restorer_options", labels=True)
        self._options.margins = (0, 0, 0, 0)
        self._steps = LineEdit(name="steps", label="Steps", value="",
                               tooltip="Sampling steps: more is slower and usually a little sharper; "
                               "leave empty for the restorer's default")
        self._steps.native.setPlaceholderText(DEFAULT_TEXT)
        self._mask = compact(ComboBox(name="mask", label="Mask", choices=self._mask_choices, nullable=True,
                                      tooltip="Labels or Shapes layer: the pixels to fill (> 0)"))
        self._axes = LineEdit(name="axes", label="Axes", tooltip="One letter per dimension from S T Z C Y X "
                              "(S, T, Z are restored plane by plane, C is the channel axis)")
        self._axes_hint = text_line("axes_hint")
        self._axes_hint.native.linkActivated.connect(self._use_axes)
        self._slice = CheckBox(name="current_slice", text="Current slice only", tooltip="Restore only the plane on screen")
        self._seed = LineEdit(name="seed", label="Seed", value="random",
                              tooltip="Same seed, same result; 'random' draws one and records it in the output")
        self._tile = LineEdit(name="tile_size", label="Tile size", value=DEFAULTS.tile_size,
                              tooltip="Tile side in input pixels: 'auto' (from the model and free "
                              "memory), 'none' (whole image at once) or a number >= 32")
        self._overlap = LineEdit(name="tile_overlap", label="Tile overlap", value="auto",
                                 tooltip="Overlap between tiles in pixels: 'auto' (the model's halo) or a number")
        self._device = compact(ComboBox(name="device", label="Device", choices=["auto", "cpu"], value=DEFAULTS.device,
                                        tooltip="auto: the first GPU torch can use, else the CPU"))
        self._precision = ComboBox(name="precision", label="Precision", choices=["fp32", "bf16", "fp16"],
                                   value=DEFAULTS.precision,
                                   tooltip="bf16/fp16: faster on recent hardware, slightly less exact")
        self._dtype = ComboBox(name="output_type", label="Output type",
                               choices=[("float32", "float32"), ("same as input", "input")], value="float32",
                               tooltip="float32 keeps every value; 'same as input' rounds and clips to the "
                               "input's type (RGB layers default to it so they keep their colours)")
        self._device_info = text_line("device_info")
        self._advanced_button = PushButton(name="advanced_button", text=ADVANCED_CLOSED,
                                           tooltip="Seed, tiles, device, precision and output type")
        self._run = PushButton(name="run_button", text="Run")
        self._cancel = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self._progress = ProgressBar(name="progress", min=0, max=1000, value=0)
        self._status = text_line("status")
        self._hints = {name: text_line(f"{name}_hint") for name in HINTED}
        self._hints["axes"] = self._axes_hint

        self._sections = (
            section("choose", [self._image, self._restorer]),
            section("model", [self._weights, self._weights_info]),
            self._options,
            section("image_settings", [self._steps, self._hints["steps"], self._mask, self._hints["mask"],
                                       self._axes, self._axes_hint, self._slice]),
            section("advanced", [self._seed, self._hints["seed"], self._tile, self._hints["tile_size"],
                                 self._overlap, self._hints["tile_overlap"], self._device,
                                 self._precision, self._hints["precision"], self._dtype,
                                 self._hints["output_dtype"]], visible=False),
        )
        self._advanced = self._sections[-1]
        buttons = Container(name="buttons", layout="horizontal", labels=False,
                            widgets=[self._run, self._cancel])
        buttons.margins = (0, 0, 0, 0)
        s = self._sections
        self._groups = (*self._sections, buttons)
        self.extend([s[0], self._about, s[1], s[2], s[3], self._advanced_button, s[4],
                     self._device_info, buttons, self._progress, self._status])
        self._device_info.visible = False
        for hint in self._hints.values():
            hint.visible = False
            hint.native.setStyleSheet(ERROR_STYLE)
        self._advanced_button.native.setCheckable(True)
        self._advanced_button.native.setFlat(True)
        self._advanced_button.native.setStyleSheet("text-align: left;")
        self._advanced_button.native.toggled.connect(self.show_advanced)
        self._progress.native.setTextVisible(False)

        self._picker = WeightsPicker(self._weights, self._weights_info, load_requested=self._load_from_dialog,
                                     select=self._select_restorer, changed=self._on_weights_changed)
        self._image.changed.connect(self._on_image_changed)
        self._restorer.changed.connect(self._on_restorer_changed)
        self._dtype.changed.connect(self._on_dtype_changed)
        for w in (self._axes, self._mask, self._slice, self._tile, self._overlap, self._device,
                  self._precision, self._steps, self._seed):
            w.changed.connect(self._validate)
        self._run.changed.connect(self._on_run_clicked)
        self._cancel.changed.connect(self.cancel)
        self._viewer_events = [(getattr(viewer.layers.events, name), self._on_layers_changed)
                               for name in ("inserted", "removed", "moved", "reordered")]
        self._viewer_events.append((viewer.layers.selection.events.active, self._on_active_layer))
        # napari keeps a docked widget's pickers in sync through these; closing must undo them too
        self._viewer_events += [(getattr(viewer.layers.events, name), self.reset_choices)
                                for name in ("inserted", "removed", "reordered", "renamed")]
        for emitter, callback in self._viewer_events:
            if callback != self.reset_choices:  # napari connects it when it docks the widget
                emitter.connect(callback)
        self.native.destroyed.connect(self._on_destroyed)
        self.native_parent_changed.connect(self._on_parent_changed)

        self.refresh_restorers()
        self._image.reset_choices()
        self._mask.reset_choices()
        self._on_active_layer()
        self._on_image_changed()
        align_labels(self._sections)
        self._probe_devices()

    def __getattr__(self, name: str) -> Any:
        """Fields by their public names (``widget.tile_size``), also inside the form's sections."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            for box in self.__dict__.get("_groups", ()):
                for widget in box:
                    if widget.name == name:
                        return widget
            raise

    def show_advanced(self, visible: bool = True) -> None:
        """Open or close the "Advanced" section (seed, tiles, device, precision, output type)."""
        visible = bool(visible)
        self._advanced.visible = visible
        self._device_info.visible = visible
        align_labels(self._sections)
        self._advanced_button.text = ADVANCED_OPEN if visible else ADVANCED_CLOSED
        if self._advanced_button.native.isChecked() != visible:
            self._advanced_button.native.setChecked(visible)

    def _probe_devices(self) -> None:
        """List the devices torch sees without blocking the viewer (importing torch takes seconds)."""
        self._device_info.value = "Checking devices…"
        if threads_disabled():
            self._on_devices(probe_devices())
            return
        from napari.qt.threading import create_worker

        worker = create_worker(probe_devices, _ignore_errors=True)
        worker.returned.connect(self._on_devices)
        worker.errored.connect(lambda exc: self._on_devices((["auto", "cpu"], f"Torch: {exc}", "#e5a03d", "cpu")))
        self._device_worker = worker  # keep a reference until it is done
        worker.start()

    def _on_devices(self, found: tuple) -> None:
        if not self._alive():
            return
        choices, text, colour, auto_type = found
        current = self._device.value
        self._device.choices = choices
        self._device.value = current if current in choices else DEFAULTS.device
        self._device_type = auto_type
        self._device_info.value = text
        self._device_info.tooltip = text
        self._device_info.native.setStyleSheet(f"color: {colour};")
        self._validate()

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

    def _on_active_layer(self, event=None) -> None:
        """The layer selected in the layer list becomes the Image (when it is an image layer)."""
        from napari.layers import Image

        active = self._viewer.layers.selection.active
        if self._adding_output or not isinstance(_unwrap(active), Image) or _same(active, self._image.value):
            return  # napari selects the output it adds: the Image stays on the input
        for choice in self._image.choices:
            if _same(choice, active):
                self._image.value = choice
                return

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
            # each layer has its own output type: the user's choice for it, else its default
            default = "input" if layer.rgb else "float32"
            self._setting_dtype = True
            try:
                self._dtype.value = self._dtype_chosen.get(_key(layer), default)
            finally:
                self._setting_dtype = False
        self._show_target()
        self._validate()

    def _on_dtype_changed(self, *_: Any) -> None:
        layer = self._image.value
        if not self._setting_dtype and layer is not None:
            self._dtype_chosen[_key(layer)] = self._dtype.value
        self._validate()

    def _show_target(self) -> None:
        """The Run button names the layer it will restore."""
        layer = self._image.value
        if layer is None:
            self._run.text = "Run"
            self._run.tooltip = "Add or open an image layer to restore"
            return
        name = layer.name if len(layer.name) <= RUN_TEXT_CHARS else layer.name[: RUN_TEXT_CHARS - 1] + "…"
        data = layer_data(layer)
        self._run.text = f"Run on '{name}'"
        self._run.tooltip = f"Restore '{layer.name}' ({' × '.join(map(str, data.shape))}, {data.dtype})"

    def _use_axes(self, axes: str) -> None:
        self._axes.value = axes

    def _on_restorer_changed(self, *_: Any) -> None:
        if self._updating:
            return
        info = self.info
        if info is None:
            if isinstance(self._restorer.value, str) and self._restorer.value.startswith(HEADER):
                self._select_first_after_header()
            return
        self._about.value = describe(info)
        self._about.tooltip = plain_description(info)[1]
        self._restorer.tooltip = plain_description(info)[1]
        self._build_options(info)
        self._picker.show(info)
        stoch = info.stochastic
        self._steps.visible = info.sampling_steps and info.option("steps") is None
        self._seed.visible = stoch and info.option("seed") is None
        self._mask.visible = info.needs_mask
        self._fit_options()
        self._validate()

    def _select_first_after_header(self) -> None:
        """A group header got selected (only possible from code): select the first restorer."""
        names = [c for c in self._restorer.choices if not str(c).startswith(HEADER)]
        if names:
            self._restorer.value = names[0]

    def _build_options(self, info: RestorerInfo) -> None:
        self._options.clear()
        self._option_widgets = {}
        self._option_hints = {}
        for opt in info.options:
            widget = option_widget(opt, *option_words(opt))
            widget.changed.connect(self._on_option_changed)
            hint = text_line(f"{opt.name}_hint")
            hint.native.setStyleSheet(ERROR_STYLE)
            self._option_widgets[opt.name] = widget
            self._option_hints[opt.name] = hint
            self._options.extend([widget, hint])
            hint.visible = False
        self._options.visible = bool(info.options)
        align_labels(self._sections)

    def _on_option_changed(self, *_: Any) -> None:
        self._fit_options()
        self._validate()

    def _on_weights_changed(self) -> None:
        self._fit_options()
        self._validate()

    def _checkpoint(self):
        value = self._weights.value
        return self._picker.checkpoints.get(value) if isinstance(value, str) else None

    def _fit_options(self) -> None:
        """Offer only what the chosen model can do, and say what an empty field means.

        A scale fixed by the weights (a bundled model, a loaded checkpoint) is not offered; Eta
        shows only for the sampler that uses it; Steps shows the number its default stands for.
        """
        info = self.info
        if info is None:
            return
        widgets = self._option_widgets
        if "scale" in widgets and takes_weights(info):
            fixed = fixed_scale(info, self._checkpoint())
            widgets["scale"].visible = fixed is None
            self._option_hints["scale"].visible = False
            if fixed is not None:
                widgets["scale"].value = None if None in widgets["scale"].choices else fixed
        sampler = widgets["sampler"].value if "sampler" in widgets else None
        if "eta" in widgets:
            widgets["eta"].visible = sampler in (None, "ddim")
        if "steps" in widgets and isinstance(widgets["steps"], LineEdit):
            widgets["steps"].native.setPlaceholderText(default_steps_text(sampler, self._timesteps()))

    def _timesteps(self) -> int | None:
        """The trained diffusion steps of the chosen weights, when known (SRDiff's ddpm default)."""
        ckpt = self._checkpoint()
        if ckpt is not None:
            return ckpt.timesteps
        info = self.info
        if info is not None and self._weights.value is None:
            from ._catalogue import bundled_timesteps

            return bundled_timesteps(info)
        return None

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

        What was detected is shown under the weights picker; a file that is not a usable
        checkpoint (or a DiffIR stage-1 one) leaves the selection unchanged and says why.
        """
        return self._picker.load(os.fspath(path), self.info, self._infos)

    # ------------------------------------------------------------------ validation

    def problems(self) -> list[str]:
        """Why Run is disabled right now (empty when everything is valid)."""
        return [p.message for p in self._problems()]

    def _problems(self) -> list[Problem]:
        out: list[Problem] = []
        info = self.info
        layer = self._image.value
        if info is None:
            out.append(Problem("restorer", "No restorer is registered."))
        if layer is None:
            out.append(Problem("data", "Add or open an image layer to restore."))
        elif rgb := rgb_problem(layer, self._axes.value):
            out.append(Problem("axes", rgb))
        if info is not None:
            weights = weights_problem(info, self._weights.value)
            if weights:
                out.append(Problem("weights", weights))
            for name, widget in self._option_widgets.items():
                try:
                    option_value(info.option(name), widget)
                except ValueError as exc:
                    out.append(Problem(f"option:{name}", str(exc)))
        try:
            settings = self._settings(layer)
        except SettingsError as exc:
            return out + list(exc.problems)
        if layer is not None:
            data = layer_data(layer)
            for problem in check(info, data.shape, data.dtype, settings, device_type=self._resolved_device(),
                                 mask_shape=self._mask_shape(layer, info)):
                if problem.field == "mask" and self._mask.value is None:  # say which field to set
                    out.append(Problem("mask", f"'{info.name}' fills a mask: add a Labels or Shapes layer "
                                       "and choose it as Mask."))
                else:
                    out.append(Problem(problem.field, widget_message(str(problem))))
        return out

    def _settings(self, layer) -> RestoreSettings:
        """The settings the form holds (without weights and options, which make_job adds)."""
        return from_text(
            labels=LABELS, axes=self._axes.value or "", rgb=None if layer is None else bool(layer.rgb),
            tile_size=self._tile.value, tile_overlap=self._overlap.value, device=self._device.value,
            precision=self._precision.value,
            steps=(self._steps.value.strip() or "default") if shown(self._steps) else None,
            seed=self._seed.value if shown(self._seed) else None,
            output_dtype="input" if self._dtype.value == "input" else None,
        )

    def _resolved_device(self) -> str:
        """The device type the run would use ('?' while torch is still being imported for 'auto')."""
        value = str(self._device.value)
        if value == "auto":
            return self._device_type or "?"
        return value.split(":")[0]

    def _mask_shape(self, layer, info: RestorerInfo | None) -> tuple[int, ...] | None:
        needed = info is not None and info.needs_mask
        return mask_shape(layer, self._mask.value, self._axes.value) if needed else None

    def _field_widgets(self) -> dict[str, tuple[Any, Label | None]]:
        """Each checked field's widget and the message line under it."""
        fields = {
            "axes": (self._axes, self._axes_hint), "weights": (self._weights, None),
            "steps": (self._steps, self._hints["steps"]), "mask": (self._mask, self._hints["mask"]),
            "seed": (self._seed, self._hints["seed"]), "tile_size": (self._tile, self._hints["tile_size"]),
            "tile_overlap": (self._overlap, self._hints["tile_overlap"]),
            "precision": (self._precision, self._hints["precision"]),
            "output_dtype": (self._dtype, self._hints["output_dtype"]),
        }
        if "steps" in self._option_widgets and not shown(self._steps):
            fields["steps"] = (self._option_widgets["steps"], self._option_hints["steps"])
        for name, widget in self._option_widgets.items():
            fields[f"option:{name}"] = (widget, self._option_hints[name])
        return fields

    def _validate(self, *_: Any) -> None:
        layer = self._image.value
        if layer is not None:
            try:
                axes = checked_axes(layer, self._axes.value)
                self._slice.visible = bool(loop_axes(axes, layer))
            except ValueError:
                pass
        else:
            self._slice.visible = False
        if self.running:
            return
        problems = self._problems()
        self._show_problems(problems)
        self._run.enabled = not problems
        self._status.value = problems[0].message if problems else ""
        self._status.native.setStyleSheet(ERROR_STYLE if problems else OK_STYLE)

    def _show_problems(self, problems: list[Problem]) -> None:
        """A red frame and the message next to every field at fault; the axes hint when ambiguous."""
        by_field: dict[str, str] = {}
        for p in problems:
            by_field.setdefault(p.field, p.message)
        for name, (widget, hint) in self._field_widgets().items():
            message = by_field.get(name)
            mark_invalid(widget, message is not None)
            if hint is not None:
                hint.value = message or ""
                hint.visible = message is not None
                hint.native.setStyleSheet(ERROR_STYLE)
        if any(f in by_field for f in ADVANCED_FIELDS):
            self.show_advanced(True)  # never hide why Run is disabled
        layer = self._image.value
        if "axes" not in by_field and layer is not None:
            offer = ambiguous_axes(layer, self._axes.value)
            if offer:
                self._axes_hint.value = offer
                self._axes_hint.native.setStyleSheet("")
                self._axes_hint.visible = True

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

    def _on_destroyed(self, *_: Any) -> None:
        """The dock was closed and Qt deleted the widget: stop a running restoration."""
        self.close_down()

    def _on_parent_changed(self, parent: Any = None) -> None:
        """The dock's × takes the widget out of its dock (without deleting it): close down."""
        if parent is None and self._was_docked:
            self.close_down()
        elif parent is not None:
            from qtpy.QtCore import QTimer

            self._was_docked = True
            QTimer.singleShot(0, lambda: self._alive() and align_labels(self._sections))

    def close_down(self) -> None:
        """Cancel a running restoration (it adds no layer) and stop following the viewer."""
        self._runner.cancel()
        for emitter, callback in self._viewer_events:
            try:
                emitter.disconnect(callback)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._viewer_events = []

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

    def _validate_quietly(self, keep_status: bool = False) -> None:
        status, style = self._status.value, self._status.native.styleSheet()
        self._validate()
        if keep_status and self._run.enabled:
            self._status.value = status
            self._status.native.setStyleSheet(style)
