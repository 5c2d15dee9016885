"""Float32 matrix products of DIRformer's inference through oneDNN instead of MKL.

ATen sends float32 ``F.linear``/``matmul`` on the CPU to MKL's sgemm, which on AMD CPUs runs its
AVX2 code: about 50 GMAC/s on one Zen 5 core, where oneDNN's AVX-512 matmul (the kernel ATen
already uses for bf16 and for 3x3 convolutions) reaches 110-125 GMAC/s on the same products.
:func:`linear` takes oneDNN's route for the products where that is exact and fast: float32
(not under autocast, where ``F.linear`` runs in bf16) or bf16 operands all of one dtype, CPU,
no autograd, no tracing or compiling, row-major operands. The sums are taken in another order,
so float32 results differ from MKL's by float rounding. bf16 products already run in oneDNN;
calling its op directly skips ATen's dispatch around it (~7 % of a (4096, 128) x (128, 281)
product at 1 thread).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["autocast_dtype", "compiling", "linear", "onednn_available", "traced"]


def onednn_available() -> bool:
    """Whether this torch build has oneDNN and its linear op (x86 builds do), and it is enabled."""
    return (
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


_AVAILABLE = onednn_available()


def compiling() -> bool:
    """Whether torch.compile is tracing this call (its own kernels then replace these routes)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


def traced() -> bool:
    """Whether torch.jit tracing or torch.compile is recording this call: it must see the plain ops."""
    return torch.jit.is_tracing() or compiling()


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes convolutions and products in on ``device_type``, None when off."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if device_type == "cuda" and torch.is_autocast_enabled() else None


def _fits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if not _AVAILABLE or not torch.backends.mkldnn.enabled or traced():
        return False  # a trace keeps aten::linear, which runs on any device
    if x.device.type != "cpu" or x.dim() != 2 or x.stride(1) != 1 or not weight.is_contiguous():
        return False  # oneDNN's path for transposed (column-major) operands is ~1000x slower
    if x.dtype not in (torch.float32, torch.bfloat16) or weight.dtype != x.dtype:
        return False
    if bias is not None and bias.dtype != x.dtype:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return False
    # under autocast F.linear would compute float32 operands in bf16; bf16 ones it runs as they are
    return x.dtype == torch.bfloat16 or autocast_dtype("cpu") is None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D ``x`` (rows may be strided), through oneDNN where it fits.

    Under autocast pass bf16 operands (cast weights, see ``weight_cache.cast``) to take that route.
    """
    if _fits(x, weight, bias):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)
