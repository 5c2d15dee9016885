"""The training API the CLI and the Train widget share: progress, cancel and resume, time budget,
validation splits, fitted noise models, and errors before training that name the problem."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tifffile
from safetensors.torch import load_file

from napari_diffir.cli import main
from napari_diffir.training.cli import parse_train_args, train
from napari_diffir.training.degradations import add_gaussian_noise, add_poisson_gaussian_noise
from napari_diffir.training.loop import TrainingBudgetError, TrainingCancelled
from napari_diffir.training.noise_model import NoiseModel, estimate_noise
from napari_diffir.training.splits import split

TINY = ["diffir", "--stage", "1", "--dim", "8", "--num-blocks", "1,1,1,1", "--refinement", "0",
        "--n-encoder-res", "0", "--n-feats", "4", "--heads", "1,1,1,1", "--batch-size", "2", "--val-count", "2",
        "--threads", "1", "--quiet", "--seed", "1", "--patch-size", "16", "--val-every", "2"]


def _smooth(shape, seed=0):
    from scipy import ndimage

    img = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 4)
    return ((img - img.min()) / np.ptp(img)).astype(np.float32)


@pytest.fixture
def one_image(tmp_path):
    """One 2-D uint16 image, 48x40: region split only."""
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, (_smooth((48, 40)) * 4000 + 100).astype(np.uint16))
    return path


def test_progress_reports_every_step_and_validation_with_eta(one_image, tmp_path):
    """The callback sees steps 1..N in order with the planned total, a finite loss, an ETA that
    ends at 0, validations with PSNR, and a final 'done'."""
    seen = []
    card = train(parse_train_args([*TINY, "--data", one_image, "--val-split", "region", "--steps", "4",
                                   "--out", tmp_path / "run"]), progress=seen.append, log=lambda m: None)
    steps = [p.step for p in seen if p.event == "step"]
    assert steps == [1, 2, 3, 4] and all(p.total == 4 for p in seen)
    assert all(np.isfinite(p.loss) and p.lr > 0 for p in seen if p.event == "step")
    assert seen[-1].event == "done" and seen[-1].eta_s == 0 and seen[-1].step == 4
    assert [p.step for p in seen if p.event == "step"][-1] == 4 and seen[1].eta_s > 0
    vals = [p.validation for p in seen if p.event == "validation"]
    assert [v["step"] for v in vals] == [0, 2, 4] and all(v["psnr"] > 0 for v in vals)
    assert card["validation"]["best"]["psnr"] == max(v["psnr"] for v in vals)
    assert card["data"]["val_split"] == "region" and "rows 32:48" in card["data"]["val_images"][0]


def test_cancel_stops_within_one_step_and_the_same_command_resumes(one_image, tmp_path):
    """Cancelling during step 2's report stops before step 3, writes a checkpoint at step 2, and
    rerunning the same arguments ends bit-identical to an uninterrupted run."""
    args = [*TINY, "--data", one_image, "--val-split", "region", "--steps", "5"]
    stop = threading.Event()

    def progress(p):
        if p.event == "step" and p.step == 2:
            stop.set()

    with pytest.raises(TrainingCancelled, match="cancelled at step 2 of 5.*resumes") as exc:
        train(parse_train_args([*args, "--out", tmp_path / "cut"]), progress=progress, cancel=stop, log=lambda m: None)
    assert exc.value.step == 2
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["step"] == 2
    logs = []
    card = train(parse_train_args([*args, "--out", tmp_path / "cut"]), log=logs.append)
    assert any("resumed" in m and "step 2" in m for m in logs) and card["training"]["steps"] == 5
    train(parse_train_args([*args, "--out", tmp_path / "whole"]), log=lambda m: None)
    a, b = load_file(str(tmp_path / "cut" / "last.safetensors")), load_file(str(tmp_path / "whole" / "last.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


def test_budget_too_short_for_one_validation_fails_before_the_first_step(one_image, tmp_path):
    """A budget below one validation's time is refused with the measured time and no checkpoint."""
    with pytest.raises(TrainingBudgetError, match="too short to reach one validation.*validation patches takes"):
        train(parse_train_args([*TINY, "--data", one_image, "--val-split", "region", "--steps", "50",
                                "--max-minutes", "1e-6", "--out", tmp_path / "run"]), log=lambda m: None)
    assert not (tmp_path / "run" / "state.json").exists() and not (tmp_path / "run" / "best.safetensors").exists()
    assert main(["train", *TINY, "--data", str(one_image), "--steps", "2", "--max-minutes", "0",
                 "--out", str(tmp_path / "zero")]) == 2


def test_a_time_budget_ends_the_run_with_a_checkpoint(one_image, tmp_path):
    """A budget of ~1 s stops long before 100000 steps and still leaves a resumable checkpoint."""
    card = train(parse_train_args([*TINY, "--data", one_image, "--val-split", "region", "--steps", "100000",
                                   "--max-minutes", "0.02", "--out", tmp_path / "run"]), log=lambda m: None)
    assert 0 < card["training"]["steps"] < 100000
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == card["training"]["steps"]


def _stage1_lr(step, total, base=2e-4):
    """Stage 1's denoise schedule (the cyclic cosine), as Stage1.lr_at computes it."""
    from napari_diffir.training.loop import cosine_restart_lr

    p1 = max(1, round(total * 92 / 300))
    return cosine_restart_lr(step, [p1, max(1, total - p1)], [2.85e-4, 1e-6], base)


def test_a_budgeted_schedule_decays_within_the_budget(one_image, tmp_path):
    """With --steps 100000 and a 3 s budget, the schedule is fitted to the measured pace after 5
    steps: every later step's lr is the schedule's over the fitted total, the run ends on (or near)
    that total with the lr decayed to a small fraction, and the card and state.json record it."""
    from napari_diffir.training.loop import BUDGET_PROBE_STEPS

    seen, logs = [], []
    card = train(parse_train_args([*TINY, "--data", one_image, "--val-split", "region", "--steps", "100000",
                                   "--val-every", "1000", "--max-minutes", "0.05", "--out", tmp_path / "run"]),
                 progress=seen.append, log=logs.append)
    steps = [p for p in seen if p.event == "step"]
    probing = steps[:BUDGET_PROBE_STEPS - 1]
    assert all(p.schedule == "measuring" and p.total == 100000 for p in probing)
    fitted = steps[BUDGET_PROBE_STEPS - 1:]
    total = fitted[0].total
    assert BUDGET_PROBE_STEPS < total < 100000 and all(p.schedule == "budget" and p.total == total for p in fitted)
    assert all(p.lr == pytest.approx(_stage1_lr(p.step - 1, total)) for p in fitted[1:])  # [0]: timed
    assert steps[-1].step >= 0.8 * total and steps[-1].lr < 0.25 * 2e-4
    assert card["training"]["schedule_steps"] == total and card["training"]["schedule"] == "budget"
    assert card["training"]["planned_steps"] == 100000
    assert json.loads((tmp_path / "run" / "state.json").read_text())["schedule_total"] == total
    assert any(f"the schedule runs over {total} steps to fit the time budget of 0.05 min" in m for m in logs)


def test_a_budgeted_stage_2_prices_its_warm_up_and_joint_phases_apart(one_image, tmp_path, monkeypatch):
    """Stage 2 from stage 1 times its first steps in the cheap encoder warm-up; the DIRformer's
    joint phase is timed too before the schedule is fixed, so the run still ends on its total
    (priced at the warm-up's pace alone, the budget ran out a fraction of the way in). The
    phases are made 2 and 40 ms dearer than the tiny model, so the machine's load cannot hide it."""
    from napari_diffir.training.diffir import Stage2

    loss = Stage2.loss

    def slow(self, lq, gt, step, total):
        import time

        time.sleep(0.002 if step < self.encoder_steps(total) else 0.04)
        return loss(self, lq, gt, step, total)

    monkeypatch.setattr(Stage2, "loss", slow)
    base = [*TINY, "--data", one_image, "--val-split", "region", "--val-every", "1000"]
    train(parse_train_args([*base, "--steps", "2", "--out", tmp_path / "s1"]), log=lambda m: None)
    seen, logs = [], []
    card = train(parse_train_args([*base, "--stage", "2", "--s1", tmp_path / "s1" / "best.safetensors",
                                   "--steps", "100000", "--max-minutes", "0.05", "--out", tmp_path / "s2"]),
                 progress=seen.append, log=logs.append)
    steps = [p for p in seen if p.event == "step"]
    total = card["training"]["schedule_steps"]
    assert card["training"]["schedule"] == "budget" and total < 100000
    assert steps[-1].step >= 0.8 * total
    assert any(p.parts.get("pix") is not None for p in steps)  # it reached the joint phase


def test_a_resumed_budgeted_run_keeps_its_recorded_schedule(one_image, tmp_path):
    """Cancelled after the schedule was fitted, the run resumes over the same total, even with a
    larger budget: it is not fitted again and ends exactly on the recorded total."""
    args = [*TINY, "--data", one_image, "--val-split", "region", "--steps", "100000", "--val-every", "1000",
            "--out", tmp_path / "run"]
    stop = threading.Event()

    def progress(p):
        if p.event == "step" and p.schedule == "budget":
            stop.set()

    with pytest.raises(TrainingCancelled) as exc:
        train(parse_train_args([*args, "--max-minutes", "0.05"]), progress=progress, cancel=stop, log=lambda m: None)
    total = json.loads((tmp_path / "run" / "state.json").read_text())["schedule_total"]
    assert exc.value.step < total < 100000
    seen, logs = [], []
    card = train(parse_train_args([*args, "--max-minutes", "5"]), progress=seen.append, log=logs.append)
    resumed = [p for p in seen if p.event == "step"]
    assert resumed[0].step == exc.value.step + 1 and resumed[-1].step == total == card["training"]["steps"]
    assert all(p.total == total and p.schedule == "budget" for p in seen)
    assert all(p.lr == pytest.approx(_stage1_lr(p.step - 1, total)) for p in resumed)
    assert not any("the schedule runs over" in m for m in logs)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["schedule_total"] == total


def test_bad_inputs_are_named_before_training(one_image, tmp_path, capsys):
    """Each unusable input is a one-line error (exit 2) saying what is wrong, before any step."""
    run = ["train", *TINY, "--steps", "1", "--out", str(tmp_path / "bad")]
    cases = [
        (["--data", str(one_image), "--val-split", "plane"], "Validation by plane needs at least 2 planes"),
        (["--data", str(one_image), "--val-split", "region", "--patch-size", "32"],
         "too small to split into a training and a validation region.*needs 64 px"),
        (["--data", str(one_image), "--noise", "gaussian"], "Expected a noise model 'gaussian:SIGMA'"),
        (["--data", str(one_image), "--noise", "gaussian:0.1", "--noise-from", str(one_image)], "not both"),
        (["--data", str(one_image), "--val-count", "0"], "--val-count must be >= 1"),
    ]
    for extra, message in cases:
        assert main([*run, *extra]) == 2, extra
        assert __import__("re").search(message, capsys.readouterr().err), message
    assert not (tmp_path / "bad" / "state.json").exists()
    sr = ["train", "diffir", "--stage", "1", "--task", "sr", "--scale", "2", "--data", str(one_image),
          "--noise", "gaussian:0.1", "--out", str(tmp_path / "sr")]
    assert main(sr) == 2 and "synthetic denoising" in capsys.readouterr().err
    with pytest.raises(ValueError, match="napari-diffir train: .*--stage"):
        parse_train_args(["diffir", "--out", str(tmp_path)])


def test_mismatched_pairs_are_refused_by_name(tmp_path, capsys):
    """A GT plane that is not scale x its LQ plane is named with both shapes."""
    for sub, shape in (("lq", (40, 40)), ("gt", (40, 36))):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "a.tif", np.zeros(shape, np.float32))
    assert main(["train", *TINY, "--paired", str(tmp_path / "lq"), str(tmp_path / "gt"), "--steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    assert "a.tif[0]: expected GT shape (40, 40)" in capsys.readouterr().err


def test_paired_stack_trains_with_a_plane_split(tmp_path):
    """Low-/high-SNR stacks (CARE style): planes are held out whole and the card lists them."""
    gt = np.stack([_smooth((32, 32), s) for s in range(4)])
    lq = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape).astype(np.float32)
    for sub, a in (("lq", lq), ("gt", gt)):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "stack.tif", a)
    card = train(parse_train_args([*TINY, "--paired", tmp_path / "lq", tmp_path / "gt", "--val-split", "plane",
                                   "--val-fraction", "0.25", "--steps", "2", "--out", tmp_path / "run"]),
                 log=lambda m: None)
    assert card["data"]["train"] == 3 and len(card["data"]["val_images"]) == 1
    assert card["data"]["val_images"][0].startswith("stack.tif[") and card["data"]["val_split"] == "plane"


def test_region_split_keeps_pairs_aligned_at_the_scale():
    """A region split of an x2 pair cuts the LQ at half the GT's rows, so the parts stay aligned."""
    gt = np.arange(64 * 40, dtype=np.float32).reshape(64, 40)
    lq = gt[::2, ::2]
    (tr, va) = split([("p", lq, gt)], "region", 0.25, 0, patch=16, scale=2)
    assert tr[0][2].shape == (48, 40) and tr[0][1].shape == (24, 20)
    assert va[0][2].shape == (16, 40) and va[0][1].shape == (8, 20)
    assert (va[0][1] == va[0][2][::2, ::2]).all()


def test_image_split_is_drawn_over_every_plane_so_a_larger_patch_moves_none():
    """Planes a patch size skips drop out of their part; no other plane changes sides."""
    from napari_diffir.training.data import TrainingDataError, split_validation

    names = [f"p{i}" for i in range(20)]
    items = [(n, None) for n in names]
    train_all, val_all = split_validation(items, 0.25, 3, names=names)
    fewer = [it for it in items if it[0] not in {"p1", "p7"}]
    train_few, val_few = split_validation(fewer, 0.25, 3, names=names)
    assert {n for n, _ in val_few} == {n for n, _ in val_all} - {"p1", "p7"}
    assert {n for n, _ in train_few} == {n for n, _ in train_all} - {"p1", "p7"}
    assert split_validation(items, 0.25, 3) == (train_all, val_all)  # the items' own names by default
    held = [it for it in items if it[0] not in {n for n, _ in val_all}]
    with pytest.raises(TrainingDataError, match="No validation image is left"):
        split_validation(held, 0.25, 3, names=names)


def test_cli_validates_on_the_same_builtin_images_at_a_larger_patch(tmp_path):
    """skimage's 102-px microaneurysms fits 16-px patches, not 104-px ones: only it leaves the split."""
    cards = [train(parse_train_args([*TINY, "--data", "builtin:skimage", "--patch-size", str(p), "--val-fraction",
                                     "0.3", "--steps", "1", "--out", tmp_path / f"run{p}"]), log=lambda m: None)
             for p in (16, 104)]
    small, large = (c["data"] for c in cards)
    assert large["images"] == small["images"] - 1
    assert set(large["val_images"]) == set(small["val_images"]) - {"skimage/microaneurysms.png"}


def test_noise_levels_are_estimated_from_a_noisy_image():
    """Gaussian sigma and Poisson peak come back within 15 % and the kind is told apart."""
    rng = np.random.default_rng(0)
    clean = _smooth((256, 256))
    g = estimate_noise(add_gaussian_noise(clean, 0.08, rng))
    assert g.kind == "gaussian" and abs(g.sigma - 0.08) < 0.012
    pg = estimate_noise(add_poisson_gaussian_noise(clean, 20.0, 1.0, rng))
    assert pg.kind == "poisson-gaussian" and abs(pg.peak - 20) < 3 and abs(pg.read - 1.0) < 0.8
    assert NoiseModel.parse(pg.spec()) == NoiseModel.parse(pg.spec()) and NoiseModel.parse("gaussian:0.1").sigma == 0.1
    with pytest.raises(Exception, match="no measurable noise"):
        estimate_noise(np.ones((32, 32)))


def test_noise_from_a_noisy_file_sets_the_training_degradation(one_image, tmp_path):
    """--noise-from estimates the level and the card records it as a --noise spec that repeats it."""
    noisy = tmp_path / "noisy.tif"
    rng = np.random.default_rng(1)
    tifffile.imwrite(noisy, add_gaussian_noise(_smooth((128, 128)), 0.1, rng))
    card = train(parse_train_args([*TINY, "--data", one_image, "--val-split", "region", "--noise-from", noisy,
                                   "--steps", "1", "--out", tmp_path / "run"]), log=lambda m: None)
    model = NoiseModel.parse(card["data"]["noise_model"]["spec"])
    assert model.kind == "gaussian" and 0.05 < model.sigma < 0.2
    lo, hi = card["data"]["degradation"]["gaussian_sigma"]
    assert lo < model.sigma < hi and card["data"]["degradation"]["p_gaussian"] == 1.0


def test_ctrl_c_checkpoints_and_exits_130_and_the_same_command_resumes(one_image, tmp_path):
    """SIGINT during a CLI run stops at the end of the step, writes the checkpoint, exits 130 with
    a line saying how to resume; the same command (one more step here) continues from it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "napari_diffir.cli", "train", *TINY, "--data", str(one_image), "--val-split",
           "region", "--steps", "100000", "--val-every", "1", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "log.jsonl").exists():
        time.sleep(0.2)
    while time.time() < deadline and sum(1 for _ in open(out / "log.jsonl")) < 2:  # a validation after step 1
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "training cancelled at step" in err and "resumes it" in err
    step = json.loads((out / "state.json").read_text())["step"]
    assert 1 <= step < 100000
    resumed = subprocess.run([*cmd, "--stop-after", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and f"resumed from {out} at step {step}" in resumed.stderr
    assert json.loads((out / "state.json").read_text())["step"] == step + 1
