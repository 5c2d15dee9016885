"""Device and precision: what torch sees, ``auto`` selection, and autocast contexts."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil

import torch

from .check import precision_problem


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be available."""
    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        dev = _named_device(device)
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device {device!r} cannot run a restoration; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU ({describe_devices()})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev


def check_device_name(device: str | torch.device) -> None:
    """Check the spelling only: a dask worker checks availability itself (its GPUs may differ)."""
    if not isinstance(device, torch.device) and str(device).strip().lower() == "auto":
        return
    dev = device if isinstance(device, torch.device) else _named_device(device)
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device {device!r} cannot run a restoration; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


DEVICE_TYPES = ("cpu", "cuda", "mps")
"""Devices that hold real tensors (``meta``, ``xla``, ... cannot run the engine)."""


def _named_device(device) -> torch.device:
    if not isinstance(device, str):
        raise ValueError(f"device must be a name such as 'cpu' or 'cuda:0', but got {device!r}")
    try:
        return torch.device(device.strip().lower())
    except RuntimeError:
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None


def local_device(device: str | torch.device) -> torch.device:
    """The device ``auto`` tiles are sized for here: ``device`` if usable here, else the CPU."""
    try:
        return resolve_device(device)
    except ValueError:
        return torch.device("cpu")


def describe_devices() -> str:
    """One line on what torch can use, with a hint when a GPU exists but torch is CPU-only."""
    parts = []
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        parts.append("CUDA: " + ", ".join(names))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        parts.append("MPS (Apple GPU)")
    parts.append(f"CPU ({os.cpu_count()} cores)")
    text = "; ".join(parts)
    if not torch.cuda.is_available() and _nvidia_gpu_present():
        text += (
            " — an NVIDIA GPU is present but this torch build "
            f"({torch.__version__}) has no CUDA support; install a CUDA build of torch to use it"
        )
    return text


def _nvidia_gpu_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def resolve_precision(precision: str, device: torch.device, supports_half: bool = True) -> str:
    """The precision a run uses: ``auto`` becomes bf16 where ``device`` computes it natively and
    the restorer supports half precision, else fp32; any other value is returned as given.

    bf16 autocast costs DiffIR and SRDiff nothing measurable on trained models (docs/performance.md)
    and halves the CPU time where the CPU has bf16 instructions; without them it is emulated and
    slower than fp32. On CUDA, bf16 needs compute capability 8.0 or newer; fp16 is not chosen
    automatically (its range is narrower and its quality was not measured), nor is MPS.
    """
    if precision != "auto":
        return precision
    if not supports_half:
        return "fp32"
    if device.type == "cpu":
        return "bf16" if native_bf16_cpu() else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    return "fp32"


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX): torch's own probe where it
    has one, else the Linux CPU flags. Cached: the answer cannot change in a process."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(probe) for probe in probes):
        return any(probe() for probe in probes)
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` (fp32 means none)."""
    problem = precision_problem(precision, device.type)
    if problem is not None:
        raise ValueError(str(problem))
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: reported by the driver; CPU: available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in str(exc).lower() or isinstance(exc, MemoryError)
    )
