"""The Image and Mask pickers follow the viewer's layers; the chosen image sets Axes and Output type.

Mixed into :class:`~._widget.RestoreWidget`, whose fields (``_image``, ``_mask``, ``_axes``,
``_dtype``, ``_run``) it reads and sets: kept apart so the widget module only lays out the form.
"""

from __future__ import annotations

from typing import Any

from ._inputs import layer_data
from ._layers import suggest_axes

__all__ = ["LayerChoice"]

RUN_TEXT_CHARS = 28
"""How much of the layer's name the Run button shows ("Run on 'noisy nuclei'")."""


def _unwrap(obj: Any) -> Any:
    """The napari object behind a ``PublicOnlyProxy`` (plugins may be handed proxies)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Any, b: Any) -> bool:
    return _unwrap(a) is _unwrap(b)


def _key(layer: Any) -> int:
    return id(_unwrap(layer))


class LayerChoice:
    """Which layers the form offers, and what choosing one of them changes."""

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
