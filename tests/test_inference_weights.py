"""DIRformer's bf16 inference routes give the plain ops' values, and their caches follow the weights.

The weight casts kept between forwards (``weight_cache``, ``InferenceConv2d``), the bf16 products
sent straight to oneDNN, the IPR modulation as a float32 matrix-vector product and the bias-free
norm's two float32 passes must equal what autocast and ATen compute (exactly, or to the rounding
stated per test), and a changed weight must be used at once.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_diffir.models.diffir._arch.dirformer import Attention, FeedForward, _kernel_product
from napari_diffir.models.diffir._arch.inference_conv import InferenceConv2d
from napari_diffir.models.diffir._arch.layernorm import LayerNorm, bias_free_normalize
from napari_diffir.models.diffir._arch.onednn import _fits, linear, onednn_available
from napari_diffir.models.diffir._arch.weight_cache import cast

CL = torch.channels_last
BF16 = torch.bfloat16


def _autocast():
    return torch.autocast("cpu", dtype=BF16)


def _conv(groups: int = 1, bias: bool = True) -> InferenceConv2d:
    torch.manual_seed(0)
    return InferenceConv2d(12, 12, 3, padding=1, groups=groups, bias=bias).eval()


def _plain_conv(conv: InferenceConv2d) -> nn.Conv2d:
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, groups=conv.groups,
                      bias=conv.bias is not None)
    plain.load_state_dict(conv.state_dict())
    return plain.eval()


def test_cast_is_kept_and_rebuilt_when_the_weight_changes():
    owner = nn.Linear(4, 3)
    with torch.inference_mode():
        first = cast(owner, "weight", owner.weight, BF16)
        assert cast(owner, "weight", owner.weight, BF16) is first  # kept
    torch.testing.assert_close(first, owner.weight.detach().to(BF16), rtol=0, atol=0)
    with torch.no_grad():
        owner.weight.mul_(2)  # in place: same storage, new version
    with torch.inference_mode():
        second = cast(owner, "weight", owner.weight, BF16)
    assert second is not first
    torch.testing.assert_close(second, owner.weight.detach().to(BF16), rtol=0, atol=0)
    owner.load_state_dict({"weight": torch.randn(3, 4), "bias": torch.randn(3)})
    with torch.inference_mode():
        torch.testing.assert_close(cast(owner, "weight", owner.weight, BF16), owner.weight.detach().to(BF16),
                                   rtol=0, atol=0)


def test_cast_keeps_the_gradient_when_training():
    owner = nn.Linear(4, 3)
    out = cast(owner, "weight", owner.weight, torch.float64)
    out.sum().backward()
    assert owner.weight.grad is not None and torch.equal(owner.weight.grad, torch.ones(3, 4))


@pytest.mark.parametrize("groups, bias", [(1, True), (12, False), (12, True)])
def test_inference_conv_under_autocast_equals_nn_conv2d(groups, bias):
    conv = _conv(groups, bias)
    plain = _plain_conv(conv)
    x = torch.randn(1, 12, 9, 7).to(BF16).contiguous(memory_format=CL)
    with torch.inference_mode(), _autocast():
        out, ref = conv(x), plain(x)
        again = conv(x)  # from the kept cast
    assert out.dtype == BF16
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(again, ref, rtol=0, atol=0)
    assert list(conv.state_dict()) == list(plain.state_dict())


def test_inference_conv_uses_changed_weights():
    conv = _conv()
    x = torch.randn(1, 12, 8, 8).to(BF16)
    with torch.inference_mode(), _autocast():
        conv(x)
    with torch.no_grad():
        conv.weight.mul_(-0.5)
        conv.bias.add_(1.0)
    with torch.inference_mode(), _autocast():
        torch.testing.assert_close(conv(x), _plain_conv(conv)(x), rtol=0, atol=0)


def test_inference_conv_on_channel_parts_equals_the_sliced_convolution():
    conv = _conv(groups=12)
    x = torch.randn(1, 5, 8, 8)
    part = slice(4, 9)
    ref = F.conv2d(x, conv.weight[part], conv.bias[part], padding=1, groups=5)
    with torch.inference_mode():
        torch.testing.assert_close(conv.apply_to(x, part), ref, rtol=0, atol=0)  # float32: no cast
    with torch.inference_mode(), _autocast():
        ref16 = F.conv2d(x.to(BF16), conv.weight[part].to(BF16), conv.bias[part].to(BF16), padding=1, groups=5)
        torch.testing.assert_close(conv.apply_to(x.to(BF16), part), ref16, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs a depthwise convolution"):
        _conv(groups=1).apply_to(x, part)


@pytest.mark.parametrize("bias", [True, False])
def test_gelu_gate_of_the_two_halves_equals_the_separate_ops(bias, monkeypatch):
    """``gelu(conv(x1)) * conv(x2)`` over two channel halves, padded to a width: in bf16 the
    oneDNN post-ops (within bf16 rounding of the separate ops), in float32 the separate ops
    exactly."""
    from napari_diffir.models.diffir._arch import inference_conv

    torch.manual_seed(0)
    conv = InferenceConv2d(10, 10, 3, padding=1, groups=10, bias=bias).eval()
    parts, width = (slice(0, 5), slice(5, 10)), 8
    x1, x2 = (torch.randn(1, width, 9, 7).contiguous(memory_format=CL) for _ in range(2))
    x1[:, 5:], x2[:, 5:] = 0, 0  # the padding channels, zero as the FFN's halves give them

    def separate(a, b):
        return F.gelu(conv.apply_to(a, parts[0], width)) * conv.apply_to(b, parts[1], width)

    with torch.inference_mode():
        torch.testing.assert_close(conv.gelu_gate(x1, x2, parts, width), separate(x1, x2), rtol=0, atol=0)
        exact = separate(x1, x2)
        with _autocast():
            a, b = x1.to(BF16), x2.to(BF16)
            fused = conv.gelu_gate(a, b, parts, width)
            monkeypatch.setattr(inference_conv, "_FUSED", False)
            plain = conv.gelu_gate(a, b, parts, width)
            ref = separate(a, b)
    assert fused.dtype == BF16 and fused.is_contiguous(memory_format=CL)
    torch.testing.assert_close(plain, ref, rtol=0, atol=0)
    torch.testing.assert_close(fused.float(), ref.float(), rtol=2**-7, atol=1e-2)
    assert fused[:, 5:].abs().max() == 0  # padding stays exact zeros
    torch.testing.assert_close(fused.float(), exact, rtol=2**-6, atol=2e-2)


def test_inference_conv_trains_like_nn_conv2d():
    conv = _conv()
    x = torch.randn(1, 12, 6, 6)
    with _autocast():
        out = conv(x)
    out.float().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.shape == conv.weight.shape


@pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")
def test_bf16_linear_takes_onednn_and_equals_f_linear():
    torch.manual_seed(0)
    rows = torch.randn(480, 96).to(BF16)[:, 32:64]  # row stride 96, as a channel slice
    weight, bias = (torch.randn(48, 32) / 6).to(BF16), torch.randn(48).to(BF16)
    with torch.inference_mode(), _autocast():
        assert _fits(rows, weight, bias)
        assert not _fits(rows.float(), weight.float(), bias.float())  # float32 under autocast: bf16 GEMM
        out = linear(rows, weight, bias)
        ref = F.linear(rows, weight, bias)
    assert out.dtype == BF16
    exact = F.linear(rows.double(), weight.double(), bias.double())
    torch.testing.assert_close(out.double(), exact, rtol=2**-7, atol=2**-7)  # one bf16 rounding
    torch.testing.assert_close(out.double(), ref.double(), rtol=2**-7, atol=2**-7)


def test_kernel_product_is_float32_and_equals_the_linear():
    torch.manual_seed(0)
    kernel = nn.Linear(256, 96, bias=False).eval()
    z = torch.randn(1, 256)
    with torch.inference_mode():
        out = _kernel_product(kernel, z)
        torch.testing.assert_close(out, kernel(z), rtol=1e-6, atol=1e-6)
        with _autocast():
            auto = _kernel_product(kernel, z.to(BF16))  # the prior arrives in bf16 under autocast
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, F.linear(z.to(BF16).float(), kernel.weight), rtol=1e-6, atol=1e-6)
    z2 = torch.randn(2, 256, requires_grad=True)
    _kernel_product(kernel, z2).sum().backward()  # batches and training: the linear itself
    assert z2.grad is not None


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (BF16, 2**-8)])
def test_bias_free_norm_in_two_float32_passes(dtype, tol):
    torch.manual_seed(0)
    x = (torch.randn(1, 9, 7, 64) * 3 + 1.5).to(dtype)  # channels last, a mean far from 0
    with torch.inference_mode():
        out = bias_free_normalize(x)
    ref = x.double() / (x.double().var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    if dtype == BF16:  # rounded once from float32
        torch.testing.assert_close(out, ref.float().to(BF16), rtol=2**-8, atol=0)
    strided = x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)  # channels strided: the fused kernel
    with torch.inference_mode():
        torch.testing.assert_close(bias_free_normalize(strided).double(), ref, rtol=2 * tol, atol=2 * tol)


def test_bias_free_norm_keeps_its_gradient():
    x = torch.randn(2, 5, 16, requires_grad=True)
    bias_free_normalize(x).square().sum().backward()
    y = x.detach().double().requires_grad_()
    (y / (y.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()).square().sum().backward()
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=1e-4, atol=1e-5)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    peak = float(b.max() - b.min())
    return float(10 * torch.log10(peak**2 / (a.float() - b.float()).square().mean()))


@pytest.mark.parametrize("module", ["attention", "feed_forward"])
def test_bf16_blocks_stay_close_to_float32(module):
    torch.manual_seed(0)
    net = (Attention(32, 2, bias=True) if module == "attention" else FeedForward(32, 2.2, bias=True)).eval()
    norm = LayerNorm(32, "BiasFree")
    x = torch.randn(1, 32, 16, 12).contiguous(memory_format=CL)
    z = torch.randn(1, 256)
    with torch.inference_mode():
        x_hat, w, _ = norm.normalize(x)
        ref = net(x_hat, z, w)
        with _autocast():
            out = net(norm.normalize(x.to(BF16))[0], z, w)
            out_again = net(norm.normalize(x.to(BF16))[0], z, w)  # from the kept casts
    assert out.dtype == BF16
    assert _psnr(out, ref) > 40
    torch.testing.assert_close(out_again, out, rtol=0, atol=0)
