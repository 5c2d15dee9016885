"""The Train widget's logic without Qt: settings to jobs, the jobs' CLI commands, problems, the curve."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest

from napari_diffir.napari._curve import CurveData
from napari_diffir.napari._train_form import TrainSettings, make_job, noisy_planes, plane_shapes, problems
from napari_diffir.napari._train_worker import fraction_done, progress_text
from napari_diffir.restorers import bundled
from napari_diffir.training.cli import parse_train_args, prepare
from napari_diffir.training.progress import TrainingProgress
from napari_diffir.training.session import JobProgress, TrainJob, stage_commands

needs_weights = pytest.mark.skipif(not bundled.weights_path("diffir-sr4").is_file(), reason="no bundled weights")


def _p(index, count, step, event="step", **kw):
    return JobProgress(index, count, TrainingProgress(stage=f"s{index}", event=event, step=step, total=100, loss=0.5,
                                                      **kw))


def test_layer_shapes_become_planes():
    """2-D, ZYX/TYX stacks and RGB layers give the planes training reads."""
    assert plane_shapes((64, 80)) == [(64, 80)]
    assert plane_shapes((3, 64, 80)) == [(64, 80)] * 3
    assert plane_shapes((64, 80, 3), rgb=True) == [(64, 80)]
    assert plane_shapes((1, 2, 1, 64, 80)) == [(64, 80)] * 2


def test_noisy_planes_read_only_a_few_planes_of_a_lazy_stack():
    """A 40-plane dask stack is sampled at 8 planes (the rest is never computed)."""
    stack = da.from_array(np.random.default_rng(0).random((40, 32, 32)).astype(np.float32), chunks=(1, 32, 32))
    planes = noisy_planes(stack, False, "stack")
    assert len(planes) == 8 and all(p.shape == (32, 32) for p in planes)
    np.testing.assert_array_equal(planes[-1], np.asarray(stack[39]))


def test_problems_check_patch_multiples_and_tasks(tmp_path, monkeypatch, fresh_registry):
    """A patch the model cannot take, SRDiff for denoising, and a clean form without problems."""
    monkeypatch.setenv("NAPARI_DIFFIR_MODELS_DIR", str(tmp_path / "models"))
    layers = {"a": ((256, 256), False)}
    ok = TrainSettings(images=("a",), name="fine")
    assert problems(ok, layers) == {}
    sr = TrainSettings(images=("a",), name="fine", task="sr4", patch_size=48)
    assert "must be a multiple of 32" in problems(sr, layers)["patch_size"]
    assert "SRDiff only does super-resolution" in problems(TrainSettings(images=("a",), family="srdiff"), layers)["family"]


def test_make_job_writes_layers_and_pairs(tmp_path):
    """Images go to RUN/data/images; a pair to RUN/data/low and /high under one file name."""
    a = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    job = make_job(TrainSettings(images=("cells 1",), name="x", run_dir=str(tmp_path / "run"),
                                 noise="gaussian:0.1"), {"cells 1": a})
    assert isinstance(job, TrainJob) and job.noise == "gaussian:0.1" and job.data[0].endswith("images/cells_1.tif")
    paired = make_job(TrainSettings(task="denoise-paired", low="lo", high="hi", name="x",
                                    run_dir=str(tmp_path / "run2")), {"lo": a, "hi": a})
    low, high = paired.paired
    assert low.endswith("data/low") and high.endswith("data/high") and paired.noise is None
    assert sorted(p.name for p in (tmp_path / "run2" / "data" / "low").iterdir()) == ["hi.tif"]


@needs_weights
@pytest.mark.parametrize("family,scale,start", [("diffir", 1, "fine-tune"), ("diffir", 4, "fine-tune"),
                                                 ("srdiff", 4, "fine-tune"), ("diffir", 2, "scratch"),
                                                 ("srdiff", 2, "scratch")])
def test_every_job_is_a_valid_cli_command(tmp_path, family, scale, start):
    """The first stage of every kind of job passes the CLI's own checks (data, patch, init weights)."""
    import tifffile

    tifffile.imwrite(tmp_path / "hr.tif", np.random.default_rng(0).random((2, 300, 300)).astype(np.float32))
    job = TrainJob(name="x", run_dir=str(tmp_path / "run"), task="denoise" if scale == 1 else "sr", scale=scale,
                   family=family, start=start, data=[str(tmp_path / "hr.tif")], val_split="plane", val_count=1)
    commands = stage_commands(job)
    assert len(commands) == (1 if start == "fine-tune" else 2)
    stage, sampler, val, cfg, card = prepare(parse_train_args(commands[0]))
    assert card["scale"] == scale and cfg.max_minutes == pytest.approx(10.0 * (1 if start == "fine-tune" else
                                                                                {"diffir": 0.4, "srdiff": 0.3}[family]))
    if start == "fine-tune":
        assert card["initialised_from"]["name"] == f"{family}-{'denoise' if scale == 1 else 'sr4'}"


def test_the_curve_runs_on_across_stages_and_reports_progress():
    """Stage 2's steps continue after stage 1's; PSNR points are placed at their step; the bar
    and status line say which stage and how far."""
    c = CurveData()
    for s in (1, 2, 3):
        c.add(_p(0, 2, s))
    c.add(_p(0, 2, 3, "validation", validation={"step": 3, "psnr": 20.0, "ssim": 0.5}))
    c.add(_p(1, 2, 1))
    c.add(_p(1, 2, 1, "validation", validation={"step": 1, "psnr": 22.0, "ssim": 0.6}))
    assert [x for x, _ in c.loss] == [1, 2, 3, 4] and c.psnr == [(3, 20.0), (4, 22.0)] and c.stage_starts == [3]
    assert c.steps == 4 and c.span([1.0, 1.0])[0] < 1.0
    assert fraction_done(_p(1, 2, 50)) == pytest.approx(0.75)
    assert fraction_done(_p(0, 2, 10, eta_s=10.0, elapsed_s=30.0)) == pytest.approx(0.375)
    text = progress_text(_p(1, 2, 50, eta_s=70.0, validation={"step": 40, "psnr": 28.4}))
    assert text == "Stage 2/2 (s1) · step 50 · loss 0.5000 · val PSNR 28.40 dB · 1:10 left in this stage"


def test_the_train_form_does_not_import_torch():
    """Opening the Train widget's logic (problems per keystroke) stays cheap: no torch."""
    code = ("import sys; from napari_diffir.napari import _train_form as f; "
            "f.problems(f.TrainSettings(images=('a',)), {'a': ((64, 64), False)}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "False"
