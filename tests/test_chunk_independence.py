"""Large images restore like small ones: the tiling comes from the whole plane, never the chunks.

Every restorer (random tiny DiffIR of each variant, a tiny SRDiff, the baselines) gives the
in-memory result from a dask array at any chunking and from a streamed file; a tiled DiffIR run
shares one plane's statistics, so the bundled denoiser leaves no seams on a real sample.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_diffir import restore
from napari_diffir.batch import restore_file
from napari_diffir.engine.tiling import plane_tiling
from napari_diffir.restorers.bundled import DiffIRDenoise

from .test_restorer_diffir import tiny

CHUNKINGS = [(1, 13, 29), (2, 40, 17), (2, 64, 72)]


def _image(shape=(2, 64, 72), seed=0) -> np.ndarray:
    """A smooth image with noise in [0, 1] (restorers see it as is: normalize='none')."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[1], : shape[2]] / 16.0
    base = 0.5 + 0.3 * np.sin(yy) * np.cos(xx)
    return np.clip(base[None] + rng.normal(0, 0.1, shape), 0, 1).astype(np.float32)


def _checkpoint(tmp_path, task: str, scale: int | None = None) -> str:
    path = tmp_path / f"diffir-{task}{scale or ''}.pth"
    sd = tiny(task=task, scale=scale).state_dict()
    torch.save({"params": sd, "params_ema": sd}, path)
    return str(path)


def _srdiff(tmp_path) -> str:
    from .test_restorer_srdiff import _save, _tiny_model

    return _save(_tiny_model(), tmp_path / "srdiff.safetensors")


def _cases(tmp_path):
    """(name, restore keywords) of every kind of restorer, with tiles small enough to need several."""
    common = dict(axes="ZYX", normalize="none", seed=3, tile_size=32, tile_overlap=8)
    return {
        "diffir-deblur": ("diffir", dict(common, weights=_checkpoint(tmp_path, "deblur"))),
        "diffir-sr2": ("diffir", dict(common, weights=_checkpoint(tmp_path, "sr", 2))),
        "srdiff": ("srdiff", dict(common, weights=_srdiff(tmp_path), steps=2)),
        "lanczos": ("lanczos", common),
        "tv": ("tv", common),
        "nlmeans": ("nlmeans", common),
    }


@pytest.mark.parametrize("case", ["diffir-deblur", "diffir-sr2", "srdiff", "lanczos", "tv", "nlmeans"])
def test_dask_equals_in_memory_at_any_chunking(tmp_path, case):
    """Uneven chunks smaller and larger than the tiles give the in-memory result to 1e-4."""
    name, kw = _cases(tmp_path)[case]
    img = _image()
    ref = restore(img, name, **kw)
    assert plane_tiling(64, 72, 32, 8, 8, 8, 1).tiles[1:]  # several tiles per plane
    for chunks in CHUNKINGS:
        out = restore(da.from_array(img, chunks=chunks), name, **kw)
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.compute(scheduler="threads"), ref, rtol=0, atol=1e-4, err_msg=str(chunks))


def test_inpainting_with_a_mask_is_chunk_independent(tmp_path):
    """A DiffIR inpainting net with its plane statistics: the mask is cut like the image."""
    img = _image((1, 64, 72))
    mask = np.zeros((64, 72), bool)
    mask[20:40, 10:60:3] = True
    kw = dict(axes="ZYX", normalize="none", seed=3, tile_size=32, tile_overlap=8,
              weights=_checkpoint(tmp_path, "inpaint"), mask=mask)
    ref = restore(img, "diffir-inpaint", **kw)
    np.testing.assert_allclose(ref[0][~mask], img[0][~mask], rtol=0, atol=1e-6)  # known pixels are kept
    for chunks in [(1, 13, 29), (1, 40, 17)]:
        out = restore(da.from_array(img, chunks=chunks), "diffir-inpaint", **kw).compute()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_streamed_file_equals_in_memory(tmp_path):
    """restore_file (TIFF in, OME-Zarr out, small blocks) writes the in-memory DiffIR result."""
    img = _image()
    src = str(tmp_path / "in.tif")
    tifffile.imwrite(src, img)
    name, kw = _cases(tmp_path)["diffir-deblur"]
    out = str(tmp_path / "out.ome.zarr")
    restore_file(src, out, name, chunk=24, progress=False, **kw)
    got = zarr.open_array(out + "/0", mode="r")[:]
    np.testing.assert_allclose(got, restore(img, name, **kw), rtol=0, atol=1e-4)


def test_streamed_file_with_the_default_tile_equals_in_memory(tmp_path, monkeypatch):
    """With ``tile_size="auto"`` a DiffIR plane above its tile but small enough to be one tile
    in memory is one tile streamed too (no statistics pass), so the two runs agree."""
    from napari_diffir.restorers.diffir import DiffIRRestorer

    img = _image((1, 448, 432))[0]
    src = str(tmp_path / "in.tif")
    tifffile.imwrite(src, img)
    kw = dict(normalize="none", seed=3)
    expected = restore(img, "diffir-denoise", **kw)

    def no_statistics(*args, **kwargs):
        raise AssertionError("a plane restored as one tile in memory needs no statistics streamed")

    monkeypatch.setattr(DiffIRRestorer, "prepare_plane", no_statistics)
    out = str(tmp_path / "out.ome.zarr")
    restore_file(src, out, "diffir-denoise", progress=False, **kw)
    got = zarr.open_array(out + "/0", mode="r")[:]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


class _PerTileDenoiser(DiffIRDenoise):
    """The bundled denoiser with each tile's own statistics (the engine before plane statistics)."""

    def prepare_plane(self, x, ctx):
        return None


def _blend_figure(out: np.ndarray, tiles) -> np.ndarray:
    """Per axis: gradient energy on the lines where two tiles blend over that inside one tile."""
    figures = []
    for axis in (0, 1):
        steps = (np.diff(out, axis=axis) ** 2).mean(axis=1 - axis)  # steps[i]: line i -> i + 1
        starts = sorted({t.y0 if axis == 0 else t.x0 for t in tiles})
        size = tiles[0].h if axis == 0 else tiles[0].w
        border = np.zeros(steps.size, bool)
        for start, previous in zip(starts[1:], starts[:-1], strict=True):
            border[start : previous + size - 1] = True
        figures.append(steps[border].mean() / steps[~border].mean())
    return np.array(figures)


@pytest.mark.slow
def test_tiled_bundled_denoiser_leaves_no_seams_on_a_real_sample():
    """Tiles of 128 on the 256² nuclei sample: tiled equals untiled within 0.005 of the range and
    the tile borders carry the untiled run's gradient energy. The control, per-tile statistics,
    runs at tile 64: the denoiser trained on 96² patches varies too little between 128² tiles for
    the border figure to see it (0.3 %), while 64² tiles give it clear seams."""
    from napari_diffir.samples import read_sample

    img = read_sample("nuclei-noisy").data.astype(np.float32)
    lo, hi = np.percentile(img, (1, 99.8))
    figures, diffs = {}, {}
    for cls, tile in ((DiffIRDenoise, 128), (_PerTileDenoiser, 64)):
        tiles = plane_tiling(256, 256, tile, DiffIRDenoise.info.tile_overlap, 8, 8, 1).tiles
        assert len(tiles) == {128: 9, 64: 49}[tile]
        r = cls()
        untiled = (restore(img, r, tile_size=None, seed=0) - lo) / (hi - lo)
        tiled = (restore(img, r, tile_size=tile, seed=0) - lo) / (hi - lo)
        figures[cls] = _blend_figure(tiled, tiles) / _blend_figure(untiled, tiles)
        diffs[cls] = np.abs(tiled - untiled).max()
    assert np.abs(figures[DiffIRDenoise] - 1).max() < 0.005, figures
    assert np.abs(figures[_PerTileDenoiser] - 1).max() > 0.01, figures  # the figure sees per-tile seams
    assert diffs[DiffIRDenoise] < 0.005 and diffs[_PerTileDenoiser] > 0.02, diffs
