"""What to export: a bundled model's name, a checkpoint path or a built restorer, as one restorer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..restorer import Restorer

__all__ = ["ExportSource", "export_source"]


@dataclass(frozen=True)
class ExportSource:
    """The restorer to export, its model family and its model card (bundled models only)."""

    restorer: Restorer
    family: str
    card: dict[str, Any] | None


def export_source(model: str | os.PathLike | Restorer, options: dict[str, Any] | None = None) -> ExportSource:
    """Resolve ``model``: a registered restorer name, a DiffIR/SRDiff checkpoint, or a restorer instance."""
    from ..registry import get_restorer

    options = dict(options or {})
    if isinstance(model, Restorer):
        restorer = model
    elif isinstance(model, str) and not os.path.exists(model) and _registered(model):
        restorer = get_restorer(model, **options)
    else:
        restorer = _from_checkpoint(os.fspath(model), options)
    family = restorer.info.checkpoint_family
    net = getattr(restorer, "model", None)
    if family not in ("diffir", "srdiff") or net is None:
        raise ValueError(f"Restorer {restorer.info.name!r} is not a DiffIR or SRDiff model; only those export "
                         "to bioimage.io (a package of another model already exists where it came from)")
    if family == "diffir" and net.hyperparameters["task"] == "inpaint":
        raise ValueError(f"{restorer.info.weights} is a DiffIR inpainting model, which needs a mask as a second "
                         "input; napari-diffir exports single-image models (denoising, deblurring, SR) only")
    card = None
    bundled = restorer.info.bundled_weights
    if bundled is not None and restorer.info.weights == bundled:
        from ..restorers.bundled import model_card

        try:
            card = model_card(restorer.info.name)
        except FileNotFoundError:
            card = None
    return ExportSource(restorer, family, card)


def _registered(name: str) -> bool:
    from ..registry import UnknownRestorerError, restorer_class

    try:
        restorer_class(name)
    except UnknownRestorerError:
        return False
    return True


def _from_checkpoint(path: str, options: dict[str, Any]) -> Restorer:
    from ..checkpoints import load_checkpoint
    from ..registry import get_restorer
    from ..routing import restorer_for_checkpoint

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} is neither a registered restorer nor a checkpoint file")
    loaded = load_checkpoint(path)
    name = restorer_for_checkpoint(loaded.family, loaded.description.get("task"))
    if name is None:
        raise ValueError(f"No installed restorer runs {path!r} ({loaded.family} {loaded.description.get('task')})")
    return get_restorer(name, weights=path, **options)
