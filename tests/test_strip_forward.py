"""A whole plane restored with its blocks in row strips equals the plain forward, for less memory.

Random tiny nets of every DiffIR variant check the values (strips of one row up to the whole
map, channels-last and not, float32 and bf16); the engine test checks that the bundled denoiser
restores a plane above its tile size in one piece, in strips, as the untiled restoration.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from napari_diffir.models.diffir import planewise, strip_forward
from napari_diffir.models.diffir._arch.dirformer import PLANE_HOOK
from napari_diffir.models.diffir.strip_forward import StripHook, in_strips, strip_rows

from .test_tile_independence import VARIANTS, _case


@pytest.mark.parametrize("pixels", [1, 40 * 8, 10**9], ids=["one-row", "some-rows", "whole"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_strips_give_the_plain_forward(name, pixels):
    net, plane, mask, *_ = _case(name)
    noise = torch.randn(1, net.ipr_dim)
    inp = planewise.model_input(net, plane, mask)
    calls = []

    class Counting(StripHook):
        def _strips(self, x):
            strips = list(super()._strips(x))
            calls.append(len(strips))
            return iter(strips)

    for layout in (torch.contiguous_format, torch.channels_last):
        net = net.to(memory_format=layout)
        x = inp.contiguous(memory_format=layout)
        with torch.inference_mode():
            plain = net.restore(x, noise=noise)
            token = PLANE_HOOK.set(Counting(pixels))
            try:
                stripped = net.restore(x, noise=noise)
            finally:
                PLANE_HOOK.reset(token)
        torch.testing.assert_close(stripped, plain, rtol=0, atol=2e-5)
        assert stripped.is_contiguous(memory_format=layout) == plain.is_contiguous(memory_format=layout)
    assert calls and (max(calls) > 8 if pixels == 1 else True) and (max(calls) == 1 if pixels == 10**9 else True)


def test_strips_in_bf16_stay_as_close_to_float32_as_the_plain_forward():
    net, plane, _, *_ = _case("deblur")
    noise = torch.randn(1, net.ipr_dim)
    net = net.to(memory_format=torch.channels_last)
    x = plane.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = net.restore(x, noise=noise)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = net.restore(x, noise=noise).float()
            with in_strips(16 * x.shape[-1]):
                stripped = net.restore(x, noise=noise).float()
    assert PLANE_HOOK.get() is None  # the context manager put the hook back

    def err(a):
        return float((a - ref).abs().max())

    assert err(stripped) <= 2 * err(plain) + 1e-3


def test_strip_rows_cover_the_height_once():
    assert list(strip_rows(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(strip_rows(3, 100)) == [(0, 3)]
    with pytest.raises(ValueError, match="at least one row"):
        list(strip_rows(3, 0))


def test_engine_restores_a_plane_above_the_tile_size_in_one_piece(monkeypatch):
    """A 640² plane (above the bundled denoiser's 384² tile, within four tiles' memory) is one
    tile: no statistics pass, the blocks in strips, the result of ``tile_size=None``."""
    from napari_diffir import restore
    from napari_diffir.engine import device as device_module
    from napari_diffir.engine.plan import plan
    from napari_diffir.restorers.diffir import DiffIRRestorer

    x = np.random.default_rng(0).random((640, 608), dtype=np.float32)
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: 64 * 2**30)
    p = plan(x, "diffir-denoise")
    assert p.tile == 640 and p.info.tile_size == 384 and p.info.plane_bytes_per_pixel is not None

    def no_statistics(*args, **kwargs):
        raise AssertionError("an untiled plane needs no statistics pass")

    hooks = []
    restore_tile = DiffIRRestorer.restore_tile

    def spy(self, tile, ctx):
        original = self.model.G.forward

        def forward(*args, **kwargs):
            hooks.append(type(PLANE_HOOK.get()).__name__)
            return original(*args, **kwargs)

        self.model.G.forward = forward
        try:
            return restore_tile(self, tile, ctx)
        finally:
            del self.model.G.forward

    monkeypatch.setattr(DiffIRRestorer, "prepare_plane", no_statistics)
    monkeypatch.setattr(DiffIRRestorer, "restore_tile", spy)
    out = restore(x, "diffir-denoise", seed=1, normalize="none", precision="fp32")
    assert hooks == ["StripHook"]
    monkeypatch.undo()
    monkeypatch.setattr(strip_forward, "in_strips", contextlib.nullcontext)  # the plain forward
    ref = restore(x, "diffir-denoise", seed=1, normalize="none", precision="fp32", tile_size=None)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: 64 * 2**30)
    assert plan(np.zeros((1600, 1600), np.float32), "diffir-denoise").tile == 384  # beyond four tiles' memory
    sr = plan(np.zeros((512, 512), np.float32), "diffir-sr4")  # SR too: its body in strips at the input size
    assert sr.tile == 512 and sr.info.tile_size == 256


def test_strips_keep_each_image_of_a_batch_apart():
    """Each image of a batch gets its own attention sums, as in the plain forward."""
    net, plane, *_ = _case("deblur")
    x = torch.cat([plane, plane.flip(-1) * 0.5]).contiguous(memory_format=torch.channels_last)
    net = net.to(memory_format=torch.channels_last)
    noise = torch.randn(2, net.ipr_dim)
    with torch.inference_mode():
        plain = net.restore(x, noise=noise)
        with in_strips(300):
            stripped = net.restore(x, noise=noise)
        alone = net.restore(x[1:], noise=noise[1:])
    torch.testing.assert_close(stripped, plain, rtol=0, atol=2e-5)
    torch.testing.assert_close(stripped[1:], alone, rtol=0, atol=2e-5)


def test_concurrent_whole_planes_must_fit_the_memory_together(monkeypatch):
    """A streamed run's workers each restore a whole plane: the plane is one tile only if all
    of them fit the budget at once; otherwise it is tiled as usual."""
    from napari_diffir.engine import device as device_module
    from napari_diffir.engine.plan import plan, resolve_tile

    info = plan(np.zeros((8, 8), np.float32), "diffir-denoise").info
    plane_bytes = info.plane_bytes_per_pixel * 640 * 640
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: 2 * 1.5 * plane_bytes)  # budget: 1.5 planes
    assert resolve_tile("auto", info, (640, 640), "cpu", whole_plane_first=True) == 640
    assert resolve_tile("auto", info, (640, 640), "cpu", whole_plane_first=True, concurrent=2) == info.tile_size
