"""The Train widget's live curve, without Qt: training loss and validation PSNR against steps.

Steps run on across stages (stage 2 of a from-scratch DiffIR continues where stage 1 ended), so
one curve shows the whole job; a resumed stage continues from its checkpoint's step. The loss is
shown smoothed (an exponential average over ~20 steps), as a single step's loss is mostly noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CurveData"]

SMOOTHING = 0.9


@dataclass
class CurveData:
    """Points of the curve: ``loss`` (step, smoothed loss) and ``psnr`` (step, dB)."""

    loss: list[tuple[int, float]] = field(default_factory=list)
    psnr: list[tuple[int, float]] = field(default_factory=list)
    stage_starts: list[int] = field(default_factory=list)
    """Global step at which each stage after the first began (drawn as a divider)."""
    _offset: int = 0
    _stage: int | None = None
    _last_step: int = 0
    _smooth: float | None = None

    def add(self, p: Any) -> bool:
        """Take a :class:`~napari_diffir.training.session.JobProgress`; True if the curve changed."""
        r = p.report
        if self._stage is None:
            self._stage = p.index
        elif p.index != self._stage:  # the next stage: its steps start after the last one's
            self._offset += self._last_step
            self._stage = p.index
            self._smooth = None
            self.stage_starts.append(self._offset)
        self._last_step = r.step
        x = self._offset + r.step
        if r.event == "step" and r.loss is not None:
            self._smooth = r.loss if self._smooth is None else SMOOTHING * self._smooth + (1 - SMOOTHING) * r.loss
            self.loss.append((x, self._smooth))
            return True
        if r.event == "validation" and r.validation is not None:
            point = (self._offset + int(r.validation["step"]), float(r.validation["psnr"]))
            if not self.psnr or self.psnr[-1] != point:
                self.psnr.append(point)
                return True
        return False

    def clear(self) -> None:
        self.loss.clear()
        self.psnr.clear()
        self.stage_starts.clear()
        self._offset, self._stage, self._last_step, self._smooth = 0, None, 0, None

    @property
    def steps(self) -> int:
        """The largest step on the curve."""
        return max([x for x, _ in self.loss] + [x for x, _ in self.psnr] + [0])

    @staticmethod
    def span(values: list[float]) -> tuple[float, float]:
        """A value range with a little margin (a flat series gets one of its own)."""
        if not values:
            return 0.0, 1.0
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 1e-3)
        return lo - pad, hi + pad
