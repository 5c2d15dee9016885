"""DiffIR network modules (no loading, registry or device logic here)."""

from .cpen import CPEN, ResBlock
from .diffir import DiffIRS1, DiffIRS2
from .dirformer import (
    TASKS,
    Attention,
    BlockSequence,
    DIRformer,
    Downsample,
    FeedForward,
    OverlapPatchEmbed,
    TransformerBlock,
    Upsample,
)
from .ipr_diffusion import IPRDenoiser, IPRDiffusion, ResMLP
from .layernorm import BiasFree_LayerNorm, LayerNorm, WithBias_LayerNorm

__all__ = [
    "Attention",
    "BiasFree_LayerNorm",
    "BlockSequence",
    "CPEN",
    "DIRformer",
    "DiffIRS1",
    "DiffIRS2",
    "Downsample",
    "FeedForward",
    "IPRDenoiser",
    "IPRDiffusion",
    "LayerNorm",
    "OverlapPatchEmbed",
    "ResBlock",
    "ResMLP",
    "TASKS",
    "TransformerBlock",
    "Upsample",
    "WithBias_LayerNorm",
]
