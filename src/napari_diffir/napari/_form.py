"""Qt details that keep the Restore form narrow and tidy: compact pickers, wrapping text, labels.

magicgui lays a labelled container out as rows of (label, field); the widget is made of several
such sections (so some text can span the dock's width), and :func:`align_labels` gives every
section the same label column.
"""

from __future__ import annotations

from collections.abc import Iterable

from magicgui.widgets import CheckBox, ComboBox, Container, Label

__all__ = ["ERROR_FRAME", "OK_STYLE", "align_labels", "compact", "mark_invalid", "section", "shown", "text_line"]

ERROR_FRAME = "border: 1px solid #e0685f;"
"""The red frame of a field whose value cannot be used."""
OK_STYLE = ""
"""The status line's style when it reports no problem."""
MIN_CHARS = 10
"""A picker is never narrower than this many characters; longer entries are cut with '…'."""


def compact(combo: ComboBox, tooltip_follows: bool = True) -> ComboBox:
    """Let a combo box shrink below its longest entry (the current entry shows in full as tooltip)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QComboBox

    native = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(MIN_CHARS)
    native.view().setTextElideMode(Qt.TextElideMode.ElideRight)
    if tooltip_follows:
        native.currentTextChanged.connect(lambda text: native.setToolTip(text.strip()))
    return combo


def text_line(name: str, label: str = " ") -> Label:
    """A left-aligned text that wraps at the dock's width and never makes the dock wider."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    widget = Label(name=name, label=label)
    native = widget.native
    native.setWordWrap(True)
    native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    flags = Qt.TextInteractionFlag
    native.setTextInteractionFlags(flags.TextSelectableByMouse | flags.LinksAccessibleByMouse)
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    policy.setHeightForWidth(True)
    native.setSizePolicy(policy)
    return widget


def section(name: str, widgets: Iterable, **kwargs) -> Container:
    """A labelled group of fields without margins of its own (the dock's margins frame it)."""
    box = Container(name=name, labels=True, widgets=list(widgets), **kwargs)
    box.margins = (0, 0, 0, 0)
    return box


def align_labels(sections: Iterable[Container]) -> int:
    """Give every labelled row of ``sections`` the widest label's width; returns that width."""
    from magicgui.widgets.bases import ButtonWidget

    rows = [w for box in sections for w in box if not isinstance(w, ButtonWidget) and w._labeled_widget()]
    if not rows:
        return 0
    # each label's own font (the viewer's theme sets it once the dock is shown)
    width = max(w._labeled_widget()._label_widget.native.sizeHint().width() for w in rows)
    for w in rows:
        w._labeled_widget().label_width = width
    # check boxes carry their own text: start them where the fields start
    spacing = max(rows[0]._labeled_widget().native.layout().spacing(), 0)
    for box in sections:
        for w in box:
            if isinstance(w, CheckBox):
                w.native.setStyleSheet(f"margin-left: {width + spacing}px;")
    return width


def mark_invalid(widget, invalid: bool) -> None:
    """A red frame around a field whose value cannot be used (and none once it can)."""
    if isinstance(widget, CheckBox):
        return  # always valid; its style sheet holds its alignment (see align_labels)
    native = widget.native
    style = ERROR_FRAME if invalid else ""
    if native.styleSheet() != style:
        native.setStyleSheet(style)


def shown(widget) -> bool:
    """Whether a field is part of the form now (``visible`` is False until the dock is shown)."""
    return not widget.native.isHidden()
