"""What a training run tells its caller: progress reports, and the two ways it stops early.

:func:`napari_diffir.training.loop.run_stage` sends a :class:`TrainingProgress` after every step
and validation (a progress bar with ETA, a live curve), raises :class:`TrainingCancelled` after
checkpointing when asked to stop, and :class:`TrainingBudgetError` before the first step when
its time budget cannot fit one validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TrainingBudgetError", "TrainingCancelled", "TrainingProgress"]


@dataclass(frozen=True)
class TrainingProgress:
    """One report of :func:`run_stage` to its ``progress`` callback (after every step and every
    validation), enough for a progress bar with ETA and a live loss / validation-PSNR curve."""

    stage: str
    """The stage's name, e.g. ``diffir-s2``."""
    event: str
    """``"step"`` (a training step ended), ``"validation"`` (``validation`` is new) or ``"done"``."""
    step: int
    """Steps done so far (resumed steps included)."""
    total: int
    """The planned steps (the schedule length); a time budget may end the run earlier."""
    loss: float | None
    """Training loss of the last step (``None`` before the first)."""
    parts: dict = field(default_factory=dict)
    """The loss's named parts of the last step (e.g. ``pix``, ``ipr``)."""
    lr: float | None = None
    validation: dict | None = None
    """The latest validation: ``{"step", "psnr", "ssim"}``."""
    elapsed_s: float = 0.0
    """Wall time of this session's training steps."""
    eta_s: float | None = None
    """Estimated seconds until the run ends (steps left or budget left, whichever ends first)."""


class TrainingCancelled(Exception):
    """The run was cancelled; its checkpoint was written first, so the same command resumes it."""

    def __init__(self, message: str, step: int, out_dir: str) -> None:
        super().__init__(message)
        self.step = step
        self.out_dir = out_dir

    def __reduce__(self):  # pickled with its fields (the Train widget trains in a child process)
        return type(self), (str(self), self.step, self.out_dir)


class TrainingBudgetError(ValueError):
    """The time budget cannot fit the run's validation; raised before the first training step."""
