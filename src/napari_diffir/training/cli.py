"""``napari-diffir train diffir|srdiff ...``: build data, model stage and loop from arguments.

Every check that can fail (data readable, patches fit, stage-1/RRDB checkpoint present and
matching) runs before the first training step, so a bad command fails in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_train_parser", "parse_train_args", "prepare", "run_train", "train"]

NEGATED_FLAGS = {"channels_last": "--no-channels-last"}
DEFAULT_DATA = ["builtin:skimage", "builtin:nuclei", "builtin:timelapse", "builtin:synthetic"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, but got {text!r}") from None


def _source_weight(text: str) -> tuple[str, float]:
    src, sep, w = str(text).rpartition("=")
    try:
        if not (sep and src):
            raise ValueError
        return src, float(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SRC=WEIGHT (e.g. builtin:nuclei=2), but got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", default=None, metavar="SRC",
                   help="folders/files of clean images, or builtin:skimage|nuclei|timelapse|synthetic "
                        f"(default: {' '.join(DEFAULT_DATA)})")
    g.add_argument("--paired", nargs=2, metavar=("LQ_DIR", "GT_DIR"),
                   help="train on paired degraded/clean folders (matched by file name) instead")
    g.add_argument("--degradation", default=None, choices=("denoise", "sr", "sr-noisy", "deblur"),
                   help="synthetic degradation preset (default: denoise for same-size, sr for x2/x4)")
    g.add_argument("--n-synthetic", type=int, default=24, help="synthetic fluorescence images to generate")
    g.add_argument("--source-weight", action="append", default=[], metavar="SRC=W", type=_source_weight,
                   help="sample patches from the --data source SRC W times as often (repeatable), "
                        "e.g. builtin:nuclei=2")
    g.add_argument("--noise", default=None, metavar="MODEL",
                   help="denoise with this noise model instead of the blind preset: gaussian:SIGMA or "
                        "poisson-gaussian:PEAK,READ (in the units of the normalised [0, 1] image)")
    g.add_argument("--noise-from", default=None, metavar="NOISY_IMAGE",
                   help="denoise with the noise model estimated from this noisy image (Gaussian or Poisson-Gaussian)")
    g.add_argument("--val-split", choices=("image", "plane", "region"), default="image",
                   help="hold out whole images, whole planes of stacks, or a band of every plane for validation")
    g.add_argument("--val-fraction", type=float, default=0.1, help="fraction of images (planes, rows) held out for validation")
    g.add_argument("--val-count", type=int, default=16, help="validation patches (fixed)")
    g.add_argument("--patch-size", type=int, default=64, help="GT patch side in pixels")
    g = p.add_argument_group("loop")
    g.add_argument("--out", required=True, help="run directory (checkpoints, cards, logs)")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--ema", type=float, default=None, help="EMA decay (default 0.999 DiffIR, 0 SRDiff as upstream)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--val-every", type=int, default=200)
    g.add_argument("--checkpoint-minutes", type=float, default=3.0)
    g.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this wall time")
    g.add_argument("--stop-after", type=int, default=None,
                   help="stop (and save) after this many steps in this session; rerun to resume")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--no-resume", action="store_true", help="start over even if the run directory has a checkpoint")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--name", default=None, help="model name written into the card (e.g. diffir-denoise)")
    g.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="fine-tune: start from these weights (a bundled model name such as diffir-denoise, "
                        "or a .safetensors file of the same architecture) instead of random ones")
    g.add_argument("--amp", choices=("bf16", "none"), default="bf16",
                   help="mixed precision of the training step (default bf16 autocast; validation stays fp32)")
    g.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda, cuda:1, mps)")
    g.add_argument("--workers", type=int, default=0,
                   help="processes that prepare batches ahead of the step (use with a GPU; the run is identical)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (minutes of compiling first; pays off on long runs)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep weights and batches in the default memory format (channels-last is faster on CPU)")


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` (with ``diffir`` and ``srdiff``) to the main CLI's subparsers."""
    train = subparsers.add_parser("train", help="train DiffIR or SRDiff models on your images")
    fam = train.add_subparsers(dest="family", required=True)

    p = fam.add_parser("diffir", help="DiffIR stage 1 (CPEN_S1 + DIRformer) or stage 2 (blind)")
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--task", choices=("denoise", "deblur", "sr"), default="denoise",
                   help="denoise/deblur: same-size DIRformer with global residual; sr: x2/x4")
    p.add_argument("--scale", type=int, default=1, choices=(1, 2, 4))
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--dim", type=int, default=24)
    p.add_argument("--num-blocks", type=_ints, default=(1, 2, 2, 2))
    p.add_argument("--refinement", type=int, default=1, help="num_refinement_blocks")
    p.add_argument("--heads", type=_ints, default=(1, 2, 4, 8))
    p.add_argument("--ffn", type=float, default=2.0, help="ffn_expansion_factor")
    p.add_argument("--layernorm", default="WithBias", choices=("WithBias", "BiasFree"))
    p.add_argument("--n-encoder-res", type=int, default=2)
    p.add_argument("--n-feats", type=int, default=16, help="CPEN width (official 64; IPR = 4 x n_feats)")
    p.add_argument("--s1", help="stage-2 only: the stage-1 checkpoint (.safetensors) to start from")
    p.add_argument("--encoder-fraction", type=float, default=None,
                   help="stage-2 encoder-only warm-up as a fraction of steps (default: 0.25 denoise, 0 sr)")
    p.add_argument("--grow", action="store_true",
                   help="with --init: this architecture may have more blocks per level (--num-blocks, "
                        "--refinement) than the starting weights; the added blocks start as the identity")
    p.add_argument("--grown-lr-scale", type=float, default=1.0,
                   help="with --grow: the added blocks learn at this multiple of the learning rate (they start "
                        "untrained while the rest is converged; e.g. 10)")
    p.add_argument("--pixel-loss", choices=("l1", "l2"), default="l1",
                   help="loss between restoration and ground truth: l1 (official) or l2 (mean squared error, "
                        "what PSNR measures; e.g. for a last fine-tune)")
    _common(p)
    p.set_defaults(func=run_train)

    p = fam.add_parser("srdiff", help="SRDiff: RRDB pre-training, then diffusion with the frozen RRDB")
    p.add_argument("--stage", choices=("rrdb", "diffusion"), required=True)
    p.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--hidden", type=int, default=32, help="U-Net width (official 64)")
    p.add_argument("--dim-mults", type=_ints, default=(1, 2, 2, 4))
    p.add_argument("--rrdb-blocks", type=int, default=4)
    p.add_argument("--rrdb-feat", type=int, default=32)
    p.add_argument("--rrdb", help="diffusion stage only: the pre-trained RRDB checkpoint, or an SRDiff model "
                                  "(file or bundled name, e.g. srdiff-sr4) whose encoder is used")
    _common(p)
    p.set_defaults(func=run_train)
    return train


def canonical_command(args: argparse.Namespace) -> str:
    """The full ``napari-diffir train`` command with every option spelled out (defaults too),
    so a model card reproduces the run even if the CLI's defaults change later."""
    import shlex

    parts = ["napari-diffir", "train", args.family]
    for key, value in vars(args).items():
        if key in NEGATED_FLAGS:  # store_false options: spell out only the non-default
            if not value:
                parts.append(NEGATED_FLAGS[key])
            continue
        if key in ("func", "command", "family") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            if key in ("data", "paired"):
                parts += [flag, *map(str, value)]
            else:
                parts += [flag, ",".join(map(str, value))]
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def prepare(args: argparse.Namespace):
    """Validate everything and build ``(stage, sampler, val, loop_config, card)``; no training."""

    from . import data as D
    from .loop import LoopConfig
    from .sizes import input_multiple
    from .splits import split

    if args.channels != 1:
        raise ValueError(f"Only single-channel training is implemented (--channels 1), but got {args.channels}")
    check_device(args.device)
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, but got {args.workers}")
    if args.steps < 1 or args.batch_size < 1:
        raise ValueError(f"--steps and --batch-size must be >= 1, but got {args.steps} and {args.batch_size}")
    if args.val_count < 1:
        raise ValueError(f"--val-count must be >= 1, but got {args.val_count}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be positive, but got {args.max_minutes}")
    family = args.family
    if family == "diffir":
        from .diffir import DiffIRConfig

        task = "sr" if args.task == "sr" else "deblur"
        scale = args.scale if task == "sr" else 1
        if task == "sr" and scale == 1:
            raise ValueError("--task sr needs --scale 2 or 4")
        if task != "sr" and args.scale != 1:
            raise ValueError(f"--task {args.task} is same-size restoration; use --task sr for --scale {args.scale}")
        arch = DiffIRConfig(task=task, scale=scale, channels=1, dim=args.dim, num_blocks=tuple(args.num_blocks),
                            num_refinement_blocks=args.refinement, heads=tuple(args.heads),
                            ffn_expansion_factor=args.ffn, LayerNorm_type=args.layernorm,
                            n_encoder_res=args.n_encoder_res, n_feats=args.n_feats)
        lq_multiple = input_multiple("diffir", scale, str(args.stage))
        ema = 0.999 if args.ema is None else args.ema
        if args.grow and not args.init:
            raise ValueError("--grow needs --init: the weights of the shallower model to start from")
        if args.grown_lr_scale != 1.0 and not args.grow:
            raise ValueError("--grown-lr-scale applies to the blocks --grow adds; give --grow (and --init) too")
        if not 0 < args.grown_lr_scale < float("inf"):
            raise ValueError(f"--grown-lr-scale must be a positive number, but got {args.grown_lr_scale}")
        if args.stage == 2 and not (args.s1 or args.init):
            raise ValueError("DiffIR stage 2 needs the stage-1 checkpoint (--s1 RUN_DIR/best.safetensors) "
                             "or a stage-2 model to fine-tune (--init)")
    else:
        from .srdiff import SRDiffConfig

        scale = args.scale
        arch = SRDiffConfig(scale=scale, channels=1, hidden=args.hidden, dim_mults=tuple(args.dim_mults),
                            rrdb_blocks=args.rrdb_blocks, rrdb_feat=args.rrdb_feat)
        lq_multiple = input_multiple("srdiff", scale, args.stage, len(arch.dim_mults))
        ema = 0.0 if args.ema is None else args.ema
        if args.stage == "diffusion" and not args.rrdb:
            raise ValueError("SRDiff diffusion training needs the pre-trained RRDB: pass --rrdb RUN_DIR/best.safetensors")
    p = args.patch_size
    if p % (scale * lq_multiple):
        raise ValueError(f"--patch-size {p} must be a multiple of {scale * lq_multiple} "
                         f"(scale {scale} x the model's input multiple {lq_multiple})")

    degradation, noise = _degradation(args, scale)
    if args.paired and args.source_weight:
        raise ValueError("--source-weight weighs the --data sources; with --paired there are none")
    if args.paired:
        pairs = D.load_paired(args.paired[0], args.paired[1], scale=scale, min_size=p)
        train_items, val_items = split(pairs, args.val_split, args.val_fraction, args.seed, p, scale)
        sampler = D.PairedSampler([(a, b) for _, a, b in train_items], p, scale=scale)
        val_sampler = D.PairedSampler([(a, b) for _, a, b in val_items], p, scale=scale, augment=False)
        data_card = {"paired": list(args.paired), "pairs": len(pairs), "train": len(train_items), "val": len(val_items),
                     "val_split": args.val_split, "val_images": [n for n, *_ in val_items]}
    else:
        sources = args.data or DEFAULT_DATA
        planes, origin = [], {}
        for src in sources:  # one source at a time to know where each plane came from
            got = D.resolve_sources([src], n_synthetic=args.n_synthetic, seed=args.seed)
            planes += got
            origin.update((n, str(src)) for n, _ in got)
        images = D.fit_patch(planes, p)
        train_items, val_items = split(images, args.val_split, args.val_fraction, args.seed, p,
                                       names=[n for n, _ in planes])
        weights = dict(args.source_weight)
        sampler = D.PatchSampler([a for _, a in train_items], p, degradation, scale=scale,
                                 weights=D.source_weights(train_items, origin, weights) if weights else None)
        val_sampler = D.PatchSampler([a for _, a in val_items], p, degradation, scale=scale, augment=False)
        data_card = {"sources": list(sources), "images": len(images), "train": len(train_items),
                     "val_split": args.val_split, "val_images": [n for n, _ in val_items],
                     "degradation": degradation.to_dict(), "held_out_never_read": D.HELD_OUT}
        if weights:
            data_card["source_weights"] = weights
        if noise is not None:
            data_card["noise_model"] = {"spec": noise.spec(), "what": noise.describe(), "from": args.noise_from}
    val = D.make_validation(val_sampler, args.val_count, args.seed)
    from .loop import psnr_ssim

    if scale > 1:
        from ..resize import imresize_torch

        base = imresize_torch(val[0], scale)
    else:
        base = val[0]
    b_psnr, b_ssim = psnr_ssim(base, val[1])
    input_metrics = {"psnr": round(b_psnr, 3), "ssim": round(b_ssim, 4),
                     "what": "bicubic upsampling of the LR input" if scale > 1 else "the noisy input"}

    import torch

    torch.manual_seed(args.seed)  # deterministic initial weights
    if family == "diffir":
        from .diffir import Stage1, Stage2

        if args.stage == 1:
            stage = Stage1(arch, args.pixel_loss)
        else:
            enc = args.encoder_fraction if args.encoder_fraction is not None else (0.0 if args.init else None)
            stage = Stage2(arch, args.s1, enc, args.pixel_loss)
        name = args.name or ("diffir-denoise" if task == "deblur" else f"diffir-sr{scale}")
        variant = "DiffIRS1" if args.stage == 1 else "DiffIRS2"
        hyper = stage.net.hyperparameters
    else:
        from .srdiff import DiffusionStage, RRDBStage

        stage = RRDBStage(arch) if args.stage == "rrdb" else DiffusionStage(arch, _existing(args.rrdb))
        name = args.name or f"srdiff-sr{scale}"
        variant = "RRDBNet" if args.stage == "rrdb" else "SRDiff"
        hyper = stage.net.hyperparameters
    init_card = None
    lr_scales: dict[str, float] = {}
    if args.init:
        init_card = load_init_weights(stage.net, args.init, grow=getattr(args, "grow", False))  # SRDiff has none
        scale_new = getattr(args, "grown_lr_scale", 1.0)
        if "grown_blocks" in init_card and scale_new != 1.0:
            from .grow import grown_parameter_names

            names = [n for n, _ in stage.net.named_parameters()]
            lr_scales = dict.fromkeys(grown_parameter_names(names, init_card["grown_blocks"]), scale_new)
            init_card["grown_lr_scale"] = scale_new
    cfg = LoopConfig(out_dir=args.out, steps=args.steps, batch_size=args.batch_size, patch_size=p, lr=args.lr,
                     ema=ema, seed=args.seed, val_every=args.val_every, checkpoint_minutes=args.checkpoint_minutes,
                     max_minutes=args.max_minutes, stop_after=args.stop_after, threads=args.threads, progress=not args.quiet,
                     resume=not args.no_resume, command=canonical_command(args), amp=args.amp,
                     channels_last=args.channels_last, device=args.device, workers=args.workers,
                     compile=args.compile, ema_warmup=not args.init, lr_scales=lr_scales)
    card = {
        "name": name,
        "family": family,
        "variant": variant,
        "task": "super-resolution" if scale > 1 else ("denoise" if getattr(args, "task", "") == "denoise" else "deblur"),
        "scale": scale,
        "in_channels": 1,
        "out_channels": 1,
        "architecture": {"config": arch.to_dict() if hasattr(arch, "to_dict") else vars(arch).copy(),
                         "hyperparameters": hyper},
        "normalization": {"mode": "percentile", "percentiles": list(D.PERCENTILES),
                          "note": "percentiles of the degraded input; the same affine map applied to the target"},
        "data": data_card,
        "validation_input": input_metrics,
        "stage_inputs": {"s1": getattr(args, "s1", None), "rrdb": getattr(args, "rrdb", None),
                         "init": args.init},
    }
    if init_card is not None:
        card["initialised_from"] = init_card
        reused = sorted(set(parent_validation_images(args.init)) & {item[0] for item in train_items})
        if reused:  # recorded: the lineage's validation figures no longer measure unseen images
            card["data"]["trained_on_parent_validation"] = reused
    return stage, sampler, val, cfg, card


def _degradation(args: argparse.Namespace, scale: int):
    """The synthetic degradation of the clean images, and the fitted noise model if one is used."""
    from .degradations import Degradation
    from .noise_model import NoiseModel, estimate_noise_of

    if args.noise and args.noise_from:
        raise ValueError("Give --noise or --noise-from, not both")
    if args.noise or args.noise_from:
        if scale != 1 or args.paired or args.degradation not in (None, "denoise"):
            raise ValueError("--noise/--noise-from set the noise of synthetic denoising (scale 1, no --paired, "
                             f"--degradation denoise), but this run has scale {scale}"
                             + (", --paired" if args.paired else "")
                             + (f", --degradation {args.degradation}" if args.degradation else ""))
        from .data import read_planes

        noise = NoiseModel.parse(args.noise) if args.noise else estimate_noise_of(read_planes(args.noise_from))
        return noise.degradation(), noise
    degradation = Degradation.preset(args.degradation or ("denoise" if scale == 1 else "sr"), scale=scale)
    if scale > 1 and degradation.scale != scale:
        raise ValueError(f"degradation {args.degradation!r} is for same-size restoration; scale is {scale}")
    return degradation, None


def check_device(name: str) -> None:
    """Refuse a device this machine cannot train on, before any data is read."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {name!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: training runs on cpu, cuda or mps, not {device.type}")


def _existing(spec: str) -> str:
    """A weights file as given, or the file of the bundled model of that name."""
    try:
        return str(resolve_init(spec))
    except ValueError:
        return spec  # the stage reports the missing file with its own message


def resolve_init(spec: str) -> Path:
    """A bundled model name or a weights file -> the ``.safetensors`` path to start from."""
    path = Path(spec)
    if path.is_file():
        return path
    from ..restorers.bundled import weights_path

    bundled = weights_path(spec)
    if "/" not in spec and "\\" not in spec and bundled.is_file():
        return bundled
    raise ValueError(f"--init {spec!r} is neither a weights file nor a bundled model name")


def load_init_weights(net: Any, spec: str, grow: bool = False) -> dict:
    """Load the weights named by ``--init`` into ``net`` (strictly), returning their provenance
    for the new model card: the card of the starting model, without its validation history.
    ``grow``: ``net`` may have more transformer blocks per level; they start as the identity
    (:mod:`.grow`)."""
    from safetensors.torch import load_file

    path = resolve_init(spec)
    try:
        sd = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise ValueError(f"--init {spec!r}: cannot read {path.name}: {exc}") from None
    own = net.state_dict()
    grown = None
    if grow:
        from .grow import grow_state_dict

        try:
            sd, grown = grow_state_dict(sd, own)
        except ValueError as exc:
            raise ValueError(f"--init {spec!r}: {exc}") from None
    try:
        net.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"--init {spec!r} does not match the architecture given on the command line: "
                         f"{str(exc).splitlines()[0]}" + ("" if grow else " (--grow starts a deeper model "
                                                           "from a shallower one)")) from None
    info: dict = {"weights": spec}
    if grown is not None:
        info["grown_blocks"] = grown
    card_path = path.with_suffix(".json")
    if card_path.is_file():
        prior = json.loads(card_path.read_text())
        info.update({k: prior[k] for k in ("name", "training", "total_steps", "total_wall_time_s", "previous_stages",
                                       "initialised_from")
                     if k in prior})
        if "validation" in prior:
            info["validation_best"] = prior["validation"].get("best")
    return info


def parent_validation_images(spec: str) -> list[str]:
    """The images the ``--init`` weights were validated on, from their card (none without one)."""
    card_path = resolve_init(spec).with_suffix(".json")
    if not card_path.is_file():
        return []
    return list(json.loads(card_path.read_text()).get("data", {}).get("val_images", []))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are ValueErrors (for callers other than the shell)."""

    def error(self, message: str):  # type: ignore[override]
        raise ValueError(f"napari-diffir train: {message}")


def parse_train_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``napari-diffir train`` arguments (``["diffir", "--stage", "2", ...]``) with the CLI's
    own parser, so every frontend's run is a command the CLI can repeat (and resume)."""
    parser = _Parser(prog="napari-diffir")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_train_parser(sub)
    return parser.parse_args(["train", *map(str, argv)])


def train(args: argparse.Namespace, *, progress: Any = None, cancel: Any = None, log: Any = None) -> dict:
    """Check everything, then train one stage (resuming its run directory); the one path the CLI
    and the napari widget share. Returns the final model card; raises
    :class:`~napari_diffir.training.loop.TrainingCancelled` after checkpointing on ``cancel``."""
    from .loop import run_stage

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    stage, sampler, val, cfg, card = prepare(args)
    n_params = sum(p.numel() for p in stage.parameters())
    (log or (lambda m: print(m, flush=True)))(
        f"napari-diffir train: {card['name']} {card['variant']} ({n_params / 1e6:.2f}M trainable parameters), "
        f"{card['data'].get('train')} training / {len(val[0])} validation samples -> {cfg.out_dir}")
    reused = card["data"].get("trained_on_parent_validation")
    if reused:
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
            f"napari-diffir train: warning: {len(reused)} image(s) the --init weights were validated on are "
            f"training images here ({', '.join(reused[:3])}{', ...' if len(reused) > 3 else ''}): the image "
            "split follows --seed, --val-fraction and the data, so keep them as the starting run had them to "
            "compare this run's validation with its")
    return run_stage(stage, sampler, val, cfg, card, log=log, progress=progress, cancel=cancel)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``napari-diffir train``: prepare (fail fast), then run the loop. Ctrl-C cancels
    at the end of the current step and writes the checkpoint, so the same command resumes."""
    import signal
    import sys
    import threading

    from .loop import TrainingCancelled

    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        final = train(args, cancel=stop)
    except TrainingCancelled as exc:
        print(f"napari-diffir train: {exc}", file=sys.stderr, flush=True)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    print(json.dumps({"steps": final["training"]["steps"], "wall_time_s": final["training"]["wall_time_s"],
                      "best": final["validation"]["best"]}), flush=True)
    return 0
