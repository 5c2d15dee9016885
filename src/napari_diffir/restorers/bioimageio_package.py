"""Read a bioimage.io model package into what the engine needs, or say why it cannot run here.

A package runs as a restorer when it has one image input and one image output (``y`` and ``x``
space axes, optional ``batch`` and ``channel``), the output's Y/X follow the input's at an integer
scale, its weights are PyTorch (``pytorch_state_dict`` or ``torchscript``), and its processing is
either pointwise (then the engine passes raw intensities) or starts with a percentile
``scale_range`` of the input (then the engine's percentile normalisation does exactly that).
Anything else raises :class:`UnsupportedPackageError` naming the part of the package at fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..extras import require

__all__ = ["PackageSpec", "UnsupportedPackageError", "is_package", "read_package"]

RUNNABLE_WEIGHTS = ("pytorch_state_dict", "torchscript")
POINTWISE = ("scale_linear", "clip", "binarize", "sigmoid", "fixed_zero_mean_unit_variance", "ensure_dtype",
             "softmax")


class UnsupportedPackageError(ValueError):
    """A valid bioimage.io package that napari-diffir cannot run as a restorer (the message says why)."""


@dataclass(frozen=True)
class PackageSpec:
    """What the restorer and the frontends use of a package."""

    source: str
    descr: Any = field(repr=False)
    """The ``bioimageio.spec`` model description (format 0.5)."""
    name: str
    description: str
    authors: tuple[str, ...]
    weight_format: str
    scale: int
    in_channels: int
    out_channels: int
    min_size: int
    multiple: int
    fixed_size: bool
    halo: int
    """Per side, in input pixels."""
    input_order: tuple[str, ...]
    """The input's axis ids in the model's order (``batch``/``channel`` included when present)."""
    output_order: tuple[str, ...]
    normalize: str
    """``percentile`` (the package scales by percentiles first) or ``none`` (raw intensities)."""
    percentiles: tuple[float, float] | None
    preprocessing: tuple[Any, ...]
    """The pointwise steps left after the engine's normalisation."""
    postprocessing: tuple[Any, ...]


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a bioimage.io package (a .zip, an rdf.yaml or a folder with one)."""
    p = Path(path)
    if p.is_dir():
        return any((p / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml"))
    return p.suffix.lower() in (".zip", ".yaml", ".yml") and p.is_file()


def read_package(source: str | os.PathLike) -> PackageSpec:
    """Load and check ``source`` (offline); raises ``UnsupportedPackageError`` or ``ValueError`` saying why."""
    require("bioimageio", "Reading a bioimage.io package")
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No bioimage.io package at {path!r}")
    descr = load_description(path, format_version="latest", perform_io_checks=False)
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{path!r} is not a valid bioimage.io description: "
                         + " ".join(descr.validation_summary.format().split())[:600])
    if not isinstance(descr, v0_5.ModelDescr):
        raise UnsupportedPackageError(f"{path!r} describes a bioimage.io {descr.type!r}, not a model")
    return _spec(path, descr, v0_5)


def _spec(path: str, descr, b) -> PackageSpec:
    name = str(descr.name)
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise UnsupportedPackageError(
            f"{name!r} has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; napari-diffir runs models "
            "with one image input and one image output")
    inp, out = descr.inputs[0], descr.outputs[0]
    in_axes = _image_axes(name, "input", inp, b)
    out_axes = _image_axes(name, "output", out, b)
    y_in, y_out = in_axes["y"], out_axes["y"]
    if not isinstance(y_out.size, b.SizeReference) or str(y_out.size.tensor_id) != str(inp.id):
        raise UnsupportedPackageError(
            f"{name!r}: the output's y size is not tied to the input's ({y_out.size!r}), so it is not an "
            "image-to-image model napari-diffir can tile")
    ratio = y_in.scale / y_out.scale
    scale = round(ratio)
    if scale < 1 or abs(ratio - scale) > 1e-6 or in_axes["x"].scale / out_axes["x"].scale != ratio:
        raise UnsupportedPackageError(f"{name!r}: output/input pixel ratio {ratio:g} is not the same integer in y and x")
    if isinstance(y_in.size, b.ParameterizedSize):
        min_size, multiple, fixed = y_in.size.min, y_in.size.step, False
    elif isinstance(y_in.size, int):
        min_size, multiple, fixed = y_in.size, 1, True
    else:
        raise UnsupportedPackageError(f"{name!r}: the input's y size {y_in.size!r} is neither fixed nor min + n * step")
    halo_out = getattr(y_out, "halo", 0) or 0
    weight_format = next((f for f in RUNNABLE_WEIGHTS if getattr(descr.weights, f) is not None), None)
    if weight_format is None:
        given = [f for f, w in descr.weights if w is not None]
        raise UnsupportedPackageError(
            f"{name!r} has only {', '.join(given)} weights; napari-diffir runs PyTorch weights "
            f"({' or '.join(RUNNABLE_WEIGHTS)})")
    normalize, percentiles, pre = _preprocessing(name, list(inp.preprocessing), b)
    post = [p for p in out.postprocessing if not (p.id == "ensure_dtype" and str(p.kwargs.dtype) == "float32")]
    for step in post:
        _along_channel(name, step)
        if step.id not in POINTWISE:
            raise UnsupportedPackageError(
                f"{name!r}: postprocessing {step.id!r} needs statistics of a whole image, which a tile does not "
                "have; napari-diffir runs pointwise postprocessing only")
    return PackageSpec(
        source=path, descr=descr, name=name, description=str(descr.description),
        authors=tuple(str(a.name) for a in descr.authors), weight_format=weight_format, scale=scale,
        in_channels=_channels(in_axes), out_channels=_channels(out_axes), min_size=min_size, multiple=multiple,
        fixed_size=fixed, halo=int(round(halo_out / scale)),
        input_order=tuple(str(a.id) for a in inp.axes), output_order=tuple(str(a.id) for a in out.axes),
        normalize=normalize, percentiles=percentiles, preprocessing=tuple(pre), postprocessing=tuple(post))


def _image_axes(name: str, role: str, tensor, b) -> dict[str, Any]:
    ids = [str(a.id) for a in tensor.axes]
    if not {"y", "x"} <= {str(a.id) for a in tensor.axes if a.type == "space"}:
        raise UnsupportedPackageError(
            f"{name!r}: the {role} {str(tensor.id)!r} has no y and x axes, so it is not an image (axes {ids}); "
            "napari-diffir runs image-to-image models only")
    axes: dict[str, Any] = {}
    for axis in tensor.axes:
        kind = axis.type
        if kind == "space" and str(axis.id) in ("y", "x"):
            axes[str(axis.id)] = axis
        elif kind in ("batch", "channel"):
            axes[kind] = axis
        else:
            raise UnsupportedPackageError(
                f"{name!r}: {role} axis {str(axis.id)!r} ({kind}) is not supported; napari-diffir runs 2-D image "
                "models (batch, channel, y, x)")
    return axes


def _along_channel(name: str, step) -> None:
    axis = getattr(getattr(step, "kwargs", None), "axis", None)
    if axis is not None and str(axis) != "channel":
        raise UnsupportedPackageError(f"{name!r}: {step.id!r} along axis {str(axis)!r} is not supported (only along "
                                      "channel)")


def _channels(axes: dict[str, Any]) -> int:
    channel = axes.get("channel")
    return 1 if channel is None else len(channel.channel_names)


def _preprocessing(name: str, steps: list, b) -> tuple[str, tuple[float, float] | None, list]:
    """(engine normalisation, its percentiles, the pointwise steps left for each tile)."""
    steps = [s for s in steps if not (s.id == "ensure_dtype" and str(s.kwargs.dtype) == "float32")]
    normalize, percentiles = "none", None
    if steps and steps[0].id == "scale_range" and steps[0].kwargs.reference_tensor is None:
        axes = {str(a) for a in (steps[0].kwargs.axes or ())}
        if "channel" in axes:
            raise UnsupportedPackageError(f"{name!r}: scale_range over channels jointly is not supported; the "
                                          "engine normalises each channel by its own percentiles")
        normalize = "percentile"
        percentiles = (float(steps[0].kwargs.min_percentile), float(steps[0].kwargs.max_percentile))
        steps = steps[1:]
    for step in steps:
        _along_channel(name, step)
        if step.id not in POINTWISE:
            raise UnsupportedPackageError(
                f"{name!r}: preprocessing {step.id!r} needs statistics of the whole image that napari-diffir's "
                "engine does not compute (it normalises by percentiles); supported: a leading scale_range, "
                f"then {', '.join(POINTWISE)}")
        if step.id == "clip" and (step.kwargs.min_percentile is not None or step.kwargs.max_percentile is not None):
            raise UnsupportedPackageError(f"{name!r}: clip at percentiles needs whole-image statistics")
    return normalize, percentiles, steps
