"""TorchScript for a package, only where the scripted or traced module still computes the model.

Scripting is tried first; tracing otherwise. A trace freezes every shape-dependent Python
decision (padding, resize kernels, a sampler's loop) at the example's size, so a trace is kept
only if it also reproduces the eager module at two other valid sizes; it may freeze the batch
size too, so a package with a traced module declares batch size 1. Why no TorchScript was
written is returned as text, for the package's notes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

__all__ = ["to_torchscript"]


def to_torchscript(module: torch.nn.Module, example: torch.Tensor, other_sizes: Sequence[int],
                   atol: float) -> tuple[torch.jit.ScriptModule | None, str]:
    """``(scripted, how)``: a TorchScript module that matches ``module`` within ``atol`` on the
    example and on square inputs of ``other_sizes``, or ``(None, why not)``."""
    module = module.eval()
    failures = []
    with torch.inference_mode(False), torch.no_grad():
        for how in ("script", "trace"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer warnings: the size checks below decide
                    scripted = torch.jit.script(module) if how == "script" else torch.jit.trace(
                        module, example, check_trace=False)
                problem = _mismatch(module, scripted, example, other_sizes, atol)
            except Exception as exc:  # a model that does not script/trace is expected, not a bug
                problem = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            if problem is None:
                return scripted, how
            failures.append(f"{how}: {problem}")
    return None, "; ".join(failures)


def _mismatch(module, scripted, example: torch.Tensor, sizes: Sequence[int], atol: float) -> str | None:
    b, c = example.shape[:2]
    inputs = [example] + [torch.rand(b, c, n, n, generator=torch.Generator().manual_seed(n)) for n in sizes]
    for x in inputs:
        want, got = module(x), scripted(x)
        if tuple(got.shape) != tuple(want.shape):
            return f"at {tuple(x.shape)} it returns {tuple(got.shape)}, not {tuple(want.shape)}"
        diff = float((got - want).abs().max())
        if diff > atol:
            return f"at {tuple(x.shape)} it differs from the model by up to {diff:.3g}"
    return None
