"""DiffIR restorers: run an official-format stage-2 checkpoint (or a project-trained one).

``diffir`` takes any DiffIR stage-2 checkpoint given with ``weights=`` and becomes what the
checkpoint is: super-resolution at its scale (x4/x2/x1), same-size restoration (the motion
deblurring variant, also used for denoising), or inpainting (then it needs ``mask=``).
``diffir-inpaint`` is the same restorer for inpainting checkpoints only, listed separately so
frontends know up front that it needs a mask.

Everything here is metadata plus one tensor-to-tensor call; padding to the model's multiple,
tiling, channel mapping (grayscale -> RGB checkpoints), precision and seeds are the engine's.
torch is imported lazily so that listing restorers stays cheap.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from ..hookspecs import hookimpl
from ..restorer import Restorer, RestorerInfo, TileContext

if TYPE_CHECKING:
    import torch

__all__ = ["DiffIRInpaintRestorer", "DiffIRRestorer", "register_restorers"]

# What each model task is called in RestorerInfo.task.
_INFO_TASK = {"sr": "super-resolution", "deblur": "deblur", "inpaint": "inpaint"}


def _peak_bytes_per_output_pixel(task: str, dim: int) -> int:
    """Peak fp32 inference memory per output pixel, for the engine's automatic tile size.

    Measured (peak RSS growth during one forward, channels-last) with the official widths:
    SR x4/x2/x1 at dim 64: 1.6-2.0 kB (the body runs at the low resolution); deblurring at
    dim 48: 8.9 kB; inpainting at dim 52: 6.8 kB; a dim-24 same-size model: 4.0 kB. Scaled
    linearly with the width, with a margin.
    """
    if task == "sr":
        return max(1024, 2600 * dim // 64)
    return max(2048, 10_000 * dim // 48)


def _strip_bytes_per_output_pixel(task: str, dim: int, channels: int) -> int:
    """Peak fp32 memory per output pixel of a whole plane restored in one piece, whose blocks
    run in row strips (``strip_forward``): the feature maps between blocks, not a forward's
    temporaries, about 75 bytes per body pixel per unit of ``dim``. Measured (peak RSS growth)
    for the bundled denoiser (dim 24) at 1024²: 1.4 kB per pixel in fp32 (1.3 kB through the
    engine), 1.0 kB in bf16, the plain forward 2.7 / 1.7 kB; for the bundled SR x4 (dim 24) at
    512² -> 2048²: 114 B per output pixel, the plain forward 209 B (``benchmarks/bench_strips.py``).
    SR bodies run at 1/16 of the output pixels whatever the scale, plus a few output-sized
    maps. With a margin."""
    if task == "sr":
        return 100 * dim // 16 + 16 * channels
    return max(1024, 75 * dim)


class DiffIRRestorer(Restorer):
    """Any DiffIR stage-2 checkpoint; task, scale and channels come from the checkpoint.

    ``weights`` is a checkpoint path (``.pth`` BasicSR, ``.ckpt`` Lightning inpainting,
    ``.safetensors``, bare state dict) or an already built ``DiffIRS2``. Subclasses narrow
    ``info.accepted_tasks`` (model tasks, ``DiffIRS2.task``) or ship ``info.bundled_weights``.
    """

    info = RestorerInfo(
        name="diffir",
        display_name="DiffIR (checkpoint)",
        task="restore",
        in_channels=3,
        multiple_of=8,
        min_size=8,
        tile_overlap=48,
        stochastic=True,
        description="DiffIR (ICCV 2023) from a stage-2 checkpoint given with weights=: "
        "super-resolution, deblurring/denoising or inpainting, as the checkpoint was trained.",
        weights_policy="required",
        checkpoint_family="diffir",
        accepted_tasks=("sr", "deblur", "inpaint"),
    )
    channels_last: ClassVar[bool] = True
    """Run the network in channels-last memory format (faster on CPU: norms need no copy)."""
    plane_tolerance: ClassVar[float] = 0.01
    """A tiled run of a deep model sums the plane's attention statistics in full passes until no
    map entry moves by more than this (``planewise.prepare_plane``'s ``tolerance``). A fixed two
    passes (1.6 forwards) were within 0.015 of the exact maps for the session-4 denoiser but
    0.068 off (-0.064 dB on 512² camera) for the session-6 one, whose maps converge more slowly;
    0.01 took 5-6 passes (3.8-4.4 forwards) there and left the output 0.0014 from exact."""
    plane_exact_layers: ClassVar[int] = 16
    """Models with at most this many attention layers get the exact layer-by-layer statistics
    instead: for the bundled denoiser (13 layers) they cost 2.9-4.1 forwards against 4.4-5.7
    for the passes (1024² fluorescence-like and 512² camera, one process); for the official
    deblurring model (44 layers) 14.3, far more than passes."""

    def __init__(self, weights: Any = None, **options: Any) -> None:
        super().__init__(**options)
        weights = weights if weights is not None else self.info.bundled_weights
        if weights is None:
            raise ValueError(
                f"Restorer {self.info.name!r} needs weights=<path to a DiffIR stage-2 checkpoint "
                "(.pth, .ckpt or .safetensors)>"
            )
        self.model, label = self._load(weights)
        hp = self.model.hyperparameters
        task = hp["task"]
        if task not in self.info.accepted_tasks:
            raise ValueError(
                f"Restorer {self.info.name!r} runs {', '.join(self.info.accepted_tasks)} checkpoints, but "
                f"{label} is a DiffIR {task!r} model; use the 'diffir' restorer"
            )
        m = self.model.multiple_of
        image_channels = hp["out_channels"]  # inpainting: the mask is the extra input channel
        changes: dict[str, Any] = dict(
            scale=hp["scale"],
            in_channels=image_channels,
            out_channels=image_channels,
            multiple_of=m,
            min_size=m,
            needs_mask=task == "inpaint",
            weights=label,
            # Tiles share the plane's statistics, so the tile only trades memory for overlap work:
            # one 384² same-size forward takes ~0.45 GiB at dim 24 (512²: 0.9 GiB), which keeps a
            # 4096² image under 1.5 GiB and two streaming workers under 2 GiB.
            tile_size=256 if task == "sr" else 384,
            bytes_per_pixel=_peak_bytes_per_output_pixel(task, hp["dim"]),
            plane_bytes_per_pixel=_strip_bytes_per_output_pixel(task, hp["dim"], image_channels),
        )
        if self.info.task == "restore":  # generic class: become what the checkpoint is
            changes["task"] = _INFO_TASK[task]
            changes["display_name"] = f"DiffIR {_INFO_TASK[task]}" + (f" x{hp['scale']}" if task == "sr" else "")
        self.info = type(self).info.replace(**changes)

    def _load(self, weights: Any):
        from ..models.diffir import DiffIRS1, DiffIRS2

        if isinstance(weights, (DiffIRS1, DiffIRS2)):
            import copy

            # a copy: eval mode, frozen weights and channels-last must not leak into the caller's
            # model (e.g. one being trained and validated through the engine)
            model, label = copy.deepcopy(weights), f"<{type(weights).__name__} instance>"
        else:
            from ..checkpoints import load_checkpoint

            loaded = load_checkpoint(weights)
            if loaded.family != "diffir":
                raise ValueError(f"{weights!r} is a {loaded.family} checkpoint, not DiffIR")
            model, label = loaded.model, str(weights)
        if isinstance(model, DiffIRS1):
            raise ValueError(
                f"{label} is a DiffIR stage-1 (DiffIRS1) model, which needs the ground-truth image "
                "to extract its prior; restore with the stage-2 (DiffIRS2) checkpoint"
            )
        model.eval().requires_grad_(False)
        if self.channels_last:
            import torch

            model.to(memory_format=torch.channels_last)
        return model, label

    def prepare_plane(self, x: torch.Tensor, ctx: TileContext) -> Any:
        """The plane's prior and attention maps (``planewise.PlaneState``), shared by its tiles.

        With them fixed the network is local, so a tiled run equals the run on the whole plane
        up to the receptive field the tile overlap leaves out (max |d| < 0.005 at overlap 48).
        One prior per plane, as an untiled run estimates it (a fixed-grid prior,
        ``prior_grid=64``, measured 0.6 dB worse on camera with the bundled denoiser).
        """
        from ..models.diffir.planewise import prepare_plane

        return prepare_plane(self.model, self._memory_format(x), mask=self._mask(x, ctx),
                             tolerance=self._plane_tolerance(), noise=self._noise(ctx, x.device), on_window=ctx.step)

    def plane_statistics_cost(self, height: int, width: int) -> float:
        from ..models.diffir.planewise import statistics_forwards

        return statistics_forwards(self.model, (height, width), tolerance=self._plane_tolerance())

    def _plane_tolerance(self) -> float | None:
        """None (exact, layer by layer) for models with few attention layers, else settling passes."""
        from ..models.diffir._arch import Attention

        layers = sum(isinstance(m, Attention) for m in self.model.G.modules())
        return None if layers <= self.plane_exact_layers else self.plane_tolerance

    def restore_tile(self, x: torch.Tensor, ctx: TileContext) -> torch.Tensor:
        model = self.model
        mask = self._mask(x, ctx)
        inp = self._memory_format(x)
        with _block_progress(model.G, ctx) as blocks:  # progress inside the tile, block by block
            if ctx.plane is not None and x.shape[0] == 1:  # the engine's path: the plane's statistics
                from ..models.diffir.planewise import restore_tile_with

                out = restore_tile_with(model, inp, ctx.plane, ctx.origin, mask=mask)
            else:  # statistics of this batch alone, as the official code computes them
                noise = self._noise(ctx, x.device)
                if mask is not None:
                    import torch

                    inp = self._memory_format(torch.cat([x * (1 - mask), mask], dim=1))
                from ..models.diffir.strip_forward import in_strips

                with in_strips():  # the plain forward's values in a strip's temporaries
                    # without a seed: torch.randn, as upstream
                    out = model.restore(inp, noise=None if noise is None else noise.expand(x.shape[0], -1))
        if mask is not None:  # keep known pixels exactly (LaMa-style compositing)
            out = mask * out + (1 - mask) * x
        ctx.step(blocks, blocks)
        return out.contiguous()

    def _mask(self, x: torch.Tensor, ctx: TileContext) -> torch.Tensor | None:
        """The inpainting mask as (B, 1, H, W) 0/1 in ``x``'s dtype; None for other tasks."""
        if self.model.task != "inpaint":
            return None
        if ctx.mask is None:
            raise ValueError(f"Restorer {self.info.name!r} needs a mask (1 = pixels to fill); pass mask=")
        return (ctx.mask > 0).to(x.dtype).expand(x.shape[0], 1, -1, -1)

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:
            return x
        import torch

        return x.contiguous(memory_format=torch.channels_last)

    def _noise(self, ctx: TileContext, device) -> torch.Tensor | None:
        """The IPR diffusion's start: one seeded vector shared by every tile of the image."""
        return None if ctx.seed is None else ctx.noise_vector(self.model.ipr_dim, device=device).view(1, -1)


@contextmanager
def _block_progress(net, ctx: TileContext):
    """Report one step per transformer block of ``net`` as it runs; yields the number of blocks.

    A DiffIR tile is one forward pass, so without this a single-tile run jumps from 0 to 100 %;
    cancel is checked between blocks too (``ctx.step`` raises on cancel).
    """
    from ..models.diffir._arch.dirformer import TransformerBlock

    blocks = [m for m in net.modules() if isinstance(m, TransformerBlock)]
    done = [0]

    def advance(*_: Any) -> None:
        done[0] += 1
        ctx.step(done[0], len(blocks))

    handles = [b.register_forward_hook(advance) for b in blocks]
    try:
        yield max(len(blocks), 1)
    finally:
        for handle in handles:
            handle.remove()


class DiffIRInpaintRestorer(DiffIRRestorer):
    """DiffIR inpainting checkpoints only (needs ``mask=``: 1 = pixels to fill)."""

    info = DiffIRRestorer.info.replace(
        name="diffir-inpaint",
        display_name="DiffIR inpainting (checkpoint)",
        task="inpaint",
        needs_mask=True,
        description="DiffIR (ICCV 2023) inpainting from a stage-2 checkpoint given with weights= "
        "(CelebA-HQ, Places2 or big Places2 models); fills the pixels where mask > 0.",
        accepted_tasks=("inpaint",),
    )


@hookimpl
def register_restorers(register):
    """Register the checkpoint-driven DiffIR restorers."""
    register(DiffIRRestorer)
    register(DiffIRInpaintRestorer)
