"""The widget's device picker and the line under it: what torch can use on this machine."""

from __future__ import annotations

__all__ = ["device_choices", "device_indicator", "probe_devices"]


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and every GPU torch sees (``cuda:N``, ``mps``)."""
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        choices.append("mps")
    return choices


def device_indicator() -> tuple[str, str]:
    """(text, colour) describing what torch sees, with a hint for CPU-only torch on a GPU machine."""
    import torch

    from ..engine.device import describe_devices

    text = describe_devices()
    if torch.cuda.is_available() or "MPS" in text:
        colour = "#5fb760"
    elif "no CUDA support" in text:
        colour = "#e5a03d"
    else:
        colour = "#9a9a9a"
    return f"● {text} · torch {torch.__version__}", colour


def probe_devices() -> tuple[list[str], str, str, str]:
    """(device choices, indicator text, its colour, the device type 'auto' resolves to).

    Imports torch, and the modules a run needs (checkpoint reading, the model families, the
    engine), so the widget calls it in a background thread: the first run then does not stall
    the viewer while Python imports them.
    """
    import safetensors.torch  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  (torch.compiler.disable, used by resize, imports it: ~2 s)

    from .. import checkpoints  # noqa: F401  (the DiffIR and SRDiff models)
    from ..engine import plan, run  # noqa: F401
    from ..engine.device import resolve_device

    torch.nn.Conv2d(1, 1, 3)  # torch's first layer initialisation holds the GIL for a while
    text, colour = device_indicator()
    return device_choices(), text, colour, resolve_device("auto").type
