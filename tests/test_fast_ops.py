"""The faster forms of element-wise ops in the model code equal the reference ops.

DIRformer's q/k row norms and GELU gate, and SRDiff's Mish, take another route on
channels-last maps without autograd (see their docstrings); the results must stay those of
``torch.linalg.vector_norm``, ``F.gelu(a) * b`` and ``F.mish``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_diffir.models.diffir._arch.dirformer import FeedForward, _gelu_gate, _row_norm
from napari_diffir.models.srdiff._arch.blocks import Mish

CL = torch.channels_last


def _qkv(channels: int, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, 3 * channels, 24, 20).to(dtype).contiguous(memory_format=CL)


@pytest.mark.parametrize("heads", [1, 4])
def test_row_norm_of_channels_last_queries_equals_vector_norm(heads):
    q = _qkv(32)[:, :32].reshape(1, heads, 32 // heads, 24 * 20)
    assert q.stride(-1) != 1  # the strided layout the fast path is for
    with torch.inference_mode():
        fast = _row_norm(q)
    ref = torch.linalg.vector_norm(q.double(), dim=-1, keepdim=True)
    assert fast.shape == ref.shape == (1, heads, 32 // heads, 1)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-6, atol=0)


def test_row_norm_of_bf16_is_accumulated_in_float32():
    q = _qkv(32, torch.bfloat16)[:, :32].reshape(1, 1, 32, 24 * 20)
    with torch.inference_mode():
        fast = _row_norm(q)
    assert fast.dtype == torch.float32
    ref = torch.linalg.vector_norm(q.double(), dim=-1, keepdim=True)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-3, atol=0)  # bf16 squares, float32 sum


def test_row_norm_of_fp16_does_not_overflow():
    q = (_qkv(8) * 300).half()[:, :8].reshape(1, 1, 8, 24 * 20)  # squares above fp16's 65504
    with torch.inference_mode():
        norm = _row_norm(q)
    assert torch.isfinite(norm).all()
    torch.testing.assert_close(norm.double(), torch.linalg.vector_norm(q.double(), dim=-1, keepdim=True), rtol=2e-3, atol=0)


def test_row_norm_keeps_vector_norms_gradient():
    q = _qkv(8)[:, :8].reshape(1, 1, 8, 24 * 20).detach().requires_grad_()
    _row_norm(q).sum().backward()
    expected = q.detach() / torch.linalg.vector_norm(q.detach(), dim=-1, keepdim=True)
    torch.testing.assert_close(q.grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_gate_on_channel_halves_equals_reference(dtype):
    x1, x2 = _qkv(16, dtype)[:, :32].chunk(2, dim=1)
    assert not x1.is_contiguous(memory_format=CL)
    with torch.inference_mode():
        out = _gelu_gate(x1, x2)
    ref = F.gelu(x1.double()) * x2.double()
    assert out.dtype == dtype and out.is_contiguous(memory_format=CL)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out.double(), ref, **tol)


def test_gelu_gate_keeps_the_default_layout():
    x1, x2 = torch.randn(1, 8, 6, 5), torch.randn(1, 8, 6, 5)
    out = _gelu_gate(x1, x2)
    assert out.is_contiguous()
    torch.testing.assert_close(out, F.gelu(x1) * x2)


@pytest.mark.parametrize("batch", [1, 2])
def test_feed_forward_with_dense_halves_equals_the_gate_path(batch):
    torch.manual_seed(0)
    ffn = FeedForward(16, 2.2, bias=True).eval()  # 35-channel halves, with biases
    x = torch.randn(batch, 16, 12, 10).contiguous(memory_format=CL)
    z = torch.randn(batch, 256)
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    with torch.no_grad():
        reference = ffn(x.contiguous(), z, w, b)  # the default layout: through gate()
    with torch.inference_mode():
        out = ffn(x, z, w, b)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("autocast", [False, True])
def test_padded_dense_halves_equal_the_gate_path_and_follow_weight_changes(autocast):
    """The dense halves are zero-padded to 16 channels (35 -> 48 here) with their weights kept
    padded across forwards: the values stay the gate path's, in fp32 and bf16, and an in-place
    weight change rebuilds the padded copies."""
    torch.manual_seed(0)
    ffn = FeedForward(16, 2.2, bias=False).eval()
    x = torch.randn(1, 16, 12, 10).contiguous(memory_format=CL)
    z = torch.randn(1, 256)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-6)

    def both():
        with torch.inference_mode(), ctx:
            return ffn(x, z).float(), ffn(x.contiguous(), z).float()  # dense halves, gate()

    out, reference = both()
    torch.testing.assert_close(out, reference, **tol)
    with torch.no_grad():
        ffn.project_out.weight.mul_(-2.0)
        ffn.dwconv.weight.mul_(0.5)
    changed, reference = both()
    torch.testing.assert_close(changed, reference, **tol)
    assert (changed - out).abs().max() > 0.1


def _mish_inputs(dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 16) * 6
    x.view(-1)[:8] = torch.tensor([-1e4, -100.0, -30.0, -1e-30, 0.0, 1e-30, 30.0, 1e4])
    return x.to(dtype).contiguous(memory_format=CL)


def test_mish_equals_torch_mish_over_the_whole_range():
    x = _mish_inputs()
    with torch.inference_mode():
        out = Mish()(x)
    ref = F.mish(x.double())
    assert torch.isfinite(out).all() and out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-7)


def test_mish_in_bf16_is_rounded_once_from_float32():
    x = _mish_inputs(torch.bfloat16)
    with torch.inference_mode():
        out = Mish()(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, F.mish(x.float()).bfloat16(), rtol=0, atol=0)


def test_mish_gradient_is_torch_mishs():
    x = _mish_inputs().requires_grad_()
    Mish()(x).sum().backward()
    y = _mish_inputs().requires_grad_()
    F.mish(y).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_onednn_linear_equals_f_linear_on_strided_rows():
    from napari_diffir.models.diffir._arch.onednn import linear, onednn_available

    torch.manual_seed(0)
    rows = _qkv(32).permute(0, 2, 3, 1).reshape(24 * 20, 96)[:, 32:64]  # row stride 96: a channel slice
    weight, bias = torch.randn(48, 32) / 6, torch.randn(48)
    with torch.inference_mode():
        out = linear(rows, weight, bias)
    ref = F.linear(rows.double(), weight.double(), bias.double())
    assert out.dtype == torch.float32 and out.shape == (480, 48)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    if onednn_available():  # the product really took oneDNN's route (ATen's own kernel is MKL's)
        from napari_diffir.models.diffir._arch import onednn

        assert onednn._fits(rows, weight, bias)


def test_onednn_linear_keeps_autograd_and_autocast():
    from napari_diffir.models.diffir._arch.onednn import _fits, linear

    x = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(4, 8)
    assert not _fits(x, weight, None)
    linear(x, weight).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand(10, 8))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _fits(x.detach(), weight, None)
        assert linear(x.detach(), weight).dtype == torch.bfloat16  # autocast's F.linear, as before


@pytest.mark.parametrize("batch, heads", [(1, 1), (1, 4), (2, 1)])
def test_attention_gram_equals_the_batched_product(batch, heads):
    from napari_diffir.models.diffir._arch.dirformer import _gram

    torch.manual_seed(0)
    qkv = torch.randn(batch, 96, 24, 20).contiguous(memory_format=CL)
    q = qkv[:, :32].reshape(batch, heads, 32 // heads, 480)
    k = qkv[:, 32:64].reshape(batch, heads, 32 // heads, 480)
    with torch.inference_mode():
        out = _gram(q, k)
    ref = q.double() @ k.double().transpose(-2, -1)
    assert out.shape == (batch, heads, 32 // heads, 32 // heads)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
