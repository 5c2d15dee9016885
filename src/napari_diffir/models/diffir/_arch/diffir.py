"""The two DiffIR networks: ``DiffIRS1`` (stage 1, needs the ground truth) and ``DiffIRS2``.

Children and keys mirror ``DiffIRS1``/``DiffIRS2`` of Zj-BinXia/DiffIR @ 293f86c: stage 1 is
``G`` (DIRformer) + ``E`` (CPEN_S1); stage 2 is ``G`` + ``condition`` (CPEN_S2) + ``denoise``
+ ``diffusion`` (which holds the *same* CPEN_S2 and denoiser again, so their tensors appear
under two keys each, plus 12 schedule buffers). One class per stage covers SR x4/x2/x1,
deblurring and inpainting through ``task``. Written fresh for this project.

Return values follow upstream:

========================  ==========================  ===================================
                          training mode               eval mode
========================  ==========================  ===================================
``DiffIRS1(x, gt)``       ``(out, [ipr])``            ``out`` (inpaint: ``(out, [ipr])``)
``DiffIRS2(x, IPRS1)``    ``(out, [ipr_t, ..., ipr_0])``  ``out`` (inpaint: ``(out, None)``)
========================  ==========================  ===================================

:meth:`DiffIRS2.restore` and :meth:`DiffIRS1.restore` always return just the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .cpen import CPEN
from .dirformer import TASKS, DIRformer, sr_unshuffle_factor
from .ipr_diffusion import IPRDenoiser, IPRDiffusion
from .layernorm import LAYER_NORM_TYPES

__all__ = ["DiffIRS1", "DiffIRS2"]


def _resolve(
    *,
    task: str,
    scale: int | None,
    inp_channels: int | None,
    out_channels: int,
    num_blocks: Sequence[int],
    num_refinement_blocks: int | None,
    heads: Sequence[int],
    dim: int,
    LayerNorm_type: str,
    n_feats: int,
    n_encoder_res: int,
) -> dict[str, Any]:
    """Fill task-dependent defaults and reject combinations upstream would fail on later."""
    if task not in TASKS:
        raise ValueError(f"DiffIR task must be one of {list(TASKS)}, but got {task!r}")
    if task == "sr":
        scale = 4 if scale is None else scale
        sr_unshuffle_factor(scale)  # validates
    elif scale not in (None, 1):
        raise ValueError(f"Only task='sr' has a scale; a {task!r} model has scale 1, but got {scale!r}")
    else:
        scale = 1
    if inp_channels is None:  # upstream defaults: RGB, or RGB + mask for inpainting
        inp_channels = 4 if task == "inpaint" else 3
    if num_refinement_blocks is None:
        num_refinement_blocks = 0 if task == "inpaint" else 4
    if LayerNorm_type not in LAYER_NORM_TYPES:
        raise ValueError(f"LayerNorm_type must be one of {list(LAYER_NORM_TYPES)}, but got {LayerNorm_type!r}")
    for name, value in (("inp_channels", inp_channels), ("out_channels", out_channels), ("dim", dim),
                        ("n_feats", n_feats)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, but got {value!r}")
    if n_encoder_res < 0 or num_refinement_blocks < 0 or any(n < 0 for n in num_blocks):
        raise ValueError("Block counts must be >= 0")
    for i, (mult, h) in enumerate(zip((1, 2, 4, 8), heads)):
        if (dim * mult) % h:
            raise ValueError(f"Level {i + 1} has {dim * mult} channels, not divisible by heads[{i}] = {h}")
    if (2 * dim) % heads[0]:
        raise ValueError(f"The level-1 decoder has {2 * dim} channels, not divisible by heads[0] = {heads[0]}")
    return dict(task=task, scale=scale, inp_channels=inp_channels, num_refinement_blocks=num_refinement_blocks)


def _cpen_input(task: str, scale: int) -> int:
    """Pixel-unshuffle factor CPEN applies to the degraded input (see CPEN)."""
    return sr_unshuffle_factor(scale) if task == "sr" else 4


class _DiffIRBase(nn.Module):
    hyperparameters: dict[str, Any]
    G: DIRformer

    @property
    def task(self) -> str:
        return self.hyperparameters["task"]

    @property
    def scale(self) -> int:
        return self.hyperparameters["scale"]

    @property
    def multiple_of(self) -> int:
        """Input H and W must be multiples of this (8 at the body's x4-LR grid)."""
        return self.G.multiple_of

    @property
    def ipr_dim(self) -> int:
        return 4 * self.hyperparameters["n_feats"]

    def _build_G(self, hp: dict[str, Any]) -> DIRformer:
        return DIRformer(
            inp_channels=hp["inp_channels"], out_channels=hp["out_channels"], scale=hp["scale"],
            dim=hp["dim"], num_blocks=hp["num_blocks"], num_refinement_blocks=hp["num_refinement_blocks"],
            heads=hp["heads"], ffn_expansion_factor=hp["ffn_expansion_factor"], bias=hp["bias"],
            LayerNorm_type=hp["LayerNorm_type"], task=hp["task"], dual_pixel_task=hp["dual_pixel_task"],
            ipr_dim=4 * hp["n_feats"],
        )


class DiffIRS1(_DiffIRBase):
    """Stage 1: the IPR is extracted from the degraded image *and* its ground truth.

    Not usable for blind restoration (it needs ``gt``); it is the teacher for stage 2 and the
    network trained first. Arguments keep the upstream names; ``task`` selects the variant,
    ``n_feats`` the CPEN width (64 upstream; the IPR has ``4 * n_feats`` values).
    ``inp_channels`` defaults to 3 (4 for inpainting: image + mask); ``scale`` to 4 for SR;
    ``num_refinement_blocks`` to 4 (0 for inpainting, which has no refinement stage).
    """

    def __init__(
        self,
        *,
        n_encoder_res: int = 6,
        inp_channels: int | None = None,
        out_channels: int = 3,
        scale: int | None = None,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int | None = None,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",
        task: str = "sr",
        n_feats: int = 64,
        dual_pixel_task: bool = False,
    ) -> None:
        super().__init__()
        hp = dict(
            n_encoder_res=n_encoder_res, inp_channels=inp_channels, out_channels=out_channels,
            scale=scale, dim=dim, num_blocks=list(num_blocks),
            num_refinement_blocks=num_refinement_blocks, heads=list(heads),
            ffn_expansion_factor=ffn_expansion_factor, bias=bias, LayerNorm_type=LayerNorm_type,
            task=task, n_feats=n_feats, dual_pixel_task=dual_pixel_task,
        )
        hp.update(_resolve(
            task=task, scale=scale, inp_channels=inp_channels, out_channels=out_channels,
            num_blocks=num_blocks, num_refinement_blocks=num_refinement_blocks, heads=heads, dim=dim,
            LayerNorm_type=LayerNorm_type, n_feats=n_feats, n_encoder_res=n_encoder_res,
        ))
        self.hyperparameters = hp
        self.G = self._build_G(hp)
        self.E = CPEN(
            n_feats=n_feats, n_encoder_res=n_encoder_res, lq_channels=hp["inp_channels"],
            lq_unshuffle=_cpen_input(hp["task"], hp["scale"]), gt_channels=out_channels,
        )

    def forward(self, x: torch.Tensor, gt: torch.Tensor):
        ipr = self.E(x, gt)
        out = self.G(x, ipr)
        if self.training or self.task == "inpaint":
            return out, [ipr]
        return out

    def restore(self, x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The restored image only, whatever the mode and task."""
        return self.G(x, self.E(x, gt))


class DiffIRS2(_DiffIRBase):
    """Stage 2: the IPR is estimated from the degraded image alone by a 4-step IPR diffusion.

    Same arguments as :class:`DiffIRS1` plus the diffusion's ``n_denoise_res`` (MLP depth),
    ``linear_start``, ``linear_end`` and ``timesteps`` (upstream: 1, 0.1, 0.99, 4).
    """

    def __init__(
        self,
        *,
        n_encoder_res: int = 6,
        inp_channels: int | None = None,
        out_channels: int = 3,
        scale: int | None = None,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int | None = None,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",
        n_denoise_res: int = 1,
        linear_start: float = 0.1,
        linear_end: float = 0.99,
        timesteps: int = 4,
        task: str = "sr",
        n_feats: int = 64,
        dual_pixel_task: bool = False,
    ) -> None:
        super().__init__()
        hp = dict(
            n_encoder_res=n_encoder_res, inp_channels=inp_channels, out_channels=out_channels,
            scale=scale, dim=dim, num_blocks=list(num_blocks),
            num_refinement_blocks=num_refinement_blocks, heads=list(heads),
            ffn_expansion_factor=ffn_expansion_factor, bias=bias, LayerNorm_type=LayerNorm_type,
            n_denoise_res=n_denoise_res, linear_start=linear_start, linear_end=linear_end,
            timesteps=timesteps, task=task, n_feats=n_feats, dual_pixel_task=dual_pixel_task,
        )
        hp.update(_resolve(
            task=task, scale=scale, inp_channels=inp_channels, out_channels=out_channels,
            num_blocks=num_blocks, num_refinement_blocks=num_refinement_blocks, heads=heads, dim=dim,
            LayerNorm_type=LayerNorm_type, n_feats=n_feats, n_encoder_res=n_encoder_res,
        ))
        if n_denoise_res < 0:
            raise ValueError(f"n_denoise_res must be >= 0, but got {n_denoise_res}")
        self.hyperparameters = hp
        self.G = self._build_G(hp)
        self.condition = CPEN(
            n_feats=n_feats, n_encoder_res=n_encoder_res, lq_channels=hp["inp_channels"],
            lq_unshuffle=_cpen_input(hp["task"], hp["scale"]),
        )
        self.denoise = IPRDenoiser(n_feats=n_feats, n_denoise_res=n_denoise_res, timesteps=timesteps)
        self.diffusion = IPRDiffusion(
            self.denoise, self.condition, timesteps=timesteps, linear_start=linear_start,
            linear_end=linear_end, n_feats=n_feats,
        )

    def forward(
        self,
        img: torch.Tensor,
        IPRS1: torch.Tensor | None = None,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        if self.training:
            ipr, steps = self.diffusion(img, IPRS1)
            return self.G(img, ipr), steps
        out = self.restore(img, noise=noise, generator=generator)
        return (out, None) if self.task == "inpaint" else out

    def estimate_ipr(
        self,
        img: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The IPR sampled by the diffusion (see :meth:`IPRDiffusion.sample` for ``noise``)."""
        return self.diffusion.sample(img, noise=noise, generator=generator)

    def restore(
        self,
        img: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The restored image only (eval semantics whatever the mode)."""
        self.G.check_size(img)
        return self.G(img, self.estimate_ipr(img, noise=noise, generator=generator))
