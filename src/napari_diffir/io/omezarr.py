"""OME-Zarr (NGFF 0.4 and 0.5) and plain Zarr arrays: lazy reading and chunk-aligned writing.

Outputs are NGFF 0.4 (Zarr format 2, "/" chunk keys), which napari-ome-zarr, Fiji/MoBIE and
ome-zarr-py all read, with one resolution level ``0``, axes in the NGFF order (time, then
channel/custom, then space) and a scale (and translation) per axis. For super-resolution the Y/X
pixel sizes are divided by the factor and the translation keeps pixel centres in place.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .source import ImageSource

NGFF_ORDER = "TSCZYX"
"""Our canonical output order: NGFF wants time first, then channel/custom axes, then space."""

_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_UNITS = {
    "µm": "micrometer", "um": "micrometer", "micron": "micrometer", "microns": "micrometer",
    "\u03bcm": "micrometer", "micrometer": "micrometer", "nm": "nanometer",
    "nanometer": "nanometer", "mm": "millimeter", "millimeter": "millimeter", "m": "meter",
    "meter": "meter", "s": "second", "sec": "second", "second": "second", "ms": "millisecond",
    "millisecond": "millisecond", "min": "minute", "minute": "minute", "h": "hour", "hour": "hour",
}


def ngff_unit(unit: str | None) -> str | None:
    """The UDUNITS name NGFF requires (``µm`` -> ``micrometer``), or None if unknown."""
    if not unit:
        return None
    return _UNITS.get(str(unit).strip().lower(), None)


def _open_node(path: str):
    import zarr

    try:
        return zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises several types for "not a store"
        raise ValueError(f"{path!r} is not a readable Zarr store ({type(exc).__name__}: {exc})") from None


def open_zarr(path: str) -> ImageSource:
    """A lazy :class:`ImageSource` for an OME-Zarr image group or a plain Zarr array."""
    import dask.array as da
    import zarr

    path = str(path).rstrip("/\\")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Input {path!r} does not exist (no such Zarr store)")
    node = _open_node(path)
    if isinstance(node, zarr.Array):
        attrs = dict(node.attrs)
        names = attrs.get("_ARRAY_DIMENSIONS") or getattr(node.metadata, "dimension_names", None)
        axes = _letters([{"name": n} for n in names]) if names else None
        return _source(da.from_zarr(path), axes, {}, {}, {}, path)
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales")
    if not multiscales:
        arrays = sorted(k for k, _ in node.arrays())
        hint = f" (it holds arrays {arrays}; pass e.g. {os.path.join(path, arrays[0])!r})" if arrays else ""
        raise ValueError(f"Zarr group {path!r} has no OME-Zarr 'multiscales' metadata{hint}")
    ms = multiscales[0]
    dataset = ms["datasets"][0]
    axes_md = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes", [])]
    data = da.from_zarr(path, component=dataset["path"])
    axes = _letters(axes_md) if axes_md else None
    scale = np.ones(data.ndim)
    translation = np.zeros(data.ndim)
    for transforms in (dataset.get("coordinateTransformations", []), ms.get("coordinateTransformations", [])):
        for t in transforms or []:
            if t.get("type") == "scale" and "scale" in t:
                translation = translation * np.asarray(t["scale"], float)
                scale = scale * np.asarray(t["scale"], float)
            elif t.get("type") == "translation" and "translation" in t:
                translation = translation + np.asarray(t["translation"], float)
    pixel_size, units, origin = {}, {}, {}
    if axes is not None:
        for i, a in enumerate(axes):
            if a in "TZYX" and (scale[i] != 1.0 or axes_md[i].get("unit")):
                pixel_size[a] = float(scale[i])
            if axes_md[i].get("unit"):
                units[a] = axes_md[i]["unit"]
            if translation[i] != 0.0:
                origin[a] = float(translation[i])
    return _source(data, axes, pixel_size, units, origin, path)


def _source(data, axes, pixel_size, units, origin, path) -> ImageSource:
    from ..engine.axes import default_axes

    return ImageSource(
        data=data, axes=axes or default_axes(tuple(data.shape)), pixel_size=pixel_size,
        units=units, origin=origin, path=os.path.abspath(path), kind="zarr",
    )


def _letters(axes_md: list[dict]) -> str:
    """NGFF axis names/types -> our letters; an unknown axis becomes S (samples)."""
    out = []
    for a in axes_md:
        name = str(a.get("name", "")).upper()
        kind = a.get("type")
        if name in ("T", "C", "Z", "Y", "X"):
            letter = name
        elif kind == "time":
            letter = "T"
        elif kind == "channel":
            letter = "C"
        else:
            letter = "S"
        if letter in out:
            raise ValueError(
                f"Cannot map the Zarr axes {[a.get('name') for a in axes_md]} to STZCYX "
                "(two axes map to the same letter); pass --axes"
            )
        out.append(letter)
    return "".join(out)


def ngff_order(axes: str) -> tuple[str, list[int]]:
    """Output axes in NGFF order, and the permutation from ``axes`` to it."""
    out = "".join(a for a in NGFF_ORDER if a in axes)
    return out, [axes.index(a) for a in out]


def ngff_multiscales(axes: str, pixel_size: dict, units: dict, origin: dict, name: str = "") -> list:
    """The ``multiscales`` attribute (NGFF 0.4) for one level at path ``0``."""
    axes_md = []
    for a in axes:
        entry: dict[str, Any] = {"name": a.lower()}
        if a in _AXIS_TYPES:
            entry["type"] = _AXIS_TYPES[a]
        unit = ngff_unit(units.get(a))
        if unit:
            entry["unit"] = unit
        axes_md.append(entry)
    transforms: list[dict] = [{"type": "scale", "scale": [float(pixel_size.get(a, 1.0)) for a in axes]}]
    if any(origin.get(a, 0.0) for a in axes):
        transforms.append({"type": "translation", "translation": [float(origin.get(a, 0.0)) for a in axes]})
    return [{
        "version": "0.4", "name": name, "axes": axes_md,
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }]


def create_ome_zarr(path: str, shape, dtype, chunks, axes: str, pixel_size: dict, units: dict,
                    origin: dict, attrs: dict | None = None, name: str = ""):
    """Create an empty OME-Zarr image (group + array ``0``) and return the array.

    The caller picks ``chunks`` so that each restored block covers whole chunks: concurrent
    writers then never touch the same chunk file.
    """
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=2)
    arr = root.create_array(
        "0", shape=tuple(int(n) for n in shape), chunks=tuple(int(c) for c in chunks),
        dtype=np.dtype(dtype), fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    root.attrs["multiscales"] = ngff_multiscales(axes, pixel_size, units, origin, name)
    if attrs:
        root.attrs.update(attrs)
    return arr


_written: dict[tuple, Any] = {}


def open_output_array(path: str):
    """The output array ``path/0`` for writing, opened once per process."""
    import zarr

    key = (os.path.abspath(path), os.getpid())
    arr = _written.get(key)
    if arr is None:
        arr = zarr.open_array(os.path.join(path, "0"), mode="r+")
        _written[key] = arr
    return arr


def forget_output_array(path: str) -> None:
    """Drop cached handles before the store is renamed or deleted."""
    for key in [k for k in _written if k[0] == os.path.abspath(path)]:
        del _written[key]
