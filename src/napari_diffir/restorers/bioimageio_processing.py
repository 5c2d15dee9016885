"""A bioimage.io package's pointwise pre/postprocessing steps, applied to one (B, C, H, W) tile.

Only steps whose result at a pixel depends on that pixel alone (and fixed parameters) are here:
they give the same values tiled or not. Steps that need image statistics are mapped onto the
engine's normalisation or refused by :mod:`.bioimageio_package`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["apply_steps"]


def apply_steps(x: torch.Tensor, steps: Sequence[Any]) -> torch.Tensor:
    """``x`` after each step in order (``steps``: bioimageio.spec 0.5 processing descriptions)."""
    import torch

    for step in steps:
        k = step.kwargs
        if step.id == "scale_linear":
            x = x * _per_channel(k.gain, x) + _per_channel(k.offset, x)
        elif step.id == "fixed_zero_mean_unit_variance":
            x = (x - _per_channel(k.mean, x)) / _per_channel(k.std, x)
        elif step.id == "clip":
            x = x.clamp(min=k.min, max=k.max)
        elif step.id == "binarize":
            x = (x > _per_channel(k.threshold, x)).to(x.dtype)
        elif step.id == "sigmoid":
            x = torch.sigmoid(x)
        elif step.id == "softmax":
            x = torch.softmax(x, dim=1)
        elif step.id == "ensure_dtype":
            x = _ensure_dtype(x, str(k.dtype))
        else:  # read_package lets no other step through
            raise ValueError(f"Unsupported processing step {step.id!r}")
    return x


def _per_channel(value: Any, x: torch.Tensor) -> Any:
    """A scalar, or a per-channel list as a (1, C, 1, 1) tensor."""
    import torch

    if isinstance(value, (list, tuple)):
        return torch.tensor(value, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return value


def _ensure_dtype(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """Integer dtypes round and clip to their range (values stay float for the next step)."""
    import numpy as np

    if dtype.startswith(("uint", "int")):
        info = np.iinfo(dtype)
        return x.round().clamp(float(info.min), float(info.max))
    if dtype == "bool":
        return (x != 0).to(x.dtype)
    return x
