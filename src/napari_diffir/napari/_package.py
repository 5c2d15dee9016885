"""A bioimage.io package chosen in the Weights field: the ``bioimageio`` restorer's weights, described.

The line under the picker shows the package's name, description and authors, so the user sees
which model they chose before running it; a package napari-diffir cannot run says why there.
"""

from __future__ import annotations

import os

from ._catalogue import Checkpoint

__all__ = ["inspect_package"]

RESTORER = "bioimageio"


def inspect_package(path: str, registered: dict) -> Checkpoint | str:
    """The package at ``path`` as weights of the ``bioimageio`` restorer, or why it cannot be used."""
    from ..restorers.bioimageio_package import read_package

    name = os.path.basename(os.path.normpath(path))
    if RESTORER not in registered:
        return f"{name} is a bioimage.io package, but no '{RESTORER}' restorer is installed."
    try:
        spec = read_package(path)
    except (ValueError, OSError) as exc:  # unsupported, invalid, or the extra is missing (names it)
        return f"Cannot use {name}: {' '.join(str(exc).split())}"
    except Exception as exc:  # never a traceback in the widget
        return f"Cannot read {name} ({type(exc).__name__}: {exc})"
    authors = ", ".join(spec.authors) or "no authors given"
    description = " ".join(spec.description.split())
    detected = f"bioimage.io: {spec.name} — {description} — by {authors}"
    sizes = f"{spec.min_size} px" if spec.fixed_size else f"{spec.min_size} + n × {spec.multiple} px"
    summary = "\n".join([f"{spec.name} (bioimage.io package {name})", description, f"Authors: {authors}",
                         f"x{spec.scale}, {spec.in_channels} → {spec.out_channels} channels, tiles of {sizes}, "
                         f"halo {spec.halo} px, {spec.weight_format} weights"])
    return Checkpoint(RESTORER, f"{spec.name} (bioimage.io)", summary, path, detected=detected, scale=spec.scale)
