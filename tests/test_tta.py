"""Test-time augmentation (``tta=True``): the mean of the eight flipped and turned restorations,
turned back; the same through every path (tiles, dask, streaming, CLI), with progress and cancel."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_diffir import RestorationCancelled, restore
from napari_diffir.batch import restore_file
from napari_diffir.cli import main
from napari_diffir.engine import dihedral
from napari_diffir.engine.run import run

from .restorers_for_tests import NoisySampler
from .test_chunk_independence import _cases, _image


def _by_hand(img: np.ndarray, restorer, **kw) -> np.ndarray:
    """What tta means: each transformed image restored, turned back, averaged."""
    outs = [dihedral.inverse(restore(np.ascontiguousarray(dihedral.forward(img, k)), restorer, **kw), k)
            for k in range(dihedral.COUNT)]
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("case", ["diffir-deblur", "diffir-sr2", "srdiff", "lanczos", "tv"])
def test_tta_is_the_mean_of_the_eight_restorations_turned_back(tmp_path, case):
    """On a plane that is not square (quarter turns swap its sides), SR included. Lanczos is
    separable and symmetric, so its eight views agree and tta changes nothing; the others differ."""
    name, kw = _cases(tmp_path)[case]
    kw = dict(kw, axes="YX", tile_size=None)
    img = _image((1, 48, 64))[0]
    out = restore(img, name, tta=True, **kw)
    ref = _by_hand(img, name, **kw)
    plain = restore(img, name, **kw)
    assert out.shape == ref.shape == plain.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)
    changed = np.abs(out - plain).max()
    assert changed < 1e-5 if case == "lanczos" else changed > 1e-4


def test_each_tile_sees_its_place_in_the_turned_plane():
    """A position-seeded noise field: tiled tta equals untiled tta and the by-hand mean, so every
    tile got its origin and the plane's size in each transformed view."""
    img = np.random.default_rng(6).random((120, 88)).astype(np.float32)
    kw = dict(seed=7, steps=2, normalize="none")
    whole = restore(img, NoisySampler(), tta=True, tile_size=None, **kw)
    tiled = restore(img, NoisySampler(), tta=True, tile_size=48, tile_overlap=8, **kw)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole, _by_hand(img, NoisySampler(), tile_size=None, **kw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["diffir-deblur", "srdiff", "nlmeans"])
def test_tta_through_dask_equals_in_memory(tmp_path, case):
    """Tiled, with DiffIR's plane statistics per view, at uneven chunks: 1e-4."""
    name, kw = _cases(tmp_path)[case]
    img = _image()
    ref = restore(img, name, tta=True, **kw)
    out = restore(da.from_array(img, chunks=(1, 40, 17)), name, tta=True, **kw)
    np.testing.assert_allclose(out.compute(scheduler="threads"), ref, rtol=0, atol=1e-4)


def test_tta_streamed_equals_in_memory_and_is_recorded(tmp_path):
    img = _image()
    src = str(tmp_path / "in.tif")
    tifffile.imwrite(src, img)
    name, kw = _cases(tmp_path)["diffir-deblur"]
    out = str(tmp_path / "out.ome.zarr")
    restore_file(src, out, name, chunk=24, progress=False, tta=True, **kw)
    np.testing.assert_allclose(zarr.open_array(out + "/0", mode="r")[:], restore(img, name, tta=True, **kw),
                               rtol=0, atol=1e-4)


def test_cli_tta_flag_gives_the_api_result(tmp_path):
    img = _image((1, 48, 64))[0]
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, img)
    assert main(["restore", str(src), str(dst), "-r", "tv", "--tta"]) == 0
    np.testing.assert_allclose(tifffile.imread(dst), restore(img, "tv", tta=True), rtol=0, atol=1e-6)


def test_provenance_records_tta_and_a_non_bool_is_refused():
    from napari_diffir.engine.plan import plan
    from napari_diffir.engine.settings import RestoreSettings

    img = _image((1, 32, 32))[0]
    assert run(plan(img, "tv", RestoreSettings(tta=True))).provenance()["tta"] is True
    assert run(plan(img, "tv", RestoreSettings())).provenance()["tta"] is False
    with pytest.raises(ValueError, match="tta must be True or False, but got 'yes'"):
        restore(img, "tv", tta="yes")


def test_progress_counts_the_views_and_cancel_stops_in_one():
    img = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    calls = []
    restore(img, NoisySampler(), steps=2, tile_size=None, tta=True, progress=lambda d, t, m: calls.append((d, t, m)))
    dones = [c[0] for c in calls]
    assert dones == sorted(dones) and calls[-1][0] == calls[-1][1] == 1
    assert any("view 8/8, step 2/2" in c[2] for c in calls)
    stop = threading.Event()
    sampler = NoisySampler(on_step=lambda n: stop.set() if n == 5 else None)
    with pytest.raises(RestorationCancelled):
        restore(img, sampler, steps=2, tile_size=None, tta=True, cancel=stop)
    assert sampler.calls == 5  # views 1-2 and the first step of view 3; the step that saw the cancel was the last
