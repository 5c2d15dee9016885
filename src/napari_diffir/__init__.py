"""napari-diffir: diffusion-based image restoration (DiffIR, SRDiff) for napari and Python.

``restore`` and ``export_bioimageio`` are imported on first use, so that importing the package (e.g. when napari opens a
bundled sample or lists plugins) does not import torch.
"""

from typing import TYPE_CHECKING, Any

from .hookspecs import hookimpl, hookspec
from .registry import get_restorer, list_restorers
from .restorer import Option, RestorationCancelled, Restorer, RestorerInfo, TileContext

if TYPE_CHECKING:
    from .engine import restore

__version__ = "0.1.0"

__all__ = [
    "Option",
    "RestorationCancelled",
    "Restorer",
    "RestorerInfo",
    "TileContext",
    "__version__",
    "export_bioimageio",
    "get_restorer",
    "hookimpl",
    "hookspec",
    "list_restorers",
    "restore",
]


def __getattr__(name: str) -> Any:
    if name == "restore":
        from .engine import restore

        return restore
    if name == "export_bioimageio":  # by name: the frontends' layer is above the engine that imports this
        import importlib

        return importlib.import_module(".bioimageio.export", __name__).export_bioimageio
    raise AttributeError(f"module 'napari_diffir' has no attribute {name!r}")
