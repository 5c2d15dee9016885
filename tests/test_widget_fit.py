"""The Restore dock in a real 1280x800 viewer (Xvfb): it fits, speaks plainly, and changes nothing silently."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from napari_diffir.napari._form import shown

pytestmark = pytest.mark.gui

TIMEOUT = 30_000
DOCK_WIDTH = 380
BUNDLED = ("diffir-denoise", "diffir-sr4", "srdiff-sr4")
DEVELOPER_TEXT = re.compile(r"restorers/weights|\.json|weights=|napari_diffir\.|/work/|given with|params human|task sr")


@pytest.fixture
def docked(make_napari_viewer, qtbot):
    """A 1280x800 viewer with the Restore dock (through the manifest) and the noisy sample."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-diffir", "Restore")
    viewer.open_sample("napari-diffir", "noisy_nuclei")
    qtbot.waitUntil(lambda: "torch" in widget._device_info.value, timeout=TIMEOUT)
    return viewer, dock, widget


def _image(shape, seed=0, dtype=np.float32):
    return (np.random.default_rng(seed).random(shape) * 1000).astype(dtype)


def _visible_leaves(root):
    from qtpy.QtWidgets import QAbstractButton, QComboBox, QLabel, QLineEdit, QProgressBar

    kinds = (QLabel, QComboBox, QLineEdit, QAbstractButton, QProgressBar)
    return [w for w in root.findChildren(kinds) if w.isVisibleTo(root) and w.width() > 0]


def _texts(widget):
    """Every text a user can see or hover in the widget: labels, entries, tooltips, buttons."""
    from qtpy.QtWidgets import QAbstractButton, QComboBox, QLabel, QWidget

    out = []
    for w in widget.native.findChildren(QWidget):
        out.append(w.toolTip())
        if isinstance(w, (QLabel, QAbstractButton)):
            out.append(w.text())
        if isinstance(w, QComboBox):
            out += [w.itemText(i) for i in range(w.count())]
    return [t for t in out if t]


def _narrow(viewer, dock, qtbot, width=DOCK_WIDTH):
    from qtpy.QtCore import Qt

    viewer.window._qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
    qtbot.wait(50)


def test_dock_is_at_most_380_px_wide_and_nothing_is_clipped(docked, qtbot):
    viewer, dock, widget = docked
    for name in (*BUNDLED, "tv", "lanczos", "srdiff", "diffir", "diffir-inpaint"):
        widget.restorer.value = name
        for advanced in (False, True):
            widget.show_advanced(advanced)
            qtbot.wait(20)
            assert dock.minimumSizeHint().width() <= DOCK_WIDTH, (name, advanced)
            _narrow(viewer, dock, qtbot)
            assert dock.width() <= DOCK_WIDTH + 2
            inner = widget.native
            for leaf in _visible_leaves(inner):
                left = leaf.mapTo(inner, leaf.rect().topLeft()).x()
                assert left >= 0 and left + leaf.width() <= inner.width() + 1, (name, leaf)
                assert leaf.width() >= min(leaf.minimumSizeHint().width(), inner.width()), (name, leaf)
                if hasattr(leaf, "wordWrap") and leaf.wordWrap() and leaf.text():
                    assert leaf.height() >= leaf.heightForWidth(leaf.width()) - 1, (name, leaf.text())
            # the whole form fits the window's height (no field cut off at the bottom)
            assert inner.minimumSizeHint().height() <= viewer.window._qt_window.height() - 100, (name, advanced)


def test_fields_share_one_label_column_and_advanced_is_collapsed_with_working_defaults(docked, qtbot):
    viewer, dock, widget = docked
    viewer.add_image(_image((3, 32, 32)), name="stack")  # shows "Current slice only" too
    widget.restorer.value = "srdiff-sr4"
    assert not widget._advanced.native.isVisibleTo(widget.native)
    assert widget.run_button.enabled  # the defaults run as they are
    assert widget.run_button.text == "Run on 'stack'"
    widget.axes.value = "ZYX"  # validation runs again: it must not undo the alignment
    widget.advanced_button.native.click()
    qtbot.wait(20)
    assert widget._advanced.native.isVisibleTo(widget.native)
    assert [w.name for w in widget._advanced] == [
        "seed", "seed_hint", "tile_size", "tile_size_hint", "tile_overlap", "tile_overlap_hint", "device",
        "precision", "precision_hint", "output_type", "output_dtype_hint", "tta"]
    fields = [widget.image, widget.restorer, widget.weights, widget.axes, widget.current_slice,
              widget.tile_size, widget.device,
              widget.output_type, widget.tta, *[w for w in widget.restorer_options if shown(w)]]
    assert shown(widget.restorer_options.exact_lr_up) and shown(widget.current_slice)

    def left(field):  # where the field's box starts (a check box's own margin included)
        x = field.native.mapTo(widget.native, field.native.rect().topLeft()).x()
        return x + field.native.contentsMargins().left() + _style_margin(field.native)

    lefts = {left(f) for f in fields if f.native.isVisible()}
    assert len(lefts) == 1  # one label column, every field starts at the same x


def _style_margin(native):
    found = re.search(r"margin-left:\s*(\d+)px", native.styleSheet())
    return int(found.group(1)) if found else 0


def test_status_and_device_text_wrap_left_aligned(docked, qtbot):
    from qtpy.QtCore import Qt

    viewer, dock, widget = docked
    widget.show_advanced(True)
    widget.tile_size.value = "16"
    for label in (widget._status, widget._device_info, widget._about):
        native = label.native
        assert native.wordWrap() and native.alignment() & Qt.AlignmentFlag.AlignLeft
        assert native.mapTo(widget.native, native.rect().topLeft()).x() <= 12  # spans the dock, not a column


def test_no_repository_paths_or_api_words_in_what_the_user_sees(docked, qtbot, tmp_path):
    viewer, dock, widget = docked
    for name in widget.restorer.choices:
        if name.startswith("__header__"):
            continue
        widget.restorer.value = name
        widget.show_advanced(True)
        bad = [t for t in _texts(widget) if DEVELOPER_TEXT.search(t)]
        assert not bad, (name, bad)
    # one plain line under the restorer; the rest in its tooltip
    widget.restorer.value = "diffir-denoise"
    assert "\n" not in widget._about.value and len(widget._about.value) < 80
    assert "Train400" in widget._about.tooltip
    # checkpoint-driven entries say so
    labels = [widget.restorer.native.itemText(i).strip() for i in range(widget.restorer.native.count())]
    assert "DiffIR (checkpoint)" in labels and "SRDiff super-resolution (diffusion) (checkpoint)" in labels


def test_output_type_follows_each_layer_and_keeps_only_what_the_user_chose(docked, qtbot):
    viewer, dock, widget = docked
    gray = viewer.layers["noisy nuclei"]
    rgb = viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="photo", rgb=True)
    assert widget.image.value.name == "photo" and widget.output_type.value == "input"
    viewer.layers.selection.active = gray
    assert widget.image.value.name == "noisy nuclei"
    assert widget.output_type.value == "float32"  # not left on "same as input"
    job, _ = widget.make_job()
    assert job.output_dtype is None
    widget.output_type.value = "input"  # the user's choice, for this layer
    viewer.layers.selection.active = rgb
    assert widget.output_type.value == "input"
    widget.output_type.value = "float32"
    viewer.layers.selection.active = gray
    assert widget.output_type.value == "input"
    viewer.layers.selection.active = rgb
    assert widget.output_type.value == "float32"


def test_only_scales_the_model_can_do_are_offered(docked, qtbot, tmp_path):
    viewer, dock, widget = docked
    widget.restorer.value = "srdiff-sr4"
    assert not shown(widget._option_widgets["scale"])  # x4 only: nothing to choose
    job, _ = widget.make_job()
    assert "scale" not in job.options
    widget.restorer.value = "lanczos"
    assert shown(widget._option_widgets["scale"]) and list(widget._option_widgets["scale"].choices) == [2, 3, 4, 8]
    widget.restorer.value = "srdiff"
    assert widget.load_checkpoint(_tiny_srdiff(tmp_path))
    assert not shown(widget._option_widgets["scale"])


def _tiny_srdiff(tmp_path):
    import torch
    from safetensors.torch import save_file

    from napari_diffir.models.srdiff import SRDiff

    torch.manual_seed(0)
    model = SRDiff(scale=4, in_channels=1, hidden_size=8, dim_mults=(1, 2), rrdb_num_block=2,
                   rrdb_num_feat=4, timesteps=8)
    path = tmp_path / "tiny_srdiff.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_stage_one_diffir_checkpoint_is_refused_at_load(docked, tmp_path):
    import torch

    from napari_diffir.models.diffir import DiffIRS1

    viewer, dock, widget = docked
    widget.restorer.value = "tv"
    model = DiffIRS1(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
                     n_encoder_res=1, n_feats=8, inp_channels=1, out_channels=1, ffn_expansion_factor=2.0)
    path = tmp_path / "DiffIRS1-tiny.pth"
    torch.save({"params": model.state_dict()}, path)
    assert not widget.load_checkpoint(path)
    message = widget._weights_info.value
    assert "stage-1" in message and "stage-2" in message and str(tmp_path) not in message
    assert widget.restorer.value == "tv" and str(path) not in widget._picker.checkpoints


def test_a_loaded_checkpoint_stays_selected_across_restorer_switches(docked, tmp_path):
    viewer, dock, widget = docked
    path = _tiny_srdiff(tmp_path)
    assert widget.load_checkpoint(path) and widget.restorer.value == "srdiff"
    widget.restorer.value = "tv"
    widget.restorer.value = "srdiff"
    assert widget.weights.value == path
    assert widget.weights_info.value.startswith("SRDiff:")


def test_image_follows_the_layer_list_selection(docked, qtbot):
    viewer, dock, widget = docked
    a = viewer.add_image(_image((32, 32)), name="a")
    assert widget.image.value.name == "a" and widget.run_button.text == "Run on 'a'"
    viewer.add_image(_image((32, 32)), name="b")
    assert widget.image.value.name == "b"
    viewer.layers.selection.active = a
    assert widget.image.value.name == "a"
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="lbl")  # not an image: Image stays on "a"
    assert widget.image.value.name == "a"
    widget.restorer.value = "tv"
    out = widget.run(wait=True, timeout=60).result()
    assert out.name == "a [tv]" and widget.image.value.name == "a"  # the output is selected, not restored next


def test_closing_the_dock_cancels_the_run_and_disconnects_the_viewer(widget_plugin, make_napari_viewer, qtbot):
    import napari_diffir_widget_test as plugin

    viewer = make_napari_viewer(show=True)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-diffir", "Restore")
    viewer.add_image(_image((32, 32)), name="img")
    widget.refresh_restorers()
    widget.restorer.value = "slow-steps"
    widget.steps.value = "2000"
    future = widget.run()
    qtbot.waitUntil(lambda: plugin.SlowSteps.calls > 0, timeout=TIMEOUT)
    dock.title.close_button.click()  # the dock's ×
    qtbot.waitUntil(future.done, timeout=TIMEOUT)
    assert future.cancelled()
    calls = plugin.SlowSteps.calls
    qtbot.wait(500)
    assert plugin.SlowSteps.calls - calls <= 1 and [layer.name for layer in viewer.layers] == ["img"]
    viewer.add_image(_image((8, 8)), name="later")
    assert [layer.name for layer in widget.image.choices] == ["img"]  # no longer follows the viewer


def test_steps_show_their_default_and_the_output_records_steps_and_sampler(docked, qtbot):
    viewer, dock, widget = docked
    viewer.add_image(_image((16, 16)), name="tiny")
    widget.restorer.value = "srdiff-sr4"
    steps = widget._option_widgets["steps"]
    assert steps.value == "" and steps.native.placeholderText() == "20 (default)"
    widget._option_widgets["sampler"].value = "ddpm"
    assert steps.native.placeholderText() == "100 (default)"  # every trained step
    assert not shown(widget._option_widgets["eta"])  # only the ddim sampler uses it
    widget._option_widgets["sampler"].value = "ddim"
    assert shown(widget._option_widgets["eta"]) and "ddim" in widget._option_widgets["eta"].tooltip
    widget._option_widgets["sampler"].value = "dpm++2m"
    widget.seed.value = "3"
    out = widget.run(wait=True, timeout=120).result()
    meta = out.metadata["napari_diffir"]
    assert meta["steps"] == 20 and meta["options"]["sampler"] == "dpm++2m" and meta["seed"] == 3
    assert out.data.shape == (64, 64)


def test_invalid_fields_get_a_red_frame_and_their_own_message(docked, qtbot):
    from napari_diffir.napari._form import ERROR_FRAME

    viewer, dock, widget = docked
    widget.restorer.value = "tv"
    assert not widget._advanced.visible
    widget.tile_size.value = "16"
    assert widget._advanced.native.isVisibleTo(widget.native)  # opened to show why Run is disabled
    assert widget.tile_size.native.styleSheet() == ERROR_FRAME
    hint = widget._hints["tile_size"]
    assert hint.native.isVisibleTo(widget.native) and "at least 32" in hint.value
    assert not widget.run_button.enabled
    widget.tile_size.value = "auto"
    assert widget.tile_size.native.styleSheet() == "" and not hint.native.isVisibleTo(widget.native)
    widget.restorer.value = "nlmeans"
    widget.restorer_options.strength.value = 0.05
    widget.axes.value = "ZX"
    assert widget.axes.native.styleSheet() == ERROR_FRAME and widget._axes_hint.value


def test_ambiguous_two_plane_image_offers_cyx(docked, qtbot):
    viewer, dock, widget = docked
    viewer.add_image(_image((2, 64, 64)), name="two")
    assert widget.axes.value == "ZYX"
    hint = widget._axes_hint
    assert hint.native.isVisibleTo(widget.native) and "use CYX" in hint.value
    hint.native.linkActivated.emit("CYX")  # what clicking the link does
    assert widget.axes.value == "CYX" and not hint.native.isVisibleTo(widget.native)


def test_output_takes_the_input_units_without_warnings(docked, qtbot, monkeypatch):
    import napari._vispy.canvas as canvas

    viewer, dock, widget = docked
    noisy = viewer.layers["noisy nuclei"]  # the samples carry µm
    shown_warnings: list[str] = []
    monkeypatch.setattr(canvas, "show_warning", lambda message: shown_warnings.append(str(message)))
    widget.restorer.value = "tv"
    out = widget.run(wait=True, timeout=120).result()
    qtbot.wait(300)  # napari checks the units at the next draw
    assert tuple(map(str, out.units)) == tuple(map(str, noisy.units))
    assert shown_warnings == []
    viewer.add_image(_image((32, 32)), name="plain")  # a unit-less layer does warn: the check works
    qtbot.waitUntil(lambda: any("units" in m for m in shown_warnings), timeout=5_000)


def test_no_event_loop_gap_over_250_ms_during_a_run(docked, qtbot):
    from qtpy.QtCore import QTimer

    viewer, dock, widget = docked
    viewer.add_image(_image((64, 64)), name="small")
    widget.restorer.value = "srdiff-sr4"
    widget._option_widgets["steps"].value = "8"
    ticks: list[float] = []
    added: list[float] = []  # napari's own add_layer (vispy, layer controls) is not the run
    viewer.layers.events.inserting.connect(lambda e: added.append(time.perf_counter()))
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    future = widget.run()
    qtbot.waitUntil(future.done, timeout=120_000)
    timer.stop()
    assert future.result() is not None
    ticks = np.array(ticks)
    gap = np.diff(ticks[ticks < added[0]]).max()
    print(f"longest event-loop gap during the run: {gap * 1000:.0f} ms; "
          f"napari adding the layer: {np.diff(ticks).max() * 1000:.0f} ms")
    assert gap < 0.25
    assert widget._progress.native.maximum() == 1000  # the busy bar of the loading phase has ended
