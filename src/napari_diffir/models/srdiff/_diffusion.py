"""``SRDiff``: the official ``GaussianDiffusion`` wrapper around the RRDB encoder and the U-Net.

The diffusion runs in *residual* space: the target is ``clip((HR - img_lr_up) * 2, -1, 1)`` where
``img_lr_up`` is the MATLAB-bicubic upsampled LR image, and the U-Net predicts the added noise.
Attribute and buffer names are the official ones (``denoise_fn``, ``rrdb``, 12 unprefixed
schedule buffers), so ``state_dict()`` is key-for-key an official checkpoint's ``model`` dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...resize import imresize_torch
from ..samplers import SAMPLERS, NoiseFn, StepFn, run_sampler
from ..schedules import BUFFER_NAMES, Schedule
from ._arch import RRDBNet, Unet, cond_channels

__all__ = ["SRDiff"]


def _gather(table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``table[t]`` shaped to broadcast over a batch of ``ndim``-dimensional tensors."""
    return table.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))


class SRDiff(nn.Module):
    """Residual diffusion super-resolution (Li et al., Neurocomputing 2022).

    Keyword defaults are the released DIV2K x4 model as shipped (RRDB 8 blocks x 32 features);
    :func:`napari_diffir.models.srdiff.from_state_dict` infers them from a checkpoint instead.
    ``in_channels`` is the LR image's channel count, ``out_channels`` the HR image's (and the
    residual's); the official models use 3 and 3, project-trained microscopy models 1 and 1.
    Images are in [-1, 1] throughout, as in the official code.
    """

    def __init__(
        self, *, scale: int = 4, in_channels: int = 3, out_channels: int | None = None,
        hidden_size: int = 64, dim_mults: Sequence[int] = (1, 2, 3, 4), rrdb_num_block: int = 8,
        rrdb_num_feat: int = 32, rrdb_growth: int | None = None, timesteps: int = 100,
        beta_s: float = 0.008, res_rescale: float = 2.0, clip_input: bool = True, loss_type: str = "l1",
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        rrdb_growth = rrdb_num_feat // 2 if rrdb_growth is None else rrdb_growth
        if loss_type not in ("l1", "l2"):
            raise ValueError(f"loss_type must be 'l1' or 'l2', but got {loss_type!r}")
        self.hyperparameters = dict(
            scale=scale, in_channels=in_channels, out_channels=out_channels, hidden_size=hidden_size,
            dim_mults=tuple(int(m) for m in dim_mults), rrdb_num_block=rrdb_num_block,
            rrdb_num_feat=rrdb_num_feat, rrdb_growth=rrdb_growth, timesteps=timesteps, beta_s=beta_s,
            res_rescale=res_rescale, clip_input=clip_input, loss_type=loss_type)
        self.denoise_fn = Unet(
            dim=hidden_size, in_channels=out_channels, out_dim=out_channels, dim_mults=dim_mults,
            cond_channels=cond_channels(rrdb_num_feat, rrdb_num_block), scale=scale)
        self.rrdb = RRDBNet(in_nc=in_channels, out_nc=out_channels, nf=rrdb_num_feat,
                            nb=rrdb_num_block, gc=rrdb_growth, scale=scale)
        for name, table in Schedule.cosine(timesteps, beta_s).tables().items():
            self.register_buffer(name, table)
        self.num_timesteps = timesteps
        self.loss_type = loss_type
        self.res_rescale = res_rescale
        self.clip_input = clip_input

    # -- metadata -----------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return self.hyperparameters["scale"]

    @property
    def in_channels(self) -> int:
        return self.hyperparameters["in_channels"]

    @property
    def out_channels(self) -> int:
        return self.hyperparameters["out_channels"]

    @property
    def schedule(self) -> Schedule:
        """The noise schedule held in this model's buffers (as loaded, on the model's device)."""
        return Schedule.from_tables({name: getattr(self, name) for name in BUFFER_NAMES})

    @property
    def hr_multiple(self) -> int:
        """HR height and width must be multiples of this (the U-Net halves them per level)."""
        return self.denoise_fn.size_multiple

    @property
    def lr_multiple(self) -> int:
        """Smallest LR size multiple whose upscaled size is a multiple of :attr:`hr_multiple`."""
        m, s = self.hr_multiple, self.scale
        return m // math.gcd(m, s)

    # -- residual mapping ---------------------------------------------------------------------
    def img2res(self, x: torch.Tensor, img_lr_up: torch.Tensor) -> torch.Tensor:
        """HR image -> diffusion target ``(x - img_lr_up) * res_rescale``, clipped to [-1, 1]."""
        x = (x - img_lr_up) * self.res_rescale
        return x.clamp(-1, 1) if self.clip_input else x

    def res2img(self, res: torch.Tensor, img_lr_up: torch.Tensor) -> torch.Tensor:
        """Residual -> image ``clip(res) / res_rescale + img_lr_up`` (not clipped further)."""
        if self.clip_input:
            res = res.clamp(-1, 1)
        return res / self.res_rescale + img_lr_up

    def upsample_lr(self, img_lr: torch.Tensor) -> torch.Tensor:
        """``img_lr_up`` for an LR image in [-1, 1]: MATLAB-bicubic x``scale`` in [0, 1], mapped back.

        This is the official data pipeline's formula for float images; the pipeline itself divides
        uint8 LR images by 256 (not 255), which a caller can reproduce by passing its own
        ``img_lr_up``.
        """
        return imresize_torch((img_lr + 1) / 2, self.scale) * 2 - 1

    # -- forward process and training ---------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Diffuse the clean residual to steps ``t`` (B,); ``t < 0`` leaves it clean."""
        noise = torch.randn_like(x_start) if noise is None else noise
        keep = (t >= 0).to(x_start.dtype).reshape(-1, *((1,) * (x_start.ndim - 1)))
        tc = t.clamp_min(0)
        noisy = (_gather(self.sqrt_alphas_cumprod, tc, x_start.ndim) * x_start
                 + _gather(self.sqrt_one_minus_alphas_cumprod, tc, x_start.ndim) * noise)
        return noisy * keep + x_start * (1 - keep)

    def predict_start_from_noise(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
                - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * noise)

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)``."""
        mean = (_gather(self.posterior_mean_coef1, t, x_t.ndim) * x_start
                + _gather(self.posterior_mean_coef2, t, x_t.ndim) * x_t)
        return (mean, _gather(self.posterior_variance, t, x_t.ndim),
                _gather(self.posterior_log_variance_clipped, t, x_t.ndim))

    def encode(self, img_lr: torch.Tensor) -> list[torch.Tensor]:
        """RRDB trunk features of the LR image, without gradients (the encoder is frozen)."""
        with torch.no_grad():
            return self.rrdb.features(img_lr)

    def p_losses(self, x_start: torch.Tensor, t: torch.Tensor, cond, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Noise-prediction loss (L1 by default) for clean residuals ``x_start`` at steps ``t``."""
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        pred = self.denoise_fn(x_t, t, cond)
        if self.loss_type == "l1":
            return (noise - pred).abs().mean()
        return F.mse_loss(pred, noise)

    def training_loss(
        self, img_hr: torch.Tensor, img_lr: torch.Tensor, img_lr_up: torch.Tensor | None = None, *,
        t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The official training objective with a frozen RRDB: images in [-1, 1], returns a scalar."""
        img_lr_up = self.upsample_lr(img_lr) if img_lr_up is None else img_lr_up
        if t is None:
            t = torch.randint(0, self.num_timesteps, (img_hr.shape[0],), device=img_hr.device)
        return self.p_losses(self.img2res(img_hr, img_lr_up), t, self.encode(img_lr), noise)

    forward = training_loss

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, img_lr: torch.Tensor, img_lr_up: torch.Tensor | None = None, *, steps: int | None = None,
        sampler: str = "ddpm", eta: float = 0.0, generator: torch.Generator | None = None,
        noise: NoiseFn | None = None, callback: StepFn | None = None, temperature: float = 1.0,
    ) -> torch.Tensor:
        """Super-resolve ``img_lr`` (B, C, h, w) in [-1, 1]; returns the SR image (B, C, h*s, w*s).

        ``sampler`` is ``"ddpm"`` (the official sampler when ``steps`` is None or T), ``"ddim"``
        (``eta`` 0 = deterministic) or ``"dpm++2m"``. Draws come from ``generator`` or, without
        one, from ``torch.randn`` in the official order (so ``torch.manual_seed`` reproduces the
        release's output); ``noise(like, stream)`` overrides both. ``callback(done, total)`` is
        called after every step. The RRDB and the condition projection run once per call; on CPU
        the U-Net runs on channels-last tensors. An LR size whose upscaled size is not a
        multiple of :attr:`hr_multiple` is reflect-padded and the result cropped back.

        ``temperature`` scales every draw (``x_T`` and the noise the stochastic samplers inject):
        1 samples the model's distribution as the release does; lower values start closer to the
        middle of the prior, which trades generated texture for fidelity to the LR input (a small
        model's texture is partly invented); 0 is deterministic.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown SRDiff sampler {sampler!r}; expected one of {list(SAMPLERS)}")
        if not 0.0 <= temperature <= 1.0:
            raise ValueError(f"SRDiff temperature must be in [0, 1], but got {temperature!r}")
        if img_lr.ndim != 4 or img_lr.shape[1] != self.in_channels:
            raise ValueError(f"SRDiff.sample expects img_lr of shape (B, {self.in_channels}, h, w), "
                             f"but got {tuple(img_lr.shape)}")
        b, _, h, w = img_lr.shape
        s = self.scale
        if img_lr_up is not None and tuple(img_lr_up.shape) != (b, self.out_channels, h * s, w * s):
            raise ValueError(f"SRDiff.sample expects img_lr_up of shape {(b, self.out_channels, h * s, w * s)}, "
                             f"but got {tuple(img_lr_up.shape)}")
        m = self.lr_multiple
        ph, pw = -h % m, -w % m
        if ph or pw:
            img_lr = _pad(img_lr, ph, pw)
            img_lr_up = None if img_lr_up is None else _pad(img_lr_up, ph * s, pw * s)
        if noise is None:
            noise = _torch_noise(generator)
        if temperature != 1.0:
            noise = _scaled(noise, temperature)
        shape = (b, self.out_channels, img_lr.shape[2] * s, img_lr.shape[3] * s)
        x = noise(torch.empty(shape, device=img_lr.device, dtype=img_lr.dtype), 0)
        if img_lr_up is None:
            img_lr_up = self.upsample_lr(img_lr)
        cond = self.denoise_fn.project_cond(self.rrdb.features(img_lr))
        if x.device.type == "cpu":  # oneDNN convolutions run ~10% faster on NHWC tensors
            x, cond = (v.contiguous(memory_format=torch.channels_last) for v in (x, cond))

        def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
            steps_t = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
            return self.denoise_fn(x_t, steps_t, cond)

        res = run_sampler(self.schedule, eps_fn, x, sampler=sampler, steps=steps, eta=eta, noise=noise,
                          callback=callback)
        return self.res2img(res, img_lr_up)[..., : h * s, : w * s]


def _pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    mode = "reflect" if ph < x.shape[2] and pw < x.shape[3] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _scaled(noise: NoiseFn, factor: float) -> NoiseFn:
    """The draws of ``noise`` times ``factor`` (same streams, so tiles still share one field)."""
    return lambda like, stream: noise(like, stream) * factor


def _torch_noise(generator: torch.Generator | None) -> NoiseFn:
    """Draws from ``generator`` (or torch's global RNG) in call order; the stream is ignored."""

    def noise(like: torch.Tensor, stream: int) -> torch.Tensor:
        if generator is None:
            return torch.randn(like.shape, device=like.device, dtype=like.dtype)
        z = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
        return z.to(like.device)

    return noise
