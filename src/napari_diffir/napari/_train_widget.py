"""The Train dock widget: fine-tune or train a denoiser / super-resolution model on your own layers.

A magicgui ``Container`` (scripts and tests set its fields and call :meth:`TrainWidget.train`,
which returns a ``Future``). What the form means is ``_train_form`` (settings, problems, the job;
no Qt); the run is ``_train_worker`` (the CLI's training code in a thread, as a generator) in a
napari ``thread_worker``, so the viewer stays responsive; the live curve is ``_curve`` (data) and
``_curve_view`` (painting). When a run ends the model is in the user models folder, the Restore
widgets in this viewer list it at once, and ``napari-diffir list`` shows it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, LineEdit, ProgressBar, PushButton, Select, SpinBox

from ._curve import CurveData
from ._form import align_labels, compact, mark_invalid, section, text_line
from ._train_form import FAMILIES, SPLITS, STARTS, TASKS, TrainSettings, default_run_dir, problems, suggest_name
from ._worker import threads_disabled

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget"]

BLIND = "blind: every noise level"
D = TrainSettings()


class TrainWidget(Container):
    """Train a model on image layers; the result is a restorer in the Restore widget."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self._cancel_event: threading.Event | None = None
        self._future: Future | None = None
        self._worker = None
        self.running = False
        self.saved: Path | None = None
        """The weights file of the last model this widget saved."""
        self.curve = CurveData()
        self.extra: dict = {}
        """Further TrainJob fields for scripts and tests (e.g. ``{"val_count": 4}``)."""
        self._outcome: Any = None

        def combo(name, label, choices, value, tip):
            return compact(ComboBox(name=name, label=label, choices=[(v, k) for k, v in choices.items()],
                                    value=value, tooltip=tip))

        self._task = combo("task", "Task", {k: v[0] for k, v in TASKS.items()}, D.task,
                           "Denoise clean-enough images with synthetic noise, or learn from low/high-SNR pairs; "
                           "super-resolution learns from your high-resolution images (bicubic-downsampled)")
        self._family = combo("family", "Model", FAMILIES, D.family, "DiffIR: denoise or SR; SRDiff: SR only. From scratch, "
                             "both stages of the model are trained in turn")
        self._start = combo("start", "Start", STARTS, D.start,
                            "Fine-tuning the bundled model is fast and needs little data; from scratch trains "
                            "both stages in turn and needs much more time")
        self._images = Select(name="images", label="Images", choices=self._layer_names,
                              tooltip="Image layers to train on (2-D, Z or T stacks, any type); select several "
                              "with Ctrl/Shift")
        self._low = compact(ComboBox(name="low", label="Low-SNR", choices=self._layer_names, nullable=True))
        self._high = compact(ComboBox(name="high", label="High-SNR", choices=self._layer_names, nullable=True))
        self._noisy = compact(ComboBox(name="noisy", label="Noisy layer", choices=self._layer_names, nullable=True,
                                       tooltip="A noisy acquisition: its noise level is estimated (Gaussian or "
                                       "Poisson–Gaussian) and the clean images are degraded like it"))
        self._noise = LineEdit(name="noise", label="Noise model", value=D.noise,
                               tooltip="gaussian:SIGMA or poisson-gaussian:PEAK,READ in the units of the "
                               "normalised image; empty: blind (the bundled model's range)")
        self._noise.native.setPlaceholderText(BLIND)
        self._split = combo("val_split", "Validation", SPLITS, D.val_split,
                            "Held out from training to measure PSNR: a band of every plane, or whole planes")
        self._patch = SpinBox(name="patch_size", label="Patch size", value=D.patch_size, min=16, max=512, step=8)
        self._budget = FloatSpinBox(name="budget_minutes", label="Time budget (min)", value=D.budget_minutes,
                                    min=0.05, max=10_000, step=1)
        self._max_steps = SpinBox(name="max_steps", label="Max steps", value=D.max_steps, min=1, max=10_000_000)
        self._val_every = SpinBox(name="val_every", label="Validate every", value=D.val_every, min=1, max=100_000)
        self._batch = SpinBox(name="batch_size", label="Batch size", value=D.batch_size, min=1, max=512)
        self._name = LineEdit(name="name", label="Model name", value="")
        self._save_to = LineEdit(name="save_to", label="Save to", value="",
                                 tooltip="Folder for the model; empty: the user models folder, which every "
                                 "frontend lists")
        self._run_dir = LineEdit(name="run_dir", label="Run folder", value="",
                                 tooltip="Checkpoints and logs; the same folder and settings resume a run")
        self._train_button = PushButton(name="train_button", text="Train")
        self._cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self._progress = ProgressBar(name="progress", min=0, max=1000, value=0)
        self._problem = text_line("problem")
        self._problem.native.setStyleSheet("color: #e0685f;")
        self._status = text_line("status")

        self._fields = {w.name: w for w in (self._task, self._family, self._start, self._images, self._low,
                                            self._high, self._noisy, self._noise, self._split, self._patch,
                                            self._budget, self._max_steps, self._val_every, self._batch,
                                            self._name, self._save_to, self._run_dir)}
        self._sections = (
            section("what", [self._task, self._family, self._start]),
            section("data", [self._images, self._low, self._high, self._noisy, self._noise, self._split]),
            section("how", [self._patch, self._budget, self._max_steps, self._val_every, self._batch]),
            section("where", [self._name, self._save_to, self._run_dir]),
        )
        buttons = Container(name="buttons", layout="horizontal", labels=False,
                            widgets=[self._train_button, self._cancel_button])
        buttons.margins = (0, 0, 0, 0)
        self.extend([*self._sections, self._problem, buttons, self._progress, self._status])
        from ._curve_view import CurveView

        self.curve_view = CurveView(self.curve)
        self.native.layout().addWidget(self.curve_view)
        self._progress.native.setTextVisible(False)

        for w in self._fields.values():
            w.changed.connect(self._validate)
        self._noisy.changed.connect(self._estimate_noise)
        for w in (self._task, self._family):
            w.changed.connect(self._suggest_name)
            w.changed.connect(self._use_recipe_patch)
        self._train_button.changed.connect(lambda *_: self.train())
        self._cancel_button.changed.connect(lambda *_: self.cancel())
        self._events = [getattr(viewer.layers.events, n) for n in ("inserted", "removed", "renamed")]
        for e in self._events:
            e.connect(self._on_layers_changed)
        self.native.destroyed.connect(self._on_destroyed)
        self._on_layers_changed()
        self._suggest_name()
        align_labels(self._sections)

    def _on_destroyed(self, *_: Any) -> None:
        """The dock was closed: stop a running training (it checkpoints) and the layer events."""
        if self._cancel_event is not None:
            self._cancel_event.set()
        for e in self._events:
            try:
                e.disconnect(self._on_layers_changed)
            except (TypeError, ValueError, RuntimeError):
                pass

    # ------------------------------------------------------------------ form

    def _layer_names(self, *_: Any) -> list[str]:
        from napari.layers import Image

        return [layer.name for layer in self._viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, *_: Any) -> None:
        self.reset_choices()
        self._validate()

    def _suggest_name(self, *_: Any) -> None:
        from ..registry import list_restorers

        if self._name.value and not self._name.value.startswith("my-"):
            return  # the user's own name stays
        self._name.value = suggest_name(self.settings(), {i.name for i in list_restorers()})

    def _use_recipe_patch(self, *_: Any) -> None:
        """The bundled recipe's patch size for this model and task (48 denoise, 128 DiffIR x4, ...)."""
        from ..training.session import recipe_patch

        s = self.settings()
        if s.family == "srdiff" and s.scale == 1:
            return  # a problem shown at the Model field; nothing to suggest
        self._patch.value = recipe_patch(s.family, s.scale)

    def settings(self) -> TrainSettings:
        """The form's values."""
        return TrainSettings(
            task=self._task.value, family=self._family.value, start=self._start.value,
            images=tuple(self._images.value or ()), low=self._low.value, high=self._high.value,
            noise=self._noise.value.strip(), val_split=self._split.value, patch_size=int(self._patch.value),
            budget_minutes=float(self._budget.value), max_steps=int(self._max_steps.value),
            val_every=int(self._val_every.value), batch_size=int(self._batch.value), name=self._name.value.strip(),
            save_to=self._save_to.value.strip(), run_dir=self._run_dir.value.strip(), extra=dict(self.extra))

    def _layers(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        from napari.layers import Image

        return {layer.name: (tuple(layer.data[0].shape if layer.multiscale else layer.data.shape), bool(layer.rgb))
                for layer in self._viewer.layers if isinstance(layer, Image)}

    def problems(self) -> dict[str, str]:
        """What stops a run now, per field (the training code's own checks)."""
        return problems(self.settings(), self._layers())

    def _validate(self, *_: Any) -> None:
        s = self.settings()
        paired, denoise = s.paired, s.task == "denoise"
        for w, shown in ((self._images, not paired), (self._low, paired), (self._high, paired),
                         (self._noisy, denoise), (self._noise, denoise)):
            w.visible = shown
        self._run_dir.native.setPlaceholderText(str(default_run_dir(s.name)))
        if self.running:
            return
        found = self.problems()
        for name, w in self._fields.items():
            mark_invalid(w, name in found)
        self._problem.value = "; ".join(found.values())
        self._problem.visible = bool(found)
        self._train_button.enabled = not found

    def _estimate_noise(self, *_: Any) -> None:
        """Fill the noise model from the chosen noisy layer."""
        from ..training.data import TrainingDataError
        from ._train_form import noisy_planes

        name = self._noisy.value
        if not name:
            return
        from ..training.noise_model import estimate_noise_of

        layer = self._viewer.layers[name]
        try:
            model = estimate_noise_of(noisy_planes(layer.data[0] if layer.multiscale else layer.data, layer.rgb, name))
        except TrainingDataError as exc:
            self._status.value = f"Noise of {name!r}: {exc}"
            return
        self._noise.value = model.spec()
        self._status.value = f"Noise of {name!r}: {model.describe()}"

    # ------------------------------------------------------------------ run

    def train(self) -> Future:
        """Start (or resume) training with the form's settings; the Future gives the saved path."""
        from ..training.session import layer_description

        future: Future = Future()
        found = self.problems()
        if self.running or found:
            future.set_exception(ValueError("; ".join(found.values()) or "A training run is already going"))
            return future
        s = self.settings()
        used = [s.low, s.high] if s.paired else list(s.images)
        arrays = {}
        for n in used:
            layer = self._viewer.layers[n]
            arrays[n] = layer.data[0] if layer.multiscale else layer.data
        description = {"task": TASKS[s.task][0], "family": s.family, "start": s.start,
                       "layers": layer_description(list(arrays.items())), "noise": s.noise or None,
                       "val_split": s.val_split}
        self._future, self.running = future, True
        self._cancel_event = threading.Event()
        self.curve.clear()
        self.curve_view.update()
        self._set_running(True)
        self._status.value = "Reading the layers and checking the data…"
        self._status.native.setStyleSheet("")
        from ._train_worker import iter_training

        gen = iter_training(s, arrays, description, self._cancel_event)
        if threads_disabled():
            try:
                while True:
                    self._on_yielded(next(gen))
            except StopIteration as stop:
                self._on_returned(stop.value)
            except BaseException as exc:  # noqa: BLE001 - shown in the dock, handed to the Future
                self._on_errored(exc)
            self._on_finished()
            return future
        from napari.qt.threading import create_worker

        worker = create_worker(lambda: (yield from gen), _ignore_errors=True)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        return future

    def cancel(self) -> None:
        """Stop after the current step; the checkpoint is kept and Train (Resume) continues it."""
        if self._cancel_event is not None:
            self._cancel_event.set()
            self._status.value = "Cancelling after this step…"

    def _set_running(self, running: bool) -> None:
        self._train_button.enabled = not running
        self._cancel_button.enabled = running
        for box in self._sections:
            box.enabled = not running

    def _on_yielded(self, item: Any) -> None:
        from ._train_worker import fraction_done, progress_text

        if isinstance(item, str):
            return  # the loop's log lines: the curve and the status line say it better
        if self.curve.add(item):
            self.curve_view.update()
        self._progress.value = int(1000 * fraction_done(item))
        if not (self._cancel_event and self._cancel_event.is_set()):
            self._status.value = progress_text(item)

    def _on_returned(self, path: Path) -> None:
        import json

        self.saved = Path(path)
        card = json.loads(self.saved.with_suffix(".json").read_text())
        best = (card.get("validation") or {}).get("best") or {}
        self._refresh_restore_widgets()
        self._progress.value = 1000
        self._status.value = (f"Saved {card['name']!r} ({card['training']['steps']} steps, best validation PSNR "
                              f"{best.get('psnr', float('nan')):.2f} dB) to {self.saved}. It is in the Restore "
                              "widget's list now.")
        self._outcome = self.saved
        self._train_button.text = "Train"

    def _on_errored(self, exc: BaseException) -> None:
        from ..training.loop import TrainingCancelled

        self._outcome = exc
        if isinstance(exc, TrainingCancelled):
            self._status.value = (f"Cancelled at step {exc.step}; the checkpoint is kept in {exc.out_dir}. "
                                  "Press Resume (same settings) to continue.")
            self._train_button.text = "Resume"
        else:
            self._status.value = f"Training failed: {exc}"
            self._status.native.setStyleSheet("color: #e0685f;")

    def _on_finished(self, *_: Any) -> None:
        self.running = False
        self._worker = None
        self._set_running(False)
        self._validate()
        future, outcome = self._future, self._outcome
        self._future, self._outcome = None, None
        if future is None:
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _refresh_restore_widgets(self) -> None:
        """Every Restore widget in this viewer lists the new model now."""
        try:
            docked = list(self._viewer.window.dock_widgets.values())
        except AttributeError:  # a viewer without a window (headless scripts)
            return
        for widget in docked:
            if hasattr(widget, "refresh_restorers"):
                widget.refresh_restorers()
