"""``export_bioimageio``: a DiffIR/SRDiff model as a bioimage.io model package (format 0.5).

The package holds ``pytorch_state_dict`` weights with the architecture as one self-contained
source file (napari-diffir's own modules, :mod:`.flatten`), TorchScript where the model scripts
or traces faithfully (:mod:`.scripted`), a test input with the output napari-diffir's engine
gives for it, a cover, documentation from the model card, citations, licence and authors.
Before anything is written the packaged module is checked against the engine; the package is
then validated and run through ``bioimageio.core.test_model`` and only moved to ``out_zip``
when it passes, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import require
from ..restorer import Restorer
from .source import ExportSource, export_source

__all__ = ["TOLERANCE", "export_bioimageio"]

TOLERANCE = 1e-3
"""Absolute (and relative) tolerance, in normalised units, within which the package reproduces
its test output. The export refuses a packaged module that differs from the engine by more than
a tenth of it (measured: ~2e-7 for DiffIR; SRDiff's sampler steps amplify rounding more); the
rest leaves room for other CPUs, not for fp16/bf16 or GPUs, which the test output does not record."""

_MODULES = {
    "diffir": ["napari_diffir.noise", "napari_diffir.models.schedules",
               "napari_diffir.models.diffir._arch.onednn", "napari_diffir.models.diffir._arch.weight_cache",
               "napari_diffir.models.diffir._arch.inference_conv", "napari_diffir.models.diffir._arch.layernorm",
               "napari_diffir.models.diffir._arch.cpen", "napari_diffir.models.diffir._arch.sr_tail",
               "napari_diffir.models.diffir._arch.dirformer", "napari_diffir.models.diffir._arch.ipr_diffusion",
               "napari_diffir.models.diffir._arch.diffir", "napari_diffir.bioimageio.packaged_diffir"],
    "srdiff": ["napari_diffir.noise", "napari_diffir.models.schedules", "napari_diffir.models.samplers",
               "napari_diffir.resize", "napari_diffir.models.srdiff._arch.blocks",
               "napari_diffir.models.srdiff._arch.rrdb", "napari_diffir.models.srdiff._arch.unet",
               "napari_diffir.models.srdiff._diffusion", "napari_diffir.bioimageio.packaged_srdiff"],
}
_CALLABLE = {"diffir": "PackagedDiffIR", "srdiff": "PackagedSRDiff"}


def export_bioimageio(
    model: str | os.PathLike | Restorer,
    out_zip: str | os.PathLike,
    *,
    seed: int = 0,
    test_input: np.ndarray | None = None,
    options: dict[str, Any] | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | None = None,
    license: str = "BSD-3-Clause",
    torchscript: bool = True,
    check: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a bioimage.io package to ``out_zip`` and return its path.

    :param model: a bundled model or registered restorer name (``"diffir-denoise"``), a DiffIR/SRDiff
        checkpoint path, or a built DiffIR/SRDiff restorer.
    :param seed: the run seed the package fixes (its output equals ``restore(..., seed=seed)``).
    :param test_input: a 2-D ``(Y, X)`` or ``(C, Y, X)`` image (default: a crop of a bundled sample).
    :param options: restorer options, e.g. ``{"sampler": "ddim", "steps": 10}`` for SRDiff.
    :param license: SPDX id of the weights' licence (the bundled weights are napari-diffir's, BSD-3-Clause).
    :param torchscript: also write TorchScript weights where the model scripts or traces faithfully.
    :param check: validate the package and run ``bioimageio.core.test_model`` before writing it.
    :raises MissingExtraError: without ``pip install 'napari-diffir[bioimageio]'``.
    """
    require("bioimageio", "Exporting to bioimage.io")
    out = Path(out_zip)
    if out.suffix.lower() != ".zip":
        raise ValueError(f"A bioimage.io package is a .zip file, but got {os.fspath(out)!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{os.fspath(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"The folder of {os.fspath(out)!r} does not exist")
    src = export_source(model, options)
    with tempfile.TemporaryDirectory(prefix="napari-diffir-export-") as tmp:
        package = _write_package(src, Path(tmp), seed=seed, test_input=test_input, name=name,
                                 description=description, authors=authors, license=license,
                                 torchscript=torchscript, check=check)
        staged = out.with_name(f".{out.name}.partial")
        try:
            os.replace(package, staged) if _same_device(package, out) else _copy(package, staged)
            os.replace(staged, out)
        finally:
            staged.unlink(missing_ok=True)
    return out


def _write_package(src: ExportSource, folder: Path, *, seed: int, test_input, name, description, authors,
                   license: str, torchscript: bool, check: bool) -> Path:
    import torch
    from bioimageio.spec import save_bioimageio_package

    from .card import documentation, write_cover
    from .flatten import single_file
    from .rdf import Geometry, PackageFiles, build_description
    from .reference import packaged_module, reference_run, tile_geometry

    info = src.restorer.info
    geometry = tile_geometry(info)
    ref = reference_run(src, test_input, geometry, seed)
    module, kwargs, run = packaged_module(src, seed)
    with torch.no_grad():
        got = module(torch.from_numpy(ref.normalised_input)).numpy()
    diff = float(np.abs(got - ref.normalised_output).max())
    if diff > TOLERANCE / 10:
        raise ValueError(f"The packaged {src.family} module differs from napari-diffir's engine by {diff:.3g} "
                         f"(allowed {TOLERANCE / 10:g}) on the test input; not exporting a package that "
                         "would not reproduce napari_diffir.restore")
    files = folder / "files"
    files.mkdir()
    np.save(files / "test_input.npy", ref.raw_input)
    np.save(files / "test_output.npy", ref.normalised_output)
    torch.save(module.state_dict(), files / "weights.pt")
    header = (f"{_CALLABLE[src.family]}: {src.family} restoration as exported by napari-diffir.\n"
              f"Built from napari-diffir's modules {', '.join(m.split('napari_diffir.')[-1] for m in _MODULES[src.family])}.\n"
              "Needs only torch and numpy.")
    (files / "architecture.py").write_text(single_file(_MODULES[src.family], header=header), encoding="utf-8")
    scripted_path, script_note = None, "not requested"
    if torchscript:
        from .scripted import to_torchscript

        others = [geometry.min_size, geometry.min_size + 2 * geometry.multiple]
        scripted, script_note = to_torchscript(module, torch.from_numpy(ref.normalised_input), others, TOLERANCE / 10)
        if scripted is not None:
            scripted_path = files / "torchscript.pt"
            scripted.save(str(scripted_path))
            script_note = f"TorchScript by torch.jit.{script_note}"
    run["torchscript"] = script_note
    title = name or info.display_name
    text = description or info.description
    card_text = documentation(name=title, family=src.family, description=text, card=src.card, run=run,
                              tolerance=TOLERANCE)
    (files / "README.md").write_text(card_text + f"\nTorchScript: {script_note}\n", encoding="utf-8")
    write_cover(files / "cover.png", ref.raw_input, ref.normalised_output)
    descr = build_description(
        name=_package_name(title), description=text, family=src.family,
        geometry=Geometry(batch_one=script_note.endswith("trace"), channels_in=ref.raw_input.shape[1],
                          channels_out=ref.normalised_output.shape[1], scale=info.scale,
                          multiple=geometry.multiple, min_size=geometry.min_size, halo=geometry.halo,
                          percentiles=geometry.percentiles),
        files=PackageFiles(weights=files / "weights.pt", architecture=files / "architecture.py",
                           callable=_CALLABLE[src.family], kwargs=kwargs, torchscript=scripted_path,
                           test_input=files / "test_input.npy", test_output=files / "test_output.npy",
                           cover=files / "cover.png", documentation=files / "README.md"),
        authors=authors or ["napari-diffir developers"], license=license, tolerance=TOLERANCE,
        tags=_tags(info), config=json.loads(json.dumps(run)))
    package = folder / "package.zip"
    save_bioimageio_package(descr, output_path=package)
    if check:
        _test(package)
    return package


def _test(package: Path) -> None:
    from bioimageio.core import test_model

    summary = test_model(package)
    if summary.status != "passed":
        failed = [f"{d.name}: {'; '.join(e.msg for e in d.errors)}" for d in summary.details if d.errors]
        raise ValueError("The exported package failed bioimage.io's own test: " + " | ".join(failed)[:2000])


def _package_name(title: str) -> str:
    """bioimage.io names allow letters, digits, spaces and ``_-()+.,``."""
    kept = "".join(c if c.isalnum() or c in " _-()+.," else " " for c in title)
    return " ".join(kept.split())[:128]


def _tags(info) -> list[str]:
    task = {"super-resolution": "super-resolution", "denoise": "denoising", "deblur": "deblurring"}.get(info.task, info.task)
    return ["napari-diffir", "diffusion", "2d", "pytorch", task]


def _same_device(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b.parent).st_dev


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copyfile(src, dst)
