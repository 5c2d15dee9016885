"""The Weights field of the Restore widget and the line under it.

It lists the chosen restorer's bundled weights, the checkpoints loaded in this session that it
runs, and "Load checkpoint…"; a loaded file's detected architecture is shown under the picker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Label

from ..restorer import RestorerInfo
from ._catalogue import LOAD, Checkpoint, inspect_checkpoint, takes_weights, weights_choices

__all__ = ["ERROR_STYLE", "WeightsPicker"]

ERROR_STYLE = "color: #e0685f;"
"""How the widget shows an error message."""


class WeightsPicker:
    """Keeps the weights combo box and its info label in step with the chosen restorer."""

    def __init__(
        self,
        combo: ComboBox,
        label: Label,
        *,
        load_requested: Callable[[], bool],
        select: Callable[[str], None],
        changed: Callable[[], None],
    ) -> None:
        """
        :param load_requested: "Load checkpoint…" was chosen: ask for a file and load it; False
            when nothing was loaded (the previous choice comes back).
        :param select: choose a restorer in the form (which then calls :meth:`show` for it).
        :param changed: the chosen weights changed (the form checks itself again).
        """
        self.combo, self.label = combo, label
        self.checkpoints: dict[str, Checkpoint] = {}
        """Checkpoints loaded in this session, by path."""
        self.chosen: dict[str, Any] = {}
        """The weights last chosen for each restorer, shown again when it is chosen again."""
        self._load_requested, self._select, self._changed = load_requested, select, changed
        self._restorer: str | None = None
        self._before: Any = None
        self._updating = False
        combo.changed.connect(self._on_changed)

    def show(self, info: RestorerInfo) -> None:
        """List the weights ``info``'s restorer can use; choose the last one chosen, else the first."""
        choices = weights_choices(info, self.checkpoints)
        values = [v for _label, v in choices]
        self._restorer = info.name
        remembered = self.chosen.get(info.name)
        self._set(choices=choices, value=remembered if remembered in values else values[0])
        self.combo.enabled = takes_weights(info)
        self.show_info()

    def show_info(self, error: str | None = None) -> None:
        """The loaded checkpoint's detected architecture under the picker, or ``error``."""
        if error:
            self.label.value = error
            self.label.native.setStyleSheet(ERROR_STYLE)
            self.label.visible = True
            return
        self.label.native.setStyleSheet("")
        value = self.combo.value
        ckpt = self.checkpoints.get(value) if isinstance(value, str) else None
        self.label.value = (ckpt.detected or ckpt.summary) if ckpt else ""
        self.label.tooltip = ckpt.summary if ckpt else ""
        self.label.visible = bool(ckpt)

    def load(self, path: str, current: RestorerInfo | None, registered: dict) -> bool:
        """Inspect ``path`` and choose it, with the restorer that runs it; False says why below."""
        found = inspect_checkpoint(path, current, registered)
        if isinstance(found, str):
            self.show_info(found)
            return False
        self.checkpoints[path] = found
        self.chosen[found.restorer] = path
        self._select(found.restorer)  # shows its weights, which now hold ``path``
        self._set(value=path)
        self.show_info()
        self._changed()
        return True

    def _on_changed(self, *_: Any) -> None:
        if self._updating:
            return
        if self.combo.value == LOAD:
            if not self._load_requested():
                self._set(value=self._before)
            return
        self._before = self.combo.value
        if self._restorer is not None:
            self.chosen[self._restorer] = self.combo.value
        self.show_info()
        self._changed()

    def _set(self, *, value: Any, choices: list | None = None) -> None:
        """Change the picker without reacting to it."""
        self._updating = True
        try:
            if choices is not None:
                self.combo.choices = choices
            self.combo.value = value
            self._before = value
        finally:
            self._updating = False
