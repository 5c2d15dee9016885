"""``napari-diffir`` command line: list, restore, info, export, train.

User errors (bad paths, bad options, unreadable checkpoints) and refusals of the environment
(an ``OSError`` such as a full disk: the path and the reason) print one line and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, PermissionError)


def _cmd_list(args: argparse.Namespace) -> int:
    from .registry import list_restorers

    infos = list_restorers()
    if not infos:
        print("No restorers registered.")
        return 0
    width = max(len(i.name) for i in infos)
    for info in infos:
        extra = f"x{info.scale}" if info.scale != 1 else ""
        line = f"{info.name:<{width}}  {info.task:<16} {extra:<3}  {info.display_name}  [{info.source}]"
        print(line.rstrip())
        if args.verbose:
            for opt in info.options:
                print(f"{'':<{width}}    --option {opt.name}=<{opt.type.__name__}> (default {opt.default}) {opt.help}")
    return 0


def _parse_options(pairs: Sequence[str]) -> dict:
    opts = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--option expects NAME=VALUE, but got {pair!r}")
        key, value = pair.split("=", 1)
        opts[key.strip()] = value.strip()
    return opts


LABELS = {"tile_size": "--tile", "tile_overlap": "--overlap", "steps": "--steps", "seed": "--seed"}
"""How the restore settings are named on the command line (in error messages)."""


def _settings(args: argparse.Namespace):
    """The restore settings of the flags given (the engine's defaults for the others)."""
    from .engine.settings import from_text

    flags = {
        "axes": args.axes, "weights": args.weights, "tile_size": args.tile, "tile_overlap": args.overlap,
        "device": args.device, "precision": args.precision, "steps": args.steps, "seed": args.seed,
        "output_dtype": args.output_dtype, "options": _parse_options(args.option), "tta": args.tta,
    }
    return from_text(labels=LABELS, **{k: v for k, v in flags.items() if v is not None})


def _cmd_restore(args: argparse.Namespace) -> int:
    import dataclasses
    import math

    from .batch.stream import should_stream
    from .engine.plan import plan
    from .engine.run import run
    from .io.outputs import check_not_input, check_output, check_space
    from .io.tiff import write_tiff_atomic
    from .samples import SAMPLE_PREFIX, read_image

    settings = _settings(args)
    if should_stream(args.input, args.output, chunk=args.chunk, scheduler=args.scheduler):
        return _cmd_restore_streaming(args, settings)

    if not args.input.startswith(SAMPLE_PREFIX):
        check_not_input(args.input, args.output)
    check_output(args.output, args.overwrite)
    image = read_image(args.input)
    settings = dataclasses.replace(settings, axes=(settings.axes or image.axes).upper())
    mask = read_image(args.mask).data if args.mask else None
    job = plan(image.data, args.restorer, settings, mask=mask)
    out_shape = job.layout.output_shape(job.channels.out_channels, job.info.scale)
    check_space(args.output, math.prod(out_shape) * job.result_dtype.itemsize)
    bar = _progress_bar(args.quiet)
    try:
        result = run(job, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    out, s = result.data, result.scale
    pixel_size = {a: (v / s if a in "XY" else v) for a, v in image.pixel_size.items()}
    write_tiff_atomic(args.output, out, settings.axes, pixel_size, image.unit, overwrite=args.overwrite,
                      metadata=result.provenance())
    if not args.quiet:
        print(f"wrote {args.output} {tuple(out.shape)} {out.dtype}", file=sys.stderr)
    return 0


def _cmd_restore_streaming(args: argparse.Namespace, settings) -> int:
    """Zarr in or out, --chunk, --scheduler or a TIFF too big for memory: block by block."""
    from .batch.stream import restore_file

    result = restore_file(
        args.input, args.output, args.restorer, settings=settings, chunk=args.chunk,
        scheduler=args.scheduler, workers=args.workers, overwrite=args.overwrite,
        resume=not args.no_resume, progress=not args.quiet,
    )
    if not args.quiet:
        print(f"wrote {args.output} {result.shape} {result.dtype} ({result.axes}; "
              f"{result.chunks_computed} chunks computed, {result.chunks_resumed} resumed)", file=sys.stderr)
    return 0


class _Bar:
    """tqdm bar created on the first update, so a run that fails validation prints no bar."""

    def __init__(self) -> None:
        self._bar = None

    def update(self, done: float, total: int, message: str) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="tile", file=sys.stderr, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = round(done, 2)
        self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _progress_bar(quiet: bool):
    return None if quiet else _Bar()


def _cmd_info(args: argparse.Namespace) -> int:
    from .restorers.bioimageio_package import is_package

    if is_package(args.file):
        from .bioimageio.describe import describe_package

        print(describe_package(args.file))
        return 0
    from .checkpoints import load_checkpoint
    from .routing import restorer_for_checkpoint

    loaded = load_checkpoint(args.file)
    print(loaded.summary())
    target = restorer_for_checkpoint(loaded.family, loaded.description.get("task"))
    print(f"  restorer: {target or 'none installed'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .bioimageio import export_bioimageio

    out = export_bioimageio(args.model, args.output, seed=args.seed, options=_parse_options(args.option),
                            license=args.license, torchscript=not args.no_torchscript, overwrite=args.overwrite)
    print(f"wrote {out} (bioimage.io package; validated and tested with bioimageio.core)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .engine.settings import PRECISIONS

    parser = argparse.ArgumentParser(prog="napari-diffir", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered restorers and the plugins they come from")
    p.add_argument("-v", "--verbose", action="store_true", help="also list each restorer's options")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("restore", help="restore an image file (TIFF/OME-TIFF, OME-Zarr/Zarr)")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--restorer", "-r", required=True, help="restorer name (see `napari-diffir list`)")
    p.add_argument("--weights", help="checkpoint file (official DiffIR/SRDiff or project-trained)")
    p.add_argument("--axes", help="axes of the input, e.g. ZYX (default: from the file)")
    p.add_argument("--tile", help="tile size in pixels, 'auto' (default) or 'none'")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: the restorer's)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=PRECISIONS, help="fp32 (default), fp16, bf16, or auto (bf16 where it is native)")
    p.add_argument("--steps", type=int, help="sampling steps for diffusion restorers")
    p.add_argument("--seed", type=int, help="random seed for stochastic restorers")
    p.add_argument("--mask", help="inpainting mask TIFF (Y, X), nonzero = pixels to fill")
    p.add_argument("--output-dtype", help="float32 (default), 'input' or a numpy dtype name")
    p.add_argument("--tta", action="store_true", default=None,
                   help="test-time augmentation: average the 8 flips/quarter turns (8x the time)")
    p.add_argument("--option", "-o", action="append", metavar="NAME=VALUE", help="restorer option")
    p.add_argument("--chunk", type=int, help="stream block by block with output blocks of this many "
                   "pixels (Y/X; default for Zarr/streaming: the tile size)")
    p.add_argument("--scheduler", help="stream with dask: threads (default), processes, local[:N] or "
                   "tcp://host:port of a dask.distributed scheduler")
    p.add_argument("--workers", type=int, help="worker threads/processes for --scheduler")
    p.add_argument("--no-resume", action="store_true",
                   help="discard an interrupted streaming run (OUTPUT.partial) instead of resuming it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("info", help="describe a checkpoint file or a bioimage.io package")
    p.add_argument("file")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="write a model as a bioimage.io package (needs napari-diffir[bioimageio])")
    p.add_argument("model", help="bundled model or restorer name (see `napari-diffir list`), or a checkpoint file")
    p.add_argument("output", help="the package to write, OUT.zip")
    p.add_argument("--seed", type=int, default=0, help="the seed the package fixes (default 0)")
    p.add_argument("--option", "-o", action="append", metavar="NAME=VALUE", help="restorer option, e.g. sampler=ddim")
    p.add_argument("--license", default="BSD-3-Clause", help="SPDX licence of the weights (default BSD-3-Clause)")
    p.add_argument("--no-torchscript", action="store_true", help="write pytorch_state_dict weights only")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.set_defaults(func=_cmd_export)

    try:
        from .training.cli import add_train_parser
    except ImportError:
        add_train_parser = None
    if add_train_parser is not None:
        add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoints import CheckpointError
    from .restorer import RestorationCancelled

    try:
        return int(args.func(args) or 0)
    except (CheckpointError, *USER_ERRORS) as exc:
        text = _os_error(exc) if isinstance(exc, OSError) and exc.errno is not None else _one_line(exc)
        print(f"napari-diffir {args.command}: error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment (permissions, space, a folder): say which path and why
        if exc.errno is None:
            raise
        print(f"napari-diffir {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `napari-diffir list | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except (KeyboardInterrupt, RestorationCancelled):
        print(f"napari-diffir {args.command}: interrupted; the output was not written "
              "(a streamed run keeps OUTPUT.partial and resumes from it)", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _os_error(exc: OSError) -> str:
    """``why: path`` of an OSError (``[Errno 28] No space left on device`` -> the reason only)."""
    why = exc.strerror or _one_line(exc)
    where = exc.filename
    return f"{why}: {where}" if where else why


if __name__ == "__main__":
    sys.exit(main())
