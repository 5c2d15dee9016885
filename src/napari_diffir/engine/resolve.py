"""From what the caller names to a restorer: an instance as given, or a registered name built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..registry import get_restorer
from ..restorer import Restorer


def resolve_restorer(restorer: str | Restorer, weights: Any, options: dict | None) -> Restorer:
    """``restorer`` itself, or the registered restorer of that name built with weights and options."""
    if isinstance(restorer, Restorer):
        if weights is not None or options:
            raise ValueError("weights= and options= apply to a restorer name, not to a Restorer instance")
        return restorer
    if not isinstance(restorer, str):
        raise ValueError(f"restorer must be a registered name or a Restorer, but got {type(restorer).__name__}")
    opts = dict(options or {})
    if weights is not None:
        opts["weights"] = str(weights)
    return get_restorer(restorer, **opts)


@dataclass(frozen=True)
class RestorerSpec:
    """What a worker needs to rebuild a registered restorer: small, picklable, hashable."""

    name: str
    weights: str | None
    options: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, name: str, weights: Any, options: dict | None) -> RestorerSpec:
        opts = tuple(sorted((str(k), v) for k, v in (options or {}).items()))
        return cls(name, None if weights is None else str(weights), opts)

    def build(self) -> Restorer:
        return resolve_restorer(self.name, self.weights, dict(self.options))
