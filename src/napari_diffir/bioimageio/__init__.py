"""bioimage.io model packages: export napari-diffir's models (``export_bioimageio``), describe any package.

Everything here needs the optional ``bioimageio`` extra (``pip install 'napari-diffir[bioimageio]'``)
and says so when it is missing; importing this package does not need it (nor torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .export import export_bioimageio

__all__ = ["export_bioimageio"]


def __getattr__(name: str) -> Any:
    if name == "export_bioimageio":
        from .export import export_bioimageio

        return export_bioimageio
    raise AttributeError(f"module 'napari_diffir.bioimageio' has no attribute {name!r}")
