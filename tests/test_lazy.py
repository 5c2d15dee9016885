"""The dask path: the in-memory run's tiles as dask tasks, equal to the in-memory result at any chunking."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import torch

from napari_diffir import Restorer, RestorerInfo, restore
from napari_diffir.engine import lazy
from napari_diffir.engine.axes import Layout
from napari_diffir.engine.normalize import fit_normalizer

from .restorers_for_tests import ConvNet, NoisySampler


def _stack(shape=(3, 70, 90), seed=0):
    return np.random.default_rng(seed).integers(100, 4000, shape).astype(np.uint16)


def _close(a, b, ref_range=4000.0):
    """Equal up to float32 rounding of values of ``ref_range`` magnitude."""
    np.testing.assert_allclose(a, b, rtol=0, atol=ref_range * 2e-6)


class MaskFill(Restorer):
    """Deterministic inpainting stand-in: masked pixels become the mean of a 3x3 box."""

    info = RestorerInfo(name="test-maskfill", display_name="mask fill", task="inpaint", in_channels=1,
                        needs_mask=True, tile_overlap=4)

    def restore_tile(self, x, ctx):
        box = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.where(ctx.mask > 0, box, x)


def test_result_is_lazy_and_chunks_scale_with_the_restorer():
    """A dask input gives a dask output whose Y/X chunks are the input's times the scale."""
    x = da.from_array(_stack((2, 64, 96)), chunks=(1, 32, 48))
    out = restore(x, "lanczos", axes="ZYX")
    assert isinstance(out, da.Array) and out.dtype == np.float32
    assert out.shape == (2, 128, 192)
    assert out.chunks == ((1, 1), (64, 64), (96, 96))
    assert restore(x, "lanczos", axes="ZYX", output_dtype="input").dtype == np.uint16


@pytest.mark.parametrize("chunks", [(1, 40, 40), (2, 48, 32), (1, 33, 90), (3, 70, 90)])
def test_lanczos_sr_blocks_equal_the_whole_image(chunks):
    """Any chunking gives exactly the untiled in-memory result (one tile per plane here)."""
    img = _stack((3, 101, 93))
    ref = restore(img, "lanczos", axes="ZYX", tile_size=None)
    out = restore(da.from_array(img, chunks=chunks), "lanczos", axes="ZYX").compute(scheduler="sync")
    assert out.shape == ref.shape
    _close(out, ref)


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("chunks", [(1, 40, 40), (2, 30, 50)])
def test_conv_net_blocks_equal_in_memory(scale, chunks):
    """A local conv net (size multiple 4; chunks realigned to it) matches in-memory runs."""
    img = _stack((2, 101, 93))
    net = ConvNet(scale=scale)
    ref = restore(img, net, axes="ZYX", tile_size=None)
    out = restore(da.from_array(img, chunks=chunks), net, axes="ZYX").compute(scheduler="sync")
    _close(out, ref)
    tiled = restore(img, net, axes="ZYX", tile_size=64)  # the in-memory tiled path agrees too
    _close(out, tiled)


def test_stochastic_blocks_cut_the_same_noise_field_and_seed_each_plane():
    """Seeded noise depends on absolute position and global plane, not on the block."""
    img = _stack((3, 70, 90))
    ref = restore(img, NoisySampler(), axes="ZYX", tile_size=None, seed=7)
    out = restore(da.from_array(img, chunks=(2, 30, 40)), NoisySampler(), axes="ZYX", seed=7).compute()
    np.testing.assert_array_equal(out, ref)
    other = restore(da.from_array(img, chunks=(2, 30, 40)), NoisySampler(), axes="ZYX", seed=8).compute()
    assert not np.array_equal(other, ref)


def test_unseeded_graph_draws_one_seed_for_all_blocks():
    """Without a seed the graph still uses one seed: computing it twice gives the same result."""
    x = da.from_array(_stack((2, 60, 60)), chunks=(1, 30, 30))
    out = restore(x, NoisySampler(), axes="ZYX")
    np.testing.assert_array_equal(out.compute(), out.compute())


@pytest.mark.parametrize("shape, axes, chunks", [
    ((3, 1500, 1000), "ZYX", (1, 512, 300)),        # 4.5 M values: the strided sample
    ((2, 40, 1100, 50), "CZYX", (1, 7, 300, 50)),   # two channels, C split across chunks
    ((64, 80), "YX", (20, 30)),
])
def test_normaliser_is_fitted_on_the_same_sample_as_in_memory(shape, axes, chunks):
    """Percentiles from the chunk-wise sample equal those of fit_normalizer on the array."""
    img = np.random.default_rng(3).gamma(2.0, 300.0, shape).astype(np.float32)
    layout = Layout(axes, shape)
    x = da.from_array(img, chunks=chunks)
    x = x.rechunk(lazy.plan_chunks(x.chunks, layout))
    for mode in ("percentile", "minmax"):
        got = lazy.fit_normalizer_dask(x, layout, mode, (1.0, 99.8))
        want = fit_normalizer(layout.to_work(img), mode, (1.0, 99.8))
        np.testing.assert_array_equal(got.lo, want.lo)
        np.testing.assert_array_equal(got.hi, want.hi)
    # mean/std: exact moments of every chunk, combined; equal to numpy's over the whole channel
    got = lazy.fit_normalizer_dask(x, layout, "meanstd", (1.0, 99.8))
    want = fit_normalizer(layout.to_work(img), "meanstd")
    work = layout.to_work(img).astype(np.float64)
    mean, std = work.mean(axis=(0, 2, 3)), work.std(axis=(0, 2, 3))
    for norm in (got, want):
        np.testing.assert_allclose(norm.lo, mean, rtol=1e-12)
        np.testing.assert_allclose(norm.hi - norm.lo, std + 1e-6, rtol=1e-10)


def test_channels_are_merged_and_restored_like_in_memory():
    """A C axis split over chunks is merged; a 1-channel model runs on each channel."""
    img = _stack((2, 3, 50, 60))
    ref = restore(img, ConvNet(), axes="ZCYX", tile_size=None)
    out = restore(da.from_array(img, chunks=(1, 1, 25, 30)), ConvNet(), axes="ZCYX")
    assert out.chunks[1] == (3,)
    _close(out.compute(), ref)


def test_mask_follows_the_blocks():
    """An inpainting mask (Y, X) is cut into the same tiles as the image."""
    img = _stack((2, 60, 70))
    mask = np.zeros((60, 70), bool)
    mask[10:50:7, 5:65:3] = True
    ref = restore(img, MaskFill(), axes="ZYX", mask=mask, tile_size=None)
    out = restore(da.from_array(img, chunks=(1, 24, 24)), MaskFill(), axes="ZYX", mask=mask).compute()
    _close(out, ref)
    with pytest.raises(ValueError, match="needs a mask"):
        restore(da.from_array(img, chunks=(1, 24, 24)), MaskFill(), axes="ZYX")
    with pytest.raises(ValueError, match=r"mask has shape \(5, 5\)"):
        restore(da.from_array(img, chunks=(1, 24, 24)), MaskFill(), axes="ZYX", mask=np.ones((5, 5)))


def test_model_is_built_once_per_process_and_each_task_holds_one_tile():
    """A named restorer is rebuilt from its spec once per process; each task reads one tile."""
    lazy._cache.clear()
    lazy.reset_block_stats()
    x = da.from_array(_stack((2, 80, 80)), chunks=(1, 20, 20))
    out = restore(x, "lanczos", axes="ZYX", options={"scale": 3}, tile_size=32)
    out.compute(scheduler="threads")
    stats = lazy.block_stats()
    assert stats["blocks"] == 2 * 3 * 3  # tiles at 0, 24, 48 (overlap 8) on each axis, per plane
    assert stats["models_loaded"] == 1
    assert stats["max_block_shape"] == (1, 32, 32)
    assert len(lazy._cache) == 1


def test_any_chunking_gives_the_tiled_in_memory_result():
    """Chunks do not decide the tiles: tiny, uneven chunks equal the in-memory tiled run."""
    img = _stack((1, 100, 100))
    ref = restore(img, ConvNet(), axes="ZYX", tile_size=48)
    for chunks in [(1, 6, 50), (1, 48, 48), (1, 100, 7)]:
        out = restore(da.from_array(img, chunks=chunks), ConvNet(), axes="ZYX", tile_size=48)
        assert out.chunks[1:] == da.from_array(img, chunks=chunks).chunks[1:]
        _close(out.compute(), ref)


def test_bad_input_is_explained_before_anything_runs():
    """Wrong dtype, axes, options and NaNs raise ValueError naming the problem."""
    x = da.from_array(_stack((2, 40, 40)), chunks=(1, 20, 20))
    with pytest.raises(ValueError, match="axes 'YX' has 2 letters but the data has 3"):
        restore(x, "lanczos", axes="YX")
    with pytest.raises(ValueError, match="has no option 'strength'"):
        restore(x, "lanczos", options={"strength": 1})
    with pytest.raises(ValueError, match="Expected a numeric image"):
        restore(da.zeros((20, 20), dtype=bool, chunks=10), "lanczos")
    with pytest.raises(ValueError, match="precision must be one of"):
        restore(x, "lanczos", precision="int8")
    nan = da.from_array(np.full((30, 30), np.nan, np.float32), chunks=15)
    with pytest.raises(ValueError, match="NaN or infinite"):
        restore(nan, "lanczos")


def test_diffir_checkpoint_runs_per_block_and_agrees_across_schedulers(tmp_path):
    """A (tiny, random) DiffIR checkpoint: one block equals in-memory; threads equal sync."""
    from .test_restorer_diffir import tiny

    path = tmp_path / "diffir.pth"
    sd = tiny(task="deblur").state_dict()
    torch.save({"params": sd, "params_ema": sd}, path)
    img = _stack((2, 48, 56))
    ref = restore(img, "diffir", weights=str(path), axes="ZYX", seed=1, tile_size=None)
    whole = restore(da.from_array(img, chunks=(1, 48, 56)), "diffir", weights=str(path), axes="ZYX",
                    seed=1, tile_size=None).compute()
    _close(whole, ref)
    blocks = restore(da.from_array(img, chunks=(1, 32, 32)), "diffir", weights=str(path), axes="ZYX", seed=1)
    with dask.config.set(scheduler="threads"):
        a = blocks.compute()
    np.testing.assert_array_equal(a, blocks.compute(scheduler="sync"))
    assert a.shape == img.shape and np.isfinite(a).all()


class Overlapping(Restorer):
    """ConvNet-like output (x + 1), recording how many of its forwards run at the same time."""

    info = RestorerInfo(name="test-overlap", display_name="overlap", task="denoise", in_channels=1,
                        bytes_per_pixel=1000)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        import threading

        self.lock, self.running, self.peak = threading.Lock(), 0, 0

    def restore_tile(self, x, ctx):
        import time

        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.15)
        with self.lock:
            self.running -= 1
        return x + 1


@pytest.mark.parametrize(("planes_that_fit", "most_at_once"), [(1.5, 1), (64, 4)])
def test_concurrent_tiles_of_a_threaded_scheduler_fit_the_memory_together(monkeypatch, planes_that_fit,
                                                                          most_at_once):
    """Whole planes as one tile each, four threads: they run together only as far as their
    forwards' memory fits (half the free memory), and the result is the in-memory one."""
    from napari_diffir.engine import device

    plane_bytes = 96 * 96 * 1000
    monkeypatch.setattr(device, "free_memory_bytes", lambda dev: 2 * planes_that_fit * plane_bytes)
    x = _stack((4, 96, 96))
    r = Overlapping()
    y = restore(da.from_array(x, chunks=(1, 96, 96)), r, tile_size=None, normalize="none")
    with dask.config.set(scheduler="threads", num_workers=4):
        out = y.compute()
    assert r.peak == most_at_once
    np.testing.assert_array_equal(out, restore(x, Overlapping(), tile_size=None, normalize="none"))
