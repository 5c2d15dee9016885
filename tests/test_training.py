"""Training pipelines: data reading and checks, degradations, tiny end-to-end runs, resume, cards.

Every run here is a handful of steps of a tiny network on tiny images (seconds on one CPU core).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_diffir.cli import main
from napari_diffir.training import data as D
from napari_diffir.training.degradations import Degradation, add_poisson_gaussian_noise, bicubic_downsample

TINY_DIFFIR = ["--dim", "8", "--num-blocks", "1,1,1,1", "--refinement", "0", "--n-encoder-res", "0",
               "--n-feats", "4", "--heads", "1,1,1,1"]
TINY_SRDIFF = ["--hidden", "8", "--dim-mults", "1,2", "--rrdb-blocks", "2", "--rrdb-feat", "8"]
LOOP = ["--batch-size", "2", "--val-count", "2", "--threads", "1", "--quiet", "--seed", "3"]


@pytest.fixture
def image_dir(tmp_path):
    """Three small clean images: a 2-page uint16 TIFF stack and an 8-bit RGB PNG."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    d.mkdir()
    yy, xx = np.mgrid[0:40, 0:48]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 24) ** 2) / 60.0)
    stack = np.stack([blob * 4000 + 300, blob[::-1] * 3000 + 200]).astype(np.uint16)
    tifffile.imwrite(d / "stack.tif", stack)
    iio.imwrite(d / "rgb.png", (rng.random((40, 40, 3)) * 255).astype(np.uint8))
    return d


def _train(*args):
    return main(["train", *map(str, args)])


# --------------------------------------------------------------------------- data


def test_load_images_reads_stacks_rgb_and_normalises(image_dir):
    """A 2-page TIFF gives two planes, an RGB PNG one luminance plane, all scaled to ~[0, 1]."""
    images = D.load_images([image_dir], min_size=16)
    names = [n for n, _ in images]
    assert len(images) == 3 and sum("stack.tif[" in n for n in names) == 2
    for _, a in images:
        assert a.ndim == 2 and a.dtype == np.float32
        lo, hi = np.percentile(a, D.PERCENTILES)
        assert abs(lo) < 1e-3 and abs(hi - 1) < 1e-3


def test_empty_folder_and_unreadable_file_fail_clearly(tmp_path):
    """An empty folder or a corrupt image is a TrainingDataError naming the path."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.TrainingDataError, match="contains no images"):
        D.load_images([tmp_path / "empty"])
    bad = tmp_path / "bad" / "broken.tif"
    bad.parent.mkdir()
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(D.TrainingDataError, match="Cannot read training image.*broken.tif"):
        D.load_images([bad.parent])
    with pytest.raises(D.TrainingDataError, match="does not exist"):
        D.load_images([tmp_path / "missing"])


def test_images_smaller_than_patch_fail_before_training(image_dir, tmp_path, capsys):
    """The CLI exits with code 2 and names the small images; nothing is written."""
    out = tmp_path / "run"
    assert _train("diffir", "--stage", "1", "--data", image_dir, "--patch-size", "64", "--out", out, *LOOP) == 2
    err = capsys.readouterr().err
    assert "smaller than the patch size 64" in err and "stack.tif" in err
    assert not out.exists()


def test_held_out_images_are_never_in_the_builtin_sets():
    """camera and nuclei z=30/45 are the benchmark's test set."""
    assert "camera.png" not in D.SKIMAGE_TRAINING
    assert 30 not in D.NUCLEI_TRAIN_Z and 45 not in D.NUCLEI_TRAIN_Z


def test_sampler_shares_one_affine_map_between_input_and_target():
    """With no degradation, the normalised LQ equals the GT exactly (same map for both)."""
    img = np.random.default_rng(1).random((64, 64)).astype(np.float32) * 5 + 2
    s = D.PatchSampler([img], 32, lambda x, rng: x.copy())
    lq, gt = s.batch(np.random.default_rng(0), 3)
    assert lq.shape == gt.shape == (3, 1, 32, 32)
    torch.testing.assert_close(lq, gt)


def test_source_weights_change_how_often_each_source_is_sampled():
    """A source weighted 3 is drawn 3x as often per unit of sqrt(area); unknown sources and
    non-positive weights are refused by name."""
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32)
    items = [("a.png", cols[:32, :32]), ("nuclei.tif[z=0]", rows)]  # ramps across / down
    origin = {"a.png": "/data", "nuclei.tif[z=0]": "builtin:nuclei"}
    assert D.source_weights(items, origin, {"builtin:nuclei": 3.0}) == [32.0, 64.0 * 3]
    s = D.PatchSampler([a for _, a in items], 16, lambda x, rng: x.copy(), augment=False,
                       weights=D.source_weights(items, origin, {"builtin:nuclei": 3.0}))
    rng = np.random.default_rng(0)
    from_nuclei = [(gt := s.sample(rng)[1])[-1, 0] > gt[0, -1] for _ in range(2000)]
    assert abs(np.mean(from_nuclei) - 6 / 7) < 0.03  # 64 * 3 / (32 + 64 * 3)
    with pytest.raises(D.TrainingDataError, match="'builtin:skimage', which is not one of the --data sources"):
        D.source_weights(items, origin, {"builtin:skimage": 2.0})
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(D.TrainingDataError, match="must be a positive number"):
            D.source_weights(items, origin, {"builtin:nuclei": bad})


def test_source_weight_is_recorded_and_bad_ones_fail_before_training(image_dir, tmp_path, capsys):
    """--source-weight reaches the card; a malformed or unknown one fails with nothing written."""
    common = ["--data", image_dir, "--patch-size", "16", "--val-every", "0", "--steps", "1", *TINY_DIFFIR, *LOOP]
    assert _train("diffir", "--stage", "1", "--source-weight", f"{image_dir}=2.5", "--out", tmp_path / "s1",
                  *common) == 0
    assert json.loads((tmp_path / "s1" / "best.json").read_text())["data"]["source_weights"] == {str(image_dir): 2.5}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _train("diffir", "--stage", "1", "--source-weight", "builtin:nuclei", "--out", tmp_path / "bad", *common)
    assert "expected SRC=WEIGHT" in capsys.readouterr().err
    assert _train("diffir", "--stage", "1", "--source-weight", "builtin:nuclei=2", "--out", tmp_path / "bad",
                  *common) == 2
    assert "not one of the --data sources" in capsys.readouterr().err
    assert _train("diffir", "--stage", "1", "--paired", image_dir, image_dir, "--source-weight", f"{image_dir}=2",
                  "--out", tmp_path / "bad", *common[2:]) == 2
    assert "with --paired there are none" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_sr_sampler_makes_matlab_bicubic_lr():
    """For scale 4 the LQ patch is the MATLAB-bicubic downsampling of the GT patch."""
    img = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    s = D.PatchSampler([img], 32, Degradation.preset("sr", scale=4), scale=4, context=1, augment=False)
    lq, gt = s.sample(np.random.default_rng(0))
    assert lq.shape == (8, 8) and gt.shape == (32, 32)
    np.testing.assert_allclose(lq, bicubic_downsample(gt, 4), atol=1e-5)


def test_poisson_gaussian_noise_is_unbiased_and_scales_with_photons():
    """Shot noise keeps the mean; its variance is intensity / peak."""
    rng = np.random.default_rng(0)
    clean = np.full((200, 200), 0.5, np.float32)
    noisy = add_poisson_gaussian_noise(clean, 20.0, 0.0, rng)
    assert abs(noisy.mean() - 0.5) < 0.01
    assert abs(noisy.var() - 0.5 / 20) < 0.003


def test_builtin_synthetic_images_are_reproducible():
    a = D.synthetic_fluorescence(2, size=64, seed=5)
    b = D.synthetic_fluorescence(2, size=64, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0].min() >= 0


# --------------------------------------------------------------------------- runs


def test_diffir_two_stages_cards_resume_and_bundled_loading(image_dir, tmp_path):
    """S1 then S2 on tiny data; the S2 file loads as a blind DiffIRS2 restorer; cards say it all."""
    s1 = tmp_path / "s1"
    assert _train("diffir", "--stage", "1", "--data", image_dir, "--patch-size", "16", "--steps", "3",
                  "--val-every", "2", "--out", s1, *TINY_DIFFIR, *LOOP) == 0
    card = json.loads((s1 / "best.json").read_text())
    assert card["variant"] == "DiffIRS1" and card["task"] == "denoise" and card["in_channels"] == 1
    assert card["architecture"]["hyperparameters"]["dim"] == 8
    assert card["normalization"]["percentiles"] == list(D.PERCENTILES)
    assert "train diffir --stage 1" in card["training"]["command"]
    last = json.loads((s1 / "last.json").read_text())
    assert last["training"]["steps"] == 3 and last["training"]["wall_time_s"] >= 0
    assert [h["step"] for h in last["validation"]["history"]] == [0, 2, 3]

    # stage 2 without a stage-1 checkpoint: a clear error before training
    assert _train("diffir", "--stage", "2", "--data", image_dir, "--patch-size", "16", "--out",
                  tmp_path / "bad", *TINY_DIFFIR, *LOOP) == 2
    assert _train("diffir", "--stage", "2", "--s1", tmp_path / "nope.safetensors", "--data", image_dir,
                  "--patch-size", "16", "--out", tmp_path / "bad", *TINY_DIFFIR, *LOOP) == 2

    s2 = tmp_path / "s2"
    assert _train("diffir", "--stage", "2", "--s1", s1 / "best.safetensors", "--data", image_dir,
                  "--patch-size", "16", "--steps", "2", "--val-every", "0", "--out", s2, *TINY_DIFFIR, *LOOP) == 0
    from napari_diffir.restorers.bundled import DiffIRDenoise

    restorer = DiffIRDenoise(weights=str(s2 / "best.safetensors"))
    assert restorer.info.name == "diffir-denoise" and restorer.info.in_channels == 1
    import napari_diffir

    img = np.random.default_rng(0).random((24, 20)).astype(np.float32)
    out = napari_diffir.restore(img, restorer, seed=1)
    assert out.shape == (24, 20) and np.isfinite(out).all()

    # bundling: float16 parameters, float32 schedule buffers, stage-1 provenance in the card
    from safetensors.torch import load_file

    from napari_diffir.training.bundle import bundle

    shipped = bundle(s2 / "best.safetensors", "diffir-denoise", tmp_path / "weights")
    sd = load_file(str(shipped))
    assert sd["G.patch_embed.proj.weight"].dtype == torch.float16
    assert sd["diffusion.sqrt_recip_alphas_cumprod"].dtype == torch.float32
    card = json.loads(shipped.with_suffix(".json").read_text())
    assert card["previous_stages"]["s1"]["training"]["steps"] == 3
    assert card["total_steps"] == 5 and card["training"]["stage"] == "diffir-s2"
    out16 = napari_diffir.restore(img, DiffIRDenoise(weights=str(shipped)), seed=1)
    np.testing.assert_allclose(out16, out, atol=5e-3)


def test_resume_continues_exactly(image_dir, tmp_path):
    """3 steps + 2 resumed steps give the same weights as 5 steps in one go (per-step seeds)."""
    from safetensors.torch import load_file

    args = ["diffir", "--stage", "1", "--data", image_dir, "--patch-size", "16", "--val-every", "0",
            *TINY_DIFFIR, *LOOP]
    assert _train(*args, "--steps", "5", "--out", tmp_path / "once") == 0
    assert _train(*args, "--steps", "5", "--stop-after", "3", "--out", tmp_path / "twice") == 0
    assert json.loads((tmp_path / "twice" / "state.json").read_text())["step"] == 3
    assert _train(*args, "--steps", "5", "--out", tmp_path / "twice") == 0
    a = load_file(str(tmp_path / "once" / "last_ema.safetensors"))
    b = load_file(str(tmp_path / "twice" / "last_ema.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "twice" / "state.json").read_text())["step"] == 5


def test_srdiff_needs_rrdb_then_trains_and_exports(image_dir, tmp_path, capsys):
    """Diffusion without the RRDB fails clearly; with it the export loads as an SRDiff checkpoint."""
    common = ["--scale", "4", "--data", image_dir, "--patch-size", "16", "--val-every", "0", *TINY_SRDIFF, *LOOP]
    assert _train("srdiff", "--stage", "diffusion", *common, "--out", tmp_path / "d") == 2
    assert "pre-trained RRDB" in capsys.readouterr().err
    assert _train("srdiff", "--stage", "rrdb", *common, "--steps", "2", "--out", tmp_path / "r") == 0
    assert _train("srdiff", "--stage", "diffusion", *common, "--steps", "2", "--rrdb",
                  tmp_path / "r" / "best.safetensors", "--out", tmp_path / "d") == 0
    from napari_diffir.checkpoints import load_checkpoint

    loaded = load_checkpoint(tmp_path / "d" / "best.safetensors")
    assert loaded.family == "srdiff" and loaded.model.in_channels == 1 and loaded.model.scale == 4
    card = json.loads((tmp_path / "d" / "best.json").read_text())
    assert card["name"] == "srdiff-sr4" and card["scale"] == 4 and card["validation_input"]["psnr"] > 0

    # fine-tuning: the encoder comes out of the whole SRDiff model, the rest from --init
    assert _train("srdiff", "--stage", "diffusion", *common, "--steps", "1", "--rrdb", tmp_path / "d" / "best.safetensors",
                  "--init", tmp_path / "d" / "best.safetensors", "--out", tmp_path / "ft") == 0
    from safetensors.torch import load_file

    before, after = load_file(str(tmp_path / "d" / "best.safetensors")), load_file(str(tmp_path / "ft" / "last.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("rrdb."))  # frozen encoder
    started = json.loads((tmp_path / "d" / "best.json").read_text())["training"]
    assert json.loads((tmp_path / "ft" / "best.json").read_text())["initialised_from"]["training"] == started


def test_bundled_registers_only_installed_weights(tmp_path, monkeypatch):
    """No weights file, no restorer: a source checkout without weights lists nothing bundled."""
    from napari_diffir.restorers import bundled

    monkeypatch.setattr(bundled, "WEIGHTS_DIR", tmp_path)
    seen = []
    bundled.register_restorers(seen.append)
    assert seen == []
    (tmp_path / "diffir-sr4.safetensors").write_bytes(b"")
    bundled.register_restorers(seen.append)
    assert [c.info.name for c in seen] == ["diffir-sr4"]


def test_batch_workers_train_exactly_the_same_run(image_dir, tmp_path):
    """Batches are a function of (seed, step): cutting them in worker processes changes nothing."""
    from safetensors.torch import load_file

    args = ["diffir", "--stage", "1", "--data", image_dir, "--patch-size", "16", "--val-every", "0",
            "--steps", "4", *TINY_DIFFIR, *LOOP]
    assert _train(*args, "--out", tmp_path / "inline") == 0
    assert _train(*args, "--workers", "2", "--out", tmp_path / "workers") == 0
    a = load_file(str(tmp_path / "inline" / "last.safetensors"))
    b = load_file(str(tmp_path / "workers" / "last.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_fine_tune_from_weights_without_a_teacher(image_dir, tmp_path, capsys):
    """--init starts stage 2 from a stage-2 model (no --s1 needed), records where it came from,
    and refuses weights of another architecture or a device the machine lacks, before training."""
    s1, s2, ft = tmp_path / "s1", tmp_path / "s2", tmp_path / "ft"
    common = ["--data", image_dir, "--patch-size", "16", "--val-every", "0", *TINY_DIFFIR, *LOOP]
    assert _train("diffir", "--stage", "1", "--steps", "1", "--out", s1, *common) == 0
    assert _train("diffir", "--stage", "2", "--s1", s1 / "best.safetensors", "--steps", "2", "--out", s2,
                  *common) == 0
    assert _train("diffir", "--stage", "2", "--init", s2 / "best.safetensors", "--steps", "2", "--out", ft,
                  "--amp", "none", "--no-channels-last", *common) == 0
    card = json.loads((ft / "best.json").read_text())
    assert card["initialised_from"]["weights"] == str(s2 / "best.safetensors")
    assert card["initialised_from"]["training"]["steps"] == 2
    assert "--init" in card["training"]["command"] and "--no-channels-last" in card["training"]["command"]
    assert card["training"]["amp"] == "none" and card["training"]["channels_last"] is False
    log = [json.loads(line) for line in (ft / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "val"  # the starting model's score is the first point of the curve
    from safetensors.torch import load_file

    start, raw, ema = (load_file(str(f)) for f in (s2 / "best.safetensors", ft / "last.safetensors",
                                                     ft / "last_ema.safetensors"))
    moved = sum(float((raw[k] - start[k]).abs().sum()) for k in start if start[k].is_floating_point())
    ema_moved = sum(float((ema[k] - start[k]).abs().sum()) for k in start if start[k].is_floating_point())
    assert moved > 0 and ema_moved < 0.01 * moved  # the EMA keeps its full decay from the first step
    capsys.readouterr()
    assert _train("diffir", "--stage", "2", "--init", s2 / "best.safetensors", "--dim", "16", "--steps", "1",
                  "--out", tmp_path / "bad", *common[:-len(TINY_DIFFIR) - len(LOOP)],
                  *TINY_DIFFIR[2:], *LOOP) == 2
    assert "does not match the architecture" in capsys.readouterr().err
    assert _train("diffir", "--stage", "2", "--init", "no-such-model", "--steps", "1", "--out", tmp_path / "bad",
                  *common) == 2
    assert "neither a weights file nor a bundled model" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert _train("diffir", "--stage", "1", "--device", "cuda", "--steps", "1", "--out", tmp_path / "bad",
                      *common) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_pixel_loss_l2_is_the_mean_squared_error_of_the_restoration(image_dir, tmp_path, capsys):
    """--pixel-loss l2 trains on the MSE (what PSNR measures) instead of the official L1, in both
    stages, is spelled out in the card's command, and an unknown loss is refused."""
    import torch.nn.functional as F

    from napari_diffir.training.diffir import DiffIRConfig, Stage1, Stage2

    cfg = DiffIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=0, n_encoder_res=0, n_feats=4,
                       heads=(1, 1, 1, 1))
    torch.manual_seed(0)
    lq, gt = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    for name, reference in (("l1", F.l1_loss), ("l2", F.mse_loss)):
        torch.manual_seed(1)
        s1 = Stage1(cfg, name)
        with torch.no_grad():
            loss, _ = s1.loss(lq, gt, 0, 10)
            assert float(loss) == pytest.approx(float(reference(s1.net.G(lq, s1.net.E(lq, gt)), gt)), rel=1e-6)
        torch.manual_seed(1)
        s2 = Stage2(cfg, None, 0.0, name)
        with torch.no_grad():
            torch.manual_seed(2)  # the sampler draws its starting noise
            loss, parts = s2.loss(lq, gt, 0, 10)
            torch.manual_seed(2)
            out = s2.net.G(lq, s2.net.diffusion.sample(lq))
        assert float(loss) == pytest.approx(float(reference(out, gt)), rel=1e-5)
        assert float(parts["pix"]) == pytest.approx(float(loss))
    with pytest.raises(ValueError, match="pixel loss must be one of"):
        Stage2(cfg, None, 0.0, "huber")

    out = tmp_path / "s1"
    assert _train("diffir", "--stage", "1", "--pixel-loss", "l2", "--steps", "1", "--out", out, "--data", image_dir,
                  "--patch-size", "16", "--val-every", "0", *TINY_DIFFIR, *LOOP) == 0
    assert "--pixel-loss l2" in json.loads((out / "best.json").read_text())["training"]["command"]
    with pytest.raises(SystemExit):
        _train("diffir", "--stage", "1", "--pixel-loss", "huber", "--out", tmp_path / "bad", "--data", image_dir)
    assert "invalid choice: 'huber'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_fine_tune_that_trains_on_its_parents_validation_images_says_so(image_dir, tmp_path, capsys):
    """The image split follows the seed: a fine-tune with another --seed can train on the images
    its starting weights were validated on. The card lists them and the run warns, naming them."""
    from napari_diffir.training.cli import parse_train_args, prepare

    parent = tmp_path / "s1"
    common = ["--data", image_dir, "--patch-size", "16", "--val-every", "0", *TINY_DIFFIR,
              "--batch-size", "2", "--val-count", "2", "--threads", "1", "--quiet"]
    assert _train("diffir", "--stage", "1", "--steps", "1", "--out", parent, "--seed", "3", *common) == 0
    held = json.loads((parent / "best.json").read_text())["data"]["val_images"]

    def card_for(seed):
        args = parse_train_args(["diffir", "--stage", "1", "--init", str(parent / "best.safetensors"), "--steps", "1",
                                 "--out", str(tmp_path / f"ft{seed}"), "--seed", str(seed), *map(str, common)])
        return prepare(args)[-1]

    assert "trained_on_parent_validation" not in card_for(3)["data"]
    other = next(s for s in range(4, 40) if card_for(s)["data"]["val_images"] != held)
    assert card_for(other)["data"]["trained_on_parent_validation"] == sorted(held)
    capsys.readouterr()
    assert _train("diffir", "--stage", "1", "--init", parent / "best.safetensors", "--steps", "1",
                  "--out", tmp_path / "ft", "--seed", other, *common) == 0
    err = capsys.readouterr().err
    assert "warning: 1 image(s) the --init weights were validated on are training images here" in err
    assert held[0] in err
    card = json.loads((tmp_path / "ft" / "best.json").read_text())
    assert card["data"]["trained_on_parent_validation"] == sorted(held)


def test_bundled_denoiser_is_a_valid_fine_tuning_start(image_dir, tmp_path):
    """The shipped fp16 weights load into the recipe's fp32 architecture (what --init diffir-denoise does)."""
    from napari_diffir.restorers.bundled import model_card, weights_path
    from napari_diffir.training.cli import load_init_weights
    from napari_diffir.training.diffir import DiffIRConfig, Stage2

    if not weights_path("diffir-denoise").is_file():
        pytest.skip("bundled weights not installed")
    cfg = model_card("diffir-denoise")["architecture"]["config"]
    stage = Stage2(DiffIRConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}), None, 0.0)
    info = load_init_weights(stage.net, "diffir-denoise")
    assert info["name"] == "diffir-denoise" and info["total_steps"] > 0
    assert all(p.dtype == torch.float32 for p in stage.net.parameters())


def test_gpu_script_trains_and_bundles_within_its_budget(tmp_path):
    """scripts/train_gpu.py (run here on the CPU with a tiny budget) fine-tunes the bundled model
    and writes float16 weights with a card that counts the steps it started from."""
    import importlib.util
    from pathlib import Path

    from napari_diffir.restorers.bundled import weights_path

    if not weights_path("diffir-denoise").is_file():
        pytest.skip("bundled weights not installed")
    path = Path(__file__).parents[1] / "scripts" / "train_gpu.py"
    spec = importlib.util.spec_from_file_location("train_gpu", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(["diffir-denoise", "--out", str(tmp_path), "--device", "cpu", "--batch-size", "2",
                      "--workers", "1", "--steps", "2", "--val-every", "1", "--minutes", "5",
                      "--data", "builtin:synthetic", "--", "--n-synthetic", "3", "--val-count", "2", "--threads", "1"])
    assert rc == 0
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "diffir-denoise.safetensors"))
    assert sd["G.patch_embed.proj.weight"].dtype == torch.float16
    card = json.loads((tmp_path / "diffir-denoise.json").read_text())
    # the best validated weights are shipped: step 0 (the start), 1 or 2, whichever scored best
    steps = card["training"]["steps"]
    assert steps == card["validation"]["best"]["step"] and steps in (0, 1, 2) and card["training"]["batch_size"] == 2
    assert "--device cpu" in card["training"]["command"] and "--init diffir-denoise" in card["training"]["command"]
    assert card["total_steps"] == steps + card["initialised_from"]["total_steps"]
    assert card["data_provenance"][0]["source"] == "builtin:synthetic"


def test_cli_sets_passive_openmp_waiting_before_torch_loads():
    """The CLI process runs with OMP_WAIT_POLICY=PASSIVE unless the user set a policy."""
    import os
    import subprocess
    import sys

    code = ("import os, napari_diffir.cli, torch; print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_bundle_counts_the_whole_lineage_of_a_fine_tune_of_a_fine_tune():
    """A fine-tune started from a run's own checkpoint (no totals in its card) still counts every
    earlier step: its stages, then what it was itself initialised from."""
    from napari_diffir.training.bundle import lineage_totals

    bundled = {"total_steps": 6668, "total_wall_time_s": 6371.8, "training": {"steps": 5200, "wall_time_s": 3491.2}}
    run = {"training": {"steps": 15000, "wall_time_s": 10132.7}, "initialised_from": bundled}
    assert lineage_totals({}) == (0, 0.0)
    assert lineage_totals(bundled) == (6668, 6371.8)
    steps, wall = lineage_totals(run)
    assert steps == 15000 + 6668 and wall == pytest.approx(10132.7 + 6371.8)
    scratch = {"training": {"steps": 40, "wall_time_s": 2.0}, "previous_stages": {"s1": {"training": {"steps": 10, "wall_time_s": 1.0}}}}
    assert lineage_totals(scratch) == (50, 3.0)
