"""Chunk-by-chunk restoration of files: equality, metadata, resume after interruption, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile
import zarr

from napari_diffir import restore
from napari_diffir.batch import restore_file, stream
from napari_diffir.batch.manifest import MANIFEST_NAME, Manifest
from napari_diffir.cli import main

from .restorers_for_tests import ConvNet


def _stack(shape=(3, 90, 100)):
    return np.random.default_rng(0).integers(100, 4000, shape).astype(np.uint16)


@pytest.fixture
def tiff_in(tmp_path):
    img = _stack()
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
                     resolution=(2.0, 2.0))
    return str(path), img


def _read(path):
    if path.endswith(".zarr"):
        return zarr.open_array(os.path.join(path, "0"), mode="r")[:]
    return tifffile.imread(path)


def test_tiff_to_ome_zarr_equals_in_memory_with_scaled_metadata(tmp_path, tiff_in):
    """Lanczos x2 streamed in 40-pixel blocks equals the in-memory result; sizes are halved."""
    src, img = tiff_in
    out = str(tmp_path / "out.ome.zarr")
    result = restore_file(src, out, "lanczos", chunk=40, progress=False)
    assert result.chunks_total == 3 * 3 * 3 and result.chunks_computed == 27
    ref = restore(img, "lanczos", axes="ZYX", tile_size=None)
    np.testing.assert_allclose(_read(out), ref, rtol=0, atol=1e-2)
    attrs = json.load(open(os.path.join(out, ".zattrs")))
    ms = attrs["multiscales"][0]
    scale, translation = ms["datasets"][0]["coordinateTransformations"]
    assert scale["scale"] == [2.0, 0.25, 0.25]
    assert translation["translation"] == [0.0, -0.125, -0.125]  # pixel centres stay in place
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert attrs["napari_diffir"]["restorer"] == "lanczos" and attrs["napari_diffir"]["scale"] == 2
    assert zarr.open_array(os.path.join(out, "0"), mode="r").chunks == (1, 80, 80)
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out.ome.zarr"]  # no partial left
    assert MANIFEST_NAME not in os.listdir(out)


def test_zarr_to_tiff_with_axis_reorder_and_input_dtype(tmp_path):
    """A ZCYX Zarr is written in NGFF order (CZYX) to an OME-TIFF, with the input dtype kept."""
    img = _stack((2, 2, 60, 70))  # Z, C, Y, X
    path = str(tmp_path / "in.zarr")
    z = zarr.create_array(path, shape=img.shape, chunks=(1, 1, 30, 35), dtype=img.dtype, zarr_format=2)
    z[:] = img
    z.attrs["_ARRAY_DIMENSIONS"] = ["z", "c", "y", "x"]
    out = str(tmp_path / "out.tif")
    result = restore_file(path, out, ConvNet(), chunk=32, output_dtype="input", progress=False,
                          scheduler="synchronous")
    assert result.axes == "CZYX" and result.dtype == "uint16"
    ref = restore(img, ConvNet(), axes="ZCYX", tile_size=None, output_dtype="input")
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "CZYX"
        got = tif.series[0].asarray()
    assert np.abs(got.astype(int) - ref.transpose(1, 0, 2, 3).astype(int)).max() <= 1
    assert not os.path.exists(out + ".partial")


class _Interrupt:
    """Replaces the block writer: writes half of block ``at`` (a torn chunk), then stops the run."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0
        self.real = stream._store_block

    def __call__(self, block, partial, region, perm, index):
        self.calls += 1
        if self.calls == self.at:
            arr = zarr.open_array(os.path.join(partial, "0"), mode="r+")
            half = tuple(slice(r.start, r.start + max(1, (r.stop - r.start) // 2)) for r in region)
            arr[half] = 12345.0  # part of the block lands on disk ...
            raise KeyboardInterrupt  # ... and the process is stopped before the rest
        return self.real(block, partial, region, perm, index)


@pytest.mark.parametrize("fmt", ["out.ome.zarr", "out.tif"])
def test_interrupted_run_resumes_without_trusting_the_torn_chunk(tmp_path, tiff_in, monkeypatch, fmt):
    """Finished blocks are kept, the half-written one is redone, and the result is exact."""
    src, img = tiff_in
    out = str(tmp_path / fmt)
    interrupt = _Interrupt(at=6)
    monkeypatch.setattr(stream, "_store_block", interrupt)
    with pytest.raises(KeyboardInterrupt):
        restore_file(src, out, "lanczos", chunk=40, seed=3, progress=False, scheduler="synchronous")
    assert not os.path.exists(out)  # OUTPUT appears only when complete
    manifest = Manifest.load(os.path.join(out + ".partial", MANIFEST_NAME))
    assert manifest.finished == 5 and manifest.total == 27
    monkeypatch.setattr(stream, "_store_block", interrupt.real)

    messages = []
    result = restore_file(src, out, "lanczos", chunk=40, progress=False, log=messages.append)
    assert result.chunks_resumed == 5 and result.chunks_computed == 22
    assert "5 of 27 chunks already done" in messages[0]
    ref = restore(img, "lanczos", axes="ZYX", tile_size=None)
    got = _read(out)
    assert not (got == 12345.0).any()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-2)
    assert not os.path.exists(out + ".partial")


def test_resume_refuses_other_settings_and_discards_unreadable_state(tmp_path, tiff_in, monkeypatch):
    """Changed settings are named (resume or --overwrite); a damaged manifest restarts the run."""
    src, _ = tiff_in
    out = str(tmp_path / "out.ome.zarr")
    monkeypatch.setattr(stream, "_store_block", _Interrupt(at=3))
    with pytest.raises(KeyboardInterrupt):
        restore_file(src, out, "lanczos", chunk=40, progress=False, scheduler="synchronous")
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"unfinished run with other settings \(chunks: .*--overwrite"):
        restore_file(src, out, "lanczos", chunk=48, progress=False)
    with pytest.raises(ValueError, match=r"options: \[\] -> \[\['scale', 4\]\]"):
        restore_file(src, out, "lanczos", chunk=40, options={"scale": 4}, progress=False)
    open(os.path.join(out + ".partial", MANIFEST_NAME), "w").write("{ torn")
    messages = []
    result = restore_file(src, out, "lanczos", chunk=40, progress=False, log=messages.append)
    assert result.chunks_resumed == 0 and result.chunks_computed == 27
    assert "nothing in it can be trusted" in messages[0]


def test_existing_output_same_path_and_unknown_format_are_refused(tmp_path, tiff_in):
    src, _ = tiff_in
    out = tmp_path / "done.ome.zarr"
    out.mkdir()
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        restore_file(src, str(out), "lanczos", progress=False)
    restore_file(src, str(out), "lanczos", chunk=64, overwrite=True, progress=False)
    assert zarr.open_array(str(out / "0"), mode="r").shape == (3, 180, 200)
    assert sorted(os.listdir(tmp_path)) == ["done.ome.zarr", "in.tif"]  # the old one is gone
    with pytest.raises(ValueError, match="same as INPUT"):
        restore_file(src, src, "lanczos", progress=False)
    with pytest.raises(ValueError, match=r"Cannot tell the output format from .*out\.png"):
        restore_file(src, str(tmp_path / "out.png"), "lanczos", progress=False)


def test_should_stream_decides_like_the_cli(tmp_path, tiff_in, monkeypatch):
    """Zarr on either side or --chunk/--scheduler stream; a TIFF streams when too big for RAM."""
    src, _ = tiff_in
    assert not stream.should_stream(src, "out.tif")
    assert stream.should_stream(src, "out.ome.zarr") and stream.should_stream("in.zarr", "out.tif")
    assert stream.should_stream(src, "out.tif", chunk=256)
    assert stream.should_stream(src, "out.tif", scheduler="threads")
    import napari_diffir.engine.device as device

    monkeypatch.setattr(device, "free_memory_bytes", lambda dev: 1000)
    assert stream.should_stream(src, "out.tif")


def test_cli_streams_zarr_and_explains_bad_input(tmp_path, tiff_in, capsys, monkeypatch):
    """`napari-diffir restore` with a Zarr output streams; bad input exits 2 with one line."""
    src, img = tiff_in
    out = str(tmp_path / "cli.ome.zarr")
    assert main(["restore", src, out, "-r", "lanczos", "--chunk", "48", "-q"]) == 0
    np.testing.assert_allclose(_read(out), restore(img, "lanczos", axes="ZYX", tile_size=None), atol=1e-2)

    def error(argv):
        assert main(argv) == 2
        return capsys.readouterr().err.strip()

    msg = error(["restore", str(tmp_path / "nope.zarr"), str(tmp_path / "o.ome.zarr"), "-r", "lanczos", "-q"])
    assert msg.startswith("napari-diffir restore: error: Input") and "does not exist (no such Zarr store)" in msg
    assert "\n" not in msg
    msg = error(["restore", src, str(tmp_path / "o.ome.zarr"), "-r", "lanczos", "--chunk", "0", "-q"])
    assert "chunk must be a positive integer, but got 0" in msg
    msg = error(["restore", src, str(tmp_path / "o.ome.zarr"), "-r", "lanczos", "--scheduler", "gpu-cluster", "-q"])
    assert "Unknown scheduler 'gpu-cluster'" in msg
    import napari_diffir.batch.executors as scheduler

    monkeypatch.setattr(scheduler, "CONNECT_TIMEOUT", 0.5)
    msg = error(["restore", src, str(tmp_path / "o.ome.zarr"), "-r", "lanczos", "--scheduler",
                 "tcp://127.0.0.1:9", "-q"])
    assert "Cannot reach the dask scheduler at tcp://127.0.0.1:9" in msg
    assert not os.path.exists(tmp_path / "o.ome.zarr.partial")  # nothing written before connecting
