"""The srdiff restorer through the engine: loading, scale checks, seeds, seam-free tiling, progress."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import napari_diffir as nd
from napari_diffir import RestorationCancelled, TileContext
from napari_diffir.models.srdiff import SRDiff


def _tiny_model(in_channels=1, **changes) -> SRDiff:
    torch.manual_seed(0)
    cfg = dict(scale=4, in_channels=in_channels, hidden_size=8, dim_mults=(1, 2), rrdb_num_block=2,
               rrdb_num_feat=4, timesteps=20)
    model = SRDiff(**{**cfg, **changes})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return _save(_tiny_model(), tmp_path_factory.mktemp("srdiff") / "tiny.safetensors")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((40, 44)).astype(np.float32)


def _run(img, weights, **kw):
    kw.setdefault("normalize", "none")
    kw.setdefault("steps", 4)
    return nd.restore(img, "srdiff", weights=weights, **kw)


def test_restorer_takes_scale_and_channels_from_the_checkpoint(tiny_weights):
    """Loading sets scale, channels, the LR size multiple and the weights path."""
    r = nd.get_restorer("srdiff", weights=tiny_weights)
    info = r.info
    assert (info.scale, info.in_channels, info.out_channels) == (4, 1, 1)
    assert info.multiple_of == 1  # dim_mults (1, 2): HR multiple 2, always met at x4
    assert info.stochastic and info.weights == tiny_weights
    x8 = _save(_tiny_model(scale=8, dim_mults=(1, 2, 2, 2, 2)), tiny_weights.replace("tiny", "x8"))
    assert nd.get_restorer("srdiff", weights=x8).info.multiple_of == 2  # HR multiple 16 at x8


def test_wrong_scale_missing_weights_and_foreign_checkpoints_are_refused(tiny_weights, tmp_path):
    """A scale other than the checkpoint's, no weights, or a non-SRDiff model raise clear errors."""
    with pytest.raises(ValueError, match=r"is an x4 SRDiff model; it cannot upscale x8"):
        nd.get_restorer("srdiff", weights=tiny_weights, scale=8)
    assert nd.get_restorer("srdiff", weights=tiny_weights, scale=4).info.scale == 4
    with pytest.raises(ValueError, match="needs weights=<SRDiff checkpoint>"):
        nd.get_restorer("srdiff")
    rrdb = _tiny_model().rrdb
    rrdb_path = _save(rrdb, tmp_path / "rrdb.safetensors")
    with pytest.raises(ValueError, match="holds only an SRDiff RRDB encoder"):
        nd.get_restorer("srdiff", weights=rrdb_path)
    from napari_diffir.models.diffir import DiffIRS1

    diffir = DiffIRS1(dim=8, num_blocks=(1, 1, 1, 1), heads=(1, 1, 1, 1), n_feats=8, n_encoder_res=1,
                      num_refinement_blocks=1)
    path = _save(diffir, tmp_path / "diffir.safetensors")
    with pytest.raises(ValueError, match="holds a diffir model, not SRDiff"):
        nd.get_restorer("srdiff", weights=path)


def test_output_shape_seed_and_sampler(image, tiny_weights):
    """x4 output of the image's shape; a seed reproduces it, another seed and sampler change it."""
    a = _run(image, tiny_weights, seed=1, tile_size=None)
    assert a.shape == (160, 176) and a.dtype == np.float32
    np.testing.assert_array_equal(a, _run(image, tiny_weights, seed=1, tile_size=None))
    assert np.abs(a - _run(image, tiny_weights, seed=2, tile_size=None)).mean() > 1e-3
    ddim = _run(image, tiny_weights, seed=1, tile_size=None, options={"sampler": "ddim", "eta": 1.0})
    assert np.abs(a - ddim).mean() > 1e-3


@pytest.mark.parametrize("sampler", ["dpm++2m", "ddpm"])
def test_tiles_share_one_noise_field(image, tiny_weights, sampler):
    """Tiled and untiled sampling with the same seed agree (every tile draws its region of one field)."""
    kw = dict(seed=7, options={"sampler": sampler}, steps=4)
    whole = _run(image, tiny_weights, tile_size=None, **kw)
    tiled = _run(image, tiny_weights, tile_size=32, tile_overlap=12, **kw)
    diff = np.abs(whole - tiled)
    assert np.median(diff) < 1e-5 and diff.mean() < 1e-3
    # independent per-tile noise (what the field avoids) would differ everywhere
    other = _run(image, tiny_weights, tile_size=None, **{**kw, "seed": 8})
    assert np.abs(whole - other).mean() > 1e-2


def test_rrdb_runs_once_per_tile_and_progress_counts_steps(image, tiny_weights):
    """The encoder runs once per tile, the U-Net once per step; progress sees every step."""
    r = nd.get_restorer("srdiff", weights=tiny_weights, sampler="ddim")
    calls = {"rrdb": 0, "unet": 0}
    r.model.rrdb.conv_first.register_forward_hook(lambda *a: calls.__setitem__("rrdb", calls["rrdb"] + 1))
    r.model.denoise_fn.mlp.register_forward_hook(lambda *a: calls.__setitem__("unet", calls["unet"] + 1))
    messages = []
    nd.restore(image, r, tile_size=32, tile_overlap=8, steps=3, seed=0, normalize="none",
               progress=lambda done, total, msg: messages.append(msg))
    n_tiles = calls["rrdb"]
    assert n_tiles == 4 and calls["unet"] == 3 * n_tiles
    assert sum("step 3/3" in m for m in messages) == n_tiles


def test_cancel_stops_between_steps(image, tiny_weights):
    """Setting the cancel event during sampling raises RestorationCancelled."""
    ev = threading.Event()

    def progress(done, total, msg):
        if "step 2/" in msg:
            ev.set()

    with pytest.raises(RestorationCancelled):
        _run(image, tiny_weights, seed=0, steps=10, progress=progress, cancel=ev)


def test_grayscale_into_an_rgb_checkpoint(tmp_path):
    """A 2-D image goes through a 3-channel (official-style) checkpoint and comes back 2-D."""
    path = _save(_tiny_model(in_channels=3), tmp_path / "rgb.safetensors")
    img = np.random.default_rng(1).random((12, 10)).astype(np.float32)
    out = _run(img, path, seed=0, tile_size=None, steps=2)
    assert out.shape == (48, 40)
    rgb = np.random.default_rng(1).random((12, 10, 3)).astype(np.float32)
    assert _run(rgb, path, seed=0, tile_size=None, steps=2, rgb=True).shape == (48, 40, 3)


def test_odd_sizes_are_padded_to_the_unet_multiple(tmp_path):
    """An LR size whose x4 size is not a multiple of 8 is padded by the engine and cropped back."""
    path = _save(_tiny_model(dim_mults=(1, 2, 2, 2)), tmp_path / "deep.safetensors")
    r = nd.get_restorer("srdiff", weights=path)
    assert r.info.multiple_of == 2
    img = np.random.default_rng(2).random((13, 11)).astype(np.float32)
    out = nd.restore(img, r, seed=0, tile_size=None, steps=2, normalize="none")
    assert out.shape == (52, 44) and np.isfinite(out).all()


def test_without_a_seed_the_official_torch_draws_are_used(tiny_weights):
    """With ctx.seed None a tile samples exactly like SRDiff.sample under torch.manual_seed."""
    r = nd.get_restorer("srdiff", weights=tiny_weights, sampler="ddpm")
    x = torch.rand(1, 1, 6, 5)
    torch.manual_seed(11)
    out = r.restore_tile(x, TileContext(steps=None, seed=None, scale=4))
    torch.manual_seed(11)
    ref = r.model.sample(x * 2 - 1, sampler="ddpm")
    torch.testing.assert_close(out, (ref + 1) / 2)


def test_exact_lr_up_reproduces_the_uint8_pipeline(tiny_weights):
    """exact_lr_up builds img_lr_up from LR*255/256 (the official LR/256), otherwise from LR."""
    x = torch.rand(1, 1, 4, 4)
    exact = nd.get_restorer("srdiff", weights=tiny_weights, exact_lr_up=True, sampler="dpm++2m")
    plain = nd.get_restorer("srdiff", weights=tiny_weights, sampler="dpm++2m")
    ctx = TileContext(steps=2, seed=5, scale=4)
    m = plain.model
    ref_plain = m.sample(x * 2 - 1, m.upsample_lr(x * 2 - 1), sampler="dpm++2m", steps=2,
                         noise=lambda like, s: ctx.noise(like, s))
    ref_exact = m.sample(x * 2 - 1, m.upsample_lr(x * 255 / 256 * 2 - 1), sampler="dpm++2m", steps=2,
                         noise=lambda like, s: ctx.noise(like, s))
    torch.testing.assert_close(plain.restore_tile(x, ctx), (ref_plain + 1) / 2)
    torch.testing.assert_close(exact.restore_tile(x, ctx), (ref_exact + 1) / 2)
    assert not torch.allclose(ref_plain, ref_exact)


@pytest.mark.parametrize("sampler", ["dpm++2m", "ddpm"])
def test_temperature_scales_the_draws(image, tiny_weights, sampler):
    """1 is the plain sampler, 0 ignores the seed, values between move the output between them."""
    kw = dict(tile_size=None, steps=4)
    plain = _run(image, tiny_weights, seed=3, options={"sampler": sampler}, **kw)
    one = _run(image, tiny_weights, seed=3, options={"sampler": sampler, "temperature": 1.0}, **kw)
    np.testing.assert_array_equal(plain, one)
    cold = [_run(image, tiny_weights, seed=s, options={"sampler": sampler, "temperature": 0.0}, **kw) for s in (3, 4)]
    np.testing.assert_allclose(cold[0], cold[1], atol=1e-6)
    assert np.abs(plain - cold[0]).mean() > 1e-3
    half = _run(image, tiny_weights, seed=3, options={"sampler": sampler, "temperature": 0.5}, **kw)
    assert 1e-4 < np.abs(half - cold[0]).mean() < np.abs(plain - cold[0]).mean()


def test_temperature_outside_0_1_is_refused(image, tiny_weights):
    with pytest.raises(ValueError, match=r"Option 'temperature' must be <= 1.0, but got 1.5"):
        nd.get_restorer("srdiff", weights=tiny_weights, temperature=1.5)
    with pytest.raises(ValueError, match=r"Option 'temperature' must be >= 0.0"):
        _run(image, tiny_weights, options={"temperature": -0.1})
    model = _tiny_model()
    with pytest.raises(ValueError, match=r"SRDiff temperature must be in \[0, 1\], but got 2.0"):
        model.sample(torch.zeros(1, 1, 8, 8), steps=2, sampler="dpm++2m", temperature=2.0)


def test_official_checkpoints_sample_at_temperature_1(tiny_weights):
    """The generic restorer keeps the release's sampler; only a model card may choose otherwise."""
    assert nd.get_restorer("srdiff", weights=tiny_weights).temperature == 1.0
    assert nd.get_restorer("srdiff", weights=tiny_weights, temperature=0.25).temperature == 0.25


def test_the_bundled_model_samples_at_the_temperature_its_card_records():
    from napari_diffir.restorers.bundled import model_card, weights_path

    if not weights_path("srdiff-sr4").is_file():
        pytest.skip("bundled srdiff-sr4 weights not installed")
    chosen = model_card("srdiff-sr4")["defaults"]["options"]["temperature"]
    r = nd.get_restorer("srdiff-sr4")
    assert r.temperature == chosen == 0.5
    assert r.info.option("temperature").default == chosen
    assert nd.get_restorer("srdiff-sr4", temperature=1.0).temperature == 1.0
    from napari_diffir.restorers.srdiff import SRDiffRestorer

    assert SRDiffRestorer.info.option("temperature").default == 1.0  # official checkpoints: the release's sampler
