"""Lazy readers and writers: TIFF (memory-mapped and page-wise), OME-Zarr 0.4/0.5, plain Zarr."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import tifffile
import zarr

from napari_diffir.batch.manifest import Manifest, atomic_write_text, differences
from napari_diffir.io import is_zarr_path, open_image
from napari_diffir.io.omezarr import create_ome_zarr, ngff_order, ngff_unit
from napari_diffir.io.tiff import LazyTiff, write_tiff_from_zarr


def _stack(shape=(3, 50, 60)):
    return np.random.default_rng(0).integers(0, 4000, shape).astype(np.uint16)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_reads_lazily_with_axes_and_pixel_size(tmp_path, compression):
    """Uncompressed TIFFs are memory-mapped, compressed ones read page-wise; both are exact."""
    img = _stack((2, 3, 50, 60))
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, img, imagej=compression is None, compression=compression, photometric="minisblack",
                     metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"}, resolution=(2.0, 2.0))
    src = open_image(str(path))
    assert src.axes == "ZCYX" and src.kind == "tiff"
    assert type(src.data).__module__.startswith("dask")
    assert src.data.chunks[-2:] == ((50,), (60,))  # one page per chunk
    np.testing.assert_array_equal(src.data.compute(), img)
    np.testing.assert_array_equal(src.data[1, 2, 10:20, 5:9].compute(), img[1, 2, 10:20, 5:9])
    assert src.pixel_size["X"] == pytest.approx(0.5) and src.pixel_size["Y"] == pytest.approx(0.5)
    lazy = LazyTiff(str(path))
    assert lazy.memmappable == (compression is None)
    blob = pickle.dumps(lazy)
    assert len(blob) < 2000  # the path travels to workers, not the pixels
    np.testing.assert_array_equal(pickle.loads(blob)[0, 1], img[0, 1])


def test_imagej_z_spacing_and_override_axes(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, _stack(), imagej=True, metadata={"axes": "ZYX", "spacing": 2.5, "unit": "um"})
    src = open_image(str(path))
    assert src.axes == "ZYX" and src.pixel_size["Z"] == 2.5
    assert open_image(str(path), axes="tyx").axes == "TYX"
    with pytest.raises(ValueError, match="has 2 letters but the data has 3"):
        open_image(str(path), axes="YX")


def test_ome_zarr_round_trip_keeps_axes_scale_translation_and_units(tmp_path):
    """What we write (NGFF 0.4) is what we read back, in NGFF axis order."""
    path = str(tmp_path / "img.ome.zarr")
    out_axes, perm = ngff_order("ZCYX")
    assert (out_axes, perm) == ("CZYX", [1, 0, 2, 3])
    arr = create_ome_zarr(path, (2, 3, 40, 50), np.float32, (1, 1, 20, 25), out_axes,
                          {"Z": 2.0, "Y": 0.25, "X": 0.25}, {"Z": "µm", "Y": "um", "X": "micron"},
                          {"Y": -0.125, "X": -0.125}, attrs={"napari_diffir": {"restorer": "x"}})
    data = np.random.default_rng(1).random((2, 3, 40, 50)).astype(np.float32)
    arr[:] = data
    src = open_image(path)
    assert src.axes == "CZYX" and is_zarr_path(path)
    assert src.pixel_size == {"Z": 2.0, "Y": 0.25, "X": 0.25}
    assert src.units == {"Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
    assert src.origin == {"Y": -0.125, "X": -0.125}
    assert src.data.chunks[-1] == (25, 25)
    np.testing.assert_array_equal(src.data.compute(), data)
    attrs = json.load(open(os.path.join(path, ".zattrs")))
    assert attrs["multiscales"][0]["version"] == "0.4"
    assert [a["type"] for a in attrs["multiscales"][0]["axes"]] == ["channel", "space", "space", "space"]
    assert ngff_unit("furlong") is None


def test_ome_zarr_from_ome_zarr_py_is_read(tmp_path):
    """Files written by ome-zarr-py (NGFF 0.5: Zarr v3, 'ome' attributes) open with axes and scale."""
    writer = pytest.importorskip("ome_zarr.writer")
    img = _stack((2, 64, 64))
    path = str(tmp_path / "ext.ome.zarr")
    root = zarr.open_group(path, mode="w")
    writer.write_image(img, root, axes="zyx", scale_factors=(2,), scale={"z": 3.0, "y": 0.5, "x": 0.5})
    src = open_image(path)
    assert src.axes == "ZYX"
    assert src.pixel_size == pytest.approx({"Z": 3.0, "Y": 0.5, "X": 0.5})
    np.testing.assert_array_equal(src.data.compute(), img)  # level 0, full resolution


def test_our_output_passes_ome_zarr_py_reader(tmp_path):
    """ome-zarr-py (what napari-ome-zarr uses) recognises our output as an image."""
    pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path = str(tmp_path / "ours.ome.zarr")
    create_ome_zarr(path, (2, 40, 50), np.uint16, (1, 40, 50), "ZYX", {"Y": 0.5, "X": 0.5}, {}, {})[:] = 7
    nodes = list(Reader(parse_url(path))())
    assert nodes and nodes[0].metadata["axes"][0]["name"] == "z"
    assert np.asarray(nodes[0].data[0]).max() == 7


def test_plain_zarr_array_and_bad_zarr_paths(tmp_path):
    """A bare array opens with xarray dims if present; missing or non-image stores are explained."""
    img = _stack((2, 30, 40))
    path = str(tmp_path / "plain.zarr")
    z = zarr.create_array(path, shape=img.shape, chunks=(1, 15, 20), dtype=img.dtype, zarr_format=2)
    z[:] = img
    z.attrs["_ARRAY_DIMENSIONS"] = ["t", "y", "x"]
    src = open_image(path)
    assert src.axes == "TYX" and src.data.chunks == ((1, 1), (15, 15), (20, 20))
    np.testing.assert_array_equal(src.data.compute(), img)
    with pytest.raises(FileNotFoundError, match=r"'.*missing.zarr' does not exist \(no such Zarr store\)"):
        open_image(str(tmp_path / "missing.zarr"))
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("raw", shape=(4, 4), dtype="u1")
    with pytest.raises(ValueError, match=r"no OME-Zarr 'multiscales' metadata \(it holds arrays \['raw'\]"):
        open_image(str(tmp_path / "group.zarr"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="is a folder but not a Zarr store"):
        open_image(str(tmp_path / "folder"))


def test_tiff_writer_streams_bands_from_zarr(tmp_path):
    """A Zarr array becomes a tiled OME-TIFF with axes and physical sizes, read back exactly."""
    data = np.random.default_rng(2).random((2, 300, 520)).astype(np.float32)
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, chunks=(1, 100, 100), dtype=data.dtype)
    z[:] = data
    out = str(tmp_path / "out.ome.tif")
    write_tiff_from_zarr(out, z, "ZYX", {"Z": 1.5, "Y": 0.2, "X": 0.2}, {"Z": "µm", "Y": "µm", "X": "µm"},
                         description="{}")
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "ZYX" and tif.pages.first.is_tiled
        np.testing.assert_array_equal(tif.series[0].asarray(), data)
        assert 'PhysicalSizeX="0.2"' in tif.ome_metadata and 'PhysicalSizeZ="1.5"' in tif.ome_metadata


def test_manifest_is_atomic_and_distrusts_damage(tmp_path):
    """Saved bitmaps round-trip; a truncated or foreign manifest loads as None (trust nothing)."""
    path = str(tmp_path / "m.json")
    m = Manifest(path, (2, 3, 5), {"restorer": "a"}, {"seed": 4})
    m.mark((1, 2, 4))
    m.mark((0, 0, 0))
    back = Manifest.load(path)
    assert back.finished == 2 and back.is_done((1, 2, 4)) and not back.is_done((1, 2, 3))
    assert back.state == {"seed": 4} and back.signature == {"restorer": "a"}
    assert sorted(os.listdir(tmp_path)) == ["m.json"]  # no temporary files left behind
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    assert Manifest.load(path) is None
    atomic_write_text(path, json.dumps({"format": 99}))
    assert Manifest.load(path) is None
    assert Manifest.load(str(tmp_path / "none.json")) is None
    assert differences({"a": 1, "b": (1, 2)}, {"a": 2, "b": [1, 2]}) == ["a: 1 -> 2"]
