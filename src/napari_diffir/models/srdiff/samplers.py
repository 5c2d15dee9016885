"""Samplers for SRDiff's residual diffusion: official ancestral DDPM, DDIM and DPM-Solver++(2M).

All samplers work on the trained discrete steps 0 .. T-1 and need no retraining. Each one calls
the noise predictor once per step, predicts the clean residual, clips it to [-1, 1] (as the
official sampler does, since residuals are clipped to that range in training) and moves to the
next step of its grid.

Random draws come from a ``noise(like, stream)`` callable: ``stream`` 0 is ``x_T`` and stream
``k + 1`` is the draw after model evaluation ``k``. Backed by ``torch.randn`` the draws follow
the official order (``x_T``, then one draw per step including the last); backed by the engine's
image-wide noise field every tile gets its own region of the same noise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from ._diffusion import SRDiff

__all__ = ["SAMPLERS", "NoiseFn", "StepFn", "default_steps", "run_sampler", "timestep_grid"]

NoiseFn = Callable[[torch.Tensor, int], torch.Tensor]
"""``noise(like, stream)``: a standard-normal tensor shaped like ``like``."""
StepFn = Callable[[int, int], None]
"""``callback(done, total)`` after every model evaluation (may raise to cancel)."""

SAMPLERS = ("ddpm", "ddim", "dpm++2m", "dpm++2m-sde")

FAST_DEFAULT_STEPS = 20


def default_steps(sampler: str, num_timesteps: int) -> int:
    """Steps used when the caller gives none: all of them for DDPM, a short grid otherwise."""
    return num_timesteps if sampler == "ddpm" else min(FAST_DEFAULT_STEPS, num_timesteps)


def timestep_grid(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` trained step indices from ``T - 1`` down to 0, evenly spaced (both ends included).

    ``x_T`` is pure noise only at the last trained step (cumulative alpha 2e-7 for SRDiff's
    schedule), so every grid starts there; ending at 0 makes the last update the same
    "predict the clean residual" as DDPM's last step.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be between 1 and {num_timesteps}, but got {steps!r}")
    if steps == 1:
        return [num_timesteps - 1]
    grid = np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(int)
    return [int(t) for t in grid]


def _eps(model: "SRDiff", x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    return model.denoise_fn(x, tt, cond)


def _ddpm(model, x, cond, noise, callback):
    """Official ancestral sampling over every trained step (same arithmetic as the release)."""
    n = model.num_timesteps
    for k, t in enumerate(range(n - 1, -1, -1)):
        eps = _eps(model, x, t, cond)
        x0 = (model.sqrt_recip_alphas_cumprod[t] * x - model.sqrt_recipm1_alphas_cumprod[t] * eps).clamp_(-1, 1)
        mean = model.posterior_mean_coef1[t] * x0 + model.posterior_mean_coef2[t] * x
        z = noise(x, k + 1)  # drawn at t == 0 too, as the release does, to keep the draw order
        x = mean + (0.5 * model.posterior_log_variance_clipped[t]).exp() * z if t > 0 else mean
        if callback is not None:
            callback(k + 1, n)
    return x


def _abar(model: "SRDiff") -> list[float]:
    return model.alphas_cumprod.double().cpu().tolist()


def _ddim(model, x, cond, grid, eta, noise, callback):
    """DDIM (Song et al. 2021) on a sub-grid; ``eta`` = 1 is ancestral sampling on that grid."""
    abar = _abar(model)
    n = len(grid)
    for k, t in enumerate(grid):
        a_t = abar[t]
        a_s = abar[grid[k + 1]] if k + 1 < n else 1.0
        eps = _eps(model, x, t, cond)
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp_(-1, 1)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)  # consistent with the clipped x0
        sigma = eta * math.sqrt(max((1 - a_s) / (1 - a_t) * (1 - a_t / a_s), 0.0))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if eta > 0:
            x = x + sigma * noise(x, k + 1)
        if callback is not None:
            callback(k + 1, n)
    return x


def _dpmpp_2m(model, x, cond, grid, callback):
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in the clean-residual space.

    Deterministic after ``x_T``. The first step and the final jump to the clean residual are first
    order (the latter is exactly "take the last prediction").
    """
    abar = _abar(model)
    n = len(grid)
    lam = lambda a: 0.5 * math.log(a) - 0.5 * math.log1p(-a) if a < 1 else math.inf  # noqa: E731
    prev_x0, prev_h = None, None
    for k, t in enumerate(grid):
        a_t = abar[t]
        eps = _eps(model, x, t, cond)
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


def _dpmpp_2m_sde(model, x, cond, grid, noise, callback):
    """DPM-Solver++(2M) SDE (Lu et al. 2022; midpoint form as in k-diffusion), VP parametrisation.

    Each step keeps ``(σ_s/σ_t)·e^{-h}`` of the current sample, moves ``α_s(1 - e^{-2h})`` towards a
    second-order estimate of the clean residual, and adds fresh noise of std ``σ_s·√(1 - e^{-2h})``
    (the posterior of DDPM on this grid at first order). Injected noise corrects the predictor's
    errors, which deterministic samplers carry to the end.
    """
    abar = _abar(model)
    n = len(grid)
    lam = lambda a: 0.5 * math.log(a) - 0.5 * math.log1p(-a)  # noqa: E731
    prev_x0, prev_h = None, None
    for k, t in enumerate(grid):
        a_t = abar[t]
        eps = _eps(model, x, t, cond)
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
    model: "SRDiff", x_T: torch.Tensor, cond: torch.Tensor, *, sampler: str = "ddpm",
    steps: int | None = None, eta: float = 0.0, noise: NoiseFn, callback: StepFn | None = None,
) -> torch.Tensor:
    """Denoise the residual ``x_T`` to step 0 given the projected condition; returns the residual.

    ``ddpm`` with all ``T`` steps is the official sampler; with fewer steps it is ancestral
    sampling on the sub-grid (DDIM with ``eta = 1``).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown SRDiff sampler {sampler!r}; expected one of {list(SAMPLERS)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], but got {eta!r}")
    T = model.num_timesteps
    steps = default_steps(sampler, T) if steps is None else int(steps)
    grid = timestep_grid(T, steps)
    if sampler == "ddpm":
        if steps == T:
            return _ddpm(model, x_T, cond, noise, callback)
        return _ddim(model, x_T, cond, grid, 1.0, noise, callback)
    if sampler == "ddim":
        return _ddim(model, x_T, cond, grid, float(eta), noise, callback)
    if sampler == "dpm++2m-sde":
        return _dpmpp_2m_sde(model, x_T, cond, grid, noise, callback)
    return _dpmpp_2m(model, x_T, cond, grid, callback)
