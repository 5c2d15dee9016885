"""SRDiff modules: official key sets, hyperparameter inference, schedule, sampling rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_diffir.models import samplers, srdiff
from napari_diffir.models.srdiff import RRDBNet, SRDiff, Unet

DATA = Path(__file__).parent / "data"
KEY_FILES = sorted((DATA / "keys").glob("srdiff_keys_*.txt"))

TINY = dict(scale=4, in_channels=1, hidden_size=8, dim_mults=(1, 2), rrdb_num_block=2, rrdb_num_feat=4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _listing(path: Path) -> tuple[list[tuple[str, list[int]]], dict[str, str]]:
    rows, header = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            if line.startswith("# numel:"):
                header.update(kv.split("=") for kv in line[len("# numel:"):].split())
            continue
        key, shape = line.split("\t")[:2]
        rows.append((key, list(ast.literal_eval(shape))))
    return rows, header


def _zeros(rows):
    return {k: torch.zeros(shape) for k, shape in rows}


def _tiny(**changes) -> SRDiff:
    torch.manual_seed(0)
    model = SRDiff(**{**TINY, **changes}).eval()
    with torch.no_grad():  # non-trivial outputs from a random net
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


EXPECTED = {
    "srdiff_keys_diffsr_df2k4x.txt": dict(scale=4, dim_mults=(1, 2, 3, 4), rrdb_num_block=8, rrdb_num_feat=32, rrdb_growth=16),
    "srdiff_keys_diffsr_df2k4x_rrdb17x64.txt": dict(scale=4, dim_mults=(1, 2, 3, 4), rrdb_num_block=17, rrdb_num_feat=64, rrdb_growth=32),
    "srdiff_keys_diffsr_celeb.txt": dict(scale=8, dim_mults=(1, 2, 2, 4), rrdb_num_block=8, rrdb_num_feat=32, rrdb_growth=16),
}


@pytest.mark.parametrize("path", KEY_FILES, ids=lambda p: p.stem)
def test_official_key_listings_load_strictly(path):
    """Every official key listing loads strictly and our state dict has its keys, order and shapes."""
    rows, header = _listing(path)
    model = srdiff.from_state_dict(_zeros(rows))
    own = model.state_dict()
    assert [(k, list(v.shape)) for k, v in own.items()] == rows
    hp = model.hyperparameters
    assert {k: hp[k] for k in EXPECTED[path.name]} == EXPECTED[path.name]
    assert (hp["in_channels"], hp["out_channels"], hp["hidden_size"], hp["timesteps"]) == (3, 3, 64, 100)
    assert sum(p.numel() for p in model.denoise_fn.parameters()) == int(header["denoise_fn"])
    assert sum(p.numel() for p in model.rrdb.parameters()) == int(header["rrdb"])


def test_default_constructor_is_the_div2k_release():
    """SRDiff() builds the DIV2K x4 release as shipped (8x32 encoder): 396 tensors."""
    rows, _ = _listing(DATA / "keys" / "srdiff_keys_diffsr_df2k4x.txt")
    assert [(k, list(v.shape)) for k, v in SRDiff().state_dict().items()] == rows


def test_schedule_buffers_match_the_spec_values():
    """The 12 buffers hold the cosine schedule (s=0.008, last beta clipped to 0.999)."""
    m = SRDiff(**TINY)
    assert list(dict(m.named_buffers(recurse=False))) == list(srdiff.BUFFER_NAMES)
    b, a = m.betas, m.alphas_cumprod
    torch.testing.assert_close(b[:3], torch.tensor([6.313e-4, 1.117e-3, 1.603e-3]), rtol=2e-3, atol=0)
    torch.testing.assert_close(b[97:], torch.tensor([0.5554, 0.7499, 0.999]), rtol=2e-4, atol=0)
    torch.testing.assert_close(a[[0, 49, 99]], torch.tensor([0.99937, 0.49384, 2.43e-7]), rtol=2e-3, atol=0)
    assert m.posterior_log_variance_clipped[0].item() == pytest.approx(-46.05, abs=0.01)
    assert m.alphas_cumprod_prev[0].item() == 1.0
    torch.testing.assert_close(m.posterior_mean_coef1[0], torch.tensor(1.0))


def test_sinusoidal_frequencies_are_not_saved():
    """The time-embedding frequency table is a non-persistent buffer (no such key in the release)."""
    m = SRDiff(**TINY)
    assert not any("freqs" in k or "time_pos_emb" in k for k in m.state_dict())
    emb = m.denoise_fn.time_pos_emb(torch.tensor([0, 5]))
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))


TINY_CONFIGS = [
    dict(TINY),
    dict(TINY, in_channels=3, dim_mults=(1, 2, 3), rrdb_num_block=5, rrdb_growth=3),
    dict(TINY, scale=8, hidden_size=4, dim_mults=(1, 1, 2), rrdb_num_block=3, rrdb_num_feat=6),
    dict(TINY, scale=2, timesteps=20),
]


@pytest.mark.parametrize("config", TINY_CONFIGS)
def test_round_trip_infers_hyperparameters(config, tmp_path):
    """from_state_dict reproduces the constructor keywords and tensors (also through safetensors)."""
    model = SRDiff(**config)
    sd = model.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "m.safetensors")
    for source in (sd, load_file(tmp_path / "m.safetensors")):
        loaded = srdiff.from_state_dict(source)
        inferred = {k: loaded.hyperparameters[k] for k in srdiff.infer_hyperparameters(sd)}
        assert inferred == {k: model.hyperparameters[k] for k in inferred}
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, sd[k]), k


def test_detect_claims_srdiff_only():
    """detect() accepts SRDiff dicts (also model.-prefixed, or the RRDB alone) and rejects DiffIR."""
    sd = SRDiff(**TINY).state_dict()
    assert srdiff.detect(sd)
    assert srdiff.detect({f"model.{k}": v for k, v in sd.items()})
    rrdb_only = {k[len("rrdb."):]: v for k, v in sd.items() if k.startswith("rrdb.")}
    assert srdiff.detect(rrdb_only)
    assert not srdiff.detect({k: v for k, v in rrdb_only.items() if "upconv" not in k})
    # A DiffIR stage-2 dict has its own schedule buffers and a denoiser, under other prefixes.
    diffir_like = {k: torch.zeros(1) for k in (
        "G.patch_embed.proj.weight", "condition.E.0.weight", "diffusion.betas",
        "diffusion.alphas_cumprod", "diffusion.model.resmlp.0.weight", "denoise.resmlp.0.weight")}
    assert not srdiff.detect(diffir_like)
    for path in sorted((DATA / "keys").glob("diffir_keys_*.txt")):
        rows, _ = _listing(path)
        assert not srdiff.detect({k: torch.zeros(0) for k, _ in rows}), path.name


@pytest.mark.parametrize("scale,nb", [(4, 2), (8, 5), (2, 3)])
def test_rrdb_pretraining_dicts_load_as_rrdbnet(scale, nb):
    """An RRDB pre-training dict (no rrdb. prefix) loads strictly as an RRDBNet, described as such."""
    net = RRDBNet(in_nc=1, out_nc=1, nf=6, nb=nb, gc=4, scale=scale)
    loaded = srdiff.from_state_dict(net.state_dict())
    assert isinstance(loaded, RRDBNet) and loaded.hyperparameters == net.hyperparameters
    info = srdiff.describe(loaded)
    assert info["scale"] == scale and "not a diffusion model" in info["architecture"]


def test_from_state_dict_names_what_is_wrong():
    """Missing keys, a removed upsampling stage and a foreign dict give ValueErrors saying so."""
    sd = SRDiff(**TINY).state_dict()
    with pytest.raises(ValueError, match="Not an SRDiff state dict: missing .*denoise_fn.cond_proj.weight"):
        srdiff.from_state_dict({k: v for k, v in sd.items() if "cond_proj" not in k})
    with pytest.raises(ValueError, match="cond_proj implies x4 but the RRDB has 1"):
        srdiff.from_state_dict({k: v for k, v in sd.items() if "upconv2" not in k})
    extra = dict(sd, **{"denoise_fn.unexpected.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected"):
        srdiff.from_state_dict(extra)
    with pytest.raises(ValueError, match="Not an SRDiff state dict"):
        srdiff.from_state_dict({"layers.0.weight": torch.zeros(3)})


def test_describe_reports_the_architecture():
    """describe() gives scale, channels, encoder size and parameter counts."""
    info = srdiff.describe(SRDiff(**TINY))
    assert info["family"] == "srdiff" and info["scale"] == 4
    assert (info["in_channels"], info["out_channels"], info["timesteps"]) == (1, 1, 100)
    assert info["rrdb"] == "2 blocks x 4 features (growth 2)"
    assert info["schedule"] == "cosine (s=0.008)"
    assert info["parameters"] == info["parameters_unet"] + info["parameters_rrdb"]


def test_rrdb_returns_trunk_features_and_sr():
    """RRDBNet gives an x``scale`` image in [-1, 1] and nb + 1 LR-resolution features."""
    net = RRDBNet(in_nc=1, out_nc=1, nf=4, nb=3, scale=8)
    out, feas = net(torch.rand(2, 1, 5, 6) * 2 - 1, get_fea=True)
    assert out.shape == (2, 1, 40, 48) and out.min() >= -1 and out.max() <= 1
    assert [f.shape for f in feas] == [torch.Size([2, 4, 5, 6])] * 4
    assert net.cond_channels == 4  # feas[2::3] -> one feature map
    with pytest.raises(ValueError, match="scale must be one of"):
        RRDBNet(scale=3)


def test_unet_rejects_sizes_it_cannot_halve():
    """The U-Net needs HR sizes divisible by 2**(levels-1) and says so."""
    net = Unet(dim=8, in_channels=1, out_dim=1, dim_mults=(1, 2, 2), cond_channels=4, scale=4)
    cond = torch.zeros(1, 8, 12, 16)
    assert net(torch.zeros(1, 1, 12, 16), torch.tensor([3]), cond).shape == (1, 1, 12, 16)
    with pytest.raises(ValueError, match="multiples of 4, but got 10x16"):
        net(torch.zeros(1, 1, 10, 16), torch.tensor([3]), torch.zeros(1, 8, 10, 16))


def test_unet_accepts_features_or_projected_condition():
    """Passing RRDB features or their cached projection gives the same noise estimate."""
    m = _tiny()
    feas = m.rrdb.features(torch.rand(1, 1, 3, 4) * 2 - 1)
    x, t = torch.randn(1, 1, 12, 16), torch.tensor([7])
    torch.testing.assert_close(m.denoise_fn(x, t, feas), m.denoise_fn(x, t, m.denoise_fn.project_cond(feas)))


def test_official_sampling_parity_golden():
    """DDPM sampling reproduces the official GaussianDiffusion.sample output (tiny model, seed 2024)."""
    data = load_file(DATA / "srdiff" / "srdiff_official_tiny.safetensors")
    model = srdiff.from_state_dict({k: v for k, v in data.items() if k.startswith("model.")})
    torch.manual_seed(2024)
    sr = model.sample(data["img_lr"], data["img_lr_up"])
    torch.testing.assert_close(sr, data["sr_seed2024"], rtol=0, atol=1e-4)
    torch.testing.assert_close(model.rrdb(data["img_lr"]), data["rrdb_out"], rtol=0, atol=1e-5)


def test_ddpm_draws_in_the_official_order():
    """Global-RNG sampling draws x_T and then exactly one HR-sized tensor per step (T + 1 draws)."""
    m = _tiny(timesteps=10)
    lr = torch.rand(1, 1, 2, 2) * 2 - 1
    torch.manual_seed(5)
    m.sample(lr)
    after_sampling = torch.rand(4)
    torch.manual_seed(5)
    for _ in range(11):
        torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(after_sampling, torch.rand(4), rtol=0, atol=0)


def test_generator_makes_sampling_reproducible():
    """The same generator seed gives the same SR, another seed a different one."""
    m = _tiny(timesteps=10)
    lr = torch.rand(1, 1, 3, 4) * 2 - 1
    run = lambda seed, **kw: m.sample(lr, generator=torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    torch.testing.assert_close(run(1), run(1), rtol=0, atol=0)
    assert (run(1) - run(2)).abs().max() > 1e-3
    torch.testing.assert_close(run(1, sampler="ddim", steps=4, eta=0.5), run(1, sampler="ddim", steps=4, eta=0.5))


def test_ddim_with_eta_one_on_all_steps_is_ddpm():
    """DDIM with eta = 1 over all T steps is the official ancestral sampler (same draws)."""
    m = _tiny(timesteps=30)
    lr = torch.rand(2, 1, 3, 4) * 2 - 1
    ddpm = m.sample(lr, generator=torch.Generator().manual_seed(3))
    ddim = m.sample(lr, sampler="ddim", steps=30, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ddim, ddpm, rtol=0, atol=1e-4)


def test_first_order_sde_step_is_ancestral_sampling():
    """DPM-Solver++(2M) SDE's first-order step is DDPM's posterior on the same grid."""
    m = _tiny(timesteps=30)
    lr = torch.rand(2, 1, 3, 4) * 2 - 1
    sde = m.sample(lr, sampler="dpm++2m-sde", steps=2, generator=torch.Generator().manual_seed(4))
    ddpm = m.sample(lr, sampler="ddim", eta=1.0, steps=2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sde, ddpm, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sampler,steps,streams", [
    ("ddim", 5, [0]), ("dpm++2m", 5, [0]), ("dpm++2m", 1, [0]),
    ("ddpm", 7, list(range(8))),  # on a sub-grid: ancestral sampling, one draw per step
    ("dpm++2m-sde", 6, list(range(6))),  # no draw after the final jump to the clean residual
])
def test_fast_samplers_report_progress_and_draw_noise_per_step(sampler, steps, streams):
    """Every sampler calls back once per step; deterministic ones depend on x_T alone."""
    m = _tiny(timesteps=20)
    lr = torch.rand(1, 1, 3, 4) * 2 - 1
    calls = []
    drawn = []

    def noise(like, stream):
        drawn.append(stream)
        return torch.ones_like(like) * (0.1 if stream else 1.0)

    out = m.sample(lr, sampler=sampler, steps=steps, noise=noise, callback=lambda d, n: calls.append((d, n)))
    assert out.shape == (1, 1, 12, 16) and torch.isfinite(out).all()
    assert calls == [(i, steps) for i in range(1, steps + 1)]
    assert drawn == streams


def test_sample_output_is_the_residual_around_img_lr_up():
    """The SR differs from img_lr_up by at most 1 / res_rescale (the clipped residual)."""
    m = _tiny(timesteps=10)
    lr = torch.rand(1, 1, 3, 4) * 2 - 1
    up = m.upsample_lr(lr)
    sr = m.sample(lr, sampler="ddim", steps=3)
    assert (sr - up).abs().max() <= 0.5 + 1e-6


def test_sample_pads_sizes_the_unet_cannot_take():
    """An LR size whose HR size is not a multiple of the U-Net's is padded and cropped back."""
    m = _tiny(dim_mults=(1, 2, 2, 2), timesteps=5)  # HR multiple 8 -> LR multiple 2 at x4
    assert (m.hr_multiple, m.lr_multiple) == (8, 2)
    lr = torch.rand(1, 1, 3, 5) * 2 - 1
    assert m.sample(lr, sampler="ddim", steps=2).shape == (1, 1, 12, 20)
    with pytest.raises(ValueError, match=r"img_lr of shape \(B, 1, h, w\)"):
        m.sample(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="Unknown SRDiff sampler 'euler'"):
        m.sample(lr, sampler="euler")
    with pytest.raises(ValueError, match="steps must be between 1 and 5"):
        m.sample(lr, sampler="ddim", steps=6)


def test_timestep_grid_spans_all_trained_steps():
    """Grids start at T-1 (pure noise), end at 0 and are strictly decreasing."""
    assert samplers.timestep_grid(100, 100) == list(range(99, -1, -1))
    for n in (1, 2, 5, 10, 25):
        g = samplers.timestep_grid(100, n)
        assert len(g) == n and g[0] == 99 and (n == 1 or g[-1] == 0)
        assert all(a > b for a, b in zip(g, g[1:]))


def test_training_loss_trains_the_unet_and_freezes_the_encoder():
    """training_loss is the L1 noise error; gradients reach the U-Net but never the RRDB."""
    m = _tiny(timesteps=10).train()
    hr = torch.rand(2, 1, 8, 8) * 2 - 1
    lr = torch.rand(2, 1, 2, 2) * 2 - 1
    t, noise = torch.tensor([0, 9]), torch.randn(2, 1, 8, 8)
    loss = m.training_loss(hr, lr, t=t, noise=noise)
    up = m.upsample_lr(lr)
    x_t = m.q_sample(m.img2res(hr, up), t, noise)
    expected = (m.denoise_fn(x_t, t, m.rrdb.features(lr)) - noise).abs().mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert m.denoise_fn.cond_proj.weight.grad is not None
    assert all(p.grad is None for p in m.rrdb.parameters())


def test_residual_mapping_round_trips_inside_the_clip_range():
    """img2res/res2img invert each other for residuals within +-1/res_rescale and clip beyond."""
    m = SRDiff(**TINY)
    up = torch.zeros(1, 1, 4, 4)
    hr = torch.linspace(-0.4, 0.4, 16).reshape(1, 1, 4, 4)
    torch.testing.assert_close(m.res2img(m.img2res(hr, up), up), hr)
    assert m.img2res(torch.full((1, 1, 4, 4), 0.9), up).max().item() == 1.0


def test_legacy_official_container_loads_through_load_checkpoint(tmp_path):
    """A legacy (non-zip) torch.save of the official container loads strictly with weights_only."""
    from napari_diffir.checkpoints import load_checkpoint

    model = _tiny(in_channels=3)
    adam = torch.optim.Adam(model.parameters(), lr=2e-4)
    model.training_loss(torch.rand(1, 3, 8, 8) * 2 - 1, torch.rand(1, 3, 2, 2) * 2 - 1).backward()
    adam.step()
    ckpt = {"global_step": 1, "optimizer_states": [adam.state_dict()], "state_dict": {"model": model.state_dict()}}
    path = tmp_path / "model_ckpt_steps_1.ckpt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(path)
    assert loaded.family == "srdiff" and isinstance(loaded.model, SRDiff)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert loaded.description["scale"] == 4 and loaded.description["in_channels"] == 3
