"""The pluggy hook spec through which built-in and third-party restorers are registered."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .restorer import Restorer

PROJECT = "napari_diffir"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_restorers(register: Callable[[type[Restorer]], None]) -> None:
    """Register restorer classes by calling ``register(RestorerSubclass)`` once per restorer.

    :param register: call it with a :class:`napari_diffir.Restorer` subclass whose ``info``
        class attribute is a :class:`napari_diffir.RestorerInfo`. The name must be unique;
        a duplicate is rejected with a warning naming both plugins.

    .. note::
        Do not import torch or load weights at module import or in this hook: registration
        runs whenever restorers are listed. Load weights in the restorer's constructor.

    .. versionadded:: 0.1
    """
