"""Small helpers for reading hyperparameters out of a state dict (shared by every model family).

A *state dict* here is any mapping from dotted key to tensor. The helpers never look at values,
only at key names and shapes, so they also work on meta tensors and on safetensors headers.

Example::

    >>> sd = {"body.0.weight": w, "body.1.weight": w, "body.3.weight": w, "head.bias": b}
    >>> seq_len(sd, "body")
    4
    >>> has_all(sd, "head.bias", "body.0.weight"), has_any(sd, "tail.weight", "head.bias")
    (True, True)
    >>> missing(sd, "head.bias", "head.weight")
    ['head.weight']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["has_all", "has_any", "missing", "seq_len", "shape_of"]


def seq_len(sd: Mapping[str, object], prefix: str) -> int:
    """Length of the ``nn.Sequential``/``ModuleList`` stored under ``prefix``.

    That is one more than the largest integer index ``i`` for which a key starts with
    ``f"{prefix}.{i}."`` (children without parameters, such as activations, leave gaps, which is
    why this is not a count). Returns 0 when no such key exists.
    """
    start = prefix + "."
    largest = -1
    for key in sd:
        if key.startswith(start):
            head = key[len(start):].split(".", 1)[0]
            if head.isdigit():
                largest = max(largest, int(head))
    return largest + 1


def has_all(sd: Mapping[str, object], *keys: str) -> bool:
    """Whether every one of ``keys`` is in ``sd``."""
    return all(k in sd for k in keys)


def has_any(sd: Mapping[str, object], *keys: str) -> bool:
    """Whether at least one of ``keys`` is in ``sd``."""
    return any(k in sd for k in keys)


def missing(sd: Mapping[str, object], *keys: str | Iterable[str]) -> list[str]:
    """The keys among ``keys`` that ``sd`` lacks, in the order given (for error messages)."""
    flat: list[str] = []
    for k in keys:
        flat.extend([k] if isinstance(k, str) else k)
    return [k for k in flat if k not in sd]


def shape_of(sd: Mapping[str, object], key: str) -> tuple[int, ...]:
    """The shape of ``sd[key]`` as a tuple; ``ValueError`` naming the key when it is absent."""
    try:
        value = sd[key]
    except KeyError:
        raise ValueError(f"Expected the state dict to contain {key!r}, but it does not") from None
    return tuple(value.shape)  # type: ignore[attr-defined]
