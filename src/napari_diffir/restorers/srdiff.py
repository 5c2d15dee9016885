"""The ``srdiff`` restorer: SRDiff checkpoints (official releases or project-trained) through the engine.

The engine hands over LR tiles in [0, 1]; SRDiff works in [-1, 1] and needs the MATLAB-bicubic
upsampled tile (``img_lr_up``) as the base of its residual. Every random draw (``x_T`` and the
per-step noise) comes from the engine's image-wide noise field (``ctx.noise``, stream 0 for
``x_T`` and ``k + 1`` after step ``k``), so neighbouring tiles sample with the same noise where
they overlap and tiling leaves no seams. The RRDB encoder runs once per tile; only the U-Net
runs per step. Sampler names and defaults are the sampler module's; torch is imported only
when a restorer is built, so that listing restorers stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl
from ..models.samplers import FAST_DEFAULT_SAMPLER, FAST_DEFAULT_STEPS, SAMPLERS
from ..restorer import Option, Restorer, RestorerInfo, TileContext

if TYPE_CHECKING:
    import torch


class SRDiffRestorer(Restorer):
    """SRDiff super-resolution at the checkpoint's scale (x4 or x8), from ``weights=``."""

    info = RestorerInfo(
        name="srdiff",
        display_name="SRDiff super-resolution (diffusion)",
        task="super-resolution",
        scale=4,
        in_channels=3,
        multiple_of=2,
        tile_overlap=16,
        tile_size=128,
        bytes_per_pixel=6144,
        stochastic=True,
        sampling_steps=True,
        options=(
            Option("steps", int, None, min=1, max=1000,
                   help=f"sampling steps (default {FAST_DEFAULT_STEPS} for fast samplers, all trained steps for ddpm)"),
            Option("sampler", str, FAST_DEFAULT_SAMPLER, choices=SAMPLERS,
                   help="ddpm: ancestral (the official sampler at 100 steps); ddim, dpm++2m, "
                        "dpm++2m-sde: training-free fast samplers"),
            Option("eta", float, 0.0, min=0.0, max=1.0, help="DDIM stochasticity (0 = deterministic)"),
            Option("temperature", float, 1.0, min=0.0, max=1.0,
                   help="scale of every random draw: 1 samples the model's distribution (the official "
                        "sampler); lower trades generated texture for fidelity; 0 is deterministic"),
            Option("scale", int, None, choices=(2, 4, 8),
                   help="must equal the checkpoint's scale (the default uses it)"),
            Option("exact_lr_up", bool, False,
                   help="build img_lr_up from LR/256 as the official uint8 pipeline does"),
        ),
        description=(
            "Residual diffusion SR (Li et al. 2022): an RRDB encoder conditions a U-Net that "
            "denoises the residual to a bicubic upsampling. Loads official .ckpt releases and "
            "project-trained weights."
        ),
        weights_policy="required",
        checkpoint_family="srdiff",
    )

    def __init__(self, weights: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(weights=weights, **options)
        from ..checkpoints import load_checkpoint
        from ..models.srdiff import SRDiff

        path = weights if weights is not None else self.info.bundled_weights
        if path is None:
            raise ValueError(
                f"Restorer {self.info.name!r} needs weights=<SRDiff checkpoint> (an official "
                "model_ckpt_steps_*.ckpt or a project-trained .safetensors)")
        loaded = load_checkpoint(path)
        if loaded.family == "srdiff" and not isinstance(loaded.model, SRDiff):
            raise ValueError(
                f"{os.fspath(path)!r} holds only an SRDiff RRDB encoder (the pre-training stage), "
                "not a diffusion model; pass the checkpoint of the diffusion stage")
        if loaded.family != "srdiff" or not isinstance(loaded.model, SRDiff):
            raise ValueError(
                f"{os.fspath(path)!r} holds a {loaded.family} model, not SRDiff; use a "
                f"{loaded.family} restorer for it")
        model: SRDiff = loaded.model
        wanted = options.get("scale")
        if wanted is not None and int(wanted) != model.scale:
            raise ValueError(
                f"{os.fspath(path)!r} is an x{model.scale} SRDiff model; it cannot upscale x{wanted} "
                f"(omit scale= or pass scale={model.scale})")
        self.model = model.eval()
        self.to("cpu")
        self.info = type(self).info.replace(
            scale=model.scale, in_channels=model.in_channels, out_channels=model.out_channels,
            multiple_of=model.lr_multiple, weights=os.fspath(path))

    @property
    def temperature(self) -> float:
        """The temperature given, else this restorer's default (1 for official checkpoints)."""
        given = self.options.get("temperature")
        return float(given if given is not None else self.info.option("temperature").default)

    def to(self, device: torch.device | str) -> SRDiffRestorer:
        """Move the model; on CPU the U-Net weights are kept channels-last (faster oneDNN convs)."""
        import torch

        device = torch.device(device)
        fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model.to(device)
        self.model.denoise_fn.to(memory_format=fmt)
        return self

    def restore_tile(self, x: torch.Tensor, ctx: TileContext) -> torch.Tensor:
        import torch

        opts = self.options
        sampler = opts.get("sampler") or FAST_DEFAULT_SAMPLER
        steps = ctx.steps if ctx.steps is not None else opts.get("steps")  # None: the sampler's default
        param = next(self.model.parameters())
        x = x.to(device=param.device, dtype=torch.float32)
        img_lr = x * 2 - 1
        # The official pipeline divides uint8 LR by 256 before upsampling; for float data the
        # natural [0, 1] mapping is used unless exact parity is asked for.
        base = x * (255 / 256) if opts.get("exact_lr_up") else x
        img_lr_up = self.model.upsample_lr(base * 2 - 1)
        noise = None
        if ctx.seed is not None:
            noise = lambda like, stream: ctx.noise(like, stream)  # noqa: E731
        sr = self.model.sample(
            img_lr, img_lr_up, steps=None if steps is None else int(steps), sampler=sampler,
            eta=float(opts.get("eta") or 0.0), noise=noise, callback=ctx.step, temperature=self.temperature)
        return (sr + 1) / 2


@hookimpl
def register_restorers(register):
    """Register ``srdiff`` (any SRDiff checkpoint given with ``weights=``)."""
    register(SRDiffRestorer)
