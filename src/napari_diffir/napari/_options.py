"""One magicgui widget per restorer option, and the validated value it holds."""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox

from ..restorer import Option

__all__ = ["option_value", "option_widget"]

INT_LIMIT = 2**31 - 1
"""Range of a spin box whose option has no bound (Qt spin boxes hold 32-bit ints)."""


def option_widget(opt: Option, label: str | None = None, tooltip: str | None = None):
    """A magicgui widget for one restorer option (choices, bool, int, float, or text).

    :param label: how the form names it (default: from the option's name).
    :param tooltip: what it does in plain words (default: the option's help).
    """
    kw = {"label": label or opt.name.replace("_", " ").capitalize(), "tooltip": tooltip or opt.help or None,
          "name": opt.name}
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
    widget = LineEdit(value="" if opt.default is None else str(opt.default), **kw)
    if opt.default is None:
        widget.native.setPlaceholderText("default")
    return widget


def _float_step(opt: Option) -> float:
    span = (opt.max if opt.max is not None else 10.0) - (opt.min if opt.min is not None else 0.0)
    return float(10 ** np.floor(np.log10(max(span, 1e-6) / 100)))


def option_value(opt: Option, widget) -> Any:
    """The validated value of an option widget (empty text means the restorer's default)."""
    value = widget.value
    if isinstance(widget, LineEdit):
        if not str(value).strip():
            return None
        value = str(value).strip()
    return opt.validate(value)
