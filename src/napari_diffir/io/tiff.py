"""Lazy TIFF reading: a dask array over a TIFF that never loads the file whole.

Uncompressed, contiguous files are memory-mapped (a block read touches only its bytes); other
files are read page by page (or tile by tile) through tifffile's Zarr view. The reader pickles
as its path, so dask workers in other processes (or on other machines sharing the file system)
open the file themselves, once per process.

Finished output TIFFs are written from a Zarr array band by band, so memory stays bounded.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator

import numpy as np
import tifffile

from .source import ImageSource

_handles: dict[tuple, Any] = {}
_handles_lock = threading.Lock()

TIFF_TILE = 256
"""Tile side of written TIFFs (multiple of 16 as TIFF requires)."""


class LazyTiff:
    """Array-like view of one TIFF series: ``shape``, ``dtype``, ``ndim`` and ``__getitem__``."""

    def __init__(self, path: str, series: int = 0) -> None:
        self.path = os.path.abspath(path)
        self.series = series
        with tifffile.TiffFile(self.path) as tif:
            s = tif.series[series]
            self.shape = tuple(int(n) for n in s.shape)
            self.dtype = np.dtype(s.dtype)
            self.tiff_axes = s.axes
            self.memmappable = s.dataoffset is not None
            page = tif.pages.first
            self.natural = (int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None
        self.ndim = len(self.shape)
        stat = os.stat(self.path)
        self._identity = (self.path, series, stat.st_size, stat.st_mtime_ns)

    def __dask_tokenize__(self):
        return ("napari-diffir-lazytiff", *self._identity)

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self._array()[index])

    def _array(self):
        # a memory map serves every thread; a tifffile handle (with its file position) one thread
        who = os.getpid() if self.memmappable else (os.getpid(), threading.get_ident())
        key = (*self._identity, who)
        with _handles_lock:
            arr = _handles.get(key)
            if arr is None:
                if self.memmappable:
                    arr = tifffile.memmap(self.path, series=self.series, mode="r")
                else:
                    import zarr

                    tif = tifffile.TiffFile(self.path)
                    arr = zarr.open(tif.series[self.series].aszarr(), mode="r")
                _handles[key] = arr
            return arr

    def chunks(self) -> tuple[int, ...]:
        """Read granularity: one page (or one tile row band) per chunk."""
        lead = (1,) * (self.ndim - 2)
        ty, tx = self.natural or (self.shape[-2], self.shape[-1])
        if self.tiff_axes.endswith("S"):  # interleaved samples: Y, X, S are the last three
            lead = (1,) * (self.ndim - 3)
            return lead + (ty, tx, self.shape[-1])
        return lead + (ty, tx)


def open_tiff(path: str) -> ImageSource:
    """A lazy :class:`ImageSource` for a TIFF/OME-TIFF/ImageJ TIFF, with axes and pixel sizes."""
    import dask.array as da

    from ..tiff_io import _map_axes, _pixel_size

    try:
        lazy = LazyTiff(path)
        with tifffile.TiffFile(lazy.path) as tif:
            sizes, unit = _pixel_size(tif, tif.series[0])
    except (tifffile.TiffFileError, ValueError, IndexError) as exc:
        raise ValueError(f"{path!r} is not a readable TIFF ({exc})") from None
    axes = _map_axes(lazy.tiff_axes)
    data = da.from_array(lazy, chunks=lazy.chunks(), asarray=True, lock=False,
                         name=f"tiff-{da.core.tokenize(lazy)}")
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape)) if n > 1 or a in "YX"]
    if len(keep) != data.ndim:  # drop singleton axes tifffile adds, as the in-memory reader does
        data = data[tuple(slice(None) if i in keep else 0 for i in range(data.ndim))]
        axes = "".join(axes[i] for i in keep)
    units = {a: unit for a in sizes} if unit else {}
    return ImageSource(data=data, axes=axes, pixel_size=dict(sizes), units=units, path=lazy.path,
                       kind="tiff")


def write_tiff_from_zarr(path: str, array, axes: str, pixel_size: dict, units: dict,
                         description: str | None = None) -> None:
    """Write ``array`` (a Zarr array in ``axes`` order) as a tiled OME-TIFF, one band at a time."""
    if "S" in axes:
        raise ValueError("TIFF cannot store the S (samples) axis; write an OME-Zarr output instead")
    shape, dtype = tuple(array.shape), np.dtype(array.dtype)
    md: dict = {"axes": axes}
    for a in "XYZ":
        if a in pixel_size:
            md[f"PhysicalSize{a}"] = float(pixel_size[a])
            if units.get(a):
                md[f"PhysicalSize{a}Unit"] = units[a]
    if description:
        md["Description"] = description
    h, w = shape[-2], shape[-1]
    tiled = h >= TIFF_TILE and w >= TIFF_TILE
    res = None
    if pixel_size.get("X", 0) > 0 and pixel_size.get("Y", 0) > 0:
        res = (1.0 / pixel_size["X"], 1.0 / pixel_size["Y"])
    big = int(np.prod(shape)) * dtype.itemsize > 2**31 - 2**25
    tifffile.imwrite(
        path, _pieces(array, tiled), shape=shape, dtype=dtype, ome=True, metadata=md,
        tile=(TIFF_TILE, TIFF_TILE) if tiled else None, bigtiff=big, resolution=res,
        photometric="minisblack",
    )


def _pieces(array, tiled: bool) -> Iterator[np.ndarray]:
    """Pages (small planes) or tiles in TIFF order, reading one band of rows at a time."""
    shape = tuple(array.shape)
    h, w = shape[-2], shape[-1]
    band = TIFF_TILE if tiled else h
    for lead in np.ndindex(*shape[:-2]):
        for y0 in range(0, h, band):
            rows = np.asarray(array[lead + (slice(y0, min(y0 + band, h)), slice(None))])
            if not tiled:
                yield rows
                continue
            for x0 in range(0, w, TIFF_TILE):
                tile = rows[:, x0 : x0 + TIFF_TILE]
                if tile.shape != (TIFF_TILE, TIFF_TILE):
                    tile = np.pad(tile, ((0, TIFF_TILE - tile.shape[0]), (0, TIFF_TILE - tile.shape[1])))
                yield tile
