"""TIFF/OME-TIFF reading and atomic writing with axes and pixel sizes, for the CLI."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import tifffile

# tifffile's axis letters -> ours: S (samples per pixel) is a colour channel; I/Q/R/... are
# generic sequences, which we loop over as samples.
_TIFF_TO_OURS = {"T": "T", "Z": "Z", "C": "C", "Y": "Y", "X": "X", "S": "C"}


@dataclass
class TiffImage:
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


SAMPLES = {
    "nuclei-noisy": "nuclei_z30_noisy.tif",
    "nuclei-lowres": "nuclei_z45_lowres_x4.tif",
    "nuclei-clean": "nuclei_z30_clean.tif",
}
"""Bundled sample images, readable as ``sample:<name>`` (cells3d nuclei, CC0; held-out planes)."""


def read_sample(name: str) -> TiffImage:
    """A bundled sample with its pixel size (0.26 um, x4 for the low-resolution one)."""
    from .napari._sample_data import DATA, LOWRES_FACTOR, PIXEL_UM

    if name not in SAMPLES:
        raise ValueError(f"Unknown sample {name!r}; bundled samples: {', '.join(SAMPLES)}")
    image = read_tiff(str(DATA / SAMPLES[name]))
    px = PIXEL_UM * (LOWRES_FACTOR if "lowres" in name else 1)
    image.pixel_size, image.unit = {"X": px, "Y": px}, "µm"
    return image


def read_image(path: str) -> TiffImage:
    """``sample:<name>`` for a bundled sample, otherwise a TIFF/OME-TIFF file."""
    if path.startswith("sample:"):
        return read_sample(path[len("sample:"):])
    return read_tiff(path)


def read_tiff(path: str) -> TiffImage:
    """Read the first series of a TIFF with its axes and pixel size (OME, ImageJ or tags)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Input {path!r} does not exist")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = _map_axes(series.axes)
            pixel_size, unit = _pixel_size(tif, series)
    except (tifffile.TiffFileError, ValueError, IndexError) as exc:
        raise ValueError(f"{path!r} is not a readable TIFF ({exc})") from None
    # squeeze singleton axes tifffile added (e.g. a 1-sample 'S') except Y and X
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape)) if n > 1 or a in "YX"]
    if len(keep) != data.ndim:
        data = data.reshape([data.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
    return TiffImage(data, axes, pixel_size, unit)


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


def write_tiff_atomic(path: str, data: np.ndarray, axes: str, pixel_size: dict | None = None,
                      unit: str | None = None, overwrite: bool = False, metadata: dict | None = None) -> None:
    """Write an OME-TIFF via a temporary file in the same folder and an atomic rename."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"Output {path!r} exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Output folder {folder!r} does not exist")
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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
