"""What the Restore widget offers, without Qt: the restorer menu, the weights choices, the texts.

Pure functions over :class:`~napari_diffir.RestorerInfo` and the registry, so the menu grouping
and the weights routing are testable without a viewer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ..restorer import RestorerInfo

__all__ = [
    "BUILTIN",
    "HEADER",
    "LOAD",
    "Checkpoint",
    "bundled_timesteps",
    "bundled_weights",
    "checkpoint_driven",
    "default_steps",
    "default_steps_text",
    "describe",
    "describe_checkpoint",
    "fixed_scale",
    "inspect_checkpoint",
    "option_words",
    "plain_description",
    "restorer_choices",
    "stage_one_problem",
    "takes_weights",
    "weights_choices",
    "weights_problem",
    "widget_message",
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
    scale: int | None = None
    """The upscaling factor the checkpoint was trained for (None: not known)."""
    timesteps: int | None = None
    """The diffusion steps it was trained with (SRDiff; None: not known)."""


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


def checkpoint_driven(info: RestorerInfo) -> bool:
    """Whether the restorer runs only with a checkpoint the user loads (none ships with it)."""
    return info.weights_policy == "required" and bundled_weights(info) is None


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
            if checkpoint_driven(info) and "(checkpoint)" not in label:
                label += " (checkpoint)"
            if info.source and info.source != BUILTIN:
                label += f"  [{info.source}]"
            choices.append((f"  {label}", info.name))
    return choices


def weights_choices(info: RestorerInfo, checkpoints: dict[str, Checkpoint]) -> list[tuple[str, Any]]:
    """Bundled weights (if any), the checkpoints loaded for this restorer, 'Load checkpoint…'."""
    choices: list[tuple[str, Any]] = []
    bundled = bundled_weights(info)
    if bundled is not None:
        choices.append((f"bundled ({_stem(bundled)})", None))
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


def _stem(path: str) -> str:
    name = os.path.basename(path)
    return name.split(".")[0] if "." in name else name


def weights_problem(info: RestorerInfo, value: Any) -> str | None:
    """Why the chosen weights cannot run ``info``'s restorer (it needs some), or None."""
    if info.weights_policy == "required" and value in (None, LOAD) and bundled_weights(info) is None:
        return f"'{info.name}' needs weights: choose 'Load checkpoint…'."
    return None


_DEVELOPER_TEXT = (
    # code and file references, e.g. "(napari_diffir.restorers.bundled.model_card('x'))"
    (re.compile(r"\s*\((?:[^()]|\([^()]*\))*(?:napari_diffir\.|\.json|/)(?:[^()]|\([^()]*\))*\)"), ""),
    (re.compile(r"\s*given with weights=\s*"), " "),
    (re.compile(r"\bweights=\s*"), ""),
    (re.compile(r"\s+([:;,.])(?=\s|$)"), r"\1"),
    (re.compile(r"\s{2,}"), " "),
)


def _plain(text: str) -> str:
    for pattern, repl in _DEVELOPER_TEXT:
        text = pattern.sub(repl, text)
    return text.strip()


def plain_description(info: RestorerInfo) -> tuple[str, str]:
    """(one plain line, the whole text) describing a restorer, without code or file references.

    The line is the description's first sentence; the whole text (for the tooltip) adds the
    task, the scale and where the restorer comes from.
    """
    about = _plain(info.description or info.display_name)
    first = re.split(r"(?<=[.:])\s+(?=[A-Z(])|[:;]\s", about, maxsplit=1)[0]
    first = re.sub(r"\s*\([^()]*\)", "", first).rstrip(".;: ")  # the details are in the tooltip
    details = [_TASK_WORDS.get(info.task, info.task)]
    if info.scale > 1 and (info.option("scale") is None or bundled_weights(info) is not None):
        details.append(f"x{info.scale}")
    if checkpoint_driven(info):
        details.append("load a checkpoint to use it")
    if info.source and info.source != BUILTIN:
        details.append(f"from {info.source}")
    elif info.source:
        details.append("built in")
    return first, f"{about}\n\n{', '.join(details).capitalize()}."


def describe(info: RestorerInfo) -> str:
    """The line under the restorer picker: its first sentence (and the plugin it comes from)."""
    first, _whole = plain_description(info)
    if info.source and info.source != BUILTIN:
        first += f" (from {info.source})"
    return first


_TASK_WORDS = {"sr": "super-resolution", "super-resolution": "super-resolution",
               "deblur": "deblurring and denoising", "denoise": "denoising",
               "inpaint": "inpainting", "restore": "restoration"}


def _parameters(description: dict) -> str | None:
    count = description.get("params", description.get("parameters"))
    if isinstance(count, (int, float)) and count > 0:
        return f"{count / 1e6:.1f} M parameters" if count >= 1e5 else f"{int(count):,} parameters"
    return None


def _trained_on(card: dict | None) -> str | None:
    sources = ((card or {}).get("data") or {}).get("sources") or []
    names = [os.path.basename(str(s).split(":", 1)[-1].rstrip("/\\")) for s in sources]
    return f"trained on {', '.join(names)}" if names else None


def describe_checkpoint(family: str, description: dict, card: dict | None = None) -> str:
    """A loaded checkpoint in a user's words: size, what it does, its channels and training data.

    E.g. "SRDiff: 3.1 M parameters, super-resolution x4, grayscale, trained on nuclei, …".
    """
    task = str(description.get("task", ""))
    what = _TASK_WORDS.get(task, task.replace("-", " "))
    scale = description.get("scale")
    if isinstance(scale, int) and scale > 1:
        what = f"{what} x{scale}"
    channels = description.get("in_channels")
    colour = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels} channels" if channels else None)
    parts = [p for p in (_parameters(description), what or None, colour, _trained_on(card)) if p]
    name = {"diffir": "DiffIR", "srdiff": "SRDiff"}.get(family, family)
    return f"{name}: {', '.join(parts)}" if parts else name


def fixed_scale(info: RestorerInfo, checkpoint: Checkpoint | None) -> int | None:
    """The scale the chosen weights fix (a bundled model's, a loaded checkpoint's), or None."""
    if checkpoint is not None:
        return checkpoint.scale
    if bundled_weights(info) is not None:
        return info.scale
    return None


def stage_one_problem(name: str, description: dict) -> str | None:
    """Why a DiffIR stage-1 checkpoint cannot restore on its own, and what to load instead."""
    if description.get("stage") == 1 or description.get("needs_gt"):
        return (f"{name} is a DiffIR stage-1 checkpoint: it needs the clean image to restore, so it "
                "only serves training. Load the stage-2 checkpoint of the same release (its name "
                "usually has 'S2' in it).")
    return None


def inspect_checkpoint(path: str, current: RestorerInfo | None, registered: dict[str, RestorerInfo]) -> Checkpoint | str:
    """What the checkpoint at ``path`` is and which restorer runs it, or why it cannot be used.

    A file no family recognises goes to ``current`` as is when that is a third-party restorer
    that takes weights (it has its own format); the message never carries a traceback.
    """
    from ..checkpoints import CheckpointError, UnsupportedCheckpointError, load_checkpoint
    from ..restorers.bioimageio_package import is_package
    from ..routing import restorer_for_checkpoint

    if is_package(path):  # a bioimage.io package: weights of the 'bioimageio' restorer
        from ._package import inspect_package

        return inspect_package(path, registered)
    name = os.path.basename(path)
    try:
        loaded = load_checkpoint(path)
    except UnsupportedCheckpointError as exc:
        if current is not None and takes_weights(current) and current.checkpoint_family is None:
            return Checkpoint(current.name, f"{name}", f"{name}: passed to {current.display_name} as is", path)
        return f"Cannot use {name}: {_without_path(str(exc), path)}"
    except CheckpointError as exc:
        return f"Cannot use {name}: {_without_path(str(exc), path)}"
    except Exception as exc:  # never a traceback in the widget
        return f"Cannot read {name} ({type(exc).__name__}: {exc})"
    desc = dict(loaded.description)
    family = loaded.family
    refused = stage_one_problem(name, desc)
    if refused:
        return refused
    target = restorer_for_checkpoint(family, desc.get("task"), registered.values())
    if target is None:
        return f"{name} is a {family} checkpoint, but no '{family}' restorer is installed."
    scale = desc.get("scale")
    return Checkpoint(target, f"{name} (checkpoint)", loaded.summary(), path,
                      detected=describe_checkpoint(family, desc, (loaded.extra or {}).get("model_card")),
                      scale=scale if isinstance(scale, int) else None,
                      timesteps=desc.get("timesteps") if isinstance(desc.get("timesteps"), int) else None)


def _without_path(message: str, path: str) -> str:
    """A checkpoint error without the file's full path (the file is named already)."""
    return message.replace(repr(path), "the file").replace(path, "the file")


_API_WORDS = (
    (re.compile(r"\(omit scale= or pass scale=(\d+)\)"), r"(choose scale \1)"),
    (re.compile(r";?\s*pass mask=\s*$"), ": choose a Mask layer"),
    (re.compile(r";?\s*pass axes=\s*"), "; type the Axes "),
    (re.compile(r"\btile_size\b"), "Tile size"),
    (re.compile(r"\btile_overlap\b"), "Tile overlap"),
    (re.compile(r"\boutput_dtype\b"), "Output type"),
    (re.compile(r"\b(precision|device)='([^']*)'"), r"\1 \2"),
    (re.compile(r"\bweights=<[^>]*>"), "a checkpoint (Load checkpoint…)"),
    (re.compile(r"\bweights="), "a checkpoint"),
)


def widget_message(text: str) -> str:
    """An engine message phrased for the form: field names as labelled, no keyword arguments,
    and files named by their name only (the form shows where they are when that matters)."""
    for pattern, repl in _API_WORDS:
        text = pattern.sub(repl, text)
    return re.sub(r"'(?:[A-Za-z]:)?[^'\s]*[/\\]([^'\s/\\]+)'", r"'\1'", text)


_OPTION_WORDS = {
    "eta": ("Eta", "How much fresh noise the ddim sampler adds at each step: 0 = the same result for "
                   "the same seed, 1 = as random as the original sampler. Only the ddim sampler uses it."),
    "exact_lr_up": ("8-bit input", "Scale the input by 255/256 before upsampling, exactly as the "
                                   "official SRDiff pipeline does for 8-bit images. Leave off for "
                                   "microscopy data."),
    "sampler": ("Sampler", "dpm++2m (default): fast, 20 steps; ddim: fast, deterministic with Eta 0; "
                           "dpm++2m-sde: fast, adds noise; ddpm: the original sampler, every trained "
                           "step (slow)."),
    "steps": ("Steps", "Sampling steps: more is slower and usually a little sharper. Leave empty "
                       "for the default shown."),
}


def option_words(opt) -> tuple[str, str]:
    """(label, tooltip) of a restorer option in the form: plain words where the option is known."""
    label, tooltip = _OPTION_WORDS.get(opt.name, (opt.name.replace("_", " ").capitalize(), opt.help or ""))
    return label, tooltip


def default_steps_text(sampler: str | None, timesteps: int | None) -> str:
    """What an empty Steps field stands for, e.g. "20 (default)" (all trained steps for ddpm)."""
    from ..models.samplers import FAST_DEFAULT_STEPS

    if sampler == "ddpm":
        return f"{timesteps} (default)" if timesteps else "all trained steps (default)"
    steps = FAST_DEFAULT_STEPS if timesteps is None else min(FAST_DEFAULT_STEPS, timesteps)
    return f"{steps} (default)"


def default_steps(sampler: str | None, timesteps: int | None) -> int | None:
    """The number :func:`default_steps_text` shows (None when the trained steps are unknown)."""
    from ..models.samplers import FAST_DEFAULT_STEPS

    if sampler == "ddpm":
        return timesteps
    return FAST_DEFAULT_STEPS if timesteps is None else min(FAST_DEFAULT_STEPS, timesteps)


def bundled_timesteps(info: RestorerInfo) -> int | None:
    """The trained diffusion steps of a bundled model, from its model card (no torch)."""
    if not _is_bundled(info):
        return None
    from ..restorers.bundled import model_card

    try:
        card = model_card(info.name)
    except (FileNotFoundError, ValueError):
        return None
    hp = (card.get("architecture") or {}).get("hyperparameters") or {}
    value = hp.get("timesteps")
    return int(value) if isinstance(value, int) else None
