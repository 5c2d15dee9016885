"""Why Run is disabled: the form's settings checked by the engine, shown next to each field at fault.

Mixed into :class:`~._widget.RestoreWidget`. The settings are parsed with the engine's
``from_text`` and checked with its ``check()`` (metadata only, so this runs on every keystroke);
each problem frames its field in red and says why in the line under it.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Label

from ..engine.check import check
from ..engine.settings import Problem, RestoreSettings, SettingsError, from_text
from ..restorer import RestorerInfo
from ._catalogue import weights_problem, widget_message
from ._form import OK_STYLE, mark_invalid, shown
from ._inputs import ambiguous_axes, checked_axes, layer_data, loop_axes, mask_shape, rgb_problem
from ._options import option_value
from ._weights import ERROR_STYLE

__all__ = ["Validation"]

LABELS = {"tile_size": "Tile size", "tile_overlap": "Tile overlap", "steps": "Steps", "seed": "Seed"}
"""How the text settings are named in the form (in messages)."""
ADVANCED_FIELDS = ("seed", "tile_size", "tile_overlap", "device", "precision", "output_dtype")


class Validation:
    """The form's problems, from the same ``check()`` the engine runs, and how they are shown."""

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
            output_dtype="input" if self._dtype.value == "input" else None, tta=bool(self._tta.value),
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


    def _validate_quietly(self, keep_status: bool = False) -> None:
        status, style = self._status.value, self._status.native.styleSheet()
        self._validate()
        if keep_status and self._run.enabled:
            self._status.value = status
            self._status.native.setStyleSheet(style)
