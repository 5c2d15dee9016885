"""Tensors derived from a module's weights (casts, composed kernels), kept until a weight changes.

Under bf16 autocast every float32 weight is cast again on every forward: autocast's own cache
lasts one autocast region, i.e. one tile. For DiffIR's SR x4 net that was 860 casts and ~4 % of
a bf16 forward. :func:`cached` keeps a derived tensor on its module, keyed by the storage,
version (bumped by in-place changes such as ``load_state_dict``), dtype and device of the
weights it was built from, so it is rebuilt exactly when one of them changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

from .onednn import traced

__all__ = ["cached", "cast", "inference"]

T = TypeVar("T")
_STORE = "_derived_weights"


def _version(t: torch.Tensor) -> int | None:
    """In-place changes bump it; tensors made under inference mode have none (None: never stale
    by version, only by storage)."""
    return None if t.is_inference() else t._version


def _key(tensors: Sequence[torch.Tensor]) -> tuple:
    return tuple((t.data_ptr(), _version(t), t.dtype, t.device, t.shape) for t in tensors)


def cached(owner: nn.Module, name: str, sources: Sequence[torch.Tensor], build: Callable[[], T],
           extra: object = None) -> T:
    """``build()`` (run without autograd), reused while the tensors in ``sources`` (and ``extra``)
    are unchanged."""
    store = owner.__dict__.setdefault(_STORE, {})
    key = (_key(sources), extra)
    hit = store.get(name)
    if hit is None or hit[0] != key:
        with torch.no_grad():
            hit = store[name] = (key, build())
    return hit[1]


def inference(*tensors: torch.Tensor) -> bool:
    """Whether a derived copy of ``tensors`` may stand in for them: no gradient needed, no trace."""
    if traced():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def cast(owner: nn.Module, name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)``, cached on ``owner`` under ``name`` in inference (see :func:`inference`)."""
    if tensor.dtype == dtype:
        return tensor
    if not inference(tensor):
        return tensor.to(dtype)
    return cached(owner, f"{name}:{dtype}", (tensor,), lambda: tensor.detach().to(dtype))
