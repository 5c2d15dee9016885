"""Shared fixtures: throwaway third-party plugin distributions and a clean restorer registry."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

# the user's own models folder must not leak into the tests (nor the tests' models into it)
os.environ["NAPARI_DIFFIR_MODELS_DIR"] = tempfile.mkdtemp(prefix="napari-diffir-test-models-")

from napari_diffir import registry

PLUGIN_SOURCE = '''
import torch
from napari_diffir import Option, Restorer, RestorerInfo, hookimpl


class Invert(Restorer):
    info = RestorerInfo(
        name="{name}", display_name="Invert (third-party test plugin)", task="invert",
        in_channels=None, options=(Option("gain", float, 1.0),),
    )

    def restore_tile(self, x, ctx):
        return (1.0 - x) * (self.options.get("gain") or 1.0)


@hookimpl
def register_restorers(register):
    register(Invert)
'''


def write_plugin_dist(root: Path, dist: str, module: str, source: str, version: str = "1.0") -> Path:
    """A real installed distribution (dist-info with an entry point) under ``root``, no pip needed."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[napari_diffir]\n{module} = {module}\n")
    (info / "RECORD").write_text("")
    return root


@pytest.fixture
def fresh_registry():
    """Forget loaded plugins before and after a test that changes what is installed."""
    registry.reload()
    yield registry
    registry.reload()


@pytest.fixture
def third_party_plugin(tmp_path, monkeypatch, fresh_registry):
    """Install the 'napari-diffir-invert' test plugin on sys.path; yields its site folder."""
    site = write_plugin_dist(tmp_path / "site", "napari-diffir-invert", "napari_diffir_invert",
                             PLUGIN_SOURCE.format(name="invert"))
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("napari_diffir_invert", None)


# --- widget fixtures (napari Restore widget tests) ---------------------------------------------

WIDGET_PLUGIN_SOURCE = '''
import time
import torch
from napari_diffir import Restorer, RestorerInfo, hookimpl


class SlowSteps(Restorer):
    """A 'diffusion sampler' that takes 20 ms per step and reports every step."""
    info = RestorerInfo(name="slow-steps", display_name="Slow sampler (widget test)", task="denoise",
                        in_channels=None, stochastic=True, sampling_steps=True)
    calls = 0

    def restore_tile(self, x, ctx):
        steps = ctx.steps or 100
        for i in range(steps):
            type(self).calls += 1
            time.sleep(0.02)
            ctx.step(i + 1, steps)
        return x.clone()


class OutOfMemory(Restorer):
    info = RestorerInfo(name="always-oom", display_name="Always out of memory (widget test)",
                        task="denoise", in_channels=None)

    def restore_tile(self, x, ctx):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")


class FillMask(Restorer):
    """Sets masked pixels to 0.5 (in the engine's [0, 1] range), keeps the others."""
    info = RestorerInfo(name="fill-mask", display_name="Fill mask (widget test)", task="inpaint",
                        in_channels=None, needs_mask=True)

    def restore_tile(self, x, ctx):
        m = (ctx.mask > 0).to(x.dtype)
        return x * (1 - m) + 0.5 * m


@hookimpl
def register_restorers(register):
    register(SlowSteps)
    register(OutOfMemory)
    register(FillMask)
'''


@pytest.fixture
def widget_plugin(tmp_path, monkeypatch, fresh_registry):
    """Installs 'napari-diffir-widget-test' with slow-steps, always-oom and fill-mask restorers."""
    site = write_plugin_dist(tmp_path / "widget-site", "napari-diffir-widget-test",
                             "napari_diffir_widget_test", WIDGET_PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("napari_diffir_widget_test", None)
