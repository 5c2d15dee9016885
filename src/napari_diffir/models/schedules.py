"""Discrete DDPM noise schedules: each family's betas and the 12 tables both families store.

DiffIR (LDM's "linear" schedule, linear in sqrt(beta)) and SRDiff (improved DDPM's cosine
schedule) register the same 12 buffers, derived from their betas by the same formulas. The
derivation lives here once, in float64 numpy with the result stored as float32, which is what
both official codes do (LDM's ``register_schedule`` and SRDiff's ``GaussianDiffusion``). A freshly
built model therefore holds a released checkpoint's buffers. Samplers read a :class:`Schedule`
and never look inside a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch

__all__ = ["BUFFER_NAMES", "Schedule", "cosine_betas", "sqrt_linear_betas"]


def _check_timesteps(timesteps: int) -> None:
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, but got {timesteps}")


def cosine_betas(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Improved-DDPM cosine schedule (SRDiff) on ``timesteps + 1`` points, betas clipped to [0, 0.999]."""
    _check_timesteps(timesteps)
    n = timesteps + 1
    x = np.linspace(0, n, n)
    abar = np.cos(((x / n) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    return np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)


def sqrt_linear_betas(timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
    """LDM's "linear" schedule (DiffIR): beta linear in *sqrt(beta)* from start to end (float64).

    Spaced with ``torch.linspace`` in float64, as LDM's ``make_beta_schedule`` does (on the CPU,
    also while a model is being built on the meta device).
    """
    _check_timesteps(timesteps)
    root = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64, device="cpu")
    return (root**2).numpy()


@dataclass(frozen=True)
class Schedule:
    """The 12 tables of a discrete DDPM schedule, one float32 value per trained step.

    Fields are named and ordered as the buffers of both official codes (``v_posterior = 0``).
    A model registers :meth:`tables` as buffers; a sampler gets the buffers back through
    :meth:`from_tables`, so it runs on whatever a checkpoint stored, on the model's device.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    """``abar_t``, the product of ``1 - beta`` up to step ``t``."""
    alphas_cumprod_prev: torch.Tensor
    """``abar_{t-1}`` (1 at step 0)."""
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    log_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    """Variance of ``q(x_{t-1} | x_t, x_0)``."""
    posterior_log_variance_clipped: torch.Tensor
    """Its log, with the variance clipped to 1e-20 (it is 0 at step 0)."""
    posterior_mean_coef1: torch.Tensor
    """Weight of ``x_0`` in the posterior mean."""
    posterior_mean_coef2: torch.Tensor
    """Weight of ``x_t`` in the posterior mean."""

    @classmethod
    def from_betas(cls, betas: np.ndarray) -> Schedule:
        """The tables derived from ``betas`` (computed in float64, stored as float32)."""
        betas = np.asarray(betas, dtype=np.float64)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        values = (
            betas,
            abar,
            abar_prev,
            np.sqrt(abar),
            np.sqrt(1.0 - abar),
            np.log(1.0 - abar),
            np.sqrt(1.0 / abar),
            np.sqrt(1.0 / abar - 1),
            post_var,
            np.log(np.maximum(post_var, 1e-20)),
            betas * np.sqrt(abar_prev) / (1.0 - abar),
            (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        )
        return cls(*(torch.tensor(v, dtype=torch.float32) for v in values))

    @classmethod
    def cosine(cls, timesteps: int, s: float = 0.008) -> Schedule:
        """SRDiff's schedule (see :func:`cosine_betas`)."""
        return cls.from_betas(cosine_betas(timesteps, s))

    @classmethod
    def sqrt_linear(cls, timesteps: int, linear_start: float, linear_end: float) -> Schedule:
        """DiffIR's schedule (see :func:`sqrt_linear_betas`)."""
        return cls.from_betas(sqrt_linear_betas(timesteps, linear_start, linear_end))

    @classmethod
    def from_tables(cls, tables: Mapping[str, torch.Tensor]) -> Schedule:
        """The schedule held in ``tables`` (e.g. a model's buffers, keyed by :data:`BUFFER_NAMES`)."""
        return cls(*(tables[name] for name in BUFFER_NAMES))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def tables(self) -> dict[str, torch.Tensor]:
        """The 12 tables keyed and ordered as the official buffers."""
        return {name: getattr(self, name) for name in BUFFER_NAMES}


BUFFER_NAMES = tuple(f.name for f in fields(Schedule))
"""The 12 buffer names, in the order both official codes register them."""
