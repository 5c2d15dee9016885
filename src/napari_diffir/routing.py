"""Which registered restorer runs a checkpoint: one rule, shared by the widget and the CLI.

The rule reads only what restorers declare in :class:`~napari_diffir.restorer.RestorerInfo`
(``checkpoint_family``, ``accepted_tasks``, ``weights_policy``, ``bundled_weights``), never their
names or constructor signatures, so a plugin restorer takes part by declaring the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable

from .registry import list_restorers
from .restorer import RestorerInfo

__all__ = ["restorer_for_checkpoint"]


def restorer_for_checkpoint(
    family: str, task: str | None = None, infos: Iterable[RestorerInfo] | None = None
) -> str | None:
    """The name of the restorer that runs a checkpoint of ``family`` and ``task``, or None.

    :param family: the checkpoint's family id (``LoadedCheckpoint.family``).
    :param task: its task as the family's ``describe()`` reports it (``description["task"]``).
    :param infos: the restorers to choose from (default: every registered one).

    Candidates serve ``family``, take weights and accept ``task`` (an empty ``accepted_tasks``
    accepts any). Restorers that need a checkpoint come before bundled models (which are a fixed
    model, not a runner for the user's file), and among those the most specialised one (fewest
    accepted tasks) wins; ties keep the order of ``infos``.
    """
    if infos is None:
        infos = list_restorers()
    candidates = [
        info for info in infos
        if info.checkpoint_family == family and info.weights_policy != "none"
        and (not info.accepted_tasks or task in info.accepted_tasks)
    ]
    if not candidates:
        return None

    def rank(info: RestorerInfo) -> tuple[bool, float]:
        return info.bundled_weights is not None, len(info.accepted_tasks) or float("inf")

    return min(candidates, key=rank).name
