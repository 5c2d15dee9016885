"""Growing a DiffIR by whole blocks: the deeper model starts as exactly the trained shallower one."""

from __future__ import annotations

import json

import pytest
import torch

from napari_diffir.cli import main
from napari_diffir.models.diffir import DiffIRS2
from napari_diffir.training.grow import grow_state_dict

SMALL = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=0, n_encoder_res=0, n_feats=4,
             heads=[1, 1, 1, 1], inp_channels=1, out_channels=1, task="deblur")


def _net(**changes) -> DiffIRS2:
    return DiffIRS2(**{**SMALL, **changes}).eval()


def test_grown_model_restores_exactly_like_the_model_it_grew_from():
    torch.manual_seed(0)
    small = _net()
    for p in small.parameters():  # trained-looking weights: no zeros, no symmetries
        p.data.add_(torch.randn_like(p) * 0.05)
    torch.manual_seed(1)
    deep = _net(num_blocks=[2, 1, 3, 2], num_refinement_blocks=2)
    grown, depths = grow_state_dict(small.state_dict(), deep.state_dict())
    deep.load_state_dict(grown, strict=True)
    assert depths == {"G.decoder_level1": [1, 2], "G.decoder_level3": [1, 3], "G.encoder_level1": [1, 2],
                      "G.encoder_level3": [1, 3], "G.latent": [1, 2], "G.refinement": [0, 2]}
    assert deep.G.encoder_level3[2].attn.project_out.weight.abs().max() == 0
    assert deep.G.encoder_level3[2].attn.qkv.weight.abs().max() > 0  # the rest of a new block is initialised
    x = torch.rand(1, 1, 32, 40)
    noise = torch.randn(1, small.ipr_dim)
    with torch.inference_mode():
        torch.testing.assert_close(deep.restore(x, noise=noise), small.restore(x, noise=noise), rtol=0, atol=1e-6)


def test_grow_refuses_what_is_not_whole_added_blocks():
    small = _net().state_dict()
    with pytest.raises(ValueError, match="keeps widths: G.patch_embed.proj.weight"):
        grow_state_dict(small, _net(dim=16).state_dict())
    with pytest.raises(ValueError, match="cannot remove them"):
        grow_state_dict(_net(num_blocks=[2, 1, 1, 1]).state_dict(), _net().state_dict())
    without_head = {k: v for k, v in small.items() if not k.startswith("G.output")}
    with pytest.raises(ValueError, match="transformer blocks only, but G.output.weight"):
        grow_state_dict(without_head, _net().state_dict())


def test_train_grow_fine_tunes_a_deeper_model_from_a_shallower_one(tmp_path, capsys):
    """``--grow`` lets ``--init`` weights have fewer blocks; the card says which levels grew, and
    the added blocks' output projections leave zero once trained. Without it the error says so."""
    tiny = ["--dim", "8", "--n-encoder-res", "0", "--n-feats", "4", "--heads", "1,1,1,1",
            "--data", "builtin:synthetic", "--n-synthetic", "3", "--patch-size", "16", "--val-every", "0",
            "--batch-size", "2", "--val-count", "2", "--threads", "1", "--quiet", "--seed", "3"]
    s1, s2, deep = tmp_path / "s1", tmp_path / "s2", tmp_path / "deep"
    assert main(["train", "diffir", "--stage", "1", "--steps", "1", "--out", str(s1), "--num-blocks", "1,1,1,1",
                 "--refinement", "0", *tiny]) == 0
    assert main(["train", "diffir", "--stage", "2", "--s1", str(s1 / "best.safetensors"), "--steps", "1",
                 "--out", str(s2), "--num-blocks", "1,1,1,1", "--refinement", "0", *tiny]) == 0
    deeper = ["--num-blocks", "1,2,1,1", "--refinement", "1", "--init", str(s2 / "best.safetensors")]
    capsys.readouterr()
    assert main(["train", "diffir", "--stage", "2", "--steps", "1", "--out", str(tmp_path / "bad"), *deeper, *tiny]) == 2
    assert "(--grow starts a deeper model from a shallower one)" in capsys.readouterr().err
    assert main(["train", "diffir", "--stage", "2", "--grow", "--s1", str(s1 / "best.safetensors"), "--steps", "1",
                 "--out", str(tmp_path / "bad"), "--num-blocks", "1,1,1,1", "--refinement", "0", *tiny]) == 2
    assert "--grow needs --init" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    assert main(["train", "diffir", "--stage", "2", "--grow", "--steps", "3", "--out", str(deep), "--lr", "1e-3",
                 *deeper, *tiny]) == 0
    card = json.loads((deep / "best.json").read_text())
    assert card["initialised_from"]["grown_blocks"] == {"G.decoder_level2": [1, 2], "G.encoder_level2": [1, 2],
                                                         "G.refinement": [0, 1]}
    assert "--grow" in card["training"]["command"]
    from safetensors.torch import load_file

    trained = load_file(str(deep / "last.safetensors"))
    assert trained["G.encoder_level2.1.ffn.project_out.weight"].abs().max() > 0
    assert trained["G.refinement.0.attn.project_out.weight"].abs().max() > 0


def test_grown_lr_scale_makes_only_the_added_blocks_learn_faster(tmp_path, capsys):
    """Adam's first step moves every weight by about its learning rate, so after one step the
    added blocks have moved ``--grown-lr-scale`` times as far as the blocks they grew from."""
    from safetensors.torch import load_file

    tiny = ["--dim", "8", "--n-encoder-res", "0", "--n-feats", "4", "--heads", "1,1,1,1", "--refinement", "0",
            "--data", "builtin:synthetic", "--n-synthetic", "3", "--patch-size", "16", "--val-every", "0",
            "--batch-size", "2", "--val-count", "2", "--threads", "1", "--quiet", "--seed", "3"]
    s1, s2, deep = tmp_path / "s1", tmp_path / "s2", tmp_path / "deep"
    assert main(["train", "diffir", "--stage", "1", "--steps", "1", "--out", str(s1), "--num-blocks", "1,1,1,1",
                 *tiny]) == 0
    assert main(["train", "diffir", "--stage", "2", "--s1", str(s1 / "best.safetensors"), "--steps", "1",
                 "--out", str(s2), "--num-blocks", "1,1,1,1", *tiny]) == 0
    init = ["--num-blocks", "2,1,1,1", "--init", str(s2 / "best.safetensors")]
    capsys.readouterr()
    assert main(["train", "diffir", "--stage", "2", "--grown-lr-scale", "10", "--steps", "1",
                 "--out", str(tmp_path / "bad"), *init, *tiny]) == 2
    assert "--grown-lr-scale applies to the blocks --grow adds" in capsys.readouterr().err
    for bad in ("0", "-2", "inf", "nan"):
        assert main(["train", "diffir", "--stage", "2", "--grow", "--grown-lr-scale", bad, "--steps", "1",
                     "--out", str(tmp_path / "bad"), *init, *tiny]) == 2
        assert f"--grown-lr-scale must be a positive number, but got {float(bad)}" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    assert main(["train", "diffir", "--stage", "2", "--grow", "--grown-lr-scale", "100", "--steps", "1",
                 "--lr", "1e-5", "--out", str(deep), *init, *tiny]) == 0
    before, after = load_file(str(s2 / "best.safetensors")), load_file(str(deep / "last.safetensors"))
    old = max((after[k] - v).abs().max().item() for k, v in before.items() if v.is_floating_point())
    new = after["G.encoder_level1.1.attn.project_out.weight"].abs().max().item()  # started at zero
    assert 0 < old <= 1.01e-5
    assert 0.5e-3 < new <= 1.01e-3
    card = json.loads((deep / "best.json").read_text())
    assert card["initialised_from"]["grown_lr_scale"] == 100.0
