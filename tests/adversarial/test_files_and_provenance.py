"""Reproducibility and ordinary file behaviour: the seed used is recorded, outputs get the
permissions any tool gives them, and metadata that contradicts the data is an error."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import tifffile

import napari_diffir as nd
from napari_diffir import Restorer, RestorerInfo
from napari_diffir.batch import restore_file
from napari_diffir.engine.plan import plan
from napari_diffir.engine.run import run
from napari_diffir.engine.settings import RestoreSettings

from .conftest import digest, one_line_error


class _UndeclaredNoise(Restorer):
    """Uses the engine's seeded noise without declaring itself stochastic (a plugin mistake)."""

    info = RestorerInfo(name="undeclared-noise", display_name="u", task="denoise", in_channels=1)

    def restore_tile(self, x, ctx):
        return x + 0.01 * ctx.noise(x)


def _description(path) -> dict:
    with tifffile.TiffFile(path) as tif:
        text = tif.pages.first.description
    if text.startswith("{"):
        return json.loads(text)
    import ast
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    desc = next(el.text for el in root.iter() if el.tag.endswith("Description") and el.text)
    try:
        return json.loads(desc)
    except ValueError:
        return ast.literal_eval(desc)


def test_the_cli_records_the_seed_it_drew_and_that_seed_repeats_the_run(tmp_path, cli):
    img = np.random.default_rng(0).integers(100, 4000, (32, 32)).astype(np.uint16)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, img)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    assert cli("restore", src, a, "-r", "diffir-denoise", "-q")[0] == 0
    seed = _description(a)["seed"]
    assert isinstance(seed, int)
    assert cli("restore", src, b, "-r", "diffir-denoise", "--seed", seed, "-q")[0] == 0
    assert np.array_equal(tifffile.imread(a), tifffile.imread(b))


def test_a_given_seed_is_recorded_even_for_a_restorer_that_declares_no_randomness():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    given = run(plan(img, _UndeclaredNoise(), RestoreSettings(seed=7)))
    assert given.provenance()["seed"] == 7


def test_an_undeclared_random_restorer_is_still_reproducible_without_a_seed():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    assert np.array_equal(nd.restore(img, _UndeclaredNoise()), nd.restore(img, _UndeclaredNoise()))


def test_a_streamed_output_records_its_seed(tmp_path):
    img = np.random.default_rng(0).integers(100, 4000, (48, 48)).astype(np.uint16)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, img)
    out = tmp_path / "out.tif"
    restore_file(str(src), str(out), _UndeclaredNoise(), seed=11, chunk=32, progress=False)
    assert _description(out)["seed"] == 11


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_new_output_gets_the_umask_permissions(tmp_path, tif, cli, umask_022, streamed):
    out = tmp_path / "o.tif"
    extra = ["--chunk", "32"] if streamed else []
    assert cli("restore", tif, out, "-r", "lanczos", "-q", *extra)[0] == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644


def test_a_replaced_output_keeps_its_mode(tmp_path, tif, cli, umask_022):
    out = tmp_path / "o.tif"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    assert cli("restore", tif, out, "-r", "lanczos", "-q", "--overwrite")[0] == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640 and tifffile.imread(out).shape == (128, 144)


def _ome_claiming_z(tmp_path, z: int):
    a = np.arange(32 * 40, dtype=np.uint16).reshape(32, 40)
    path = tmp_path / "claims.ome.tif"
    tifffile.imwrite(path, a, ome=True, metadata={"axes": "YX"})
    with tifffile.TiffFile(path, mode="r+") as tif:
        xml = tif.ome_metadata
        tif.pages[0].tags["ImageDescription"].overwrite(xml.replace('SizeZ="1"', f'SizeZ="{z}"'))
    return path


def test_ome_metadata_claiming_more_planes_than_the_file_holds_is_an_error(tmp_path, cli):
    path = _ome_claiming_z(tmp_path, 7)
    before = digest(path)
    code, err = cli("restore", path, tmp_path / "o.tif", "-r", "tv", "-q")
    line = one_line_error(err)
    assert code == 2 and "6 of 7 planes" in line and "contradicts" in line
    assert digest(path) == before and not (tmp_path / "o.tif").exists()


def test_the_lazy_reader_refuses_the_contradicting_metadata_too(tmp_path):
    path = _ome_claiming_z(tmp_path, 3)
    with pytest.raises(ValueError, match="2 of 3 planes"):
        restore_file(str(path), str(tmp_path / "o.ome.zarr"), "lanczos", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["claims.ome.tif"]


def test_sample_inputs_are_still_readable(tmp_path, cli):
    """The identity checks do not apply to the bundled ``sample:`` pseudo-paths."""
    code, _ = cli("restore", "sample:nuclei-lowres", tmp_path / "o.tif", "-r", "lanczos", "-q")
    assert code == 0 and (tmp_path / "o.tif").exists()
