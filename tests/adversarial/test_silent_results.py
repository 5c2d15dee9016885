"""Silent wrong results become errors that name the problem, or correct results: non-finite
values, precision lost in normalisation, arguments that do not apply, shapes that cannot be."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import napari_diffir as nd
from napari_diffir import Option, Restorer, RestorerInfo
from napari_diffir.checkpoints import CheckpointError, load_checkpoint
from napari_diffir.engine.check import check
from napari_diffir.engine.settings import RestoreSettings

from ..restorers_for_tests import Identity
from .conftest import one_line_error


class _NaNAt(Restorer):
    """Returns its input with one NaN (a single broken weight does this to a real model)."""

    info = RestorerInfo(name="nan-at", display_name="n", task="denoise", in_channels=None)

    def __init__(self, value=float("nan"), **options):
        super().__init__(**options)
        self.value = value

    def restore_tile(self, x, ctx):
        y = x.clone()
        y[..., 3, 5] = self.value
        return y


class _ThreeOut(Restorer):
    """Declares three output channels (e.g. gray to RGB); counts its calls."""

    info = RestorerInfo(name="three-out", display_name="t", task="colorize", in_channels=1, out_channels=3)
    calls = 0

    def restore_tile(self, x, ctx):
        type(self).calls += 1
        return x.repeat(1, 3, 1, 1)


def _img(shape=(40, 48)):
    return np.random.default_rng(2).integers(100, 4000, shape).astype(np.uint16)


# ------------------------------------------------------------------ non-finite values

@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
def test_a_non_finite_option_is_refused_on_the_cli(tmp_path, tif, cli, text):
    code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "tv", "-o", f"strength={text}", "-q")
    assert code == 2 and "'strength' must be a finite number" in one_line_error(err)
    assert not (tmp_path / "o.tif").exists()


def test_a_non_finite_option_is_refused_by_the_api():
    with pytest.raises(ValueError, match="'strength' must be a finite number"):
        nd.get_restorer("nlmeans", strength=float("nan"))


def test_a_restorer_output_with_one_nan_is_an_error_not_zeros():
    with pytest.raises(ValueError, match=r"'nan-at' returned 1 NaN or infinite values for tile 1"):
        nd.restore(_img(), _NaNAt(), output_dtype="uint16")


def test_an_infinite_restorer_output_is_an_error_in_a_dask_block():
    x = da.from_array(_img((40, 96)), chunks=(40, 48))
    with pytest.raises(ValueError, match="returned 1 NaN or infinite values"):
        nd.restore(x, _NaNAt(float("inf")), tile_overlap=0).compute()


def test_tv_on_a_constant_image_keeps_the_constant():
    img = np.full((40, 40), 1234, np.uint16)
    out = nd.restore(img, "tv", output_dtype="input")
    assert out.dtype == np.uint16 and np.array_equal(out, img)


@pytest.mark.parametrize("name", ["tv", "nlmeans"])
def test_baselines_on_an_all_zero_image_return_zeros(name):
    out = nd.restore(np.zeros((40, 40), np.float32), name)
    assert np.isfinite(out).all() and not out.any()


def test_tv_on_a_flat_region_next_to_detail_stays_finite():
    img = _img((64, 64)).astype(np.float32)
    img[:, :40] = 500.0  # a flat region larger than a tile's halo
    out = nd.restore(img, "tv", tile_size=32, tile_overlap=8)
    assert np.isfinite(out).all() and np.allclose(out[:, :20], 500.0, atol=1.0)


def _tiny_srdiff_state():
    from napari_diffir.models.srdiff import SRDiff

    torch.manual_seed(0)
    model = SRDiff(scale=4, in_channels=1, hidden_size=8, dim_mults=(1, 2), rrdb_num_block=2,
                   rrdb_num_feat=4, timesteps=20)
    return {k: v.contiguous().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_named(tmp_path, bad):
    sd = _tiny_srdiff_state()
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[key].view(-1)[0] = bad
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=rf"NaN or infinite weights in 1 tensor\(s\) \({key}\)"):
        load_checkpoint(path)


def test_all_nan_weights_on_the_cli_info(tmp_path, cli):
    sd = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in _tiny_srdiff_state().items()}
    path = tmp_path / "nan.pth"
    torch.save(sd, path)
    code, err = cli("info", path)
    assert code == 2 and "NaN or infinite weights" in one_line_error(err) and "same tensor" not in err


# ------------------------------------------------------------------ normalisation precision

def test_int64_with_a_large_offset_is_refused_in_float32_and_exact_as_input():
    img = (2**40 + np.arange(1000, dtype=np.int64)).reshape(25, 40)
    with pytest.raises(ValueError, match="float32 output cannot resolve this image"):
        nd.restore(img, Identity(), tile_size=None)
    out = nd.restore(img, Identity(), tile_size=None, output_dtype="input")
    assert out.dtype == np.int64 and np.array_equal(out, img)


def test_float64_with_a_large_offset_keeps_every_value_in_float64():
    img = (1e9 + np.arange(1000.0)).reshape(25, 40)
    with pytest.raises(ValueError, match="float32 steps by 64"):
        nd.restore(img, Identity(), tile_size=None)
    out = nd.restore(img, Identity(), tile_size=None, output_dtype="float64")
    assert out.dtype == np.float64 and len(np.unique(out)) == 1000 and np.abs(out - img).max() < 1e-3


def test_float64_beyond_float32_range_is_refused_and_exact_in_float64():
    img = 1e300 * np.random.default_rng(0).random((32, 32))
    with pytest.raises(ValueError, match=r"exceed the range of float32 output"):
        nd.restore(img, Identity())
    out = nd.restore(img, Identity(), output_dtype="input")
    assert np.isfinite(out).all() and np.abs(out - img).max() < 1e-6 * 1e300


def test_a_range_wider_than_float64_is_refused():
    img = np.full((32, 32), -1.7e308)
    img[16:] = 1.7e308
    with pytest.raises(ValueError, match="intensity range is not finite"):
        nd.restore(img, Identity(), normalize="minmax", output_dtype="float64")


def test_int64_near_its_maximum_does_not_wrap_around():
    img = np.int64(2**63 - 1) - (np.arange(1024, dtype=np.int64) * 2**50).reshape(32, 32)
    out = nd.restore(img, Identity(), normalize="minmax", output_dtype="input")
    assert (out > 0).all() and out.max() > 9.22e18  # clipped below 2**63, not wrapped to -2**63


def test_the_lazy_path_refuses_an_unrepresentable_range_before_any_block():
    img = da.from_array((2**40 + np.arange(64 * 64, dtype=np.int64)).reshape(64, 64), chunks=32)
    with pytest.raises(ValueError, match="cannot resolve this image"):
        nd.restore(img, Identity(), tile_overlap=0)


# ------------------------------------------------------------------ arguments that do not apply

@pytest.mark.parametrize("seed, words", [(1.5, "1.5"), (True, "True"), (-1, "-1"), (2**40, str(2**40))])
def test_a_seed_that_is_no_seed_is_refused(seed, words):
    with pytest.raises(ValueError, match=rf"seed must be a whole number in 0\.\.2147483647 or None, but got {words}"):
        nd.restore(_img(), Identity(), seed=seed)


def test_a_bool_option_refuses_words_that_are_no_bool():
    opt = Option("exact_lr_up", bool, False)
    assert opt.validate("off") is False and opt.validate("Yes") is True
    with pytest.raises(ValueError, match="'exact_lr_up' expects bool, but got 'maybe'"):
        opt.validate("maybe")
    with pytest.raises(ValueError, match="expects bool, but got 2"):
        opt.validate(2)


def test_srdiff_refuses_exact_lr_up_maybe_before_loading_anything():
    with pytest.raises(ValueError, match="'exact_lr_up' expects bool, but got 'maybe'"):
        nd.get_restorer("srdiff", weights="/nonexistent.safetensors", exact_lr_up="maybe")


@pytest.mark.parametrize("value", [2.5, True, "3.5"])
def test_an_int_option_refuses_a_value_that_is_no_int(value):
    with pytest.raises(ValueError, match="expects int"):
        Option("steps", int, 10).validate(value)


@pytest.mark.parametrize("dtype", [bool, "bool", "complex64", "junk", object, "U8"])
def test_an_output_dtype_that_is_no_real_number_is_refused(dtype):
    with pytest.raises(ValueError, match="output_dtype must be None, 'input' or a real numeric numpy dtype"):
        nd.restore(_img(), Identity(), output_dtype=dtype)


def test_weights_for_a_restorer_that_takes_none_are_refused(tmp_path, tif, cli):
    with pytest.raises(ValueError, match="Restorer 'tv' takes no weights"):
        nd.restore(_img(), "tv", weights="model.pth")
    code, err = cli("restore", tif, tmp_path / "o.tif", "-r", "lanczos", "--weights", "x.pth", "-q")
    assert code == 2 and "'lanczos' takes no weights" in one_line_error(err)


def test_a_mask_for_a_restorer_that_takes_none_is_refused():
    img = _img()
    with pytest.raises(ValueError, match="Restorer 'tv' takes no mask; leave mask unset"):
        nd.restore(img, "tv", mask=np.ones(img.shape, bool))


@pytest.mark.parametrize("p", [(1,), (50, 10), (1, 2, 3), (float("nan"), 99), (-1, 99), "low"])
def test_percentiles_that_are_no_range_are_refused(p):
    with pytest.raises(ValueError, match="percentiles must be two numbers"):
        nd.restore(_img(), Identity(), percentiles=p)


def test_an_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="normalize must be one of"):
        nd.restore(_img(), Identity(), normalize="zscore")


def test_rgb_true_on_a_2d_image_is_refused():
    with pytest.raises(ValueError, match=r"rgb=True needs a last axis of 3 or 4 colours.*shape \(40, 48\)"):
        nd.restore(_img(), Identity(), rgb=True)
    with pytest.raises(ValueError, match="rgb must be True, False or None, but got 'yes'"):
        nd.restore(_img(), Identity(), rgb="yes")


@pytest.mark.parametrize("device", ["meta", "xla", "cuda:x", 3])
def test_a_device_that_cannot_run_is_refused(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        nd.restore(_img(), Identity(), device=device)


def test_three_declared_output_channels_without_a_c_axis_fail_before_the_run():
    _ThreeOut.calls = 0
    with pytest.raises(ValueError, match="returns 3 channels, but the image .* has no C axis"):
        nd.restore(_img(), _ThreeOut())
    assert _ThreeOut.calls == 0
    out = nd.restore(_img()[None], _ThreeOut(), axes="CYX")
    assert out.shape == (3, 40, 48)


def test_check_names_the_field_for_the_widget():
    info = _ThreeOut.info
    problems = check(info, (40, 48), np.uint16, RestoreSettings(seed=1.5, device="meta", percentiles=(1,)))
    assert {p.field for p in problems} >= {"seed", "device", "percentiles", "restorer"}
