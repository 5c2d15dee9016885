"""Helpers of the adversarial cases: real files, their bytes before and after, and the CLI's answer."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import tifffile

from napari_diffir.cli import main


def digest(path) -> str:
    """The content of a file, or of every file under a folder (names included)."""
    h = hashlib.sha256()
    if os.path.isfile(path):
        h.update(open(path, "rb").read())
        return h.hexdigest()
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            p = os.path.join(root, name)
            h.update(os.path.relpath(p, path).encode())
            h.update(open(p, "rb").read())
    return h.hexdigest()


@pytest.fixture
def image():
    return np.random.default_rng(1).integers(100, 4000, (64, 72)).astype(np.uint16)


@pytest.fixture
def tif(tmp_path, image):
    path = tmp_path / "data.tif"
    tifffile.imwrite(path, image)
    return path


@pytest.fixture
def cli(capsys):
    """Run the CLI; returns (exit code, stderr), and asserts no traceback was printed."""

    def run(*argv):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return code, err

    return run


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-diffir ") and ": error: " in lines[0], err
    return lines[0]
