"""The widget's headless job runner: progress generator, ETA, cancel, dask input, error messages."""

from __future__ import annotations

import threading
import time

import dask.array as da
import numpy as np
import pytest

import napari_diffir as nd
from napari_diffir import RestorationCancelled
from napari_diffir.napari._worker import (
    Job,
    Progress,
    format_seconds,
    friendly_error,
    iter_restoration,
    run_restoration,
)


def _drain(gen):
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def test_progress_eta_and_text():
    p = Progress(done=3, total=12, message="tile 3/12", elapsed=6.0)
    assert p.fraction == pytest.approx(0.25)
    assert p.eta == pytest.approx(18.0)
    assert p.text() == "tile 3/12 · 0:06 elapsed · ~0:18 left"
    assert Progress(0, 5, "starting", 0.1).eta is None
    assert "left" not in Progress(5, 5, "done", 2.0).text()
    assert format_seconds(3725) == "1:02:05" and format_seconds(59.6) == "1:00"


def test_generator_yields_progress_and_returns_the_restored_array():
    img = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    items, outcome = _drain(iter_restoration(Job(img, "lanczos", axes="ZYX", options={"scale": 2})))
    assert items and all(isinstance(p, Progress) for p in items)
    assert items[-1].fraction == pytest.approx(1.0)
    expected = nd.restore(img, "lanczos", axes="ZYX", options={"scale": 2})
    np.testing.assert_array_equal(outcome.data, expected)
    prov = outcome.provenance()
    assert prov["restorer"] == "lanczos" and prov["device"] == "cpu" and prov["version"] == nd.__version__
    assert prov["seed"] is None  # deterministic restorer: no seed to record
    assert outcome.scale == 2


def test_stochastic_run_records_the_seed_it_drew_and_reproduces_with_it(widget_plugin):
    img = np.random.default_rng(1).random((16, 16)).astype(np.float32)
    out = run_restoration(Job(img, "slow-steps", steps=2))
    assert isinstance(out.seed, int) and out.steps == 2


def test_cancel_event_stops_within_a_step_and_returns_nothing(widget_plugin):
    import napari_diffir_widget_test as plugin

    img = np.zeros((16, 16), np.float32)
    cancel = threading.Event()
    gen = iter_restoration(Job(img, "slow-steps", steps=1000), cancel)
    first = next(gen)
    assert isinstance(first, Progress)
    calls_at_cancel = plugin.SlowSteps.calls
    t0 = time.perf_counter()
    cancel.set()
    with pytest.raises(RestorationCancelled):
        _drain(gen)
    assert time.perf_counter() - t0 < 2.0
    assert plugin.SlowSteps.calls - calls_at_cancel <= 2  # one step (plus the one in flight)


def test_closing_the_generator_stops_the_engine(widget_plugin):
    import napari_diffir_widget_test as plugin

    gen = iter_restoration(Job(np.zeros((16, 16), np.float32), "slow-steps", steps=1000))
    next(gen)
    gen.close()
    calls = plugin.SlowSteps.calls
    time.sleep(0.2)
    assert plugin.SlowSteps.calls == calls  # the engine thread is gone
    assert calls < 1000


def test_engine_errors_surface_in_the_generator_with_a_helpful_message(widget_plugin):
    bad = np.full((16, 16), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN") as info:
        _drain(iter_restoration(Job(bad, "tv")))
    assert "replace them" in friendly_error(info.value)
    with pytest.raises(MemoryError) as info:
        _drain(iter_restoration(Job(np.zeros((64, 64), np.float32), "always-oom")))
    message = friendly_error(info.value)
    assert "smaller tile" in message and "cpu" in message.lower()
    assert friendly_error(RuntimeError("CUDA out of memory. Tried")).startswith("Out of memory")
    assert friendly_error(KeyError("x")).startswith("Restoration failed (KeyError)")


class _CountingArray:
    """An array-like that records the largest read, to prove dask never loads it whole."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.largest = 0

    def __getitem__(self, index):
        part = self.array[index]
        self.largest = max(self.largest, part.size)
        return part


def test_dask_input_is_computed_block_by_block_and_matches_numpy():
    img = np.random.default_rng(2).random((4, 64, 64)).astype(np.float32)
    source = _CountingArray(img)
    lazy = da.from_array(source, chunks=(1, 32, 32))
    seen = []
    out = run_restoration(Job(lazy, "lanczos", axes="ZYX", tile_overlap=8),
                          progress=lambda d, t, m: seen.append((d, t)))
    ref = nd.restore(img, "lanczos", axes="ZYX", tile_overlap=8)
    assert isinstance(out.data, np.ndarray)
    np.testing.assert_allclose(out.data, ref, atol=1e-5)
    assert source.largest <= 32 * 32  # one chunk at a time
    assert seen[-1] == (16, 16)  # one progress step per output block


def test_dask_run_can_be_cancelled_between_blocks():
    lazy = da.from_array(np.random.default_rng(3).random((8, 32, 32)).astype(np.float32), chunks=(1, 32, 32))
    cancel = threading.Event()

    def progress(done, total, message):
        if done >= 2:
            cancel.set()

    with pytest.raises(RestorationCancelled):
        run_restoration(Job(lazy, "tv", axes="ZYX"), progress, cancel)


def test_model_loading_is_its_own_phase_and_the_eta_leaves_it_out(widget_plugin):
    from napari_diffir.napari._worker import LOADING

    items, _outcome = _drain(iter_restoration(Job(np.zeros((16, 16), np.float32), "slow-steps", steps=10)))
    assert items[0].message == LOADING and items[0].fraction == 0.0 and items[0].eta is None
    work = [p for p in items if p.message != LOADING]
    assert work and all(p.loading == work[0].loading for p in work)  # frozen once the work starts
    # 3 s of loading, then 1 s for a quarter of the work: 3 s left, not 12 s
    p = Progress(done=1, total=4, message="tile 1/4", elapsed=4.0, loading=3.0)
    assert p.eta == pytest.approx(3.0)


def test_engine_messages_are_phrased_for_the_form():
    from napari_diffir.napari._catalogue import widget_message

    assert widget_message("weights has scale 4 (omit scale= or pass scale=4)") == "weights has scale 4 (choose scale 4)"
    oom = widget_message("Out of memory on cuda; use a smaller tile_size, precision='bf16', or device='cpu'")
    assert oom == "Out of memory on cuda; use a smaller Tile size, precision bf16, or device cpu"
    assert widget_message("Cannot read '/home/me/data/ckpt.pth'") == "Cannot read 'ckpt.pth'"


def test_a_single_diffir_tile_reports_progress_inside_the_tile(tmp_path):
    import torch

    from napari_diffir.models.diffir import DiffIRS2

    torch.manual_seed(0)
    model = DiffIRS2(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, n_encoder_res=1, n_feats=8,
                     task="deblur", inp_channels=1, out_channels=1)
    path = tmp_path / "tiny-diffir.pth"
    torch.save({"params": model.state_dict()}, path)
    img = np.random.default_rng(4).random((32, 32)).astype(np.float32)
    seen = []
    outcome = run_restoration(Job(img, "diffir", weights=str(path), tile_size=None, seed=1),
                              progress=lambda done, total, message: seen.append((done, total, message)))
    inside = sorted({done / total for done, total, _m in seen if total and 0 < done / total < 1})
    assert outcome.data.shape == (32, 32) and len(inside) >= 5  # one per block, not a jump from 0 to 100 %
    assert seen[-1][0] == seen[-1][1] and "step" in seen[-2][2]
