"""A whole DiffIR plane: the plain forward against the strip forward (``models.diffir.strip_forward``).

Each case runs in a fresh process (peak RSS is per process): the bundled model's network on a
noisy ``astronaut`` plane resized to the side given (an SR model gets it as the input), one
thread, fp32 or bf16 autocast. The table gives CPU seconds, the process's peak RSS growth over
the forward, that growth per output pixel, and the largest difference from the plain forward.

    OMP_NUM_THREADS=1 python benchmarks/bench_strips.py [--model diffir-denoise] [--sizes 512 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(model_name: str, side: int, mode: str, precision: str, out: str) -> None:
    import numpy as np
    import torch
    from skimage import data
    from skimage.transform import resize

    from napari_diffir.models.diffir.strip_forward import in_strips
    from napari_diffir.registry import get_restorer

    torch.set_num_threads(1)
    model = get_restorer(model_name).model.eval().to(memory_format=torch.channels_last)
    img = resize(data.astronaut()[..., 0] / 255.0, (side, side), anti_aliasing=True)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 25 / 255, img.shape), 0, 1).astype(np.float32)
    x = torch.from_numpy(noisy)[None, None].contiguous(memory_format=torch.channels_last)
    noise = torch.randn(1, model.ipr_dim, generator=torch.Generator().manual_seed(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0 = time.process_time()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"), \
            (in_strips() if mode == "strips" else contextlib.nullcontext()):
        y = model.restore(x, noise=noise)
    cpu = time.process_time() - c0
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    np.save(out, y.float().numpy())
    print(json.dumps({"cpu_s": round(cpu, 2), "growth_mib": round(growth / 2**20), "bytes_per_output_px":
                      round(growth / y[0, 0].numel())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="diffir-denoise")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        name, side, mode, precision, out = args.child
        child(name, int(side), mode, precision, out)
        return
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sizes:
            for precision in args.precisions:
                outputs = {}
                for mode in ("plain", "strips"):
                    out = str(Path(tmp) / f"{mode}.npy")
                    res = subprocess.run([sys.executable, __file__, "--child", args.model, str(side), mode, precision, out],
                                         check=True, capture_output=True, text=True)
                    row = {"model": args.model, "side": side, "precision": precision, "mode": mode,
                           **json.loads(res.stdout.strip().splitlines()[-1])}
                    outputs[mode] = np.load(out)
                    rows.append(row)
                rows[-1]["max_abs_diff_vs_plain"] = float(np.abs(outputs["strips"] - outputs["plain"]).max())
    print("| model | input | precision | forward | CPU s | peak RSS growth (MiB) | bytes per output px | max \\|strips − plain\\| |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['side']}² | {r['precision']} | {r['mode']} | {r['cpu_s']} | {r['growth_mib']} | "
              f"{r['bytes_per_output_px']} | {r.get('max_abs_diff_vs_plain', '')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
