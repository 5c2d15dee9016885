"""SRDiff network modules (written for this project; attribute names follow the official release)."""

from .blocks import RRDB, Block, Downsample, ResidualDenseBlock, ResnetBlock, SinusoidalPosEmb, Upsample
from .rrdb import RRDBNet, cond_channels
from .unet import Unet

__all__ = [
    "Block", "Downsample", "RRDB", "RRDBNet", "ResidualDenseBlock", "ResnetBlock",
    "SinusoidalPosEmb", "Unet", "Upsample", "cond_channels",
]
