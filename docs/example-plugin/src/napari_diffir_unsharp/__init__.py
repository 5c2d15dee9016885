"""A complete napari-diffir plugin: one restorer, registered through the hook."""

import torch
import torch.nn.functional as F

from napari_diffir import Option, Restorer, RestorerInfo, hookimpl


class UnsharpMask(Restorer):
    info = RestorerInfo(
        name="unsharp",
        display_name="Unsharp mask",
        task="deblur",
        in_channels=1,          # the engine feeds each channel on its own
        tile_overlap=8,         # the receptive-field halo, in input pixels
        options=(Option("amount", float, 1.0, min=0.0, max=5.0, help="sharpening strength"),),
    )

    def __init__(self, amount=None, **options):
        super().__init__(amount=amount, **options)
        self.amount = 1.0 if amount is None else amount

    def restore_tile(self, x, ctx):
        # x: float32 (B, 1, H, W) in [0, 1]; return the same shape (scale 1)
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device) / 16
        blur = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), (k[:, None] * k[None, :])[None, None])
        return x + self.amount * (x - blur)


@hookimpl
def register_restorers(register):
    register(UnsharpMask)
