"""Read a bioimage.io model package into what the engine needs, or say why it cannot run here.

A package runs as a restorer when it has one image input and one image output (``y`` and ``x``
space axes, optional ``batch`` and ``channel``), the output's Y/X follow the input's at an integer
scale, its weights are PyTorch (``pytorch_state_dict`` or ``torchscript``), and its processing is
pointwise (run on each tile), apart from what the engine computes once over the whole image: a
leading percentile ``scale_range`` or ``zero_mean_unit_variance`` of the input (the engine's
``percentile`` or ``meanstd`` normalisation) and, after the latter, a final ``scale_mean_variance``
of the output back to the input's mean and standard deviation (``RestorerInfo.standardize_output``).
Anything else raises :class:`UnsupportedPackageError` naming the step or part of the package at fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..extras import require

__all__ = ["PackageSpec", "UnsupportedPackageError", "is_package", "load_package", "package_spec", "read_package"]

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
    """``percentile`` or ``meanstd`` (the package scales by the input's percentiles or mean/std
    first) or ``none`` (raw intensities)."""
    percentiles: tuple[float, float] | None
    standardize_output: float | None
    """The ``eps`` of a final ``scale_mean_variance`` (the engine applies it), else ``None``."""
    inverse_output: bool
    """Whether the engine maps the output back to intensities: with no postprocessing (the output
    is in the input's normalised units) or a final ``scale_mean_variance``; not when pointwise
    postprocessing gives the output units of its own (then it is what bioimage.io tools give)."""
    preprocessing: tuple[Any, ...]
    """The pointwise steps left after the engine's normalisation."""
    postprocessing: tuple[Any, ...]


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a bioimage.io package (a .zip, an rdf.yaml or a folder with one)."""
    p = Path(path)
    if p.is_dir():
        return any((p / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml"))
    return p.suffix.lower() in (".zip", ".yaml", ".yml") and p.is_file()


def load_package(source: str | os.PathLike, doing: str = "Reading a bioimage.io package"):
    """The valid bioimage.io description at ``source``, read offline (``doing`` names the action in
    the message when the extra is missing); ``ValueError`` saying why it is invalid."""
    require("bioimageio", doing)
    from bioimageio.spec import InvalidDescr, load_description

    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No bioimage.io package at {path!r}")
    descr = load_description(path, format_version="latest", perform_io_checks=False)
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{path!r} is not a valid bioimage.io description: "
                         + " ".join(descr.validation_summary.format().split())[:600])
    return descr


def read_package(source: str | os.PathLike) -> PackageSpec:
    """Load and check ``source`` (offline); raises ``UnsupportedPackageError`` or ``ValueError`` saying why."""
    return package_spec(source, load_package(source))


def package_spec(source: str | os.PathLike, descr) -> PackageSpec:
    """What the engine needs to run the package ``descr`` (loaded from ``source``), or
    ``UnsupportedPackageError`` naming why it cannot."""
    from bioimageio.spec.model import v0_5

    path = os.fspath(source)
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
    in_channels, out_channels = _channels(in_axes), _channels(out_axes)
    normalize, percentiles, pre = _preprocessing(name, list(inp.preprocessing), in_channels)
    standardize, post = _postprocessing(name, list(out.postprocessing), inp, normalize, out_channels)
    return PackageSpec(
        source=path, descr=descr, name=name, description=str(descr.description),
        authors=tuple(str(a.name) for a in descr.authors), weight_format=weight_format, scale=scale,
        in_channels=in_channels, out_channels=out_channels, min_size=min_size, multiple=multiple,
        fixed_size=fixed, halo=int(round(halo_out / scale)),
        input_order=tuple(str(a.id) for a in inp.axes), output_order=tuple(str(a.id) for a in out.axes),
        normalize=normalize, percentiles=percentiles, standardize_output=standardize,
        inverse_output=standardize is not None or not post, preprocessing=tuple(pre), postprocessing=tuple(post))


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


def _preprocessing(name: str, steps: list, channels: int) -> tuple[str, tuple[float, float] | None, list]:
    """(engine normalisation, its percentiles, the pointwise steps left for each tile)."""
    steps = _without_float32(steps)
    normalize, percentiles = "none", None
    if steps and steps[0].id == "scale_range" and steps[0].kwargs.reference_tensor is None:
        _whole_image_axes(name, "preprocessing", steps[0], channels)
        normalize = "percentile"
        percentiles = (float(steps[0].kwargs.min_percentile), float(steps[0].kwargs.max_percentile))
        steps = steps[1:]
    elif steps and steps[0].id == "zero_mean_unit_variance":
        _whole_image_axes(name, "preprocessing", steps[0], channels)
        normalize = "meanstd"  # bioimageio.core uses eps 1e-6 whatever the package says, as the engine does
        steps = steps[1:]
    for step in steps:
        _pointwise(name, "preprocessing", step)
    return normalize, percentiles, steps


def _postprocessing(name: str, steps: list, inp, normalize: str, channels: int) -> tuple[float | None, list]:
    """(the ``eps`` of a final ``scale_mean_variance`` the engine applies, the pointwise steps for each tile)."""
    steps = _without_float32(steps)
    standardize = None
    if steps and steps[-1].id == "scale_mean_variance":
        step = steps[-1]
        if step.kwargs.reference_tensor is not None and str(step.kwargs.reference_tensor) != str(inp.id):
            raise UnsupportedPackageError(f"{name!r}: postprocessing 'scale_mean_variance' refers to "
                                          f"{str(step.kwargs.reference_tensor)!r}, which is not the input")
        if normalize != "meanstd":
            raise UnsupportedPackageError(
                f"{name!r}: postprocessing 'scale_mean_variance' after a preprocessing other than "
                "zero_mean_unit_variance is not supported (the engine maps the output back with the "
                "normalisation it applied to the input)")
        _whole_image_axes(name, "postprocessing", step, channels)
        standardize = float(step.kwargs.eps)
        steps = steps[:-1]
    for step in steps:
        if step.id == "scale_mean_variance":
            raise UnsupportedPackageError(f"{name!r}: postprocessing 'scale_mean_variance' is supported as "
                                          "the last step only (it needs the whole output first)")
        _pointwise(name, "postprocessing", step)
    return standardize, steps


def _without_float32(steps: list) -> list:
    return [s for s in steps if not (s.id == "ensure_dtype" and str(s.kwargs.dtype) == "float32")]


def _pointwise(name: str, role: str, step) -> None:
    """Refuse, naming the step, a step that is not pointwise (it would differ from tile to tile)."""
    _along_channel(name, step)
    if step.id == "clip" and (step.kwargs.min_percentile is not None or step.kwargs.max_percentile is not None):
        raise UnsupportedPackageError(f"{name!r}: {role} 'clip' at percentiles needs whole-image statistics "
                                      "that napari-diffir's engine does not compute (only a leading scale_range "
                                      "or zero_mean_unit_variance of the input)")
    if step.id not in POINTWISE:
        where = ("a leading scale_range or zero_mean_unit_variance" if role == "preprocessing"
                 else "a final scale_mean_variance after zero_mean_unit_variance")
        raise UnsupportedPackageError(
            f"{name!r}: {role} {step.id!r} needs statistics of the whole image there, which napari-diffir's "
            f"engine computes only for {where}; other steps must be pointwise ({', '.join(POINTWISE)})")


def _whole_image_axes(name: str, role: str, step, channels: int) -> None:
    """The engine's statistics are per channel over y, x and all planes (bioimage.io's batch):
    refuse a step whose statistics are over other axes (rows, columns, or channels jointly)."""
    given = step.kwargs.axes
    axes = {"batch", "channel", "y", "x"} if given is None else {str(a) for a in given}
    if not {"y", "x"} <= axes:
        raise UnsupportedPackageError(
            f"{name!r}: {role} {step.id!r} over axes {sorted(axes)} (without both y and x) is not supported; "
            "napari-diffir's engine takes statistics over the whole image (y and x)")
    if "channel" in axes and channels > 1:
        raise UnsupportedPackageError(
            f"{name!r}: {role} {step.id!r} over all {channels} channels jointly is not supported; the engine "
            "takes each channel's statistics on their own")
