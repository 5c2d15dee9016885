"""Safe reading and unwrapping of checkpoint containers, and clear errors for bad files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from napari_diffir.checkpoints import (
    CheckpointError,
    UnsupportedCheckpointError,
    canonicalize,
    load_checkpoint,
    read_file,
)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/napari_diffir_pwned",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/napari_diffir_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"params": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="never executes code"):
        read_file(path)
    assert not os.path.exists(marker)


def test_missing_truncated_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_file(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_file(tmp_path)
    good = tmp_path / "good.pth"
    torch.save({"a": torch.zeros(1000)}, good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        read_file(bad)
    st = tmp_path / "bad.safetensors"
    st.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_file(st)


def test_containers_are_unwrapped():
    w = torch.ones(2)
    sd, path, _ = canonicalize({"params": {"x": w * 0}, "params_ema": {"x": w}})
    assert path == "params_ema" and torch.equal(sd["x"], w)
    sd, path, extra = canonicalize({"global_step": 400000, "optimizer_states": [], "state_dict": {"model": {"y": w}}})
    assert path == "state_dict/model" and list(sd) == ["y"] and extra["global_step"] == 400000
    sd, path, _ = canonicalize({"state_dict": {"generator.G.a": w, "generatorS1.G.a": w, "discriminator.b": w}})
    assert list(sd) == ["G.a"] and path.endswith("generator.")
    sd, _, _ = canonicalize({"module.a": w, "module.b": w})
    assert sorted(sd) == ["a", "b"]
    with pytest.raises(CheckpointError, match="No state dict found.*foo"):
        canonicalize({"foo": 1})


def test_unknown_architecture_names_families(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(UnsupportedCheckpointError, match="none of the known architectures.*diffir.*srdiff.*conv1.weight"):
        load_checkpoint(path)


def test_text_file_named_pth_is_a_checkpoint_error(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("just some notes\n")
    with pytest.raises(CheckpointError, match="notes.pth"):
        read_file(p)
