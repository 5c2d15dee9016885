"""The napari-diffir command line: TIFF in/out with axes and pixel size, atomic writes, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from napari_diffir.cli import main
from napari_diffir.io.tiff import read_tiff


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "in.tif"
    data = np.random.default_rng(0).integers(0, 4000, (3, 40, 48)).astype(np.uint16)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"})
    return path, data


def test_restore_sr_keeps_axes_and_scales_pixel_size(stack, tmp_path, capsys):
    src, data = stack
    out = tmp_path / "out.ome.tif"
    assert main(["restore", str(src), str(out), "-r", "lanczos", "-o", "scale=4", "--output-dtype", "input", "-q"]) == 0
    img = read_tiff(str(out))
    assert img.axes == "ZYX" and img.data.shape == (3, 160, 192) and img.data.dtype == np.uint16
    assert img.pixel_size["X"] == pytest.approx(0.05) and img.pixel_size["Z"] == pytest.approx(0.5)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".napari-diffir-")]  # no temp left


def test_restore_refuses_overwrite_and_input(stack, tmp_path, capsys):
    src, data = stack
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep me")
    assert main(["restore", str(src), str(out), "-r", "lanczos", "-q"]) == 2
    assert out.read_bytes() == b"keep me"
    assert main(["restore", str(src), str(src), "-r", "lanczos", "-q", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and "never overwrites its input" in err
    assert "Traceback" not in err
    assert main(["restore", str(src), str(out), "-r", "lanczos", "-q", "--overwrite"]) == 0
    assert read_tiff(str(out)).data.shape == (3, 80, 96)
    np.testing.assert_array_equal(tifffile.imread(src), data)


@pytest.mark.parametrize(
    "args, message",
    [
        (["-r", "nope"], "Unknown restorer 'nope'"),
        (["-r", "lanczos", "--axes", "QYX"], "allowed letters"),
        (["-r", "lanczos", "-o", "scale"], "expects NAME=VALUE"),
        (["-r", "lanczos", "--tile", "big"], "--tile expects"),
        (["-r", "lanczos", "--device", "cuda"], "no CUDA GPU"),
    ],
)
def test_user_errors_exit_2_with_one_line(stack, tmp_path, capsys, args, message):
    src, _ = stack
    assert main(["restore", str(src), str(tmp_path / "o.tif"), "-q", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.tif").exists()


def test_missing_input_and_list(tmp_path, capsys):
    assert main(["restore", str(tmp_path / "missing.tif"), str(tmp_path / "o.tif"), "-r", "lanczos"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "lanczos" in out and "napari-diffir (built-in)" in out and "--option scale" in out


def test_info_on_non_checkpoint(tmp_path, capsys):
    p = tmp_path / "x.pth"
    p.write_bytes(b"not a checkpoint")
    assert main(["info", str(p)]) == 2
    assert "is not a PyTorch weights file" in capsys.readouterr().err


def test_bundled_sample_as_input(tmp_path):
    out = tmp_path / "sr.tif"
    assert main(["restore", "sample:nuclei-lowres", str(out), "-r", "lanczos", "-o", "scale=4", "-q"]) == 0
    img = read_tiff(str(out))
    assert img.data.shape == (256, 256) and img.pixel_size["X"] == pytest.approx(0.26)
    assert main(["restore", "sample:nope", str(tmp_path / "x.tif"), "-r", "lanczos", "-q"]) == 2


def test_mask_option_reaches_the_engine(tmp_path, capsys):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint16))
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, np.ones((16, 16), np.uint8))
    assert main(["restore", str(img), str(tmp_path / "o.tif"), "-r", "tv", "--mask", str(mask), "-q"]) == 2
    assert "mask has shape (16, 16)" in capsys.readouterr().err
