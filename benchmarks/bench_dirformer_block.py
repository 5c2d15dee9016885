"""Where a DIRformer block's time goes: each stage of one transformer block, fp32 and bf16.

Runs the stages of ``TransformerBlock.forward`` one by one, as the restorer does (channels-last,
inference mode, bf16 under autocast), and prints process CPU milliseconds per stage, median of
``--rounds``, with each stage's share. The 1x1 convolutions (GEMMs), the depthwise convolutions
and the attention products are the floor that element-wise fusion cannot lower; the rest
(layer norms, GELU gate, norms, residual adds, IPR modulation) is what fusion can.

    python benchmarks/bench_dirformer_block.py                   # SR x4 refinement block: dim 128, 64²
    python benchmarks/bench_dirformer_block.py --dim 64 --ffn 2.2 --side 64 --norm BiasFree
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from napari_diffir.models.diffir._arch.dirformer import (
    TransformerBlock,
    _gelu_gate,
    _ipr_affine,
    _modulated_pointwise,
    _pointwise,
)

FLOOR = ("qkv 1x1 (GEMM)", "qkv depthwise 3x3", "q k^T + softmax", "attn v + project_out (GEMM)",
         "FFN in 1x1 (GEMM)", "FFN depthwise 3x3", "FFN out 1x1 (GEMM)")


def stages(block: TransformerBlock, x: torch.Tensor, z: torch.Tensor, clock: dict) -> torch.Tensor:
    def timed(name, fn):
        c = time.process_time()
        out = fn()
        clock[name] = clock.get(name, 0.0) + time.process_time() - c
        return out

    a, f = block.attn, block.ffn
    xh, w, b = timed("layer norm 1", lambda: block.norm1.normalize(x))
    scale, shift = timed("IPR modulation", lambda: _ipr_affine(a.kernel, z, x.shape[0], w, b))
    qkv = timed("qkv 1x1 (GEMM)", lambda: _modulated_pointwise(xh, a.qkv, scale, shift))
    q, k, v = a.split(timed("qkv depthwise 3x3", lambda: a.qkv_dwconv(qkv)))
    attn = timed("q k^T + softmax", lambda: a.attention_map(q, k))
    o = timed("attn v + project_out (GEMM)", lambda: a.attend(attn, v))
    x = timed("residual adds", lambda: x + o)
    xh, w, b = timed("layer norm 2", lambda: block.norm2.normalize(x))
    scale, shift = timed("IPR modulation", lambda: _ipr_affine(f.kernel, z, x.shape[0], w, b))
    h = timed("FFN in 1x1 (GEMM)", lambda: _modulated_pointwise(xh, f.project_in, scale, shift))
    h1, h2 = timed("FFN depthwise 3x3", lambda: f.dwconv(h)).chunk(2, dim=1)
    g = timed("GELU gate", lambda: _gelu_gate(h1, h2))
    o = timed("FFN out 1x1 (GEMM)", lambda: _pointwise(g, f.project_out))
    return timed("residual adds", lambda: x + o)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--ffn", type=float, default=2.2)
    p.add_argument("--norm", default="BiasFree", choices=("BiasFree", "WithBias"))
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = TransformerBlock(args.dim, args.heads, args.ffn, False, args.norm).eval()
    block = block.to(memory_format=torch.channels_last)
    x = torch.randn(1, args.dim, args.side, args.side).contiguous(memory_format=torch.channels_last)
    z = torch.randn(1, 256)
    print(f"DIRformer block: dim {args.dim}, {args.heads} head(s), ffn {args.ffn}, {args.norm}, "
          f"{args.side}x{args.side}, {torch.get_num_threads()} thread(s), CPU ms, median of {args.rounds}")
    for precision in ("fp32", "bf16"):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        inp = x.bfloat16() if precision == "bf16" else x
        rounds: list[dict] = []
        with torch.inference_mode(), ctx:
            stages(block, inp, z, {})
            for _ in range(args.rounds):
                clock: dict = {}
                stages(block, inp, z, clock)
                rounds.append(clock)
        median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        total = sum(median.values())
        floor = sum(v for k, v in median.items() if k in FLOOR)
        print(f"\n{precision}: {total * 1e3:.2f} ms per block; GEMMs, depthwise convs and attention "
              f"products {floor / total:.0%}, the rest {1 - floor / total:.0%}")
        for k, v in sorted(median.items(), key=lambda kv: -kv[1]):
            print(f"  {k:30s} {v * 1e3:7.2f} ms {v / total:6.1%}{'' if k in FLOOR else '  (fusable)'}")


if __name__ == "__main__":
    main()
