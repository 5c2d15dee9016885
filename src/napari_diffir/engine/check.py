"""What makes a restoration impossible, found before anything runs.

:func:`check` reads only metadata (shape, dtype, the restorer's info, the settings): no pixel
values, no tensors, no torch, so the widget calls it on every keystroke. :func:`~.plan.plan`
calls the same function and raises its first problem, so a frontend never restates a rule.
:func:`check_finite` is the one check that reads values; the plan runs it on an in-memory
image and every dask block on its own block.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .axes import Layout, axes_for
from .channels import channel_map
from .normalize import MODES
from .settings import DEFAULTS, MIN_TILE, PRECISIONS, SEED_LIMIT, Problem, RestoreSettings

__all__ = ["MIN_IMAGE", "check", "check_finite", "precision_problem"]

MIN_IMAGE = 4
"""Smallest Y and X size of an image, in pixels."""


def check(
    info: Any,
    shape: tuple[int, ...],
    dtype: Any,
    settings: RestoreSettings = DEFAULTS,
    *,
    device_type: str | None = None,
    mask_shape: tuple[int, ...] | None = None,
    auto_tile: int | None = None,
) -> list[Problem]:
    """Every reason why ``info``'s restorer cannot restore an array of ``shape`` and ``dtype``.

    :param info: the restorer's :class:`~napari_diffir.RestorerInfo`; ``None`` checks only
        what does not depend on the restorer.
    :param device_type: the resolved device's type (``cpu``, ``cuda``, ``mps``), when known.
    :param mask_shape: the shape of the inpainting mask, or ``None`` when none is given.
    :param auto_tile: what ``tile_size="auto"`` resolved to, when known (it needs free memory).
    :returns: the problems in the order the engine reports them (it raises the first).
    """
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    problems = _data_problems(shape, dtype)
    if problems:
        return problems
    if settings.rgb is not None and not isinstance(settings.rgb, (bool, np.bool_)):
        return [Problem("rgb", f"rgb must be True, False or None, but got {settings.rgb!r}")]
    if not isinstance(settings.tta, (bool, np.bool_)):
        return [Problem("tta", f"tta must be True or False, but got {settings.tta!r}")]
    try:
        layout = Layout(axes_for(shape, settings.axes, settings.rgb), shape)
    except ValueError as exc:
        return [Problem("axes", str(exc))]
    h, w = layout.yx
    if min(h, w) < MIN_IMAGE:
        problems.append(Problem("axes", (
            f"The image is too small ({h}x{w} in Y, X); at least {MIN_IMAGE}x{MIN_IMAGE} pixels "
            f"are needed (check axes={layout.axes!r})")))
    problems += _device_problems(settings.device)
    precision = precision_problem(settings.precision, device_type)
    if precision is not None:
        problems.append(precision)
    if info is not None and settings.precision not in ("fp32", "auto") and not info.supports_half:
        problems.append(Problem("precision", (
            f"Restorer {info.name!r} does not support precision {settings.precision!r}; use 'fp32'")))
    problems += _steps_problems(info, settings.steps)
    problems += _seed_problems(settings.seed)
    problems += _normalize_problems(settings.normalize, settings.percentiles)
    problems += _channel_problems(info, layout)
    problems += _output_dtype_problems(settings, dtype)
    if info is not None and settings.weights is not None and info.weights_policy == "none":
        problems.append(Problem("weights", f"Restorer {info.name!r} takes no weights; leave weights unset"))
    problems += _tile_problems(info, layout, settings, auto_tile)
    problems += _mask_problems(info, layout, mask_shape)
    return problems


def check_finite(array: np.ndarray) -> None:
    """Raise ``ValueError`` if a float image holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"The image contains {bad} NaN or infinite values; replace them first")


def precision_problem(precision: str, device_type: str | None = None) -> Problem | None:
    """An unknown precision, or one the device cannot run (fp16 on the CPU)."""
    if precision not in PRECISIONS:
        return Problem("precision", f"precision must be one of {PRECISIONS}, but got {precision!r}")
    if precision == "fp16" and device_type == "cpu":
        return Problem("precision", "precision 'fp16' is not supported on the CPU; use 'bf16' or 'fp32'")
    return None


def _data_problems(shape: tuple[int, ...], dtype: np.dtype) -> list[Problem]:
    if 0 in shape:
        return [Problem("data", f"The image is empty (shape {shape})")]
    if np.dtype(dtype) == np.bool_ or not np.issubdtype(dtype, np.number):
        return [Problem("data", f"Expected a numeric image, but got dtype {dtype}")]
    if np.issubdtype(dtype, np.complexfloating):
        return [Problem("data", "Complex images are not supported; pass the magnitude or real part")]
    return []


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def _device_problems(device: Any) -> list[Problem]:
    """A device name that is not ``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` (e.g. ``meta``)."""
    name = getattr(device, "type", None) if not isinstance(device, str) else device.strip().lower()
    if isinstance(name, str) and _DEVICE.fullmatch(name if isinstance(device, str) else name):
        return []
    return [Problem("device", (
        f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', but got {device!r}"))]


def _seed_problems(seed: Any) -> list[Problem]:
    if seed is None:
        return []
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_LIMIT:
        return [Problem("seed", f"seed must be a whole number in 0..{SEED_LIMIT} or None, but got {seed!r}")]
    return []


def _normalize_problems(mode: Any, percentiles: Any) -> list[Problem]:
    if mode not in MODES:
        return [Problem("normalize", f"normalize must be one of {MODES}, but got {mode!r}")]
    try:
        low, high = (float(p) for p in percentiles)
        ok = 0 <= low < high <= 100
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return [Problem("percentiles", (
            f"percentiles must be two numbers (low, high) with 0 <= low < high <= 100, but got {percentiles!r}"))]
    return []


def _channel_problems(info: Any, layout: Layout) -> list[Problem]:
    """A channel count the model cannot take, and a multi-channel result with no C axis to hold it."""
    if info is None:
        return []
    cm = channel_map(layout.channels, info)
    if cm is None:
        return [Problem("restorer", (
            f"Restorer {info.name!r} takes {info.in_channels} channel(s) but the image has "
            f"{layout.channels} (axes {layout.axes!r}, shape {layout.shape}); select a channel or "
            "use a matching restorer"))]
    if "C" not in layout.axes and cm.out_channels != 1:
        return [Problem("restorer", (
            f"Restorer {info.name!r} returns {cm.out_channels} channels, but the image (axes "
            f"{layout.axes!r}) has no C axis to hold them; pass axes with a C axis"))]
    return []


def _output_dtype_problems(settings: RestoreSettings, dtype: np.dtype) -> list[Problem]:
    try:
        out = settings.output_dtype_for(dtype)
    except (TypeError, ValueError):
        out = np.dtype(object)
    if out is None or (out != np.bool_ and (np.issubdtype(out, np.integer) or np.issubdtype(out, np.floating))):
        return []
    return [Problem("output_dtype", (
        "output_dtype must be None, 'input' or a real numeric numpy dtype (e.g. 'uint16', "
        f"'float32'), but got {settings.output_dtype!r}"))]


def _steps_problems(info: Any, steps: Any) -> list[Problem]:
    if steps is None:
        return []
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        return [Problem("steps", f"steps must be a positive integer, but got {steps!r}")]
    if info is not None and not (info.sampling_steps or info.option("steps") is not None):
        return [Problem("steps", f"Restorer {info.name!r} has no sampling steps; leave steps unset")]
    return []


def _tile_problems(info: Any, layout: Layout, settings: RestoreSettings, auto_tile: int | None) -> list[Problem]:
    """A tile too small for the model, and an overlap that leaves no tile between overlaps."""
    problems = []
    size = settings.tile_size
    minimum = max(MIN_TILE, info.min_size if info is not None else 1)
    tile = auto_tile
    if isinstance(size, str) and size == "auto":
        pass
    elif size is not None:
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= minimum:
            tile = int(size)
        else:
            problems.append(Problem("tile_size", f"tile_size must be an integer >= {minimum}, but got {size!r}"))
    given = settings.tile_overlap
    if given is not None:
        try:
            overlap = int(given)
        except (TypeError, ValueError):
            return problems + [Problem("tile_overlap", f"tile_overlap must be an integer >= 0, but got {given!r}")]
        if overlap < 0:
            return problems + [Problem("tile_overlap", f"tile_overlap must be >= 0, but got {given!r}")]
    elif info is not None:
        overlap = info.tile_overlap
    else:
        return problems
    # an overlap the user chose must leave room in every tile; the restorer's own halo matters
    # only where the image needs more than one tile
    if tile is not None and overlap >= tile and (given is not None or max(layout.yx) > tile):
        problems.append(Problem("tile_overlap", (
            f"tile_overlap ({overlap}) must be smaller than the tile size ({tile})")))
    return problems


def _mask_problems(info: Any, layout: Layout, mask_shape: tuple[int, ...] | None) -> list[Problem]:
    if mask_shape is None:
        if info is not None and info.needs_mask:
            return [Problem("mask", f"Restorer {info.name!r} needs a mask (1 = pixels to fill); pass mask=")]
        return []
    yx = layout.yx
    no_c = tuple(n for a, n in zip(layout.axes, layout.shape) if a != "C")
    if tuple(mask_shape) not in (yx, no_c):
        return [Problem("mask", (
            f"mask has shape {tuple(mask_shape)}, but expected {yx} (Y, X) or {no_c} (the image without C)"))]
    if info is not None and not info.needs_mask:
        return [Problem("mask", f"Restorer {info.name!r} takes no mask; leave mask unset")]
    return []
