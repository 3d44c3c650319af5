"""The missing-modality task as a run setting every model uses, and evaluation at several missing
rates in one command.

* ``missing_rate`` / ``missing_seed``: declared run settings (``--set missing_rate=0.3`` sets
  every modality, ``missing_rate.audio=0.5`` one; presets merge key by key; config.yaml round
  trip).
* The data path: a run trained with a missing rate reports test metrics computed on the
  dropped split, and ``msakit evaluate`` of the run reproduces them (the run's rate), while
  ``--missing-rates 0`` evaluates the complete split.
* ``msakit evaluate --checkpoint RUN_A RUN_B --missing-rates 0 0.3 0.5 0.7``: one table, a row
  per run and rate, mean ± std over each run's seeds; TFR-Net trains through the command line
  with its reconstruction loss logged.
* The feature standardiser keeps dropped frames at zero; batches carry masks and the complete
  inputs through ``to``, ``as_dict`` and ``from_dict``.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from msakit import api
from msakit.config import RunConfig, apply_overrides
from msakit.config.presets import apply_preset_entry
from msakit.data.batching import Batch, collate
from msakit.data.missing import MissingRates, run_rates, with_missing_split
from msakit.data.mmsa import load_feature_file
from msakit.models.base import FeatureStandardizer
from msakit.models.registry import preset

TINY = {  # --set values that keep each model small
    "tfn": ["text_hidden=4", "text_out=4", "audio_hidden=4", "vision_hidden=4",
            "post_fusion_dim=4"],
    "tfr_net": ["dim=8", "heads=2", "layers=1", "temporal_heads=10", "fusion_text_hidden=4",
                "fusion_audio_hidden=4", "fusion_vision_hidden=4", "fusion_layers=1",
                "head_hidden=4"],
}


def train(model: str, data, out, *sets: str, seeds=("3",), text_encoder=None) -> None:
    argv = ["train", "--model", model, "--dataset", "mosi", "--data", str(data), "--seeds",
            *seeds, "--out", str(out), "--quiet"]
    if text_encoder is not None:
        argv += ["--text-encoder", str(text_encoder)]
    for s in [*TINY[model], "epochs=2", "stop_at_horizon=true", "batch_size=8", *sets]:
        argv += ["--set", s]
    assert run_cli(argv) == 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """23 / 8 / 8 MOSI-shaped samples with the precomputed text features (TFN reads them),
    audio/vision cut to 40 / 30 frames, as an npz."""
    from msakit.data.mmsa import convert_to_npz
    from msakit.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("missing_data")
    pkl = write_synthetic(root / "mosi.pkl", "mosi", (23, 8, 8), frames={"audio": 40,
                                                                         "vision": 30},
                          text_features=True)
    convert_to_npz(pkl, root / "mosi.npz")
    return root / "mosi.npz"


@pytest.fixture(scope="module")
def runs(data, tiny_bert, tmp_path_factory):
    """A TFN run (two seeds, no missing rate), a TFR-Net run (its preset's rate, 0.2) and a
    TFN run with half of every modality dropped (``--set missing_rate=0.5``)."""
    root = tmp_path_factory.mktemp("missing_runs")
    train("tfn", data, root / "tfn", seeds=("3", "4"))
    train("tfr_net", data, root / "tfr_net", text_encoder=tiny_bert)
    train("tfn", data, root / "tfn_missing", "missing_rate=0.5")
    return root


def test_missing_rate_is_a_run_setting():
    config = preset("tfn", "mosi")
    assert config.missing_rate == {"text": 0.0, "audio": 0.0, "vision": 0.0}
    assert not run_rates(config).drops
    every = apply_overrides(config, ["missing_rate=0.3"])
    assert every.missing_rate == {"text": 0.3, "audio": 0.3, "vision": 0.3}
    one = apply_overrides(every, ["missing_rate.audio=0.5", "missing_seed=7"])
    assert one.missing_rate == {"text": 0.3, "audio": 0.5, "vision": 0.3}
    assert run_rates(one) == MissingRates(0.3, 0.5, 0.3, seeds=(7, 7, 7))
    assert RunConfig.from_dict(one.to_dict()).missing_rate == one.missing_rate
    merged = apply_preset_entry(config, {"run": {"missing_rate": {"vision": 0.4}}})
    assert merged.missing_rate == {"text": 0.0, "audio": 0.0, "vision": 0.4}
    assert preset("tfr_net", "sims").missing_rate == dict.fromkeys(("text", "audio", "vision"),
                                                                   0.2)


def test_config_show_lists_each_modality_rate():
    """``msakit config show`` (and the "did you mean" of --set) know the keyed settings by the
    same list as --set (config.KEYED)."""
    from msakit.config import KEYED
    from msakit.config.listing import GROUP_KEYS, settings

    assert set(KEYED) == set(GROUP_KEYS)
    keys = {s.key for s in settings(preset("tfr_net", "mosi"))}
    assert {"missing_rate.text", "missing_rate.audio", "missing_rate.vision",
            "missing_seed"} <= keys


def test_a_split_with_masks_drops_positions_for_every_reader(data):
    """collate drops from text ids, audio, vision and the precomputed text features, and keeps
    the complete inputs; a rate of 0 is the split as it is."""
    split = load_feature_file(data, text_features=True).splits["train"]
    assert with_missing_split(split, MissingRates(0.0, 0.0, 0.0)).kept is None
    batch = collate(with_missing_split(split, MissingRates(0.5, 0.5, 0.5)), np.arange(8))
    plain = collate(split, np.arange(8))
    assert torch.equal(batch.complete["text_features"], plain.text_features)
    dropped = batch.kept["text"] == 0
    assert dropped.any() and (batch.text_features[dropped] == 0).all()
    assert torch.equal(batch.text_features[~dropped], plain.text_features[~dropped])
    frames = batch.kept["audio"] == 0
    assert (batch.audio[frames] == 0).all() and torch.equal(batch.complete["audio"], plain.audio)
    moved = Batch.from_dict(batch.to("cpu").as_dict())
    assert set(moved.kept) == {"text", "audio", "vision"}
    assert torch.equal(moved.complete["vision"], plain.vision)


def test_standardised_dropped_frames_stay_zero(data):
    split = load_feature_file(data).splits["train"]
    batch = collate(with_missing_split(split, MissingRates(0.0, 0.5, 0.5)), np.arange(8))
    standardizer = FeatureStandardizer(batch.audio.size(2), batch.vision.size(2))
    for name, buffer in standardizer.named_buffers():
        buffer.copy_(torch.full_like(buffer, 2.0 if name.endswith("scale") else 1.0))
    out = standardizer(batch)
    dropped = batch.kept["audio"] == 0
    assert (out.audio[dropped] == 0).all()
    valid = torch.arange(batch.audio.size(1))[None, :] < batch.audio_lengths[:, None]
    torch.testing.assert_close(out.complete["audio"][valid], (batch.complete["audio"][valid]
                                                              - 1.0) * 2.0)


@pytest.mark.parametrize(("run", "rate"), [("tfr_net", 0.2), ("tfn_missing", 0.5)])
def test_a_run_is_evaluated_at_its_own_rate(runs, data, capsys, run, rate):
    """Training's test metrics were computed on the dropped test split (TFR-Net's preset; a
    model on the file's text features, told to drop); ``evaluate`` of the run reproduces them;
    ``--missing-rates 0`` is the complete split."""
    ckpt = api.load_checkpoint(runs / run / "seed-3")
    assert run_rates(ckpt.config) == MissingRates(rate, rate, rate, seeds=(1111, 1111, 1111))
    trained = next(csv.DictReader(open(runs / run / "results.csv")))
    again = api.evaluate(runs / run, data)
    assert again["MAE"] == pytest.approx(float(trained["MAE"]), abs=1e-4)
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(runs / run), "--data", str(data),
                    "--missing-rates", str(rate), "0", "--out", "-", "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table[0]["metrics"]["MAE"]["mean"] == pytest.approx(again["MAE"], abs=1e-6)
    assert table[1]["metrics"]["MAE"]["mean"] != pytest.approx(again["MAE"], abs=1e-6)


def test_tfr_net_trains_with_its_reconstruction_logged(runs):
    """The reconstruction terms are logged every epoch and join the loss from the second."""
    first, second = json.loads((runs / "tfr_net" / "seed-3" / "history.json").read_text())
    for m in ("text", "audio", "vision"):
        assert first[f"train_reconstruction_{m}_loss"] > 0
    assert first["train_loss"] == pytest.approx(first["train_task_loss"])
    assert second["train_loss"] > second["train_task_loss"] + 1e-3


def test_a_missing_rate_table_for_two_models_from_one_command(runs, data, tmp_path,
                                                              capsys):
    rates = ["0", "0.3", "0.5", "0.7"]
    argv = ["evaluate", "--checkpoint", str(runs / "tfn"), str(runs / "tfr_net"), "--data",
            str(data), "--missing-rates", *rates]
    capsys.readouterr()
    assert run_cli(argv) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    assert lines[0].split(" | ")[:3] == ["| Run", "Model", "Missing rate"]
    body = [ln.split(" | ") for ln in lines[1:]]
    assert [(r[0], r[2]) for r in body] == [(f"| {m}", r) for m in ("tfn", "tfr_net")
                                            for r in rates]
    assert "±" in body[0][3] and "±" not in body[4][3]  # two seeds; one seed: the value
    assert run_cli([*argv, "--out", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [(r["model"], r["missing_rate"], r["seeds"]) for r in rows] == [
        (m, str(float(r)), n) for m, n in (("tfn", "2"), ("tfr_net", "1")) for r in rates]
    complete = api.evaluate(runs / "tfn", data)  # TFN trained without drops
    mean = next(r for r in complete if r["seed"] == "mean")
    assert float(rows[0]["MAE_mean"]) == pytest.approx(mean["MAE"], abs=1e-4)
    maes = [float(r["MAE_mean"]) for r in rows[:4]]
    assert len(set(maes)) == 4  # each rate drops other positions


def test_missing_rates_write_json(runs, data, tmp_path):
    out = tmp_path / "t.json"
    assert run_cli(["evaluate", "--checkpoint", str(runs / "tfn" / "seed-4"), "--data",
                    str(data), "--missing-rates", "0.5", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert (row["run"], row["model"], row["missing_rate"], row["seeds"]) == (
        "tfn/seed-4", "tfn", 0.5, 1)
    assert set(row["metrics"]) >= {"MAE", "Corr", "Mult_acc_7"}
    assert io.StringIO(out.read_text()).read().endswith("\n")
