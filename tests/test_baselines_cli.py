"""MISA and Self-MM through the command line: registered with MMSA's presets, trained (with
MMSA's loop settings: Adam, accumulated gradients, clipping by value) and evaluated."""

from __future__ import annotations

import pytest
from conftest import run_cli

from msakit import api
from msakit.models.registry import model_names, preset

MODELS = ("misa", "self_mm")


@pytest.mark.parametrize("model", MODELS)
def test_presets_are_mmsa_config(model):
    config = preset(model, "mosei")
    assert model in model_names()
    assert config.optimizer == "adam" and config.schedule == "constant"
    assert config.early_stop == 8 and not config.stop_at_horizon
    if model == "misa":
        assert config.batch_size == 64 and config.accumulate == 2 and config.clip_value == 0.8
        assert config.model["sim_weight"] == 0.8 and config.model["dropout"] == 0.5
        assert set(config.lr.values()) == {1e-4} and set(config.weight_decay.values()) == {0.0}
    else:
        assert config.batch_size == 32 and config.accumulate == 4
        assert config.lr == {"text": 5e-5, "audio": 5e-3, "vision": 1e-4, "other": 1e-3}
        assert config.weight_decay == {"text": 1e-3, "audio": 0.0, "vision": 0.0, "other": 1e-2}
        assert preset(model, "sims").model["label_bound"] == 1.0


@pytest.mark.parametrize("model", MODELS)
def test_trains_and_evaluates_through_the_cli(model, small_mosi_npz, tiny_bert, tmp_path,
                                              capsys):
    out = tmp_path / model
    assert run_cli(["train", "--model", model, "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--seeds", "3",
                    "--out", str(out), "--set", "epochs=2", "--set", "stop_at_horizon=true",
                    "--set", "batch_size=4", "--quiet"]) == 0
    ckpt = api.load_checkpoint(out / "seed-3" / "best.pt")
    assert type(ckpt.model).name == model and ckpt.config.optimizer == "adam"
    assert not any("labels" in k for k in ckpt.model.state_dict())
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-3" / "best.pt"), "--data",
                    str(small_mosi_npz)]) == 0
    assert "MAE" in capsys.readouterr().out


def test_a_bad_choice_is_one_error_line(small_mosi_npz, tiny_bert, tmp_path, capsys):
    assert run_cli(["train", "--model", "misa", "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--out",
                    str(tmp_path / "o"), "--set", "similarity=dann"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "similarity" in err[0]
