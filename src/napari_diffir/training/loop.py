"""The training loop shared by every stage: seeds, EMA, checkpoints, resume, validation, progress.

A *stage* (see ``training/diffir.py`` and ``training/srdiff.py``) says what is trained and how the
loss is computed; this module does everything else the same way for all of them, so that every
run can be stopped at any moment and resumed, and every checkpoint is a shippable
``.safetensors`` file with a JSON model card beside it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..engine.cancel import is_cancelled
from .progress import TrainingBudgetError, TrainingCancelled, TrainingProgress

__all__ = ["EMA", "LoopConfig", "Stage", "TrainingBudgetError", "TrainingCancelled", "TrainingProgress", "evaluate",
           "load_card", "psnr_ssim", "run_stage", "save_weights", "train_step"]

CARD_SUFFIX = ".json"
BUDGET_PROBE_STEPS = 5
"""Steps a budgeted run times before it fits its schedule to the budget (the first is not counted)."""
BUDGET_MARGIN = 0.9
"""Share of the budget the fitted schedule plans for: step times vary, the schedule should end first."""


@dataclass
class LoopConfig:
    """Settings every stage shares (sizes, steps and timings; not the model)."""

    out_dir: str
    steps: int = 1000
    batch_size: int = 8
    patch_size: int = 64
    lr: float = 2e-4
    ema: float = 0.999
    seed: int = 0
    val_every: int = 200
    checkpoint_minutes: float = 3.0
    max_minutes: float | None = None
    stop_after: int | None = None
    """Stop (and save) after this many steps in this session: chunked runs, e.g. on a cluster."""
    threads: int | None = None
    progress: bool = True
    resume: bool = True
    command: str = ""
    amp: str = "bf16"
    """Autocast dtype of the training step ("bf16" or "none"); validation always runs in fp32."""
    channels_last: bool = True
    """Train with channels-last weights and batches (1.15-1.2x steps/s for the SR recipes on CPU)."""
    device: str = "cpu"
    compile: bool = False
    """``torch.compile`` the stage's loss (SRDiff: 1.18x steps/s after ~5 min of compiling on CPU)."""
    lr_scales: dict[str, float] = field(default_factory=dict)
    """Multipliers of the scheduled learning rate for some of the net's parameters (by name):
    the blocks ``--grow`` added start untrained while the rest is converged."""
    ema_warmup: bool = True
    """Ramp the EMA decay up from 0 (a run from random weights); a fine-tune (``--init``) keeps the
    full decay from its first step, so its EMA starts at the trained weights and stays near them."""
    workers: int = 0
    """Processes that cut and degrade batches ahead of the training step (0: in the loop itself).
    Batches depend only on (seed, step), so any number of workers trains exactly the same run."""


class Stage(Protocol):
    """What a trainer stage provides to :func:`run_stage`."""

    name: str
    net: nn.Module  # everything whose weights are trained and checkpointed

    def parameters(self) -> list[nn.Parameter]: ...
    def lr_at(self, step: int, total: int, base_lr: float) -> float: ...
    def loss(self, lq: torch.Tensor, gt: torch.Tensor, step: int, total: int) -> tuple[torch.Tensor, dict]: ...
    def predict(self, net: nn.Module, lq: torch.Tensor, seed: int, gt: torch.Tensor | None = None) -> torch.Tensor: ...
    def export(self, net: nn.Module) -> tuple[nn.Module, dict]: ...
    # optional: phase_starts() -> tuple of functions total -> first step of a phase that costs
    # more per step than the first (a time budget then times each before fixing the schedule)


class EMA:
    """Exponential moving average of a module's floating tensors (BasicSR's ``net_g_ema``).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so short runs are not dominated by
    the random initialisation; buffers are copied as they are.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.decay > 0 else 0.0
        # named_parameters/buffers skip aliases (DiffIRS2 registers CPEN_S2 and the denoiser
        # twice), so every tensor is averaged exactly once
        src = dict(net.named_parameters())
        for k, v in self.net.named_parameters():
            v.mul_(d).add_(src[k].detach(), alpha=1 - d)
        src_b = dict(net.named_buffers())
        for k, v in self.net.named_buffers():
            v.copy_(src_b[k])


# --------------------------------------------------------------------------- metrics


def psnr_ssim(out: torch.Tensor, gt: torch.Tensor, crop: int = 0) -> tuple[float, float]:
    """Mean PSNR / SSIM over a batch, data range 1 (the normalised space), ``crop`` border px."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ps, ss = [], []
    for o, g in zip(out.float().cpu().numpy(), gt.float().cpu().numpy()):
        o, g = o[0], g[0]
        if crop:
            o, g = o[crop:-crop, crop:-crop], g[crop:-crop, crop:-crop]
        o = np.clip(o, 0, 1)
        g = np.clip(g, 0, 1)
        ps.append(peak_signal_noise_ratio(g, o, data_range=1.0))
        ss.append(structural_similarity(g, o, data_range=1.0))
    return float(np.mean(ps)), float(np.mean(ss))


@torch.no_grad()
def evaluate(stage: Stage, net: nn.Module, val: tuple[torch.Tensor, torch.Tensor], seed: int, batch: int = 4) -> dict:
    """PSNR/SSIM of the stage's prediction on the fixed validation pairs (on the net's device)."""
    lq, gt = val
    device = next(net.parameters()).device
    outs = [stage.predict(net, lq[i : i + batch].to(device), seed + i, gt=gt[i : i + batch].to(device)).cpu()
            for i in range(0, len(lq), batch)]
    p, s = psnr_ssim(torch.cat(outs), gt)
    return {"psnr": round(p, 3), "ssim": round(s, 4)}


# --------------------------------------------------------------------------- files


def save_weights(net: nn.Module, path: str | os.PathLike, card: dict | None = None) -> None:
    """Write ``net``'s full state dict as safetensors (aliased tensors cloned, so it loads
    strictly), then its model card as JSON next to it; both written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu").clone().contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    if card is not None:
        _write_json(path.with_suffix(CARD_SUFFIX), card)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".jsontmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def load_card(path: str | os.PathLike) -> dict:
    """Read the JSON model card that sits next to a ``.safetensors`` file."""
    return json.loads(Path(path).with_suffix(CARD_SUFFIX).read_text())


def _load_into(net: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(path)), strict=True)


# --------------------------------------------------------------------------- loop


@dataclass
class _State:
    step: int = 0
    wall_time: float = 0.0
    history: list = field(default_factory=list)
    best: dict | None = None
    schedule_total: int | None = None
    """The schedule's length fitted to a time budget (None: ``cfg.steps``); kept across resumes."""


def run_stage(
    stage: Stage,
    sampler: Any,
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: LoopConfig,
    card: dict,
    *,
    log: Callable[[str], None] | None = None,
    progress: Callable[[TrainingProgress], None] | None = None,
    cancel: Any = None,
) -> dict:
    """Train ``stage`` for ``cfg.steps`` steps (or ``cfg.max_minutes``), resuming if possible.

    With a time budget the learning-rate schedule (and any step-dependent loss) runs over the
    steps the budget allows, not over ``cfg.steps``: after :data:`BUDGET_PROBE_STEPS` timed steps
    its length is fixed to what fits in :data:`BUDGET_MARGIN` of the budget (validations
    included, never more than ``cfg.steps``), recorded in ``state.json`` so a resumed run
    continues the same schedule, and the run ends when the schedule does.

    Writes into ``cfg.out_dir``: ``last.safetensors`` / ``last_ema.safetensors`` (+ cards),
    ``best.safetensors`` (EMA weights with the best validation PSNR, exported for inference),
    ``optimizer.pt`` and ``state.json`` (step, wall time, validation history) for resuming,
    and ``log.jsonl``. Returns the final model card.

    ``progress`` receives a :class:`TrainingProgress` after every step and validation.
    ``cancel`` (an event with ``is_set()`` or a callable returning True) is looked at before
    every step: the run then writes its checkpoint and raises :class:`TrainingCancelled`, so
    the same configuration resumes it. A ``cfg.max_minutes`` shorter than one validation
    raises :class:`TrainingBudgetError` before the first step.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise TrainingBudgetError(f"The time budget must be positive, but got {cfg.max_minutes} min")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = stage.net
    device = torch.device(cfg.device)
    stage.to(device)  # the stage holds the net and any frozen teacher
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    params = stage.parameters()
    if cfg.compile:
        stage.loss = torch.compile(stage.loss)  # an instance attribute: the class stays eager
    opt = torch.optim.Adam(_param_groups(net, params, cfg.lr_scales), lr=cfg.lr,
                           betas=getattr(stage, "betas", (0.9, 0.99)))
    ema = EMA(net, cfg.ema) if cfg.ema > 0 else None
    warmed = 0 if cfg.ema_warmup else 10**9  # EMA.update's warm-up is over after ~10/(1-decay) updates
    if ema is not None:
        ema.updates = warmed
    state = _State()

    if cfg.resume and (out / "state.json").exists() and (out / "last.safetensors").exists():
        _load_into(net, out / "last.safetensors")
        if ema is not None and (out / "last_ema.safetensors").exists():
            _load_into(ema.net, out / "last_ema.safetensors")
        if (out / "optimizer.pt").exists():
            opt.load_state_dict(torch.load(out / "optimizer.pt", weights_only=True, map_location=device))
        saved = json.loads((out / "state.json").read_text())
        state = _State(saved["step"], saved["wall_time"], saved.get("history", []), saved.get("best"),
                       saved.get("schedule_total"))
        if ema is not None:
            ema.updates = warmed + state.step
        log(f"[{stage.name}] resumed from {out} at step {state.step}")

    def total() -> int:
        return state.schedule_total or cfg.steps

    def schedule_kind() -> str:
        if state.schedule_total is not None:
            return "budget"
        return "measuring" if cfg.max_minutes is not None else "steps"

    def card_now(kind: str) -> dict:
        c = dict(card)
        c["training"] = dict(
            card.get("training", {}),
            stage=stage.name,
            steps=state.step,
            planned_steps=cfg.steps,
            schedule_steps=total(),
            schedule=schedule_kind(),
            wall_time_s=round(state.wall_time, 1),
            batch_size=cfg.batch_size,
            patch_size=cfg.patch_size,
            base_lr=cfg.lr,
            ema=cfg.ema,
            seed=cfg.seed,
            weights=kind,
            command=cfg.command,
            amp=cfg.amp,
            channels_last=cfg.channels_last,
            compiled=cfg.compile,
            torch=torch.__version__,
            machine=_machine(device),
        )
        c["validation"] = {"history": state.history[-20:], "best": state.best, "pairs": int(len(val[0]))}
        return c

    def checkpoint() -> None:
        save_weights(net, out / "last.safetensors", card_now("raw"))
        if ema is not None:
            save_weights(ema.net, out / "last_ema.safetensors", card_now("ema"))
        torch.save(opt.state_dict(), out / "optimizer.pt")
        _write_json(out / "state.json", asdict(state))

    def validate(budget_check: bool = False) -> None:
        eval_net = ema.net if ema is not None else net
        was_training = net.training
        net.eval()
        started = time.time()
        metrics = evaluate(stage, eval_net, val, cfg.seed)
        net.train(was_training)
        took = time.time() - started
        val_times.append(took)
        if budget_check and cfg.max_minutes is not None and cfg.max_minutes * 60 < took:
            raise TrainingBudgetError(
                f"[{stage.name}] a time budget of {cfg.max_minutes * 60:.1f} s is too short to reach one validation: "
                f"validating the {len(val[0])} validation patches takes {took:.1f} s here; give at least "
                f"{math.ceil(took * 3)} s or use fewer validation patches")
        entry = {"step": state.step, **metrics}
        state.history.append(entry)
        improved = state.best is None or metrics["psnr"] > state.best["psnr"]
        if improved:
            state.best = entry
        exported, _ = stage.export(eval_net)
        if improved:
            save_weights(exported, out / "best.safetensors", card_now("ema" if ema else "raw"))
        save_weights(exported, out / "final.safetensors", card_now("ema" if ema else "raw"))
        _append_log(out, {"event": "val", **entry, "wall_time_s": round(state.wall_time, 1)})
        log(f"[{stage.name}] step {state.step}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}")
        report("validation")

    step_times: list[float] = []
    val_times: list[float] = []
    last: dict = {"loss": None, "parts": {}, "lr": None}

    def report(event: str) -> None:
        if progress is None:
            return
        elapsed = time.time() - session_start
        eta = None
        if step_times:
            per_step = float(np.mean(step_times[-20:]))
            eta = per_step * max(0, total() - state.step)
            if cfg.max_minutes is not None:
                eta = min(eta, max(0.0, cfg.max_minutes * 60 - elapsed))
        if event == "done":
            eta = 0.0
        progress(TrainingProgress(stage=stage.name, event=event, step=state.step, total=total(),
                                  schedule=schedule_kind(),
                                  loss=last["loss"], parts=dict(last["parts"]), lr=last["lr"],
                                  validation=state.history[-1] if state.history else None,
                                  elapsed_s=round(elapsed, 3), eta_s=eta))

    def fit_schedule(lq: torch.Tensor, gt: torch.Tensor) -> None:
        """Fix the schedule's length to the steps left in the budget at the measured pace.

        A stage whose later phases cost more per step (DiffIR stage 2's DIRformer joins after
        the encoder warm-up) has each of them timed on this batch first, without an update.
        """
        timed = step_times[1:] or step_times  # the first step pays for allocations
        per_step = float(np.median(timed))
        overhead = float(np.mean(val_times)) / cfg.val_every if cfg.val_every and val_times else 0.0
        starts = getattr(stage, "phase_starts", None)
        phases = starts() if starts is not None else ()
        later = {}
        if phases:
            # a probe is the forward and backward alone: what a step adds to it (the batch, the
            # optimiser, the EMA) is measured in this phase and added to the later ones
            def probe(step: int) -> float:
                return probe_step(stage, opt, lq, gt, step, cfg.steps, cfg.amp, device.type)

            rest = max(0.0, per_step - probe(state.step))
            later = {f: probe(f(cfg.steps)) + rest for f in phases}
        left = cfg.max_minutes * 60 * BUDGET_MARGIN - (time.time() - session_start)

        def cost(total: int) -> float:
            """Seconds from this step to ``total``, each phase at its own price."""
            bounds = sorted((min(total, max(state.step, f(total))), c) for f, c in later.items())
            edges = [state.step, *(b for b, _ in bounds), total]
            prices = [per_step, *(c for _, c in bounds)]
            return sum((b - a) * (c + overhead) for a, b, c in zip(edges[:-1], edges[1:], prices, strict=True))

        fits = _largest(lambda n: cost(state.step + n) <= left, cfg.steps - state.step)
        state.schedule_total = min(cfg.steps, state.step + fits)
        pace = left / fits
        if bar is not None:
            bar.total = state.schedule_total
            bar.refresh()
        log(f"[{stage.name}] {pace:.3g} s per step: the schedule runs over {state.schedule_total} steps "
            f"to fit the time budget of {cfg.max_minutes:g} min")
        _append_log(out, {"event": "schedule", "step": state.step, "schedule_total": state.schedule_total,
                          "s_per_step": pace, "budget_min": cfg.max_minutes})

    session_start = time.time()
    if state.step == 0 and not state.history:
        validate(budget_check=True)  # the untrained baseline, so the card shows how far training got

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=state.step, desc=stage.name, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    net.train()
    last_ckpt = time.time()
    session_start = time.time()  # the budget counts training steps; the baseline validation comes on top
    base_wall = state.wall_time
    losses: list[float] = []
    start_step = state.step
    batches = _batches(sampler, cfg, start_step)
    while state.step < total():
        if is_cancelled(cancel):
            batches.close()
            if bar is not None:
                bar.close()
            checkpoint()
            log(f"[{stage.name}] cancelled at step {state.step}; checkpoint written to {out}")
            raise TrainingCancelled(
                f"[{stage.name}] training cancelled at step {state.step} of {total()}; the checkpoint in "
                f"{out} resumes it (run the same command or configuration again)", state.step, str(out))
        if cfg.max_minutes is not None and (time.time() - session_start) > cfg.max_minutes * 60:
            log(f"[{stage.name}] time budget of {cfg.max_minutes} min reached at step {state.step}")
            break
        if cfg.stop_after is not None and state.step - start_step >= cfg.stop_after:
            log(f"[{stage.name}] stopping after {cfg.stop_after} steps this session (step {state.step})")
            break
        step = state.step
        step_started = time.time()
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        lq, gt = (t.to(device, non_blocking=True) for t in next(batches))
        if cfg.channels_last:
            lq, gt = lq.contiguous(memory_format=torch.channels_last), gt.contiguous(memory_format=torch.channels_last)
        lr = stage.lr_at(step, total(), cfg.lr)
        loss, logs = train_step(stage, opt, lq, gt, step, total(), lr, cfg.amp, device.type)
        if ema is not None:
            ema.update(net)
        state.step += 1
        state.wall_time = base_wall + (time.time() - session_start)
        losses.append(loss.item())
        step_times.append(time.time() - step_started)
        last.update(loss=losses[-1], parts=logs, lr=lr)
        if schedule_kind() == "measuring" and len(step_times) >= BUDGET_PROBE_STEPS:
            fit_schedule(lq, gt)
        report("step")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{lr:.1e}", **{k: f"{v:.4f}" for k, v in logs.items()})
        if state.step % 50 == 0:
            _append_log(out, {"event": "train", "step": state.step, "loss": float(np.mean(losses[-50:])),
                              "lr": lr, "wall_time_s": round(state.wall_time, 1), **logs})
        if cfg.val_every and state.step % cfg.val_every == 0:
            validate()
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    batches.close()
    if bar is not None:
        bar.close()
    if not state.history or state.history[-1]["step"] != state.step:
        validate()
    checkpoint()
    final = card_now("ema" if ema else "raw")
    report("done")
    log(f"[{stage.name}] done: {state.step} steps, {state.wall_time / 60:.1f} min, best {state.best}")
    return final


def _param_groups(net: nn.Module, params: list[nn.Parameter], scales: dict[str, float]) -> list[dict]:
    """Adam's parameter groups: one per learning-rate multiplier (``lr_scale``, read by
    :func:`train_step`); a name in ``scales`` that is not a parameter of ``net`` is an error."""
    names = {id(p): n for n, p in net.named_parameters()}
    unknown = sorted(set(scales) - set(names.values()))
    if unknown:
        raise ValueError(f"lr_scales names {len(unknown)} parameter(s) the net lacks, e.g. {unknown[0]!r}")
    groups: dict[float, list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault(float(scales.get(names.get(id(p), ""), 1.0)), []).append(p)
    return [{"params": ps, "lr_scale": scale} for scale, ps in groups.items()]


def train_step(stage: Stage, opt: torch.optim.Optimizer, lq: torch.Tensor, gt: torch.Tensor, step: int,
               total: int, lr: float, amp: str = "bf16", device_type: str = "cpu") -> tuple[torch.Tensor, dict]:
    """One optimiser step of ``stage`` on a batch (the loop's body, shared with the benchmark).

    ``amp="bf16"`` runs the forward pass under bf16 autocast (matmuls and convolutions in
    bf16, reductions and norms in fp32; the weights and the optimiser stay fp32).
    """
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp == "bf16"):
        loss, logs = stage.loss(lq, gt, step, total)
    loss = loss.float()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"[{stage.name}] loss became {loss.item()} at step {step}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    # stages return detached tensors (no graph break under torch.compile); floats from here on
    return loss.detach(), {k: float(v) for k, v in logs.items()}


def probe_step(stage: Stage, opt: torch.optim.Optimizer, lq: torch.Tensor, gt: torch.Tensor, step: int,
               total: int, amp: str = "bf16", device_type: str = "cpu") -> float:
    """Seconds of forward and backward of ``stage`` at ``step``, with no update (the weights, the
    optimiser and the RNG of the training steps, which reseed every step, stay as they were)."""
    times = []
    for _ in range(2):  # the first pays for the phase's allocations
        started = time.time()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss, _ = stage.loss(lq, gt, step, total)
        loss.float().backward()
        times.append(time.time() - started)
        opt.zero_grad(set_to_none=True)
    return times[-1]


def _largest(fits: Callable[[int], bool], limit: int) -> int:
    """The largest n in 1..limit with ``fits(n)`` (1 when none does), for a monotone ``fits``."""
    lo, hi = 1, max(1, limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def step_batch(sampler: Any, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of training step ``step``: a pure function of (seed, step), so resuming is exact."""
    return sampler.batch(np.random.default_rng([seed, step]), batch_size)


_WORKER_SAMPLER: Any = None


def _worker_init(sampler: Any) -> None:
    global _WORKER_SAMPLER
    _WORKER_SAMPLER = sampler
    torch.set_num_threads(1)


def _worker_batch(args: tuple[int, int, int]):
    seed, step, batch_size = args
    lq, gt = step_batch(_WORKER_SAMPLER, seed, step, batch_size)
    return lq.numpy(), gt.numpy()


class _batches:
    """Iterator over the batches of steps ``start, start + 1, ...``, cut in ``cfg.workers``
    processes ahead of the training step when asked (a GPU outruns one CPU core of numpy)."""

    def __init__(self, sampler: Any, cfg: LoopConfig, start: int) -> None:
        self.sampler, self.cfg, self.step = sampler, cfg, start
        self.pool = None
        if cfg.workers > 0:
            import multiprocessing as mp

            self.pool = mp.get_context("fork").Pool(cfg.workers, _worker_init, (sampler,))
            jobs = ((cfg.seed, s, cfg.batch_size) for s in range(start, cfg.steps))
            self.results = self.pool.imap(_worker_batch, jobs, chunksize=1)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.step += 1
        if self.pool is None:
            return step_batch(self.sampler, self.cfg.seed, self.step - 1, self.cfg.batch_size)
        lq, gt = next(self.results)
        return torch.from_numpy(lq), torch.from_numpy(gt)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{platform.machine()} {torch.cuda.get_device_name(device)}"
    return f"{platform.machine()} {torch.get_num_threads()} threads"


def _append_log(out: Path, entry: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(entry, default=_jsonable) + "\n")


def command_line() -> str:
    """The command that started this process, shell-quoted, for the model card."""
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def cosine_restart_lr(step: int, periods: list[int], eta_mins: list[float], base: float) -> float:
    """BasicSR's CosineAnnealingRestartCyclicLR: one cosine per period, each to its eta_min."""
    start = 0
    for period, eta_min in zip(periods, eta_mins):
        if step < start + period or period == periods[-1]:
            t = min(step - start, period) / max(period, 1)
            return eta_min + 0.5 * (base - eta_min) * (1 + math.cos(math.pi * t))
        start += period
    return eta_mins[-1]
