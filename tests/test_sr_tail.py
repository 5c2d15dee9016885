"""DIRformer's x4 SR head computed as one convolution plus exact border strips equals the head.

The inference path of ``X4Tail`` (see its module) must give the values of the original
conv-shuffle-conv-shuffle-conv sequence (``nn.Sequential.forward``), up to float rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_diffir.models.diffir._arch.sr_tail import _BORDER, X4Tail

CL = torch.channels_last


def _tail(width: int = 8, out_channels: int = 3, dtype=torch.float64) -> X4Tail:
    torch.manual_seed(0)
    tail = X4Tail(width, out_channels).to(dtype)
    with torch.no_grad():
        for conv in tail.convs():
            conv.bias.normal_()  # non-zero biases: the border is where they matter
    return tail


def _plain(tail: X4Tail, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return nn.Sequential.forward(tail, x)


@pytest.mark.parametrize("shape", [(1, 8, 8, 16), (2, 8, 9, 13), (1, 8, 1, 5), (1, 8, 2, 2)])
def test_inference_equals_the_layer_sequence_in_float64(shape):
    tail = _tail()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.inference_mode():
        out = tail(x)
    ref = _plain(tail, x)
    assert out.shape == ref.shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_composed_convolution_differs_from_the_head_only_in_the_border():
    tail = _tail()
    x = torch.randn(1, 8, 10, 12, dtype=torch.float64)
    weight, bias = tail.composed()
    assert weight.shape == (48, 8, 5, 5)
    bare = F.pixel_shuffle(F.conv2d(x, weight, bias, padding=2), 4)
    diff = (bare - _plain(tail, x)).abs()
    b = _BORDER
    assert float(diff[..., b:-b, b:-b].max()) < 1e-12  # the interior needs no strips
    for strip in (diff[..., :b, :], diff[..., -b:, :], diff[..., :, :b], diff[..., :, -b:]):
        assert float(strip.max()) > 1e-3  # ... and each border strip does
    assert float(diff[..., b - 1, b:-b].max()) > 1e-3  # the strips are not wider than needed


def test_channels_last_float32_equals_the_head():
    tail = _tail(16, 1, torch.float32).to(memory_format=CL)
    x = torch.randn(1, 16, 12, 8).contiguous(memory_format=CL)
    with torch.inference_mode():
        out = tail(x)
    torch.testing.assert_close(out, _plain(tail, x), rtol=1e-5, atol=1e-5)


def test_bf16_autocast_stays_close_to_float32():
    tail = _tail(16, 3, torch.float32)
    x = torch.randn(1, 16, 12, 12)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tail(x)
    assert out.dtype == torch.bfloat16
    ref = _plain(tail, x)
    psnr = 10 * torch.log10((ref.max() - ref.min()) ** 2 / (out.float() - ref).square().mean())
    assert psnr > 40


def test_changed_weights_are_used():
    tail = _tail()
    x = torch.randn(1, 8, 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        tail(x)
    with torch.no_grad():
        tail[0][2].weight.mul_(0.5)  # in place: same storage, new version
        tail[1].bias.add_(1.0)
    with torch.inference_mode():
        out = tail(x)
    torch.testing.assert_close(out, _plain(tail, x), rtol=1e-12, atol=1e-12)
    tail.load_state_dict({k: v * 2 for k, v in tail.state_dict().items()})  # new tensors
    with torch.inference_mode():
        torch.testing.assert_close(tail(x), _plain(tail, x), rtol=1e-12, atol=1e-12)


def test_training_runs_the_layers_with_gradients():
    tail = _tail(dtype=torch.float32)
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    out = tail(x)
    out.square().mean().backward()
    assert x.grad is not None and tail[0][0].weight.grad is not None
    torch.testing.assert_close(out.detach(), _plain(tail, x.detach()))


def test_state_dict_keys_are_the_upstream_ones():
    assert list(X4Tail(4, 1).state_dict()) == [
        "0.0.weight", "0.0.bias", "0.2.weight", "0.2.bias", "1.weight", "1.bias"]


def test_a_head_built_under_inference_mode_runs():
    with torch.inference_mode():
        tail = _tail()
        x = torch.randn(1, 8, 8, 8, dtype=torch.float64)
        out = tail(x)
        ref = nn.Sequential.forward(tail, x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
