"""``napari-diffir info PACKAGE.zip``: what a bioimage.io package is, and whether napari-diffir runs it."""

from __future__ import annotations

import os

from ..restorers.bioimageio_package import UnsupportedPackageError, load_package, package_spec

__all__ = ["describe_package"]


def describe_package(path: str | os.PathLike) -> str:
    """Lines describing the package at ``path`` (name, authors, axes, weights; the restorer that runs it)."""
    source = os.fspath(path)
    descr = load_package(source, "Describing a bioimage.io package")
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
        spec = package_spec(source, descr)  # the description read once
    except UnsupportedPackageError as exc:
        lines.append(f"  restorer: none (napari-diffir cannot run it: {exc})")
    else:
        norm = {"meanstd": "mean/std", "none": "raw intensities"}.get(spec.normalize)
        if norm is None:
            norm = "percentile {:g}..{:g}".format(*spec.percentiles)
        if spec.standardize_output is not None:
            norm += ", output to the input's mean/std"
        sizes = f"{spec.min_size} px" if spec.fixed_size else f"{spec.min_size} + n * {spec.multiple} px"
        lines.append(f"  restorer: bioimageio (weights={source}): x{spec.scale}, {spec.in_channels} -> "
                     f"{spec.out_channels} channels, tiles of {sizes}, halo {spec.halo} px, input {norm}, "
                     f"{spec.weight_format} weights")
    return "\n".join(lines)
