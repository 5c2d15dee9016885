"""The diffusion model over the IPR vector: an MLP denoiser and a 4-step x0-predicting DDPM.

Attribute and buffer names mirror ``denoise``/``ResMLP`` (``S2_arch.py``) and ``DDPM``
(``ldm/ddpm.py``) of Zj-BinXia/DiffIR @ 293f86c, so stage-2 checkpoints load strictly. Written
fresh for this project from the spec (§2.11, §2.12, §4).

Sampling is deterministic apart from the starting noise: every reverse step returns the
posterior mean ``coef1[t] * x0_hat + coef2[t] * x_t`` and adds no noise.
"""

from __future__ import annotations

import torch
from torch import nn

from ...schedules import Schedule

__all__ = ["IPRDenoiser", "IPRDiffusion", "ResMLP"]


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.1, inplace=True)


class ResMLP(nn.Module):
    """Linear + LeakyReLU (named "residual" upstream, but it has no skip connection)."""

    def __init__(self, n_feats: int = 512) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(n_feats, n_feats), _act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class IPRDenoiser(nn.Module):
    """Predicts the clean IPR from ``[condition, t / (10 * timesteps), x_t]`` (upstream ``denoise``)."""

    def __init__(self, n_feats: int = 64, n_denoise_res: int = 5, timesteps: int = 5) -> None:
        super().__init__()
        self.max_period = timesteps * 10
        width = 4 * n_feats
        self.resmlp = nn.Sequential(
            nn.Linear(2 * width + 1, width), _act(), *(ResMLP(width) for _ in range(n_denoise_res))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        t = (t.float() / self.max_period).view(-1, 1)
        return self.resmlp(torch.cat([c, t.to(c.dtype), x.to(c.dtype)], dim=1))


class IPRDiffusion(nn.Module):
    """DDPM over the IPR (upstream ``DDPM``), holding the denoiser as ``model`` and CPEN_S2 as
    ``condition`` (the same module objects the wrapper also registers: shared tensors, two keys).
    """

    def __init__(
        self,
        denoise: nn.Module,
        condition: nn.Module,
        *,
        timesteps: int = 4,
        linear_start: float = 0.1,
        linear_end: float = 0.99,
        n_feats: int = 64,
    ) -> None:
        super().__init__()
        self.channels = n_feats
        self.num_timesteps = timesteps
        self.model = denoise
        self.condition = condition
        for name, value in Schedule.sqrt_linear(timesteps, linear_start, linear_end).tables().items():
            self.register_buffer(name, value)

    @property
    def ipr_dim(self) -> int:
        return 4 * self.channels

    def q_sample(self, x_start: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse ``x_start`` to step ``t``: ``sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``."""
        return self.sqrt_alphas_cumprod[t] * x_start + self.sqrt_one_minus_alphas_cumprod[t] * noise

    def p_sample(self, x: torch.Tensor, t: int, c: torch.Tensor) -> torch.Tensor:
        """One reverse step: the posterior mean given the denoiser's x0 estimate (no noise added)."""
        steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0 = self.model(x, steps, c)
        return self.posterior_mean_coef1[t] * x0 + self.posterior_mean_coef2[t] * x

    def _discard_draws(self, like: torch.Tensor) -> None:
        # Upstream p_sample draws a noise tensor per step and never uses it; drawing (and
        # dropping) the same tensors keeps the global RNG stream, hence any later forward
        # after one torch.manual_seed, identical to the official code.
        for _ in range(self.num_timesteps):
            torch.randn(like.shape, device=like.device)

    def sample(
        self,
        img: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Estimate the IPR of ``img`` from noise: CPEN_S2 condition, then T reverse steps.

        ``noise`` (shape (B or 1, 4*n_feats)) fixes the starting point; otherwise it is drawn
        with ``generator``, or, without one, from the global RNG exactly as upstream does.
        """
        b = img.shape[0]
        device = self.betas.device
        if noise is None:
            x = torch.randn((b, self.ipr_dim), device=device, generator=generator)
        else:
            if noise.shape[-1] != self.ipr_dim or noise.ndim != 2 or noise.shape[0] not in (1, b):
                raise ValueError(
                    f"Expected IPR noise of shape ({b}, {self.ipr_dim}), but got {tuple(noise.shape)}"
                )
            x = noise.to(device=device, dtype=torch.float32).expand(b, -1)
        x = self.reverse(x, self.condition(img))
        if noise is None and generator is None:
            self._discard_draws(x)
        return x

    def reverse(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """All T reverse steps from the start ``x`` given CPEN's condition ``c`` (both (B, D))."""
        for t in reversed(range(self.num_timesteps)):
            x = self.p_sample(x, t, c)
        return x

    def forward(self, img: torch.Tensor, x: torch.Tensor | None = None, **sample_kwargs):
        """Train: ``(IPR, [IPR after each step])`` from the stage-1 IPR ``x``; eval: the IPR."""
        if not self.training:
            return self.sample(img, **sample_kwargs)
        if x is None:
            raise ValueError("In training mode the IPR diffusion needs the stage-1 IPR (IPRS1)")
        t = self.num_timesteps - 1
        ipr = self.q_sample(x, t, torch.randn_like(x))
        c = self.condition(img)
        steps = []
        for i in reversed(range(self.num_timesteps)):
            ipr = self.p_sample(ipr, i, c)
            steps.append(ipr)
        self._discard_draws(ipr)
        return ipr, steps
