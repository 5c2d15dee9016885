"""DiffIR training, following the official two-stage recipe (spec diffir.md §4, §5).

Stage 1 (``DiffIRS1``): CPEN_S1 sees the degraded image *and* the ground truth and compresses
them into the IPR vector that modulates the DIRformer; both are trained jointly with an L1
pixel loss. Stage 2 (``DiffIRS2``): the DIRformer starts from stage 1, the frozen stage-1 CPEN
gives the target IPR, and CPEN_S2 + the IPR denoiser learn to reach it from the degraded image
alone with the 4-step diffusion (optionally first on their own: the "encoder-only" warm-up),
then everything is trained on L1 pixel + L1 between the estimated and the stage-1 IPR.
The pixel loss can be the mean squared error instead (``pixel_loss="l2"``): PSNR is a function of
the MSE, so an L2 fine-tune of an L1-trained model trades a little of L1's robustness for PSNR.

Learning-rate schedules are the official ones with their milestones scaled to the run length:
SR (DiffIR-SRGAN): Adam (0.9, 0.99), MultiStepLR at 50 % and 70 % (500k/700k of 1M), x0.5,
no warm-up. Deblur/denoise (DiffIR-demotionblur): stage 1 Adam (0.9, 0.999) with the
cyclic cosine (periods 92k+208k of 300k, eta_min 2.85e-4 then 1e-6); stage 2 encoder-only
for 25 % (100k of 400k, LR x0.1 every 60k), then joint with LR x0.5 every 80k of 300k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import TrainingDataError
from .loop import cosine_restart_lr

__all__ = ["PIXEL_LOSSES", "DiffIRConfig", "Stage1", "Stage2"]

PIXEL_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


def _pixel_loss(name: str):
    if name not in PIXEL_LOSSES:
        raise ValueError(f"pixel loss must be one of {sorted(PIXEL_LOSSES)}, not {name!r}")
    return PIXEL_LOSSES[name]


@dataclass
class DiffIRConfig:
    """Architecture of a (small) DiffIR. Official deblur: dim 48, blocks (3,5,6,6), refinement
    4, ffn 2, n_encoder_res 5, CPEN width 64, RGB; official SR: dim 64, (13,1,1,1), 13, 2.2."""

    task: str = "deblur"  # "deblur" = same-size restoration with a global residual (denoising too)
    scale: int = 1
    channels: int = 1
    dim: int = 24
    num_blocks: tuple[int, ...] = (1, 2, 2, 2)
    num_refinement_blocks: int = 1
    heads: tuple[int, ...] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.0
    LayerNorm_type: str = "WithBias"
    n_encoder_res: int = 2
    n_feats: int = 16
    n_denoise_res: int = 1
    timesteps: int = 4
    linear_start: float = 0.1
    linear_end: float = 0.99

    def s1_kwargs(self) -> dict:
        kw = dict(
            n_encoder_res=self.n_encoder_res, inp_channels=self.channels, out_channels=self.channels,
            dim=self.dim, num_blocks=list(self.num_blocks), num_refinement_blocks=self.num_refinement_blocks,
            heads=list(self.heads), ffn_expansion_factor=self.ffn_expansion_factor, bias=False,
            LayerNorm_type=self.LayerNorm_type, task=self.task, n_feats=self.n_feats,
        )
        if self.task == "sr":
            kw["scale"] = self.scale
        return kw

    def s2_kwargs(self) -> dict:
        return dict(self.s1_kwargs(), n_denoise_res=self.n_denoise_res, timesteps=self.timesteps,
                    linear_start=self.linear_start, linear_end=self.linear_end)

    @property
    def multiple_of(self) -> int:
        from .sizes import input_multiple

        return input_multiple("diffir", self.scale if self.task == "sr" else 1, "")

    def to_dict(self) -> dict:
        return asdict(self)


def _multistep(step: int, total: int, base: float, milestones=(0.5, 0.7), gamma: float = 0.5) -> float:
    return base * gamma ** sum(step >= int(m * total) for m in milestones)


class Stage1(nn.Module):
    """CPEN_S1 + DIRformer, L1 (or L2) pixel loss (GT needed: for training only)."""

    name = "diffir-s1"

    def __init__(self, cfg: DiffIRConfig, pixel_loss: str = "l1") -> None:
        super().__init__()
        from ..models.diffir._arch import DiffIRS1

        self.cfg = cfg
        self.pixel_loss = _pixel_loss(pixel_loss)
        self.net = DiffIRS1(**cfg.s1_kwargs())
        self.betas = (0.9, 0.99) if cfg.task == "sr" else (0.9, 0.999)

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        return list(self.net.parameters())

    def lr_at(self, step: int, total: int, base_lr: float) -> float:
        if self.cfg.task == "sr":
            return _multistep(step, total, base_lr)
        p1 = max(1, round(total * 92 / 300))
        return cosine_restart_lr(step, [p1, max(1, total - p1)], [2.85e-4, 1e-6], base_lr)

    def loss(self, lq, gt, step, total):
        z = self.net.E(lq, gt)
        return self.pixel_loss(self.net.G(lq, z), gt), {}

    @torch.no_grad()
    def predict(self, net, lq, seed, gt=None):
        """Stage 1 is validated like the official S1: CPEN_S1 is given the GT."""
        return net.G(lq, net.E(lq, gt))

    def export(self, net):
        return net, {"variant": "DiffIRS1"}


class Stage2(nn.Module):
    """CPEN_S2 + IPR denoiser (+ DIRformer after the warm-up); blind at inference."""

    name = "diffir-s2"

    def __init__(self, cfg: DiffIRConfig, s1_weights: str | Path | None, encoder_fraction: float | None = None,
                 pixel_loss: str = "l1") -> None:
        super().__init__()
        from ..models.diffir._arch import DiffIRS1, DiffIRS2

        self.cfg = cfg
        self.pixel_loss = _pixel_loss(pixel_loss)
        self.net = DiffIRS2(**cfg.s2_kwargs())
        self.s1_encoder = None
        if s1_weights is not None:  # None: fine-tuning a stage-2 model (weights loaded by the caller)
            if not Path(s1_weights).is_file():
                raise TrainingDataError(
                    f"DiffIR stage 2 needs a stage-1 checkpoint (--s1), but {str(s1_weights)!r} is not a file; "
                    "train stage 1 first (`napari-diffir train diffir --stage 1 ...`)"
                )
            from safetensors.torch import load_file

            sd = load_file(str(s1_weights))
            s1 = DiffIRS1(**cfg.s1_kwargs())
            try:
                s1.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise TrainingDataError(
                    f"The stage-1 checkpoint {str(s1_weights)!r} does not match this configuration "
                    f"({cfg.to_dict()}): {exc}"
                ) from None
            self.s1_encoder = s1.E.eval().requires_grad_(False)
            # official: pretrain_network_g = stage 1 with strict_load_g False -> only G.* is taken
            self.net.G.load_state_dict(s1.G.state_dict(), strict=True)
        self.encoder_fraction = (0.0 if cfg.task == "sr" else 0.25) if encoder_fraction is None else encoder_fraction
        self.betas = (0.9, 0.99)

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        return list(self.net.parameters())

    def encoder_steps(self, total: int) -> int:
        return int(round(self.encoder_fraction * total))

    def phase_starts(self) -> tuple:
        """Where a dearer phase begins, as a function of the schedule's length: the DIRformer
        joins the encoder warm-up (a time budget prices the two phases apart)."""
        return (self.encoder_steps,) if self.s1_encoder is not None and 0 < self.encoder_fraction < 1 else ()

    def lr_at(self, step: int, total: int, base_lr: float) -> float:
        enc = self.encoder_steps(total)
        if step < enc:  # official: 2e-4 * 0.1 ** (iter // 60k) during the 100k warm-up
            return base_lr * 0.1 ** (step // max(1, round(enc * 0.6)))
        if self.cfg.task == "sr" and enc == 0:
            return _multistep(step, total, base_lr)
        joint = max(1, total - enc)  # official deblur: x0.5 every 80k of the 300k joint steps
        return base_lr * 0.5 ** ((step - enc) // max(1, round(joint * 80 / 300)))

    def loss(self, lq, gt, step, total):
        if self.s1_encoder is None:  # fine-tuning without the teacher: end to end, pixel loss only
            self.net.diffusion.eval()
            l_pix = self.pixel_loss(self.net.G(lq, self.net.diffusion.sample(lq)), gt)
            return l_pix, {"pix": l_pix.detach()}
        with torch.no_grad():
            target = self.s1_encoder(lq, gt)
        self.net.diffusion.train()
        ipr, _ = self.net.diffusion(lq, target)
        l_ipr = F.l1_loss(ipr, target)
        if step < self.encoder_steps(total):
            return l_ipr, {"ipr": l_ipr.detach()}
        l_pix = self.pixel_loss(self.net.G(lq, ipr), gt)
        return l_pix + l_ipr, {"pix": l_pix.detach(), "ipr": l_ipr.detach()}

    @torch.no_grad()
    def predict(self, net, lq, seed, gt=None):
        g = torch.Generator(device=lq.device).manual_seed(seed)
        net.eval()
        z = net.diffusion.sample(lq, generator=g)
        return net.G(lq, z)

    def export(self, net):
        return net, {"variant": "DiffIRS2"}
