"""``napari-diffir info PACKAGE.zip``: what a bioimage.io package is, and whether napari-diffir runs it."""

from __future__ import annotations

import os

from ..extras import require
from ..restorers.bioimageio_package import UnsupportedPackageError, read_package

__all__ = ["describe_package"]


def describe_package(path: str | os.PathLike) -> str:
    """Lines describing the package at ``path`` (name, authors, axes, weights; the restorer that runs it)."""
    require("bioimageio", "Describing a bioimage.io package")
    from bioimageio.spec import InvalidDescr, load_description

    source = os.fspath(path)
    if not os.path.exists(source):
        raise FileNotFoundError(f"No bioimage.io package at {source!r}")
    descr = load_description(source, format_version="latest", perform_io_checks=False)
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{source!r} is not a valid bioimage.io description: "
                         + " ".join(descr.validation_summary.format().split())[:600])
    lines = [source, f"  bioimage.io {descr.type} (format {descr.format_version}): {descr.name}",
             f"  description: {' '.join(str(descr.description).split())}",
             f"  authors: {', '.join(str(a.name) for a in descr.authors) or 'none given'}"]
    if descr.type == "model":
        lines.append(f"  licence: {descr.license}")
        for role, tensors in (("input", descr.inputs), ("output", descr.outputs)):
            for t in tensors:
                lines.append(f"  {role} {t.id}: axes {', '.join(str(a.id) for a in t.axes)}")
        lines.append(f"  weights: {', '.join(f for f, w in descr.weights if w is not None)}")
        lines += [f"  cite: {c.text}" + (f" doi:{c.doi}" if c.doi else "") for c in descr.cite]
    try:
        spec = read_package(source)
    except UnsupportedPackageError as exc:
        lines.append(f"  restorer: none (napari-diffir cannot run it: {exc})")
    else:
        norm = f"percentile {spec.percentiles[0]:g}..{spec.percentiles[1]:g}" if spec.percentiles else "raw intensities"
        sizes = f"{spec.min_size} px" if spec.fixed_size else f"{spec.min_size} + n * {spec.multiple} px"
        lines.append(f"  restorer: bioimageio (weights={source}): x{spec.scale}, {spec.in_channels} -> "
                     f"{spec.out_channels} channels, tiles of {sizes}, halo {spec.halo} px, input {norm}, "
                     f"{spec.weight_format} weights")
    return "\n".join(lines)
