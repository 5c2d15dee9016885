"""SRDiff's noise schedule and the 12 tables the official ``GaussianDiffusion`` stores as buffers.

Computed in float64 numpy and stored as float32, as the official code does, so a freshly built
model has the same buffers as a released checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BUFFER_NAMES", "cosine_betas", "schedule_tables"]

BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def cosine_betas(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Improved-DDPM cosine schedule on ``timesteps + 1`` points, betas clipped to [0, 0.999]."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, but got {timesteps}")
    n = timesteps + 1
    x = np.linspace(0, n, n)
    abar = np.cos(((x / n) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    return np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)


def schedule_tables(betas: np.ndarray) -> dict[str, torch.Tensor]:
    """The 12 float32 tables derived from ``betas``, keyed and ordered as the official buffers."""
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
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in zip(BUFFER_NAMES, values)}
