"""Every user error on the CLI is one line and exit code 2, with no traceback, and leaves nothing
behind; what the environment can refuse (space, a folder) is refused before the work."""

from __future__ import annotations

import errno
import os
import sys
import threading

import numpy as np
import pytest
import tifffile
import torch

from napari_diffir.io import tiff as tiff_io

from ..conftest import write_plugin_dist
from .conftest import digest, one_line_error

BROKEN_PLUGIN = '''
from napari_diffir import Restorer, RestorerInfo, hookimpl


class Broken(Restorer):
    info = RestorerInfo(name="broken-init", display_name="b", task="denoise")

    def __init__(self, **options):
        raise RuntimeError("CUDA driver version is insufficient")

    def restore_tile(self, x, ctx):
        return x


@hookimpl
def register_restorers(register):
    register(Broken)
'''


def test_a_folder_as_input(tmp_path, cli):
    (tmp_path / "stack").mkdir()
    code, err = cli("restore", tmp_path / "stack", tmp_path / "o.tif", "-r", "tv", "-q")
    assert code == 2 and "is a folder" in one_line_error(err)


def test_an_existing_folder_as_output_is_refused_before_computing(tmp_path, tif, cli):
    (tmp_path / "out.tif").mkdir()
    code, err = cli("restore", tif, tmp_path / "out.tif", "-r", "tv", "-q", "--overwrite")
    line = one_line_error(err)
    assert code == 2 and "existing folder" in line and "out.tif" in line
    assert os.listdir(tmp_path / "out.tif") == []


@pytest.mark.parametrize("size", [6, 100, 1000])
def test_a_truncated_tiff(tmp_path, tif, cli, size):
    bad = tmp_path / "cut.tif"
    bad.write_bytes(tif.read_bytes()[:size])
    code, err = cli("restore", bad, tmp_path / "o.tif", "-r", "tv", "-q")
    assert code == 2 and "cut.tif" in one_line_error(err)
    assert not (tmp_path / "o.tif").exists()


def test_tiff_tags_that_claim_far_more_pixels_than_the_file_holds(tmp_path, cli):
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(60000)
        tif.pages[0].tags["ImageLength"].overwrite(60000)
    before = digest(path)
    code, err = cli("restore", path, tmp_path / "o.ome.zarr", "-r", "tv", "-q")
    line = one_line_error(err)
    assert code == 2 and "truncated" in line and "huge.tif" in line
    assert digest(path) == before and sorted(os.listdir(tmp_path)) == ["huge.tif"]


@pytest.mark.parametrize("out", ["o.tif", "o.ome.zarr"])
def test_an_imagej_stack_cut_short(tmp_path, cli, out):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.ones((10, 64, 64), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, err = cli("restore", path, tmp_path / out, "-r", "lanczos", "-q")
    line = one_line_error(err)
    assert code == 2 and "stack.tif" in line and ("truncated" in line or "not a readable TIFF" in line)
    assert sorted(os.listdir(tmp_path)) == ["stack.tif"]


def test_output_dtype_junk(tmp_path, tif, cli):
    code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "tv", "--output-dtype", "junk", "-q")
    assert code == 2 and "output_dtype must be None, 'input' or a real numeric" in one_line_error(err)


def test_a_full_disk_names_the_path_and_leaves_no_temporary_file(tmp_path, tif, cli, monkeypatch):
    def full(path, *args, **kwargs):
        open(path, "wb").write(b"II*\0partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiff_io.tifffile, "imwrite", full)
    code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "lanczos", "-q")
    line = one_line_error(err)
    assert code == 2 and "No space left on device" in line and "o.tif" in line
    assert sorted(os.listdir(tmp_path)) == ["data.tif"]


def test_too_little_free_space_is_refused_before_the_work(tmp_path, tif, cli, monkeypatch):
    from napari_diffir.io import outputs

    real = outputs.shutil.disk_usage
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "lanczos", "-q")
    line = one_line_error(err)
    assert code == 2 and "free" in line and str(tmp_path) in line
    code, err = cli("restore", tif, tmp_path / "o.ome.zarr", "-r", "lanczos", "-q")
    assert code == 2 and "free" in one_line_error(err)
    assert sorted(os.listdir(tmp_path)) == ["data.tif"]


def test_an_output_folder_that_is_a_file(tmp_path, tif, cli):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    code, err = cli("restore", tif, other / "o.tif", "-r", "tv", "-q")
    assert code == 2 and "does not exist" in one_line_error(err)


def test_a_plugin_whose_constructor_raises(tmp_path, tif, cli, monkeypatch, fresh_registry):
    module = "napari_diffir_adversarial_init"
    site = write_plugin_dist(tmp_path / "site", "napari-diffir-adversarial-init", module, BROKEN_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    try:
        code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "broken-init", "-q")
    finally:
        sys.modules.pop(module, None)  # other tests install plugins of their own
    line = one_line_error(err)
    assert code == 2 and "'broken-init' (napari-diffir-adversarial-init 1.0) failed to start" in line
    assert "RuntimeError: CUDA driver version is insufficient" in line


@pytest.mark.parametrize("device", ["meta", "tpu", "cuda:one"])
def test_a_device_that_cannot_run(tmp_path, tif, cli, device):
    code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "tv", "--device", device, "-q")
    assert code == 2 and "device must be 'auto', 'cpu'" in one_line_error(err)


def _in_thread(fn, timeout=60):
    box = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the command hangs"
    return box[0]


@pytest.fixture
def self_referential(tmp_path):
    d: dict = {}
    d["params"] = d
    path = tmp_path / "loop.pth"
    torch.save(d, path)
    return path


def test_a_self_referential_checkpoint_does_not_hang_info(self_referential, cli):
    code, err = _in_thread(lambda: cli("info", self_referential))
    assert code == 2 and "contains itself" in one_line_error(err)


def test_a_self_referential_checkpoint_does_not_hang_restore(tmp_path, tif, self_referential, cli):
    code, err = _in_thread(lambda: cli("restore", tif, tmp_path / "o.tif", "-r", "srdiff",
                                       "--weights", self_referential, "-q"))
    assert code == 2 and "contains itself" in one_line_error(err)
    assert not (tmp_path / "o.tif").exists()


def test_a_container_nested_in_a_cycle_of_two(tmp_path, cli):
    a: dict = {}
    b = {"model": a}
    a["state_dict"] = b
    path = tmp_path / "two.pth"
    torch.save(a, path)
    code, err = _in_thread(lambda: cli("info", path))
    assert code == 2 and "contains itself" in one_line_error(err)


def test_an_unknown_restorer_on_the_cli(tmp_path, tif, cli):
    code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "no-such", "-q")
    assert code == 2 and "Unknown restorer 'no-such'" in one_line_error(err)


def test_a_missing_input(tmp_path, cli):
    code, err = cli("restore", tmp_path / "nope.tif", tmp_path / "o.tif", "-r", "tv", "-q")
    assert code == 2 and "does not exist" in one_line_error(err)


@pytest.mark.parametrize("name, out, words", [
    ("stack", "o.ome.zarr", "is a folder but not a Zarr store"),
    ("fake.zarr", "o.tif", "is not a readable Zarr store"),
    ("stack", "o.tif", "is a folder"),
])
def test_a_folder_that_is_no_image_on_every_path(tmp_path, cli, name, out, words):
    (tmp_path / name).mkdir()
    code, err = cli("restore", tmp_path / name, tmp_path / out, "-r", "tv", "-q")
    assert code == 2 and words in one_line_error(err)
    assert sorted(os.listdir(tmp_path)) == [name]


def test_a_streamed_run_on_a_full_disk_names_the_partial_folder(tmp_path, tif, cli, monkeypatch):
    from napari_diffir.batch import stream

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stream, "open_output_array", lambda partial: _Full(full))
    code, err = cli("restore", tif, tmp_path / "o.ome.zarr", "-r", "lanczos", "--chunk", "32", "-q",
                    "--scheduler", "synchronous")
    line = err.strip().splitlines()[-1]
    assert code == 2 and "No space left on device while writing" in line and "o.ome.zarr.partial" in line
    assert not (tmp_path / "o.ome.zarr").exists()


class _Full:
    def __init__(self, fail):
        self.fail = fail

    def __setitem__(self, key, value):
        self.fail()
