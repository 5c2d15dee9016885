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


UNET_SOURCE = '''
import torch
from torch import nn


class TinyUNet(nn.Module):
    """Two levels, 3x3 convolutions: a receptive field of 13 pixels at the input."""

    def __init__(self, channels: int = 4, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(2 * channels, out_channels, 3, padding=1)

    def forward(self, x):
        d = self.down(x)
        return self.out(torch.cat([d, self.up(self.mid(self.pool(d)))], dim=1)) + x
'''


def tiny_unet_package(folder: Path, *, preprocessing: str = "scale_range", output: str = "image",
                      weights: str = "pytorch_state_dict") -> Path:
    """A bioimage.io 0.5 package of a tiny UNet built with bioimageio.spec's builders, fully offline.

    :param preprocessing: ``scale_range`` (percentiles 1/99.8), ``fixed`` (fixed mean/std, raw
        intensities), or ``zmuv`` (per-image mean/std, which napari-diffir refuses).
    :param output: ``image`` or ``vector`` (a per-image feature vector: not an image).
    :param weights: ``pytorch_state_dict`` or ``onnx`` (napari-diffir refuses the latter).
    """
    import importlib.util

    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as b

    folder.mkdir(parents=True, exist_ok=True)
    arch = folder / "unet.py"
    arch.write_text(UNET_SOURCE)
    spec = importlib.util.spec_from_file_location("tiny_unet_for_tests", arch)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = module.TinyUNet().eval()
    torch.save(net.state_dict(), folder / "weights.pt")
    raw = make_image(32).astype(np.float32)[None, None]
    pre, x = _unet_preprocessing(preprocessing, raw, b)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    y_axes: list = [b.BatchAxis(), b.ChannelAxis(channel_names=["c"])]
    if output == "image":
        y_axes += [b.SpaceOutputAxisWithHalo(id=b.AxisId(a), halo=8, size=b.SizeReference(
            tensor_id=b.TensorId("raw"), axis_id=b.AxisId(a))) for a in "yx"]
    else:
        y = y.mean(axis=(2, 3))[:, :, None].repeat(3, axis=2)
        y_axes.append(b.IndexOutputAxis(size=3))
    np.save(folder / "in.npy", raw)
    np.save(folder / "out.npy", y.astype(np.float32))
    size = b.ParameterizedSize(min=24, step=4)
    if weights == "onnx":
        (folder / "model.onnx").write_bytes(b"not a real onnx file: never run")
        wdescr = b.WeightsDescr(onnx=b.OnnxWeightsDescr(source=folder / "model.onnx", opset_version=15))
    else:
        wdescr = b.WeightsDescr(pytorch_state_dict=b.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt", pytorch_version=b.Version("2.1"),
            architecture=b.ArchitectureFromFileDescr(source=arch, callable=b.Identifier("TinyUNet"),
                                                     kwargs={"channels": 4})))
    (folder / "README.md").write_text("# tiny UNet\n\nA test model.\n")
    descr = b.ModelDescr(
        name="tiny UNet denoiser", description="a tiny UNet for napari-diffir's tests",
        authors=[b.Author(name="Test Author")], cite=[b.CiteEntry(text="a test", doi=b.Doi("10.1000/test"))],
        license=b.LicenseId("MIT"), documentation=b.FileDescr(source=folder / "README.md"),
        inputs=[b.InputTensorDescr(
            id=b.TensorId("raw"), axes=[b.BatchAxis(), b.ChannelAxis(channel_names=["c"]),
                                        b.SpaceInputAxis(id=b.AxisId("y"), size=size),
                                        b.SpaceInputAxis(id=b.AxisId("x"), size=size)],
            test_tensor=b.FileDescr(source=folder / "in.npy"), preprocessing=pre)],
        outputs=[b.OutputTensorDescr(id=b.TensorId("denoised"), axes=y_axes,
                                     test_tensor=b.FileDescr(source=folder / "out.npy"))],
        weights=wdescr)
    return save_bioimageio_package(descr, output_path=folder / f"unet-{preprocessing}-{output}-{weights}.zip")


def _unet_preprocessing(kind: str, raw: np.ndarray, b):
    yx = [b.AxisId("y"), b.AxisId("x")]
    if kind == "scale_range":
        lo, hi = np.percentile(raw, [1, 99.8])
        return [b.ScaleRangeDescr(kwargs=b.ScaleRangeKwargs(axes=yx, min_percentile=1.0, max_percentile=99.8))], \
            ((raw - lo) / (hi - lo + 1e-6)).astype(np.float32)
    if kind == "fixed":
        return [b.FixedZeroMeanUnitVarianceDescr(kwargs=b.FixedZeroMeanUnitVarianceKwargs(mean=800.0, std=400.0))], \
            ((raw - 800.0) / 400.0).astype(np.float32)
    return [b.ZeroMeanUnitVarianceDescr(kwargs=b.ZeroMeanUnitVarianceKwargs(axes=yx))], \
        ((raw - raw.mean()) / (raw.std() + 1e-6)).astype(np.float32)
