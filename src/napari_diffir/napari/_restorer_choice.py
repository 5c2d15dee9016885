"""The restorer menu and what choosing a restorer changes: its options, weights, Steps and Seed.

Mixed into :class:`~._widget.RestoreWidget`: it fills the Restorer picker from the registry
(grouped as :mod:`._catalogue` says), builds one widget per option (:mod:`._options`), hands the
weights to :class:`~._weights.WeightsPicker` and offers only what the chosen weights can do.
"""

from __future__ import annotations

import os
from typing import Any

from magicgui.widgets import LineEdit

from ..restorer import RestorerInfo
from ._catalogue import (
    HEADER,
    default_steps_text,
    describe,
    fixed_scale,
    option_words,
    plain_description,
    restorer_choices,
    takes_weights,
)
from ._form import align_labels, text_line
from ._options import option_widget
from ._weights import ERROR_STYLE

__all__ = ["RestorerChoice"]


class RestorerChoice:
    """The Restorer picker, the option widgets it builds and the weights it offers."""

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


    @property
    def info(self) -> RestorerInfo | None:
        """The selected restorer's info (None if nothing is registered)."""
        return self._infos.get(self._restorer.value)


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
            self.native, "Load a DiffIR or SRDiff checkpoint, or a bioimage.io package", "",
            "Checkpoints (*.pth *.pt *.ckpt *.safetensors);;bioimage.io packages (*.zip *.yaml);;All files (*)",
        )
        return path or None

    def load_checkpoint(self, path: str | os.PathLike) -> bool:
        """Inspect the checkpoint at ``path`` and select it, with the restorer that runs it.

        What was detected is shown under the weights picker; a file that is not a usable
        checkpoint (or a DiffIR stage-1 one) leaves the selection unchanged and says why.
        """
        return self._picker.load(os.fspath(path), self.info, self._infos)
