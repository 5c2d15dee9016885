"""Models the user trained (the napari Train widget, ``napari-diffir train``), registered like any restorer.

A user model is a ``<name>.safetensors`` file with its JSON model card ``<name>.json`` (as
:func:`napari_diffir.training.bundle.bundle` writes them) in the user models folder:
``$NAPARI_DIFFIR_MODELS_DIR`` if set, else the platform's user data folder
(``platformdirs.user_data_dir("napari-diffir")/models``, e.g. ``~/.local/share/napari-diffir/models``
on Linux). Each becomes the generic DiffIR or SRDiff restorer with those weights, named by its
card, so it shows in ``napari-diffir list`` and in the Restore widget. Only the cards are read
here: registering stays free of torch. A card that cannot be used is skipped with a warning.

A model saved to another folder (the Train widget's *Save to*) is offered too: that folder is
added for the rest of the session with :func:`add_models_folder`, so the Restore widget lists
the model at once. Later sessions list only the user models folder (``NAPARI_DIFFIR_MODELS_DIR``
points them elsewhere).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from .card_options import with_card_defaults
from .diffir import DiffIRRestorer
from .srdiff import SRDiffRestorer

__all__ = ["ENV_VAR", "PLUGIN_LABEL", "add_models_folder", "models_dir", "models_folders", "register_restorers",
           "restorer_for_card"]

ENV_VAR = "NAPARI_DIFFIR_MODELS_DIR"
PLUGIN_LABEL = "user models"
"""The source these restorers show (``napari-diffir list``, the Restore widget)."""

_session_folders: list[Path] = []
"""Folders outside the user models folder that models were saved to in this session."""


def models_dir() -> Path:
    """The user models folder (not created here)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_data_dir
    except ImportError:  # platformdirs comes with napari; a bare install falls back to the XDG default
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "napari-diffir"
    else:
        base = Path(user_data_dir("napari-diffir", appauthor=False))
    return base / "models"


def add_models_folder(folder: str | os.PathLike) -> bool:
    """List the models in ``folder`` too, for the rest of this session (call
    ``registry.reload()`` after it). Returns False when it is listed already."""
    folder = Path(folder).expanduser().resolve()
    if folder in models_folders():
        return False
    _session_folders.append(folder)
    return True


def models_folders() -> list[Path]:
    """Every folder whose models are registered: the user models folder, then this session's others."""
    folders = [models_dir().expanduser().resolve()]
    folders += [f for f in _session_folders if f not in folders]
    return folders


def restorer_for_card(card: dict[str, Any], weights: Path) -> type:
    """A restorer class for the model described by ``card`` whose weights are ``weights``; the
    options the card recommends (``defaults``) are its defaults.

    :raises ValueError: for an unknown family or a recommended option the restorer refuses.
    """
    name = str(card.get("name") or weights.stem)
    family, scale = card.get("family"), int(card.get("scale") or 1)
    trained = card.get("training") or {}
    what = (f"Your model, trained by napari-diffir ({trained.get('steps', '?')} steps, "
            f"{float(trained.get('wall_time_s') or 0) / 60:.1f} min)")
    best = (card.get("validation") or {}).get("best") or {}
    if best.get("psnr") is not None:
        what += f"; validation PSNR {best['psnr']:.2f} dB"
    what += f". Model card: {weights.with_suffix('.json')}"
    common = dict(name=name, in_channels=1, description=what, weights_policy="optional", bundled_weights=str(weights))
    if family == "diffir":
        task = "super-resolution" if scale > 1 else str(card.get("task") or "denoise")
        kind = f"x{scale}" if scale > 1 else task
        info = DiffIRRestorer.info.replace(
            display_name=f"{name} (DiffIR {kind}, your model)", task=task, scale=scale,
            accepted_tasks=("sr",) if scale > 1 else ("deblur",),
            options=with_card_defaults(DiffIRRestorer.info.options, card), **common)
        return type(f"UserDiffIR_{name}", (DiffIRRestorer,), {"info": info, "__doc__": what})
    if family == "srdiff":
        info = SRDiffRestorer.info.replace(display_name=f"{name} (SRDiff x{scale}, your model)", scale=scale,
                                           options=with_card_defaults(SRDiffRestorer.info.options, card), **common)
        return type(f"UserSRDiff_{name}", (SRDiffRestorer,), {"info": info, "__doc__": what})
    raise ValueError(f"model card family must be 'diffir' or 'srdiff', but got {family!r}")


def _user_models(folder: Path) -> list[tuple[dict, Path]]:
    found = []
    for weights in sorted(folder.glob("*.safetensors")):
        card_path = weights.with_suffix(".json")
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as exc:
            warnings.warn(f"user model {weights} is skipped: its model card {card_path.name} cannot be read ({exc})",
                          UserWarning, stacklevel=3)
            continue
        found.append((card, weights))
    return found


@hookimpl
def register_restorers(register):
    """Register every model in the user models folder and this session's other model folders."""
    found = [m for folder in models_folders() if folder.is_dir() for m in _user_models(folder)]
    for card, weights in found:
        try:
            cls = restorer_for_card(card, weights)
        except ValueError as exc:
            warnings.warn(f"user model {weights} is skipped: {exc}", UserWarning, stacklevel=2)
            continue
        register(cls)
