"""The Restore widget and bioimage.io: a package as weights (described), and one-click export."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

import napari_diffir as nd  # noqa: E402
from napari_diffir.napari._widget import RestoreWidget  # noqa: E402

from .bioimageio_models import make_image, tiny_diffir_checkpoint, tiny_unet_package  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer(make_napari_viewer_proxy):
    return make_napari_viewer_proxy()


@pytest.fixture
def widget(viewer):
    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w, name="Restore (bioimage.io test)")
    return w


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    return str(tiny_unet_package(tmp_path_factory.mktemp("widget-unet")))


def test_a_package_as_weights_shows_name_description_authors_and_runs(qtbot, viewer, widget, unet):
    """Loading a package selects the bioimageio restorer, describes the model under the picker, and
    the run gives what restore() gives."""
    image = make_image(48)
    viewer.add_image(image, name="noisy")
    assert widget.load_checkpoint(unet)
    assert widget._restorer.value == "bioimageio"
    shown = widget._weights_info.value
    assert "tiny UNet denoiser" in shown and "a tiny UNet for napari-diffir's tests" in shown
    assert "Test Author" in shown
    widget.tile_size.value = "none"
    future = widget.run()
    qtbot.waitUntil(future.done, timeout=60_000)
    out = future.result().data
    expected = nd.restore(image, "bioimageio", weights=unet, tile_size=None)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-3)


def test_a_package_it_cannot_run_says_why_under_the_picker(widget, tmp_path):
    onnx = str(tiny_unet_package(tmp_path, weights="onnx"))
    before = widget._restorer.value
    assert not widget.load_checkpoint(onnx)
    assert "has only onnx weights" in widget._weights_info.value
    assert widget._restorer.value == before


def test_export_button_writes_the_selected_model(widget, tmp_path, monkeypatch):
    """One click (the save dialog answered) exports the selected checkpoint as a tested package."""
    monkeypatch.setenv("NAPARI_DIFFIR_NOTHREADS", "1")
    ckpt = tiny_diffir_checkpoint(tmp_path / "net.pth")
    assert widget.load_checkpoint(ckpt)
    target = tmp_path / "exported"
    monkeypatch.setattr(RestoreWidget, "_ask_export_path", lambda self: str(target))
    widget._export.clicked.emit()
    package = tmp_path / "exported.zip"
    assert widget._status.value == f"Exported to {package}"
    assert "rdf.yaml" in zipfile.ZipFile(package).namelist()
    assert widget._export.enabled


def test_export_of_a_model_that_is_not_diffir_or_srdiff_says_why(widget, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DIFFIR_NOTHREADS", "1")
    widget._restorer.value = "lanczos"
    future = widget.export_model(tmp_path / "lanczos.zip")
    assert future.exception() is not None
    assert widget._status.value.startswith("Export failed:") and "not a DiffIR or SRDiff model" in widget._status.value
    assert not (tmp_path / "lanczos.zip").exists()
