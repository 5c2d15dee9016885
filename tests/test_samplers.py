"""The samplers run on a schedule and an ``eps_fn(x, t)`` alone: no network involved."""

from __future__ import annotations

import math

import pytest
import torch

from napari_diffir.models import samplers
from napari_diffir.models.schedules import Schedule


@pytest.mark.parametrize("sampler,steps", [("ddpm", 50), ("ddpm", 8), ("ddim", 8), ("dpm++2m", 8), ("dpm++2m-sde", 8)])
def test_an_exact_noise_predictor_leads_every_sampler_to_the_clean_sample(sampler, steps):
    """With eps_fn = the true noise of a known x0, every sampler ends at that x0."""
    schedule = Schedule.cosine(50)
    abar = schedule.alphas_cumprod.double().tolist()
    x0 = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8

    def eps_fn(x, t):
        return (x - math.sqrt(abar[t]) * x0) / math.sqrt(1 - abar[t])

    gen = torch.Generator().manual_seed(1)
    calls = []
    out = samplers.run_sampler(
        schedule, eps_fn, torch.randn(x0.shape, generator=gen), sampler=sampler, steps=steps,
        noise=lambda like, stream: torch.randn(like.shape, generator=gen), callback=lambda d, n: calls.append(d))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)
    assert calls == list(range(1, steps + 1))


def test_defaults_are_the_sampler_module_s():
    """Without steps, ddpm runs every trained step and the fast samplers FAST_DEFAULT_STEPS."""
    assert samplers.FAST_DEFAULT_SAMPLER in samplers.SAMPLERS
    assert samplers.default_steps("ddpm", 100) == 100
    assert samplers.default_steps(samplers.FAST_DEFAULT_SAMPLER, 100) == samplers.FAST_DEFAULT_STEPS
    assert samplers.default_steps("ddim", 5) == 5
    with pytest.raises(ValueError, match="Unknown sampler 'euler'"):
        samplers.run_sampler(Schedule.cosine(5), lambda x, t: x, torch.zeros(1), sampler="euler", noise=None)
