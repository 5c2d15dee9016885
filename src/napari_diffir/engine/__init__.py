"""The engine: everything that is the same for every model (axes, dtype, tiling, device, progress)."""

from .restore import restore

__all__ = ["restore"]
