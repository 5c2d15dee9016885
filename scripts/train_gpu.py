"""Train one bundled model on one GPU within a fixed wall-clock budget; write weights + card.

    python scripts/train_gpu.py diffir-denoise --minutes 9 --out OUT_DIR [--data DIR ...]
        [--device cuda] [--batch-size 64] [--workers 12] [-- EXTRA TRAIN ARGS]

It fine-tunes the bundled model (``--init NAME``: the committed weights, so a lent GPU adds to
what the CPU runs have learnt) with the bundled recipe's architecture, a large batch, bf16
autocast and ``--workers`` processes cutting batches, for ``--minutes`` of training (startup
and the last validation come on top, so give it about a minute of slack). Then it bundles the
best validated weights as ``OUT_DIR/<name>.safetensors`` + ``.json`` (float16, the model card
with data, steps, wall time, metrics and the exact command). Continue on a CPU from them:

    napari-diffir train diffir --stage 2 ... --init OUT_DIR/diffir-denoise.safetensors --out runs/...
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: no spinning workers

# The bundled recipes (architecture and patch size as in the model cards; docs/training.md).
DIFFIR_ARCH = ["--dim", "24", "--num-blocks", "1,2,2,2", "--refinement", "1", "--n-encoder-res", "2",
               "--n-feats", "16"]
RECIPES = {
    "diffir-denoise": ["diffir", "--stage", "2", "--task", "denoise", *DIFFIR_ARCH, "--patch-size", "48"],
    "diffir-sr4": ["diffir", "--stage", "2", "--task", "sr", "--scale", "4", *DIFFIR_ARCH, "--patch-size", "128"],
    "srdiff-sr4": ["srdiff", "--stage", "diffusion", "--scale", "4", "--rrdb-blocks", "4", "--rrdb-feat", "32",
                   "--hidden", "32", "--dim-mults", "1,2,2,4", "--patch-size", "64"],
}
CPU_BATCH = 8
"""The batch of the CPU recipes, whose learning rate (1e-4 when fine-tuning) is scaled from."""


def command(name: str, args: argparse.Namespace) -> list[str]:
    """The ``napari-diffir train`` arguments of a GPU run of ``name``."""
    lr = 1e-4 * math.sqrt(args.batch_size / CPU_BATCH)  # square-root scaling keeps Adam stable
    data = ["--data", *args.data] if args.data else []
    return ["train", *RECIPES[name], "--init", name, "--name", name, *data,
            "--device", args.device, "--batch-size", str(args.batch_size), "--workers", str(args.workers),
            "--lr", f"{lr:.2e}", "--steps", str(args.steps), "--max-minutes", str(args.minutes),
            "--val-every", str(args.val_every), "--val-count", "64", "--checkpoint-minutes", "2",
            "--out", str(Path(args.out) / "run" / name), "--quiet", *args.extra]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--out", required=True, help="folder for the run and the bundled weights")
    p.add_argument("--minutes", type=float, default=9.0, help="training wall-clock budget")
    p.add_argument("--data", nargs="+", help="training data (default: the CLI's built-in sources)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--steps", type=int, default=20000, help="schedule length (the budget usually ends it first)")
    p.add_argument("--val-every", type=int, default=500)
    args = p.parse_args(argv)
    args.extra = extra

    from napari_diffir.cli import main as cli_main
    from napari_diffir.training.bundle import bundle

    rc = cli_main(command(args.model, args))
    if rc != 0:
        return rc
    best = Path(args.out) / "run" / args.model / "best.safetensors"
    print(bundle(best, args.model, args.out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
