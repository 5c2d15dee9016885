"""SRDiff (Li et al., Neurocomputing 2022): modules and loading of official checkpoints.

``from_state_dict`` reads every hyperparameter from the tensors (scale, channels, U-Net width and
multipliers, RRDB blocks/features/growth, number of steps), so the official DIV2K x4 release
(with either its 8x32 or 17x64 encoder), the CelebA x8 release and project-trained single-channel
models all load strictly with the same code. The schedule and the samplers are shared with other
families (``napari_diffir.models.schedules`` and ``.samplers``); they are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..family import ModelFamily
from ..samplers import SAMPLERS, timestep_grid
from ..schedules import BUFFER_NAMES, Schedule, cosine_betas
from ._arch import RRDBNet, SinusoidalPosEmb, Unet, cond_channels
from ._diffusion import SRDiff

__all__ = [
    "BUFFER_NAMES",
    "DESCRIPTOR",
    "FAMILY",
    "RRDBNet",
    "SAMPLERS",
    "SRDiff",
    "SinusoidalPosEmb",
    "Unet",
    "cosine_betas",
    "describe",
    "detect",
    "from_state_dict",
    "infer_hyperparameters",
    "infer_rrdb_hyperparameters",
    "timestep_grid",
]

FAMILY = "srdiff"

# Keys every SRDiff state dict has, whatever its size (official or project-trained).
REQUIRED_KEYS = (
    "betas",
    "alphas_cumprod",
    "denoise_fn.cond_proj.weight",
    "denoise_fn.mlp.0.weight",
    "denoise_fn.downs.0.0.block1.block.1.weight",
    "denoise_fn.final_conv.1.weight",
    "rrdb.conv_first.weight",
    "rrdb.RRDB_trunk.0.RDB1.conv1.weight",
    "rrdb.conv_last.weight",
)


def _strip_model_prefix(sd: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the flat ``model.``-prefixed layout the official ``load_ckpt`` also accepts."""
    if sd and all(k.startswith("model.") for k in sd):
        return {k[len("model."):]: v for k, v in sd.items()}
    return sd


# An RRDB pre-training checkpoint: the encoder alone, keys without the ``rrdb.`` prefix.
RRDB_KEYS = ("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "upconv1.weight",
             "HRconv.weight", "conv_last.weight")


def detect(sd: Mapping[str, Any]) -> bool:
    """Whether ``sd`` is an SRDiff state dict (``GaussianDiffusion``, or its RRDB pre-training).

    DiffIR dicts never match: their keys start with ``G.``, ``E.``, ``condition.`` or ``diffusion.``.
    """
    sd = _strip_model_prefix(sd)
    full = all(k in sd for k in ("betas", "denoise_fn.cond_proj.weight", "rrdb.conv_first.weight"))
    return full or all(k in sd for k in RRDB_KEYS)


def _indices(sd: Mapping[str, Any], prefix: str) -> list[int]:
    """Sorted distinct ``<i>`` in keys ``<prefix><i>.…`` (the length of an indexed ModuleList)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pat.match(k))})


def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(sd[key].shape)


def infer_hyperparameters(sd: Mapping[str, Any]) -> dict[str, Any]:
    """SRDiff constructor keywords read from the tensors of ``sd`` (raises ValueError if odd)."""
    missing = [k for k in REQUIRED_KEYS if k not in sd]
    if missing:
        raise ValueError(f"Not an SRDiff state dict: missing {', '.join(missing)}")
    hidden = _shape(sd, "denoise_fn.mlp.0.weight")[1]
    levels = _indices(sd, "denoise_fn.downs.")
    if levels != list(range(len(levels))):
        raise ValueError(f"SRDiff U-Net levels must be numbered 0..n-1, but got {levels}")
    dim_mults = []
    for i in levels:
        width = _shape(sd, f"denoise_fn.downs.{i}.0.block1.block.1.weight")[0]
        if width % hidden:
            raise ValueError(f"SRDiff U-Net level {i} is {width} wide, not a multiple of hidden size {hidden}")
        dim_mults.append(width // hidden)
    c_cond, c_proj, k, k2 = _shape(sd, "denoise_fn.cond_proj.weight")
    scale = k // 2
    if k != k2 or k % 2 or c_proj != hidden:
        raise ValueError(f"SRDiff cond_proj.weight has odd shape {[c_cond, c_proj, k, k2]} "
                         f"(expected [C, {hidden}, 2*scale, 2*scale])")
    nf, rrdb_in = _shape(sd, "rrdb.conv_first.weight")[:2]
    nb = len(_indices(sd, "rrdb.RRDB_trunk."))
    gc = _shape(sd, "rrdb.RRDB_trunk.0.RDB1.conv1.weight")[0]
    ups = sum(1 for i in range(1, 8) if f"rrdb.upconv{i}.weight" in sd)
    if 2**ups != scale:
        raise ValueError(f"SRDiff checkpoint is inconsistent: cond_proj implies x{scale} but the RRDB "
                         f"has {ups} x2 upsampling stages (x{2**ups})")
    if c_cond != cond_channels(nf, nb):
        raise ValueError(f"SRDiff cond_proj takes {c_cond} channels, but an RRDB with {nb} blocks x {nf} "
                         f"features gives {cond_channels(nf, nb)}")
    unet_in = _shape(sd, "denoise_fn.downs.0.0.block1.block.1.weight")[1]
    unet_out = _shape(sd, "denoise_fn.final_conv.1.weight")[0]
    rrdb_out = _shape(sd, "rrdb.conv_last.weight")[0]
    if not unet_in == unet_out == rrdb_out:
        raise ValueError(f"SRDiff channel counts disagree: U-Net in {unet_in}, U-Net out {unet_out}, "
                         f"RRDB out {rrdb_out}")
    return dict(scale=scale, in_channels=rrdb_in, out_channels=unet_out, hidden_size=hidden,
                dim_mults=tuple(dim_mults), rrdb_num_block=nb, rrdb_num_feat=nf, rrdb_growth=gc,
                timesteps=_shape(sd, "betas")[0])
    # beta_s is not recoverable exactly and need not be: the loaded buffers replace the schedule.


def infer_rrdb_hyperparameters(sd: Mapping[str, Any]) -> dict[str, Any]:
    """RRDBNet keywords of an RRDB pre-training state dict (keys without ``rrdb.``)."""
    missing = [k for k in RRDB_KEYS if k not in sd]
    if missing:
        raise ValueError(f"Not an SRDiff RRDB state dict: missing {', '.join(missing)}")
    nf, in_nc = _shape(sd, "conv_first.weight")[:2]
    ups = sum(1 for i in range(1, 8) if f"upconv{i}.weight" in sd)
    return dict(in_nc=in_nc, out_nc=_shape(sd, "conv_last.weight")[0], nf=nf,
                nb=len(_indices(sd, "RRDB_trunk.")), gc=_shape(sd, "RRDB_trunk.0.RDB1.conv1.weight")[0],
                scale=2**ups)


def from_state_dict(sd: Mapping[str, Any]) -> SRDiff | RRDBNet:
    """Build the model matching ``sd`` and load it strictly; returns it in eval mode.

    A full SRDiff dict gives an :class:`SRDiff`; an RRDB pre-training dict (the encoder alone)
    gives an :class:`RRDBNet`, which is a plain x``scale`` SR network but not SRDiff.
    """
    sd = _strip_model_prefix(sd)
    if "betas" not in sd and all(k in sd for k in RRDB_KEYS):
        model = RRDBNet(**infer_rrdb_hyperparameters(sd))
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"RRDB state dict does not match the inferred architecture: {exc}") from None
        return model.eval()
    model = SRDiff(**infer_hyperparameters(sd))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"SRDiff state dict does not match the inferred architecture: {exc}") from None
    return model.eval()


def _schedule_name(model: SRDiff) -> str:
    ref = Schedule.cosine(model.num_timesteps, 0.008).betas
    same = torch.allclose(model.betas.detach().cpu().float(), ref, rtol=0, atol=1e-6)
    return "cosine (s=0.008)" if same else "custom"


def describe(model: SRDiff | RRDBNet) -> dict[str, Any]:
    """Human-oriented summary of a loaded model (for ``napari-diffir info``)."""
    h = model.hyperparameters
    count = lambda m: int(sum(p.numel() for p in m.parameters()))  # noqa: E731
    if isinstance(model, RRDBNet):
        return {
            "family": FAMILY,
            "architecture": "RRDBNet (SRDiff LR encoder, pre-training stage; not a diffusion model)",
            "task": "super-resolution",
            "scale": h["scale"],
            "in_channels": h["in_nc"],
            "out_channels": h["out_nc"],
            "rrdb": f"{h['nb']} blocks x {h['nf']} features (growth {h['gc']})",
            "parameters": count(model),
        }
    return {
        "family": FAMILY,
        "architecture": "SRDiff (RRDB encoder + conditional U-Net, residual diffusion)",
        "task": "super-resolution",
        "scale": model.scale,
        "in_channels": model.in_channels,
        "out_channels": model.out_channels,
        "hidden_size": h["hidden_size"],
        "dim_mults": list(h["dim_mults"]),
        "rrdb": f"{h['rrdb_num_block']} blocks x {h['rrdb_num_feat']} features (growth {h['rrdb_growth']})",
        "timesteps": model.num_timesteps,
        "schedule": _schedule_name(model),
        "hr_multiple_of": model.hr_multiple,
        "parameters": count(model),
        "parameters_unet": count(model.denoise_fn),
        "parameters_rrdb": count(model.rrdb),
        "samplers": list(SAMPLERS),
    }


DESCRIPTOR = ModelFamily(id=FAMILY, detect=detect, from_state_dict=from_state_dict, describe=describe)
"""The SRDiff family for the checkpoint loader (task in ``describe``: super-resolution)."""
