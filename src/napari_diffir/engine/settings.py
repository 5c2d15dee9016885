"""The settings of a restoration: every default written once, and one parser for typed-in text.

Every frontend hands the engine a :class:`RestoreSettings`. ``restore()`` builds it from its
keywords, the CLI from its flags and the widget from its fields, all through :func:`from_text`,
so ``"none"`` typed as a tile size means the same thing everywhere. :func:`~.check.check` then
says what is wrong with the settings for a given image and restorer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .normalize import DEFAULT_PERCENTILES

__all__ = ["DEFAULTS", "MIN_TILE", "PRECISIONS", "Problem", "RestoreSettings", "SettingsError", "from_text"]

MIN_TILE = 32
"""Smallest tile side in input pixels (below it the overlap costs more than the tile gains)."""
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
SEED_LIMIT = 2**31 - 1
"""Largest seed: seeds are drawn from, and folded into, 31 bits."""


@dataclass(frozen=True, kw_only=True)
class RestoreSettings:
    """How to restore: the keywords of :func:`napari_diffir.restore`, with their defaults."""

    axes: str | None = None
    """Letters from ``STZCYX``, one per dimension; ``None``: guessed from ``ndim`` (and ``rgb``)."""
    rgb: bool | None = None
    """Whether the last axis of a 3-D array is colour; ``None``: a last axis of 3 or 4 is."""
    weights: str | None = None
    """Checkpoint for restorers that take one (official DiffIR/SRDiff files too)."""
    options: Mapping[str, Any] | None = None
    """Extra restorer options, e.g. ``{"sampler": "ddim"}``."""
    tile_size: int | str | None = "auto"
    """Tile side in input pixels, ``"auto"`` (from the restorer and free memory) or ``None``
    (the whole image at once)."""
    tile_overlap: int | None = None
    """Overlap between tiles, and the halo around dask blocks; ``None``: the restorer's halo."""
    device: str = "auto"
    """``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda[:N]`` or ``mps``."""
    precision: str = "fp32"
    """``fp32``, ``fp16`` or ``bf16`` (autocast), or ``auto``: bf16 where the device computes it
    natively and the restorer supports it, else fp32 (see :func:`~.device.resolve_precision`)."""
    steps: int | None = None
    """Sampling steps of diffusion restorers; ``None``: the restorer's."""
    seed: int | None = None
    """Seed of stochastic restorers; ``None``: one is drawn and recorded."""
    normalize: str = "percentile"
    """``percentile``, ``minmax``, ``dtype``, ``meanstd`` or ``none``."""
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    """Low and high percentile mapped to 0 and 1 by ``normalize="percentile"``."""
    output_dtype: Any = None
    """``None`` for float32, ``"input"`` for the input's dtype (clipped), or a numpy dtype."""
    tta: bool = False
    """Test-time augmentation: restore the eight flips and quarter turns of every plane and
    average them, turned back (:mod:`.dihedral`); 8x the time, a little less error."""

    def output_dtype_for(self, input_dtype: Any) -> np.dtype | None:
        """The dtype the result is cast to (``None``: left float32); raises for an unknown name."""
        if self.output_dtype is None:
            return None
        if isinstance(self.output_dtype, str) and self.output_dtype == "input":
            return np.dtype(input_dtype)
        return np.dtype(self.output_dtype)


DEFAULTS = RestoreSettings()
FIELDS = tuple(f.name for f in dataclasses.fields(RestoreSettings))


@dataclass(frozen=True)
class Problem:
    """Why a restoration cannot run as set up: the setting at fault and what to change."""

    field: str
    """A :class:`RestoreSettings` field, or ``data``, ``restorer`` or ``mask``."""
    message: str

    def __str__(self) -> str:
        return self.message


class SettingsError(ValueError):
    """Text that does not parse as a setting; :attr:`problems` names every bad field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems))


# A text field is one of its words or a whole number in range.
_WORDS: dict[str, dict[str, Any]] = {
    "tile_size": {"auto": "auto", "none": None},
    "tile_overlap": {"auto": None},
    "steps": {"default": None},
    "seed": {"random": None},
}
_RANGE: dict[str, tuple[int, int | None]] = {
    "tile_size": (MIN_TILE, None),
    "tile_overlap": (0, None),
    "steps": (1, None),
    "seed": (0, SEED_LIMIT),
}


def from_text(
    base: RestoreSettings = DEFAULTS, /, *, labels: Mapping[str, str] | None = None, **values: Any
) -> RestoreSettings:
    """``base`` with ``values`` replaced, text parsed the same way for every frontend.

    Text for ``tile_size`` is ``auto``, ``none`` or a whole number >= 32; for ``tile_overlap``
    ``auto`` or a number >= 0; for ``steps`` ``default`` or a number >= 1; for ``seed``
    ``random`` or a number in 0..2**31-1 (case and surrounding spaces do not matter). Values
    that are not text are taken as they are (:func:`~.check.check` judges them).

    :param labels: how the frontend names each field in messages (``{"tile_size": "--tile"}``);
        by default the field's own name.
    :raises SettingsError: naming every field whose text does not parse.
    :raises TypeError: for a name that is not a setting.
    """
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise TypeError(f"Unknown setting {unknown[0]!r}; settings are {', '.join(FIELDS)}")
    labels = labels or {}
    parsed, problems = {}, []
    for name, value in values.items():
        if isinstance(value, str) and name in _WORDS:
            try:
                value = _parse(value, name, labels.get(name, name))
            except ValueError as exc:
                problems.append(Problem(name, str(exc)))
        parsed[name] = value
    if problems:
        raise SettingsError(problems)
    return dataclasses.replace(base, **parsed)


def _parse(text: str, name: str, label: str) -> Any:
    words = _WORDS[name]
    value = text.strip().lower()
    if value in words:
        return words[value]
    try:
        number = int(value)
    except ValueError:
        expected = " or ".join(repr(w) for w in words)
        raise ValueError(f"{label} expects {expected} or a whole number, but got {text!r}") from None
    low, high = _RANGE[name]
    if number < low:
        raise ValueError(f"{label} must be at least {low}, not {number}")
    if high is not None and number > high:
        raise ValueError(f"{label} must be at most {high}, not {number}")
    return number
