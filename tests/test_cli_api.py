"""The command line and the Python API compute the same thing: one code path, one default per
setting (issue 21). The same seed trained both ways gives the same results and checkpoints."""

from __future__ import annotations

import torch
from conftest import best_checkpoint, run_cli

import msakit
from msakit.config import RunConfig
from msakit.rerun import load_run_config


def test_the_same_seed_gives_the_same_results_from_the_cli_and_the_api(small_mosi_npz, tiny_bert,
                                                                       tmp_path):
    common = {"seeds": [7], "epochs": 2, "batch": 8}
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--seeds", "7",
                    "--epochs", "2", "--batch", "8", "--out", str(cli_out), "--quiet"]) == 0
    msakit.train("clgsi", "mosi", small_mosi_npz, text_encoder=str(tiny_bert), out=api_out,
                  quiet=True, **common)
    assert (cli_out / "results.csv").read_text() == (api_out / "results.csv").read_text()
    cli_config = load_run_config(cli_out / "config.yaml").to_dict()
    api_config = load_run_config(api_out / "config.yaml").to_dict()
    assert cli_config == api_config
    assert cli_config["fast_dropout"] is True and cli_config["reuse_memory"] is True
    best = [best_checkpoint(out / "seed-7")["model"]
            for out in (cli_out, api_out)]
    assert best[0].keys() == best[1].keys()
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])


def test_speed_settings_have_one_default():
    config = RunConfig(model_name="clgsi", dataset="mosi")
    assert config.fast_dropout and config.reuse_memory
