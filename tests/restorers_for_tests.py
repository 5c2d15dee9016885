"""Small deterministic and stochastic restorers that exercise the engine like real models do."""

from __future__ import annotations

import torch

from napari_diffir import Restorer, RestorerInfo


class ConvNet(Restorer):
    """A fixed random 3-layer conv net (zero padding, receptive-field radius 3), optional x2."""

    info = RestorerInfo(name="test-conv", display_name="test conv", task="denoise", in_channels=1,
                        tile_overlap=16, multiple_of=4)

    def __init__(self, scale: int = 1, **options) -> None:
        super().__init__(**options)
        g = torch.Generator().manual_seed(0)
        self.w = [torch.randn(8, 1, 3, 3, generator=g) * 0.3, torch.randn(8, 8, 3, 3, generator=g) * 0.1,
                  torch.randn(scale * scale, 8, 3, 3, generator=g) * 0.1]
        self.scale = scale
        if scale != 1:
            self.info = self.info.replace(task="super-resolution", scale=scale)

    def restore_tile(self, x, ctx):
        y = torch.tanh(torch.nn.functional.conv2d(x, self.w[0], padding=1))
        y = torch.tanh(torch.nn.functional.conv2d(y, self.w[1], padding=1))
        y = torch.nn.functional.conv2d(y, self.w[2], padding=1)
        base = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x
        return base + (torch.nn.functional.pixel_shuffle(y, self.scale) if self.scale > 1 else y)


class Identity(Restorer):
    info = RestorerInfo(name="test-identity", display_name="identity", task="denoise", in_channels=None)

    def restore_tile(self, x, ctx):
        return x.clone()


class NoisySampler(Restorer):
    """Adds seeded field noise over ``steps`` steps, reporting each step (like a diffusion sampler)."""

    info = RestorerInfo(name="test-sampler", display_name="sampler", task="denoise", in_channels=1,
                        stochastic=True, sampling_steps=True, tile_overlap=8)

    def __init__(self, on_step=None, **options) -> None:
        super().__init__(**options)
        self.on_step = on_step
        self.calls = 0

    def restore_tile(self, x, ctx):
        steps = ctx.steps or 5
        y = x.clone()
        for i in range(steps):
            self.calls += 1
            if self.on_step is not None:
                self.on_step(self.calls)
            y = y + 0.01 * ctx.noise(y, stream=i)
            ctx.step(i + 1, steps)
        return y


class WrongShape(Restorer):
    info = RestorerInfo(name="test-wrong", display_name="wrong", task="denoise", in_channels=1)

    def restore_tile(self, x, ctx):
        return x[..., :-1]


class OutOfMemoryAbove(Restorer):
    """Raises torch's out-of-memory error for tiles larger than ``limit`` pixels a side."""

    info = RestorerInfo(name="test-oom", display_name="oom", task="denoise", in_channels=1, tile_overlap=8)

    def __init__(self, limit: int = 64, **options) -> None:
        super().__init__(**options)
        self.limit = limit
        self.sizes = []

    def restore_tile(self, x, ctx):
        self.sizes.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * 1.0
