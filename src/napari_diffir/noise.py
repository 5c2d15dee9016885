"""Counter-based Gaussian noise: one image-wide noise field that every tile can cut its region from.

The value at (seed, stream, channel, y, x) is a hash of those integers mapped through Box-Muller,
so it does not depend on the tile that asks for it: overlapping tiles see identical noise and a
tiled stochastic sampler leaves no seams. Computed with 64-bit integer tensor ops on any device.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash on the low 32 bits of an int64 tensor (wrap-around products are fine)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def field_noise(
    seed: int, stream: int, channels: int, y0: int, x0: int, h: int, w: int, *, device=None
) -> torch.Tensor:
    """Standard-normal float32 tensor (channels, h, w) for the field region starting at (y0, x0)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    ys = torch.arange(y0, y0 + h, device=dev, dtype=torch.int64).view(1, h, 1)
    xs = torch.arange(x0, x0 + w, device=dev, dtype=torch.int64).view(1, 1, w)
    cs = torch.arange(channels, device=dev, dtype=torch.int64).view(channels, 1, 1)
    key = _hash32(torch.tensor(int(seed) & _M32, device=dev) ^ _hash32(torch.tensor(int(stream) & _M32, device=dev)))
    h_ = _hash32(key ^ _hash32(cs + 0x9E3779B9))
    h_ = _hash32(h_ ^ _hash32(ys + 0x85EBCA6B))
    h_ = _hash32(h_ ^ _hash32(xs + 0xC2B2AE35))
    u1 = (_hash32(h_ ^ 0x68E31DA4).double() + 0.5) / 4294967296.0
    u2 = _hash32(h_ ^ 0x1B56C4E9).double() / 4294967296.0
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return z.float()
