"""TETFN, CENET and ALMT (thuiar/MMSA's repository) through the command line: trained by the
generic Trainer with their presets (TETFN's unimodal labels, CENET's bias group, ALMT's
schedule) and evaluated. Their equivalence with the repository's code: tests/test_mmsa_NAME.py."""

from __future__ import annotations

import pytest
from conftest import run_cli

from msakit import api

SMALL = {  # --set values that keep each model tiny
    "tetfn": ["dim=8", "heads=2", "audio_hidden=4", "vision_hidden=4", "fusion_dim=8",
              "text_dim=4", "audio_dim=4", "vision_dim=4"],
    "cenet": [],
    "almt": ["dim=16", "embedding_hidden=8", "embedding_heads_text=2", "embedding_heads_audio=1",
             "embedding_heads_vision=1", "head_dim=8", "text_heads=1", "ahl_depth=2",
             "hyper_heads=2", "fusion_hidden=8", "fusion_heads=1", "fusion_depth=1"],
}


@pytest.mark.parametrize("model", SMALL)
def test_trains_and_evaluates_through_the_cli(model, small_mosi_npz, tiny_bert, tmp_path,
                                              capsys):
    out = tmp_path / model
    sets = [x for s in [*SMALL[model], "epochs=2", "stop_at_horizon=true", "batch_size=8"]
            for x in ("--set", s)]
    assert run_cli(["train", "--model", model, "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--seeds", "3",
                    "--out", str(out), "--quiet", *sets]) == 0
    ckpt = api.load_checkpoint(out / "seed-3")
    assert type(ckpt.model).name == model
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-3"), "--data",
                    str(small_mosi_npz)]) == 0
    assert "MAE" in capsys.readouterr().out
