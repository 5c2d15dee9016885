"""``Result``: a restored array and the provenance that reproduces it.

Every frontend writes its metadata from :meth:`Result.provenance`: the widget into the output
layer, the CLI into the TIFF, ``restore_file`` into the OME-Zarr attributes or the TIFF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..restorer import Restorer, RestorerInfo
from .settings import RestoreSettings

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """What a run produced and how."""

    data: Any
    """The restored array (a dask array for a lazy run, until it is computed)."""
    info: RestorerInfo
    """The restorer's info as built (with the scale and weights of its checkpoint)."""
    settings: RestoreSettings
    seed: int | None
    """The seed used: drawn or given for stochastic restorers, as given for others (``None``
    for a deterministic restorer given none: it ran with the fixed seed 0)."""
    steps: int | None
    """The sampling steps used (the restorer's default when none were given)."""
    tile: int
    overlap: int
    device: str
    seconds: float
    precision: str = "fp32"
    """The precision the run used (``auto`` resolved)."""

    @classmethod
    def of(cls, plan: Plan, data: Any, seconds: float) -> Result:
        info = plan.info
        steps = plan.settings.steps
        return cls(
            data=data, info=info, settings=plan.settings, seed=plan.seed if info.stochastic or plan.settings.seed is not None else None,
            steps=steps if steps is not None else _default_steps(plan.restorer), tile=int(plan.tile),
            overlap=int(plan.overlap), device=str(plan.device), seconds=seconds, precision=plan.precision,
        )

    @property
    def restorer(self) -> str:
        return self.info.name

    @property
    def scale(self) -> int:
        return self.info.scale

    @property
    def weights(self) -> str | None:
        given = self.settings.weights
        return str(given) if given is not None else self.info.weights

    def provenance(self) -> dict:
        """Restorer, weights, options and every decision that reproduces this result."""
        from .. import __version__

        s = self.settings
        return {
            "restorer": self.restorer,
            "weights": self.weights,
            "options": dict(s.options or {}),
            "scale": self.scale,
            "steps": self.steps,
            "seed": self.seed,
            "tile_size": self.tile,
            "tile_overlap": self.overlap,
            "device": self.device,
            "precision": self.precision,
            "tta": bool(s.tta),
            "seconds": round(self.seconds, 3),
            "version": __version__,
        }


def _default_steps(restorer: Restorer) -> int | None:
    value = getattr(restorer, "options", {}).get("steps")
    if value is None:
        opt = restorer.info.option("steps")
        value = opt.default if opt is not None else None
    return value
