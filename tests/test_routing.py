"""Checkpoint routing reads the fields restorers declare, never their names."""

from __future__ import annotations

import pytest

import napari_diffir
from napari_diffir import RestorerInfo
from napari_diffir.routing import restorer_for_checkpoint


def _info(name, **kw):
    return RestorerInfo(name=name, display_name=name, task=kw.pop("task", "restore"), **kw)


@pytest.mark.parametrize("family,task,expected", [
    ("diffir", "sr", "diffir"),
    ("diffir", "deblur", "diffir"),  # not the bundled diffir-denoise: that is a fixed model
    ("diffir", "inpaint", "diffir-inpaint"),  # the specialised restorer wins
    ("srdiff", "super-resolution", "srdiff"),
    ("esrgan", "super-resolution", None),
])
def test_builtin_checkpoints_go_to_the_restorer_that_runs_them(family, task, expected):
    """Each family and task reaches the same built-in restorer as before routing was declared."""
    assert restorer_for_checkpoint(family, task) == expected


def test_a_plugin_takes_part_by_declaring_fields_whatever_its_name():
    """A plugin restorer named freely gets its family's checkpoints; bundled models are the fallback."""
    infos = [
        _info("bundled-sr", weights_policy="optional", bundled_weights="w.safetensors",
              checkpoint_family="acme", accepted_tasks=("sr",)),
        _info("anything", weights_policy="required", checkpoint_family="acme"),
        _info("acme-fill", weights_policy="required", checkpoint_family="acme", accepted_tasks=("fill",)),
        _info("acme", task="sr"),  # takes no weights: never a target, whatever its name says
    ]
    assert restorer_for_checkpoint("acme", "sr", infos) == "anything"
    assert restorer_for_checkpoint("acme", "fill", infos) == "acme-fill"
    assert restorer_for_checkpoint("acme", "sr", infos[:1]) == "bundled-sr"
    assert restorer_for_checkpoint("acme", "fill", infos[:1]) is None


def test_builtins_declare_their_weights_and_families():
    """Checkpoint restorers require weights, bundled models ship theirs, baselines take none."""
    infos = {i.name: i for i in napari_diffir.list_restorers()}
    for name, family in (("diffir", "diffir"), ("diffir-inpaint", "diffir"), ("srdiff", "srdiff")):
        assert (infos[name].weights_policy, infos[name].checkpoint_family) == ("required", family)
    for name in ("diffir-denoise", "diffir-sr4", "srdiff-sr4"):
        if name in infos:
            assert infos[name].weights_policy == "optional" and infos[name].bundled_weights.endswith(".safetensors")
    for name in ("lanczos", "nlmeans", "tv"):
        assert infos[name].weights_policy == "none" and infos[name].checkpoint_family is None


def test_inconsistent_declarations_are_refused():
    """An unknown policy, a family without weights or tasks without a family raise ValueError."""
    with pytest.raises(ValueError, match="weights_policy must be one of"):
        _info("x", weights_policy="maybe")
    with pytest.raises(ValueError, match="must take weights"):
        _info("x", checkpoint_family="diffir")
    with pytest.raises(ValueError, match="accepted_tasks needs a checkpoint_family"):
        _info("x", weights_policy="required", accepted_tasks=("sr",))
