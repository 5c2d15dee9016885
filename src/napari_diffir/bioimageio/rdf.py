"""The bioimage.io 0.5 description (rdf.yaml) of an exported DiffIR/SRDiff model.

Axes say what the model needs: ``batch, channel, y, x``; Y and X take ``min + n * step`` pixels
(``step`` the model's size multiple, ``min`` the smallest tile that still leaves an interior
after the halo); the output's Y and X follow the input's, ``scale`` times finer, with the halo
(in output pixels) that a tiling consumer crops. Preprocessing is napari-diffir's percentile
normalisation; there is no postprocessing (the output stays in normalised units).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PackageFiles", "Geometry", "build_description"]


@dataclass(frozen=True)
class Geometry:
    """Sizes in input pixels: Y/X are ``min_size + n * multiple``; ``halo`` per side."""

    channels_in: int
    channels_out: int
    batch_one: bool
    """Whether the batch axis is fixed to 1 (a traced TorchScript froze the batch size)."""
    scale: int
    multiple: int
    min_size: int
    halo: int
    percentiles: tuple[float, float]


@dataclass(frozen=True)
class PackageFiles:
    """The files the description points at (all inside one folder)."""

    weights: Path
    architecture: Path
    callable: str
    kwargs: dict[str, Any]
    torchscript: Path | None
    test_input: Path
    test_output: Path
    cover: Path
    documentation: Path


def build_description(*, name: str, description: str, family: str, geometry: Geometry, files: PackageFiles,
                      authors: list[str], license: str, tolerance: float, tags: list[str],
                      config: dict[str, Any]):
    """A validated ``bioimageio.spec.model.v0_5.ModelDescr`` (raises ``ValueError`` naming the field at fault)."""
    import torch
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5 as b

    from .card import CITATIONS

    g = geometry
    y, x = b.AxisId("y"), b.AxisId("x")
    size = b.ParameterizedSize(min=g.min_size, step=g.multiple)
    inputs = [b.InputTensorDescr(
        id=b.TensorId("input"),
        description="image, each channel normalised by its percentiles",
        axes=[b.BatchAxis(size=1 if g.batch_one else None), b.ChannelAxis(channel_names=_channels(g.channels_in)),
              b.SpaceInputAxis(id=y, size=size), b.SpaceInputAxis(id=x, size=size)],
        test_tensor=b.FileDescr(source=files.test_input),
        data=b.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[b.ScaleRangeDescr(kwargs=b.ScaleRangeKwargs(
            axes=[y, x], min_percentile=g.percentiles[0], max_percentile=g.percentiles[1]))],
    )]
    out_axes: list[Any] = [b.BatchAxis(size=1 if g.batch_one else None), b.ChannelAxis(channel_names=_channels(g.channels_out))]
    for axis in (y, x):
        out_axes.append(b.SpaceOutputAxisWithHalo(
            id=axis, size=b.SizeReference(tensor_id=b.TensorId("input"), axis_id=axis),
            scale=1.0 / g.scale, halo=g.halo * g.scale))
    outputs = [b.OutputTensorDescr(
        id=b.TensorId("output"), description="restored image, in the input's normalised units",
        axes=out_axes, test_tensor=b.FileDescr(source=files.test_output),
        data=b.IntervalOrRatioDataDescr(type="float32"))]
    version = b.Version(torch.__version__.split("+")[0])
    weights = b.WeightsDescr(
        pytorch_state_dict=b.PytorchStateDictWeightsDescr(
            source=files.weights, pytorch_version=version,
            architecture=b.ArchitectureFromFileDescr(source=files.architecture, callable=b.Identifier(files.callable),
                                                     kwargs=files.kwargs)),
        torchscript=None if files.torchscript is None else b.TorchscriptWeightsDescr(
            source=files.torchscript, pytorch_version=version, parent="pytorch_state_dict"),
    )
    text, doi = CITATIONS[family]
    with ValidationContext(perform_io_checks=True):
        return b.ModelDescr(
            name=name, description=description[:1024],
            authors=[b.Author(name=a) for a in authors],
            cite=[b.CiteEntry(text=text, doi=b.Doi(doi))],
            license=b.LicenseId(license),
            documentation=b.FileDescr(source=files.documentation),
            covers=[b.FileDescr(source=files.cover)],
            tags=tags,
            inputs=inputs, outputs=outputs, weights=weights,
            config=b.Config(bioimageio=b.BioimageioConfig(reproducibility_tolerance=[b.ReproducibilityTolerance(
                absolute_tolerance=tolerance, relative_tolerance=tolerance, mismatched_elements_per_million=0)]),
                napari_diffir=config),
        )


def _channels(n: int) -> list[str]:
    return ["intensity"] if n == 1 else [f"channel{i}" for i in range(n)]
