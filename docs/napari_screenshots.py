"""Regenerate the screenshots in docs/images/ from a real napari viewer.

    xvfb-run -a -s "-screen 0 1280x800x24" python docs/napari_screenshots.py

A 1280x800 viewer with the Restore dock at its 380-px width, running the bundled models
(DiffIR denoise, SRDiff x4); prints which restorer each picture shows. napari settings go to a throwaway file, so the
user's own settings are never touched (see screenshot_viewer.py).
"""

from __future__ import annotations

from screenshot_viewer import OUT, add_dock, hide_toasts, new_viewer, settle, start

DOCK_WIDTH = 380


def main() -> None:
    start()
    import numpy as np

    import napari_diffir as nd

    registered = {i.name for i in nd.list_restorers()}
    denoiser, upscaler = "diffir-denoise", "srdiff-sr4"
    missing = {denoiser, upscaler} - registered
    if missing:
        raise SystemExit(f"the bundled models {sorted(missing)} are not installed")

    def open_viewer():
        viewer = new_viewer()
        widget = add_dock(viewer, "Restore", DOCK_WIDTH)
        while "torch" not in widget.device_info.value:  # devices are probed in the background
            settle(0.05)
        return viewer, widget

    def wait(future) -> None:
        while not future.done():
            settle(0.05)
        future.result()

    # 1. denoising the noisy sample, input and output side by side
    viewer, widget = open_viewer()
    viewer.open_sample("napari-diffir", "noisy_nuclei")
    widget.image.value = viewer.layers["noisy nuclei"]
    widget.restorer.value = denoiser
    wait(widget.run())
    viewer.grid.enabled = True
    viewer.reset_view()
    hide_toasts(viewer)
    viewer.window.screenshot(str(OUT / "napari-denoise.png"), canvas_only=False)
    print(f"napari-denoise.png: {denoiser}")

    # 2. the widget while a run is under way (progress, ETA, Cancel)
    stack = np.stack([viewer.layers["noisy nuclei"].data] * 12)
    units = ("µm", *viewer.layers["noisy nuclei"].units)  # as the sample's, so napari sees one unit
    viewer.add_image(stack, name="noisy stack", scale=(1.0, 0.26, 0.26), units=units)
    widget.image.value = viewer.layers["noisy stack"]
    widget.restorer.value = denoiser
    widget.show_advanced(True)
    widget.tile_size.value = "128"
    future = widget.run()
    while widget.progress.value < 250 and not future.done():
        settle(0.02)
    settle(0.05)
    widget.native.grab().save(str(OUT / "napari-progress.png"))
    widget.cancel()
    while not future.done():
        settle(0.05)
    print(f"napari-progress.png: {denoiser} on a 12-plane stack, cancelled after the screenshot")
    viewer.close()

    # 3. x4 super-resolution of the low-resolution sample, overlaid on the reference
    viewer, widget = open_viewer()
    viewer.open_sample("napari-diffir", "clean_nuclei")
    viewer.open_sample("napari-diffir", "lowres_nuclei")
    viewer.layers.remove("nuclei z=30 (reference)")
    widget.image.value = viewer.layers["low-resolution nuclei (x4)"]
    widget.restorer.value = upscaler  # x4 only: the form offers no other scale
    wait(widget.run())
    viewer.layers["nuclei z=45 (reference)"].visible = True
    viewer.grid.enabled = True
    viewer.reset_view()
    hide_toasts(viewer)
    viewer.window.screenshot(str(OUT / "napari-super-resolution.png"), canvas_only=False)
    print(f"napari-super-resolution.png: {upscaler} x4")
    viewer.close()


if __name__ == "__main__":
    main()
