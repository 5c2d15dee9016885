"""The user models folder: trained models are restorers like any other, saved atomically, listed
without torch; a training job saves its model there only when it finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from scipy import ndimage

import napari_diffir
from napari_diffir.cli import main
from napari_diffir.restorers import bundled, user
from napari_diffir.training.bundle import bundle
from napari_diffir.training.loop import TrainingCancelled
from napari_diffir.training.session import TrainJob, run_job, write_arrays

pytestmark = pytest.mark.skipif(not bundled.weights_path("diffir-denoise").is_file(), reason="no bundled weights")


@pytest.fixture
def models(tmp_path, monkeypatch, fresh_registry):
    """An empty user models folder of this test's own."""
    folder = tmp_path / "models"
    monkeypatch.setenv(user.ENV_VAR, str(folder))
    monkeypatch.setattr(user, "_session_folders", [])
    return folder


def _image(size=96, seed=0):
    img = ndimage.gaussian_filter(np.random.default_rng(seed).random((size, size)), 3)
    return ((img - img.min()) / np.ptp(img)).astype(np.float32)


def test_a_saved_model_is_listed_without_torch_and_restores_like_its_weights(models, capsys):
    """A model in the folder is listed (API and CLI, source 'user models') without importing
    torch, and restores exactly as the bundled model whose weights it holds."""
    bundle(bundled.weights_path("diffir-denoise"), "my-denoiser", models)
    code = ("import sys, napari_diffir\n"
            "infos = {i.name: i for i in napari_diffir.list_restorers()}\n"
            "print('torch' in sys.modules, infos['my-denoiser'].source, infos['my-denoiser'].task)")
    env = dict(os.environ, NAPARI_DIFFIR_LOAD_PLUGINS="", **{user.ENV_VAR: str(models)})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "user", "models", "denoise"]
    assert main(["list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("my-denoiser"))
    assert "[user models]" in line and "your model" in line
    noisy = _image() + np.random.default_rng(1).normal(0, 0.1, (96, 96)).astype(np.float32)
    mine = napari_diffir.restore(noisy, "my-denoiser", seed=0)
    ref = napari_diffir.restore(noisy, "diffir-denoise", seed=0)
    np.testing.assert_array_equal(np.asarray(mine), np.asarray(ref))


def test_a_folder_of_the_users_choice_is_listed_for_the_session(models, tmp_path):
    """A model saved elsewhere is not listed until its folder is added; then it is (once, even if
    added again), and the user models folder is not added twice."""
    elsewhere = tmp_path / "elsewhere"
    bundle(bundled.weights_path("diffir-denoise"), "kept-aside", elsewhere)
    assert "kept-aside" not in {i.name for i in napari_diffir.list_restorers()}
    assert user.add_models_folder(elsewhere) and not user.add_models_folder(elsewhere / ".." / "elsewhere")
    assert not user.add_models_folder(models)
    assert user.models_folders() == [models.resolve(), elsewhere.resolve()]
    napari_diffir.registry.reload()
    infos = {i.name: i for i in napari_diffir.list_restorers()}
    assert infos["kept-aside"].source == "user models"
    assert infos["kept-aside"].bundled_weights == str(elsewhere.resolve() / "kept-aside.safetensors")


def test_an_unreadable_card_is_skipped_with_a_warning(models):
    """A weights file whose card is not JSON is named in a warning; the other models still load."""
    bundle(bundled.weights_path("diffir-denoise"), "good-one", models)
    (models / "broken.safetensors").write_bytes(b"x")
    (models / "broken.json").write_text("{not json")
    with pytest.warns(UserWarning, match="broken.safetensors is skipped.*broken.json"):
        names = {i.name for i in napari_diffir.list_restorers()}
    assert "good-one" in names and "broken" not in names


def test_a_cards_recommended_options_are_the_user_models_defaults(models):
    """srdiff-sr4's card recommends temperature 0.5: a model bundled from it samples at 0.5 unless
    told otherwise; a card recommending an option the restorer lacks is skipped, naming it."""
    if not bundled.weights_path("srdiff-sr4").is_file():
        pytest.skip("bundled srdiff-sr4 weights not installed")
    bundle(bundled.weights_path("srdiff-sr4"), "my-sr", models)
    assert json.loads((models / "my-sr.json").read_text())["defaults"]["options"] == {"temperature": 0.5}
    assert napari_diffir.get_restorer("my-sr").temperature == 0.5
    assert napari_diffir.get_restorer("my-sr", temperature=1.0).temperature == 1.0
    bundle(bundled.weights_path("diffir-denoise"), "odd", models, extra={"defaults": {"options": {"strength": 2}}})
    with pytest.warns(UserWarning, match=r"odd.safetensors is skipped: the model card sets option\(s\) 'strength'"):
        napari_diffir.registry.reload()
        names = {i.name for i in napari_diffir.list_restorers()}
    assert "odd" not in names and "my-sr" in names


def test_new_weights_keep_the_recommended_options_of_the_model_they_replace(models, tmp_path, capsys):
    """Re-bundling under the same name from a card without defaults (a training run's) keeps the
    replaced model's, says so, and ``{"defaults": {}}`` clears them."""
    if not bundled.weights_path("srdiff-sr4").is_file():
        pytest.skip("bundled srdiff-sr4 weights not installed")
    bundle(bundled.weights_path("srdiff-sr4"), "my-sr", models)
    run = tmp_path / "run"
    run.mkdir()
    card = json.loads(bundled.weights_path("srdiff-sr4").with_suffix(".json").read_text())
    del card["defaults"]
    (run / "best.json").write_text(json.dumps(card))
    (run / "best.safetensors").write_bytes(bundled.weights_path("srdiff-sr4").read_bytes())
    bundle(run / "best.safetensors", "my-sr", models)
    assert "keeping the recommended options of the model it replaces, {'temperature': 0.5}" in capsys.readouterr().err
    assert json.loads((models / "my-sr.json").read_text())["defaults"]["options"] == {"temperature": 0.5}
    bundle(run / "best.safetensors", "my-sr", models, extra={"defaults": {}})
    assert json.loads((models / "my-sr.json").read_text())["defaults"] == {}
    napari_diffir.registry.reload()
    assert napari_diffir.get_restorer("my-sr").temperature == 1.0


def test_saving_is_atomic_a_failed_save_keeps_the_old_model(models, monkeypatch):
    """If writing the weights fails, the previous model stays whole and no partial file is left."""
    path = bundle(bundled.weights_path("diffir-denoise"), "mine", models)
    before = path.read_bytes(), path.with_suffix(".json").read_text()
    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="No space"):
        bundle(bundled.weights_path("diffir-sr4"), "mine", models)
    assert path.read_bytes() == before[0]
    assert sorted(p.name for p in models.iterdir()) == ["mine.json", "mine.safetensors"]
    assert json.loads(path.with_suffix(".json").read_text())["name"] == "mine"


def test_a_job_saves_its_model_only_when_it_ends_and_resumes_after_cancel(models, tmp_path):
    """Cancel in the middle: the checkpoint is kept, no model is added; the same job then resumes
    from that step, and the model appears in list_restorers() with the commands in its card."""
    files = write_arrays(tmp_path / "data", {"cells (layer)": (_image() * 1000).astype(np.uint16)})
    job = TrainJob(name="my-cells", run_dir=str(tmp_path / "run"), data=files, patch_size=32, batch_size=2,
                   val_count=2, steps=3, val_every=10, budget_minutes=None, threads=1,
                   description={"layers": [{"name": "cells (layer)"}]})
    stop = threading.Event()

    def progress(p):
        if p.report.event == "step" and p.report.step == 1:
            stop.set()

    with pytest.raises(TrainingCancelled):
        run_job(job, progress=progress, cancel=stop)
    assert not models.exists() or not list(models.iterdir())
    assert "my-cells" not in {i.name for i in napari_diffir.list_restorers()}
    assert json.loads((tmp_path / "run" / "s2" / "state.json").read_text())["step"] == 1
    seen = []
    path = run_job(job, progress=lambda p: seen.append(p.report))
    assert seen[0].event == "step" and seen[0].step == 2 and path == models / "my-cells.safetensors"
    info = {i.name: i for i in napari_diffir.list_restorers()}["my-cells"]
    assert info.source == "user models"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["steps"] == 3 and card["data_description"]["layers"][0]["name"] == "cells (layer)"
    assert card["job"]["commands"][0].startswith("napari-diffir train diffir") and "--init diffir-denoise" in \
        card["job"]["commands"][0]
    assert card["initialised_from"]["name"] == "diffir-denoise"


def test_a_job_refuses_a_taken_name_or_an_impossible_fine_tune(models, tmp_path):
    """Names of other restorers and fine-tunes without a bundled model are refused up front."""
    files = write_arrays(tmp_path / "data", {"a": _image()})
    with pytest.raises(ValueError, match="'diffir-denoise' is taken by a restorer from napari-diffir"):
        run_job(TrainJob(name="diffir-denoise", run_dir=str(tmp_path / "r1"), data=files))
    with pytest.raises(ValueError, match="No bundled diffir x2 model to fine-tune.*from scratch"):
        run_job(TrainJob(name="x2", run_dir=str(tmp_path / "r2"), data=files, task="sr", scale=2))
    with pytest.raises(ValueError, match="Give training images or low-/high-SNR pairs"):
        TrainJob(name="x", run_dir=str(tmp_path / "r3"))
    with pytest.raises(ValueError, match="cannot read|expected a real-valued image"):
        write_arrays(tmp_path / "bad", {"text": np.array([["a", "b"], ["c", "d"]])})
    assert not (tmp_path / "bad").exists()
