"""The hook spec, built-in registration, third-party entry points and fault tolerance."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import napari_diffir
from napari_diffir import registry
from napari_diffir.registry import PluginWarning, UnknownRestorerError

from .conftest import write_plugin_dist


def test_builtins_register_through_the_hook(fresh_registry):
    names = {i.name for i in napari_diffir.list_restorers()}
    assert {"lanczos", "nlmeans", "tv"} <= names
    pm = registry.plugin_manager()
    assert pm.has_plugin("napari_diffir.restorers.baselines")
    info = next(i for i in napari_diffir.list_restorers() if i.name == "lanczos")
    assert info.source == "napari-diffir (built-in)"


def test_third_party_plugin_is_listed_with_its_source(third_party_plugin):
    infos = {i.name: i for i in napari_diffir.list_restorers()}
    assert "invert" in infos
    assert infos["invert"].source == "napari-diffir-invert 1.0"
    assert "lanczos" in infos


def test_third_party_restorer_runs_through_the_engine(third_party_plugin):
    import numpy as np

    img = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    out = napari_diffir.restore(img, "invert", normalize="none", options={"gain": 2})
    np.testing.assert_allclose(out, (1 - img) * 2, atol=1e-6)


def test_third_party_plugin_in_cli_list(tmp_path):
    site = write_plugin_dist(tmp_path / "site", "napari-diffir-invert", "napari_diffir_invert",
                             __import__("tests.conftest", fromlist=["x"]).PLUGIN_SOURCE.format(name="invert"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "napari_diffir.cli", "list"], env=env,
                         capture_output=True, text=True, check=True).stdout
    line = next(row for row in out.splitlines() if row.startswith("invert"))
    assert "napari-diffir-invert 1.0" in line and "invert" in line


def test_broken_plugin_warns_and_others_still_load(tmp_path, monkeypatch, fresh_registry):
    site = tmp_path / "site"
    write_plugin_dist(site, "napari-diffir-broken", "napari_diffir_broken", "import does_not_exist_xyz\n")
    write_plugin_dist(site, "napari-diffir-bad", "napari_diffir_bad", '''
from napari_diffir import hookimpl

@hookimpl
def register_restorers(register):
    register(object)
''')
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(PluginWarning) as record:
        names = {i.name for i in napari_diffir.list_restorers()}
    messages = " | ".join(str(w.message) for w in record)
    assert "napari-diffir-broken" in messages and "does_not_exist_xyz" in messages
    assert "napari-diffir-bad" in messages and "not a Restorer subclass" in messages
    assert {"lanczos", "nlmeans", "tv"} <= names


def test_duplicate_name_is_rejected_naming_both(tmp_path, monkeypatch, fresh_registry):
    from .conftest import PLUGIN_SOURCE

    site = write_plugin_dist(tmp_path / "site", "napari-diffir-dup", "napari_diffir_dup",
                             PLUGIN_SOURCE.format(name="lanczos"))
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(PluginWarning, match="already registered by napari-diffir \\(built-in\\)"):
        infos = {i.name: i for i in napari_diffir.list_restorers()}
    assert infos["lanczos"].source == "napari-diffir (built-in)"


def test_load_plugins_env_blocks_entry_points(third_party_plugin, monkeypatch):
    monkeypatch.setenv("NAPARI_DIFFIR_LOAD_PLUGINS", "")
    registry.reload()
    assert "invert" not in {i.name for i in napari_diffir.list_restorers()}
    monkeypatch.setenv("NAPARI_DIFFIR_LOAD_PLUGINS", "napari-diffir-invert")
    registry.reload()
    assert "invert" in {i.name for i in napari_diffir.list_restorers()}


def test_unknown_restorer_and_option_errors_name_the_problem():
    with pytest.raises(UnknownRestorerError, match="Unknown restorer 'nope'.*lanczos"):
        napari_diffir.get_restorer("nope")
    with pytest.raises(ValueError, match="no option 'sigma'; valid options: weights, scale"):
        napari_diffir.get_restorer("lanczos", sigma=3)
    with pytest.raises(ValueError, match="Option 'scale' must be one of"):
        napari_diffir.get_restorer("lanczos", scale=5)
    assert napari_diffir.get_restorer("lanczos", scale="4").info.scale == 4


def test_example_plugin_package_installs_and_registers(tmp_path):
    """docs/example-plugin is a real package: pip-install it into a target dir and list it."""
    root = os.path.join(os.path.dirname(__file__), "..", "docs", "example-plugin")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                    "--target", str(target), root], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    code = ("import numpy as np, napari_diffir as nd; "
            "x = np.random.default_rng(0).random((32, 32)).astype('float32'); "
            "y = nd.restore(x, 'unsharp', normalize='none', options={'amount': 2}); "
            "print([i.source for i in nd.list_restorers() if i.name == 'unsharp'][0], float(np.abs(y - x).max()) > 0)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "napari-diffir-unsharp 0.1.0 True"


def test_bundled_models_are_listed_first(fresh_registry):
    from napari_diffir.restorers import bundled

    infos = napari_diffir.list_restorers()
    shipped = [n for n in ("diffir-denoise", "diffir-sr4", "srdiff-sr4") if bundled.weights_path(n).is_file()]
    if not shipped:
        pytest.skip("no bundled weights in this checkout")
    assert sorted(i.name for i in infos[: len(shipped)]) == sorted(shipped)


_LIST_BUILTINS = """
import sys
{prelude}
import napari_diffir
names = sorted(i.name for i in napari_diffir.list_restorers() if i.source == "napari-diffir (built-in)")
print("torch" in sys.modules)
print(",".join(names))
"""
_BLOCK_TORCH = """
import importlib.abc
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.mark.parametrize("torch_importable", [True, False], ids=["torch", "no-torch"])
def test_listing_restorers_never_imports_torch(fresh_registry, torch_importable):
    """list_restorers() leaves torch out of sys.modules and lists every built-in, even without torch."""
    expected = sorted(i.name for i in napari_diffir.list_restorers() if i.source == "napari-diffir (built-in)")
    code = _LIST_BUILTINS.format(prelude="" if torch_importable else _BLOCK_TORCH)
    env = dict(os.environ, NAPARI_DIFFIR_LOAD_PLUGINS="")  # built-ins only: plugins may import torch
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", ",".join(expected)]
    assert {"diffir", "diffir-inpaint", "srdiff", "lanczos", "nlmeans", "tv"} <= set(expected)
