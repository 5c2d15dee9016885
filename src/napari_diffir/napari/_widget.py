"""The Restore dock widget: pick an image, a restorer and its weights, run it in the background.

A magicgui ``Container`` (so scripts and tests can set every field and call :meth:`RestoreWidget.run`).
This module lays the form out, follows the viewer and the dock, and lists the devices; each
other job is a mixin of its own module: ``_layer_choice`` (the Image and Mask pickers),
``_restorer_choice`` (the restorer menu, its options and weights), ``_validation`` (the engine's
``check()`` on every change, shown at the fields at fault), ``_run_controls`` (Run, Cancel,
progress and the output layer) and ``_export_action`` (Export to bioimage.io). Below them:
``_catalogue`` (restorer menu, weights choices; no Qt), ``_weights`` (the weights field),
``_package`` (a bioimage.io package as weights), ``_options`` (one widget per restorer option),
``_device`` (device list and indicator), ``_form`` (Qt layout details), ``_inputs`` (layers to
arrays, axes and masks), ``_layers`` (the output layer), ``_runner`` (threads, cancel, the
Future) and ``_worker`` (the job run off the main thread).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton

from ..engine.settings import DEFAULTS, PRECISIONS
from ..restorer import RestorerInfo
from ._device import probe_devices
from ._export_action import ExportAction
from ._form import align_labels, compact, section, text_line
from ._layer_choice import LayerChoice
from ._restorer_choice import RestorerChoice
from ._run_controls import RunControls
from ._runner import Runner
from ._validation import Validation
from ._weights import ERROR_STYLE, WeightsPicker
from ._worker import threads_disabled

if TYPE_CHECKING:
    import napari

__all__ = ["RestoreWidget"]

DEFAULT_TEXT = "restorer's default"
ADVANCED_CLOSED = "▸ Advanced"
ADVANCED_OPEN = "▾ Advanced"
HINTED = ("steps", "mask", "seed", "tile_size", "tile_overlap", "precision", "output_dtype")
"""Fields with a message line under them (besides Axes and Weights, which have their own)."""


class RestoreWidget(LayerChoice, RestorerChoice, Validation, RunControls, ExportAction, Container):
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
        self._precision = ComboBox(name="precision", label="Precision", choices=list(PRECISIONS),
                                   value=DEFAULTS.precision,
                                   tooltip="bf16/fp16: faster on recent hardware, slightly less exact; "
                                           "auto: bf16 where the CPU or GPU has it natively, else fp32")
        self._dtype = ComboBox(name="output_type", label="Output type",
                               choices=[("float32", "float32"), ("same as input", "input")], value="float32",
                               tooltip="float32 keeps every value; 'same as input' rounds and clips to the "
                               "input's type (RGB layers default to it so they keep their colours)")
        self._tta = CheckBox(name="tta", text="Average 8 flips/turns (8x slower)", value=DEFAULTS.tta,
                             tooltip="Test-time augmentation: restore the image flipped and turned eight ways "
                                     "and average the results turned back; a little less error, 8x the time")
        self._device_info = text_line("device_info")
        self._advanced_button = PushButton(name="advanced_button", text=ADVANCED_CLOSED,
                                           tooltip="Seed, tiles, device, precision, output type and "
                                                   "test-time augmentation")
        self._run = PushButton(name="run_button", text="Run")
        self._cancel = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self._export = PushButton(name="export_button", text="Export to bioimage.io…",
                                  tooltip="Save the selected model (and weights) as a bioimage.io package")
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
                                 self._hints["output_dtype"], self._tta], visible=False),
        )
        self._advanced = self._sections[-1]
        buttons = Container(name="buttons", layout="horizontal", labels=False,
                            widgets=[self._run, self._cancel])
        buttons.margins = (0, 0, 0, 0)
        s = self._sections
        self._groups = (*self._sections, buttons)
        self.extend([s[0], self._about, s[1], s[2], s[3], self._advanced_button, s[4],
                     self._device_info, buttons, self._progress, self._status, self._export])
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
        self._export.changed.connect(self._on_export_clicked)
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

    def reset_choices(self, *_: Any) -> None:
        """Called by napari when layers change; also picks up newly registered restorers.

        Only the layer pickers and the restorer list are refreshed: the restorer's option
        widgets keep what the user set.
        """
        self._on_layers_changed()
        self.refresh_restorers()

    def _alive(self) -> bool:
        """False once the dock has been closed and Qt deleted the widget (the run may still end)."""
        from qtpy import sip

        try:
            return not sip.isdeleted(self.native)
        except (TypeError, RuntimeError):
            return False

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
