"""What an exported package must reproduce: the engine's run on the test input, and the module that does.

The test output is not computed by the packaged module but by ``napari_diffir.restore`` (untiled,
with the export's seed), mapped into normalised units with the normaliser the engine fitted; the
export then checks the packaged module against it, so a package can only be written when it gives
what napari-diffir gives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.normalize import DEFAULT_PERCENTILES, fit_normalizer
from ..engine.plan import round_halo
from ..restorer import RestorerInfo
from .source import ExportSource

__all__ = ["Reference", "TileGeometry", "packaged_module", "reference_run", "tile_geometry"]


@dataclass(frozen=True)
class TileGeometry:
    """Input pixels: Y/X take ``min_size + n * multiple``; ``halo`` per side (half the engine's overlap)."""

    multiple: int
    min_size: int
    halo: int
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES


@dataclass(frozen=True)
class Reference:
    raw_input: np.ndarray
    """(1, C, H, W) float32 intensities (the package's test input)."""
    normalised_input: np.ndarray
    """The same, scaled as the package's preprocessing scales it."""
    normalised_output: np.ndarray
    """(1, C, H*s, W*s): ``restore``'s result in the input's normalised units (the test output)."""


def tile_geometry(info: RestorerInfo) -> TileGeometry:
    m = max(info.multiple_of, 1)
    halo = round_halo(math.ceil(info.tile_overlap / 2), m)
    return TileGeometry(multiple=m, min_size=max(2 * halo + m, info.min_size), halo=halo)


def reference_run(src: ExportSource, test_input: np.ndarray | None, geometry: TileGeometry, seed: int) -> Reference:
    from ..engine.restore import restore

    raw = _test_input(test_input, src.restorer.info, geometry)
    out = restore(raw[0], src.restorer, axes="CYX", tile_size=None, seed=seed, device="cpu",
                  normalize="percentile", percentiles=geometry.percentiles)
    norm = fit_normalizer(raw, "percentile", geometry.percentiles)
    return Reference(raw, norm.forward(raw[0])[None], norm.forward(out)[None])


def packaged_module(src: ExportSource, seed: int):
    """``(module, architecture kwargs, run record)``: the packaged ``nn.Module`` holding the
    restorer's weights, the keywords that rebuild it, and what the package's config records."""
    from ..engine.execute import tile_seed

    restorer = src.restorer
    net = restorer.model
    hp = json.loads(json.dumps(net.hyperparameters))  # tuples -> lists: what YAML keeps
    fixed = tile_seed(seed)
    run: dict[str, Any] = {"restorer": restorer.info.name, "weights": restorer.info.weights, "seed": seed,
                           "tile_seed": fixed, "normalize": "percentile", "percentiles": list(DEFAULT_PERCENTILES)}
    if src.family == "diffir":
        from .packaged_diffir import PackagedDiffIR

        kwargs: dict[str, Any] = {"hyperparameters": hp, "seed": fixed}
        module = PackagedDiffIR(**kwargs)
    else:
        from ..models.samplers import FAST_DEFAULT_SAMPLER, default_steps
        from .packaged_srdiff import PackagedSRDiff

        sampler = restorer.options.get("sampler") or FAST_DEFAULT_SAMPLER
        steps = restorer.options.get("steps") or default_steps(sampler, net.num_timesteps)
        eta = float(restorer.options.get("eta") or 0.0)
        temperature = float(restorer.temperature)
        kwargs = {"hyperparameters": hp, "seed": fixed, "sampler": sampler, "steps": int(steps), "eta": eta,
                  "temperature": temperature}
        run.update(sampler=sampler, steps=int(steps), eta=eta, temperature=temperature)
        module = PackagedSRDiff(**kwargs)
    module.model.load_state_dict(net.state_dict())
    return module.eval(), kwargs, run


def _test_input(given: np.ndarray | None, info: RestorerInfo, g: TileGeometry) -> np.ndarray:
    """(1, C, H, W) float32 of a valid size: the given image, or a crop of a bundled sample."""
    channels = info.in_channels or 1
    if given is None:
        from ..samples import read_sample

        sample = "nuclei-lowres" if info.scale > 1 else "nuclei-noisy"
        side = g.min_size + g.multiple * max(1, -(-(32 - g.min_size) // g.multiple))
        image = np.asarray(read_sample(sample).data, np.float32)
        y0, x0 = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        given = image[y0:y0 + side, x0:x0 + side]
    arr = np.asarray(given, np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[None], channels, axis=0)
    if arr.ndim != 3 or arr.shape[0] != channels:
        raise ValueError(f"test_input must be (Y, X) or ({channels}, Y, X) for this model, but got {arr.shape}")
    h, w = arr.shape[1:]
    for side in (h, w):
        if side < g.min_size or (side - g.min_size) % g.multiple:
            raise ValueError(f"test_input's Y and X must be {g.min_size} + n * {g.multiple} pixels, but got {(h, w)}")
    return np.ascontiguousarray(arr[None])
