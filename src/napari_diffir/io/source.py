"""An opened image: a lazy array plus the metadata outputs must keep (axes, pixel sizes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

ZARR_SUFFIXES = (".zarr", ".ome.zarr", ".zarr/", ".ome.zarr/")
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8")


@dataclass
class ImageSource:
    data: Any
    """A dask array (nothing read yet)."""
    axes: str
    """Letters from STZCYX, one per dimension of ``data``."""
    pixel_size: dict[str, float] = field(default_factory=dict)
    """Physical size of one pixel per axis letter (Z, Y, X; T for a time step), when known."""
    units: dict[str, str] = field(default_factory=dict)
    """Unit of each ``pixel_size`` entry (e.g. ``micrometer``)."""
    origin: dict[str, float] = field(default_factory=dict)
    """Physical position of the first pixel's centre per axis (OME-Zarr translation)."""
    path: str = ""
    kind: str = ""
    """``tiff`` or ``zarr``."""


def is_zarr_path(path: str) -> bool:
    """A Zarr store: a ``.zarr`` name, or an existing directory with Zarr metadata."""
    p = str(path).rstrip("/\\")
    if p.lower().endswith(".zarr"):
        return True
    return os.path.isdir(p) and any(
        os.path.exists(os.path.join(p, name)) for name in (".zgroup", ".zarray", "zarr.json")
    )


def is_tiff_path(path: str) -> bool:
    return str(path).lower().endswith(TIFF_SUFFIXES)


def open_image(path: str, axes: str | None = None) -> ImageSource:
    """Open a TIFF or (OME-)Zarr lazily; ``axes`` overrides what the file says."""
    from ..engine.axes import validate_axes

    path = str(path)
    if not os.path.exists(path.rstrip("/\\")):
        kind = "Zarr store" if is_zarr_path(path) else "file"
        raise FileNotFoundError(f"Input {path!r} does not exist (no such {kind})")
    if is_zarr_path(path):
        from .omezarr import open_zarr

        source = open_zarr(path)
    elif os.path.isdir(path):
        raise ValueError(f"Input {path!r} is a folder but not a Zarr store (no .zgroup/.zarray/zarr.json)")
    else:
        from .tiff import open_tiff

        source = open_tiff(path)
    if axes is not None:
        source.axes = validate_axes(axes, tuple(source.data.shape))
    return source
