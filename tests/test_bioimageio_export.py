"""bioimage.io export: packages that bioimage.io's own tools validate, test and run like napari-diffir."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

import napari_diffir  # noqa: E402
from napari_diffir.bioimageio import export_bioimageio  # noqa: E402
from napari_diffir.bioimageio.export import TOLERANCE  # noqa: E402
from napari_diffir.engine.normalize import fit_normalizer  # noqa: E402

from .bioimageio_models import make_image, tiny_diffir_checkpoint, tiny_srdiff_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def diffir_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export-diffir")
    ckpt = tiny_diffir_checkpoint(folder / "net.pth")
    return ckpt, export_bioimageio(ckpt, folder / "diffir.zip", seed=7)


@pytest.fixture(scope="module")
def srdiff_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export-srdiff")
    ckpt = tiny_srdiff_checkpoint(folder / "sr.safetensors")
    options = {"sampler": "ddim", "steps": 4, "temperature": 0.5}
    return ckpt, options, export_bioimageio(ckpt, folder / "srdiff.zip", seed=3, options=options)


def _normalised(image: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """``restored`` in the normalised units of ``image`` (what a package outputs)."""
    norm = fit_normalizer(image[None, None].astype(np.float32))
    return norm.forward(np.asarray(restored, np.float32)[None])[0]


def _bioimageio_predict(package, image: np.ndarray, weight_format: str = "pytorch_state_dict") -> np.ndarray:
    """bioimageio.core's prediction of the whole image, without the halo padding that its ``predict``
    adds for tiling (which changes what a global-prior model like DiffIR sees)."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description

    model = load_description(package)
    tensor = Tensor.from_numpy(image[None, None].astype(np.float32), dims=("batch", "channel", "y", "x"))
    with create_prediction_pipeline(model, weight_format=weight_format) as pipeline:
        out = pipeline.predict_sample_without_blocking(
            Sample(members={"input": tensor}, stat={}, id="image"), skip_input_padding=True,
            skip_output_cropping=True)
    return out.members["output"].data.values[0, 0]


def test_diffir_package_passes_validation_and_test_model(diffir_export):
    """The package validates as format 0.5 and bioimageio.core's test_model passes, offline."""
    from bioimageio.core import load_description, test_model
    from bioimageio.spec.model import v0_5

    _, package = diffir_export
    descr = load_description(package)
    assert isinstance(descr, v0_5.ModelDescr), getattr(descr, "validation_summary", descr)
    summary = test_model(package)
    assert summary.status == "passed", summary.format()
    from napari_diffir.restorers.diffir import DiffIRRestorer

    halo = DiffIRRestorer.info.tile_overlap // 2  # half the engine's overlap each side (24 for 48)
    assert halo % 8 == 0  # already a multiple of the model's 8, so no rounding up
    y = descr.inputs[0].axes[2]
    assert (y.size.min, y.size.step) == (8 + 2 * halo, 8)  # halo per side + one multiple
    assert descr.outputs[0].axes[2].halo == halo
    (pre,) = [p for p in descr.inputs[0].preprocessing if p.id == "scale_range"]
    assert (pre.kwargs.min_percentile, pre.kwargs.max_percentile) == (1.0, 99.8)
    assert str(descr.cite[0].doi) == "10.48550/arXiv.2303.09472"
    assert str(descr.license) == "BSD-3-Clause"
    tol = descr.config.bioimageio.reproducibility_tolerance[0]
    assert tol.absolute_tolerance == TOLERANCE
    names = set(zipfile.ZipFile(package).namelist())
    assert {"weights.pt", "architecture.py", "test_input.npy", "test_output.npy", "cover.png", "README.md"} <= names


def test_diffir_package_predicts_what_restore_gives(diffir_export):
    """bioimageio.core's prediction on a new image equals napari_diffir.restore with the package's seed."""
    ckpt, package = diffir_export
    image = make_image(48)
    ours = napari_diffir.restore(image, "diffir", weights=ckpt, seed=7, tile_size=None, device="cpu")
    for weight_format in ("pytorch_state_dict", "torchscript"):
        theirs = _bioimageio_predict(package, image, weight_format)
        np.testing.assert_allclose(theirs, _normalised(image, ours), atol=1e-4, err_msg=weight_format)


def test_srdiff_package_is_super_resolution_and_predicts_what_restore_gives(srdiff_export):
    """SR outputs carry the scale; the sampler and its fixed noise reproduce restore(seed=3)."""
    from bioimageio.core import load_description

    ckpt, options, package = srdiff_export
    descr = load_description(package)
    assert descr.outputs[0].axes[2].scale == 0.5
    assert str(descr.cite[0].doi) == "10.48550/arXiv.2104.14951"
    image = make_image(24)
    ours = napari_diffir.restore(image, "srdiff", weights=ckpt, seed=3, tile_size=None, device="cpu", options=options)
    theirs = _bioimageio_predict(package, image)
    assert theirs.shape == (48, 48)
    np.testing.assert_allclose(theirs, _normalised(image, ours), atol=1e-4)


def test_architecture_file_runs_without_napari_diffir(diffir_export, tmp_path):
    """The packaged architecture is self-contained: it rebuilds the model with napari-diffir unimportable."""
    from bioimageio.core import load_description

    _, package = diffir_export
    zipfile.ZipFile(package).extractall(tmp_path)
    kwargs = load_description(package).weights.pytorch_state_dict.architecture.kwargs
    script = f"""
import sys, json, importlib.util
sys.modules['napari_diffir'] = None  # any import of napari-diffir now fails
import numpy as np, torch
spec = importlib.util.spec_from_file_location('arch', {str(tmp_path / 'architecture.py')!r})
arch = importlib.util.module_from_spec(spec); spec.loader.exec_module(arch)
net = arch.PackagedDiffIR(**json.loads({json.dumps(json.dumps(kwargs))}))
net.load_state_dict(torch.load({str(tmp_path / 'weights.pt')!r}, weights_only=True))
x = np.load({str(tmp_path / 'test_input.npy')!r}); want = np.load({str(tmp_path / 'test_output.npy')!r})
lo, hi = np.percentile(x, [1, 99.8])
with torch.no_grad():
    got = net.eval()(torch.from_numpy(((x - lo) / (hi - lo)).astype(np.float32))).numpy()
print(float(np.abs(got - want).max()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 1e-4


def test_export_refuses_what_it_cannot_package(tmp_path, diffir_export):
    """Inpainting, a non-zip name and an existing file are refused, naming why; nothing is written."""
    inpaint = tiny_diffir_checkpoint(tmp_path / "inpaint.pth", task="inpaint")
    with pytest.raises(ValueError, match="inpainting model, which needs a mask"):
        export_bioimageio(inpaint, tmp_path / "a.zip")
    with pytest.raises(ValueError, match=r"is a \.zip file"):
        export_bioimageio("diffir-denoise", tmp_path / "a.tar")
    _, package = diffir_export
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bioimageio("diffir-denoise", package)
    with pytest.raises(ValueError, match="not a DiffIR or SRDiff model"):
        export_bioimageio("lanczos", tmp_path / "b.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inpaint.pth"]


def test_cli_export_writes_a_package(tmp_path, capsys):
    """`napari-diffir export CKPT OUT.zip` writes a tested package and says so."""
    from napari_diffir.cli import main

    ckpt = tiny_diffir_checkpoint(tmp_path / "net.pth")
    out = tmp_path / "cli.zip"
    assert main(["export", ckpt, str(out), "--no-torchscript"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert "torchscript.pt" not in zipfile.ZipFile(out).namelist()
