"""The Restore widget in a napari viewer (Xvfb via pytest-xvfb): run, cancel, errors, geometry, nD."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest

import napari_diffir as nd
from napari_diffir.napari._catalogue import HEADER, LOAD
from napari_diffir.napari._form import shown
from napari_diffir.napari._widget import RestoreWidget

pytestmark = pytest.mark.gui

TIMEOUT = 30_000


@pytest.fixture
def viewer(make_napari_viewer_proxy):
    return make_napari_viewer_proxy()


def _widget(viewer) -> RestoreWidget:
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore (test)")  # closed with the viewer
    return widget


def _run(qtbot, widget, timeout=TIMEOUT):
    future = widget.run()
    qtbot.waitUntil(future.done, timeout=timeout)
    return future


def _image(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 1000).astype(dtype)


def _same(a, b):
    return getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


def _assert_idle(widget):
    assert not widget.running
    assert widget._run.enabled and not widget._cancel.enabled


# ---------------------------------------------------------------- pickers


def test_restorer_picker_is_grouped_by_task_with_disabled_headers(viewer):
    widget = _widget(viewer)
    values = list(widget._restorer.choices)
    names = {i.name for i in nd.list_restorers()}
    assert names == {v for v in values if not v.startswith(HEADER)}
    headers = [v for v in values if v.startswith(HEADER)]
    assert HEADER + "Denoise" in headers and HEADER + "Super-resolution" in headers
    # every restorer sits under the header of its task (or of the bundled group)
    infos = {i.name: i for i in nd.list_restorers()}
    group = None
    for v in values:
        if v.startswith(HEADER):
            group = v[len(HEADER):]
        elif group != "Bundled models":
            assert group.lower() == infos[v].task.lower()
    model = widget._restorer.native.model()
    for row, v in enumerate(values):
        assert model.item(row).isEnabled() == (not v.startswith(HEADER))
    assert not widget._restorer.value.startswith(HEADER)


def test_bundled_models_come_first_and_checkpoint_restorers_take_weights():
    from napari_diffir import RestorerInfo
    from napari_diffir.napari._catalogue import restorer_choices, takes_weights

    builtin = "napari-diffir (built-in)"
    infos = [
        RestorerInfo(name="tv", display_name="TV", task="denoise", source=builtin),
        RestorerInfo(name="zz-plugin", display_name="Plugin SR", task="super-resolution", scale=2,
                     source="acme-sr 1.0"),
        RestorerInfo(name="my-denoise", display_name="Bundled denoise", task="denoise",
                     weights="my-denoise.safetensors", source=builtin),
        RestorerInfo(name="lanczos", display_name="Lanczos", task="super-resolution", scale=2, source=builtin),
    ]
    choices = restorer_choices(infos)
    assert [v for _label, v in choices] == [
        HEADER + "Bundled models", "my-denoise",
        HEADER + "Denoise", "tv",
        HEADER + "Super-resolution", "lanczos", "zz-plugin",
    ]
    assert dict((v, label) for label, v in choices)["zz-plugin"].strip() == "Plugin SR  [acme-sr 1.0]"
    registered = {i.name: i for i in nd.list_restorers()}
    assert not takes_weights(registered["tv"]) and not takes_weights(registered["lanczos"])
    for name in ("srdiff", "diffir"):
        if name in registered:
            assert takes_weights(registered[name])


def test_third_party_restorer_appears_in_the_picker_with_its_options(third_party_plugin, viewer):
    viewer.add_image(_image((32, 32)), name="img")
    widget = _widget(viewer)
    assert "invert" in widget._restorer.choices
    assert HEADER + "Invert" in widget._restorer.choices  # its free-text task is a group too
    widget._restorer.value = "invert"
    assert "napari-diffir-invert" in widget._about.value
    assert list(widget._option_widgets) == ["gain"]
    assert not widget._weights.enabled  # takes no weights


def test_image_picker_follows_the_layer_list(viewer):
    widget = _widget(viewer)
    assert widget._image.value is None and not widget._run.enabled
    assert "image layer" in widget._status.value
    a = viewer.add_image(_image((32, 32)), name="a")
    assert _same(widget._image.value, a) and widget._run.enabled
    viewer.add_image(_image((32, 32)), name="b")
    assert [layer.name for layer in widget._image.choices] == ["a", "b"]
    viewer.layers.remove("a")
    assert [layer.name for layer in widget._image.choices] == ["b"]
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="lbl")
    assert "lbl" not in [layer.name for layer in widget._image.choices]


def test_deleting_the_widget_cancels_its_run(widget_plugin, viewer, qtbot):
    import napari_diffir_widget_test as plugin
    from qtpy.QtCore import QCoreApplication, QEvent

    viewer.add_image(_image((32, 32)), name="img")
    widget = RestoreWidget(viewer)
    widget.restorer.value = "slow-steps"
    widget.steps.value = "2000"
    future = widget.run()
    qtbot.waitUntil(lambda: plugin.SlowSteps.calls > 0, timeout=TIMEOUT)
    widget.native.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    qtbot.waitUntil(future.done, timeout=TIMEOUT)
    assert future.cancelled() and [layer.name for layer in viewer.layers] == ["img"]
    calls = plugin.SlowSteps.calls
    qtbot.wait(300)
    assert plugin.SlowSteps.calls - calls <= 1


def test_axes_default_from_the_layer_and_are_validated_as_typed(viewer):
    viewer.add_image(_image((3, 32, 32)), name="stack")
    widget = _widget(viewer)
    assert widget._axes.value == "ZYX"
    assert shown(widget._slice)
    widget._axes.value = "ZZX"
    assert not widget._run.enabled and "repeats" in widget._status.value
    widget._axes.value = "YX"
    assert not widget._run.enabled and "3 dimensions" in widget._status.value
    widget._axes.value = "tyx"
    assert widget._run.enabled and widget._status.value == ""
    viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="photo", rgb=True)
    widget._image.value = viewer.layers["photo"]
    assert widget._axes.value == "YXC" and widget._dtype.value == "input"
    assert not shown(widget._slice)
    widget._axes.value = "CYX"
    assert not widget._run.enabled and "colour channel" in widget._status.value


def test_device_indicator_and_precision_check(viewer, qtbot):
    import torch

    viewer.add_image(_image((32, 32)))
    widget = _widget(viewer)
    qtbot.waitUntil(lambda: "torch" in widget._device_info.value, timeout=TIMEOUT)  # probed in the background
    assert f"torch {torch.__version__}" in widget._device_info.value
    assert "CPU" in widget._device_info.value
    assert list(widget._device.choices)[:2] == ["auto", "cpu"]
    widget._device.value = "cpu"
    widget._precision.value = "fp16"
    assert not widget._run.enabled and "bf16" in widget._status.value
    widget._precision.value = "bf16"
    assert widget._run.enabled
    widget._precision.value = "auto"  # resolved in plan(): bf16 where native, else fp32; never refused
    assert widget._run.enabled


def test_tile_steps_and_seed_fields_are_validated_as_typed(widget_plugin, viewer):
    viewer.add_image(_image((32, 32)))
    widget = _widget(viewer)
    widget._tile.value = "16"
    assert not widget._run.enabled and "at least 32" in widget._status.value
    widget._tile.value = "big"
    assert not widget._run.enabled and "'auto' or 'none'" in widget._status.value
    widget._tile.value = "64"
    widget._overlap.value = "64"
    assert not widget._run.enabled and "smaller than the tile size" in widget._status.value
    widget._overlap.value = "auto"
    widget._tile.value = "none"
    assert widget._run.enabled
    job, _ = widget.make_job()
    assert job.tile_size is None and job.tile_overlap is None and job.tta is False
    widget._tta.value = True  # an advanced setting: the job averages the eight views
    assert widget._run.enabled and widget.make_job()[0].tta is True
    widget._tta.value = False
    widget._restorer.value = "slow-steps"
    widget._seed.value = "-3"
    assert not widget._run.enabled and "Seed must be at least 0" in widget._status.value
    widget._seed.value = "42"
    widget._steps.value = "x"
    assert not widget._run.enabled and "Steps" in widget._status.value
    widget._steps.value = "5"
    job, _ = widget.make_job()
    assert (job.steps, job.seed) == (5, 42)
    widget._restorer.value = "tv"  # not stochastic: steps and seed are not part of the form
    assert not shown(widget._steps) and not shown(widget._seed)
    job, _ = widget.make_job()
    assert (job.steps, job.seed) == (None, None)


# ---------------------------------------------------------------- running


def test_run_adds_a_new_layer_and_leaves_the_input_untouched(viewer, qtbot):
    data = _image((48, 40), dtype=np.uint16)
    before = data.copy()
    layer = viewer.add_image(data, name="cells", colormap="magma", blending="additive",
                             scale=(0.5, 0.25), translate=(3.0, 4.0), contrast_limits=(0, 5000))
    widget = _widget(viewer)
    widget._restorer.value = "tv"
    widget._tile.value = "32"
    widget._overlap.value = "8"
    future = _run(qtbot, widget)
    out = future.result()
    _assert_idle(widget)
    assert len(viewer.layers) == 2 and _same(viewer.layers[-1], out)
    assert out.name == "cells [tv]"
    assert out.data.shape == (48, 40) and out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data, nd.restore(before, "tv", tile_size=32, tile_overlap=8))
    assert layer.data.tobytes() == before.tobytes() and _same(layer.data, data)
    assert out.colormap.name == "magma" and out.blending == "additive"
    assert tuple(out.scale) == (0.5, 0.25) and tuple(out.translate) == (3.0, 4.0)
    assert tuple(out.contrast_limits) == pytest.approx((float(out.data.min()), float(out.data.max())))
    meta = out.metadata["napari_diffir"]
    assert meta["restorer"] == "tv" and meta["tile_size"] == 32 and meta["tile_overlap"] == 8
    assert meta["device"] == "cpu" and meta["version"] == nd.__version__
    assert {"weights", "steps", "seed", "precision"} <= set(meta)
    assert "Done" in widget._status.value and widget._progress.value == 1000


def test_super_resolution_output_overlays_the_input(viewer, qtbot):
    layer = viewer.add_image(_image((20, 24)), name="small", scale=(2.0, 3.0), translate=(10.0, -5.0))
    widget = _widget(viewer)
    widget._restorer.value = "lanczos"
    widget._option_widgets["scale"].value = 4
    out = _run(qtbot, widget).result()
    assert out.data.shape == (80, 96)
    assert tuple(out.scale) == pytest.approx((0.5, 0.75))
    assert tuple(out.translate) == pytest.approx((10.0 - 0.375 * 2.0, -5.0 - 0.375 * 3.0))
    # output pixel (4j + 1.5) centre is input pixel j's centre, in world coordinates
    np.testing.assert_allclose(out.data_to_world((4 * 7 + 1.5, 4 * 3 + 1.5)), layer.data_to_world((7, 3)))
    assert out.metadata["napari_diffir"]["options"] == {"scale": 4}


@pytest.mark.parametrize(
    "shape, axes, rgb",
    [
        ((3, 24, 24), "ZYX", False),
        ((4, 24, 24), "TYX", False),
        ((2, 3, 24, 24), "TZYX", False),
        ((2, 24, 24), "CYX", False),
        ((24, 24, 3), "YXC", True),
    ],
)
def test_nd_layers(viewer, qtbot, shape, axes, rgb):
    data = _image(shape, dtype=np.uint8) if rgb else _image(shape)
    viewer.add_image(data, name="nd", rgb=rgb)
    widget = _widget(viewer)
    widget._axes.value = axes
    widget._restorer.value = "lanczos"
    widget._option_widgets["scale"].value = 2
    out = _run(qtbot, widget).result()
    expected = tuple(n * 2 if a in "YX" else n for a, n in zip(axes, shape))
    assert out.data.shape == expected
    assert out.rgb == rgb
    if rgb:
        assert out.data.dtype == np.uint8  # same as input, so napari shows true colours
    ref = nd.restore(data, "lanczos", axes=axes, options={"scale": 2},
                     output_dtype="input" if rgb else None)
    np.testing.assert_array_equal(out.data, ref)
    spatial = [i for i, a in enumerate(axes.replace("C", "") if rgb else axes) if a in "YX"]
    assert [out.scale[i] for i in spatial] == [0.5, 0.5]


def test_current_slice_only_restores_the_plane_on_screen(viewer, qtbot):
    data = _image((3, 4, 24, 24))  # TZYX
    viewer.add_image(data, name="movie", scale=(5.0, 2.0, 1.0, 1.0))
    widget = _widget(viewer)
    widget._axes.value = "TZYX"
    widget._restorer.value = "tv"
    viewer.dims.set_point(0, 10.0)  # t = 2 (scale 5)
    viewer.dims.set_point(1, 2.0)  # z = 1 (scale 2)
    widget._slice.value = True
    out = _run(qtbot, widget).result()
    assert out.data.shape == (1, 1, 24, 24)
    np.testing.assert_array_equal(out.data[0, 0], nd.restore(data[2, 1], "tv"))
    assert tuple(out.translate) == pytest.approx((10.0, 2.0, 0.0, 0.0))


def test_dask_layer_is_restored_without_adding_a_lazy_graph(viewer, qtbot):
    data = _image((4, 48, 48))
    lazy = da.from_array(data, chunks=(1, 24, 24))
    viewer.add_image(lazy, name="big")
    widget = _widget(viewer)
    widget._restorer.value = "lanczos"
    widget._overlap.value = "8"
    out = _run(qtbot, widget).result()
    assert isinstance(out.data, np.ndarray)
    np.testing.assert_allclose(out.data, nd.restore(data, "lanczos", axes="ZYX", tile_overlap=8), atol=1e-5)
    # and the current slice of a dask layer reads only that plane
    viewer.dims.set_point(0, 3.0)
    widget._slice.value = True
    out2 = _run(qtbot, widget).result()
    assert out2.data.shape == (1, 96, 96)
    np.testing.assert_allclose(out2.data[0], nd.restore(data[3], "lanczos", tile_overlap=8), atol=1e-5)


def test_cancel_mid_run_adds_no_layer_and_resets_the_ui(widget_plugin, viewer, qtbot):
    import napari_diffir_widget_test as plugin

    viewer.add_image(_image((32, 32)), name="img")
    widget = _widget(viewer)
    widget._restorer.value = "slow-steps"
    assert shown(widget._steps) and shown(widget._seed)
    widget._steps.value = "2000"  # 40 s if not cancelled
    future = widget.run()
    assert widget.running and not widget._run.enabled and widget._cancel.enabled
    with pytest.raises(RuntimeError, match="already running"):
        widget.run()  # two runs never overlap
    qtbot.waitUntil(lambda: widget._progress.value > 0 and "step" in widget._status.value, timeout=TIMEOUT)
    assert "left" in widget._status.value  # ETA
    t0 = time.perf_counter()
    calls = plugin.SlowSteps.calls
    widget._cancel.clicked.emit()
    qtbot.waitUntil(future.done, timeout=TIMEOUT)
    assert time.perf_counter() - t0 < 5
    assert plugin.SlowSteps.calls - calls <= 3
    assert future.cancelled()
    assert [layer.name for layer in viewer.layers] == ["img"]
    _assert_idle(widget)
    assert widget._progress.value == 0 and "Cancelled" in widget._status.value


def test_cancel_from_the_activity_dock_quits_the_worker_and_stops_the_engine(widget_plugin, viewer, qtbot):
    import napari_diffir_widget_test as plugin

    viewer.add_image(_image((32, 32)), name="img")
    widget = _widget(viewer)
    widget.restorer.value = "slow-steps"
    widget.steps.value = "2000"
    future = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=TIMEOUT)
    widget._worker.quit()  # what napari's task manager calls on cancel
    qtbot.waitUntil(future.done, timeout=TIMEOUT)
    assert future.cancelled() and [layer.name for layer in viewer.layers] == ["img"]
    _assert_idle(widget)
    calls = plugin.SlowSteps.calls
    qtbot.wait(300)
    assert plugin.SlowSteps.calls - calls <= 2  # the engine thread stopped too


def test_multiscale_layer_is_restored_from_its_full_resolution_level(viewer, qtbot):
    base = _image((64, 64))
    viewer.add_image([base, base[::2, ::2]], multiscale=True, name="pyramid")
    widget = _widget(viewer)
    widget.restorer.value = "tv"
    out = _run(qtbot, widget).result()
    assert out.data.shape == (64, 64) and not out.multiscale
    np.testing.assert_array_equal(out.data, nd.restore(base, "tv"))


def test_error_shows_a_notification_and_resets_the_ui(widget_plugin, viewer, qtbot, monkeypatch):
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: shown.append(msg))
    viewer.add_image(_image((64, 64)), name="img")
    widget = _widget(viewer)
    widget._restorer.value = "always-oom"
    future = _run(qtbot, widget)
    assert isinstance(future.exception(), MemoryError)
    assert len(shown) == 1 and "smaller Tile size" in shown[0]  # the form's words, not the API's
    assert "precision=" not in shown[0] and "device=" not in shown[0]
    assert "smaller Tile size" in widget._status.value
    _assert_idle(widget)
    assert [layer.name for layer in viewer.layers] == ["img"]
    # bad input: NaNs are named, and the widget can run again afterwards
    viewer.add_image(np.full((16, 16), np.nan, np.float32), name="nan")
    widget._image.value = viewer.layers["nan"]
    widget._restorer.value = "tv"
    future = _run(qtbot, widget)
    assert isinstance(future.exception(), ValueError) and "NaN" in shown[-1]
    _assert_idle(widget)


def test_mask_layer_for_inpainting_from_labels_or_shapes(widget_plugin, viewer, qtbot):
    data = np.zeros((32, 32), np.float32)
    data[0, 0] = 1.0  # normalisation range [0, 1]
    viewer.add_image(data, name="img")
    widget = _widget(viewer)
    widget._restorer.value = "fill-mask"
    assert shown(widget._mask) and not widget._run.enabled and "Mask" in widget._status.value
    labels = np.zeros((32, 32), np.uint8)
    labels[10:20, 5:15] = 1
    viewer.add_labels(labels, name="holes")
    widget._image.value = viewer.layers["img"]
    widget._mask.value = viewer.layers["holes"]
    widget._restorer.value = "fill-mask"
    widget._mask.value = viewer.layers["holes"]
    out = _run(qtbot, widget).result()
    np.testing.assert_allclose(out.data[labels > 0], 0.5, atol=1e-2)
    np.testing.assert_allclose(out.data[labels == 0], data[labels == 0], atol=1e-2)
    viewer.add_shapes([np.array([[2, 2], [2, 8], [8, 8], [8, 2]])], shape_type="polygon", name="box")
    widget._mask.value = viewer.layers["box"]
    out = _run(qtbot, widget).result()
    assert out.data[5, 5] == pytest.approx(0.5, abs=1e-2) and out.data[20, 20] == pytest.approx(0.0, abs=1e-2)


def test_nothreads_env_runs_synchronously(viewer, monkeypatch):
    monkeypatch.setenv("NAPARI_DIFFIR_NOTHREADS", "1")
    viewer.add_image(_image((32, 32)), name="img")
    widget = _widget(viewer)
    widget._restorer.value = "tv"
    future = widget.run()
    assert future.done() and future.result().name == "img [tv]"
    _assert_idle(widget)


# ---------------------------------------------------------------- weights


def test_wrong_checkpoint_file_gives_a_message_not_a_traceback(viewer, tmp_path, monkeypatch):
    viewer.add_image(_image((32, 32)))
    widget = _widget(viewer)
    if "srdiff" not in widget._restorer.choices:
        pytest.skip("srdiff restorer not registered")
    widget._restorer.value = "srdiff"
    bad = tmp_path / "notes.pth"
    bad.write_text("this is not a checkpoint")
    # patch the class: magicgui containers treat instance delattr (monkeypatch undo) as widget removal
    monkeypatch.setattr(type(widget), "_ask_checkpoint_path", lambda self: str(bad))
    widget._weights.value = LOAD  # what choosing "Load checkpoint…" does
    assert widget._weights_info.value.startswith("Cannot")
    assert "notes.pth" in widget._weights_info.value and "Traceback" not in widget._weights_info.value
    assert widget._weights.value is None and not widget._run.enabled
    assert "needs weights" in widget._status.value


def test_loading_a_checkpoint_shows_its_architecture_and_selects_its_restorer(viewer, qtbot, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from napari_diffir.models.srdiff import SRDiff

    torch.manual_seed(0)
    model = SRDiff(scale=4, in_channels=1, hidden_size=8, dim_mults=(1, 2), rrdb_num_block=2,
                   rrdb_num_feat=4, timesteps=8)
    path = tmp_path / "tiny_srdiff.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    viewer.add_image(_image((16, 16)), name="lr")
    widget = _widget(viewer)
    widget._restorer.value = "tv"
    assert widget.load_checkpoint(path)
    assert widget._restorer.value == "srdiff" and widget._weights.value == str(path)
    info = widget._weights_info.value
    assert info == "SRDiff: 35,766 parameters, super-resolution x4, grayscale"  # in a user's words
    assert widget._weights.native.currentText() == "tiny_srdiff.safetensors (checkpoint)"
    widget._option_widgets["steps"].value = 2
    widget._seed.value = "7" if shown(widget._seed) else widget._seed.value
    out = _run(qtbot, widget).result()
    assert out.data.shape == (64, 64)
    assert out.metadata["napari_diffir"]["weights"] == str(path)
