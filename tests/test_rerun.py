"""``msakit train --config RUN/config.yaml`` reruns a saved configuration through the CLI: the
same settings give the same run; flags and ``--set`` still override; a file that is not an
msakit configuration is one line (more hostile cases in test_hostile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import run_cli

SMALL = ["--set", "feedforward=32", "--set", "common_dim=16", "--set", "specific_dim=16",
         "--set", "head_dim=16"]


@pytest.fixture(scope="module")
def first(tiny_bert, small_mosi_npz, tmp_path_factory) -> Path:
    """A one-seed CLGSI run with settings away from the preset's."""
    out = tmp_path_factory.mktemp("rerun") / "first"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--seeds", "3",
                    "--epochs", "1", "--batch", "8", "--out", str(out), "--quiet", *SMALL,
                    "--set", "gamma=0.3", "--set", "lr.audio=2e-3"]) == 0
    return out


def test_rerun_is_the_same_run(first, small_mosi_npz, tmp_path, capsys):
    again = tmp_path / "again"
    capsys.readouterr()
    assert run_cli(["train", "--config", str(first / "config.yaml"), "--data",
                    str(small_mosi_npz), "--out", str(again), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    # the same settings, word for word; the provenance is each run's own (its command line)
    settings, provenance = (again / "config.yaml").read_text().split("\nprovenance:\n")
    assert settings == (first / "config.yaml").read_text().split("\nprovenance:\n")[0]
    assert "--config" in yaml.safe_load(provenance)["command"]
    # same settings, same seed, same machine: the same numbers
    assert (again / "results.csv").read_text() == (first / "results.csv").read_text()


def test_flags_and_set_override_the_saved_settings(first, small_mosi_npz, tiny_bert, tmp_path):
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["reuse_memory"] is True  # the command line's speed settings were saved
    # A configuration saved by the Python API has them off; a rerun keeps what it says.
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({**saved, "reuse_memory": False}, sort_keys=False))
    out = tmp_path / "run"
    assert run_cli(["train", "--config", str(edited), "--model", "clgsi", "--data",
                    str(small_mosi_npz), "--out", str(out), "--quiet", "--seeds", "4",
                    "--batch", "6", "--set", "gamma=0.5", "--set", "fast_dropout=false"]) == 0
    rerun = yaml.safe_load((out / "config.yaml").read_text())
    changed = {k for k in saved if k != "provenance" and rerun[k] != saved[k]}
    assert changed == {"seeds", "batch_size", "model", "reuse_memory", "fast_dropout"}
    assert rerun["seeds"] == [4] and rerun["batch_size"] == 6
    assert rerun["reuse_memory"] is False and rerun["fast_dropout"] is False
    assert rerun["model"] == {**saved["model"], "gamma": 0.5}
    assert rerun["lr"]["audio"] == 2e-3 and rerun["amp"] == "off"
    assert (out / "seed-4" / "model.safetensors").is_file()


def test_a_run_folder_is_taken_for_its_config(first, small_mosi_npz, capsys):
    """--config RUN names the run's config.yaml; --out RUN is refused as for any train."""
    assert run_cli(["train", "--config", str(first), "--data", str(small_mosi_npz), "--out",
                    str(first), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--model", "conki"], "the run used --model clgsi, not conki"),
    (["--dataset", "sims"], "the run used --dataset mosi, not sims"),
    (["--preset", "authors"], "the run used --preset paper, not authors"),
    (["--set", "gamma=-1"], "clgsi gamma must be at least 0.0, got -1.0"),
])
def test_flags_that_contradict_the_config_are_one_line(first, small_mosi_npz, tmp_path, capsys,
                                                       extra, message):
    capsys.readouterr()
    assert run_cli(["train", "--config", str(first / "config.yaml"), "--data",
                    str(small_mosi_npz), "--out", str(tmp_path / "r"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content, message", [
    ("model_name: clgsi\ndataset: mosi\nbatch_size: big\n",
     "config.yaml: batch_size=big: expected a int, got str"),
    ("model_name: clgsi\ndataset: mosi\nlearning_rate_bert: 5.0e-5\n",
     "config.yaml: learning_rate_bert: unknown key"),
    ("model_name: clgsi\ndataset: mosi\nmodel: [1, 2]\n", "model is [1, 2], not a mapping"),
    ("model_name: clgsi\ndataset: mosi\nseeds: 7\n", "seeds: expected a list of integers"),
    ("model_name: clgsi\ndataset: mosi\nseeds: [1, 1]\n", "seeds repeat: 1 1"),
    ("model_name: nothing\ndataset: mosi\n", "unknown model 'nothing'"),
    ("model_name: [clgsi]\ndataset: mosi\n", "model_name is ['clgsi'], not a name"),
    ("datasetName: mosi\nlearning_rate: 0.001\n", "not an msakit config.yaml"),
    ("a: [unclosed\n", "not valid YAML"),
    ("", "not an msakit config.yaml"),
])
def test_foreign_or_broken_config_files(small_mosi_npz, tmp_path, capsys, content, message):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    capsys.readouterr()
    assert run_cli(["train", "--config", str(path), "--data", str(small_mosi_npz), "--out",
                    str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "r").exists()


def test_without_config_model_and_dataset_are_required(small_mosi_npz, tmp_path, capsys):
    assert run_cli(["train", "--dataset", "mosi", "--data", str(small_mosi_npz), "--out",
                    str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: msakit train: --model is required (or --config RUN/config.yaml)")


def test_a_config_on_other_data_is_refused(first, small_mosi_npz, tmp_path, capsys):
    """The config.yaml records the content of the data its run trained on; --data of other
    content is refused with one line naming both files (a copy of the same file is fine)."""
    from msakit.data.safe_format import read_npz, save_npz

    with open(small_mosi_npz, "rb") as f:
        content = read_npz(f, str(small_mosi_npz), mmap=False)
    content["test"]["regression_labels"] = -content["test"]["regression_labels"]
    other = save_npz(content, tmp_path / "other.npz")
    capsys.readouterr()
    assert run_cli(["train", "--config", str(first), "--data", str(other), "--out",
                    str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --config") and "\n" not in err, err
    assert str(small_mosi_npz) in err and str(other) in err
    assert not (tmp_path / "r").exists()
