"""Fine-tuning must help: a few seconds of training on the user's own kind of image beat the bundled
denoiser on held-out parts of that image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

import napari_diffir
from napari_diffir.restorers import bundled, user
from napari_diffir.training.data import percentile_normalize
from napari_diffir.training.session import TrainJob, run_job, write_arrays


def _gratings(h: int = 128, w: int = 192) -> np.ndarray:
    """Two crossed binary gratings (periods 5 and 7 px): sharp, regular texture, nothing like the
    bundled model's natural images, nuclei or synthetic fluorescence."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.sin(2 * np.pi * (0.9 * xx + 0.45 * yy) / 7.0) > 0
    b = np.sin(2 * np.pi * (0.8 * yy - 0.3 * xx) / 5.0) > 0
    return (0.6 * a + 0.3 * b + 0.05).astype(np.float32)


@pytest.mark.skipif(not bundled.weights_path("diffir-denoise").is_file(), reason="no bundled weights")
def test_a_short_fine_tune_beats_the_bundled_denoiser_on_held_out_texture(tmp_path, monkeypatch, fresh_registry):
    """20 steps (batch 4, 32 px) on the top rows lift held-out PSNR on the bottom rows by >= 0.3 dB,
    both in the loop's validation and through the engine (what the Restore widget runs)."""
    monkeypatch.setenv(user.ENV_VAR, str(tmp_path / "models"))
    image = _gratings()
    files = write_arrays(tmp_path / "data", {"gratings": image[:96]})  # the bottom 32 rows are never trained on
    job = TrainJob(name="gratings", run_dir=str(tmp_path / "run"), data=files, noise="gaussian:0.1",
                   patch_size=32, batch_size=4, val_count=4, val_fraction=0.25, steps=20, val_every=20,
                   budget_minutes=None, lr=1e-3, threads=1)
    card = json.loads(run_job(job).with_suffix(".json").read_text())
    history = card["validation"]["history"]
    assert history[0]["step"] == 0 and history[-1]["step"] == 20  # step 0: the bundled weights, untouched
    assert history[-1]["psnr"] > history[0]["psnr"] + 0.3

    clean = percentile_normalize(image)[96:]
    noisy = (clean + np.random.default_rng(5).normal(0, 0.1, clean.shape)).astype(np.float32)
    scores = {name: peak_signal_noise_ratio(clean, np.asarray(napari_diffir.restore(noisy, name, seed=0)), data_range=1)
              for name in ("diffir-denoise", "gratings")}
    assert scores["gratings"] > scores["diffir-denoise"] + 0.3, scores
