"""``run(plan)``: restore what a :class:`~.plan.Plan` describes and say how, as a :class:`~.result.Result`."""

from __future__ import annotations

import time
from typing import Any

from .execute import ProgressFn, execute
from .lazy import graph
from .plan import Plan
from .result import Result

__all__ = ["run"]


def run(plan: Plan, progress: ProgressFn | None = None, cancel: Any = None) -> Result:
    """Run ``plan``; for a dask array the result's data is the lazy graph (progress and cancel
    then apply to whoever computes it).

    :param progress: ``progress(done, total, message)`` per tile and sampling step.
    :param cancel: an event (``is_set()``) or a callable returning True to stop; the run then
        raises :class:`~napari_diffir.RestorationCancelled` within one step.
    """
    t0 = time.perf_counter()
    data = graph(plan) if plan.lazy else execute(plan, progress, cancel)
    return Result.of(plan, data, time.perf_counter() - t0)
