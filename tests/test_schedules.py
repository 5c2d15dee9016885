"""One schedule module for both families: today's float32 buffers, bit for bit.

The expected tables come from frozen copies of the two formulas the families used before the
schedule module existed (copied verbatim from commit 0076e73: DiffIR's torch
``IPRDiffusion.schedule`` and SRDiff's numpy ``schedule_tables(cosine_betas(...))``), and from
arrays stored in files: the bundled weights (trained with that code) and the tiny checkpoint
written by the official SRDiff ``GaussianDiffusion``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_diffir.models.diffir import DiffIRS2
from napari_diffir.models.schedules import BUFFER_NAMES, Schedule
from napari_diffir.models.srdiff import SRDiff

DATA = Path(__file__).parent / "data"
WEIGHTS = Path(__file__).parents[1] / "src" / "napari_diffir" / "restorers" / "weights"


def _old_diffir_tables(timesteps: int, linear_start: float, linear_end: float) -> dict[str, torch.Tensor]:
    """Frozen copy of the pre-refactor DiffIR schedule (torch float64, stored as float32)."""
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    }
    return {k: v.to(torch.float32) for k, v in values.items()}


def _old_srdiff_tables(timesteps: int, s: float = 0.008) -> dict[str, torch.Tensor]:
    """Frozen copy of the pre-refactor SRDiff schedule (numpy float64, stored as float32)."""
    n = timesteps + 1
    x = np.linspace(0, n, n)
    abar = np.cos(((x / n) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    betas = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    values = (
        betas, abar, abar_prev, np.sqrt(abar), np.sqrt(1.0 - abar), np.log(1.0 - abar),
        np.sqrt(1.0 / abar), np.sqrt(1.0 / abar - 1), post_var, np.log(np.maximum(post_var, 1e-20)),
        betas * np.sqrt(abar_prev) / (1.0 - abar), (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    )
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in zip(BUFFER_NAMES, values)}


def _card_config(name: str) -> dict:
    path = WEIGHTS / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"no bundled model card {name}")
    return json.loads(path.read_text())["architecture"]["config"]


def _assert_identical(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> None:
    assert list(new) == list(old) == list(BUFFER_NAMES)
    for name in BUFFER_NAMES:
        assert new[name].dtype == old[name].dtype == torch.float32, name
        assert torch.equal(new[name], old[name]), name


# The official DiffIR configuration (every release: T = 4, 0.1 .. 0.99) and the ones the tests build.
DIFFIR_CONFIGS = [(4, 0.1, 0.99), (6, 0.1, 0.99), (4, 0.05, 0.9), (1, 0.1, 0.99), (16, 1e-4, 2e-2)]
# The official SRDiff releases (DIV2K x4, CelebA x8: T = 100) and the sizes the tests build.
SRDIFF_TIMESTEPS = [100, 5, 8, 10, 20, 30, 1000]


@pytest.mark.parametrize("timesteps,start,end", DIFFIR_CONFIGS)
def test_diffir_tables_equal_the_old_torch_formula(timesteps, start, end):
    """DiffIR's sqrt-linear schedule gives the pre-refactor float32 tables bit for bit."""
    _assert_identical(Schedule.sqrt_linear(timesteps, start, end).tables(), _old_diffir_tables(timesteps, start, end))


@pytest.mark.parametrize("timesteps", SRDIFF_TIMESTEPS)
def test_srdiff_tables_equal_the_old_numpy_formula(timesteps):
    """SRDiff's cosine schedule gives the pre-refactor float32 tables bit for bit."""
    with np.errstate(divide="ignore", over="ignore"):
        _assert_identical(Schedule.cosine(timesteps, 0.008).tables(), _old_srdiff_tables(timesteps))


@pytest.mark.parametrize("name", ["diffir-denoise", "diffir-sr4"])
def test_bundled_diffir_configs_match_the_old_formula_and_their_stored_buffers(name):
    """The bundled DiffIR configs (from their model cards) rebuild the buffers stored in their weights."""
    cfg = _card_config(name)
    new = Schedule.sqrt_linear(cfg["timesteps"], cfg["linear_start"], cfg["linear_end"]).tables()
    _assert_identical(new, _old_diffir_tables(cfg["timesteps"], cfg["linear_start"], cfg["linear_end"]))
    stored = load_file(str(WEIGHTS / f"{name}.safetensors"))
    _assert_identical(new, {n: stored[f"diffusion.{n}"] for n in BUFFER_NAMES})


def test_bundled_srdiff_config_matches_the_old_formula_and_its_stored_buffers():
    """The bundled SRDiff config (from its model card) rebuilds the buffers stored in its weights."""
    cfg = _card_config("srdiff-sr4")
    new = Schedule.cosine(cfg["timesteps"], cfg["beta_s"]).tables()
    _assert_identical(new, _old_srdiff_tables(cfg["timesteps"], cfg["beta_s"]))
    stored = load_file(str(WEIGHTS / "srdiff-sr4.safetensors"))
    _assert_identical(new, {n: stored[n] for n in BUFFER_NAMES})


def test_official_srdiff_buffers_are_rebuilt_exactly():
    """The buffers the official GaussianDiffusion wrote (tiny checkpoint, T = 100) are rebuilt exactly."""
    stored = load_file(str(DATA / "srdiff" / "srdiff_official_tiny.safetensors"))
    _assert_identical(Schedule.cosine(100).tables(), {n: stored[f"model.{n}"] for n in BUFFER_NAMES})


def test_both_families_register_the_schedule_as_their_buffers():
    """DiffIRS2 and SRDiff hold exactly the tables of the shared module, in the official order."""
    diffir = DiffIRS2(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, n_encoder_res=1, n_feats=8,
                      inp_channels=1, out_channels=1, task="deblur")
    _assert_identical(dict(diffir.diffusion.named_buffers()), Schedule.sqrt_linear(4, 0.1, 0.99).tables())
    srdiff = SRDiff(scale=4, in_channels=1, hidden_size=8, dim_mults=(1, 2), rrdb_num_block=2, rrdb_num_feat=4)
    _assert_identical(dict(srdiff.named_buffers(recurse=False)), Schedule.cosine(100).tables())
    _assert_identical(srdiff.schedule.tables(), Schedule.cosine(100).tables())
