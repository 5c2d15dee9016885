"""Optional dependencies: one message that names the extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

EXTRAS = {"bioimageio": "bioimageio.core"}
"""Extra name -> the module whose import proves it is installed."""


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is not installed; the message says which extra brings it.

    A ``ValueError`` too, so that every frontend reports it as a user error (one line), not a bug.
    """


def require(extra: str, what: str) -> ModuleType:
    """Import the module behind ``extra``, or raise :class:`MissingExtraError` naming ``what`` needs it."""
    module = EXTRAS[extra]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{what} needs the optional dependency {module}, which is not installed "
            f"({exc}); install it with: pip install 'napari-diffir[{extra}]'"
        ) from exc
