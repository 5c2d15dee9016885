"""Runs that race for one output, outputs that are symlinks, and what a finished output looks like."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest
import tifffile
import zarr

import napari_diffir as nd
from napari_diffir.batch import restore_file
from napari_diffir.cli import main
from napari_diffir.io.outputs import OutputBusyError

from .conftest import digest, one_line_error


def _race(n, fn):
    barrier = threading.Barrier(n)
    results = [None] * n

    def go(i):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:  # the loser's answer
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_two_in_memory_cli_runs_into_one_output_one_wins(tmp_path, tif, image):
    out = tmp_path / "o.tif"
    codes = _race(2, lambda: main(["restore", str(tif), str(out), "-r", "lanczos", "-q"]))
    assert sorted(codes) == [0, 2]
    np.testing.assert_allclose(tifffile.imread(out), nd.restore(image, "lanczos"), rtol=0, atol=1e-3)
    assert sorted(os.listdir(tmp_path)) == ["data.tif", "o.tif"]  # no temporary file left


def test_two_streaming_runs_into_one_zarr_one_wins_and_the_zarr_is_readable(tmp_path, tif, image):
    out = str(tmp_path / "o.ome.zarr")
    results = _race(2, lambda: restore_file(str(tif), out, "lanczos", chunk=32, progress=False))
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(losers) == 1 and isinstance(losers[0], (OutputBusyError, FileExistsError))
    got = zarr.open_array(os.path.join(out, "0"), mode="r")[:]
    np.testing.assert_allclose(got, nd.restore(image, "lanczos"), rtol=0, atol=1e-2)
    assert sorted(os.listdir(tmp_path)) == ["data.tif", "o.ome.zarr"]


def test_an_output_symlink_to_the_input_is_refused(tmp_path, tif, cli):
    link = tmp_path / "out.tif"
    link.symlink_to(tif)
    before = digest(tif)
    code, err = cli("restore", tif, link, "-r", "tv", "--overwrite", "-q")
    assert code == 2 and "same as INPUT" in one_line_error(err)
    assert digest(tif) == before


def test_overwriting_an_output_symlink_replaces_the_link_not_its_target(tmp_path, tif, cli):
    elsewhere = tmp_path / "precious.tif"
    elsewhere.write_bytes(b"keep me")
    link = tmp_path / "out.tif"
    link.symlink_to(elsewhere)
    assert cli("restore", tif, link, "-r", "lanczos", "--overwrite", "-q")[0] == 0
    assert elsewhere.read_bytes() == b"keep me" and not link.is_symlink()


def test_overwriting_a_zarr_symlink_leaves_no_stray_link(tmp_path, tif):
    real = tmp_path / "real.ome.zarr"
    real.mkdir()
    (real / "keep.txt").write_text("x")
    link = tmp_path / "o.ome.zarr"
    link.symlink_to(real, target_is_directory=True)
    restore_file(str(tif), str(link), "lanczos", chunk=32, overwrite=True, progress=False)
    assert (real / "keep.txt").exists() and not link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["data.tif", "o.ome.zarr", "real.ome.zarr"]


def test_every_file_of_a_zarr_output_gets_the_umask_permissions(tmp_path, tif):
    old = os.umask(0o027)
    try:
        out = tmp_path / "o.ome.zarr"
        restore_file(str(tif), str(out), "lanczos", chunk=32, progress=False)
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(os.stat(os.path.join(r, f)).st_mode) for r, _, fs in os.walk(out) for f in fs}
    assert modes == {0o640}


def test_a_float16_output_that_would_overflow_is_refused():
    img = np.random.default_rng(0).integers(60000, 65535, (32, 32)).astype(np.uint16)
    with pytest.raises(ValueError, match="exceed the range of float16 output"):
        nd.restore(img, "lanczos", output_dtype="float16")
