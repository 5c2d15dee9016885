"""The standard restoration test sets, read with their public protocols (evaluation only).

Set12 and BSD68 (grayscale denoising) and Set5 / Set14 (x4 super-resolution) are in the
public repository cszn/DnCNN under ``testsets/``; fetch it and pass that folder:

    git clone https://github.com/cszn/DnCNN && python benchmarks/quality.py --testsets DnCNN/testsets

These images are never read by training (``napari_diffir.training.data`` refuses nothing by
name here, so keep them out of ``--data``); they are not shipped with napari-diffir.

Protocols:

* denoising (DnCNN / FFDNet / BM3D papers): the uint8 image / 255, plus white Gaussian noise of
  sigma / 255, one ``numpy`` seed per image, unclipped; PSNR on [0, 1] after clipping the output.
* x4 SR (SRCNN onwards): MATLAB ``rgb2ycbcr`` luma of the HR image (gray images count as
  R = G = B), cropped to a multiple of 4, MATLAB-bicubic downsampled by 4; Y-PSNR and SSIM with
  a 4-pixel border crop; models and baselines see only the luma.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DENOISE_SETS = ("Set12", "BSD68")
SR_SETS = ("Set5", "Set14")
SUFFIXES = (".png", ".bmp", ".tif", ".jpg")


def _files(root: Path, name: str) -> list[Path]:
    folder = root / name
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"No images of {name} under {folder} (expected cszn/DnCNN's testsets/ folder)")
    return files


def _read(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma on the [0, 1] scale (16/255 .. 235/255); gray input as R=G=B."""
    a = image.astype(np.float64) / 255.0
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    y = 16.0 + a[..., :3] @ np.array([65.481, 128.553, 24.966])
    return (y / 255.0).astype(np.float32)


def denoise_set(root: str | Path, name: str) -> dict[str, np.ndarray]:
    """``{file stem: clean gray image in [0, 1]}`` of a denoising set."""
    out = {}
    for f in _files(Path(root), name):
        a = _read(f)
        if a.ndim == 3:  # a few copies of these sets are stored as 3 equal channels
            a = a[..., 0]
        out[f.stem] = a.astype(np.float32) / 255.0
    return out


def gaussian_noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``clean + N(0, sigma/255)``, unclipped float32 (seed fixed per image)."""
    rng = np.random.default_rng(seed)
    return (clean + rng.normal(0.0, sigma / 255.0, clean.shape)).astype(np.float32)


def sr_set(root: str | Path, name: str, scale: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{file stem: (HR luma, LR luma)}`` with the HR cropped to a multiple of ``scale``."""
    from napari_diffir.resize import imresize

    out = {}
    for f in _files(Path(root), name):
        y = rgb_to_y(_read(f))
        h, w = (s - s % scale for s in y.shape)
        hr = y[:h, :w]
        lr = np.asarray(imresize(hr.astype(np.float64), 1.0 / scale), np.float32)
        out[f.stem.replace("_GT", "")] = (hr, lr)
    return out
