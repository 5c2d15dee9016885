"""The Train widget in a napari viewer (Xvfb via pytest-xvfb): train, cancel and resume, the model in
the Restore widget at once, a responsive viewer, problems shown before a run."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import ndimage

import napari_diffir as nd
from napari_diffir.napari._form import shown
from napari_diffir.restorers import bundled, user
from napari_diffir.training.loop import TrainingCancelled

pytestmark = [pytest.mark.gui,
              pytest.mark.skipif(not bundled.weights_path("diffir-denoise").is_file(), reason="no bundled weights")]

TIMEOUT = 120_000
SMALL = {"val_count": 2, "threads": 1}


@pytest.fixture
def viewer(make_napari_viewer_proxy, tmp_path, monkeypatch, fresh_registry):
    monkeypatch.setenv(user.ENV_VAR, str(tmp_path / "models"))
    return make_napari_viewer_proxy()


def _cells(shape=(96, 96), seed=0):
    img = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2.5)
    return ((img - img.min()) / np.ptp(img) * 3000 + 100).astype(np.uint16)


def _widget(viewer, tmp_path, **fields):
    from napari_diffir.napari._train_widget import TrainWidget

    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train (test)")
    widget.extra = dict(SMALL)
    values = {"patch_size": 32, "batch_size": 2, "max_steps": 3, "val_every": 2, "run_dir": str(tmp_path / "run"),
              **fields}
    for name, value in values.items():
        widget._fields[name].value = value
    return widget


def _wait(qtbot, future, timeout=TIMEOUT):
    qtbot.waitUntil(future.done, timeout=timeout)
    return future


def test_the_widget_fine_tunes_and_the_model_restores_through_the_restore_widget(viewer, tmp_path, qtbot):
    """A run on a uint16 layer draws its curve, saves the model into the user models folder, the
    docked Restore widget lists it at once, and restoring with it adds a layer; the viewer's
    event loop never stalls for long while training."""
    from napari_diffir.napari._widget import RestoreWidget

    restore = RestoreWidget(viewer)
    viewer.window.add_dock_widget(restore, name="Restore (test)")
    qtbot.waitUntil(lambda: restore._device_info.value != "Checking devices…", timeout=TIMEOUT)
    layer = viewer.add_image(_cells(), name="cells")
    widget = _widget(viewer, tmp_path, images=["cells"], noise="gaussian:0.08", name="cells-denoise")
    assert widget.problems() == {} and widget._train_button.enabled
    gaps, marks, last = [], [], [time.perf_counter()]

    start = time.perf_counter()

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        marks.append(last[0] - start)
        last[0] = now

    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(20)
    future = _wait(qtbot, widget.train())
    timer.stop()
    path = future.result()
    assert path == tmp_path / "models" / "cells-denoise.safetensors" and path.is_file()
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["steps"] == 3 and card["data_description"]["layers"][0] == {
        "name": "cells", "shape": [96, 96], "dtype": "uint16"}
    assert [x for x, _ in widget.curve.loss] == [1, 2, 3] and [x for x, _ in widget.curve.psnr] == [0, 2, 3]
    assert widget._progress.value == 1000 and "It is in the Restore widget's list now" in widget._status.value
    assert "cells-denoise" in restore._infos and "cells-denoise" in {i.name for i in nd.list_restorers()}
    worst = sorted(zip(gaps, marks), reverse=True)[:3]
    print(f"event-loop gaps while training: {len(gaps)} ticks over {marks[-1]:.1f} s; longest (ms at s): "
          + ", ".join(f"{g * 1000:.0f} at {t:.1f}" for g, t in worst))
    assert max(gaps) < 0.25  # training runs in a child process: the viewer never waits for it

    restore._image.value = layer
    restore._restorer.value = "cells-denoise"
    out_future = restore.run()
    qtbot.waitUntil(out_future.done, timeout=TIMEOUT)
    out = out_future.result()
    assert out.data.shape == (96, 96) and out in viewer.layers
    np.testing.assert_array_equal(layer.data, _cells())  # the input is untouched


def test_cancel_keeps_a_resumable_checkpoint_and_adds_no_model(viewer, tmp_path, qtbot):
    """Cancel after the first step: the step running then is the last, no model file, no restorer,
    the form is idle with 'Resume'; Resume continues from the checkpoint's step and saves the model."""
    viewer.add_image(_cells(), name="cells")
    widget = _widget(viewer, tmp_path, images=["cells"], name="cut-short", max_steps=4)
    original = widget._on_yielded
    pressed_at = []

    def cancel_after_first_step(item):
        original(item)
        if getattr(item, "report", None) is not None and item.report.event == "step" and not pressed_at:
            pressed_at.append(item.report.step)
            widget.cancel()

    widget._on_yielded = cancel_after_first_step
    future = _wait(qtbot, widget.train())
    with pytest.raises(TrainingCancelled):
        future.result()
    step = json.loads((tmp_path / "run" / "s2" / "state.json").read_text())["step"]
    assert pressed_at == [1] and step in (1, 2)  # the step running when the cancel arrived ends, no other
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
    assert "cut-short" not in {i.name for i in nd.list_restorers()}
    assert widget._train_button.text == "Resume" and widget._train_button.enabled and not widget.running
    assert "checkpoint is kept" in widget._status.value
    widget._on_yielded = original
    path = _wait(qtbot, widget.train()).result()
    assert json.loads(path.with_suffix(".json").read_text())["training"]["steps"] == 4
    assert widget.curve.loss[0][0] == step + 1  # resumed after the checkpoint's step, not from the start


def test_problems_are_shown_at_their_fields_before_a_run(viewer, tmp_path):
    """Too large a patch, a plane split of one 2-D layer, a taken name, a missing layer and a bad
    noise model each disable Train with the training code's own message."""
    viewer.add_image(_cells((40, 40)), name="small")
    widget = _widget(viewer, tmp_path, images=["small"], patch_size=48)
    assert "Patch size 48 is larger than small (40, 40)" in widget.problems()["patch_size"]
    assert not widget._train_button.enabled and shown(widget._problem)
    widget._patch.value = 16
    widget._split.value = "plane"
    assert "Validation by plane needs at least 2 planes" in widget.problems()["val_split"]
    widget._split.value = "region"
    widget._name.value = "diffir-denoise"
    assert "is taken" in widget.problems()["name"]
    widget._name.value = "fine-name"
    widget._noise.value = "gaussian"
    assert "Expected a noise model" in widget.problems()["noise"]
    widget._noise.value = ""
    widget._images.value = []
    assert "Choose at least one image layer" in widget.problems()["images"]
    widget._images.value = ["small"]
    assert widget.problems() == {} and widget._train_button.enabled
    widget._task.value = "sr2"
    assert "No bundled diffir x2 model to fine-tune" in widget.problems()["start"]
    widget._task.value = "denoise-paired"
    viewer.add_image(_cells((40, 36)), name="other")
    widget._low.value, widget._high.value = "small", "other"
    assert "must have the shape of the low-SNR layer" in widget.problems()["high"]


def test_the_noise_model_is_estimated_from_a_noisy_layer(viewer, tmp_path):
    """Choosing a noisy stack fills the noise model with the fitted Poisson–Gaussian level."""
    from napari_diffir.training.degradations import add_poisson_gaussian_noise

    rng = np.random.default_rng(0)
    clean = np.stack([_cells((128, 128), s) / 3100.0 for s in range(3)])
    viewer.add_image((add_poisson_gaussian_noise(clean, 20.0, 1.0, rng) * 1000).astype(np.float32), name="noisy")
    widget = _widget(viewer, tmp_path)
    widget._noisy.value = "noisy"
    assert widget._noise.value.startswith("poisson-gaussian:")
    assert "Poisson–Gaussian" in widget._status.value
