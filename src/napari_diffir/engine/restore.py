"""The in-memory restoration behind ``napari_diffir.restore``: validate, then restore tile by tile.

axes -> (N, C, Y, X) -> normalise -> channel mapping -> tiles (padded to the restorer's multiple,
overlapping) -> restorer on device/precision -> blended output -> inverse normalise -> dtype ->
input axes. Progress and cancel are plain callables so every frontend can adapt them. The dask
path (:mod:`.lazy`) runs every block through :func:`prepare` and :class:`Run` too.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import torch

from ..registry import get_restorer
from ..restorer import RestorationCancelled, Restorer, TileContext
from .axes import Layout, as_array, default_axes, validate_axes
from .device import autocast, free_memory_bytes, is_out_of_memory, resolve_device
from .normalize import Normalizer, fit_normalizer, to_dtype
from .tiling import Tile, blend_weight, make_tiles, pad_to, padded_size

ProgressFn = Callable[[float, int, str], None]

MIN_TILE = 32


def _check_cancel(cancel: Any) -> None:
    if cancel is None:
        return
    flag = cancel.is_set() if hasattr(cancel, "is_set") else bool(cancel())
    if flag:
        raise RestorationCancelled("restoration cancelled")


def resolve_restorer(restorer: "str | Restorer", weights: Any, options: dict | None) -> Restorer:
    if isinstance(restorer, Restorer):
        if weights is not None or options:
            raise ValueError("weights= and options= apply to a restorer name, not to a Restorer instance")
        return restorer
    if not isinstance(restorer, str):
        raise ValueError(f"restorer must be a registered name or a Restorer, but got {type(restorer).__name__}")
    opts = dict(options or {})
    if weights is not None:
        opts["weights"] = str(weights)
    return get_restorer(restorer, **opts)


MIN_IMAGE = 4


def validate_input(array: np.ndarray) -> None:
    if array.size == 0:
        raise ValueError(f"The image is empty (shape {array.shape})")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"Expected a numeric image, but got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError("Complex images are not supported; pass the magnitude or real part")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"The image contains {bad} NaN or infinite values; replace them first")


class Run:
    """A validated restoration, ready to execute (built by :func:`prepare`)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def execute(self, progress: ProgressFn | None = None, cancel: Any = None) -> np.ndarray:
        info = self.restorer.info
        layout: Layout = self.layout
        work = layout.to_work(self.array)  # view, (N, C, Y, X)
        n_planes = work.shape[0]
        groups = self.groups
        h, w = layout.yx
        s = info.scale
        out_work = np.empty((n_planes, self.out_channels, h * s, w * s), np.float32)
        self.restorer.to(self.device)
        total_tiles = n_planes * len(groups) * len(self._plane_tiles(h, w, self.tile)[2])
        state = {"done": 0}

        def report(frac: float, msg: str) -> None:
            if progress is not None:
                progress(min(state["done"] + frac, total_tiles), total_tiles, msg)

        _check_cancel(cancel)
        report(0.0, "starting")
        for n in range(n_planes):
            plane = self.normalizer.forward(np.asarray(work[n]))
            mask = None if self.mask_work is None else self.mask_work[n if self.mask_work.shape[0] > 1 else 0]
            for gi, (in_idx, out_idx, reduce) in enumerate(groups):
                x = plane[in_idx]
                res = self._restore_plane(x, mask, n, gi, report, cancel, state)
                if reduce:
                    res = res.mean(axis=0, keepdims=True)
                out_work[n, out_idx] = res
        _check_cancel(cancel)
        out_work = self._inverse(out_work)
        out = layout.from_work(out_work, self.out_channels, s)
        if self.output_dtype is not None:
            out = to_dtype(out, self.output_dtype)
        return np.ascontiguousarray(out)

    def _inverse(self, out_work: np.ndarray) -> np.ndarray:
        for n in range(out_work.shape[0]):
            out_work[n] = self.normalizer.inverse(out_work[n])
        return out_work

    def _restore_plane(self, x, mask, n, gi, report, cancel, state) -> np.ndarray:
        """Restore one (C, Y, X) plane tile by tile, halving the tile on out-of-memory."""
        tile = self.tile
        while True:
            try:
                return self._tiled(x, mask, tile, n, gi, report, cancel, state)
            except RestorationCancelled:
                raise
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                h, w = x.shape[-2:]
                current = min(tile, max(h, w))
                if current // 2 < max(MIN_TILE, self.restorer.info.min_size):
                    raise MemoryError(
                        f"Out of memory on {self.device} even with {current}-pixel tiles; "
                        "use a smaller tile_size, precision='bf16' (or 'fp16' on GPU), "
                        "or device='cpu'"
                    ) from exc
                tile = current // 2

    def _tiled(self, x, mask, tile, n, gi, report, cancel, state) -> np.ndarray:
        """Pad the plane once to the restorer's multiple, restore aligned tiles, blend, crop back."""
        s = self.restorer.info.scale
        _, h, w = x.shape
        ph, pw, tiles, overlap = self._plane_tiles(h, w, tile)
        xp = pad_to(torch.from_numpy(np.ascontiguousarray(x))[None], ph, pw)[0].numpy()
        mp = None
        if mask is not None:
            mp = pad_to(torch.from_numpy(np.ascontiguousarray(mask))[None, None], ph, pw)[0, 0].numpy()
        acc = np.zeros((self.group_out, ph * s, pw * s), np.float32)
        wsum = np.zeros((ph * s, pw * s), np.float32)
        start_done = state["done"]
        for k, t in enumerate(tiles):
            _check_cancel(cancel)
            out = self._run_tile(xp, mp, t, ph, pw, report, cancel, n, gi, k, len(tiles))
            wt = blend_weight(t, ph, pw, overlap, s) if len(tiles) > 1 else np.ones(out.shape[-2:], np.float32)
            ys, xs = slice(t.y0 * s, (t.y0 + t.h) * s), slice(t.x0 * s, (t.x0 + t.w) * s)
            acc[:, ys, xs] += out * wt
            wsum[ys, xs] += wt
            state["done"] = start_done + k + 1
            report(0.0, f"{self._where(n, gi)}tile {k + 1}/{len(tiles)}")
        return (acc / wsum)[:, : h * s, : w * s]

    def _plane_tiles(self, h: int, w: int, tile: int) -> tuple[int, int, list[Tile], int]:
        """Padded plane size, its tiles (aligned to the restorer's multiple) and the overlap."""
        info = self.restorer.info
        m = info.multiple_of
        ph, pw = padded_size(h, m, info.min_size), padded_size(w, m, info.min_size)
        tile = max(padded_size(info.min_size, m, 1), min(tile, max(ph, pw)) // m * m)
        overlap = min(self.overlap, tile // 2)
        return ph, pw, make_tiles(ph, pw, tile, overlap, align=m), overlap

    def _where(self, n: int, gi: int) -> str:
        """'plane 2/5, channel 1/3, ' prefix for progress messages of nD/multichannel data."""
        parts = []
        n_planes = int(np.prod(self.layout.loop_shape)) if self.layout.loop_shape else 1
        if n_planes > 1:
            parts.append(f"plane {n + 1}/{n_planes}")
        if len(self.groups) > 1:
            parts.append(f"channel {gi + 1}/{len(self.groups)}")
        return ", ".join(parts) + (", " if parts else "")

    def _run_tile(self, x, mask, t: Tile, h, w, report, cancel, n, gi, k, n_tiles) -> np.ndarray:
        info = self.restorer.info
        s = info.scale
        region = np.ascontiguousarray(x[:, t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w])
        inp = torch.from_numpy(region).unsqueeze(0).to(self.device)
        mask_t = None
        if mask is not None:
            m = np.ascontiguousarray(mask[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w])
            mask_t = torch.from_numpy(m)[None, None].to(self.device)

        def on_step(done: int, total: int) -> None:
            _check_cancel(cancel)
            report(done / max(total, 1), f"{self._where(n, gi)}tile {k + 1}/{n_tiles}, step {done}/{total}")

        oy, ox = self.origin_offset  # a dask block's place in the whole image (0, 0 otherwise)
        ctx = TileContext(
            steps=self.steps, seed=self.seed_for(n, gi), origin=(oy + t.y0, ox + t.x0),
            image_shape=self.image_yx or (h, w), scale=s, mask=mask_t, step_callback=on_step,
        )
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.restorer.restore_tile(inp, ctx)
        expected = (1, self.group_out, t.h * s, t.w * s)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"Restorer {info.name!r} returned {got}, but expected (B, C, H*s, W*s) = {expected}"
            )
        return out.float().cpu().numpy()[0]

    def seed_for(self, plane: int, group: int) -> int:
        """Distinct, reproducible seeds per plane and channel group (one field per 2-D image)."""
        if self.plane_ids is not None:  # a block of a larger array: seed by the global plane
            plane = int(self.plane_ids[plane])
        return (self.seed * 1_000_003 + plane * 7_919 + group) & 0x7FFFFFFF


def prepare(
    array: np.ndarray,
    restorer: "str | Restorer",
    *,
    axes: str | None = None,
    weights: Any = None,
    tile_size: "int | str | None" = "auto",
    tile_overlap: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    steps: int | None = None,
    seed: int | None = None,
    mask: Any = None,
    normalize: str = "percentile",
    percentiles: tuple[float, float] = (1.0, 99.8),
    output_dtype: Any = None,
    rgb: bool | None = None,
    options: dict | None = None,
    normalizer: Normalizer | None = None,
    origin_offset: tuple[int, int] = (0, 0),
    plane_ids: Any = None,
    image_yx: tuple[int, int] | None = None,
) -> Run:
    """Validate everything and build a :class:`Run`; raises ``ValueError`` naming the problem.

    ``normalizer``, ``origin_offset``, ``plane_ids`` and ``image_yx`` place ``array`` as one block
    of a larger image (used by the dask path): the whole image's normaliser, the block's (y, x)
    offset in it, the global plane number of each of the block's planes (seeds) and the whole
    image's (H, W). Stochastic restorers then draw the same noise as for the whole image.
    """
    validate_input(array)
    ax = validate_axes(axes, array.shape) if axes is not None else default_axes(array.shape, rgb)
    layout = Layout(ax, tuple(array.shape))
    if min(layout.yx) < MIN_IMAGE:
        raise ValueError(
            f"The image is too small ({layout.yx[0]}x{layout.yx[1]} in Y, X); at least "
            f"{MIN_IMAGE}x{MIN_IMAGE} pixels are needed (check axes={ax!r})"
        )
    rest = resolve_restorer(restorer, weights, options)
    info = rest.info
    dev = resolve_device(device)
    autocast(dev, precision)  # validates the precision name for this device
    if precision != "fp32" and not info.supports_half:
        raise ValueError(f"Restorer {info.name!r} does not support precision {precision!r}; use 'fp32'")
    if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ValueError(f"steps must be a positive integer, but got {steps!r}")
    if steps is not None and not (info.sampling_steps or info.option("steps") is not None):
        raise ValueError(f"Restorer {info.name!r} has no sampling steps; leave steps unset")
    groups, out_channels, group_out = _channel_groups(layout, info)
    if output_dtype == "input":
        output_dtype = array.dtype
    elif output_dtype is not None:
        output_dtype = np.dtype(output_dtype)
    h, w = layout.yx
    tile = _tile_size(tile_size, info, h, w, dev)
    overlap = info.tile_overlap if tile_overlap is None else int(tile_overlap)
    if overlap < 0:
        raise ValueError(f"tile_overlap must be >= 0, but got {tile_overlap!r}")
    if overlap >= tile and max(h, w) > tile:
        raise ValueError(f"tile_overlap ({overlap}) must be smaller than tile_size ({tile})")
    mask_work = _prepare_mask(mask, layout, info)
    work = layout.to_work(array)
    norm = normalizer or fit_normalizer(work, normalize, percentiles)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    return Run(
        array=array, layout=layout, restorer=rest, device=dev, precision=precision, steps=steps,
        seed=int(seed), groups=groups, out_channels=out_channels, group_out=group_out, tile=tile,
        overlap=overlap, mask_work=mask_work, normalizer=norm, output_dtype=output_dtype,
        origin_offset=(int(origin_offset[0]), int(origin_offset[1])),
        plane_ids=None if plane_ids is None else [int(p) for p in plane_ids],
        image_yx=None if image_yx is None else (int(image_yx[0]), int(image_yx[1])),
    )


def _channel_groups(layout: Layout, info) -> tuple[list[tuple[Any, Any, bool]], int, int]:
    """How image channels feed the model: (input index, output index, average-back) per group."""
    c = layout.channels
    cin, cout = info.in_channels, info.out_channels
    if cin is None:  # any number of channels, processed together
        out = c if cout is None else cout
        return [(slice(None), slice(None), False)], out, out
    if cin == c:
        out = c if cout is None else cout
        return [(slice(None), slice(None), False)], out, out
    if cin == 1 and (cout in (None, 1)):
        return [([i], [i], False) for i in range(c)], c, 1
    if c == 1 and (cout in (None, cin)):  # grayscale into an RGB model: replicate, average back
        return [([0] * cin, [0], True)], 1, cin
    raise ValueError(
        f"Restorer {info.name!r} takes {cin} channel(s) but the image has {c} "
        f"(axes {layout.axes!r}, shape {layout.shape}); select a channel or use a matching restorer"
    )


def _tile_size(tile_size, info, h: int, w: int, dev: torch.device) -> int:
    if tile_size is None:
        return max(h, w)
    if isinstance(tile_size, str):
        if tile_size.strip().lower() != "auto":
            try:
                tile_size = int(tile_size)
            except ValueError:
                raise ValueError(f"tile_size must be 'auto', None or an integer, but got {tile_size!r}") from None
        else:
            return auto_tile_size(info, dev)
    if not isinstance(tile_size, (int, np.integer)) or tile_size < max(MIN_TILE, info.min_size):
        raise ValueError(f"tile_size must be an integer >= {max(MIN_TILE, info.min_size)}, but got {tile_size!r}")
    return int(tile_size)


def auto_tile_size(info, dev: torch.device) -> int:
    """The restorer's preferred tile, halved until its memory estimate fits in half the free memory."""
    tile = getattr(info, "tile_size", 512) or 512
    budget = free_memory_bytes(dev) * 0.5
    per_pixel = getattr(info, "bytes_per_pixel", 4096)
    while tile > MIN_TILE and tile * tile * info.scale**2 * per_pixel > budget:
        tile //= 2
    return max(tile, MIN_TILE)


def _prepare_mask(mask: Any, layout: Layout, info) -> np.ndarray | None:
    if mask is None:
        if info.needs_mask:
            raise ValueError(f"Restorer {info.name!r} needs a mask (1 = pixels to fill); pass mask=")
        return None
    m = as_array(mask)
    h, w = layout.yx
    if m.shape == (h, w):
        return (m > 0).astype(np.float32)[None]
    no_c = tuple(n for a, n in zip(layout.axes, layout.shape) if a != "C")
    if m.shape == no_c:
        ax = "".join(a for a in layout.axes if a != "C")
        sub = Layout(ax, m.shape)
        return (sub.to_work(m)[:, 0] > 0).astype(np.float32)
    raise ValueError(
        f"mask has shape {m.shape}, but expected {(h, w)} (Y, X) or {no_c} (the image without C)"
    )
