"""The ``bioimageio`` restorer: any bioimage.io image-to-image model package, given with ``weights=``.

Denoising, deconvolution and super-resolution models from the BioImage Model Zoo (CARE, careamics
exports, napari-diffir's own exports) run through the engine like every restorer: tiled with the
package's halo, padded to its sizes, on any device, with progress, cancel and dask. What the
package says about its input (a percentile ``scale_range``, or raw intensities with pointwise
steps) becomes the engine's normalisation (``RestorerInfo.normalize``); pointwise steps run on
each tile. Nothing here imports torch or bioimageio at import time, so listing restorers stays
cheap; without the ``bioimageio`` extra the restorer says which extra to install.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl
from ..restorer import Restorer, RestorerInfo, TileContext

if TYPE_CHECKING:
    import torch

__all__ = ["BioimageioRestorer", "register_restorers"]


class BioimageioRestorer(Restorer):
    """A bioimage.io model package (``.zip``, folder or ``rdf.yaml``) given with ``weights=``."""

    info = RestorerInfo(
        name="bioimageio",
        display_name="bioimage.io model (package)",
        task="restore",
        in_channels=None,
        tile_size=256,
        description="Any bioimage.io image-to-image model package (denoising, deconvolution, super-resolution) "
        "with PyTorch weights, given with weights=PACKAGE.zip; needs pip install 'napari-diffir[bioimageio]'.",
        weights_policy="required",
    )

    def __init__(self, weights: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(**options)
        if weights is None:
            raise ValueError(f"Restorer {self.info.name!r} needs weights=<bioimage.io package: a .zip, a folder "
                             "or an rdf.yaml>")
        from .bioimageio_package import read_package
        from .bioimageio_weights import load_network

        self.package = spec = read_package(weights)
        self.model = load_network(spec)
        halo = spec.halo
        task = "super-resolution" if spec.scale > 1 else "restore"
        self.info = type(self).info.replace(
            display_name=spec.name, task=task, scale=spec.scale, in_channels=spec.in_channels,
            out_channels=spec.out_channels, multiple_of=spec.multiple, min_size=spec.min_size,
            tile_overlap=2 * halo if halo else 16,
            tile_size=spec.min_size if spec.fixed_size else max(256, spec.min_size),
            description=spec.description, weights=os.fspath(weights), normalize=spec.normalize,
            percentiles=spec.percentiles)

    def restore_tile(self, x: torch.Tensor, ctx: TileContext) -> torch.Tensor:
        import torch.nn.functional as F

        from .bioimageio_processing import apply_steps

        spec = self.package
        h, w = x.shape[-2:]
        ph, pw = _valid(h, spec), _valid(w, spec)
        if ph < h or pw < w:
            raise ValueError(f"{spec.name!r} takes tiles of exactly {spec.min_size} pixels, but got {(h, w)}; "
                             f"use tile_size={spec.min_size}")
        if (ph, pw) != (h, w):  # sizes the package accepts that are not multiples of its step
            mode = "reflect" if ph - h < h and pw - w < w else "replicate"
            x = F.pad(x, (0, pw - w, 0, ph - h), mode=mode)
        x = apply_steps(x, spec.preprocessing)
        y = self.model(_to_model(x, spec.input_order))
        if isinstance(y, (tuple, list)):
            y = y[0]
        y = apply_steps(_from_model(y.float(), spec.output_order), spec.postprocessing)
        ctx.step(1, 1)
        s = spec.scale
        return y[..., : h * s, : w * s].contiguous()


def _valid(n: int, spec) -> int:
    """The smallest size the package accepts that is >= ``n`` (``min + k * step``, or the fixed size)."""
    if spec.fixed_size or n <= spec.min_size:
        return spec.min_size
    return spec.min_size + -(-(n - spec.min_size) // spec.multiple) * spec.multiple


def _to_model(x: torch.Tensor, order: tuple[str, ...]) -> torch.Tensor:
    """(B, C, H, W) -> the package's axis order (dropping batch/channel when it has none)."""
    ours = ["batch", "channel", "y", "x"]
    if "channel" not in order:
        x, ours = x[:, 0], ["batch", "y", "x"]
    if "batch" not in order:
        if x.shape[0] != 1:
            raise ValueError("This package takes no batch axis; the engine gives one tile at a time")
        x, ours = x[0], ours[1:]
    return x.permute([ours.index(a) for a in order])


def _from_model(y: torch.Tensor, order: tuple[str, ...]) -> torch.Tensor:
    """The package's output axes -> (B, C, H, W)."""
    axes = list(order)
    if "batch" not in axes:
        y, axes = y.unsqueeze(0), ["batch", *axes]
    if "channel" not in axes:
        y, axes = y.unsqueeze(1), [axes[0], "channel", *axes[1:]]
    return y.permute([axes.index(a) for a in ("batch", "channel", "y", "x")])


@hookimpl
def register_restorers(register):
    """Register ``bioimageio`` (any bioimage.io model package given with ``weights=``)."""
    register(BioimageioRestorer)
