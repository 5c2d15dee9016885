"""Hold out validation data by image, by plane or by region, and refuse a split that cannot work.

A microscopist often has one stack or even one 2-D image. Validating on the training patches
would only measure memorisation, so the data can be split by *plane* (whole planes of the stacks
held out) or by *region* (a band along the long side of every plane held out), as well as by
*image* (whole files; the CLI's historical default). Every problem is a
:class:`~napari_diffir.training.data.TrainingDataError` that names the image and the sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .data import TrainingDataError, split_validation

__all__ = ["SPLITS", "split"]

SPLITS = ("image", "plane", "region")


def split(items: list[tuple], how: str, fraction: float, seed: int, patch: int, scale: int = 1,
          names: Sequence[str] | None = None) -> tuple[list, list]:
    """Split named planes ``(name, image)`` or pairs ``(name, lq, gt)`` into (train, val).

    ``patch`` is the GT patch side and ``scale`` the LQ->GT factor (pairs only): both parts of a
    region split must still hold one patch. ``names``: every plane's name before the patch size
    skipped any (see :func:`~.data.split_validation`), for the image and plane splits.
    """
    if how not in SPLITS:
        raise TrainingDataError(f"Validation split must be one of {', '.join(SPLITS)}, but got {how!r}")
    if not items:
        raise TrainingDataError("No training images")
    if how == "image":
        return split_validation(items, fraction, seed, names=names)
    if not 0 < fraction < 1:
        raise TrainingDataError(f"The validation fraction must be between 0 and 1, but got {fraction}")
    if how == "plane":
        if len(items) < 2:
            raise TrainingDataError(
                f"Validation by plane needs at least 2 planes, but the data has {len(items)} ({items[0][0]}); "
                "split by region instead")
        return split_validation(items, fraction, seed, names=names)
    train, val = [], []
    for item in items:
        t, v = _split_region(item, fraction, patch, scale)
        train.append(t)
        val.append(v)
    return train, val


def _split_region(item: tuple, fraction: float, patch: int, scale: int) -> tuple[tuple, tuple]:
    """Hold out the last ``fraction`` (at least one patch) of the plane's longer side."""
    name, *arrays = item
    gt = arrays[-1]
    axis = 0 if gt.shape[0] >= gt.shape[1] else 1
    length = gt.shape[axis]
    step = scale if len(arrays) == 2 else 1
    n_val = max(patch, int(math.ceil(fraction * length / step)) * step)
    if length - n_val < patch:
        raise TrainingDataError(
            f"{name} {gt.shape} is too small to split into a training and a validation region of at least "
            f"the patch size {patch} each: it needs {2 * patch} px along its longer side; use a smaller patch "
            "size, more data, or split by plane")
    cut = length - n_val

    def part(a: np.ndarray, lo: int, hi: int, factor: int) -> np.ndarray:
        sl = [slice(None), slice(None)]
        sl[axis] = slice(lo // factor, hi // factor)
        return a[tuple(sl)]

    where = "rows" if axis == 0 else "columns"
    factors = [scale, 1] if len(arrays) == 2 else [1]
    train = (f"{name}[{where} 0:{cut}]", *(part(a, 0, cut, f) for a, f in zip(arrays, factors)))
    val = (f"{name}[{where} {cut}:{length}]", *(part(a, cut, length, f) for a, f in zip(arrays, factors)))
    return train, val
