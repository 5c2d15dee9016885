"""Axes strings over TZCYX (+ S for samples): validation, defaults, and moving data to (N, C, Y, X)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALLOWED = "STZCYX"
LOOP_AXES = "STZ"


def default_axes(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """The axes napari users mean by default: YX, ZYX (or YXC for RGB/RGBA), TZYX, TZCYX."""
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"Expected an image with at least 2 dimensions (Y, X), but got shape {shape}")
    if rgb and (ndim < 3 or shape[-1] not in (3, 4)):
        raise ValueError(f"rgb=True needs a last axis of 3 or 4 colours and at least 3 dimensions, but "
                         f"the image has shape {tuple(shape)}; leave rgb unset or pass axes=")
    is_rgb = rgb if rgb is not None else (ndim == 3 and shape[-1] in (3, 4))
    if is_rgb:
        return "YXC" if ndim == 3 else "TYXC"[-ndim:] if ndim <= 4 else "TZYXC"[-ndim:]
    defaults = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX", 6: "STZCYX"}
    if ndim not in defaults:
        raise ValueError(f"Cannot guess axes for a {ndim}-D array; pass axes= (letters from {ALLOWED})")
    return defaults[ndim]


def validate_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Upper-case ``axes`` and check it names each dimension of ``shape`` once, with Y and X."""
    if not isinstance(axes, str):
        raise ValueError(f"axes must be a string such as 'ZYX', but got {axes!r}")
    ax = axes.strip().upper()
    bad = sorted(set(ax) - set(ALLOWED))
    if bad:
        raise ValueError(f"axes {axes!r} contains {''.join(bad)!r}; allowed letters are {ALLOWED}")
    if len(set(ax)) != len(ax):
        raise ValueError(f"axes {axes!r} repeats a letter; each axis may appear once")
    if len(ax) != len(shape):
        raise ValueError(
            f"axes {axes!r} has {len(ax)} letters but the data has {len(shape)} dimensions (shape {shape})"
        )
    if "Y" not in ax or "X" not in ax:
        raise ValueError(f"axes {axes!r} must contain both Y and X")
    return ax


def axes_for(shape: tuple[int, ...], axes: str | None = None, rgb: bool | None = None) -> str:
    """``axes`` checked against ``shape``, or the default axes when none are given."""
    return validate_axes(axes, shape) if axes is not None else default_axes(shape, rgb)


@dataclass(frozen=True)
class Layout:
    """How an array with ``axes`` maps to the engine's (N, C, Y, X) working layout."""

    axes: str
    shape: tuple[int, ...]

    @property
    def order(self) -> str:
        """Working order: loop axes as in the input, then C, Y, X."""
        loops = "".join(a for a in self.axes if a in LOOP_AXES)
        return loops + ("C" if "C" in self.axes else "") + "YX"

    @property
    def loop_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.axes if a in LOOP_AXES)

    @property
    def channels(self) -> int:
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def yx(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    def to_work(self, data):
        """View ``data`` as (N, C, Y, X) (a transpose plus reshape; no copy if possible)."""
        perm = [self.axes.index(a) for a in self.order]
        arr = data.transpose(perm)
        y, x = self.yx
        return arr.reshape((-1, self.channels, y, x))

    def from_work(self, work, channels: int, scale: int):
        """Inverse of :meth:`to_work` for an output with ``channels`` and ``scale``."""
        y, x = self.yx
        work_shape = self.loop_shape + (
            (channels,) if "C" in self.axes else ()
        ) + (y * scale, x * scale)
        arr = work.reshape(work_shape)
        perm = [self.order.index(a) for a in self.axes]
        return arr.transpose(perm)

    def output_shape(self, channels: int, scale: int) -> tuple[int, ...]:
        out = []
        for a, n in zip(self.axes, self.shape):
            out.append(n * scale if a in "YX" else channels if a == "C" else n)
        return tuple(out)


def as_array(data) -> np.ndarray:
    """numpy view of array-likes (napari layer data, tifffile/zarr arrays) without copying when possible."""
    if not hasattr(data, "__array__") and hasattr(data, "data"):  # a napari layer
        data = data.data
    return np.asarray(data)
