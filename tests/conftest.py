"""Shared fixtures: throwaway third-party plugin distributions and a clean restorer registry."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

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
