"""Samplers for a discrete DDPM schedule: ancestral DDPM, DDIM and DPM-Solver++(2M), ODE and SDE.

A sampler knows no network. Like a diffusers scheduler's ``step(model_output, t, sample)``, it
gets the :class:`~napari_diffir.models.schedules.Schedule` and an ``eps_fn(x, t)`` that returns the
model's noise estimate, and it works on the trained discrete steps 0 .. T-1 (no retraining).
Each sampler calls ``eps_fn`` once per step, predicts the clean sample, clips it to [-1, 1] (as
SRDiff's official sampler does; data, or SRDiff's residuals, are trained in that range) and moves
to the next step of its grid.

Random draws come from a ``noise(like, stream)`` callable: ``stream`` 0 is ``x_T`` and stream
``k + 1`` is the draw after model evaluation ``k``. Backed by ``torch.randn`` the draws follow
SRDiff's official order (``x_T``, then one draw per step including the last); backed by the
engine's image-wide noise field every tile gets its own region of the same noise.

torch is not imported here (only tensor methods are called), so frontends and restorers read
the sampler names and defaults without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from .schedules import Schedule

__all__ = [
    "FAST_DEFAULT_SAMPLER",
    "FAST_DEFAULT_STEPS",
    "SAMPLERS",
    "EpsFn",
    "NoiseFn",
    "StepFn",
    "default_steps",
    "run_sampler",
    "timestep_grid",
]

EpsFn = Callable[["torch.Tensor", int], "torch.Tensor"]
"""``eps_fn(x, t)``: the model's noise estimate for the batch ``x`` at trained step ``t``."""
NoiseFn = Callable[["torch.Tensor", int], "torch.Tensor"]
"""``noise(like, stream)``: a standard-normal tensor shaped like ``like``."""
StepFn = Callable[[int, int], None]
"""``callback(done, total)`` after every model evaluation (may raise to cancel)."""

SAMPLERS = ("ddpm", "ddim", "dpm++2m", "dpm++2m-sde")

FAST_DEFAULT_SAMPLER = "dpm++2m"
"""The sampler a frontend uses unless told otherwise (``ddpm`` needs every trained step)."""
FAST_DEFAULT_STEPS = 20
"""Steps of a fast sampler unless told otherwise; see docs/models.md for the step/quality curve."""


def default_steps(sampler: str, num_timesteps: int) -> int:
    """Steps used when the caller gives none: all of them for DDPM, a short grid otherwise."""
    return num_timesteps if sampler == "ddpm" else min(FAST_DEFAULT_STEPS, num_timesteps)


def timestep_grid(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` trained step indices from ``T - 1`` down to 0, evenly spaced (both ends included).

    ``x_T`` is pure noise only at the last trained step (cumulative alpha 2e-7 for SRDiff's
    schedule), so every grid starts there; ending at 0 makes the last update the same
    "predict the clean sample" as DDPM's last step.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be between 1 and {num_timesteps}, but got {steps!r}")
    if steps == 1:
        return [num_timesteps - 1]
    grid = np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(int)
    return [int(t) for t in grid]


def _ddpm(schedule, eps_fn, x, noise, callback):
    """SRDiff's official ancestral sampling over every trained step (same arithmetic as the release)."""
    n = schedule.num_timesteps
    for k, t in enumerate(range(n - 1, -1, -1)):
        eps = eps_fn(x, t)
        x0 = (schedule.sqrt_recip_alphas_cumprod[t] * x - schedule.sqrt_recipm1_alphas_cumprod[t] * eps).clamp_(-1, 1)
        mean = schedule.posterior_mean_coef1[t] * x0 + schedule.posterior_mean_coef2[t] * x
        z = noise(x, k + 1)  # drawn at t == 0 too, as the release does, to keep the draw order
        x = mean + (0.5 * schedule.posterior_log_variance_clipped[t]).exp() * z if t > 0 else mean
        if callback is not None:
            callback(k + 1, n)
    return x


def _abar(schedule: Schedule) -> list[float]:
    return schedule.alphas_cumprod.double().cpu().tolist()


def _ddim(schedule, eps_fn, x, grid, eta, noise, callback):
    """DDIM (Song et al. 2021) on a sub-grid; ``eta`` = 1 is ancestral sampling on that grid."""
    abar = _abar(schedule)
    n = len(grid)
    for k, t in enumerate(grid):
        a_t = abar[t]
        a_s = abar[grid[k + 1]] if k + 1 < n else 1.0
        eps = eps_fn(x, t)
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp_(-1, 1)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)  # consistent with the clipped x0
        sigma = eta * math.sqrt(max((1 - a_s) / (1 - a_t) * (1 - a_t / a_s), 0.0))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if eta > 0:
            x = x + sigma * noise(x, k + 1)
        if callback is not None:
            callback(k + 1, n)
    return x


def _dpmpp_2m(schedule, eps_fn, x, grid, callback):
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in the space of the clean sample.

    Deterministic after ``x_T``. The first step and the final jump to the clean sample are first
    order (the latter is exactly "take the last prediction").
    """
    abar = _abar(schedule)
    n = len(grid)
    lam = lambda a: 0.5 * math.log(a) - 0.5 * math.log1p(-a) if a < 1 else math.inf  # noqa: E731
    prev_x0, prev_h = None, None
    for k, t in enumerate(grid):
        a_t = abar[t]
        eps = eps_fn(x, t)
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp_(-1, 1)
        if k + 1 == n:
            x = x0
        else:
            a_s = abar[grid[k + 1]]
            h = lam(a_s) - lam(a_t)
            d = x0
            if prev_x0 is not None:
                r = prev_h / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
            x = math.sqrt((1 - a_s) / (1 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d
            prev_x0, prev_h = x0, h
        if callback is not None:
            callback(k + 1, n)
    return x


def _dpmpp_2m_sde(schedule, eps_fn, x, grid, noise, callback):
    """DPM-Solver++(2M) SDE (Lu et al. 2022; midpoint form as in k-diffusion), VP parametrisation.

    Each step keeps ``(σ_s/σ_t)·e^{-h}`` of the current sample, moves ``α_s(1 - e^{-2h})`` towards a
    second-order estimate of the clean sample, and adds fresh noise of std ``σ_s·√(1 - e^{-2h})``
    (the posterior of DDPM on this grid at first order). Injected noise corrects the predictor's
    errors, which deterministic samplers carry to the end.
    """
    abar = _abar(schedule)
    n = len(grid)
    lam = lambda a: 0.5 * math.log(a) - 0.5 * math.log1p(-a)  # noqa: E731
    prev_x0, prev_h = None, None
    for k, t in enumerate(grid):
        a_t = abar[t]
        eps = eps_fn(x, t)
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp_(-1, 1)
        if k + 1 == n:
            x = x0
        else:
            a_s = abar[grid[k + 1]]
            h = lam(a_s) - lam(a_t)
            keep = math.sqrt((1 - a_s) / (1 - a_t)) * math.exp(-h)
            towards = math.sqrt(a_s) * -math.expm1(-2 * h)
            x = keep * x + towards * x0
            if prev_x0 is not None:
                r = prev_h / h
                x = x + towards * (0.5 / r) * (x0 - prev_x0)
            x = x + math.sqrt(1 - a_s) * math.sqrt(-math.expm1(-2 * h)) * noise(x, k + 1)
            prev_x0, prev_h = x0, h
        if callback is not None:
            callback(k + 1, n)
    return x


def run_sampler(
    schedule: Schedule, eps_fn: EpsFn, x_T: torch.Tensor, *, sampler: str = "ddpm",
    steps: int | None = None, eta: float = 0.0, noise: NoiseFn, callback: StepFn | None = None,
) -> torch.Tensor:
    """Denoise ``x_T`` from the last trained step to step 0; returns the clean sample.

    ``ddpm`` with all ``T`` steps is SRDiff's official sampler; with fewer steps it is ancestral
    sampling on the sub-grid (DDIM with ``eta = 1``).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; expected one of {list(SAMPLERS)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], but got {eta!r}")
    T = schedule.num_timesteps
    steps = default_steps(sampler, T) if steps is None else int(steps)
    grid = timestep_grid(T, steps)
    if sampler == "ddpm":
        if steps == T:
            return _ddpm(schedule, eps_fn, x_T, noise, callback)
        return _ddim(schedule, eps_fn, x_T, grid, 1.0, noise, callback)
    if sampler == "ddim":
        return _ddim(schedule, eps_fn, x_T, grid, float(eta), noise, callback)
    if sampler == "dpm++2m-sde":
        return _dpmpp_2m_sde(schedule, eps_fn, x_T, grid, noise, callback)
    return _dpmpp_2m(schedule, eps_fn, x_T, grid, callback)
