"""The restorer contract: metadata plus one tensor-to-tensor method.

A restorer knows nothing about axes, dtypes, tiling, devices, progress or cancellation: the
engine owns all of that and hands the restorer one float32 batch ``(B, C, H, W)`` in [0, 1] at a
time, together with a :class:`TileContext` for the few things a model may need from the engine
(the number of sampling steps, seeded noise for its tile, the inpainting mask, and a
``step()`` call that reports progress and honours cancellation between sampling steps).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch is imported lazily so that listing restorers stays cheap
    import torch

__all__ = [
    "KNOWN_TASKS",
    "WEIGHTS_POLICIES",
    "Option",
    "Restorer",
    "RestorerInfo",
    "RestorationCancelled",
    "TileContext",
]

KNOWN_TASKS = ("denoise", "deblur", "super-resolution", "inpaint")

WEIGHTS_POLICIES = ("none", "optional", "required")
"""What a restorer does with ``weights=``: ignores it, runs without it (bundled or built-in
weights), or cannot run without it."""


class RestorationCancelled(Exception):
    """Raised by the engine when the caller cancelled a run; nothing is returned or written."""


@dataclass(frozen=True)
class Option:
    """One tunable option of a restorer (shown in the widget, accepted by ``get_restorer``)."""

    name: str
    """Keyword accepted by the restorer's constructor."""
    type: type = int
    """``int``, ``float``, ``str`` or ``bool``."""
    default: Any = None
    """Value used when the caller gives none (``None``: the restorer decides)."""
    choices: tuple | None = None
    """Allowed values, for ``str`` (or ``int``) options with a closed set."""
    min: float | None = None
    max: float | None = None
    help: str = ""

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to the option's type, or raise ``ValueError`` naming it."""
        if value is None:
            return None
        try:
            converted: Any = self._convert(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(
                f"Option {self.name!r} expects {self.type.__name__}, but got {value!r}"
            ) from None
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ValueError(f"Option {self.name!r} must be a finite number, but got {value!r}")
        if self.choices is not None and converted not in self.choices:
            raise ValueError(
                f"Option {self.name!r} must be one of {list(self.choices)}, but got {value!r}"
            )
        if self.min is not None and converted < self.min:
            raise ValueError(f"Option {self.name!r} must be >= {self.min}, but got {value!r}")
        if self.max is not None and converted > self.max:
            raise ValueError(f"Option {self.name!r} must be <= {self.max}, but got {value!r}")
        return converted

    def _convert(self, value: Any) -> Any:
        """The value as the option's type; a value that only converts by accident is refused
        (``'maybe'`` is no bool, ``1.5`` no int, ``True`` no number)."""
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if self.type in (int, float) and isinstance(value, bool):
            raise ValueError
        if self.type is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, str):
                return int(value.strip())
            return int(value)
        if self.type is float and isinstance(value, str):
            return float(value.strip())
        if self.type is str and not isinstance(value, str):
            raise TypeError
        return self.type(value)


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class RestorerInfo:
    """What the engine, the CLI and the widget need to know about a restorer."""

    name: str
    """Registry name, e.g. ``"diffir-denoise"``; lower case, no spaces."""
    display_name: str
    """Human-readable name for menus."""
    task: str
    """``denoise``, ``deblur``, ``super-resolution``, ``inpaint`` or free text."""
    scale: int = 1
    """Output size / input size along Y and X."""
    in_channels: int | None = 1
    """Channels the model takes; ``None`` means any count (each channel is independent)."""
    out_channels: int | None = None
    """Channels the model returns; ``None`` means the same as the input."""
    multiple_of: int = 1
    """Tile height and width must be a multiple of this; the engine pads and crops back."""
    min_size: int = 1
    """Smallest tile side the model accepts (the engine pads smaller images)."""
    tile_overlap: int = 16
    """Default overlap between neighbouring tiles, in input pixels (the receptive-field halo)."""
    tile_size: int = 512
    """Preferred tile side (input pixels) for ``tile_size="auto"``; shrunk to fit free memory."""
    bytes_per_pixel: int = 4096
    """Rough peak memory per *output* pixel, used to size ``auto`` tiles."""
    plane_bytes_per_pixel: int | None = None
    """The same for a whole plane restored as one tile, where that needs less than a tile's
    forward (DiffIR runs its blocks in strips); None: ``bytes_per_pixel``."""
    sampling_steps: bool = False
    """Whether the restorer honours the engine's ``steps`` (``TileContext.steps``)."""
    stochastic: bool = False
    """Whether the output depends on random draws (then ``seed`` makes it reproducible)."""
    needs_mask: bool = False
    """Inpainting restorers need a mask (1 = pixel to fill)."""
    supports_half: bool = True
    """Whether fp16/bf16 autocast is safe for this model."""
    options: tuple[Option, ...] = ()
    """Tunable options besides ``weights`` (e.g. ``steps``)."""
    description: str = ""
    weights: str | None = None
    """The weights in use (a path or a bundled model name), for metadata and display."""
    source: str = ""
    """Which plugin registered it (filled in by the registry)."""
    # Weights and checkpoint routing, declared so that no frontend guesses them from names or
    # signatures; placed last so that positional construction keeps working.
    weights_policy: str = "none"
    """Whether the constructor takes ``weights=``: ``"none"``, ``"optional"`` or ``"required"``."""
    bundled_weights: str | None = None
    """Weights shipped with the restorer and used when the caller gives none (bundled models)."""
    checkpoint_family: str | None = None
    """The model family (``napari_diffir.models.<family>.DESCRIPTOR.id``) whose checkpoints it
    runs; the widget and the CLI route a loaded checkpoint of that family to it."""
    accepted_tasks: tuple[str, ...] = ()
    """Checkpoint tasks it runs, as the family's ``describe()`` names them; empty: every task."""
    normalize: str | None = None
    """The intensity normalisation the model itself prescribes (e.g. a bioimage.io package's
    preprocessing), used instead of the settings' ``normalize``, which would feed it data it was
    not made for; ``None``: the settings decide."""
    percentiles: tuple[float, float] | None = None
    """With ``normalize="percentile"``: the percentiles the model prescribes."""
    inverse_output: bool = True
    """Whether the engine maps the output back to intensities with the inverse of the input's
    normalisation; ``False`` for a model whose output has units of its own (a bioimage.io
    package whose postprocessing says what its output is)."""
    standardize_output: float | None = None
    """When set (an ``eps``), the engine maps each output channel to the input's mean and
    standard deviation, from statistics of the whole output, never of a tile:
    ``(y - mean(y)) / (std(y) + eps)`` before the normalisation's inverse (bioimage.io's
    ``scale_mean_variance`` with the input as reference, after ``normalize="meanstd"``)."""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or " " in self.name:
            raise ValueError(f"Restorer name must be a non-empty word, but got {self.name!r}")
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"Restorer {self.name!r}: scale must be an int >= 1, got {self.scale!r}")
        if self.task in ("denoise", "deblur", "inpaint") and self.scale != 1:
            raise ValueError(f"Restorer {self.name!r}: a {self.task} restorer must have scale 1")
        if self.multiple_of < 1 or self.min_size < 1 or self.tile_overlap < 0:
            raise ValueError(f"Restorer {self.name!r}: multiple_of/min_size must be >= 1")
        for ch in (self.in_channels, self.out_channels):
            if ch is not None and ch < 1:
                raise ValueError(f"Restorer {self.name!r}: channel counts must be >= 1")
        if self.weights_policy not in WEIGHTS_POLICIES:
            raise ValueError(f"Restorer {self.name!r}: weights_policy must be one of "
                             f"{list(WEIGHTS_POLICIES)}, but got {self.weights_policy!r}")
        if self.checkpoint_family is not None and self.weights_policy == "none":
            raise ValueError(f"Restorer {self.name!r} runs {self.checkpoint_family} checkpoints, so it "
                             "must take weights (weights_policy 'optional' or 'required')")
        if self.accepted_tasks and self.checkpoint_family is None:
            raise ValueError(f"Restorer {self.name!r}: accepted_tasks needs a checkpoint_family")

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def replace(self, **changes: Any) -> RestorerInfo:
        return dataclasses.replace(self, **changes)


@dataclass
class TileContext:
    """What the engine gives a restorer together with one batch of tiles.

    ``origin`` is the (y, x) position of the tile's top-left corner in the padded input image and
    ``image_shape`` that image's (H, W); stochastic restorers use them through :meth:`noise` so
    that every tile sees its own region of one image-wide noise field (no seams between tiles).
    """

    steps: int | None = None
    seed: int | None = None
    origin: tuple[int, int] = (0, 0)
    image_shape: tuple[int, int] = (0, 0)
    scale: int = 1
    mask: torch.Tensor | None = None
    step_callback: Callable[[int, int], None] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    plane: Any = None
    """What :meth:`Restorer.prepare_plane` returned for the plane this tile belongs to."""

    def step(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` sampling steps; raises RestorationCancelled on cancel."""
        if self.step_callback is not None:
            self.step_callback(done, total)

    def noise(self, like: torch.Tensor, stream: int = 0) -> torch.Tensor:
        """Standard-normal noise shaped like ``like`` (B, C, h, w) at *output* resolution.

        The values depend only on (seed, stream, channel, absolute output pixel), so two tiles
        that overlap get the same noise where they overlap. ``stream`` separates independent
        draws (e.g. the sampling step index).
        """
        from .noise import field_noise

        b, c, h, w = like.shape
        oy, ox = self.origin[0] * self.scale, self.origin[1] * self.scale
        out = field_noise(self.seed or 0, stream, c, oy, ox, h, w, device=like.device)
        return out.to(like.dtype).unsqueeze(0).expand(b, -1, -1, -1).clone()

    def noise_vector(self, n: int, stream: int = 0, *, device=None) -> torch.Tensor:
        """A seeded standard-normal vector of length ``n`` shared by all tiles of the image."""
        from .noise import field_noise

        return field_noise(self.seed or 0, 1_000_000 + stream, 1, 0, 0, 1, n, device=device).reshape(n)


class Restorer(abc.ABC):
    """Base class of every restorer, built-in or from a plugin.

    Subclasses set ``info`` (a :class:`RestorerInfo`) and implement :meth:`restore_tile`.
    Constructor keywords are the options declared in ``info.options``, plus ``weights`` when
    ``info.weights_policy`` is not ``"none"``; the instance may refine ``self.info`` (e.g. the
    scale a checkpoint was trained for).
    """

    info: ClassVar[RestorerInfo]

    def __init__(self, **options: Any) -> None:
        self.info = type(self).info
        self.options = dict(options)

    def to(self, device: torch.device | str) -> Restorer:
        """Move whatever the restorer holds (its model) to ``device``; returns ``self``."""
        model = getattr(self, "model", None)
        if model is not None:
            model.to(device)
        return self

    @abc.abstractmethod
    def restore_tile(self, x: torch.Tensor, ctx: TileContext) -> torch.Tensor:
        """Restore a float32 batch ``(B, C, H, W)`` in [0, 1] to ``(B, C_out, H*scale, W*scale)``."""

    def prepare_plane(self, x: torch.Tensor, ctx: TileContext) -> Any:
        """Statistics of a whole ``(1, C, H, W)`` image plane that all its tiles share.

        When a plane takes more than one tile, the engine calls it once per plane (and channel
        group) before that plane's tiles, with
        the plane padded as for tiling and ``ctx`` as for one tile covering it (its mask, seed,
        origin (0, 0)), and hands the result to every :meth:`restore_tile` as ``ctx.plane``, so
        a model with image-wide statistics (DiffIR's prior and attention) restores a tile as it
        would the whole plane. The default, ``None``: a tile needs nothing beyond itself.
        """
        return None

    def plane_statistics_cost(self, height: int, width: int) -> float:
        """What :meth:`prepare_plane` costs on a padded ``height`` x ``width`` plane, in forwards
        of the whole plane: the engine's progress weighs it against the tiles (default 1)."""
        return 1.0

    def metadata(self) -> dict:
        """What the output records about this restorer (name, weights, options)."""
        return {"restorer": self.info.name, "weights": self.info.weights, **{
            k: v for k, v in self.options.items() if k != "weights"}}
