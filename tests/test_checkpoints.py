"""Small checkpoints and runs that record themselves (issue 21, items 5 and 6).

- A finished seed keeps ``model.safetensors`` + ``config.json`` (read with no pickle), and
  ``last.pt`` only with ``--save last`` / ``--keep-last``; ``--save none`` keeps no weights.
- The folder predicts what the model in memory, and an earlier-format ``best.pt`` of the same
  weights, predict.
- A frozen text encoder is stored once per run folder, checked by its digest.
- ``train.log`` holds every line the command printed (epoch lines shown above the progress
  bar in a terminal), appended on ``--resume``; ``config.yaml`` has a ``provenance`` section.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import best_checkpoint, run_cli

from msakit import api
from msakit.core.errors import MsakitError
from msakit.training import pretrained, runs

SMALL = ["--set", "feedforward=32", "--set", "common_dim=16", "--set", "specific_dim=16",
         "--set", "head_dim=16"]


def train(data, bert, out, *extra: str, seeds=("1",)) -> list[str]:
    return ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
            "--text-encoder", str(bert), "--seeds", *seeds, "--epochs", "2", "--batch", "8",
            "--out", str(out), *SMALL, *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_mosi_npz, tiny_bert):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--quiet")) == 0
    return out


# --------------------------------------------------------------------------- what a seed keeps
def test_a_finished_seed_keeps_its_best_weights_only(run):
    seed = run / "seed-1"
    assert sorted(p.name for p in seed.iterdir()) == ["config.json", "history.json",
                                                      "model.safetensors"]
    description = json.loads((seed / "config.json").read_text())
    assert description["format"] == pretrained.FORMAT
    assert description["config"]["model_name"] == "clgsi"
    assert set(description["dims"]) >= {"audio", "vision"}
    assert description["text_encoder_config"]["hidden_size"] == 32
    assert "shared_weights" not in description  # CLGSI trains its text encoder
    history = json.loads((seed / "history.json").read_text())
    best = best_checkpoint(seed)
    best_epoch = min(history, key=lambda r: r["valid_MAE"])
    assert best["epoch"] == best_epoch["epoch"] and best["seed"] == 1
    assert best["valid"]["MAE"] == best_epoch["valid_MAE"]


def test_the_folder_loads_with_no_pickle_and_predicts_as_before(run, small_mosi_npz, tmp_path,
                                                                monkeypatch):
    """Predictions from the safetensors folder equal those of the model in memory and of an
    earlier-format best.pt holding the same weights; reading the folder unpickles nothing."""
    legacy = tmp_path / "best.pt"
    state = best_checkpoint(run / "seed-1")
    torch.save({**state, "format": "msakit-checkpoint-1"}, legacy)
    from_pt = api.predict(legacy, small_mosi_npz, "test")

    def no_pickle(*args, **kwargs):
        raise AssertionError("a safetensors checkpoint was unpickled")

    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    for path in (run, run / "seed-1", run / "seed-1" / "model.safetensors",
                 run / "seed-1" / "config.json"):
        assert api.predict(path, small_mosi_npz, "test") == from_pt, path
    monkeypatch.undo()
    assert api.evaluate(run / "seed-1", small_mosi_npz, "test") == api.evaluate(
        legacy, small_mosi_npz, "test")


def test_a_model_in_memory_saved_and_loaded_predicts_the_same(run, small_mosi_npz, tmp_path):
    """save_pretrained of a model in memory, then load_checkpoint: the same predictions, bit
    for bit."""
    from msakit.training.trainer import predict_split

    memory = api.load_checkpoint(run / "seed-1").model
    with torch.no_grad():  # weights of its own, not the checkpoint's
        for p in memory.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = best_checkpoint(run / "seed-1")
    description = {k: state[k] for k in ("config", "dims", "text_encoder_config")}
    pretrained.save_pretrained(tmp_path / "seed-9", memory.state_dict(), description=description,
                               meta={"epoch": 3, "seed": 9, "valid": {"MAE": 1.0}})
    loaded = api.load_checkpoint(tmp_path / "seed-9")
    assert loaded.state["epoch"] == 3 and loaded.state["valid"] == {"MAE": 1.0}
    split = api.load_data(small_mosi_npz, 30522).splits["test"]
    a, _ = predict_split(memory, split, batch_size=8, with_loss=False)
    b, _ = predict_split(loaded.model, split, batch_size=8, with_loss=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("flags", "kept"), [
    (["--save", "last"], {"config.json", "history.json", "model.safetensors", "last.pt"}),
    (["--keep-last"], {"config.json", "history.json", "model.safetensors", "last.pt"}),
    (["--save", "none"], {"history.json"}),
])
def test_save_chooses_what_a_finished_seed_keeps(flags, kept, small_mosi_npz, tiny_bert,
                                                 tmp_path):
    out = tmp_path / "run"
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--quiet", *flags)) == 0
    assert {p.name for p in (out / "seed-1").iterdir()} == kept
    assert [line.split(",")[0] for line in (out / "results.csv").read_text().splitlines()] == [
        "seed", "1", "mean", "std"]


def test_keep_last_and_save_none_exclude_each_other(small_mosi_npz, tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--keep-last", "--save", "none")) == 2
    assert "--keep-last and --save none exclude each other" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(MsakitError, match="save='all': one of best, last, none"):
        api.train("clgsi", "mosi", small_mosi_npz, out=out, save="all")


def test_a_resumed_run_takes_finished_seeds_from_results(small_mosi_npz, tiny_bert, tmp_path,
                                                         capsys):
    """--save none then --resume: the finished seed has no weights and is not trained again."""
    out = tmp_path / "run"
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--quiet", "--save", "none")) == 0
    before = (out / "results.csv").read_text()
    history = (out / "seed-1" / "history.json").stat().st_mtime_ns
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--save", "none", "--resume")) == 0
    assert "seed 1 epoch" not in capsys.readouterr().err  # nothing trained
    assert (out / "results.csv").read_text() == before
    assert (out / "seed-1" / "history.json").stat().st_mtime_ns == history


# --------------------------------------------------------------------------- frozen encoders
@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, small_mosi_npz, tiny_bert):
    """Two seeds of a CLGSI whose text encoder is not trained (as ConKI's frozen BERT)."""
    out = tmp_path_factory.mktemp("frozen") / "run"
    build = runs.build_model

    def frozen(*args, **kwargs):
        model = build(*args, **kwargs)
        model.text_encoder.requires_grad_(False)
        return model

    with pytest.MonkeyPatch.context() as m:
        m.setattr(runs, "build_model", frozen)
        assert run_cli(train(small_mosi_npz, tiny_bert, out, "--quiet", seeds=("1", "2"))) == 0
    return out


def test_a_frozen_text_encoder_is_stored_once_per_run(frozen_run, tiny_bert, small_mosi_npz):
    [shared] = list(frozen_run.glob("text_encoder-*.safetensors"))
    from transformers import AutoModel

    pretrained_bert = AutoModel.from_pretrained(tiny_bert).state_dict()
    for seed in ("seed-1", "seed-2"):
        description = json.loads((frozen_run / seed / "config.json").read_text())
        assert description["shared_weights"]["file"] == shared.name
        from safetensors import safe_open

        with safe_open(str(frozen_run / seed / "model.safetensors"), "pt") as f:
            assert not [k for k in f.keys() if k.startswith("text_encoder.")]
        weights = best_checkpoint(frozen_run / seed)["model"]
        for key, value in pretrained_bert.items():  # the unmodified pretrained encoder
            if f"text_encoder.{key}" in weights:
                assert torch.equal(weights[f"text_encoder.{key}"], value), key
        api.evaluate(frozen_run / seed, small_mosi_npz, "test")  # loads and predicts


def test_a_damaged_or_missing_shared_encoder_is_one_line(frozen_run, small_mosi_npz, tmp_path,
                                                         capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(frozen_run, copy)
    [shared] = list(copy.glob("text_encoder-*.safetensors"))
    data = bytearray(shared.read_bytes())
    data[-1] ^= 1
    shared.write_bytes(bytes(data))
    argv = ["evaluate", "--checkpoint", str(copy / "seed-1"), "--data", str(small_mosi_npz)]
    assert run_cli(argv) == 2
    assert "its content is not the one" in capsys.readouterr().err
    shared.unlink()
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "copy the whole run folder" in err and err.count("\n") == 1


@pytest.mark.parametrize(("damage", "message"), [
    (lambda s: (s / "config.json").write_text("{not json"), "not a readable msakit config.json"),
    (lambda s: (s / "config.json").write_text('{"format": "other"}'), "not an msakit config"),
    (lambda s: (s / "config.json").unlink(), "needs the config.json"),
    (lambda s: (s / "model.safetensors").write_bytes(
        (s / "model.safetensors").read_bytes()[:5000]), "not a readable safetensors file"),
])
def test_a_damaged_folder_is_one_line(damage, message, run, small_mosi_npz, tmp_path, capsys):
    import shutil

    seed = tmp_path / "seed-1"
    shutil.copytree(run / "seed-1", seed)
    damage(seed)
    target = seed / "model.safetensors" if not (seed / "config.json").exists() else seed
    assert run_cli(["evaluate", "--checkpoint", str(target), "--data",
                    str(small_mosi_npz)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


# --------------------------------------------------------------------------- train.log
def test_train_log_holds_every_line_printed(small_mosi_npz, tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(train(small_mosi_npz, tiny_bert, out)) == 0
    printed = capsys.readouterr()
    log = (out / "train.log").read_text()
    assert log == printed.err + printed.out  # the run's lines, then the results table
    assert re.search(r"^seed 1 epoch 2/2: loss ", log, re.M)
    assert "wrote " in log and "mean" in log
    # --resume appends (nothing left to train: the finished seed's row is reused)
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--resume")) == 0
    again = capsys.readouterr()
    assert (out / "train.log").read_text() == log + again.err + again.out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_terminal_epoch_lines_show_above_the_bar(small_mosi_npz, tiny_bert, tmp_path,
                                                      monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = tmp_path / "run"
    assert run_cli(train(small_mosi_npz, tiny_bert, out)) == 0
    shown, log = terminal.getvalue(), (out / "train.log").read_text()
    for epoch in (1, 2):
        line = re.search(rf"seed 1 epoch {epoch}/2: loss .*", log).group(0)
        assert line in shown
    assert "seed 1 epoch 1" in shown and "\r" in shown  # the bar was drawn on the terminal
    assert "\r" not in log  # and never reached the log


# --------------------------------------------------------------------------- provenance
def test_config_yaml_records_where_the_run_came_from(run, small_mosi_npz):
    saved = yaml.safe_load((run / "config.yaml").read_text())
    record = saved["provenance"]
    assert record["command"].startswith("msakit train --model clgsi")
    assert record["data_path"] == str(small_mosi_npz.resolve())
    assert saved["data"]["blake2b"]  # the content hash, recorded once as the run's data
    assert set(record["versions"]) == {"msakit", "torch", "transformers", "numpy", "python"}
    assert record["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert record["host"]
    assert record["started"] <= record["finished"]
    assert re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"])  # the tests run in a clone


def test_provenance_without_git_is_left_out(monkeypatch, tmp_path):
    from msakit.training import provenance

    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert provenance.git_commit() is None
    assert provenance.git_commit(tmp_path) is None
    monkeypatch.undo()
    assert provenance.git_commit(tmp_path) is None  # git, but no repository
    # a repository that does not track msakit (an installed msakit inside a project's clone)
    import subprocess

    (tmp_path / "a.txt").write_text("a")
    for argv in (["init", "-q"], ["add", "a.txt"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"]):
        subprocess.run(["git", "-C", str(tmp_path), *argv], check=True)
    assert provenance.git_commit(tmp_path) is None


def test_a_resumed_run_keeps_its_first_start(small_mosi_npz, tiny_bert, tmp_path):
    out = tmp_path / "run"
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--quiet")) == 0
    first = yaml.safe_load((out / "config.yaml").read_text())["provenance"]
    assert run_cli(train(small_mosi_npz, tiny_bert, out, "--quiet", "--resume")) == 0
    record = yaml.safe_load((out / "config.yaml").read_text())["provenance"]
    assert record["started"] == first["started"] and record["command"] == first["command"]
    [resumed] = record["resumed"]
    assert "--resume" in resumed["command"] and resumed["started"] >= first["started"]
