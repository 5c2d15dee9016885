"""Run an in-memory :class:`~.plan.Plan`: plane by plane, channel group by group, tile by tile.

Each plane is normalised, padded once to the restorer's multiple and cut into aligned,
overlapping tiles; each tile goes through the restorer on the plan's device and precision, and
the results are blended back, cropped and inverse-normalised. Out of memory halves the tile.
Progress and cancel are plain callables, so every frontend adapts them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..restorer import RestorationCancelled, Restorer, TileContext
from . import dihedral
from .cancel import call_cancellable, check_cancel
from .device import autocast, is_out_of_memory
from .heap import release_free_memory
from .normalize import fit_normalizer, to_dtype, working_dtype
from .settings import MIN_TILE
from .standardize import standardize
from .tiling import PlaneTiling, Tile, pad_to

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["Execution", "ProgressFn", "check_cancel", "execute", "finish", "needs_plane_statistics", "tile_seed"]

ProgressFn = Callable[[float, int, str], None]


def execute(plan: Plan, progress: ProgressFn | None = None, cancel: Any = None) -> np.ndarray:
    """The restored array of an in-memory plan, in the input's axes."""
    return Execution(plan, progress, cancel).run()


def finish(plan: Plan, out_work: np.ndarray, norm, layout) -> np.ndarray:
    """A restored (N, C_out, Y*s, X*s) working array back in ``layout``'s axes, intensities and
    the output dtype (``out_work`` is consumed)."""
    final = np.empty(out_work.shape, working_dtype(plan.output_dtype))
    for n in range(out_work.shape[0]):
        final[n] = norm.inverse(out_work[n], final.dtype) if plan.info.inverse_output else out_work[n]
    del out_work
    out = layout.from_work(final, plan.channels.out_channels, plan.info.scale)
    if plan.output_dtype is not None:
        out = to_dtype(out, plan.output_dtype)
    return np.ascontiguousarray(out)


def has_plane_statistics(restorer: Any) -> bool:
    """Whether tiles of ``restorer`` share statistics of their whole plane (:meth:`Restorer.prepare_plane`)."""
    return type(restorer).prepare_plane is not Restorer.prepare_plane


def needs_plane_statistics(restorer: Any, tiling: PlaneTiling) -> bool:
    """Whether a tiled run computes ``restorer``'s statistics of each whole plane first
    (:meth:`Restorer.prepare_plane`); one tile covering the plane computes them itself."""
    return len(tiling.tiles) > 1 and has_plane_statistics(restorer)


class Execution:
    """One run of a plan: the progress count and the normaliser shared by its tiles."""

    def __init__(self, plan: Plan, progress: ProgressFn | None, cancel: Any) -> None:
        self.plan = plan
        self.info = plan.restorer.info
        self.progress = progress
        self.cancel = cancel
        self.done = 0
        self.total = 0
        self.statistics_units = 0.0  # a plane's statistics pass, in tiles (progress; set by run)

    def run(self) -> np.ndarray:
        p = self.plan
        layout = p.layout
        work = layout.to_work(p.data)  # view, (N, C, Y, X)
        norm = p.normalizer
        if norm is None:
            norm = fit_normalizer(work, p.settings.normalize, p.settings.percentiles)
        problem = norm.representable_problem(work.dtype, p.output_dtype)
        if problem is not None:
            raise ValueError(problem)
        n_planes = work.shape[0]
        groups = p.channels.groups
        h, w = layout.yx
        s = self.info.scale
        out_work = np.empty((n_planes, p.channels.out_channels, h * s, w * s), np.float32)
        p.restorer.to(p.device)
        tiling = p.tiling(h, w)
        self.statistics_units = self._statistics_units(tiling)
        self.total = n_planes * len(groups) * (len(tiling.tiles) + self.statistics_units)
        check_cancel(self.cancel)
        self.report(0.0, "starting")
        for n in range(n_planes):
            plane = norm.forward(np.asarray(work[n]))
            mask = None if p.mask is None else p.mask[n if p.mask.shape[0] > 1 else 0]
            for gi, group in enumerate(groups):
                res = self._restore_plane(plane[group.inputs], mask, n, gi)
                if group.average:
                    res = res.mean(axis=0, keepdims=True)
                out_work[n, group.outputs] = res
        check_cancel(self.cancel)
        if self.info.standardize_output is not None:  # whole-output statistics (a dask graph applies its own)
            standardize(out_work, self.info.standardize_output)
        return finish(p, out_work, norm, layout)

    def _statistics_units(self, tiling: PlaneTiling) -> float:
        """A plane's statistics pass in the progress count's unit (one tile): its cost in
        forwards of the plane times the tiles one forward of the plane is worth."""
        if not needs_plane_statistics(self.plan.restorer, tiling):
            return 0.0
        tile_pixels = sum(t.h * t.w for t in tiling.tiles) / len(tiling.tiles)
        forwards = self.plan.restorer.plane_statistics_cost(tiling.ph, tiling.pw)
        return forwards * tiling.ph * tiling.pw / tile_pixels

    def report(self, frac: float, message: str) -> None:
        if self.progress is not None:
            self.progress(min(self.done + frac, self.total), self.total, message)

    def _restore_plane(self, x: np.ndarray, mask, n: int, gi: int) -> np.ndarray:
        """Restore one (C, Y, X) plane tile by tile, halving the tile on out-of-memory."""
        tile = self.plan.tile
        device = self.plan.device
        while True:
            try:
                return self._tiled(x, mask, tile, n, gi)
            except RestorationCancelled:
                raise
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                h, w = x.shape[-2:]
                current = min(tile, max(h, w))
                if current // 2 < max(MIN_TILE, self.info.min_size):
                    raise MemoryError(
                        f"Out of memory on {device} even with {current}-pixel tiles; "
                        "use a smaller tile_size, precision='bf16' (or 'fp16' on GPU), "
                        "or device='cpu'"
                    ) from exc
                tile = current // 2

    def _tiled(self, x: np.ndarray, mask, tile: int, n: int, gi: int) -> np.ndarray:
        """Pad the plane once to the restorer's multiple, restore aligned tiles, blend, crop back."""
        p = self.plan
        s = self.info.scale
        _, h, w = x.shape
        tiling = p.tiling(h, w, tile)
        xp = pad_to(torch.from_numpy(np.ascontiguousarray(x))[None], tiling.ph, tiling.pw)[0].numpy()
        mp = None
        if mask is not None:
            mp = pad_to(torch.from_numpy(np.ascontiguousarray(mask))[None, None], tiling.ph, tiling.pw)[0, 0].numpy()
        state = None
        if needs_plane_statistics(p.restorer, tiling):
            state = self.prepare(xp, mp, n, gi)
            self.done += self.statistics_units
        acc = np.zeros((self.plan.channels.group_out, tiling.ph * s, tiling.pw * s), np.float32)
        wsum = np.zeros((tiling.ph * s, tiling.pw * s), np.float32)
        start_done = self.done
        for k, t in enumerate(tiling.tiles):
            check_cancel(self.cancel)
            region = xp[:, t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
            m = None if mp is None else mp[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
            ys, xs = t.output_slices(s)
            acc[:, ys, xs] += self.weighted_tile(region, m, t, tiling, n, gi, state, k)
            wsum[ys, xs] += tiling.weight(t)
            self.done = start_done + k + 1
            self.report(0.0, f"{self._where(n, gi)}tile {k + 1}/{len(tiling.tiles)}")
        return np.divide(acc, wsum, out=acc)[:, : h * s, : w * s]  # in place: one plane less in memory

    def prepare(self, xp: np.ndarray, mp: np.ndarray | None, n: int, gi: int) -> Any:
        """The restorer's statistics of the whole padded (C, ph, pw) plane (``None`` for most);
        with ``tta``, a list of those of its eight transforms (the tiles' views of them)."""
        if not self.plan.settings.tta:
            return self._prepare_view(xp, mp, n, gi)
        return [self._prepare_view(dihedral.forward(xp, j), None if mp is None else dihedral.forward(mp, j), n, gi,
                                   (j, dihedral.COUNT))
                for j in range(dihedral.COUNT)]

    def _prepare_view(self, xp: np.ndarray, mp: np.ndarray | None, n: int, gi: int,
                      view: tuple[int, int] = (0, 1)) -> Any:
        p = self.plan
        check_cancel(self.cancel)
        j, views = view
        label = f"{self._where(n, gi)}plane statistics" + (f", view {j + 1}/{views}" if views > 1 else "")
        units = self.statistics_units
        self.report(units * j / views, label)
        inp = torch.from_numpy(np.ascontiguousarray(xp))[None].to(p.device)
        mask_t = None if mp is None else torch.from_numpy(np.ascontiguousarray(mp))[None, None].to(p.device)

        def on_step(done: int, total: int) -> None:
            check_cancel(self.cancel)
            part = done / total if total else 1.0
            self.report(units * (j + part) / views, f"{label}, {round(100 * part)}%")

        ctx = TileContext(steps=p.settings.steps, seed=self._seed_for(n, gi), image_shape=tuple(xp.shape[-2:]),
                          scale=self.info.scale, mask=mask_t, step_callback=on_step)

        def call():
            with torch.inference_mode(), autocast(p.device, p.precision):  # as its tiles run
                return p.restorer.prepare_plane(inp, ctx)

        try:
            return call_cancellable(call, self.cancel)
        finally:  # the statistics' forwards are freed: do not let this thread's heap keep them
            release_free_memory()

    def weighted_tile(self, region: np.ndarray, mask, t: Tile, tiling: PlaneTiling, n: int, gi: int,
                      state: Any, k: int = 0) -> np.ndarray:
        """Tile ``t`` of the padded plane (its pixels ``region``) restored, times its blend weight."""
        return self._run_tile(region, mask, t, tiling, n, gi, state, k) * tiling.weight(t)

    def _where(self, n: int, gi: int) -> str:
        """'plane 2/5, channel 1/3, ' prefix for progress messages of nD/multichannel data."""
        parts = []
        loop_shape = self.plan.layout.loop_shape
        n_planes = int(np.prod(loop_shape)) if loop_shape else 1
        if n_planes > 1:
            parts.append(f"plane {n + 1}/{n_planes}")
        groups = len(self.plan.channels.groups)
        if groups > 1:
            parts.append(f"channel {gi + 1}/{groups}")
        return ", ".join(parts) + (", " if parts else "")

    def _run_tile(self, region: np.ndarray, mask, t: Tile, tiling: PlaneTiling, n: int, gi: int,
                  state: Any, k: int) -> np.ndarray:
        """Tile ``t`` restored; with ``tta``, the mean of its eight transforms' restorations, each
        restored as that tile of the transformed plane (its origin, plane size and statistics)."""
        plane = (tiling.ph, tiling.pw)
        if not self.plan.settings.tta:
            return self._run_view(region, mask, (t.y0, t.x0, t.h, t.w), plane, n, gi, state, k, len(tiling.tiles))
        acc = None
        for j in range(dihedral.COUNT):
            out = self._run_view(
                dihedral.forward(region, j), None if mask is None else dihedral.forward(mask, j),
                dihedral.box(t.y0, t.x0, t.h, t.w, plane, j), dihedral.shape(*plane, j), n, gi,
                None if state is None else state[j], k, len(tiling.tiles), (j, dihedral.COUNT))
            back = dihedral.inverse(out, j)
            acc = back.copy() if acc is None else np.add(acc, back, out=acc)
        return np.divide(acc, dihedral.COUNT, out=acc)

    def _run_view(self, region: np.ndarray, mask, where: tuple[int, int, int, int], plane: tuple[int, int],
                  n: int, gi: int, state: Any, k: int, n_tiles: int, view: tuple[int, int] = (0, 1)) -> np.ndarray:
        """The restorer on one tile: ``region`` at ``where`` (y0, x0, h, w) of a padded ``plane``
        (H, W); ``view`` = (transform, count) places its sampling steps in the tile's progress."""
        p = self.plan
        s = self.info.scale
        y0, x0, th, tw = where
        j, views = view
        inp = torch.from_numpy(np.ascontiguousarray(region)).unsqueeze(0).to(p.device)
        mask_t = None
        if mask is not None:
            mask_t = torch.from_numpy(np.ascontiguousarray(mask))[None, None].to(p.device)
        label = f"{self._where(n, gi)}tile {k + 1}/{n_tiles}" + (f", view {j + 1}/{views}" if views > 1 else "")

        def on_step(done: int, total: int) -> None:
            check_cancel(self.cancel)
            self.report((j + done / max(total, 1)) / views, f"{label}, step {done}/{total}")

        ctx = TileContext(
            steps=p.settings.steps, seed=self._seed_for(n, gi), origin=(y0, x0),
            image_shape=plane, scale=s, mask=mask_t, step_callback=on_step, plane=state,
        )

        def call():
            with torch.inference_mode(), autocast(p.device, p.precision):
                return p.restorer.restore_tile(inp, ctx)

        out = call_cancellable(call, self.cancel)  # returns on cancel even if ctx.step is never called
        expected = (1, p.channels.group_out, th * s, tw * s)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"Restorer {self.info.name!r} returned {got}, but expected (B, C, H*s, W*s) = {expected}"
            )
        result = out.float().cpu().numpy()[0]
        finite = np.isfinite(result)
        if not finite.all():
            raise ValueError(
                f"Restorer {self.info.name!r} returned {int(result.size - np.count_nonzero(finite))} NaN or "
                f"infinite values for tile {k + 1} ({self._where(n, gi)}y {y0}, x {x0}"
                f"{f' of view {j + 1}/{views}' if views > 1 else ''}); its weights or "
                "options are broken, or the precision is too low (try precision='fp32')"
            )
        return result

    def _seed_for(self, plane: int, group: int) -> int:
        """Distinct, reproducible seeds per plane and channel group (one field per 2-D image)."""
        if self.plan.plane_ids is not None:  # a block of a larger array: seed by the global plane
            plane = self.plan.plane_ids[plane]
        return tile_seed(self.plan.seed, plane, group)


def tile_seed(seed: int, plane: int = 0, group: int = 0) -> int:
    """The seed a restorer's tiles get (``TileContext.seed``) for a run's ``seed``, a plane and a
    channel group; exported bioimage.io packages fix it (plane 0, group 0)."""
    return (seed * 1_000_003 + plane * 7_919 + group) & 0x7FFFFFFF
