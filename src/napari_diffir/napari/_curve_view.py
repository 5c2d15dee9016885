"""The live curve drawn with QPainter: loss (left axis) and validation PSNR (right axis) vs steps.

A plain ``QWidget`` rather than a plotting library: napari does not bring matplotlib, and two
polylines with their ranges are all the dock needs. The data and its ranges are
:class:`~napari_diffir.napari._curve.CurveData`'s.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from ._curve import CurveData

__all__ = ["CurveView"]

LOSS_COLOUR = QColor("#e5a03d")
PSNR_COLOUR = QColor("#4fb3e8")
MARGIN = (54, 10, 44, 22)  # left, top, right, bottom (room for the axis labels)


class CurveView(QWidget):
    """Draws a :class:`CurveData`; call :meth:`update` after adding points."""

    def __init__(self, data: CurveData, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data = data
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss (orange, left axis, smoothed) and validation PSNR "
                        "(blue, right axis, dB) against training steps")

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        left, top, right, bottom = MARGIN
        plot = QRectF(left, top, max(1, self.width() - left - right), max(1, self.height() - top - bottom))
        text = self.palette().windowText().color()
        p.setPen(QPen(text, 1))
        p.drawRect(plot)
        d = self.data
        x_max = max(d.steps, 1)
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), bottom - 2),
                   int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), f"steps (0 – {x_max})")
        if not d.loss and not d.psnr:
            p.drawText(plot, int(Qt.AlignmentFlag.AlignCenter), "The curve appears when training starts")
            p.end()
            return
        for start in d.stage_starts:  # stage boundaries
            x = plot.left() + plot.width() * start / x_max
            p.setPen(QPen(text, 1, Qt.PenStyle.DotLine))
            p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
        self._series(p, plot, d.loss, x_max, LOSS_COLOUR, left_axis=True)
        self._series(p, plot, d.psnr, x_max, PSNR_COLOUR, left_axis=False, dots=True)
        p.end()

    def _series(self, p: QPainter, plot: QRectF, points, x_max: int, colour: QColor, *, left_axis: bool,
                dots: bool = False) -> None:
        if not points:
            return
        lo, hi = CurveData.span([v for _, v in points])

        def at(x: float, v: float) -> QPointF:
            return QPointF(plot.left() + plot.width() * x / x_max, plot.bottom() - plot.height() * (v - lo) / (hi - lo))

        p.setPen(QPen(colour, 1.6))
        p.drawPolyline(QPolygonF([at(x, v) for x, v in points]))
        if dots:
            p.setBrush(colour)
            for x, v in points:
                p.drawEllipse(at(x, v), 2.5, 2.5)
        fmt = (lambda v: f"{v:.3g}") if left_axis else (lambda v: f"{v:.1f}")
        rect_x = 0 if left_axis else plot.right() + 2
        align = Qt.AlignmentFlag.AlignRight if left_axis else Qt.AlignmentFlag.AlignLeft
        width = MARGIN[0] - 4 if left_axis else MARGIN[2] - 2
        for v, y in ((hi, plot.top()), (lo, plot.bottom() - 12)):
            p.drawText(QRectF(rect_x, y, width, 12), int(align | Qt.AlignmentFlag.AlignTop), fmt(v))
        label = "loss" if left_axis else "dB"
        p.drawText(QRectF(rect_x, plot.center().y() - 6, width, 12), int(align | Qt.AlignmentFlag.AlignVCenter), label)
