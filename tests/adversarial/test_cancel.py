"""Cancel that a restorer cannot ignore: control returns within a bounded time, nothing is
returned, and the restorer's thread is stopped."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import napari_diffir as nd
from napari_diffir import RestorationCancelled, Restorer, RestorerInfo
from napari_diffir.engine.cancel import POLL_SECONDS, call_cancellable


class _Spins(Restorer):
    """A Python loop that never calls ctx.step (runs until stopped from outside)."""

    info = RestorerInfo(name="spins", display_name="s", task="denoise", in_channels=None)

    def __init__(self, **options):
        super().__init__(**options)
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.grad_enabled = None

    def restore_tile(self, x, ctx):
        self.started.set()
        self.grad_enabled = torch.is_grad_enabled()
        try:
            while True:
                sum(range(1000))
        finally:
            self.stopped.set()


class _OneLongCall(Restorer):
    """One native call (a 2 s sleep) and no ctx.step: the model's single forward pass."""

    info = RestorerInfo(name="one-long-call", display_name="o", task="denoise", in_channels=None)

    def restore_tile(self, x, ctx):
        time.sleep(2.0)
        return x.clone()


def _cancel_after(event: threading.Event, started: threading.Event | None, delay: float):
    def go():
        if started is not None:
            started.wait(10)
        time.sleep(delay)
        event.set()

    threading.Thread(target=go, daemon=True).start()


def _img():
    return np.random.default_rng(0).random((40, 40)).astype(np.float32)


def test_a_restorer_that_never_steps_is_cancelled_within_a_bounded_time():
    r, cancel = _Spins(), threading.Event()
    _cancel_after(cancel, r.started, 0.2)
    t0 = time.perf_counter()
    with pytest.raises(RestorationCancelled):
        nd.restore(_img(), r, cancel=cancel)
    assert time.perf_counter() - t0 < 0.2 + 10 * POLL_SECONDS + 1.0
    assert r.stopped.wait(5), "the restorer's thread was not stopped"
    assert r.grad_enabled is False  # inference mode holds in the tile's thread too


def test_a_single_long_native_call_does_not_hold_the_caller():
    cancel = threading.Event()
    _cancel_after(cancel, None, 0.3)
    t0 = time.perf_counter()
    with pytest.raises(RestorationCancelled):
        nd.restore(_img(), _OneLongCall(), cancel=cancel)
    assert time.perf_counter() - t0 < 1.5  # not the 2 s of the call


def test_a_callable_cancel_works_like_an_event():
    r = _Spins()
    t0 = time.perf_counter()
    with pytest.raises(RestorationCancelled):
        nd.restore(_img(), r, cancel=lambda: r.started.is_set() and time.perf_counter() - t0 > 0.2)
    assert r.stopped.wait(5)


def test_errors_in_the_tile_thread_reach_the_caller_unchanged():
    class Fails(Restorer):
        info = RestorerInfo(name="fails", display_name="f", task="denoise", in_channels=None)

        def restore_tile(self, x, ctx):
            raise KeyError("lost layer")

    with pytest.raises(KeyError, match="lost layer"):
        nd.restore(_img(), Fails(), cancel=threading.Event())


def test_an_uncancelled_run_with_a_cancel_flag_gives_the_same_result():
    from ..restorers_for_tests import ConvNet

    img = _img()
    assert np.array_equal(nd.restore(img, ConvNet(), cancel=threading.Event(), tile_size=32),
                          nd.restore(img, ConvNet(), tile_size=32))


def test_call_cancellable_without_cancel_runs_in_the_callers_thread():
    assert call_cancellable(threading.get_ident, None) == threading.get_ident()
    assert call_cancellable(threading.get_ident, threading.Event()) != threading.get_ident()


def test_a_cancel_set_before_the_run_returns_at_once_without_calling_the_restorer():
    r, cancel = _Spins(), threading.Event()
    cancel.set()
    with pytest.raises(RestorationCancelled):
        nd.restore(_img(), r, cancel=cancel)
    assert not r.started.is_set()
