"""DiffIR models: official state-dict layout, hyperparameter inference, schedule, outputs.

The key listings under tests/data/keys/diffir_keys_*.txt were produced by instantiating the
official arch files (Zj-BinXia/DiffIR @ 293f86c) for every released configuration; the models
here must reproduce them key for key. Numerical parity with the official code was checked
outside the repository (see docs/models.md); these tests pin what can live here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_diffir.models import diffir
from napari_diffir.models.diffir import DiffIRS1, DiffIRS2, describe, detect, from_state_dict
from napari_diffir.models.schedules import BUFFER_NAMES as SCHEDULE_BUFFERS
from napari_diffir.models.schedules import Schedule

KEYS = Path(__file__).parent / "data" / "keys"
LISTINGS = sorted(KEYS.glob("diffir_keys_*.txt"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def read_listing(path: Path):
    """(class name, constructor kwargs incl. task, [(key, shape, alias_of | None)])."""
    lines = path.read_text().splitlines()
    header = lines[0]
    cls_name = header.split("class ")[1].split()[0]
    kwargs = json.loads(header.split("kwargs ", 1)[1])
    name = path.stem
    kwargs["task"] = "sr" if "_SR_" in name else "deblur" if "_deblur_" in name else "inpaint"
    rows = []
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        shape = tuple(int(s) for s in parts[1].strip("()").split(",") if s.strip())
        alias = parts[4].split()[1] if len(parts) > 4 and parts[4].startswith("SAME-TENSOR-AS") else None
        rows.append((parts[0], shape, alias))
    return cls_name, kwargs, rows


def listing_state_dict(rows) -> dict[str, torch.Tensor]:
    """A state dict with the listing's keys and shapes (aliases share one tensor, as upstream)."""
    sd: dict[str, torch.Tensor] = {}
    for key, shape, alias in rows:
        sd[key] = sd[alias] if alias else torch.zeros(shape)
    if "diffusion.betas" in sd:
        for name, value in Schedule.sqrt_linear(4, 0.1, 0.99).tables().items():
            sd[f"diffusion.{name}"] = value.float()
    return sd


def tiny(cls=DiffIRS2, **kw):
    """A small single-channel configuration of the kind the project trains."""
    base = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
                n_encoder_res=1, n_feats=8, inp_channels=1, out_channels=1, ffn_expansion_factor=2.0)
    base.update(kw)
    if base.get("task") == "inpaint":
        base.setdefault("num_refinement_blocks", 0)
        base["num_refinement_blocks"] = 0
        base["inp_channels"] = base["out_channels"] + 1
    return cls(**base)


def test_listings_cover_every_released_configuration():
    """All 12 official configurations (SR x4/x2/x1, deblur, inpaint, big inpaint; S1 and S2) are tested."""
    assert len(LISTINGS) == 12


@pytest.mark.parametrize("path", LISTINGS, ids=lambda p: p.stem.replace("diffir_keys_", ""))
def test_state_dict_matches_official_listing(path):
    """Built from the official kwargs, every key, shape and the key order equal the listing."""
    cls_name, kwargs, rows = read_listing(path)
    cls = {"DiffIRS1": DiffIRS1, "DiffIRS2": DiffIRS2}[cls_name]
    with torch.device("meta"):
        model = cls(**kwargs)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, s) for k, s, _ in rows]
    if cls is DiffIRS2:  # the aliases are one module registered twice, as upstream
        assert model.diffusion.condition is model.condition
        assert model.diffusion.model is model.denoise
        assert any(alias for *_, alias in rows)


@pytest.mark.parametrize("path", LISTINGS, ids=lambda p: p.stem.replace("diffir_keys_", ""))
def test_from_state_dict_infers_official_hyperparameters(path):
    """from_state_dict rebuilds each official variant with exactly the official kwargs."""
    cls_name, kwargs, rows = read_listing(path)
    sd = listing_state_dict(rows)
    assert detect(sd)
    model = from_state_dict(sd)
    assert type(model).__name__ == cls_name
    hp = model.hyperparameters
    for name, value in kwargs.items():
        assert hp[name] == value, name
    assert not model.training


def test_schedule_buffers_have_the_official_values():
    """The 12 diffusion buffers equal the values of the official T=4, 0.1..0.99 schedule."""
    expected = {
        "betas": [0.1, 0.2942856, 0.5909523, 0.99],
        "alphas_cumprod": [0.9, 0.6351429, 0.2598038, 0.0025980],
        "alphas_cumprod_prev": [1, 0.9, 0.6351429, 0.2598038],
        "sqrt_alphas_cumprod": [0.9486833, 0.7969586, 0.5097095, 0.0509709],
        "sqrt_one_minus_alphas_cumprod": [0.3162278, 0.6040340, 0.8603466, 0.9987001],
        "log_one_minus_alphas_cumprod": [-2.302585, -1.008250, -0.300840, -0.002601],
        "sqrt_recip_alphas_cumprod": [1.054093, 1.254770, 1.961902, 19.619019],
        "sqrt_recipm1_alphas_cumprod": [0.333333, 0.757924, 1.687916, 19.593517],
        "posterior_variance": [0, 0.0806578, 0.2912918, 0.7347031],
        "posterior_log_variance_clipped": [-46.0517, -2.51754, -1.23343, -0.30829],
        "posterior_mean_coef1": [1, 0.7651869, 0.6362697, 0.5059268],
        "posterior_mean_coef2": [0, 0.2302458, 0.3152556, 0.0742124],
    }
    model = tiny()
    buffers = dict(model.diffusion.named_buffers())
    assert list(buffers) == list(SCHEDULE_BUFFERS) == list(expected)
    for name, values in expected.items():
        assert buffers[name].dtype == torch.float32
        torch.testing.assert_close(buffers[name], torch.tensor(values), rtol=2e-5, atol=1e-4, msg=name)


ROUND_TRIP = [
    dict(task="sr", scale=4),
    dict(task="sr", scale=2, inp_channels=3, out_channels=3),
    dict(task="sr", scale=1, LayerNorm_type="BiasFree", bias=True),
    dict(task="deblur", num_blocks=[1, 2, 1, 1], num_refinement_blocks=2, heads=[1, 1, 2, 4]),
    # heads of a level without blocks cannot be read back; the default (here) is inferred
    dict(task="deblur", num_blocks=[1, 0, 1, 1], heads=[1, 2, 4, 8]),
    dict(task="deblur", num_refinement_blocks=0, ffn_expansion_factor=2.35, n_denoise_res=2, timesteps=6),
    dict(task="inpaint", out_channels=3, dim=12, ffn_expansion_factor=1.8),
    dict(task="inpaint", dual_pixel_task=True, n_encoder_res=3),
    dict(task="sr", scale=4, dim=16, n_feats=16, linear_start=0.05, linear_end=0.9),
]


@pytest.mark.parametrize("kw", ROUND_TRIP, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
@pytest.mark.parametrize("cls", [DiffIRS1, DiffIRS2], ids=["S1", "S2"])
def test_round_trip_reproduces_hyperparameters_and_outputs(cls, kw):
    """from_state_dict(net.state_dict()) recovers every hyperparameter and the same outputs."""
    if cls is DiffIRS1:
        kw = {k: v for k, v in kw.items() if k not in ("n_denoise_res", "timesteps", "linear_start", "linear_end")}
    net = tiny(cls, **kw).eval()
    loaded = from_state_dict(net.state_dict())
    assert loaded.hyperparameters == net.hyperparameters
    hw = net.multiple_of
    x = torch.rand(1, net.hyperparameters["inp_channels"], hw, hw * 2)
    with torch.no_grad():
        if cls is DiffIRS1:
            gt = torch.rand(1, net.hyperparameters["out_channels"], hw * net.scale, hw * 2 * net.scale)
            a, b = net.restore(x, gt), loaded.restore(x, gt)
        else:
            noise = torch.randn(1, net.ipr_dim)
            a, b = net.restore(x, noise=noise), loaded.restore(x, noise=noise)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_safetensors_round_trip(tmp_path):
    """A de-duplicated safetensors save (one name per shared tensor) and a full one both load."""
    safetensors = pytest.importorskip("safetensors.torch")
    net = tiny(task="sr", scale=2).eval()
    dedup = tmp_path / "dedup.safetensors"
    safetensors.save_model(net, str(dedup))
    stored = safetensors.load_file(str(dedup))
    assert len(stored) < len(net.state_dict())  # aliases were dropped by save_model
    full = tmp_path / "full.safetensors"
    safetensors.save_file({k: v.clone() for k, v in net.state_dict().items()}, str(full))
    for path in (dedup, full):
        loaded = from_state_dict(safetensors.load_file(str(path)))
        assert loaded.hyperparameters == net.hyperparameters
        for k, v in net.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        assert loaded.diffusion.condition is loaded.condition


def test_from_state_dict_does_not_modify_the_callers_dict():
    """Filling aliases and the schedule happens on a copy; the caller's tensors stay untouched."""
    net = tiny()
    sd = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("diffusion.")}
    before = {k: v.clone() for k, v in sd.items()}
    model = from_state_dict(sd)
    assert set(sd) == set(before) and all(torch.equal(sd[k], before[k]) for k in sd)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert all(torch.equal(sd[k], before[k]) for k in sd)
    # the upstream schedule was filled in for the dict saved without buffers
    torch.testing.assert_close(model.diffusion.betas, net.diffusion.betas)


def test_detect_rejects_srdiff_and_accepts_only_diffir():
    """SRDiff state dicts (and arbitrary ones) are not claimed; each DiffIR listing is."""
    for path in sorted(KEYS.glob("srdiff_keys_*.txt")):
        keys = [line.split("\t")[0] for line in path.read_text().splitlines() if line and not line.startswith("#")]
        assert not detect(dict.fromkeys(keys, None)), path.name
    assert not detect({"conv.weight": torch.zeros(1)})
    for path in LISTINGS:
        assert detect(dict.fromkeys(key for key, _, _ in read_listing(path)[2])), path.name


def test_errors_name_the_problem():
    """Foreign, truncated, mis-shaped or self-contradicting dicts raise ValueError naming keys."""
    net = tiny()
    sd = net.state_dict()
    with pytest.raises(ValueError, match="Not a DiffIR state dict: missing .*G.patch_embed.proj.weight"):
        from_state_dict({"conv.weight": torch.zeros(1)})
    truncated = {k: v for k, v in sd.items() if not k.startswith("G.tail.0.2")}
    with pytest.raises(ValueError, match=r"missing keys 'G.tail.0.2.weight'"):
        from_state_dict(truncated)
    extra = dict(sd, **{"G.bogus.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys 'G.bogus.weight'"):
        from_state_dict(extra)
    bad_shape = dict(sd, **{"G.encoder_level1.0.attn.qkv.weight": torch.zeros(5, 8, 1, 1)})
    with pytest.raises(ValueError, match="size mismatch"):
        from_state_dict(bad_shape)
    both = dict(sd, **{"E.E.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="stage 1 from stage 2.*both"):
        from_state_dict(both)
    split = dict(sd)
    split["diffusion.condition.mlp.0.bias"] = sd["condition.mlp.0.bias"] + 1
    with pytest.raises(ValueError, match="must hold the same tensor"):
        from_state_dict(split)
    partial = {k: v for k, v in sd.items() if k != "diffusion.betas"}
    with pytest.raises(ValueError, match="Incomplete IPR diffusion schedule.*diffusion.betas"):
        from_state_dict(partial)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(task="denoise"), "task must be one of"),
        (dict(task="sr", scale=3), "scale must be one of"),
        (dict(task="deblur", scale=2), "Only task='sr' has a scale"),
        (dict(task="inpaint", num_refinement_blocks=2), "no refinement stage"),
        (dict(task="deblur", inp_channels=1, out_channels=3), "inp_channels must equal out_channels"),
        (dict(LayerNorm_type="Withbias"), "LayerNorm_type must be one of"),
        (dict(dim=6, heads=[4, 2, 4, 8]), "not divisible by heads"),
        (dict(num_blocks=[1, 1, 1]), "4 levels"),
        (dict(dual_pixel_task=True), "only in the inpainting"),
    ],
)
def test_constructor_rejects_bad_hyperparameters(kw, message):
    """A wrong or misspelled hyperparameter raises at construction with a clear message."""
    base = dict(dim=8, num_blocks=[1, 1, 1, 1], n_encoder_res=1, n_feats=8)
    base.update(kw)
    with pytest.raises(ValueError, match=message):
        DiffIRS2(**base)
    with pytest.raises(TypeError):
        DiffIRS2(dim=8, dimm=8)  # no **kwargs: misspelled names raise


def test_input_size_must_be_a_multiple_of_the_body_grid():
    """SR x4/x2/x1 need multiples of 8/16/32 (deblur/inpaint 8); others raise a ValueError."""
    for scale, multiple in ((4, 8), (2, 16), (1, 32)):
        net = tiny(task="sr", scale=scale).eval()
        assert net.multiple_of == multiple
        with pytest.raises(ValueError, match=f"multiples of {multiple}"):
            net(torch.rand(1, 1, multiple + 4, multiple))
    with pytest.raises(ValueError, match=r"Expected a \(B, 1, H, W\) input"):
        tiny(task="deblur").eval()(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("task, scale", [("sr", 4), ("sr", 2), ("sr", 1), ("deblur", None), ("inpaint", None)])
def test_train_and_eval_return_values_follow_upstream(task, scale):
    """S1 train -> (out, [ipr]); S2 train -> (out, T iprs); eval -> out (inpaint: tuples)."""
    s1, s2 = tiny(DiffIRS1, task=task, scale=scale), tiny(DiffIRS2, task=task, scale=scale)
    hp = s1.hyperparameters
    s = hp["scale"]
    x = torch.rand(2, hp["inp_channels"], 32, 32)
    gt = torch.rand(2, hp["out_channels"], 32 * s, 32 * s)
    out, iprs = s1.train()(x, gt)
    assert out.shape == gt.shape and len(iprs) == 1 and iprs[0].shape == (2, 32)
    out2, steps = s2.train()(x, iprs[0].detach())
    assert out2.shape == gt.shape and len(steps) == 4 and all(t.shape == (2, 32) for t in steps)
    (out.square().mean() + out2.square().mean() + steps[-1].abs().mean()).backward()
    assert s2.denoise.resmlp[0].weight.grad is not None and s2.condition.E[0].weight.grad is not None
    with pytest.raises(ValueError, match="stage-1 IPR"):
        s2(x)
    s1.eval(), s2.eval()
    with torch.no_grad():
        e1, e2 = s1(x, gt), s2(x)
    if task == "inpaint":
        assert isinstance(e1, tuple) and e1[0].shape == gt.shape and len(e1[1]) == 1
        assert isinstance(e2, tuple) and e2[0].shape == gt.shape and e2[1] is None
    else:
        assert e1.shape == gt.shape and e2.shape == gt.shape


def test_stage2_noise_is_drawn_like_upstream():
    """Eval forward draws torch.randn((B, ipr_dim)) as the start, then one discarded draw per step."""
    net = tiny(task="deblur").eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(7)
        out = net(x)
        after = torch.randn(3)
        torch.manual_seed(7)
        start = torch.randn((2, net.ipr_dim))
        for _ in range(4):
            torch.randn((2, net.ipr_dim))
        expected_after = torch.randn(3)
        assert torch.equal(after, expected_after)
        assert torch.equal(out, net.restore(x, noise=start))


def test_stage2_is_deterministic_given_seed_generator_or_noise():
    """Same seed, generator or noise -> same output; other noise -> another output."""
    net = tiny(task="sr", scale=4).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(1)
        a = net(x)
        torch.manual_seed(1)
        b = net(x)
        g1 = net.restore(x, generator=torch.Generator().manual_seed(5))
        g2 = net.restore(x, generator=torch.Generator().manual_seed(5))
        n = torch.randn(1, net.ipr_dim)
        n1, n2 = net.restore(x, noise=n), net.restore(x, noise=n)
        other = net.restore(x, noise=n + 1)
    assert torch.equal(a, b) and torch.equal(g1, g2) and torch.equal(n1, n2)
    assert not torch.equal(n1, other)
    with pytest.raises(ValueError, match=r"IPR noise of shape \(1, 32\)"):
        net.restore(x, noise=torch.randn(1, 256))


def test_reverse_steps_are_posterior_means_without_noise():
    """Each reverse step is coef1[t]*x0_hat + coef2[t]*x_t; the last returns the denoiser's x0."""
    net = tiny(task="deblur").eval()
    diff = net.diffusion
    x = torch.rand(1, 1, 16, 16)
    noise = torch.randn(1, net.ipr_dim)
    with torch.no_grad():
        c = net.condition(x)
        z = noise
        for t in (3, 2, 1, 0):
            tt = torch.full((1,), t, dtype=torch.long)
            x0 = net.denoise(z, tt, c)
            z = diff.posterior_mean_coef1[t] * x0 + diff.posterior_mean_coef2[t] * z
        torch.testing.assert_close(net.estimate_ipr(x, noise=noise), z, rtol=0, atol=0)
        torch.testing.assert_close(z, x0, rtol=0, atol=0)  # coef1[0] = 1, coef2[0] = 0


def test_channels_last_gives_the_same_output():
    """The channels-last inference path used by the restorer matches the default layout."""
    net = tiny(task="sr", scale=2, dim=16, heads=[1, 2, 4, 8]).eval()
    x = torch.rand(1, 1, 32, 48)
    noise = torch.randn(1, net.ipr_dim)
    with torch.inference_mode():
        a = net.restore(x, noise=noise)
        net.to(memory_format=torch.channels_last)
        b = net.restore(x.contiguous(memory_format=torch.channels_last), noise=noise)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_describe_summarises_the_model():
    """describe() names family, stage, task, scale, width, depth and the parameter count."""
    net = tiny(task="sr", scale=2)
    d = describe(net)
    assert d["family"] == diffir.FAMILY == "diffir"
    assert (d["architecture"], d["stage"], d["task"], d["scale"]) == ("DiffIRS2", 2, "sr", 2)
    assert (d["dim"], d["num_blocks"], d["in_channels"], d["ipr_dim"]) == (8, [1, 1, 1, 1], 1, 32)
    assert d["params"] == sum(p.numel() for p in net.parameters()) and d["stochastic"]
    assert describe(tiny(DiffIRS1, task="deblur"))["needs_gt"]
