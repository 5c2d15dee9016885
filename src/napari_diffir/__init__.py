"""napari-diffir: diffusion-based image restoration (DiffIR, SRDiff) for napari and Python."""

from .engine import restore
from .hookspecs import hookimpl, hookspec
from .registry import get_restorer, list_restorers
from .restorer import Option, RestorationCancelled, Restorer, RestorerInfo, TileContext

__version__ = "0.1.0"

__all__ = [
    "Option",
    "RestorationCancelled",
    "Restorer",
    "RestorerInfo",
    "TileContext",
    "__version__",
    "get_restorer",
    "hookimpl",
    "hookspec",
    "list_restorers",
    "restore",
]
