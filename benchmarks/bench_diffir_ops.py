"""Where a whole DiffIR S2 inference goes, op by op, in thread CPU time (robust to other load).

torch.profiler reports wall time per op, which on a shared machine mostly measures the other
jobs. This runs one ``DiffIRS2.restore`` as the restorer does (channels-last, inference mode,
bf16 under autocast) inside a dispatch mode that adds each ATen call's *thread CPU time* to
its op and input shapes, and prints the largest entries.

    python benchmarks/bench_diffir_ops.py --config sr4 --size 64 --precision bf16
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench_diffir import CONFIGS
from napari_diffir.models.diffir import DiffIRS2


class CpuTimer(TorchDispatchMode):
    """Thread CPU seconds and calls per (op, input shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[tuple, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.thread_time()
        out = func(*args, **(kwargs or {}))
        key = (str(func.overloadpacket), tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))[:3])
        self.seconds[key] += time.thread_time() - start
        self.calls[key] += 1
        return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="sr4", choices=list(CONFIGS))
    p.add_argument("--size", type=int, default=64, help="input side (LR side for SR)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    kwargs, _ = CONFIGS[args.config]
    torch.manual_seed(0)
    model = DiffIRS2(**kwargs).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, model.hyperparameters["inp_channels"], args.size, args.size)
    x = x.contiguous(memory_format=torch.channels_last)
    noise = torch.randn(1, model.ipr_dim)
    bf16 = args.precision == "bf16"
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    timer = CpuTimer()
    with torch.inference_mode(), ctx:
        model.restore(x, noise=noise)  # warm-up (and the SR head's composed weights)
        start = time.thread_time()
        model.restore(x, noise=noise)
        plain = time.thread_time() - start
        with timer:
            model.restore(x, noise=noise)
    total = sum(timer.seconds.values())
    print(f"{args.config} {args.size}², {args.precision}, 1 thread: {plain * 1e3:.0f} ms CPU per forward "
          f"({total * 1e3:.0f} ms summed over ops under the timer)")
    for key, s in sorted(timer.seconds.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{s * 1e3:8.1f} ms {s / total:6.1%} {timer.calls[key]:5d}x  {key[0]} {key[1]}")


if __name__ == "__main__":
    main()
