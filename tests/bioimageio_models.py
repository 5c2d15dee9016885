"""Tiny DiffIR / SRDiff checkpoints and a tiny UNet package built offline, for the bioimage.io tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def tiny_diffir_checkpoint(path: Path, *, task: str = "deblur", scale: int | None = None) -> str:
    from napari_diffir.models.diffir import DiffIRS2

    torch.manual_seed(0)
    model = DiffIRS2(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=0 if task == "inpaint" else 1,
                     n_encoder_res=1, n_feats=8, task=task, scale=scale,
                     inp_channels=2 if task == "inpaint" else 1, out_channels=1)
    sd = model.state_dict()
    torch.save({"params": sd, "params_ema": sd}, path)
    return str(path)


def tiny_srdiff_checkpoint(path: Path) -> str:
    from safetensors.torch import save_file

    from napari_diffir.models.srdiff import SRDiff

    torch.manual_seed(0)
    model = SRDiff(scale=2, in_channels=1, hidden_size=8, dim_mults=(1, 2), rrdb_num_block=2, rrdb_num_feat=4,
                   timesteps=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def make_image(side: int = 48, seed: int = 1) -> np.ndarray:
    """A (Y, X) uint16 image with structure and an offset (so percentile scaling matters)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    clean = 800 + 600 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    return (clean + rng.normal(0, 60, clean.shape)).clip(0, 65535).astype(np.uint16)
