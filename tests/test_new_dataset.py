"""A data set added from this file alone (docs/architecture.md, "Where a new thing goes"): one
``DatasetSpec`` entry in ``msakit.config.datasets.DATASETS``, and the command line offers it,
``synth`` writes files shaped like it, ``train`` checks a file against it and scores with its
metric family, and its checkpoints load back.

The three other additions are shown the same way: a model in ``tests/test_registry.py`` (and as
a plugin, ``tests/test_plugins.py``), a command in ``tests/test_commands.py``, a run setting in
``tests/test_config_flow.py``."""

from __future__ import annotations

import csv

import pytest
import yaml
from conftest import run_cli

from msakit import api
from msakit.config.datasets import DATASETS, MOSI_FAMILY, DatasetSpec, FileShape
from msakit.data.synthetic import write_synthetic
from msakit.evaluation.metrics import metric_names

TOY = DatasetSpec(
    name="toyset", title="Toy set", label_range=(-2.0, 2.0), metric_family=MOSI_FAMILY,
    language="en", text_encoder="bert-base-uncased", presets_from="mosi",
    shape=FileShape(text_len=8, audio_len=12, audio_dim=7, vision_len=10, vision_dim=9,
                    split_sizes=(12, 4, 4), vocab_size=30522),
)
SMALL_TFN = ["--set", "text_hidden=8", "--set", "audio_hidden=4", "--set", "vision_hidden=4",
             "--set", "text_out=4", "--set", "post_fusion_dim=8"]


@pytest.fixture
def toyset(monkeypatch):
    monkeypatch.setitem(DATASETS, TOY.name, TOY)
    return TOY


def test_a_data_set_added_in_one_entry_trains_through_the_cli(toyset, tmp_path):
    """``--dataset toyset`` is a choice of the command line (argparse refuses others)."""
    data, out = tmp_path / "toy.pkl", tmp_path / "run"
    assert run_cli(["synth", "--like", "toyset", "--n", "12", "4", "4", "--out", str(data),
                    "--text-features"]) == 0
    assert run_cli(["train", "--model", "tfn", "--dataset", "toyset", "--data", str(data),
                    "--seeds", "1", "--epochs", "1", "--batch", "6", "--out", str(out),
                    "--quiet", *SMALL_TFN]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["dataset"] == "toyset"
    with open(out / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["seed", *metric_names(toyset)]  # its metric family's table
    ckpt = api.load_checkpoint(out / "seed-1")
    assert ckpt.config.spec == toyset and ckpt.dims.audio == 7 and ckpt.dims.vision == 9


def test_a_file_of_another_data_set_is_refused_for_the_new_one(toyset, tmp_path, capsys):
    """The spec is what the data checks read: a MOSI file (labels up to 3, MOSI's widths) is
    not a Toy-set file."""
    mosi = write_synthetic(str(tmp_path / "mosi.pkl"), "mosi", (6, 2, 2), text_features=True,
                           frames={"audio": 4, "vision": 4})
    assert run_cli(["train", "--model", "tfn", "--dataset", "toyset", "--data", str(mosi),
                    "--out", str(tmp_path / "run"), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "--dataset toyset expects audio 7, vision 9, labels in [-2, 2]" \
        in errors[0]
    assert not (tmp_path / "run").exists()
