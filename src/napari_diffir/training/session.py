"""A whole training job for a frontend: data from arrays, every stage in order, the model saved at the end.

The napari Train widget (and any script) describes what it wants as a :class:`TrainJob`; this
module turns it into the ``napari-diffir train`` commands of its stages (stage 1 then stage 2
for DiffIR from scratch, RRDB then diffusion for SRDiff), runs each through the CLI's own
:func:`~napari_diffir.training.cli.train`, and bundles the last stage's best weights with a
model card into the user models folder, where every frontend finds them. The commands are
recorded in ``RUN_DIR/job.json`` and in the card, so a run can be repeated or resumed from the
shell too. Nothing here imports Qt.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import TrainingDataError, to_planes
from .progress import TrainingProgress

__all__ = ["JobProgress", "TrainJob", "base_model", "check_name", "layer_description", "recipe_patch", "run_job",
           "stage_commands", "write_arrays"]

BASE_MODELS = {("diffir", 1): "diffir-denoise", ("diffir", 4): "diffir-sr4", ("srdiff", 4): "srdiff-sr4"}
"""The bundled model a fine-tune starts from, by (family, scale)."""
STAGE_SHARE = {"diffir": (0.4, 0.6), "srdiff": (0.3, 0.7)}
"""How a from-scratch run splits its time budget between its two stages."""


@dataclass
class TrainJob:
    """What to train, on what, for how long; every default is the one the Train widget shows."""

    name: str
    """The new model's name (a restorer name: lower case, no spaces)."""
    run_dir: str
    """Checkpoints, logs and the copied data; running the same job again resumes here."""
    task: str = "denoise"
    """``denoise`` (scale 1) or ``sr`` (scale 2 or 4)."""
    scale: int = 1
    family: str = "diffir"
    start: str = "fine-tune"
    """``fine-tune`` a bundled model, or ``scratch`` (random weights, both stages)."""
    data: list[str] = field(default_factory=list)
    """Clean (denoise) or high-resolution (sr) images: files written by :func:`write_arrays`."""
    paired: tuple[str, str] | None = None
    """(low-SNR folder, high-SNR folder) of matching files instead of synthetic noise."""
    noise: str | None = None
    """Synthetic noise model (``NoiseModel.spec()``); None: the blind preset."""
    val_split: str = "region"
    val_fraction: float = 0.15
    val_count: int = 16
    patch_size: int | None = None
    """GT patch side; None: the bundled recipe's."""
    batch_size: int = 8
    steps: int = 100_000
    """Schedule length; with a budget the budget usually ends the run first."""
    budget_minutes: float | None = 10.0
    val_every: int = 100
    lr: float | None = None
    """None: 5e-4 for a fine-tune (short runs gained more with it than with 2e-4 in
    benchmarks/bench_finetune.py), 2e-4 from scratch (the official recipes)."""
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    dest: str | None = None
    """Folder the model is saved to; None: the user models folder."""
    description: dict = field(default_factory=dict)
    """What the data is (layer names, shapes, dtypes), written into the model card."""

    def __post_init__(self) -> None:
        if self.task not in ("denoise", "sr"):
            raise ValueError(f"task must be 'denoise' or 'sr', but got {self.task!r}")
        if (self.task == "denoise") != (self.scale == 1) or self.scale not in (1, 2, 4):
            raise ValueError(f"task {self.task!r} cannot have scale {self.scale} (denoise: 1; sr: 2 or 4)")
        if self.family not in ("diffir", "srdiff"):
            raise ValueError(f"family must be 'diffir' or 'srdiff', but got {self.family!r}")
        if self.family == "srdiff" and self.task != "sr":
            raise ValueError("SRDiff is a super-resolution model; denoise with DiffIR")
        if self.start not in ("fine-tune", "scratch"):
            raise ValueError(f"start must be 'fine-tune' or 'scratch', but got {self.start!r}")
        if bool(self.data) == bool(self.paired):
            raise TrainingDataError("Give training images or low-/high-SNR pairs (one of them)")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ValueError(f"The time budget must be positive, but got {self.budget_minutes} min")


@dataclass(frozen=True)
class JobProgress:
    """A stage's :class:`TrainingProgress`, and which of the job's stages it is."""

    index: int
    count: int
    report: TrainingProgress


def base_model(family: str, scale: int) -> str:
    """The bundled model a fine-tune of (family, scale) starts from, or a TrainingDataError."""
    name = BASE_MODELS.get((family, scale))
    if name is None:
        have = ", ".join(f"{f} x{s}" if s > 1 else f"{f} denoise" for f, s in BASE_MODELS)
        raise TrainingDataError(f"No bundled {family} x{scale} model to fine-tune (bundled: {have}); "
                                "train from scratch instead")
    return name


def recipe_patch(family: str, scale: int) -> int:
    """The patch size of the bundled recipe of this family and scale."""
    return _recipe(family, scale)[1]


def _recipe(family: str, scale: int) -> tuple[list[str], int]:
    """Architecture flags and patch size of the bundled recipe of this family (from its card)."""
    from ..restorers.bundled import model_card

    card = model_card(BASE_MODELS[(family, 1 if family == "diffir" and scale == 1 else 4)])
    cfg = card["architecture"]["config"]
    join = lambda v: ",".join(map(str, v))  # noqa: E731
    if family == "diffir":
        arch = ["--dim", cfg["dim"], "--num-blocks", join(cfg["num_blocks"]), "--refinement",
                cfg["num_refinement_blocks"], "--heads", join(cfg["heads"]), "--ffn", cfg["ffn_expansion_factor"],
                "--layernorm", cfg["LayerNorm_type"], "--n-encoder-res", cfg["n_encoder_res"], "--n-feats", cfg["n_feats"]]
    else:
        arch = ["--hidden", cfg["hidden"], "--dim-mults", join(cfg["dim_mults"]), "--rrdb-blocks", cfg["rrdb_blocks"],
                "--rrdb-feat", cfg["rrdb_feat"]]
    return [str(a) for a in arch], int(card["training"]["patch_size"])


def stage_commands(job: TrainJob) -> list[list[str]]:
    """The ``napari-diffir train`` arguments of each stage of ``job``, in order."""
    arch, recipe_patch = _recipe(job.family, job.scale)
    patch = job.patch_size or recipe_patch
    run = Path(job.run_dir)
    scale = ["--scale", str(job.scale)]
    data = ["--paired", *job.paired] if job.paired else ["--data", *job.data]
    if job.noise:
        data += ["--noise", job.noise]
    lr = job.lr or (5e-4 if job.start == "fine-tune" else 2e-4)
    common = [*data, "--val-split", job.val_split, "--val-fraction", str(job.val_fraction),
              "--val-count", str(job.val_count), "--patch-size", str(patch), "--batch-size", str(job.batch_size),
              "--steps", str(job.steps), "--val-every", str(job.val_every), "--lr", f"{lr:g}", "--seed", str(job.seed),
              "--device", job.device, "--quiet", "--name", job.name]
    if job.threads:
        common += ["--threads", str(job.threads)]
    shares = (1.0,) if job.start == "fine-tune" else STAGE_SHARE[job.family]

    def budget(i: int) -> list[str]:
        return [] if job.budget_minutes is None else ["--max-minutes", f"{job.budget_minutes * shares[i]:.4g}"]

    if job.family == "diffir":
        head = ["diffir", "--task", "denoise" if job.task == "denoise" else "sr", *scale, *arch]
        if job.start == "fine-tune":
            return [[*head, "--stage", "2", "--init", base_model("diffir", job.scale), *common,
                     "--out", str(run / "s2"), *budget(0)]]
        return [[*head, "--stage", "1", *common, "--out", str(run / "s1"), *budget(0)],
                [*head, "--stage", "2", "--s1", str(run / "s1" / "best.safetensors"), *common,
                 "--out", str(run / "s2"), *budget(1)]]
    head = ["srdiff", *scale, *arch]
    if job.start == "fine-tune":
        base = base_model("srdiff", job.scale)
        return [[*head, "--stage", "diffusion", "--rrdb", base, "--init", base, "--ema", "0.999", *common,
                 "--out", str(run / "diffusion"), *budget(0)]]
    return [[*head, "--stage", "rrdb", *common, "--out", str(run / "rrdb"), *budget(0)],
            [*head, "--stage", "diffusion", "--rrdb", str(run / "rrdb" / "best.safetensors"), "--ema", "0.999",
             *common, "--out", str(run / "diffusion"), *budget(1)]]


def write_arrays(folder: str | os.PathLike, arrays: dict[str, np.ndarray]) -> list[str]:
    """Write named arrays (2-D, ZYX or TYX stacks, any real dtype) as TIFF files the CLI reads;
    each is checked first, so a bad layer is named before anything is written."""
    import tifffile

    for name, a in arrays.items():
        to_planes(np.asarray(a), name)  # raises TrainingDataError naming the layer
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, a in arrays.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"
        path = folder / f"{safe}.tif"
        tmp = path.with_name(f".{path.name}.partial")
        a = np.asarray(a)
        tifffile.imwrite(tmp, a.astype(np.float32) if a.dtype == bool else a)
        os.replace(tmp, path)
        paths.append(str(path))
    return paths


def run_job(job: TrainJob, *, progress: Callable[[JobProgress], None] | None = None, cancel: Any = None,
            log: Callable[[str], None] | None = None) -> Path:
    """Run (or resume) every stage of ``job``, then save the model; returns its weights path.

    A stage that ended (its steps or its share of the budget) is not run again when the job is
    resumed; a cancelled stage resumes from its checkpoint. On cancel
    (:class:`~napari_diffir.training.loop.TrainingCancelled`) nothing is saved as a model.
    """
    from ..restorers.user import models_dir
    from .bundle import bundle
    from .cli import parse_train_args, train

    dest = Path(job.dest) if job.dest else models_dir()
    check_name(job.name, dest)
    commands = stage_commands(job)
    run = Path(job.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "job.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("commands", commands) != commands:
        raise TrainingDataError(f"{run} holds a different training job; choose another run folder to start a new one")
    done: list[int] = state.get("done", [])
    started = time.time()
    for i, argv in enumerate(commands):
        args = parse_train_args(argv)
        if i in done:
            continue
        report = None if progress is None else (lambda p, i=i: progress(JobProgress(i, len(commands), p)))
        train(args, progress=report, cancel=cancel, log=log or (lambda m: None))
        done.append(i)
        _write_json(state_path, {"commands": commands, "done": done, "job": asdict(job)})
    best = Path(parse_train_args(commands[-1]).out) / "best.safetensors"
    shell = ["napari-diffir train " + " ".join(_quote(a) for a in argv) for argv in commands]
    extra = {"data_description": job.description, "job": {"commands": shell, "run_dir": str(run),
             "session_wall_time_s": round(time.time() - started, 1)}}
    saved = bundle(best, job.name, dest, extra=extra)
    from .. import registry

    registry.reload()  # the new model is a restorer from now on (list_restorers, the Restore widget)
    return saved


def check_name(name: str, dest: Path) -> None:
    """Refuse a model name that is not one lower-case word or that another restorer has."""
    from ..registry import list_restorers

    if not name or name != name.strip().lower() or " " in name or "/" in name:
        raise ValueError(f"A model name must be one lower-case word (letters, digits, '-'), but got {name!r}")
    taken = {i.name: i.source for i in list_restorers()}
    own = (dest / f"{name}.safetensors").is_file()  # replacing one's own model is allowed
    if name in taken and not own:
        raise ValueError(f"The name {name!r} is taken by a restorer from {taken[name]}; choose another name")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))


def layer_description(layers: Sequence[tuple[str, np.ndarray]]) -> list[dict]:
    """Name, shape and dtype of each array used, for the model card."""
    return [{"name": n, "shape": list(np.shape(a)), "dtype": str(np.asarray(a).dtype)} for n, a in layers]
