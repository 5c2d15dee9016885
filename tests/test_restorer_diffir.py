"""The checkpoint-driven DiffIR restorers, run through the engine with tiny checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_diffir
from napari_diffir import TileContext, get_restorer
from napari_diffir.models.diffir import DiffIRS1, DiffIRS2
from napari_diffir.restorers.diffir import DiffIRInpaintRestorer, DiffIRRestorer


def tiny(cls=DiffIRS2, *, task="deblur", scale=None, channels=1, **kw):
    torch.manual_seed(0)
    return cls(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=0 if task == "inpaint" else 1,
               n_encoder_res=1, n_feats=8, task=task, scale=scale,
               inp_channels=channels + 1 if task == "inpaint" else channels, out_channels=channels, **kw)


@pytest.fixture
def checkpoint(tmp_path):
    """Save a tiny model as an official BasicSR file ({'params': ..., 'params_ema': ...})."""

    def save(model, name="net.pth"):
        path = tmp_path / name
        sd = model.state_dict()
        torch.save({"params": sd, "params_ema": sd}, path)
        return str(path)

    return save


@pytest.mark.parametrize(
    "task, scale, channels, multiple, info_task",
    [("sr", 4, 3, 8, "super-resolution"), ("sr", 2, 1, 16, "super-resolution"),
     ("sr", 1, 1, 32, "super-resolution"), ("deblur", None, 1, 8, "deblur"), ("inpaint", None, 3, 8, "inpaint")],
)
def test_info_comes_from_the_checkpoint(checkpoint, task, scale, channels, multiple, info_task):
    """Task, scale, channels and the padding multiple (8/16/32 for x4/x2/x1) follow the checkpoint."""
    r = get_restorer("diffir", weights=checkpoint(tiny(task=task, scale=scale, channels=channels)))
    info = r.info
    assert (info.task, info.scale, info.in_channels, info.out_channels) == (info_task, scale or 1, channels, channels)
    assert info.multiple_of == multiple and info.min_size == multiple
    assert info.stochastic and info.needs_mask == (task == "inpaint")
    assert info.weights.endswith("net.pth")
    assert DiffIRRestorer.info.task == "restore"  # the class-level info is untouched


def test_denoise_through_the_engine_is_seeded_and_shape_preserving(checkpoint):
    """A 1-channel same-size model keeps shape; a seed reproduces it, another seed changes it."""
    path = checkpoint(tiny(task="deblur"))
    img = np.random.default_rng(0).random((30, 21)).astype(np.float32)
    a = napari_diffir.restore(img, "diffir", weights=path, seed=1)
    b = napari_diffir.restore(img, "diffir", weights=path, seed=1)
    c = napari_diffir.restore(img, "diffir", weights=path, seed=2)
    assert a.shape == img.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0
    assert img.max() <= 1  # the caller's array is untouched
    assert napari_diffir.restore(img[:5, :6], "diffir", weights=path, seed=1).shape == (5, 6)  # padded to 8
    np.testing.assert_array_equal(img, np.random.default_rng(0).random((30, 21)).astype(np.float32))


def test_sr_output_is_upscaled_and_grayscale_runs_through_rgb_checkpoint(checkpoint):
    """An RGB x2 checkpoint upsamples a grayscale image (replicated to RGB, averaged back)."""
    path = checkpoint(tiny(task="sr", scale=2, channels=3))
    img = np.random.default_rng(1).random((20, 18)).astype(np.float32)
    out = napari_diffir.restore(img, "diffir", weights=path, seed=0)
    assert out.shape == (40, 36)
    rgb = np.random.default_rng(1).random((20, 18, 3)).astype(np.float32)
    assert napari_diffir.restore(rgb, "diffir", weights=path, seed=0, axes="YXC").shape == (40, 36, 3)


def test_restore_tile_matches_the_model(checkpoint):
    """restore_tile runs DiffIRS2.restore with the context's seeded IPR start (one per image)."""
    model = tiny(task="sr", scale=4)
    r = DiffIRRestorer(weights=checkpoint(model))
    x = torch.rand(1, 1, 16, 24)
    ctx = TileContext(seed=5)
    with torch.inference_mode():
        out = r.restore_tile(x, ctx)
        expected = model.eval().restore(x, noise=ctx.noise_vector(model.ipr_dim)[None])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    ctx_other_tile = TileContext(seed=5, origin=(16, 0))
    assert torch.equal(ctx.noise_vector(32), ctx_other_tile.noise_vector(32))


def test_without_seed_the_official_torch_draw_is_used(checkpoint):
    """A context without a seed falls back to torch.randn, so torch.manual_seed reproduces it."""
    r = DiffIRRestorer(weights=checkpoint(tiny(task="deblur")))
    x = torch.rand(1, 1, 16, 16)
    with torch.inference_mode():
        torch.manual_seed(3)
        a = r.restore_tile(x, TileContext())
        torch.manual_seed(3)
        b = r.restore_tile(x, TileContext())
        torch.manual_seed(4)
        c = r.restore_tile(x, TileContext())
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inpainting_fills_the_mask_and_keeps_known_pixels(checkpoint):
    """Known pixels are kept; masked ones come from the model; a missing mask is explained."""
    path = checkpoint(tiny(task="inpaint", channels=3))
    img = np.random.default_rng(2).random((24, 20, 3)).astype(np.float32)
    mask = np.zeros((24, 20), bool)
    mask[5:12, 4:9] = True
    out = napari_diffir.restore(img, "diffir-inpaint", weights=path, seed=0, mask=mask, axes="YXC")
    assert out.shape == img.shape
    np.testing.assert_allclose(out[~mask], img[~mask], atol=1e-5)
    assert np.abs(out[mask] - img[mask]).max() > 1e-3
    with pytest.raises(ValueError, match="needs a mask"):
        napari_diffir.restore(img, "diffir", weights=path, seed=0, axes="YXC")


def test_lightning_inpainting_container_loads(tmp_path):
    """A LaMa/Lightning .ckpt (state_dict with generator.* among other sub-models) loads."""
    model = tiny(task="inpaint", channels=3)
    sd = {f"generator.{k}": v for k, v in model.state_dict().items()}
    sd["discriminator.model0.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": sd}, path)
    r = DiffIRInpaintRestorer(weights=str(path))
    assert r.info.needs_mask and r.info.in_channels == 3


def test_bad_weights_are_explained(checkpoint, tmp_path):
    """No weights, a stage-1 file, a task mismatch or a non-checkpoint raise clear ValueErrors."""
    with pytest.raises(ValueError, match="needs weights="):
        get_restorer("diffir")
    with pytest.raises(ValueError, match="stage-1 .*ground-truth"):
        get_restorer("diffir", weights=checkpoint(tiny(DiffIRS1), "s1.pth"))
    with pytest.raises(ValueError, match="runs inpaint checkpoints.*'deblur' model"):
        get_restorer("diffir-inpaint", weights=checkpoint(tiny(task="deblur"), "deblur.pth"))
    good = checkpoint(tiny(task="deblur"), "good.pth")
    cut = tmp_path / "cut.pth"
    data = open(good, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a PyTorch checkpoint"):
        get_restorer("diffir", weights=str(cut))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch weights file"):
        get_restorer("diffir", weights=str(junk))
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="none of the known architectures"):
        get_restorer("diffir", weights=str(other))


def test_model_instance_as_weights_and_bf16():
    """An in-memory DiffIRS2 can be passed as weights; bf16 autocast stays close to fp32."""
    model = tiny(task="deblur")
    img = np.random.default_rng(3).random((16, 16)).astype(np.float32)
    model.train()
    r = DiffIRRestorer(weights=model)
    assert r.info.weights == "<DiffIRS2 instance>"
    assert model.training and all(p.requires_grad for p in model.parameters())  # caller's model untouched
    a = napari_diffir.restore(img, r, seed=0)
    b = napari_diffir.restore(img, r, seed=0, precision="bf16")
    assert np.abs(a - b).max() < 0.05


def test_plane_statistics_are_exact_for_shallow_models_and_settle_for_deep_ones(monkeypatch):
    """Up to 16 attention layers (the bundled models) the statistics are summed layer by layer
    (exact); a deeper model repeats full passes until the maps settle (exact sums would cost a
    forward per two layers)."""
    from napari_diffir.models.diffir import planewise

    seen = []
    original = planewise.prepare_plane
    monkeypatch.setattr(planewise, "prepare_plane",
                        lambda *a, **k: seen.append(k.get("tolerance", "missing")) or original(*a, **k))
    x = np.random.default_rng(0).random((96, 80), dtype=np.float32)
    napari_diffir.restore(x, "diffir-denoise", tile_size=64, tile_overlap=16, seed=0)
    deep = DiffIRS2(dim=8, num_blocks=[2, 3, 3, 3], num_refinement_blocks=2, n_encoder_res=0, n_feats=4,
                    heads=[1, 1, 1, 1], inp_channels=1, out_channels=1, task="deblur")  # 2+3+3+3+3+3+2+2 = 21
    napari_diffir.restore(x, get_restorer("diffir", weights=deep), tile_size=64, tile_overlap=16, seed=0)
    assert seen == [None, 0.01]
