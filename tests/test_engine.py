"""The engine: axes, dtypes, normalisation, tiling, progress, cancel, seeds and bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import napari_diffir
from napari_diffir import RestorationCancelled, restore
from napari_diffir.engine.axes import default_axes
from napari_diffir.noise import field_noise

from .restorers_for_tests import ConvNet, Identity, NoisySampler, OutOfMemoryAbove, WrongShape


def _stack(shape=(3, 70, 90), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(100, 4000, shape).astype(np.uint16)


def test_3d_uint16_stack_without_widget():
    img = _stack()
    before = img.copy()
    out = restore(img, ConvNet(), tile_size=None)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_array_equal(img, before)  # the caller's array is untouched
    out16 = restore(img, ConvNet(), tile_size=None, output_dtype="input")
    assert out16.dtype == np.uint16
    assert np.abs(out16.astype(float) - np.clip(np.rint(out), 0, 65535)).max() <= 1


def test_rgb_image_channel_last():
    rgb = np.random.default_rng(1).integers(0, 255, (40, 52, 3)).astype(np.uint8)
    assert default_axes(rgb.shape) == "YXC"
    out = restore(rgb, ConvNet(), tile_size=None, output_dtype="input")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # channels are restored independently: channel 1 alone gives the same result
    single = restore(rgb[..., 1], ConvNet(), tile_size=None, normalize="dtype")
    both = restore(rgb, ConvNet(), tile_size=None, normalize="dtype")
    np.testing.assert_allclose(both[..., 1], single, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64])
@pytest.mark.parametrize("normalize", ["percentile", "minmax", "dtype", "meanstd", "none"])
def test_identity_round_trips_every_dtype(dtype, normalize):
    if dtype == np.int32 and normalize == "dtype":
        pytest.skip("the full int32 range does not fit float32 precision; percentile mode is the default")
    rng = np.random.default_rng(2)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        img = rng.integers(max(info.min, -1000), min(info.max, 1000), (20, 30)).astype(dtype)
    else:
        img = rng.random((20, 30)).astype(dtype)
    out = restore(img, Identity(), normalize=normalize, output_dtype="input")
    assert out.dtype == img.dtype
    np.testing.assert_allclose(out.astype(np.float64), img.astype(np.float64), atol=1e-2 if dtype == np.float16 else 1e-3)


def test_axes_loop_over_t_and_z_and_keep_order():
    img = _stack((2, 3, 40, 36))
    out = restore(img, ConvNet(), axes="TZYX", tile_size=None)
    assert out.shape == img.shape
    # an X-first axes string transposes consistently
    swapped = restore(np.ascontiguousarray(img.transpose(0, 1, 3, 2)), ConvNet(), axes="TZXY", tile_size=None)
    np.testing.assert_allclose(swapped.transpose(0, 1, 3, 2), out, rtol=1e-4, atol=1e-2)


def test_singleton_and_channel_axes():
    img = _stack((1, 2, 32, 40))
    out = restore(img, ConvNet(), axes="ZCYX", tile_size=None)
    assert out.shape == img.shape


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_equals_untiled(scale):
    img = np.random.default_rng(3).random((150, 170)).astype(np.float32)
    net = ConvNet(scale=scale)
    whole = restore(img, net, tile_size=None, normalize="none")
    tiled = restore(img, net, tile_size=64, tile_overlap=16, normalize="none")
    assert whole.shape == (150 * scale, 170 * scale)
    diff = np.abs(whole - tiled)
    b = 4 * scale
    assert diff[b:-b, b:-b].max() < 1e-4
    assert diff.max() < 1e-3


def test_lanczos_scale_and_tiling():
    img = np.random.default_rng(4).random((90, 100)).astype(np.float32)
    whole = restore(img, "lanczos", tile_size=None, normalize="none", options={"scale": 4})
    tiled = restore(img, "lanczos", tile_size=40, tile_overlap=12, normalize="none", options={"scale": 4})
    assert whole.shape == (360, 400)
    assert np.abs(whole - tiled).max() < 1e-4


def test_padding_to_multiple_and_crop_back():
    img = np.random.default_rng(5).random((37, 51)).astype(np.float32)
    out = restore(img, ConvNet(), tile_size=None, normalize="none")  # multiple_of=4
    assert out.shape == img.shape


def test_progress_is_monotonic_and_complete():
    calls = []
    restore(_stack((2, 80, 80)), NoisySampler(), tile_size=48, tile_overlap=8, steps=3,
            progress=lambda d, t, m: calls.append((d, t, m)))
    dones = [c[0] for c in calls]
    assert dones == sorted(dones)
    assert calls[-1][0] == calls[-1][1] == 2 * 4
    assert any("step 2/3" in c[2] for c in calls) and any("plane 2/2" in c[2] for c in calls)


def test_cancel_stops_within_one_step_and_returns_nothing():
    stop = threading.Event()
    sampler = NoisySampler(on_step=lambda n: stop.set() if n == 3 else None)
    with pytest.raises(RestorationCancelled):
        restore(_stack((2, 80, 80)), sampler, tile_size=48, steps=10, cancel=stop)
    assert sampler.calls == 3  # the step that saw the cancel was the last one
    with pytest.raises(RestorationCancelled):
        restore(_stack((40, 40)), Identity(), cancel=lambda: True)


def test_seed_reproducible_and_seamless_tiles():
    img = np.random.default_rng(6).random((120, 120)).astype(np.float32)
    a = restore(img, NoisySampler(), seed=7, steps=2, tile_size=None, normalize="none")
    b = restore(img, NoisySampler(), seed=7, steps=2, tile_size=None, normalize="none")
    c = restore(img, NoisySampler(), seed=8, steps=2, tile_size=None, normalize="none")
    tiled = restore(img, NoisySampler(), seed=7, steps=2, tile_size=48, tile_overlap=8, normalize="none")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    np.testing.assert_allclose(tiled, a, atol=1e-6)


def test_field_noise_is_position_based_and_standard_normal():
    big = field_noise(3, 0, 2, 0, 0, 256, 256)
    part = field_noise(3, 0, 2, 100, 37, 50, 60)
    torch.testing.assert_close(big[:, 100:150, 37:97], part)
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02
    assert not torch.equal(field_noise(3, 1, 2, 0, 0, 8, 8), big[:, :8, :8])


def test_out_of_memory_halves_tile_then_explains():
    r = OutOfMemoryAbove(limit=64)
    out = restore(np.random.default_rng(0).random((200, 200)).astype(np.float32), r, tile_size=256)
    assert out.shape == (200, 200) and max(max(s) for s in r.sizes[-4:]) <= 64
    with pytest.raises(MemoryError, match="smaller tile_size.*bf16"):
        restore(np.random.default_rng(0).random((100, 100)).astype(np.float32), OutOfMemoryAbove(limit=1), tile_size=64)


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        (np.zeros((0, 10)), {}, "empty"),
        (np.array([[1.0, np.nan], [0, 1]] * 4), {}, "NaN or infinite"),
        (np.zeros((10, 10)), {"axes": "ZYX"}, "3 letters but the data has 2"),
        (np.zeros((4, 10, 10)), {"axes": "ZQX"}, "allowed letters"),
        (np.zeros((4, 10, 10)), {"axes": "ZYY"}, "repeats a letter"),
        (np.zeros((10, 10)), {"mask": np.zeros((5, 5))}, "mask has shape"),
        (np.zeros((10, 10)), {"precision": "fp8"}, "precision must be one of"),
        (np.zeros((10, 10)), {"tile_size": 8}, "tile_size must be an integer"),
        (np.zeros((10, 10)), {"steps": 0}, "steps must be a positive integer"),
        (np.zeros((10, 10)), {"steps": 5}, "has no sampling steps"),
        (np.zeros((10, 10), dtype=bool), {}, "numeric image"),
        (np.zeros((3, 3)), {}, "too small"),
    ],
)
def test_bad_input_is_named(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        restore(data, Identity(), **kwargs)


def test_unknown_restorer_and_wrong_output_shape():
    with pytest.raises(ValueError, match="Unknown restorer 'nope'"):
        restore(np.zeros((10, 10)), "nope")
    with pytest.raises(ValueError, match=r"returned \(1, 1, 16, 15\), but expected"):
        restore(np.random.default_rng(0).random((16, 16)), WrongShape())


def test_channel_mismatch_is_explained():
    class ThreeIn(Identity):
        info = Identity.info.replace(name="three", in_channels=3)

    with pytest.raises(ValueError, match="takes 3 channel\\(s\\) but the image has 2"):
        restore(np.zeros((2, 16, 16)), ThreeIn(), axes="CYX")
    gray = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    np.testing.assert_allclose(restore(gray, ThreeIn(), normalize="none"), gray, atol=1e-6)


def test_read_only_and_napari_like_inputs():
    img = _stack((30, 30))
    img.setflags(write=False)

    class Layer:  # what napari layers look like to the engine
        data = img

    np.testing.assert_array_equal(restore(Layer(), Identity(), output_dtype="input"), img)


def test_public_api_names():
    for name in ("restore", "list_restorers", "get_restorer", "Restorer", "RestorerInfo",
                 "RestorationCancelled", "hookspec", "hookimpl"):
        assert hasattr(napari_diffir, name)


def test_auto_tile_restores_a_diffir_plane_that_fits_in_one_tile(monkeypatch):
    """A DiffIR plane whose forward (in strips) fits the memory budget and at most four times
    the restorer's tile is restored untiled (its tiles would first need a statistics pass of the
    whole plane), in memory and as a dask array alike; a larger plane, or one the free memory
    cannot hold, is tiled."""
    import dask.array as da

    from napari_diffir.engine import device as device_module
    from napari_diffir.engine.plan import plan
    from napari_diffir.engine.settings import RestoreSettings
    from napari_diffir.restorers.diffir import DiffIRRestorer

    rng = np.random.default_rng(0)
    x = rng.random((400, 424), dtype=np.float32)
    in_memory = plan(x, "diffir-denoise")
    preferred = in_memory.info.tile_size
    assert preferred < 424 and in_memory.tile == 424
    assert plan(da.from_array(x, chunks=(200, 212)), "diffir-denoise").tile == 424
    info = in_memory.info
    tile_bytes = info.bytes_per_pixel * preferred**2
    side = int((4 * tile_bytes / info.plane_bytes_per_pixel) ** 0.5) // 8 * 8  # four tiles' memory
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: 64 * 2**30)
    assert plan(np.zeros((side, side), np.float32), "diffir-denoise").tile == side
    assert plan(np.zeros((side + 16, side + 16), np.float32), "diffir-denoise").tile == preferred
    assert plan(x, "diffir-denoise", RestoreSettings(tile_size=preferred)).tile == preferred
    assert plan(x, "tv").tile == plan(x, "tv").info.tile_size  # no plane statistics: its own tile

    room = 2 * (tile_bytes + 1000)  # twice the budget: the preferred tile fits, a 1000² plane in strips not
    assert info.plane_bytes_per_pixel * 1000**2 > tile_bytes + 1000
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: room)
    assert plan(np.zeros((1000, 1000), np.float32), "diffir-denoise").tile == preferred
    monkeypatch.undo()

    def no_statistics(*args, **kwargs):
        raise AssertionError("an untiled plane needs no statistics pass")

    monkeypatch.setattr(DiffIRRestorer, "prepare_plane", no_statistics)
    out = restore(x, "diffir-denoise", seed=1, normalize="none")
    torch.testing.assert_close(out, restore(x, "diffir-denoise", seed=1, normalize="none", tile_size=None))


def test_diffir_plane_statistics_count_in_the_progress_fraction():
    """A tiled DiffIR plane's statistics (most of a tiled run's time) move the progress
    fraction by their estimated cost, in tiles, before the first tile; a cancel during them
    stops the run."""
    rng = np.random.default_rng(0)
    x = rng.random((320, 336), dtype=np.float32)
    calls = []
    restore(x, "diffir-denoise", tile_size=192, seed=0, progress=lambda d, t, m: calls.append((d, t, m)))
    stats = [c for c in calls if "plane statistics, " in c[2]]
    first_tile = next(i for i, c in enumerate(calls) if "tile 1/" in c[2])
    assert stats[-1][2] == "plane statistics, 100%" and calls.index(stats[-1]) < first_tile
    tiles = 4  # 320 x 336 at tile 192
    total = calls[-1][1]
    assert total > 2 * tiles  # the statistics weigh more than the tiles (several forwards of the plane)
    assert stats[0][0] < 0.1 * total and stats[-1][0] == pytest.approx(total - tiles)
    assert len({c[0] for c in stats}) > 10  # it moves window by window
    dones = [c[0] for c in calls]
    assert dones == sorted(dones) and calls[-1][0] == total

    seen = []

    def cancel():
        return any("plane statistics, " in m for m in seen)

    with pytest.raises(RestorationCancelled):
        restore(x, "diffir-denoise", tile_size=192, seed=0, cancel=cancel,
                progress=lambda d, t, m: seen.append(m))
    assert not any("tile 1/" in m for m in seen)
