"""Plane-wise DiffIR: a tiled restoration with one plane's statistics equals the untiled one.

Random tiny nets of every variant (SR x4/x2/x1, deblur, inpainting with and without the dual-pixel
skip) check the values exactly; tests/test_chunk_independence.py checks through the engine that
the bundled denoiser leaves no seams on a real sample.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_diffir.models.diffir import planewise
from napari_diffir.models.diffir._arch.dirformer import PLANE_HOOK, Attention
from napari_diffir.models.diffir.plane_cells import Cells, walk
from napari_diffir.models.diffir.planewise import prepare_plane, receptive_radius, restore_tile_with

from .test_models_diffir import tiny

VARIANTS = {
    "sr4": dict(task="sr", scale=4),
    "sr2": dict(task="sr", scale=2, inp_channels=3, out_channels=3),
    "sr1": dict(task="sr", scale=1, LayerNorm_type="BiasFree", bias=True),
    "deblur": dict(task="deblur", num_blocks=[1, 2, 1, 1], heads=[1, 2, 2, 4]),
    "inpaint": dict(task="inpaint", out_channels=3, dim=12),
    "inpaint-dual": dict(task="inpaint", dual_pixel_task=True),
}


def _case(name: str, seed: int = 0):
    """A random net of the variant, a plane (and mask) big enough for tiles with interior
    neighbours on both sides, the halo that covers its receptive field and a tile core."""
    torch.manual_seed(seed)
    net = tiny(**VARIANTS[name]).eval()
    m = net.multiple_of
    halo = -(-receptive_radius(net) // m) * m
    core = max(64, 2 * m)
    h, w = 2 * core, 2 * halo + 3 * core
    plane = torch.rand(1, net.hyperparameters["out_channels"], h, w)
    mask = (torch.rand(1, 1, h, w) > 0.7).float() if net.task == "inpaint" else None
    return net, plane, mask, halo, core


def _stitched(fn, plane: torch.Tensor, core: int, halo: int, scale: int) -> torch.Tensor:
    """Run ``fn(tile, origin)`` on core + halo tiles and keep each tile's core."""
    h, w = plane.shape[-2:]
    out = None
    for win in walk(h, w, core, halo):
        ey0, ey1, ex0, ex1 = win.extent
        y0, y1, x0, x1 = win.core
        y = fn(plane[..., ey0:ey1, ex0:ex1], (ey0, ex0))
        if out is None:
            out = y.new_zeros(*y.shape[:2], h * scale, w * scale)
        out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = y[
            ..., (y0 - ey0) * scale:(y1 - ey0) * scale, (x0 - ex0) * scale:(x1 - ex0) * scale]
    return out


def _crop(mask: torch.Tensor | None, origin, like: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    y0, x0 = origin
    return mask[..., y0:y0 + like.shape[-2], x0:x0 + like.shape[-1]]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_whole_plane_with_its_statistics_is_the_untiled_forward(name):
    """Plane statistics summed over compute cells reproduce the ordinary untiled forward."""
    net, plane, mask, halo, core = _case(name)
    noise = torch.randn(1, net.ipr_dim)
    inp = planewise.model_input(net, plane, mask)
    with torch.no_grad():
        untiled = net.restore(inp, noise=noise)
        state = prepare_plane(net, plane, mask=mask, noise=noise, cell=core, halo=halo)
        whole = restore_tile_with(net, plane, state, mask=mask)
    assert whole.shape == untiled.shape == (1, net.hyperparameters["out_channels"],
                                            plane.shape[-2] * net.scale, plane.shape[-1] * net.scale)
    torch.testing.assert_close(whole, untiled, rtol=0, atol=2e-5)
    torch.testing.assert_close(state.ipr[0, 0], net.estimate_ipr(inp, noise=noise)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("grid", [None, 64], ids=["global", "grid64"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_tiles_that_cover_the_receptive_field_equal_the_whole_plane(name, grid):
    """Tiles with the receptive field as overlap give the whole plane's result, global or grid."""
    net, plane, mask, halo, core = _case(name)
    noise = torch.randn(1, net.ipr_dim)
    with torch.no_grad():
        state = prepare_plane(net, plane, mask=mask, noise=noise, prior_grid=grid, attention_grid=grid,
                              cell=core, halo=halo)
        whole = restore_tile_with(net, plane, state, mask=mask)
        tiled = _stitched(lambda t, o: restore_tile_with(net, t, state, o, mask=_crop(mask, o, t)),
                          plane, core, halo, net.scale)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=2e-5)


def test_statistics_do_not_depend_on_the_compute_cells():
    """Exact sums are the same for any compute-cell size once the halo covers the receptive field;
    passes >= the number of attention layers are exact too."""
    net, plane, _, halo, core = _case("deblur")
    noise = torch.randn(1, net.ipr_dim)
    layers = sum(isinstance(mod, Attention) for mod in net.modules())
    with torch.no_grad():
        a = prepare_plane(net, plane, noise=noise, cell=core, halo=halo)
        b = prepare_plane(net, plane, noise=noise, cell=2 * core, halo=halo)
        c = prepare_plane(net, plane, noise=noise, cell=core, halo=halo, passes=layers)
        one = prepare_plane(net, plane, noise=noise, cell=core, halo=halo, passes=1)
    assert len(a.attention) == layers
    assert a.ipr.shape == (1, 1, net.ipr_dim)
    for other in (b, c):
        torch.testing.assert_close(other.ipr, a.ipr, rtol=0, atol=1e-6)
        for x, y in zip(other.attention, a.attention, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    # one pass: the first layer is already exact, later ones use the cells' own first-layer maps
    torch.testing.assert_close(one.attention[0], a.attention[0], rtol=0, atol=1e-5)


def test_passes_until_converged_stop_at_the_tolerance(monkeypatch):
    """With a tolerance, full passes run until a pass moves no map entry by more than it: zero
    reaches the exact maps, a huge one stops after the second pass (the first that can compare),
    and every pass in between moved the maps by more than the tolerance."""
    from napari_diffir.models.diffir import planewise

    net, plane, _, halo, core = _case("deblur")
    noise = torch.randn(1, net.ipr_dim)
    changes: list[float] = []
    largest = planewise._largest_change
    monkeypatch.setattr(planewise, "_largest_change", lambda a, b: changes.append(largest(a, b)) or changes[-1])
    with torch.no_grad():
        exact = prepare_plane(net, plane, noise=noise, cell=core, halo=halo)
        zero = prepare_plane(net, plane, noise=noise, cell=core, halo=halo, tolerance=0.0)
        changes.clear()
        two = prepare_plane(net, plane, noise=noise, cell=core, halo=halo, passes=2)
        loose = prepare_plane(net, plane, noise=noise, cell=core, halo=halo, tolerance=1e9)
        assert len(changes) == 1
        changes.clear()
        mid = prepare_plane(net, plane, noise=noise, cell=core, halo=halo, tolerance=1e-3)
    for x, y in zip(zero.attention, exact.attention, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    for x, y in zip(loose.attention, two.attention, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert changes[-1] <= 1e-3 and all(c > 1e-3 for c in changes[:-1])
    for x, y in zip(mid.attention, exact.attention, strict=True):  # settled: near the exact maps
        torch.testing.assert_close(x, y, rtol=0, atol=1e-2)
    with pytest.raises(ValueError, match="tolerance must be None or >= 0"):
        prepare_plane(net, plane, noise=noise, tolerance=-1.0)


def test_grid_statistics_are_one_per_cell():
    """A grid keeps one prior and one set of maps per cell, each map a row-stochastic matrix."""
    net, plane, *_ = _case("deblur")
    with torch.no_grad():
        state = prepare_plane(net, plane, prior_grid=64, attention_grid=64, noise=torch.randn(net.ipr_dim))
    ny, nx = -(-plane.shape[-2] // 64), -(-plane.shape[-1] // 64)
    assert state.ipr.shape == (ny, nx, net.ipr_dim)
    heads = net.G.encoder_level1[0].attn.num_heads
    assert state.attention[0].shape == (ny, nx, heads, 8 // heads, 8 // heads)
    for maps in state.attention:
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    assert not torch.allclose(state.ipr[0, 0], state.ipr[-1, -1])


def test_tent_weights_blend_between_cell_centres():
    """Weights are a partition of unity, linear between centres, constant beyond the outer ones."""
    cells = Cells(100, 40)  # cells [0, 40), [40, 80), [80, 100): centres 20, 60, 90
    w = cells.weights(torch.tensor([0.0, 20, 40, 60, 75, 90, 99]))
    torch.testing.assert_close(w.sum(0), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(w[0], torch.tensor([1, 1, 0.5, 0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(w[2], torch.tensor([0, 0, 0, 0, 0.5, 1, 1], dtype=torch.float64))
    assert Cells(100).weights(torch.arange(5.0)).tolist() == [[1.0] * 5]


def _official_attention(attn: Attention, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """DiffIR's MDTA as the official code writes it (modulate, normalise q and k, softmax)."""
    b, c, h, w = x.shape
    k1, k2 = attn.kernel(z).view(-1, c * 2, 1, 1).chunk(2, dim=1)
    q, k, v = attn.qkv_dwconv(attn.qkv(x * k1 + k2)).chunk(3, dim=1)
    heads = attn.num_heads
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    out = ((q @ k.transpose(-2, -1)) * attn.temperature).softmax(dim=-1) @ v
    return attn.project_out(out.reshape(b, c, h, w))


def test_default_attention_is_unchanged_and_the_hook_is_only_set_inside_a_call():
    """Without a plane hook the attention computes the official formula; the hook never leaks."""
    net, plane, _, _, _ = _case("deblur")
    block = net.G.encoder_level2[0]
    x = torch.randn(1, block.attn.qkv.in_channels, 16, 24)
    z = torch.randn(1, net.ipr_dim)
    with torch.no_grad():
        for fmt in (torch.contiguous_format, torch.channels_last):
            xn = block.norm1(x).contiguous(memory_format=fmt)
            torch.testing.assert_close(block.attn(xn, z), _official_attention(block.attn, xn, z), rtol=1e-5, atol=1e-6)
        state = prepare_plane(net, plane, noise=z, passes=0)
        assert PLANE_HOOK.get() is None
        with pytest.raises(ValueError, match="multiples"):
            restore_tile_with(net, plane[..., :12, :12], state)
        assert PLANE_HOOK.get() is None


def test_inputs_are_checked():
    net, plane, _, _, _ = _case("deblur")
    inpaint, iplane, *_ = _case("inpaint")
    with pytest.raises(ValueError, match="no mask"):
        prepare_plane(net, plane, mask=torch.ones(1, 1, *plane.shape[-2:]))
    with pytest.raises(ValueError, match="needs mask"):
        prepare_plane(inpaint, iplane)
    with pytest.raises(ValueError, match="one \\(1, C, H, W\\) plane"):
        prepare_plane(net, plane.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="grid cells"):
        prepare_plane(net, plane, prior_grid=60)
    with torch.no_grad():
        state = prepare_plane(net, plane[..., :64, :64], passes=0)
    with pytest.raises(ValueError, match="does not lie in"):
        restore_tile_with(net, plane[..., :64, :64], state, (8, 0))
    with pytest.raises(TypeError, match="stage-2"):
        prepare_plane(tiny(__import__("napari_diffir").models.diffir.DiffIRS1), plane)


def test_statistics_progress_counts_the_work_each_mode_does():
    """``on_window`` counts pixel-layers: layer by layer the pass for layer l runs every window
    up to l (the whole estimate is (L + 1) / 2 forwards of a plane that is one window), full
    passes run them all; the counts rise to the total, and a tolerance that settles early
    reports the end."""
    from napari_diffir.models.diffir.planewise import statistics_forwards

    net, plane, _, halo, core = _case("deblur")
    layers = sum(isinstance(m, Attention) for m in net.G.modules())
    h, w = plane.shape[-2:]
    noise = torch.randn(1, net.ipr_dim)
    whole = max(h, w)  # one window covers the plane: the work is exactly (L + 1) / 2 forwards
    assert statistics_forwards(net, (h, w), cell=whole, halo=0) == pytest.approx((layers + 1) / 2)
    assert statistics_forwards(net, (h, w), cell=whole, halo=0, passes=3) == pytest.approx(3)
    assert statistics_forwards(net, (h, w), cell=whole, halo=0, tolerance=0.1) == pytest.approx(layers)
    for kwargs in ({}, {"passes": 2}, {"tolerance": 1e9}):
        seen: list[tuple[int, int]] = []
        with torch.no_grad():
            prepare_plane(net, plane, noise=noise, cell=core, halo=halo, on_window=lambda d, t, seen=seen: seen.append((d, t)), **kwargs)
        total = seen[0][1]
        expected = statistics_forwards(net, (h, w), cell=core, halo=halo, **kwargs) * h * w * layers
        assert total == pytest.approx(expected)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (total, total)
        if "tolerance" in kwargs:  # settled after 2 of L passes: the last report jumps to the end
            assert seen[-2][0] == 2 * total // layers
