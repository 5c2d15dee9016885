"""What the Restore widget offers, without Qt: the restorer menu, the weights choices, the texts.

Pure functions over :class:`~napari_diffir.RestorerInfo` and the registry, so the menu grouping
and the weights routing are testable without a viewer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..restorer import RestorerInfo

__all__ = [
    "BUILTIN",
    "HEADER",
    "LOAD",
    "Checkpoint",
    "bundled_weights",
    "describe",
    "describe_checkpoint",
    "inspect_checkpoint",
    "restorer_choices",
    "takes_weights",
    "weights_choices",
    "weights_problem",
]

LOAD = "__load_checkpoint__"
"""The weights value of the "Load checkpoint…" entry."""
HEADER = "__header__:"
"""Prefix of the restorer menu's group headers (disabled entries)."""
TASK_ORDER = ("denoise", "deblur", "super-resolution", "inpaint")
BUILTIN = "napari-diffir (built-in)"
BUNDLED = "Bundled models"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file the user loaded: which restorer runs it and what was detected."""

    restorer: str
    label: str
    summary: str
    path: str
    detected: str = ""


def _task_title(task: str) -> str:
    return {"super-resolution": "Super-resolution"}.get(task, task[:1].upper() + task[1:])


def bundled_weights(info: RestorerInfo) -> str | None:
    """The weights a restorer ships with (bundled models), or None."""
    if info.weights is not None:
        return str(info.weights)
    return info.bundled_weights


def takes_weights(info: RestorerInfo) -> bool:
    """Whether a restorer takes ``weights=`` (DiffIR, SRDiff, plugins that declare it)."""
    return info.weights_policy != "none"


def _is_bundled(info: RestorerInfo) -> bool:
    return info.source == BUILTIN and bundled_weights(info) is not None


def restorer_choices(infos: list[RestorerInfo]) -> list[tuple[str, str]]:
    """Combo-box entries: bundled models first, then one group per task; headers are disabled."""
    groups: dict[str, list[RestorerInfo]] = {}
    for info in infos:
        key = BUNDLED if _is_bundled(info) else _task_title(info.task)
        groups.setdefault(key, []).append(info)
    order = [BUNDLED] + [_task_title(t) for t in TASK_ORDER]
    keys = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    choices: list[tuple[str, str]] = []
    for key in keys:
        choices.append((f"— {key} —", HEADER + key))
        members = sorted(groups[key], key=lambda i: (i.source != BUILTIN, i.display_name.lower()))
        for info in members:
            label = info.display_name
            if info.source and info.source != BUILTIN:
                label += f"  [{info.source}]"
            choices.append((f"  {label}", info.name))
    return choices


def weights_choices(info: RestorerInfo, checkpoints: dict[str, Checkpoint]) -> list[tuple[str, Any]]:
    """Bundled weights (if any), the checkpoints loaded for this restorer, 'Load checkpoint…'."""
    choices: list[tuple[str, Any]] = []
    bundled = bundled_weights(info)
    if bundled is not None:
        choices.append((f"bundled: {os.path.basename(bundled)}", None))
    if takes_weights(info):
        if bundled is None:
            choices.append(("none selected", None))
        for path, ckpt in checkpoints.items():
            if ckpt.restorer == info.name:
                choices.append((ckpt.label, path))
        choices.append(("Load checkpoint…", LOAD))
    elif bundled is None:
        choices.append(("not used", None))
    return choices


def weights_problem(info: RestorerInfo, value: Any) -> str | None:
    """Why the chosen weights cannot run ``info``'s restorer (it needs some), or None."""
    if info.weights_policy == "required" and value in (None, LOAD) and bundled_weights(info) is None:
        return f"'{info.name}' needs weights: choose 'Load checkpoint…'."
    return None


def describe(info: RestorerInfo) -> str:
    """The line under the restorer picker: what it does, its task, scale and source."""
    about = info.description or info.display_name
    details = [f"task: {info.task}"]
    if info.scale > 1 and info.option("scale") is None:
        details.append(f"x{info.scale}")
    if info.source:
        details.append(f"from {info.source}")
    return f"{about} ({', '.join(details)})"


def describe_checkpoint(family: str, description: dict) -> str:
    """The line under the weights picker for a loaded checkpoint: its detected architecture."""
    keys = ("architecture", "variant", "task", "scale", "in_channels", "dim", "hidden_size",
            "params_human", "timesteps")
    shown = ", ".join(f"{k.replace('_', ' ')} {description[k]}" for k in keys if k in description)
    return f"Detected {family}: {shown}" if shown else f"Detected {family}"


def inspect_checkpoint(path: str, current: RestorerInfo | None, registered: dict[str, RestorerInfo]) -> Checkpoint | str:
    """What the checkpoint at ``path`` is and which restorer runs it, or why it cannot be used.

    A file no family recognises goes to ``current`` as is when that is a third-party restorer
    that takes weights (it has its own format); the message never carries a traceback.
    """
    from ..checkpoints import CheckpointError, UnsupportedCheckpointError, load_checkpoint
    from ..routing import restorer_for_checkpoint

    name = os.path.basename(path)
    try:
        loaded = load_checkpoint(path)
    except UnsupportedCheckpointError as exc:
        if current is not None and takes_weights(current) and current.checkpoint_family is None:
            return Checkpoint(current.name, f"{name}", f"{name}: passed to {current.display_name} as is", path)
        return f"Cannot use {name}: {exc}"
    except CheckpointError as exc:
        return f"Cannot use {name}: {exc}"
    except Exception as exc:  # never a traceback in the widget
        return f"Cannot read {name} ({type(exc).__name__}: {exc})"
    desc = dict(loaded.description)
    family = loaded.family
    target = restorer_for_checkpoint(family, desc.get("task"), registered.values())
    if target is None:
        return f"{name} is a {family} checkpoint, but no '{family}' restorer is installed."
    return Checkpoint(target, f"{name} ({family})", loaded.summary(), path,
                      detected=describe_checkpoint(family, desc))
