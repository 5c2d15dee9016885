"""How an image's channels feed a restorer: together, one by one, or replicated into an RGB model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChannelGroup:
    """One model call per plane: which image channels go in, where the result goes."""

    inputs: Any
    """Index into the (C, Y, X) plane: a slice, or a list of channels (repeated to replicate)."""
    outputs: Any
    """Index of the output channels this group fills."""
    average: bool = False
    """Average the model's channels back into one (grayscale fed to an RGB model)."""


@dataclass(frozen=True)
class ChannelMap:
    groups: tuple[ChannelGroup, ...]
    out_channels: int
    """Channels of the restored image."""
    group_out: int
    """Channels the model returns per call."""


def channel_map(channels: int, info) -> ChannelMap | None:
    """How an image with ``channels`` channels runs through ``info``'s model, or ``None`` if it
    cannot (the model takes another channel count and neither side has one channel)."""
    cin, cout = info.in_channels, info.out_channels
    if cin is None or cin == channels:  # processed together
        out = channels if cout is None else cout
        return ChannelMap((ChannelGroup(slice(None), slice(None)),), out, out)
    if cin == 1 and cout in (None, 1):  # one channel at a time
        return ChannelMap(tuple(ChannelGroup([i], [i]) for i in range(channels)), channels, 1)
    if channels == 1 and cout in (None, cin):  # grayscale into an RGB model: replicate, average back
        return ChannelMap((ChannelGroup([0] * cin, [0], average=True),), 1, cin)
    return None
