"""SRDiff training, following the official two-step recipe (spec srdiff.md §2.1, §3, §4).

1. ``rrdb``: the RRDBNet LR encoder is pre-trained alone with an L1 loss against the HR image
   (both in [-1, 1]); Adam 2e-4, StepLR whose official period (200k of 100k steps) never
   decays inside the run.
2. ``diffusion``: the RRDB is loaded and frozen (eval, no grad); the conditional U-Net learns
   to predict the noise of the *residual* ``x0 = clamp((HR - bicubic_up(LR)) * 2, -1, 1)`` at
   a uniformly drawn step of the cosine schedule (T = 100), with an L1 loss; Adam 2e-4,
   halved at half of the run (200k of 400k officially). The official code has no EMA; ours
   is an option (``--ema``).

Images are in the engine's [0, 1] space and mapped to [-1, 1] as the SRDiff restorer does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.srdiff._arch.rrdb import RRDBNet
from .data import TrainingDataError

__all__ = ["SRDiffConfig", "RRDBStage", "DiffusionStage", "build_srdiff"]


@dataclass
class SRDiffConfig:
    """Architecture of a (small) SRDiff; the official DIV2K x4 model is hidden 64,
    dim_mults (1, 2, 3, 4), RRDB 8 blocks x 32 features, 3 channels."""

    scale: int = 4
    channels: int = 1
    hidden: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 2, 4)
    rrdb_blocks: int = 4
    rrdb_feat: int = 32
    timesteps: int = 100
    beta_s: float = 0.008

    def rrdb(self) -> RRDBNet:
        return RRDBNet(in_nc=self.channels, out_nc=self.channels, nf=self.rrdb_feat, nb=self.rrdb_blocks,
                       gc=self.rrdb_feat // 2, scale=self.scale)


def to_signed(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1


class RRDBStage(nn.Module):
    """Stage 1: the RRDB encoder alone, L1 in [-1, 1]."""

    name = "srdiff-rrdb"
    betas = (0.9, 0.999)  # torch Adam defaults, as the official trainer

    def __init__(self, cfg: SRDiffConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = cfg.rrdb()

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        return list(self.net.parameters())

    def lr_at(self, step: int, total: int, base_lr: float) -> float:
        return base_lr * 0.5 ** (step // max(1, 2 * total))  # StepLR(200k) over a 100k run

    def loss(self, lq, gt, step, total):
        out = self.net(to_signed(lq))
        return F.l1_loss(out, to_signed(gt)), {}

    @torch.no_grad()
    def predict(self, net, lq, seed, gt=None):
        return (net(to_signed(lq)) + 1) / 2

    def export(self, net):
        return net, {"family": "srdiff-rrdb"}


class DiffusionStage(nn.Module):
    """Stage 2: the conditional U-Net on residuals inside a full :class:`SRDiff`, RRDB frozen."""

    name = "srdiff-diffusion"
    betas = (0.9, 0.999)

    def __init__(self, cfg: SRDiffConfig, rrdb_weights: str | Path | None) -> None:
        super().__init__()
        if rrdb_weights is None or not Path(rrdb_weights).is_file():
            raise TrainingDataError(
                f"SRDiff diffusion training needs the pre-trained RRDB encoder (stage 'rrdb'), "
                f"but {str(rrdb_weights)!r} is not a file; run `napari-diffir train srdiff --stage rrdb` first"
            )
        from safetensors.torch import load_file

        self.cfg = cfg
        self.net = build_srdiff(cfg)
        try:
            sd = load_file(str(rrdb_weights))
            if any(k.startswith("rrdb.") for k in sd):  # a whole SRDiff model: take its encoder
                sd = {k[len("rrdb."):]: v for k, v in sd.items() if k.startswith("rrdb.")}
            own = self.net.rrdb.state_dict()
            self.net.rrdb.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}, strict=True)
        except RuntimeError as exc:
            raise TrainingDataError(
                f"The RRDB checkpoint {str(rrdb_weights)!r} does not match this configuration "
                f"(rrdb_blocks={cfg.rrdb_blocks}, rrdb_feat={cfg.rrdb_feat}, scale={cfg.scale}): {exc}"
            ) from None
        self.net.rrdb.requires_grad_(False)

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        return list(self.net.denoise_fn.parameters())

    def lr_at(self, step: int, total: int, base_lr: float) -> float:
        return base_lr * 0.5 ** (step // max(1, total // 2))  # StepLR(200k) over a 400k run

    def loss(self, lq, gt, step, total):
        self.net.rrdb.eval()
        return self.net.training_loss(to_signed(gt), to_signed(lq)), {}

    @torch.no_grad()
    def predict(self, net, lq, seed, gt=None):
        """Full ancestral DDPM sampling (all T steps), as SRDiff does at test time."""
        g = torch.Generator(device=lq.device).manual_seed(seed)
        return (net.sample(to_signed(lq), generator=g) + 1) / 2

    def export(self, net):
        return net, {"family": "srdiff"}


def build_srdiff(cfg: SRDiffConfig) -> nn.Module:
    """The inference model (official key layout: ``denoise_fn.*``, ``rrdb.*``, 12 buffers)."""
    from ..models.srdiff import SRDiff

    return SRDiff(scale=cfg.scale, in_channels=cfg.channels, hidden_size=cfg.hidden, dim_mults=cfg.dim_mults,
                  rrdb_num_block=cfg.rrdb_blocks, rrdb_num_feat=cfg.rrdb_feat, timesteps=cfg.timesteps,
                  beta_s=cfg.beta_s)
