"""DIRformer: the Restormer-like U-Net of DiffIR, modulated at every block by the 256-d IPR.

Paper: Xia et al., "DiffIR: Efficient Diffusion Model for Image Restoration", ICCV 2023.
Attribute names (= state-dict keys) mirror Zj-BinXia/DiffIR @ 293f86c: ``DIRformer`` in
``DiffIR-RealSR/DiffIR/archs/S2_arch.py`` (SR, head ``tail``), ``DiffIR-demotionblur`` (deblur,
head ``output`` plus input residual) and ``DiffIR-inpainting/archs`` (no ``refinement``, head
``output``, no residual). One class covers the three through ``task``. Written fresh for this
project from the spec (docs in /work/shared/spec/diffir.md §2).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .inference_conv import InferenceConv2d
from .layernorm import LayerNorm
from .onednn import linear
from .sr_tail import X4Tail
from .weight_cache import cached, cast, inference

__all__ = [
    "Attention",
    "BlockSequence",
    "DIRformer",
    "Downsample",
    "FeedForward",
    "OverlapPatchEmbed",
    "PLANE_HOOK",
    "TASKS",
    "TransformerBlock",
    "Upsample",
    "cosine_attention",
    "sr_unshuffle_factor",
]

TASKS = ("sr", "deblur", "inpaint")
SR_SCALES = (1, 2, 4)

PLANE_HOOK: ContextVar[Any] = ContextVar("diffir_plane_hook", default=None)
"""When set (by ``planewise``), every :class:`Attention` and :class:`FeedForward` hands its
forward to ``hook.attention(module, ...)`` / ``hook.feed_forward(module, ...)``, which use a
whole image plane's statistics instead of the tile's. A context variable, so a run in another
thread or an ordinary forward never sees it; unset (the default), the modules compute exactly
as upstream.
"""


def sr_unshuffle_factor(scale: int) -> int:
    """Space-to-depth factor that brings an SR input to the x4 body resolution (4->1, 2->2, 1->4).

    The SR body always ends in a x4 upsampler, so x2 and x1 models first fold their input by 2
    or 4 (pixel-unshuffle). The patch embedding then sees ``inp_channels * factor**2`` channels:
    3/12/48 for the official RGB models, 1/4/16 for single-channel ones.
    """
    if scale not in SR_SCALES:
        raise ValueError(f"DiffIR super-resolution scale must be one of {SR_SCALES}, but got {scale!r}")
    return 4 // scale


_ALIGN = 16
"""Channel multiple the FFN's dense halves are zero-padded to (see ``_gate_dense_halves``)."""


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.stride(1) == 1 and x.shape[1] > 1


def _ipr_affine(
    kernel: nn.Module, z: torch.Tensor, b: int, ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample channel (scale, shift), each (B, C), of the IPR modulation ``x * gamma + beta``.

    ``(gamma, beta) = kernel(z)`` split in halves (a plain scale, not ``1 + gamma``). When the
    layer norm's affine part is passed too, the pair also absorbs it:
    ``(x_hat * w + b) * gamma + beta = x_hat * (w * gamma) + (b * gamma + beta)``.
    """
    gamma, beta = _kernel_product(kernel[0], z).reshape(-1, 2, kernel[0].out_features // 2).unbind(1)
    if ln_weight is not None:
        beta = beta if ln_bias is None else torch.addcmul(beta, gamma, ln_bias)
        gamma = gamma * ln_weight
    return gamma.expand(b, -1), beta.expand(b, -1)


def _kernel_product(linear: nn.Linear, z: torch.Tensor) -> torch.Tensor:
    """``linear(z)``; for one prior in inference, a float32 matrix-vector product whatever autocast says.

    Under autocast ``linear`` would run as a bf16 GEMM of one row, with ``z`` and the weight cast
    first: 3x the time of ``torch.mv``, which autocast leaves in float32 (and the prior then
    enters the folded weights unrounded).
    """
    if z.shape[0] == 1 and linear.bias is None and z.is_floating_point() and inference(z, linear.weight):
        return torch.mv(linear.weight, z[0].to(linear.weight.dtype)).unsqueeze(0)
    return linear(z)


def _modulated_pointwise(x: torch.Tensor, conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``conv(x * scale + shift)`` for a 1x1 ``conv``, with the affine folded into its weights.

    ``W (x * s + t) + b = (W diag s) x + (W t + b)``: one batched matrix product and no pass over
    ``x``. Keeps the memory format (a channels-last input gives a channels-last output).
    """
    b, c, h, w = x.shape
    w_b, bias = _folded(conv, scale, shift, x.dtype)
    if _is_channels_last(x):
        return _rows_product(x, w_b, bias)
    out = torch.bmm(w_b, x.reshape(b, c, h * w)).add_(bias.unsqueeze(2))
    return out.view(b, -1, h, w)


def _folded(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype):
    """Per-sample weights (B, O, C) and bias (B, O) of a 1x1 ``conv`` applied to ``x * scale + shift``.

    One prior for the whole batch (``scale``/``shift`` expanded) gives expanded results.
    """
    b = scale.shape[0]
    if b > 1 and scale.stride(0) == 0 and shift.stride(0) == 0:
        w_b, bias = _folded(conv, scale[:1], shift[:1], dtype)
        return w_b.expand(b, -1, -1), bias.expand(b, -1)
    weight = conv.weight.view(conv.out_channels, conv.in_channels)
    w_b = weight * scale.unsqueeze(1)  # (B, O, C)
    if b == 1 and shift.dtype == weight.dtype and inference(shift, weight):
        bias = torch.mv(weight, shift[0]).unsqueeze(0)  # float32 also under autocast, as above
    else:
        bias = shift @ weight.t()  # (B, O)
    if conv.bias is not None:
        bias = bias + conv.bias
    return w_b.to(dtype), bias.to(dtype)


def _rows_product(x: torch.Tensor, w_b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A channels-last ``x`` (B, C, H, W) times per-sample weights (B, O, C) plus bias (B, O), channels-last."""
    b, c, h, w = x.shape
    if b == 1 or (w_b.stride(0) == 0 and bias.stride(0) == 0):  # one weight for all samples
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
        return linear(rows, w_b[0], bias[0]).view(b, h, w, -1).permute(0, 3, 1, 2)
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    out = torch.bmm(rows, w_b.transpose(1, 2)).add_(bias.unsqueeze(1))
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def _pointwise(x: torch.Tensor, conv: nn.Conv2d, width: int | None = None) -> torch.Tensor:
    """A 1x1 ``conv`` as one matrix product in ``x``'s memory format; ``width``: ``x`` has that many
    channels, the conv's inputs followed by zero ones (its weight gets zero columns for them).

    oneDNN rejects the strided (channel-sliced) maps of the gated FFN and PyTorch then falls back
    to a slow im2col convolution; a plain GEMM over pixel rows has no such cliff.
    """
    if not _is_channels_last(x):
        return conv(x)
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
    if width is not None and width != conv.in_channels:
        def padded() -> torch.Tensor:
            return F.pad(conv.weight.view(conv.out_channels, -1), (0, width - conv.in_channels)).to(rows.dtype)

        weight = cached(conv, f"padded:{width}:{rows.dtype}", (conv.weight,), padded) if inference(conv.weight) \
            else padded()
    else:
        weight = cast(conv, "weight", conv.weight, rows.dtype).view(conv.out_channels, c)
    bias = None if conv.bias is None else cast(conv, "bias", conv.bias, rows.dtype)
    return linear(rows, weight, bias).view(b, h, w, -1).permute(0, 3, 1, 2)


def _row_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over the last axis (pixels), keepdim, as ``torch.linalg.vector_norm``.

    On a channels-last map that axis is strided and ``vector_norm`` is not vectorised over it
    (4-8x slower); without autograd the sum of squares runs as an outer reduction, vectorised
    over the channels, accumulated in float32 (also for bf16 inputs: float32 norms then).
    Gradients keep ``vector_norm`` (its subgradient at zero), and so does fp16, whose squares
    could overflow.
    """
    fast = x.stride(-1) != 1 and x.dtype in (torch.float32, torch.bfloat16)
    if not fast or (torch.is_grad_enabled() and x.requires_grad):
        return torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x.square().sum(-1, keepdim=True, dtype=torch.float32).sqrt_()


def _gram(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``q @ k^T`` over the pixel axis of (B, heads, d, HW) maps.

    One image and one head is a plain matrix product: as a batched product of one, the strided
    channels-last operands cost 2-3x more (bf16) than through ``mm``.
    """
    if q.shape[0] * q.shape[1] == 1:
        return (q[0, 0] @ k[0, 0].transpose(0, 1)).view(1, 1, q.shape[2], k.shape[2])
    return q @ k.transpose(-2, -1)


def cosine_attention(gram: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor,
                     temperature: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis of the temperature-scaled cosines ``gram / (|q_i| |k_j|)``:
    the transposed attention's maps from its pixel sums (``q_norm``, ``k_norm``: (..., d) row
    norms, ``gram``: (..., d, d)), whether one tile summed them or a whole plane did."""
    q_norm, k_norm = q_norm.clamp_min(1e-12), k_norm.clamp_min(1e-12)
    return (gram / (q_norm.unsqueeze(-1) * k_norm.unsqueeze(-2)) * temperature).softmax(dim=-1)


class Attention(nn.Module):
    """DMTA: dynamic multi-head *transposed* attention (attention across channels, not pixels).

    Cost is linear in the number of pixels: each head forms a (C/h x C/h) attention map from
    L2-normalised queries and keys over all pixels, scaled by a learned ``temperature``.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool, ipr_dim: int = 256) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: {dim} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = InferenceConv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        ln_weight: torch.Tensor | None = None,
        ln_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` (already layer-normed), modulated by the IPR ``z``.

        With ``ln_weight``/``ln_bias``, ``x`` is the norm *before* its affine part, which is then
        folded into the ``qkv`` weights together with the modulation (same result, fewer passes).
        """
        hook = PLANE_HOOK.get()
        if hook is not None:
            return hook.attention(self, x, z, ln_weight, ln_bias)
        scale, shift = _ipr_affine(self.kernel, z, x.shape[0], ln_weight, ln_bias)
        q, k, v = self.split(self.qkv_dwconv(_modulated_pointwise(x, self.qkv, scale, shift)))
        return self.attend(self.attention_map(q, k), v)

    def split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)`` from the ``qkv`` map: q and k as (B, heads, C/heads, HW), v as (B, C, H, W)."""
        b, c3, h, w = qkv.shape
        q, k, v = qkv.chunk(3, dim=1)
        heads = self.num_heads
        return q.reshape(b, heads, c3 // 3 // heads, h * w), k.reshape(b, heads, c3 // 3 // heads, h * w), v

    def attention_map(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The (B, heads, C/h, C/h) map: softmax of the temperature-scaled cosines of q and k rows."""
        # cosine similarity of L2-normalised rows, without materialising normalised q and k
        return cosine_attention(_gram(q, k), _row_norm(q)[..., 0], _row_norm(k)[..., 0], self.temperature)

    def attend(self, attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``project_out(attn @ v)`` for a (B, heads, C/h, C/h) map and a (B, C, H, W) ``v``."""
        b, c, h, w = v.shape
        heads = self.num_heads
        # project_out(attn @ v) = (W_out blockdiag(attn)) v: one product over the pixels, not two
        w_out = self.project_out.weight.view(c, heads, c // heads).transpose(0, 1)  # (heads, C, c/h)
        mix = (w_out.to(attn.dtype) @ attn).transpose(1, 2).reshape(b, c, c)  # (B, C_out, C_in)
        channels_last = _is_channels_last(v)
        v = v.reshape(b, c, h * w)
        bias = self.project_out.bias
        if channels_last:
            if b == 1:
                rows = v[0].transpose(0, 1)  # (HW, C)
                if rows.dtype == torch.bfloat16 and mix.dtype != rows.dtype and inference(mix):
                    mix = mix.to(rows.dtype)  # as autocast would, so the product can take oneDNN's route
                    bias = None if bias is None else cast(self.project_out, "bias", bias, rows.dtype)
                out = linear(rows, mix[0], bias)  # channels-last result
            else:
                out = v.transpose(1, 2) @ mix.transpose(1, 2)
                if bias is not None:
                    out = out + bias
            return out.view(b, h, w, c).permute(0, 3, 1, 2)
        out = mix @ v
        if bias is not None:
            out = out + bias.view(1, c, 1)
        return out.view(b, c, h, w)


class FeedForward(nn.Module):
    """DGFN: dynamic gated feed-forward (GELU gate on a depthwise-convolved expansion)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, ipr_dim: int = 256) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)  # truncation as upstream: 64 * 2.2 -> 140
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = InferenceConv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        ln_weight: torch.Tensor | None = None,
        ln_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gated FFN on ``x`` (layer-normed; see :meth:`Attention.forward` for ``ln_*``)."""
        hook = PLANE_HOOK.get()
        if hook is not None:
            return hook.feed_forward(self, x, z, ln_weight, ln_bias)
        scale, shift = _ipr_affine(self.kernel, z, x.shape[0], ln_weight, ln_bias)
        if _is_channels_last(x) and not torch.is_grad_enabled():
            return self._gate_dense_halves(x, scale, shift)
        return self.gate(_modulated_pointwise(x, self.project_in, scale, shift))

    def _gate_dense_halves(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``gate`` of the modulated ``project_in``, each half of the expansion computed apart.

        Two GEMMs and two depthwise convolutions instead of one of each (the same values): the
        GELU and the product then run on dense maps, with no copy and no strided pass (10-12 %
        of the FFN's time in fp32 and bf16). Each half is zero-padded to a multiple of 16
        channels (the official SR's 281 -> 288, 140 -> 144): oneDNN's depthwise convolution on
        misaligned pixel rows ran 2x slower once its input had left the cache, and the extra
        channels are exact zeros through GELU, product and ``project_out`` (zero columns), so
        the values are the unpadded ones (bf16 SR x4 forward -4 %). Channels-last inference only.
        """
        hidden = self.project_out.in_channels
        w_b, bias = _folded(self.project_in, scale, shift, x.dtype)
        parts = (slice(0, hidden), slice(hidden, 2 * hidden))
        width = -(-hidden // _ALIGN) * _ALIGN
        extra = width - hidden

        def padded(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return (w, b) if not extra else (F.pad(w, (0, 0, 0, extra)), F.pad(b, (0, extra)))

        y1, y2 = (_rows_product(x, *padded(w_b[:, part], bias[:, part])) for part in parts)
        return _pointwise(self.dwconv.gelu_gate(y1, y2, parts, width), self.project_out, width)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The FFN after its modulated ``project_in``: depthwise conv, GELU gate, ``project_out``."""
        x1, x2 = self.dwconv(x).chunk(2, dim=1)
        return _pointwise(_gelu_gate(x1, x2), self.project_out)


def _gelu_gate(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``gelu(x1) * x2``. A channel half of a channels-last map is strided, and GELU on it is not
    vectorised (2-6x slower than on a dense map): the half is made dense first, which costs one
    copy and gives a dense, channels-last product for ``project_out``."""
    if _is_channels_last(x1) and not x1.is_contiguous(memory_format=torch.channels_last):
        x1 = x1.contiguous(memory_format=torch.channels_last)
    return F.gelu(x1) * x2


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + DMTA(LN(x), z)`` then ``x + DGFN(LN(x), z)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        bias: bool,
        LayerNorm_type: str,
        ipr_dim: int = 256,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias, ipr_dim)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias, ipr_dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        whole_block = getattr(PLANE_HOOK.get(), "block", None)  # a hook may run whole blocks (StripHook)
        if whole_block is not None:
            return whole_block(self, x, z)
        x_hat, weight, bias = self.norm1.normalize(x)  # the norm's affine goes into qkv
        x = x + self.attn(x_hat, z, weight, bias)
        x_hat, weight, bias = self.norm2.normalize(x)  # ... and into project_in
        return x + self.ffn(x_hat, z, weight, bias)


class BlockSequence(nn.Sequential):
    """Transformer blocks applied in order, each given the same IPR ``z`` (keys ``<level>.<i>.``)."""

    def __init__(self, count: int, dim: int, num_heads: int, ffn_expansion_factor: float,
                 bias: bool, LayerNorm_type: str, ipr_dim: int) -> None:
        super().__init__(*(
            TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, LayerNorm_type, ipr_dim)
            for _ in range(count)
        ))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, z)
        return x


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution from image channels to the level-1 width (no bias, as upstream)."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = InferenceConv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution and double the width: 3x3 conv to n/2 channels, pixel-unshuffle 2."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            InferenceConv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution and halve the width: 3x3 conv to 2n channels, pixel-shuffle 2."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            InferenceConv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DIRformer(nn.Module):
    """The DiffIR restoration transformer: a 4-level U-Net of IPR-modulated transformer blocks.

    ``task="sr"``: input at LR, output at ``scale`` x (body at LR/``4/scale``, x4 tail, plus the
    nearest-upsampled input). ``"deblur"``: same size, plus the input (also the right variant
    for denoising). ``"inpaint"``: same size, no refinement stage and no residual; the input is
    the masked image with the mask appended as the last channel.

    ``forward(x, z)`` needs H and W divisible by :attr:`multiple_of`.
    """

    def __init__(
        self,
        *,
        inp_channels: int = 3,
        out_channels: int = 3,
        scale: int = 4,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",
        task: str = "sr",
        dual_pixel_task: bool = False,
        ipr_dim: int = 256,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"DIRformer task must be one of {TASKS}, but got {task!r}")
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(
                f"DIRformer needs 4 levels: num_blocks and heads of length 4, but got "
                f"num_blocks={list(num_blocks)}, heads={list(heads)}"
            )
        if task == "inpaint" and num_refinement_blocks:
            raise ValueError("The inpainting DIRformer has no refinement stage: set num_refinement_blocks=0")
        if dual_pixel_task and task != "inpaint":
            raise ValueError("dual_pixel_task exists only in the inpainting DIRformer (task='inpaint')")
        if task != "inpaint" and inp_channels != out_channels:
            raise ValueError(
                f"A {task!r} DIRformer adds its input to its output, so inp_channels must equal "
                f"out_channels, but got {inp_channels} and {out_channels}"
            )
        self.task = task
        self.scale = scale if task == "sr" else 1
        self.unshuffle = sr_unshuffle_factor(scale) if task == "sr" else 1
        self.multiple_of = 8 * self.unshuffle
        self.dual_pixel_task = dual_pixel_task

        def level(count: int, mult: int, head: int) -> BlockSequence:
            return BlockSequence(count, dim * mult, head, ffn_expansion_factor, bias, LayerNorm_type, ipr_dim)

        self.patch_embed = OverlapPatchEmbed(inp_channels * self.unshuffle**2, dim)
        self.encoder_level1 = level(num_blocks[0], 1, heads[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = level(num_blocks[1], 2, heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = level(num_blocks[2], 4, heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = level(num_blocks[3], 8, heads[3])
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = InferenceConv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = level(num_blocks[2], 4, heads[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = InferenceConv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = level(num_blocks[1], 2, heads[1])
        self.up2_1 = Upsample(dim * 2)  # no 1x1 reduction at level 1: the decoder runs at 2*dim
        self.decoder_level1 = level(num_blocks[0], 2, heads[0])
        if task != "inpaint":
            self.refinement = level(num_refinement_blocks, 2, heads[0])
        if task == "sr":
            self.tail = X4Tail(dim * 2, out_channels)
        else:
            if dual_pixel_task:
                self.skip_conv = InferenceConv2d(dim, dim * 2, kernel_size=1, bias=bias)
            self.output = InferenceConv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    def check_size(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is (B, C, H, W) with H, W multiples of ``multiple_of``."""
        expected_c = self.patch_embed.proj.in_channels // self.unshuffle**2
        if x.ndim != 4 or x.shape[1] != expected_c:
            raise ValueError(f"Expected a (B, {expected_c}, H, W) input, but got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.multiple_of
        if h % m or w % m or h == 0 or w == 0:
            raise ValueError(
                f"DIRformer ({self.task}, x{self.scale}) needs H and W to be positive multiples of "
                f"{m}, but got {h}x{w}; pad the input (reflect) and crop the output"
            )

    def forward(self, inp_img: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.check_size(inp_img)
        feat = F.pixel_unshuffle(inp_img, self.unshuffle) if self.unshuffle > 1 else inp_img
        x1 = self.patch_embed(feat)
        e1 = self.encoder_level1(x1, z)
        e2 = self.encoder_level2(self.down1_2(e1), z)
        e3 = self.encoder_level3(self.down2_3(e2), z)
        lat = self.latent(self.down3_4(e3), z)
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1)), z)
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)), z)
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1), z)
        if self.task == "sr":
            d1 = self.refinement(d1, z)
            up = inp_img if self.scale == 1 else F.interpolate(inp_img, scale_factor=self.scale, mode="nearest")
            return self.tail(d1) + up
        if self.task == "deblur":
            return self.output(self.refinement(d1, z)) + inp_img
        if self.dual_pixel_task:
            d1 = d1 + self.skip_conv(x1)
        return self.output(d1)
