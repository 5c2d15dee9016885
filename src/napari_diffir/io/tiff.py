"""TIFF/OME-TIFF/ImageJ TIFF: axes and pixel sizes, read whole or lazily, written atomically.

``read_tiff`` loads a file into memory (the CLI's in-memory path). ``open_tiff`` gives a dask
array that never loads the file whole: uncompressed, contiguous files are memory-mapped (a block
read touches only its bytes); other files are read page by page (or tile by tile) through
tifffile's Zarr view. The lazy reader pickles as its path, so dask workers in other processes (or
on other machines sharing the file system) open the file themselves, once per process.

Outputs appear complete or not at all: ``write_tiff_atomic`` writes an in-memory array under a
temporary name and renames it; ``write_tiff_from_zarr`` writes a finished Zarr array band by band,
so memory stays bounded.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile

from .outputs import check_output, publish_file
from .source import ImageSource

# tifffile's axis letters -> ours: S (samples per pixel) is a colour channel; I/Q/R/... are
# generic sequences, which we loop over as samples.
_TIFF_TO_OURS = {"T": "T", "Z": "Z", "C": "C", "Y": "Y", "X": "X", "S": "C"}


@dataclass
class TiffImage:
    """A TIFF read into memory by :func:`read_tiff`: pixels, our axis letters, pixel sizes."""

    data: np.ndarray
    axes: str
    pixel_size: dict = field(default_factory=dict)
    """Physical sizes per axis letter (``X``, ``Y``, ``Z``), in ``unit``."""
    unit: str | None = None


def _map_axes(tiff_axes: str) -> str:
    out = []
    for a in tiff_axes.upper():
        mapped = _TIFF_TO_OURS.get(a, "S")
        if mapped in out:
            mapped = "S" if "S" not in out else None
        if mapped is None:
            raise ValueError(f"Cannot map TIFF axes {tiff_axes!r}; pass --axes explicitly")
        out.append(mapped)
    return "".join(out)


def _kept_axes(axes: str, shape: tuple[int, ...]) -> list[int]:
    """Dimensions to keep: Y, X and every axis longer than 1 (tifffile adds singletons, e.g. 'S')."""
    return [i for i, (a, n) in enumerate(zip(axes, shape)) if n > 1 or a in "YX"]


def read_tiff(path: str) -> TiffImage:
    """Read the first series of a TIFF with its axes and pixel size (OME, ImageJ or tags)."""
    check_input_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            check_complete(path, tif, series)
            data = series.asarray()
            axes = _map_axes(series.axes)
            pixel_size, unit = _pixel_size(tif, series)
    except UnreadableTiffError:
        raise
    except (OSError, MemoryError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the file's content
            raise
        raise UnreadableTiffError(f"{path!r} is not a readable TIFF ({_first_line(exc)})") from None
    except Exception as exc:  # tifffile raises many types on damaged files
        raise UnreadableTiffError(f"{path!r} is not a readable TIFF ({_first_line(exc)})") from None
    keep = _kept_axes(axes, data.shape)
    if len(keep) != data.ndim:
        data = data.reshape([data.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
    return TiffImage(data, axes, pixel_size, unit)


class UnreadableTiffError(ValueError):
    """A file that is not a TIFF, is damaged, or whose metadata contradict its data."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_input_file(path: str) -> None:
    """An input that is missing, or a folder where a file is expected."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Input {path!r} does not exist")
    if os.path.isdir(path):
        raise UnreadableTiffError(f"Input {path!r} is a folder; name a TIFF file, or a Zarr folder "
                                  "(*.zarr, *.ome.zarr)")


def check_complete(path: str, tif: tifffile.TiffFile, series) -> None:
    """Refuse a series whose metadata promise planes or bytes the file does not hold.

    tifffile zeroes the planes an OME header names but the file lacks, and tags may claim a
    60000x60000 image in a few hundred bytes; either would be restored as invented data.
    """
    pages = list(series.pages)
    missing = sum(p is None for p in pages)
    if missing:
        raise UnreadableTiffError(
            f"{path!r}: its metadata describe {len(pages)} planes (shape {tuple(series.shape)}), but "
            f"{missing} of {len(pages)} planes are not in the file; the metadata contradicts the data")
    claimed = int((tif.imagej_metadata or {}).get("images", 0) or 0) if tif.is_imagej else 0
    planes = math.prod(n for a, n in zip(series.axes, series.shape) if a not in "YXS")
    if claimed > planes:
        raise UnreadableTiffError(
            f"{path!r}: its ImageJ metadata describe {claimed} planes, but {claimed - planes} of "
            f"{claimed} planes are not in the file (truncated?); the metadata contradicts the data")
    size = os.path.getsize(path) if tif.filehandle.size is None else tif.filehandle.size
    # contiguous data (ImageJ stacks) is described once, for the whole series
    short = series.dataoffset is not None and int(series.dataoffset) + int(series.nbytes) > size
    for page in pages if not short else ():
        ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts)]
        expected = getattr(page, "nbytes", 0) if getattr(page, "compression", None) == 1 else 0
        held = sum(int(n) for n in page.databytecounts)
        if (ends and max(ends) > size) or held < expected:
            short = True
            break
    if short:
        raise UnreadableTiffError(
            f"{path!r} is truncated: it claims {'x'.join(map(str, series.shape))} {series.dtype} "
            f"pixels, but holds only {size} bytes")


def _pixel_size(tif: tifffile.TiffFile, series) -> tuple[dict, str | None]:
    sizes: dict[str, float] = {}
    unit = None
    if tif.is_ome and tif.ome_metadata:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(tif.ome_metadata)
        for el in root.iter():
            if el.tag.endswith("Pixels"):
                for a in "XYZ":
                    v = el.get(f"PhysicalSize{a}")
                    if v is not None:
                        sizes[a] = float(v)
                unit = el.get("PhysicalSizeXUnit", "µm")
                break
        if sizes:
            return sizes, unit
    if tif.is_imagej and tif.imagej_metadata:
        md = tif.imagej_metadata
        unit = md.get("unit")
        if "spacing" in md:
            sizes["Z"] = float(md["spacing"])
    page = tif.pages.first
    tags = page.tags
    for a, tag in (("X", "XResolution"), ("Y", "YResolution")):
        if tag in tags:
            num, den = tags[tag].value
            if num:
                sizes[a] = den / num
    if sizes.get("X") == 1.0 and sizes.get("Y") == 1.0 and unit is None:
        return {}, None
    return sizes, unit


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
            check_complete(self.path, tif, s)
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

    check_input_file(path)
    try:
        lazy = LazyTiff(path)
        with tifffile.TiffFile(lazy.path) as tif:
            sizes, unit = _pixel_size(tif, tif.series[0])
    except UnreadableTiffError:
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise UnreadableTiffError(f"{path!r} is not a readable TIFF ({_first_line(exc)})") from None
    except Exception as exc:
        raise UnreadableTiffError(f"{path!r} is not a readable TIFF ({_first_line(exc)})") from None
    axes = _map_axes(lazy.tiff_axes)
    data = da.from_array(lazy, chunks=lazy.chunks(), asarray=True, lock=False,
                         name=f"tiff-{da.core.tokenize(lazy)}")
    keep = _kept_axes(axes, data.shape)
    if len(keep) != data.ndim:  # drop singleton axes tifffile adds, as the in-memory reader does
        data = data[tuple(slice(None) if i in keep else 0 for i in range(data.ndim))]
        axes = "".join(axes[i] for i in keep)
    units = {a: unit for a in sizes} if unit else {}
    return ImageSource(data=data, axes=axes, pixel_size=dict(sizes), units=units, path=lazy.path,
                       kind="tiff")


def write_tiff_atomic(path: str, data: np.ndarray, axes: str, pixel_size: dict | None = None,
                      unit: str | None = None, overwrite: bool = False, metadata: dict | None = None) -> None:
    """Write an OME-TIFF via a temporary file in the same folder and an atomic rename."""
    check_output(path, overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    tiff_axes = axes.replace("S", "Q")
    if axes.endswith("C") and data.shape[-1] in (3, 4):  # RGB(A) stays interleaved samples
        tiff_axes = tiff_axes[:-1] + "S"
    md: dict = {"axes": tiff_axes}
    ps = pixel_size or {}
    for a in "XYZ":
        if a in ps:
            md[f"PhysicalSize{a}"] = float(ps[a])
            if unit:
                md[f"PhysicalSize{a}Unit"] = unit
    if metadata:
        md["Description"] = str(metadata)
    fd, tmp = tempfile.mkstemp(prefix=".napari-diffir-", suffix=".ome.tif", dir=folder)
    os.close(fd)
    try:
        res = None
        if "X" in ps and "Y" in ps and ps["X"] > 0 and ps["Y"] > 0:
            res = (1.0 / ps["X"], 1.0 / ps["Y"])
        tifffile.imwrite(tmp, data, ome=True, metadata=md, resolution=res,
                         photometric="rgb" if tiff_axes.endswith("S") else "minisblack")
        publish_file(tmp, path, overwrite)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            raise OSError(exc.errno, f"{exc.strerror or exc} while writing", path) from exc
        raise


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
