"""The PyTorch network of a bioimage.io package: its state dict with its architecture, or TorchScript."""

from __future__ import annotations

from typing import Any

from .bioimageio_package import PackageSpec

__all__ = ["load_network"]


def load_network(spec: PackageSpec) -> Any:
    """The package's network in eval mode on the CPU, without gradients (the restorer moves it)."""
    weights = spec.descr.weights
    if spec.weight_format == "pytorch_state_dict":
        from bioimageio.core.backends.pytorch_backend import load_torch_model

        net = load_torch_model(weights.pytorch_state_dict, load_state=True, devices=["cpu"])
    else:
        import torch

        net = torch.jit.load(weights.torchscript.get_reader(), map_location="cpu")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
