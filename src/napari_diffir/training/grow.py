"""Start a deeper DiffIR from a trained shallower one: the added blocks begin as the identity.

A DIRformer block is pre-norm residual, ``x + attn(LN(x))`` then ``x + ffn(LN(x))``. With the
two output projections (``attn.project_out``, ``ffn.project_out``) at zero, both branches add
exactly zero, so a block appended to a level changes nothing until training moves those
projections (their gradient is not zero: it is the branch's activations). A model with more
blocks per level can then continue from a trained one instead of from scratch, which is how a
deeper bundled model is compared with more training of the current one per CPU hour
(``--grow``). Widths cannot grow this way (the layer norms' statistics would change).
"""

from __future__ import annotations

import re

import torch

__all__ = ["GROWN_ZERO", "grow_state_dict", "grown_parameter_names"]

BLOCK = re.compile(r"^(?P<prefix>(?:.*\.)?(?:encoder_level\d|latent|decoder_level\d|refinement))\.(?P<index>\d+)\.")
"""A key of a transformer block of one DIRformer level: ``G.encoder_level1.0.attn.qkv.weight``."""

GROWN_ZERO = ("attn.project_out.weight", "attn.project_out.bias", "ffn.project_out.weight", "ffn.project_out.bias")
"""The parameters of an added block that start at zero (so that the block is the identity)."""


def grow_state_dict(weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """``weights`` of a shallower model laid into ``own`` (a deeper model's freshly initialised
    state dict): every tensor of ``weights`` where it was, the blocks only ``own`` has kept as
    initialised but with their output projections zeroed.

    Returns the state dict and a summary ``{level: [blocks before, blocks after]}``. Raises
    ``ValueError`` if anything but whole blocks differs (another width, a missing level, or
    ``weights`` deeper than ``own``).
    """
    extra = sorted(set(weights) - set(own))
    if extra:
        raise ValueError(f"--grow adds blocks, it cannot remove them: the starting weights have {len(extra)} "
                         f"tensor(s) this architecture lacks (e.g. {extra[0]})")
    for key, value in weights.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"--grow adds blocks but keeps widths: {key} is {tuple(value.shape)} in the starting "
                             f"weights and {tuple(own[key].shape)} here")
    added = sorted(set(own) - set(weights))
    not_blocks = [k for k in added if not BLOCK.match(k)]
    if not_blocks:
        raise ValueError(f"--grow adds transformer blocks only, but {not_blocks[0]} (and {len(not_blocks) - 1} more) "
                         "would start untrained")
    out = {k: (weights[k] if k in weights else own[k]) for k in own}
    for key in added:
        if key[BLOCK.match(key).end():] in GROWN_ZERO:
            out[key] = torch.zeros_like(own[key])
    return out, _depths(weights, own)


def grown_parameter_names(names, depths: dict[str, list[int]]) -> list[str]:
    """The ``names`` (parameter names of the deeper model) that belong to a block ``--grow``
    added, given :func:`grow_state_dict`'s summary ``{level: [blocks before, blocks after]}``:
    these start untrained, so ``--grown-lr-scale`` lets them learn faster than the rest."""
    out = []
    for name in names:
        m = BLOCK.match(name)
        if m and m["prefix"] in depths and int(m["index"]) >= depths[m["prefix"]][0]:
            out.append(name)
    return out


def _depths(weights: dict, own: dict) -> dict[str, list[int]]:
    def count(keys) -> dict[str, int]:
        levels: dict[str, set[int]] = {}
        for key in keys:
            m = BLOCK.match(key)
            if m:
                levels.setdefault(m["prefix"], set()).add(int(m["index"]))
        return {level: len(ix) for level, ix in levels.items()}

    before, after = count(weights), count(own)
    return {level: [before.get(level, 0), n] for level, n in sorted(after.items()) if before.get(level, 0) != n}
