"""The ``bioimageio`` restorer: packages built offline here run through the engine like any restorer."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

import napari_diffir  # noqa: E402
from napari_diffir import RestorationCancelled  # noqa: E402
from napari_diffir.engine.normalize import fit_normalizer  # noqa: E402

from .bioimageio_models import make_image, tiny_diffir_checkpoint, tiny_unet_package  # noqa: E402


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    return str(tiny_unet_package(tmp_path_factory.mktemp("unet")))


def _core_predict(package, image: np.ndarray, *, preprocess: bool = False) -> np.ndarray:
    """bioimageio.core's output for a (Y, X) image, untiled and unpadded: for an already normalised
    image (the package's preprocessing skipped), or with ``preprocess`` for raw intensities."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description

    tensor = Tensor.from_numpy(image[None, None].astype(np.float32), dims=("batch", "channel", "y", "x"))
    with create_prediction_pipeline(load_description(package)) as pipeline:
        out = pipeline.predict_sample_without_blocking(Sample(members={"raw": tensor}, stat={}, id="s"),
                                                       skip_preprocessing=not preprocess, skip_input_padding=True,
                                                       skip_output_cropping=True)
    return out.members["denoised"].data.values[0, 0]


def test_info_comes_from_the_package(unet):
    """Name, description, channels, sizes, halo and the prescribed normalisation are the package's."""
    r = napari_diffir.get_restorer("bioimageio", weights=unet)
    info = r.info
    assert (info.display_name, info.description) == ("tiny UNet denoiser", "a tiny UNet for napari-diffir's tests")
    assert (info.scale, info.in_channels, info.out_channels) == (1, 1, 1)
    assert (info.min_size, info.multiple_of, info.tile_overlap) == (24, 4, 16)
    assert (info.normalize, info.percentiles) == ("percentile", (1.0, 99.8))
    assert r.package.authors == ("Test Author",)


def test_restore_equals_bioimageio_core_and_tiles_agree(unet):
    """Untiled, the engine gives bioimageio.core's output (mapped back to intensities); tiled with the
    package's halo it stays within 1e-3 of the image's range."""
    image = make_image(64)
    whole = napari_diffir.restore(image, "bioimageio", weights=unet, tile_size=None, device="cpu")
    norm = fit_normalizer(image[None, None].astype(np.float32))
    core = _core_predict(unet, norm.forward(image[None].astype(np.float32))[0])
    np.testing.assert_allclose(norm.forward(whole[None])[0], core, atol=1e-5)
    tiled = napari_diffir.restore(image, "bioimageio", weights=unet, tile_size=32, device="cpu")
    span = float(norm.hi[0] - norm.lo[0])
    assert np.abs(tiled - whole).max() < 1e-3 * span


def test_prescribed_normalisation_wins_over_the_setting(unet):
    """A package with percentile preprocessing gets percentile input even if minmax is asked for."""
    image = make_image(48)
    a = napari_diffir.restore(image, "bioimageio", weights=unet, tile_size=None, device="cpu")
    b = napari_diffir.restore(image, "bioimageio", weights=unet, tile_size=None, device="cpu", normalize="minmax")
    np.testing.assert_array_equal(a, b)


def test_raw_intensity_package_gets_raw_intensities(tmp_path):
    """Fixed mean/std preprocessing runs on raw values per tile (engine normalisation 'none')."""
    package = str(tiny_unet_package(tmp_path, preprocessing="fixed"))
    r = napari_diffir.get_restorer("bioimageio", weights=package)
    assert r.info.normalize == "none"
    image = make_image(48)
    out = napari_diffir.restore(image, "bioimageio", weights=package, tile_size=None, device="cpu")
    core = _core_predict(package, (image.astype(np.float32) - 800.0) / 400.0)
    np.testing.assert_allclose(out, core, atol=1e-5)


def test_dask_progress_and_cancel(unet):
    """A dask array gives the in-memory result lazily; progress is reported; cancel stops the run."""
    import dask.array as da

    image = make_image(64)
    eager = napari_diffir.restore(image, "bioimageio", weights=unet, tile_size=32, device="cpu")
    lazy = napari_diffir.restore(da.from_array(image, chunks=32), "bioimageio", weights=unet, tile_size=32,
                                 device="cpu")
    np.testing.assert_allclose(lazy.compute(), eager, atol=1e-3 * float(image.max()))
    seen = []
    napari_diffir.restore(image, "bioimageio", weights=unet, tile_size=32, device="cpu",
                          progress=lambda done, total, msg: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] >= 4
    stop = threading.Event()
    stop.set()
    with pytest.raises(RestorationCancelled):
        napari_diffir.restore(image, "bioimageio", weights=unet, tile_size=32, device="cpu", cancel=stop)


def test_napari_diffir_export_round_trips(tmp_path):
    """napari-diffir's own export, run as a bioimage.io package, gives what the original restorer gives."""
    ckpt = tiny_diffir_checkpoint(tmp_path / "net.pth")
    package = napari_diffir.export_bioimageio(ckpt, tmp_path / "own.zip", seed=5, torchscript=False)
    image = make_image(64)  # a valid package size (min 8 + 2 * halo 24, step 8): no padding on either side
    original = napari_diffir.restore(image, "diffir", weights=ckpt, seed=5, tile_size=None, device="cpu")
    again = napari_diffir.restore(image, "bioimageio", weights=str(package), tile_size=None, device="cpu")
    norm = fit_normalizer(image[None, None].astype(np.float32))
    np.testing.assert_allclose(norm.forward(again[None]), norm.forward(original[None]), atol=1e-4)


def _core_with_its_own_ops(package, image: np.ndarray) -> np.ndarray:
    """bioimageio.core's result for a package with sample statistics of its output, from core's own
    operators and measures: its pipeline (0.11) raises KeyError on such packages, because it asks for
    the output's statistics while preprocessing, before the output exists."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description
    from bioimageio.core.proc_setup import _get_described_procs
    from bioimageio.core.stat_calculators import compute_sample_measures

    descr = load_description(package)
    raw = Tensor.from_numpy(image[None, None].astype(np.float32), dims=("batch", "channel", "y", "x"))
    sample = Sample(members={"raw": raw}, stat={}, id="s")
    pre, post = _get_described_procs(descr.inputs), _get_described_procs(descr.outputs)
    sample.stat.update(compute_sample_measures({m for op in pre for m in op.required_measures}, sample))
    for op in pre:
        op(sample)
    with create_prediction_pipeline(descr) as pipeline:
        out = pipeline.predict_sample_without_blocking(sample, skip_preprocessing=True, skip_postprocessing=True,
                                                       skip_input_padding=True, skip_output_cropping=True)
    result = Sample(members={"raw": raw, "denoised": out.members["denoised"]}, stat={}, id="s")
    result.stat.update(compute_sample_measures({m for op in post for m in op.required_measures}, result))
    for op in post:
        op(result)
    return result.members["denoised"].data.values[0, 0]


@pytest.fixture(scope="module")
def meanstd_package(tmp_path_factory):
    """Noise2Void / careamics style: zero_mean_unit_variance in, scale_mean_variance back out."""
    folder = tmp_path_factory.mktemp("meanstd")
    return str(tiny_unet_package(folder, preprocessing="zmuv", postprocessing="scale_mean_variance"))


def test_per_image_mean_std_package_equals_core_tiled_untiled_and_lazy(meanstd_package):
    """zero_mean_unit_variance in, scale_mean_variance back out (Noise2Void / careamics style): the
    statistics come from the whole image, so untiled equals bioimageio.core, and tiles and dask blocks
    give the untiled result (errors in units of the image's standard deviation)."""
    import dask.array as da

    package = meanstd_package
    info = napari_diffir.get_restorer("bioimageio", weights=package).info
    assert (info.normalize, info.standardize_output) == ("meanstd", 1e-6)
    image = make_image(64)
    sd = float(image.std())
    whole = napari_diffir.restore(image, "bioimageio", weights=package, tile_size=None, device="cpu")
    core = _core_with_its_own_ops(package, image)
    assert np.abs(whole - core).max() / sd < 1e-5
    assert abs(float(whole.mean()) - float(image.mean())) < 1e-3 and abs(float(whole.std()) / sd - 1) < 1e-5
    tiled = napari_diffir.restore(image, "bioimageio", weights=package, tile_size=40, tile_overlap=24, device="cpu")
    assert np.abs(tiled - whole).max() / sd < 1e-4
    lazy = napari_diffir.restore(da.from_array(image, chunks=32), "bioimageio", weights=package, tile_size=40,
                                 tile_overlap=24, device="cpu")
    assert isinstance(lazy, da.Array)
    assert np.abs(lazy.compute() - whole).max() / sd < 1e-4


def test_cli_info_names_the_mean_std_processing(meanstd_package, capsys):
    from napari_diffir.cli import main

    assert main(["info", meanstd_package]) == 0
    assert "halo 8 px, input mean/std, output to the input's mean/std, pytorch_state_dict" in capsys.readouterr().out


def test_chunk_by_chunk_run_refuses_whole_output_statistics(meanstd_package, tmp_path):
    """restore_file writes (and resumes) block by block, so it cannot use statistics of the whole output."""
    import tifffile

    from napari_diffir.batch.stream import restore_file

    tifffile.imwrite(tmp_path / "in.tif", make_image(64))
    with pytest.raises(ValueError, match=r"'tiny UNet denoiser' maps its output to the input's mean and standard "
                                         r"deviation, .* which a chunk-by-chunk run cannot give"):
        restore_file(str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"), "bioimageio", weights=meanstd_package,
                     progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_fixed_mean_std_undone_by_scale_linear_equals_core(tmp_path):
    """fixed_zero_mean_unit_variance in and its inverse as scale_linear out are pointwise: raw intensities
    in, each tile on its own, bioimageio.core's full pipeline out."""
    package = str(tiny_unet_package(tmp_path, preprocessing="fixed", postprocessing="scale_linear"))
    assert napari_diffir.get_restorer("bioimageio", weights=package).info.normalize == "none"
    image = make_image(48)
    out = napari_diffir.restore(image, "bioimageio", weights=package, tile_size=None, device="cpu")
    np.testing.assert_allclose(out / 400.0, _core_predict(package, image, preprocess=True) / 400.0, atol=1e-5)


def test_dataset_mean_std_with_pointwise_postprocessing_equals_core(tmp_path):
    """Mean/std over the dataset (the whole image given) in; clip and sigmoid out give the output units
    of its own, so the engine does not map it back: it is what bioimageio.core gives, tiled or not."""
    package = str(tiny_unet_package(tmp_path, preprocessing="zmuv_dataset", postprocessing="clip_sigmoid"))
    info = napari_diffir.get_restorer("bioimageio", weights=package).info
    assert (info.normalize, info.inverse_output, info.standardize_output) == ("meanstd", False, None)
    image = make_image(64)
    whole = napari_diffir.restore(image, "bioimageio", weights=package, tile_size=None, device="cpu")
    np.testing.assert_allclose(whole, _core_predict(package, image, preprocess=True), atol=1e-5)
    tiled = napari_diffir.restore(image, "bioimageio", weights=package, tile_size=40, tile_overlap=24, device="cpu")
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


@pytest.mark.parametrize("kind, message", [
    (dict(output="vector"), r"has no y and x axes, so it is not an image"),
    (dict(weights="onnx"), r"has only onnx weights; napari-diffir runs PyTorch weights"),
    (dict(preprocessing="zmuv_rows"), r"preprocessing 'zero_mean_unit_variance' over axes \['x'\] \(without both y "
                                      r"and x\) is not supported"),
    (dict(preprocessing="clip_percentile"), r"preprocessing 'clip' at percentiles needs whole-image statistics"),
    (dict(postprocessing="scale_range"), r"postprocessing 'scale_range' needs statistics of the whole image"),
    (dict(postprocessing="scale_mean_variance"), r"postprocessing 'scale_mean_variance' after a preprocessing "
                                                 r"other than zero_mean_unit_variance is not supported"),
])
def test_packages_it_cannot_run_are_refused_naming_why(tmp_path, kind, message):
    package = str(tiny_unet_package(tmp_path, **kind))
    with pytest.raises(ValueError, match=message):
        napari_diffir.get_restorer("bioimageio", weights=package)


def test_missing_weights_and_missing_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="needs weights=<bioimage.io package"):
        napari_diffir.get_restorer("bioimageio")
    with pytest.raises(FileNotFoundError, match="No bioimage.io package"):
        napari_diffir.get_restorer("bioimageio", weights=str(tmp_path / "nothing.zip"))


def test_listing_restorers_imports_neither_torch_nor_bioimageio():
    code = ("import sys, napari_diffir; names = [i.name for i in napari_diffir.list_restorers()]; "
            "assert 'bioimageio' in names, names; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'bioimageio')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_info_describes_a_package(unet, tmp_path, capsys):
    """`napari-diffir info PACKAGE.zip` names the model, its authors and how napari-diffir runs it (or why not)."""
    from napari_diffir.cli import main

    assert main(["info", unet]) == 0
    out = capsys.readouterr().out
    assert "tiny UNet denoiser" in out and "authors: Test Author" in out and "weights: pytorch_state_dict" in out
    assert "restorer: bioimageio" in out and "24 + n * 4 px, halo 8 px, input percentile 1..99.8" in out
    onnx = str(tiny_unet_package(tmp_path, weights="onnx"))
    assert main(["info", onnx]) == 0
    assert "restorer: none (napari-diffir cannot run it:" in capsys.readouterr().out
