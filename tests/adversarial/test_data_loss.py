"""Data loss: the input is never the output (by any path), two runs never share an output, and a
resumed run never mixes two versions of its input."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import tifffile
import zarr

from napari_diffir import Restorer, RestorerInfo
from napari_diffir.batch import restore_file, stream
from napari_diffir.io.identity import content_identity
from napari_diffir.io.outputs import OutputBusyError, OutputLock, publish_file

from ..test_io_stream import _Interrupt
from .conftest import digest, one_line_error


def test_symlink_alias_of_the_input_is_refused_with_overwrite(tmp_path, tif, cli):
    alias = tmp_path / "alias.tif"
    alias.symlink_to(tif)
    before = digest(tif)
    code, err = cli("restore", alias, tif, "-r", "tv", "--overwrite", "-q")
    assert code == 2 and "is the same as INPUT" in one_line_error(err)
    assert digest(tif) == before and tif.is_file() and not tif.is_symlink()


def test_output_through_a_symlinked_folder_is_the_input(tmp_path, tif, cli):
    (tmp_path / "view").symlink_to(tmp_path, target_is_directory=True)
    before = digest(tif)
    code, err = cli("restore", tif, tmp_path / "view" / "data.tif", "-r", "tv", "--overwrite", "-q")
    assert code == 2 and "same as INPUT" in one_line_error(err)
    assert digest(tif) == before


def test_hard_link_of_the_input_is_refused(tmp_path, tif, cli):
    link = tmp_path / "link.tif"
    os.link(tif, link)
    before = digest(tif)
    code, err = cli("restore", tif, link, "-r", "tv", "--overwrite", "-q")
    assert code == 2 and "same as INPUT" in one_line_error(err)
    assert digest(tif) == before


def _zarr_input(tmp_path, image):
    path = tmp_path / "in.zarr"
    zarr.save_array(str(path), image, zarr_format=2) if _zarr3() else zarr.save_array(str(path), image)
    return path


def _zarr3() -> bool:
    return int(zarr.__version__.split(".")[0]) >= 3


def test_streamed_zarr_symlink_alias_with_overwrite_is_refused(tmp_path, image):
    src = _zarr_input(tmp_path, image)
    alias = tmp_path / "alias.zarr"
    alias.symlink_to(src, target_is_directory=True)
    before = digest(src)
    with pytest.raises(ValueError, match="is the same as INPUT"):
        restore_file(str(alias), str(src), "lanczos", overwrite=True, progress=False)
    assert digest(src) == before and not os.path.exists(str(src) + ".partial")


def test_output_inside_the_input_folder_is_refused(tmp_path, image):
    src = _zarr_input(tmp_path, image)
    before = digest(src)
    with pytest.raises(ValueError, match="lies inside INPUT"):
        restore_file(str(src), str(src / "out.ome.zarr"), "lanczos", progress=False)
    assert digest(src) == before


def test_replacing_an_output_that_contains_the_input_is_refused(tmp_path, image):
    folder = tmp_path / "old.ome.zarr"
    folder.mkdir()
    inner = tmp_path / "old.ome.zarr" / "data.tif"
    tifffile.imwrite(inner, image)
    before = digest(inner)
    with pytest.raises(ValueError, match="lies inside OUTPUT .* would delete"):
        restore_file(str(inner), str(folder), "lanczos", overwrite=True, progress=False)
    assert digest(inner) == before


def test_a_second_run_into_a_locked_output_fails_before_any_work(tmp_path, tif):
    out = tmp_path / "out.ome.zarr"
    with OutputLock(str(out)):
        with pytest.raises(OutputBusyError, match="Another napari-diffir run is writing"):
            restore_file(str(tif), str(out), "lanczos", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["data.tif"]  # no output, no partial, no lock left


def test_the_loser_of_two_concurrent_runs_gets_exit_code_2(tmp_path, tif, cli):
    out = tmp_path / "out.tif"
    with OutputLock(str(out)):
        code, err = cli("restore", tif, out, "-r", "lanczos", "--chunk", "32", "-q")
    assert code == 2 and "Another napari-diffir run is writing" in one_line_error(err)
    assert not out.exists() and not (tmp_path / "out.tif.partial").exists()


def test_the_lock_refuses_a_second_holder_in_another_thread(tmp_path):
    out = str(tmp_path / "x.ome.zarr")
    errors = []
    with OutputLock(out):
        t = threading.Thread(target=lambda: errors.append(_try_lock(out)))
        t.start()
        t.join()
    assert errors == ["busy"]
    with OutputLock(out):  # released: the next run may take it
        pass
    assert not os.path.exists(out + ".lock")


def _try_lock(out):
    try:
        with OutputLock(out):
            return "acquired"
    except OutputBusyError:
        return "busy"


class _WritesOutput(Restorer):
    """A restorer that, like a concurrent run finishing first, creates the output mid-run."""

    info = RestorerInfo(name="writes-output", display_name="w", task="denoise", in_channels=None)
    target = ""

    def restore_tile(self, x, ctx):
        if not os.path.exists(self.target):
            open(self.target, "wb").write(b"the other run's result")
        return x.clone()


def test_an_output_that_appears_during_the_run_is_not_replaced(tmp_path, tif):
    out = tmp_path / "out.tif"
    r = _WritesOutput()
    r.target = str(out)
    with pytest.raises(FileExistsError, match="appeared while this run was writing it"):
        restore_file(str(tif), str(out), r, chunk=32, progress=False, scheduler="synchronous")
    assert out.read_bytes() == b"the other run's result"


def test_publish_file_never_replaces_without_overwrite(tmp_path):
    tmp, dst = tmp_path / "tmp", tmp_path / "dst"
    tmp.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="appeared while"):
        publish_file(str(tmp), str(dst), overwrite=False)
    assert dst.read_bytes() == b"old"


def test_resume_refuses_an_input_changed_with_the_same_size_and_mtime(tmp_path, image, monkeypatch):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.stack([image] * 2))
    out = str(tmp_path / "out.ome.zarr")
    monkeypatch.setattr(stream, "_store_block", _Interrupt(at=3))
    with pytest.raises(KeyboardInterrupt):
        restore_file(str(src), out, "lanczos", chunk=32, progress=False, scheduler="synchronous")
    monkeypatch.undo()
    st = os.stat(src)
    tifffile.imwrite(src, np.stack([image, image[::-1]]))  # same size, other pixels
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(src).st_size == st.st_size and os.stat(src).st_mtime_ns == st.st_mtime_ns
    with pytest.raises(ValueError, match="unfinished run with other settings .*input_identity"):
        restore_file(str(src), out, "lanczos", chunk=32, progress=False)


def test_sampled_identity_of_a_large_file_sees_a_change_in_a_sampled_block(tmp_path, monkeypatch):
    from napari_diffir.io import identity

    monkeypatch.setattr(identity, "FULL_HASH_LIMIT", 1024)
    path = tmp_path / "big.raw"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 8 * 2**20, np.uint8).tobytes())
    path.write_bytes(data)
    first = content_identity(str(path))
    offset = identity._offsets(len(data))[10]
    data[offset + 5] ^= 0xFF
    path.write_bytes(data)
    assert content_identity(str(path)) != first
    data[offset + 5] ^= 0xFF
    path.write_bytes(data)
    assert content_identity(str(path)) == first  # the fingerprint is of content, not of time


def test_identity_of_a_folder_sees_a_changed_chunk(tmp_path, image):
    src = _zarr_input(tmp_path, image)
    first = content_identity(str(src))
    z = zarr.open_array(str(src), mode="r+")
    z[0, 0] = z[0, 0] + 1
    assert content_identity(str(src)) != first
