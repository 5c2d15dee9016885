"""Without the ``bioimageio`` extra every bioimage.io path says which extra to install (simulated absence)."""

from __future__ import annotations

import sys
import zipfile

import pytest

import napari_diffir
from napari_diffir.cli import main

HINT = "pip install 'napari-diffir[bioimageio]'"


@pytest.fixture
def no_bioimageio(monkeypatch):
    """Make ``import bioimageio.core`` fail as it does where the extra is not installed."""
    for name in ("bioimageio", "bioimageio.core", "bioimageio.spec"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def package(tmp_path):
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rdf.yaml", "type: model\n")
    return str(path)


def test_restorer_names_the_extra(no_bioimageio, package):
    with pytest.raises(ValueError, match=r"The 'bioimageio' restorer|Reading a bioimage.io package") as err:
        napari_diffir.get_restorer("bioimageio", weights=package)
    assert HINT in str(err.value)


def test_export_names_the_extra(no_bioimageio, tmp_path):
    with pytest.raises(ImportError, match=r"Exporting to bioimage.io needs the optional dependency bioimageio.core") as err:
        napari_diffir.export_bioimageio("diffir-denoise", tmp_path / "out.zip")
    assert HINT in str(err.value)
    assert not (tmp_path / "out.zip").exists()


@pytest.mark.parametrize("argv", [["info", "PKG"], ["export", "diffir-denoise", "OUT"]])
def test_cli_names_the_extra(no_bioimageio, package, tmp_path, capsys, argv):
    argv = [package if a == "PKG" else str(tmp_path / "out.zip") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert HINT in err and err.count("\n") == 1


def test_listing_still_works_without_the_extra(no_bioimageio):
    assert "bioimageio" in [i.name for i in napari_diffir.list_restorers()]
