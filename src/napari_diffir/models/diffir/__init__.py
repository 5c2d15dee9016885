"""DiffIR (Xia et al., ICCV 2023): modules, and loading any official or project state dict.

``detect(sd)`` says whether a state dict is a DiffIR network, ``from_state_dict(sd)`` rebuilds
the right variant (stage 1 or 2; SR x4/x2/x1, deblurring or inpainting; any width and depth)
with every hyperparameter read from key names and tensor shapes and loads it strictly, and
``describe(model)`` summarises a model in a few fields; ``DESCRIPTOR`` bundles the three for the
checkpoint loader. The networks live in ``_arch/``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._keys import has_all, has_any, missing, seq_len, shape_of
from ..family import ModelFamily
from ..schedules import BUFFER_NAMES, Schedule
from ._arch import (
    CPEN,
    TASKS,
    Attention,
    BiasFree_LayerNorm,
    DiffIRS1,
    DiffIRS2,
    DIRformer,
    FeedForward,
    IPRDenoiser,
    IPRDiffusion,
    LayerNorm,
    TransformerBlock,
    WithBias_LayerNorm,
)

__all__ = [
    "CPEN",
    "DESCRIPTOR",
    "FAMILY",
    "Attention",
    "BiasFree_LayerNorm",
    "DIRformer",
    "DiffIRS1",
    "DiffIRS2",
    "FeedForward",
    "IPRDenoiser",
    "IPRDiffusion",
    "LayerNorm",
    "TASKS",
    "TransformerBlock",
    "WithBias_LayerNorm",
    "describe",
    "detect",
    "from_state_dict",
]

FAMILY = "diffir"

# Keys every DIRformer has, whatever the task, depth or width.
_G_CORE = ("G.patch_embed.proj.weight", "G.down1_2.body.0.weight", "G.up2_1.body.0.weight",
           "G.reduce_chan_level2.weight")
_G_HEADS = ("G.tail.1.weight",  # super-resolution (x4/x2/x1): EDSR upsampler tail
            "G.output.weight")  # deblurring and inpainting: one 3x3 conv
_CPEN_FIRST = ("E.E.0.weight",  # stage 1: CPEN_S1 is ``E``
               "condition.E.0.weight",  # stage 2: CPEN_S2 is ``condition`` ...
               "diffusion.condition.E.0.weight")  # ... and again ``diffusion.condition``
_ALIASES = (("condition.", "diffusion.condition."), ("denoise.", "diffusion.model."))
_LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
_DECODERS = ("decoder_level1", "decoder_level2", "decoder_level3")
# ffn_expansion_factor is stored only as int(C * f) per level; released values are tried first.
_KNOWN_FFN = (2.66, 2.2, 2.0, 1.8, 2.5, 3.0, 4.0, 1.5, 1.0)


def detect(sd: Mapping[str, Any]) -> bool:
    """Whether ``sd`` is the state dict of a DiffIR network (DiffIRS1 or DiffIRS2, any variant)."""
    return has_all(sd, *_G_CORE) and has_any(sd, *_G_HEADS) and has_any(sd, *_CPEN_FIRST)


def _fill_aliases(sd: dict[str, Any]) -> None:
    """Complete ``condition``/``diffusion.condition`` and ``denoise``/``diffusion.model`` from
    each other (a de-duplicated save, e.g. safetensors, keeps only one name of a shared tensor);
    refuse a file where the two copies differ, since upstream shares one module."""
    for a, b in _ALIASES:
        for src, dst in ((a, b), (b, a)):
            for key in [k for k in sd if k.startswith(src)]:
                twin = dst + key[len(src):]
                if twin not in sd:
                    sd[twin] = sd[key]
                elif src == a and sd[twin] is not sd[key] and (
                    sd[twin].shape != sd[key].shape or not torch.equal(sd[twin], sd[key])
                ):
                    raise ValueError(
                        f"{key!r} and {twin!r} must hold the same tensor (one shared module), but differ"
                    )


def _ffn_factor(pairs: list[tuple[int, int]]) -> float:
    """A factor f with int(C * f) == hidden for every (C, hidden) pair, fewest decimals first."""
    if not pairs:
        return 2.66  # no transformer block at all: the factor is unused

    def fits(f: float) -> bool:
        return all(int(c * f) == h for c, h in pairs)

    for f in _KNOWN_FFN:
        if fits(f):
            return f
    c, h = max(pairs)
    for decimals in range(7):
        q = 10**decimals
        for n in range(math.ceil(h * q / c), math.ceil((h + 1) * q / c) + 1):
            if fits(n / q):
                return n / q
    raise ValueError(
        "Inconsistent FFN widths: no ffn_expansion_factor f gives int(C * f) == hidden for all "
        f"(C, hidden) in {pairs}"
    )


def _blocks(sd: Mapping[str, Any], level: str) -> int:
    return seq_len(sd, f"G.{level}")


def _encoder_res(sd: Mapping[str, Any], prefix: str) -> int:
    return sum(1 for i in range(seq_len(sd, prefix)) if f"{prefix}.{i}.body.0.weight" in sd)


def infer_hyperparameters(sd: Mapping[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    """The class (``DiffIRS1`` or ``DiffIRS2``) and constructor keywords that produce ``sd``."""
    stage2 = any(k.startswith(("condition.", "diffusion.", "denoise.")) for k in sd)
    stage1 = any(k.startswith("E.") for k in sd)
    if stage1 == stage2:
        raise ValueError(
            "Cannot tell DiffIR stage 1 from stage 2: expected either 'E.*' (CPEN_S1) or "
            "'condition.*'/'denoise.*'/'diffusion.*' (CPEN_S2 + IPR diffusion) keys, "
            f"but found {'both' if stage1 else 'neither'}"
        )
    pe_out, pe_in = shape_of(sd, "G.patch_embed.proj.weight")[:2]
    dim = pe_out
    hp: dict[str, Any] = {}

    # Task from the head; inpainting vs deblurring from the residual (deblur: in == out).
    if "G.tail.1.weight" in sd:
        task = "sr"
        out_channels = shape_of(sd, "G.tail.1.weight")[0]
        fold = pe_in / out_channels  # (4 / scale)**2 by construction (residual: in == out)
        scales = {1.0: 4, 4.0: 2, 16.0: 1}
        if fold not in scales:
            raise ValueError(
                f"SR DIRformer: patch_embed takes {pe_in} channels for {out_channels} output "
                "channels; expected 1x, 4x or 16x (scale 4, 2 or 1)"
            )
        hp["scale"] = scales[fold]
        inp_channels = out_channels
    elif "G.output.weight" in sd:
        out_channels = shape_of(sd, "G.output.weight")[0]
        inp_channels = pe_in
        task = "deblur" if pe_in == out_channels else "inpaint"
        hp["dual_pixel_task"] = "G.skip_conv.weight" in sd
    else:
        raise ValueError("No DIRformer head: expected 'G.tail.1.weight' (SR) or 'G.output.weight'")

    num_blocks = [_blocks(sd, lv) for lv in _LEVELS]
    for dec, n in zip(_DECODERS, num_blocks):
        if _blocks(sd, dec) != n:
            raise ValueError(
                f"G.{dec} has {_blocks(sd, dec)} blocks but its encoder level has {n}; "
                "not a DIRformer state dict"
            )
    heads = [1, 2, 4, 8]  # upstream default, kept for levels without blocks
    for i, level in enumerate(_LEVELS):
        key = f"G.{level}.0.attn.temperature"
        if key in sd:
            heads[i] = shape_of(sd, key)[0]
    pairs = []
    for level, c in zip(("encoder_level1", "encoder_level2", "encoder_level3", "latent", "decoder_level1"),
                        (dim, 2 * dim, 4 * dim, 8 * dim, 2 * dim)):
        key = f"G.{level}.0.ffn.project_out.weight"
        if key in sd:
            pairs.append((c, shape_of(sd, key)[1]))
    any_block = next((f"G.{lv}.0" for lv in (*_LEVELS, *_DECODERS) if f"G.{lv}.0.norm1.body.weight" in sd), None)
    cpen = "E.E" if stage1 else "condition.E"
    n_feats = shape_of(sd, f"{cpen}.0.weight")[0]
    hp.update(
        task=task,
        inp_channels=inp_channels,
        out_channels=out_channels,
        dim=dim,
        num_blocks=num_blocks,
        num_refinement_blocks=_blocks(sd, "refinement"),
        heads=heads,
        ffn_expansion_factor=_ffn_factor(pairs),
        # bias/LayerNorm type are read off one block; without blocks they are unused.
        bias=any_block is not None and f"{any_block}.attn.qkv.bias" in sd,
        LayerNorm_type="WithBias" if any_block and f"{any_block}.norm1.body.bias" in sd else "BiasFree",
        n_encoder_res=_encoder_res(sd, cpen),
        n_feats=n_feats,
    )
    if any_block is None:
        hp["LayerNorm_type"] = "WithBias"
    if stage2:
        hp["n_denoise_res"] = max(seq_len(sd, "denoise.resmlp") - 2, 0)
        if "diffusion.betas" in sd:
            betas = sd["diffusion.betas"]
            hp["timesteps"] = int(betas.shape[0])
            # Only float32 betas are stored: the schedule ends are recovered to 6 digits. The
            # loaded buffers (not these values) are what sampling uses.
            hp["linear_start"] = float(f"{float(betas[0]):.6g}")
            hp["linear_end"] = float(f"{float(betas[-1]):.6g}")
        # else: upstream values (timesteps 4, 0.1 .. 0.99) are the defaults; see _fill_schedule.
    return (DiffIRS2 if stage2 else DiffIRS1), hp


def _fill_schedule(sd: dict[str, Any], model: nn.Module) -> None:
    """A stage-2 dict saved without its 12 schedule buffers gets the upstream schedule."""
    present = [n for n in BUFFER_NAMES if f"diffusion.{n}" in sd]
    if present and len(present) != len(BUFFER_NAMES):
        raise ValueError(
            "Incomplete IPR diffusion schedule: missing "
            f"{missing(sd, [f'diffusion.{n}' for n in BUFFER_NAMES])}"
        )
    if not present:
        hp = model.hyperparameters  # type: ignore[attr-defined]
        schedule = Schedule.sqrt_linear(hp["timesteps"], hp["linear_start"], hp["linear_end"])
        for name, value in schedule.tables().items():
            sd[f"diffusion.{name}"] = value


def from_state_dict(state_dict: Mapping[str, Any]) -> DiffIRS1 | DiffIRS2:
    """Build the DiffIR network that ``state_dict`` belongs to and load it strictly (fp32, CPU).

    The caller's mapping and tensors are not modified. Raises ``ValueError`` naming the missing,
    unexpected or mis-shaped keys when the dict is not a consistent DiffIR network.
    """
    sd = dict(state_dict)
    if not detect(sd):
        wanted = missing(sd, _G_CORE)
        if not has_any(sd, *_G_HEADS):
            wanted.append(" or ".join(_G_HEADS))
        if not has_any(sd, *_CPEN_FIRST):
            wanted.append(" or ".join(_CPEN_FIRST))
        raise ValueError(f"Not a DiffIR state dict: missing {wanted}")
    if any(k.startswith(("condition.", "denoise.", "diffusion.")) for k in sd):
        _fill_aliases(sd)
    cls, hp = infer_hyperparameters(sd)
    with torch.device("meta"):
        model = cls(**hp)
    model = model.to_empty(device="cpu")
    if isinstance(model, DiffIRS2):
        _fill_schedule(sd, model)
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"DiffIR state dict does not fit the inferred {cls.__name__}({hp}): {exc}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {_short(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {_short(result.unexpected_keys)}")
    if problems:
        raise ValueError(f"DiffIR state dict does not fit the inferred {cls.__name__}: " + "; ".join(problems))
    return model.eval()


def _short(keys: list[str], n: int = 8) -> str:
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def describe(model: nn.Module) -> dict[str, Any]:
    """A short, human-readable summary of a DiffIR network (for ``napari-diffir info``)."""
    hp = model.hyperparameters  # type: ignore[attr-defined]
    stage = 2 if isinstance(model, DiffIRS2) else 1
    task = hp["task"]
    variant = {"sr": f"super-resolution x{hp['scale']}", "deblur": "deblurring / same-size restoration",
               "inpaint": "inpainting"}[task]
    params = sum(p.numel() for p in model.parameters())  # shared modules counted once
    return {
        "family": FAMILY,
        "architecture": type(model).__name__,
        "stage": stage,
        "task": task,
        "variant": variant,
        "scale": hp["scale"],
        "in_channels": hp["inp_channels"],
        "out_channels": hp["out_channels"],
        "dim": hp["dim"],
        "num_blocks": list(hp["num_blocks"]),
        "refinement_blocks": hp["num_refinement_blocks"],
        "ipr_dim": 4 * hp["n_feats"],
        "stochastic": stage == 2,
        "needs_gt": stage == 1,
        "multiple_of": model.multiple_of,  # type: ignore[attr-defined]
        "params": params,
        "params_human": f"{params / 1e6:.2f} M",
    }


DESCRIPTOR = ModelFamily(id=FAMILY, detect=detect, from_state_dict=from_state_dict, describe=describe)
"""The DiffIR family for the checkpoint loader (tasks in ``describe``: sr, deblur, inpaint)."""
