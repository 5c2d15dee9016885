"""The descriptor every model family exports: how to recognise, build and describe its networks.

Each family package (``models/diffir``, ``models/srdiff``) exports one :class:`ModelFamily` as
``DESCRIPTOR``; ``napari_diffir.checkpoints.FAMILIES`` lists them in the order checkpoints are
matched. Nothing depends on how a family, a class or a restorer is named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelFamily"]


@dataclass(frozen=True)
class ModelFamily:
    """One model family, after spandrel's architecture descriptors."""

    id: str
    """Short lower-case name (``"diffir"``); restorers name it in ``RestorerInfo.checkpoint_family``."""
    detect: Callable[[Mapping[str, Any]], bool]
    """Whether a state dict belongs to this family: no false negatives, rare false positives
    (the registry order resolves those)."""
    from_state_dict: Callable[[Mapping[str, Any]], nn.Module]
    """Build the network a state dict belongs to and load it strictly; ``ValueError`` if it does not fit."""
    describe: Callable[[nn.Module], dict[str, Any]]
    """A short summary of a built network; its ``"task"`` is what ``RestorerInfo.accepted_tasks`` lists."""
