"""Safe checkpoint loading and architecture detection.

A checkpoint never executes code: ``.pth/.pt/.ckpt`` files are read with
``torch.load(weights_only=True)`` (the legacy non-zip pickle format too) and ``.safetensors``
with safetensors. Official containers are unwrapped (BasicSR ``params_ema``/``params``,
SRDiff ``{'state_dict': {'model': ...}}``, Lightning ``state_dict`` with a ``generator.``
prefix, ``module.`` prefixes), then each model family's descriptor is asked whether it
recognises the keys, in the order of :data:`FAMILIES` (most specific first).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .models import diffir, srdiff
from .models.family import ModelFamily

FAMILIES: tuple[ModelFamily, ...] = (diffir.DESCRIPTOR, srdiff.DESCRIPTOR)
"""The model-family registry: descriptors tried in this order, most specific first (DiffIR's keys
all start with ``G.``/``E.``/``condition.``/``diffusion.``, which no SRDiff dict has)."""

CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "generator")


class CheckpointError(ValueError):
    """The file is not a checkpoint napari-diffir can use; the message says why."""


class UnsupportedCheckpointError(CheckpointError):
    """A readable checkpoint that matches none of the known architectures."""


@dataclass
class LoadedCheckpoint:
    """A model built from a checkpoint plus what was found in the file."""

    path: str
    family: str
    model: torch.nn.Module
    description: dict = field(default_factory=dict)
    container: str = ""
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.path}", f"  family: {self.family}", f"  container: {self.container or 'bare state dict'}"]
        lines += [f"  {k}: {v}" for k, v in self.description.items() if k != "family"]
        return "\n".join(lines)


def read_file(path: str | os.PathLike) -> Any:
    """The raw object in ``path``, read without executing code."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"Checkpoint {path!r} is a folder; pass the .pth/.ckpt/.safetensors file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path!r} is not a readable safetensors file ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path!r} is not a PyTorch weights file, or it holds objects other than tensors and "
            "plain containers (napari-diffir never executes code from checkpoints)"
        ) from None
    except Exception as exc:  # torch raises many types on garbage (IndexError, EOFError, ...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path!r} is truncated or not a PyTorch checkpoint ({first})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def canonicalize(obj: Any) -> tuple[dict[str, torch.Tensor], str, dict]:
    """Unwrap containers to a flat state dict; returns (state dict, container path, extra info)."""
    path: list[str] = []
    extra: dict = {}
    seen: set[int] = set()
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"Expected a state dict or a dict containing one, but got {type(obj).__name__}")
        if id(obj) in seen:  # {'params': <itself>}: unwrapping would never end
            raise CheckpointError(f"The checkpoint's container {'/'.join(path)!r} contains itself; "
                                  "it holds no state dict")
        seen.add(id(obj))
        for key in ("global_step", "epoch", "iter"):
            if key in obj and isinstance(obj[key], (int, float)):
                extra[key] = obj[key]
        for key in CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                path.append(key)
                break
        else:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise CheckpointError(f"No state dict found in the checkpoint (top-level keys: {keys})")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    # Lightning inpainting files hold generator.*, generatorS1.*, discriminator.*, ...: keep only
    # the generator; BasicSR/DDP files may carry module.
    if any(k.startswith("generator.") for k in sd):
        sd = {k[len("generator."):]: v for k, v in sd.items() if k.startswith("generator.")}
        path.append("generator.")
    for prefix in ("module.",):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
            path.append(prefix)
    return sd, "/".join(path), extra


def detect_family(sd: Mapping[str, torch.Tensor]) -> ModelFamily:
    """The first family in :data:`FAMILIES` that recognises ``sd``."""
    for family in FAMILIES:
        if family.detect(sd):
            return family
    tried = ", ".join(f.id for f in FAMILIES)
    sample = ", ".join(list(sd)[:6])
    raise UnsupportedCheckpointError(
        f"The checkpoint matches none of the known architectures (tried: {tried}); "
        f"its first keys are: {sample}"
    )


def check_finite_tensors(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or infinity: a model built from them returns garbage silently."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"The checkpoint holds NaN or infinite weights in {len(bad)} tensor(s) "
                              f"({', '.join(bad[:3])}{more}); the file is damaged or the training diverged")


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str, dict]:
    obj = read_file(path)
    sd, container, extra = canonicalize(obj)
    check_finite_tensors(sd)
    meta = _sidecar_card(path)
    if meta:
        extra["model_card"] = meta
    return sd, container, extra


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read ``path`` safely, detect its architecture and build the model with a strict load."""
    sd, container, extra = load_state_dict(path)
    family = detect_family(sd)
    try:
        model = family.from_state_dict(sd)
    except CheckpointError:
        raise
    except (ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{os.fspath(path)!r} looks like {family.id} but does not load: {exc}") from None
    model.eval()
    return LoadedCheckpoint(
        path=os.fspath(path), family=family.id, model=model, description=family.describe(model),
        container=container, extra=extra,
    )


def _sidecar_card(path: str | os.PathLike) -> dict | None:
    """The JSON model card saved next to project-trained weights (``<name>.json``), if any."""
    base = os.path.splitext(os.fspath(path))[0]
    card = base + ".json"
    if os.path.exists(card):
        try:
            with open(card) as fh:
                return json.load(fh)
        except (OSError, json.JSONDecodeError):
            return None
    return None
