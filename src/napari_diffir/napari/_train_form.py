"""What the Train widget's form means, without Qt: its settings, their problems, the training job.

:class:`TrainSettings` holds the form's values (one default each, shown by the widget);
:func:`problems` says, per field, what stops a run, using the training code's own rules (the
validation split is checked by :func:`napari_diffir.training.splits.split` on zero-cost stand-ins
of the layers' planes, names by :func:`~napari_diffir.training.session.check_name`), so the form
and the CLI refuse the same inputs; :func:`make_job` turns settings and layer data into the
:class:`~napari_diffir.training.session.TrainJob` that the CLI's code runs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FAMILIES", "STARTS", "TASKS", "TrainSettings", "default_run_dir", "make_job", "noisy_planes", "plane_shapes",
           "problems", "suggest_name"]

TASKS = {
    "denoise": ("Denoise (synthetic noise)", "denoise", 1, False),
    "denoise-paired": ("Denoise (paired low/high-SNR layers)", "denoise", 1, True),
    "sr2": ("Super-resolution x2", "sr", 2, False),
    "sr4": ("Super-resolution x4", "sr", 4, False),
}
"""Form key -> (label, job task, scale, paired)."""
FAMILIES = {"diffir": "DiffIR", "srdiff": "SRDiff (super-resolution only)"}
STARTS = {"fine-tune": "Fine-tune a bundled model", "scratch": "From scratch (random weights)"}
SPLITS = {"region": "By region (a band of every plane)", "plane": "By plane (whole planes of stacks)"}


@dataclass
class TrainSettings:
    """The Train form's values; every default here is the one the form starts with."""

    task: str = "denoise"
    family: str = "diffir"
    start: str = "fine-tune"
    images: tuple[str, ...] = ()
    """Image layers to train on (clean enough for denoise, high-resolution for SR)."""
    low: str | None = None
    """Paired denoising: the low-SNR layer ..."""
    high: str | None = None
    """... and the high-SNR layer of the same field of view."""
    noise: str = ""
    """Synthetic noise model (``gaussian:SIGMA`` / ``poisson-gaussian:PEAK,READ``); empty: blind."""
    val_split: str = "region"
    val_fraction: float = 0.15
    patch_size: int = 48
    budget_minutes: float = 10.0
    max_steps: int = 100_000
    val_every: int = 100
    batch_size: int = 8
    name: str = "my-model"
    save_to: str = ""
    """Folder the model goes to; empty: the user models folder (listed by every frontend)."""
    run_dir: str = ""
    """Checkpoints and logs; empty: ``<user data>/napari-diffir/runs/<name>``. Same folder: resume."""
    seed: int = 0
    extra: dict = field(default_factory=dict)
    """Further :class:`~napari_diffir.training.session.TrainJob` fields (scripts, tests: ``val_count``)."""

    @property
    def paired(self) -> bool:
        return TASKS[self.task][3]

    @property
    def scale(self) -> int:
        return TASKS[self.task][2]


def default_run_dir(name: str) -> Path:
    from ..restorers.user import models_dir

    return models_dir().parent / "runs" / (name or "model")


def plane_shapes(shape: tuple[int, ...], rgb: bool = False) -> list[tuple[int, int]]:
    """The 2-D planes training reads from a layer of this shape (a stack: one per plane)."""
    dims = [int(d) for d in (shape[:-1] if rgb else shape) if d != 1] or [1]
    if len(dims) < 2:
        return []
    return [tuple(dims[-2:])] * math.prod(dims[:-2])


def noisy_planes(data, rgb: bool, name: str, most: int = 8) -> list[np.ndarray]:
    """Up to ``most`` planes of a layer's data (read lazily: a big dask stack stays on disk)."""
    from ..training.data import to_planes

    shape = tuple(data.shape)
    lead = shape[:-3] if rgb else shape[:-2]
    count = math.prod(lead)
    picks = sorted({int(i) for i in np.linspace(0, count - 1, min(most, count))}) if count else []
    planes = []
    for i in picks:
        index = np.unravel_index(i, lead) if lead else ()
        planes += to_planes(np.asarray(data[index]), name)
    return planes


def _layer_planes(name: str, shape: tuple[int, ...], rgb: bool) -> list[tuple]:
    planes = plane_shapes(shape, rgb)
    return [(f"{name}[{i}]" if len(planes) > 1 else name, np.broadcast_to(np.float32(0), p))
            for i, p in enumerate(planes)]


def problems(s: TrainSettings, layers: dict[str, tuple[tuple[int, ...], bool]]) -> dict[str, str]:
    """Field name -> what is wrong with it; empty when the job can start.

    ``layers`` maps each image layer's name to (shape, rgb).
    """
    from ..training.data import TrainingDataError
    from ..training.noise_model import NoiseModel
    from ..training.session import base_model, check_name
    from ..training.splits import split

    out: dict[str, str] = {}
    if s.family == "srdiff" and s.scale == 1:
        out["family"] = "SRDiff only does super-resolution; denoise with DiffIR"
    if s.start == "fine-tune" and "family" not in out:
        try:
            base_model(s.family, s.scale)
        except TrainingDataError as exc:
            out["start"] = str(exc)
    if s.paired:
        if not s.low or not s.high:
            out["low" if not s.low else "high"] = "Choose the low-SNR and the high-SNR layer"
        elif s.low == s.high:
            out["high"] = "The low-SNR and the high-SNR layer must be different layers"
        elif layers[s.low][0] != layers[s.high][0]:
            out["high"] = (f"The high-SNR layer {s.high!r} {layers[s.high][0]} must have the shape of the "
                           f"low-SNR layer {s.low!r} {layers[s.low][0]}")
        items = [] if out.keys() & {"low", "high"} else [
            (n, a, a) for n, a in _layer_planes(s.high, *layers[s.high])]
    else:
        if not s.images:
            out["images"] = "Choose at least one image layer to train on"
        items = [it for name in s.images if name in layers for it in _layer_planes(name, *layers[name])]
        if s.noise and s.task == "denoise":
            try:
                NoiseModel.parse(s.noise)
            except ValueError as exc:
                out["noise"] = str(exc)
    if items:
        pairs = [(n, a[:: s.scale, :: s.scale], a) for n, a, _ in items] if s.paired else items
        small = [f"{n} {a.shape}" for n, *_, a in pairs if min(a.shape) < s.patch_size]
        if small:
            out["patch_size"] = f"Patch size {s.patch_size} is larger than {small[0]}; use a smaller patch size"
        else:
            try:
                split(pairs, s.val_split, s.val_fraction, s.seed, s.patch_size, s.scale if s.paired else 1)
            except TrainingDataError as exc:
                out["val_split"] = str(exc)
    from ..training.sizes import patch_multiple

    multiple = patch_multiple(s.family, s.scale, "rrdb" if s.start == "scratch" and s.family == "srdiff" else "")
    multiple = max(multiple, patch_multiple(s.family, s.scale, ""))  # every stage of the job must take it
    if s.patch_size % multiple and "patch_size" not in out:
        out["patch_size"] = f"Patch size {s.patch_size} must be a multiple of {multiple} for this model and scale"
    if not s.budget_minutes > 0:
        out["budget_minutes"] = "The time budget must be more than 0 minutes"
    try:
        check_name(s.name, Path(s.save_to) if s.save_to else _models_dir())
    except ValueError as exc:
        out["name"] = str(exc)
    return out


def _models_dir() -> Path:
    from ..restorers.user import models_dir

    return models_dir()


def suggest_name(settings: TrainSettings, taken: set[str]) -> str:
    """A free model name for this task, e.g. ``my-denoise-2``."""
    base = {"denoise": "my-denoise", "denoise-paired": "my-denoise", "sr2": "my-sr2", "sr4": "my-sr4"}[settings.task]
    if settings.family == "srdiff":
        base = base.replace("my-", "my-srdiff-")
    n = 1
    while (name := base if n == 1 else f"{base}-{n}") in taken:
        n += 1
    return name


def make_job(s: TrainSettings, arrays: dict[str, np.ndarray], description: dict | None = None, threads: int | None = None):
    """Write the layers' data into the run folder and describe the job (called off the main thread)."""
    from ..training.session import TrainJob, write_arrays

    run = Path(s.run_dir) if s.run_dir else default_run_dir(s.name)
    _, task, scale, paired = TASKS[s.task]
    common = dict(name=s.name, run_dir=str(run), task=task, scale=scale, family=s.family, start=s.start,
                  val_split=s.val_split, val_fraction=s.val_fraction, patch_size=s.patch_size,
                  batch_size=s.batch_size, steps=s.max_steps, budget_minutes=s.budget_minutes, val_every=s.val_every,
                  seed=s.seed, dest=s.save_to or None, description=description or {}, threads=threads)
    common.update(s.extra)
    if paired:
        stem = _file_stem(s.high or "pair")
        low = write_arrays(run / "data" / "low", {stem: arrays[s.low]})
        high = write_arrays(run / "data" / "high", {stem: arrays[s.high]})
        return TrainJob(paired=(str(Path(low[0]).parent), str(Path(high[0]).parent)), **common)
    files = write_arrays(run / "data" / "images", {n: arrays[n] for n in s.images})
    return TrainJob(data=files, noise=(s.noise or None) if task == "denoise" else None, **common)


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "pair"
