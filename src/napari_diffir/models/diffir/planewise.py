"""Tile-independent DiffIR: estimate a plane's statistics once, then restore any tile with them.

A DiffIR forward has exactly two non-local parts. CPEN ends in a global average pool, so the
prior (IPR) is one vector per input; and every transposed attention layer builds its channel
attention maps from sums over all pixels of its input. With both fixed per image plane, the
network is local (convolutions and per-pixel linear maps), and tiles with enough overlap give
the untiled result.

- :func:`prepare_plane` walks the plane in compute cells of a fixed size (core plus halo, one
  cell in memory at a time) and sums what the plane needs: CPEN's pooled features (exactly, one
  cheap pass), then every attention layer's q/k norms and Gram. A layer's inputs depend on the
  earlier layers' maps, so the sums are made layer by layer (``passes=None``: exact, each
  layer's pass recomputes the network up to it) or by a few full passes that use the previous
  pass's maps (``passes=n``: after n passes the first n layers are exact).
- :func:`restore_tile_with` runs the network on one tile with those fixed statistics.

With ``prior_grid``/``attention_grid`` the prior and/or the attention maps are kept per cell of
a fixed grid, each cell's computed from the cell alone, and blended between cell centres (tent
weights): a local prior that still does not depend on the tiling.

Inputs are (1, C, H, W) image planes in [0, 1] with H and W multiples of ``model.multiple_of``
(pad once for the whole plane); tile origins are multiples of it too. For inpainting, pass the
image and ``mask`` (1 = pixels to fill); the network input is built as the restorer builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._arch import Attention, DiffIRS2
from ._arch.dirformer import PLANE_HOOK
from .plane_cells import Cells, Window, walk
from .plane_hook import AttentionSums, PlaneHook, StopForward

__all__ = ["PlaneState", "cpen_radius", "model_input", "prepare_plane", "receptive_radius", "restore_tile_with",
           "statistics_forwards", "statistics_work"]


@dataclass(frozen=True)
class PlaneState:
    """What every tile of one image plane is restored with.

    ``ipr`` is (ny, nx, D): the prior of each cell of ``ipr_cells`` (1 x 1 for one per plane);
    ``attention`` holds, per attention layer in forward order, (ny, nx, heads, d, d) maps per
    cell of ``attention_cells``.
    """

    shape: tuple[int, int]
    ipr: torch.Tensor
    ipr_cells: tuple[Cells, Cells]
    attention: tuple[torch.Tensor, ...]
    attention_cells: tuple[Cells, Cells]

    def hook(self, origin: tuple[int, int], size: tuple[int, int], **collect) -> PlaneHook:
        return PlaneHook(origin=origin, size=size, ipr=self.ipr, ipr_cells=self.ipr_cells,
                         attention=self.attention, attention_cells=self.attention_cells, **collect)


def receptive_radius(model: DiffIRS2) -> int:
    """Input pixels on each side that one output pixel of ``model.G`` can depend on (a bound).

    Counts every 3x3 convolution at its level's stride (1x1 maps and the fixed attention add
    nothing), plus one deepest-level cell for the pixel-(un)shuffle alignment.
    """
    g = model.G
    u = g.unshuffle
    levels = (g.encoder_level1, g.encoder_level2, g.encoder_level3, g.latent)
    decoders = (g.decoder_level1, g.decoder_level2, g.decoder_level3)
    r = u  # patch embedding
    for k, blocks in enumerate(levels):
        r += 2 * u * 2**k * len(blocks)  # two depthwise 3x3 per block
    for k, blocks in enumerate(decoders):
        r += 2 * u * 2**k * len(blocks)
        r += u * 2**k + u * 2 ** (k + 1)  # the downsample conv at this level, the upsample one below it
    if g.task != "inpaint":
        r += 2 * u * len(g.refinement)
    r += 2 * u if g.task == "sr" else u  # head: x4 tail (1 + 1/2 + 1/4 level-1 px) or one conv
    return r + 8 * u


def cpen_radius(model: DiffIRS2) -> int:
    """Input pixels on each side that CPEN's per-pixel features depend on."""
    cpen = model.condition
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in cpen.E.modules())
    return (convs + 1) * cpen.lq_unshuffle


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def model_input(model: DiffIRS2, image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The network input for ``image``: itself, or for inpainting ``[image * (1 - m), m]``."""
    if model.task != "inpaint":
        if mask is not None:
            raise ValueError(f"A DiffIR {model.task!r} model takes no mask")
        return image
    if mask is None:
        raise ValueError("A DiffIR inpainting model needs mask= (1 = pixels to fill)")
    m = (mask > 0).to(image.dtype).expand(image.shape[0], 1, *image.shape[-2:])
    return torch.cat([image * (1 - m), m], dim=1)


def _plane_cells(shape: tuple[int, int], size: int | None, multiple: int) -> tuple[Cells, Cells]:
    if size is not None and (size <= 0 or size % multiple):
        raise ValueError(f"grid cells must be positive multiples of {multiple} pixels, but got {size}")
    return Cells(shape[0], size), Cells(shape[1], size)


def _start_noise(model: DiffIRS2, noise, generator, like: torch.Tensor) -> torch.Tensor:
    dim = model.ipr_dim
    if noise is None:
        return torch.randn((1, dim), generator=generator, device=like.device)
    noise = torch.as_tensor(noise).reshape(-1)
    if noise.numel() != dim:
        raise ValueError(f"Expected IPR noise of {dim} values, but got {tuple(noise.shape)}")
    return noise.to(device=like.device, dtype=torch.float32).view(1, dim)


def _plane_ipr(model: DiffIRS2, inp: torch.Tensor, cells: tuple[Cells, Cells], cell: int,
               start: torch.Tensor) -> torch.Tensor:
    """(ny, nx, D) priors: CPEN's pooled features summed per cell, then the IPR diffusion.

    One cell for the plane: summed over compute cells with a halo that covers CPEN's receptive
    field, so the mean is the untiled one. A grid: each cell's features as CPEN computes them
    for that cell alone (zero padding at its border, as on the network's training patches).
    """
    cpen = model.condition
    s = cpen.lq_unshuffle
    h, w = inp.shape[-2:]
    ny, nx = cells[0].count, cells[1].count
    if ny * nx == 1:
        windows = walk(h, w, cell, _round_up(cpen_radius(model), model.multiple_of))
    else:
        windows = walk(h, w, cells[0].step, 0)
    sums = counts = None
    for win in windows:
        ey0, ey1, ex0, ex1 = win.extent
        feat = cpen.features(inp[..., ey0:ey1, ex0:ex1])[0]
        if sums is None:
            sums = torch.zeros(ny, nx, feat.shape[0], dtype=torch.float64, device=inp.device)
            counts = torch.zeros(ny, nx, 1, dtype=torch.float64, device=inp.device)
        y0, y1, x0, x1 = win.core
        for i in cells[0].overlapping(y0, y1):
            a, b = cells[0].bounds(i)
            r0, r1 = (max(a, y0) - ey0) // s, (min(b, y1) - ey0) // s
            for j in cells[1].overlapping(x0, x1):
                a, b = cells[1].bounds(j)
                c0, c1 = (max(a, x0) - ex0) // s, (min(b, x1) - ex0) // s
                if r1 > r0 and c1 > c0:
                    sums[i, j] += feat[:, r0:r1, c0:c1].float().sum((1, 2))
                    counts[i, j] += (r1 - r0) * (c1 - c0)
    pooled = (sums / counts).float().view(ny * nx, -1)
    ipr = model.diffusion.reverse(start.expand(ny * nx, -1), cpen.mlp(pooled).float())
    return ipr.float().view(ny, nx, -1)


def prepare_plane(
    model: DiffIRS2,
    plane: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    prior_grid: int | None = None,
    attention_grid: int | None = None,
    cell: int = 256,
    halo: int | None = None,
    passes: int | None = None,
    tolerance: float | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> PlaneState:
    """Estimate the IPR and every attention layer's maps for one (1, C, H, W) image plane.

    :param prior_grid: None: one prior for the plane (the untiled one). An int (a multiple of
        ``model.multiple_of``): one prior per cell of that many pixels, each estimated from the
        cell alone (as CPEN saw its training patches), blended between cell centres.
    :param attention_grid: likewise for the attention maps: None, one per layer for the plane;
        an int, one per cell, each summed over the cell computed alone.
    :param cell: core size of the compute cells of the global sums (memory: one forward on
        ``cell + 2 * halo`` pixels); grid statistics run on their grid cells.
    :param halo: context around each compute cell (default ``32 * model.G.unshuffle``: the sums
        then match the untiled ones to ~1e-5); exact once it covers :func:`receptive_radius`.
    :param passes: None: exact layer-by-layer sums (cost ~ half a forward per attention layer);
        n: n full passes, each using the previous pass's maps (the first uses each compute
        cell's own). ``passes=0`` fixes the prior only.
    :param tolerance: full passes until one moves no attention map entry by more than this
        from the previous pass (at most ``passes``, default as many as there are attention
        layers, after which all are exact). The pass-to-pass change tracks the remaining error
        of the output (bundled denoiser, 512² ``camera``: change 0.032 / 0.016 / 0.0067 / 0.0011
        after passes 3-6, output off by 0.018 / 0.0047 / 0.0014 / 0.0006).
    :param noise: the IPR diffusion's start, shared by all cells (else drawn with ``generator``).
    :param on_window: called after each compute window with (work done, work in all) of the
        whole estimate, in the units of :func:`statistics_work` (progress and cancel: it may
        raise to stop); passes that ``tolerance`` ends early jump to the end.
    """
    if not isinstance(model, DiffIRS2):
        raise TypeError(f"prepare_plane needs a DiffIR stage-2 model (DiffIRS2), but got {type(model).__name__}")
    if plane.ndim != 4 or plane.shape[0] != 1:
        raise ValueError(f"Expected one (1, C, H, W) plane, but got {tuple(plane.shape)}")
    m = model.multiple_of
    halo = _default_halo(model) if halo is None else halo
    if cell <= 0 or cell % m or halo < 0 or halo % m:
        raise ValueError(f"cell and halo must be multiples of {m} (cell > 0), but got {cell} and {halo}")
    if passes is not None and passes < 0:
        raise ValueError(f"passes must be None (exact) or >= 0, but got {passes}")
    if tolerance is not None and not tolerance >= 0:
        raise ValueError(f"tolerance must be None or >= 0, but got {tolerance}")
    inp = model_input(model, plane, mask)
    model.G.check_size(inp)
    shape = (int(inp.shape[-2]), int(inp.shape[-1]))
    attention_cells = _plane_cells(shape, attention_grid, m)
    ipr_cells = _plane_cells(shape, prior_grid, m)
    layers = sum(isinstance(mod, Attention) for mod in model.G.modules())
    with torch.no_grad():  # not inference_mode: the state may meet autograd-enabled code later
        start = _start_noise(model, noise, generator, inp)
        ipr = _plane_ipr(model, inp, ipr_cells, cell, start)
        z = ipr[0, 0].unsqueeze(0)
        maps: list[torch.Tensor | None] = [None] * layers
        windows = _windows(shape, cell, halo, attention_grid)
        total = statistics_work(layers, windows, passes, tolerance)
        done = 0

        def run(sums: AttentionSums, collect: Sequence[int], stop_after: int) -> None:
            nonlocal done
            for win in windows:
                ey0, ey1, ex0, ex1 = win.extent
                state = PlaneState(shape, ipr, ipr_cells, tuple(maps), attention_cells)  # type: ignore[arg-type]
                hook = state.hook((ey0, ex0), (ey1 - ey0, ex1 - ex0), sums=sums, collect=collect,
                                  core=win.core, stop_after=stop_after)
                token = PLANE_HOOK.set(hook)
                try:
                    model.G(inp[..., ey0:ey1, ex0:ex1], z)
                except StopForward:
                    pass
                finally:
                    PLANE_HOOK.reset(token)
                done += _window_work(win, stop_after)
                if on_window is not None:
                    on_window(min(done, total), total)

        if passes is None and tolerance is None:
            for layer in range(layers):
                sums = AttentionSums(attention_cells)
                run(sums, (layer,), layer)
                maps[layer] = sums.attention(layer)
        else:
            for _ in range((layers if passes is None else passes) if layers else 0):
                sums = AttentionSums(attention_cells)
                run(sums, range(layers), layers - 1)
                previous, maps = maps, [sums.attention(layer) for layer in range(layers)]
                if tolerance is not None and previous[0] is not None and _largest_change(previous, maps) <= tolerance:
                    break
        if on_window is not None and done < total:
            on_window(total, total)  # settled early
    return PlaneState(shape, ipr, ipr_cells, tuple(maps), attention_cells)  # type: ignore[arg-type]


def _windows(shape: tuple[int, int], cell: int, halo: int, attention_grid: int | None) -> list[Window]:
    return list(walk(*shape, cell, halo) if attention_grid is None else walk(*shape, attention_grid, 0))


def _window_work(win: Window, stop_after: int) -> int:
    """A window's forward up to attention layer ``stop_after``: its pixels times the layers run
    (a DIRformer level's blocks cost about the same whatever the level: 4x fewer pixels, 2x the
    channels)."""
    ey0, ey1, ex0, ex1 = win.extent
    return (ey1 - ey0) * (ex1 - ex0) * (stop_after + 1)


def statistics_work(layers: int, windows: Sequence[Window], passes: int | None = None,
                    tolerance: float | None = None) -> int:
    """What :func:`prepare_plane` computes, in pixel-layers (one attention layer on one pixel of
    the model input): layer by layer, the pass for layer ``l`` runs every window up to ``l``;
    with ``passes`` or ``tolerance``, every pass runs them all (as many passes as allowed; a
    ``tolerance`` may end sooner). A whole forward of an H x W input is ``H * W * layers``."""
    if not layers:
        return 0
    exact = passes is None and tolerance is None
    per_layer = [sum(_window_work(w, stop) for w in windows) for stop in range(layers)]
    if exact:
        return sum(per_layer)
    return (layers if passes is None else passes) * per_layer[-1]


def statistics_forwards(model: DiffIRS2, shape: tuple[int, int], *, cell: int = 256, halo: int | None = None,
                        attention_grid: int | None = None, passes: int | None = None,
                        tolerance: float | None = None) -> float:
    """:func:`prepare_plane`'s work on an (H, W) model input, in forwards of the whole input (for
    progress: the engine weighs it against the tiles)."""
    layers = sum(isinstance(mod, Attention) for mod in model.G.modules())
    if not layers:
        return 0.0
    windows = _windows(shape, cell, _default_halo(model) if halo is None else halo, attention_grid)
    return statistics_work(layers, windows, passes, tolerance) / (shape[0] * shape[1] * layers)


def _default_halo(model: DiffIRS2) -> int:
    return 32 * model.G.unshuffle


def _largest_change(before: Sequence[torch.Tensor | None], after: Sequence[torch.Tensor]) -> float:
    return max(float((b - a).abs().max()) for a, b in zip(before, after, strict=True) if a is not None)


def restore_tile_with(
    model: DiffIRS2,
    tile: torch.Tensor,
    state: PlaneState,
    origin: tuple[int, int] = (0, 0),
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Restore a (1, C, h, w) tile at ``origin`` (y, x) of the plane ``state`` was prepared on.

    Returns the network output (as :meth:`DiffIRS2.restore` does; compositing known pixels of an
    inpainting is the caller's). Tiles that overlap by :func:`receptive_radius` give the plane's
    result exactly; the error of smaller overlaps is measured in benchmarks/bench_tile_independence.py.
    """
    inp = model_input(model, tile, mask)
    model.G.check_size(inp)
    (y0, x0), (h, w) = (int(origin[0]), int(origin[1])), (int(inp.shape[-2]), int(inp.shape[-1]))
    if y0 < 0 or x0 < 0 or y0 + h > state.shape[0] or x0 + w > state.shape[1]:
        raise ValueError(f"A {h}x{w} tile at {(y0, x0)} does not lie in the {state.shape} plane it was prepared for")
    hook = state.hook((y0, x0), (h, w))
    token = PLANE_HOOK.set(hook)
    try:
        return model.G(inp, state.ipr[0, 0].unsqueeze(0))
    finally:
        PLANE_HOOK.reset(token)
