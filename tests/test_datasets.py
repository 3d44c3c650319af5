"""Data sets as data: the DatasetSpec registry, CH-SIMS v2, custom data sets (spec files and
``--label-range``) through the command line, and aligned feature files."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import best_checkpoint, run_cli, write_short_synthetic

from msakit.config.datasets import (
    CUSTOM,
    DATASETS,
    MOSI_FAMILY,
    SIMS_FAMILY,
    custom_spec,
    dataset_names,
    dataset_spec,
    read_spec_file,
    resolve_spec,
)
from msakit.core.errors import MsakitError
from msakit.data.mmsa import check_dataset, load_feature_file
from msakit.data.synthetic import make_synthetic
from msakit.evaluation.metrics import MOSI_METRICS, SIMS_METRICS, compute_metrics, metric_names

# --------------------------------------------------------------------------- the registry


def test_every_named_spec_is_complete_and_round_trips():
    assert dataset_names() == ["mosi", "mosei", "sims", "simsv2"]
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.title
        low, high = spec.label_range
        assert low < 0 < high and spec.label_scale == max(-low, high)
        assert spec.metric_family in (MOSI_FAMILY, SIMS_FAMILY)
        assert spec.presets_from in DATASETS
        assert spec.shape is not None and len(spec.shape.split_sizes) == 3
        assert dataset_spec(name) is spec and dataset_spec(spec) is spec
        assert resolve_spec(name, None) is spec
    with pytest.raises(MsakitError, match="unknown dataset 'iemocap'"):
        dataset_spec("iemocap")
    with pytest.raises(MsakitError, match="needs a data set spec"):
        resolve_spec(CUSTOM, None)
    with pytest.raises(MsakitError, match="only for --dataset custom"):
        resolve_spec("mosi", {"label_range": [-3, 3]})


def test_simsv2_is_mmsa_s_sims_v2():
    """MMSA's CH-SIMS v2(s): BERT-Chinese ids, eGeMAPS audio 25, OpenFace vision 177, 50/925/232
    frames, 2722/647/1034 clips, labels in [-1, 1] with unimodal labels, SIMS metrics."""
    spec = dataset_spec("simsv2")
    shape = spec.shape
    assert (shape.text_len, shape.audio_len, shape.vision_len) == (50, 925, 232)
    assert (shape.audio_dim, shape.vision_dim) == (25, 177)
    assert shape.split_sizes == (2722, 647, 1034) and shape.vocab_size == 21128
    assert spec.label_range == (-1.0, 1.0) and spec.language == "zh" and spec.unimodal_labels
    assert metric_names("simsv2") == SIMS_METRICS
    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(-1, 1, 200) / 0.2) * 0.2
    predictions = labels + rng.normal(0, 0.3, 200)
    assert compute_metrics(predictions, labels, "simsv2") == compute_metrics(
        predictions, labels, "sims"
    )


def test_synthetic_simsv2_file_fits_its_spec_and_is_told_from_sims(tmp_path):
    path = write_short_synthetic(tmp_path / "v2.pkl", "simsv2", (6, 3, 3),
                                 {"audio": 40, "vision": 30})
    ff = load_feature_file(path, vocab_size=dataset_spec("simsv2").shape.vocab_size)
    assert (ff.audio_dim, ff.vision_dim, ff.text_len) == (25, 177, 50)
    assert set(ff.splits["train"].unimodal_labels) == {"T", "A", "V"}
    check_dataset(ff, "simsv2")
    with pytest.raises(MsakitError, match="looks like SIMS v2 .*--dataset sims expects audio 33"):
        check_dataset(ff, "sims")
    with pytest.raises(MsakitError, match="looks like SIMS v2"):
        check_dataset(ff, "mosi")


def test_intervals_follow_the_spec():
    labels = np.array([-3.0, -2.6, -0.4, 0.0, 0.6, 2.5, 3.0], dtype=np.float32)
    classes, names = dataset_spec("mosi").intervals(labels)
    assert names == ["-3", "-2", "-1", "0", "+1", "+2", "+3"]
    assert classes.tolist() == [0, 0, 3, 3, 4, 5, 6]  # np.round: 2.5 -> 2 (half to even)
    classes, names = dataset_spec("simsv2").intervals(np.array([-1.0, -0.1, 0.0, 0.2, 0.8]))
    assert names[0] == "negative" and len(names) == 5
    assert classes.tolist() == [0, 1, 2, 3, 4]
    classes, names = custom_spec((-2, 2)).intervals(np.array([-2.0, -0.4, 1.6, 2.0]))
    assert names == ["-2", "-1", "0", "+1", "+2"] and classes.tolist() == [0, 2, 4, 4]


# --------------------------------------------------------------------------- custom specs
def test_the_metric_family_follows_the_label_range():
    """SIMS's metrics when every label lies in [-1, 1], MOSI's otherwise; the scale H is the
    largest |bound| and the presets are those of the family's first named data set."""
    for label_range, family, presets in (((-3, 3), MOSI_FAMILY, "mosi"),
                                         ((-1, 1), SIMS_FAMILY, "sims"),
                                         ((-0.5, 1), SIMS_FAMILY, "sims"),
                                         ((-2, 5), MOSI_FAMILY, "mosi")):
        spec = custom_spec(label_range)
        assert spec.metric_family == family and spec.presets_from == presets
        assert spec.label_scale == max(abs(v) for v in label_range)
        assert metric_names(spec) == (SIMS_METRICS if family == SIMS_FAMILY else MOSI_METRICS)
    assert custom_spec((-1, 1), metric_family=MOSI_FAMILY).metric_family == MOSI_FAMILY
    assert custom_spec((-1, 1), language="zh").text_encoder == "bert-base-chinese"
    assert custom_spec((-3, 3)).text_encoder == "bert-base-uncased"


def test_a_custom_spec_travels_as_plain_data():
    spec = custom_spec((-2, 2), title="My corpus", text_encoder="some/bert", label_scale=2.5)
    data = yaml.safe_load(yaml.safe_dump(spec.to_dict()))
    assert resolve_spec(CUSTOM, data) == spec
    assert resolve_spec(CUSTOM, spec.spec_file()) == spec


@pytest.mark.parametrize(
    "content, message",
    [
        ("language: en\n", "label_range is missing"),
        ("label_range: [1, 5]\n", r"must hold 0 inside \(LOW < 0 < HIGH\)"),
        ("label_range: [-3]\n", "two numbers"),
        ("label_range: [-3, x]\n", "two numbers"),
        ("label_range: [-.inf, 3]\n", "finite"),
        ("label_range: [-3, 3]\nlabels: 7\n", "unknown key.*labels"),
        ("label_range: [-3, 3]\nmetric_family: iemocap\n", "metric_family must be one of"),
        ("label_range: [-3, 3]\nlanguage: fr\n", "language must be one of en, zh"),
        ("label_range: [-3, 3]\ntext_encoder: ''\n", "text_encoder must be a non-empty"),
        ("label_range: [-3, 3]\nlabel_scale: -1\n", "label_scale must be a number > 0"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("label_range: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_spec_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "spec.yaml"
    path.write_text(content)
    with pytest.raises(MsakitError, match=message) as info:
        read_spec_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(MsakitError, match="no such file"):
        read_spec_file(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- through the CLI
def _results(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _train(data: Path, bert: Path, out: Path, *dataset: str) -> int:
    return run_cli(["train", "--model", "clgsi", *dataset, "--data", str(data),
                    "--text-encoder", str(bert), "--seeds", "1", "--epochs", "1",
                    "--batch", "8", "--out", str(out), "--quiet"])


def _scaled_file(path: Path, like: str, factor: float) -> Path:
    """A synthetic file of ``like``'s shapes with its labels multiplied by ``factor``."""
    write_short_synthetic(path, like, (16, 8, 8), {"audio": 40, "vision": 30})
    with open(path, "rb") as f:
        raw = pickle.load(f)
    for split in raw.values():
        split["regression_labels"] = (split["regression_labels"] * factor).astype(np.float32)
    with open(path, "wb") as f:
        pickle.dump(raw, f, protocol=4)
    return path


def test_label_range_run_trains_evaluates_predicts_and_reports(tmp_path, tiny_bert, capsys):
    """--dataset custom --label-range -2 2 on a file with labels in [-2, 2]: MOSI's metrics,
    the spec in config.yaml and the checkpoint, so that evaluate, predict and report need no
    flag; CLGSI's label_scale is the spec's 2."""
    data = _scaled_file(tmp_path / "two.pkl", "mosi", 2 / 3)
    run = tmp_path / "run"
    assert _train(data, tiny_bert, run, "--dataset", "custom", "--label-range", "-2", "2") == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["dataset"] == CUSTOM
    assert config["dataset_spec"]["label_range"] == [-2.0, 2.0]
    assert config["dataset_spec"]["metric_family"] == MOSI_FAMILY
    assert config["model"]["label_scale"] == 2.0
    assert set(MOSI_METRICS) <= set(_results(run)[0])
    state = best_checkpoint(run / "seed-1")
    assert state["config"]["dataset_spec"]["label_range"] == [-2.0, 2.0]
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data", str(data)]) == 0
    metrics = yaml.safe_load(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics) == set(MOSI_METRICS)
    assert metrics["MAE"] == pytest.approx(float(_results(run)[0]["MAE"]), abs=1e-4)
    out = tmp_path / "p.csv"
    assert run_cli(["predict", "--checkpoint", str(run), "--data", str(data),
                    "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 9
    capsys.readouterr()
    assert run_cli(["report", str(run)]) == 0
    table = capsys.readouterr().out
    assert "| Acc-2 | F1 | Acc-7 |" in table
    # The checkpoint's data set is the custom one: a file with labels outside [-2, 2] is refused.
    wide = write_short_synthetic(tmp_path / "wide.pkl", "mosi", (16, 8, 8),
                                 {"audio": 40, "vision": 30})
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data", str(wide)]) == 2
    assert "outside [-2, 2], the range of the checkpoint's data set (Custom)" in (
        capsys.readouterr().err
    )


def test_spec_file_run_uses_its_family_language_and_title(tmp_path, tiny_bert, capsys):
    """A spec file with SIMS's metric family on a SIMS-shaped file: SIMS's metrics, the spec's
    title in the report, the spec's text encoder unless --text-encoder is given."""
    data = write_short_synthetic(tmp_path / "sims.pkl", "sims", (16, 8, 8),
                                 {"audio": 40, "vision": 30})
    spec = tmp_path / "corpus.yaml"
    spec.write_text("label_range: [-1, 1]\nlanguage: en\ntitle: My corpus\n"
                    "text_encoder: some-bert\n")
    run = tmp_path / "run"
    assert _train(data, tiny_bert, run, "--dataset", "custom", "--dataset-spec", str(spec)) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["dataset_spec"]["metric_family"] == SIMS_FAMILY
    assert config["dataset_spec"]["text_encoder"] == "some-bert"
    assert config["text_encoder"] == str(tiny_bert)  # --text-encoder wins over the spec's
    assert set(SIMS_METRICS) <= set(_results(run)[0])
    spec.unlink()  # the run needs the file no more
    capsys.readouterr()
    assert run_cli(["report", str(run)]) == 0
    assert "Acc-5" in capsys.readouterr().out
    assert run_cli(["report", str(run), str(run), "--label", "folder"]) == 0
    capsys.readouterr()
    assert run_cli(["plot", "scatter", "--checkpoint", str(run), "--data", str(data),
                    "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_simsv2_trains_through_the_cli(tmp_path, tiny_bert):
    data = write_short_synthetic(tmp_path / "v2.pkl", "simsv2", (16, 8, 8),
                                 {"audio": 40, "vision": 30})
    run = tmp_path / "run"
    assert _train(data, tiny_bert, run, "--dataset", "simsv2") == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["dataset"] == "simsv2" and config["dataset_spec"] is None
    assert config["model"]["label_scale"] == 1.0  # the SIMS preset, H = 1
    assert set(SIMS_METRICS) <= set(_results(run)[0])


# --------------------------------------------------------------------------- aligned files
def _aligned(raw: dict, length: int) -> dict:
    """An aligned-style file: audio/vision cut to the text length, no *_lengths keys."""
    for split in raw.values():
        for m in ("audio", "vision"):
            split[m] = np.ascontiguousarray(split[m][:, :length])
            del split[f"{m}_lengths"]
    return raw


def test_aligned_files_take_their_lengths_from_the_text_mask(tmp_path, tiny_bert):
    raw = _aligned(make_synthetic("mosi", 16, 8, 8, seed=2), 50)
    path = tmp_path / "aligned_50.pkl"
    with open(path, "wb") as f:
        pickle.dump(raw, f, protocol=4)
    ff = load_feature_file(path)
    for name, split in ff.splits.items():
        text = raw[name]["text_bert"][:, 1].sum(axis=1).astype(np.int64)
        np.testing.assert_array_equal(split.audio_lengths, text)
        np.testing.assert_array_equal(split.vision_lengths, text)
    assert ff.audio_len == ff.vision_len == ff.text_len == 50
    assert _train(path, tiny_bert, tmp_path / "run", "--dataset", "mosi") == 0


def test_a_half_aligned_file_is_refused(tmp_path):
    raw = make_synthetic("mosi", 4, 2, 2, seed=0)
    one = pickle.loads(pickle.dumps(raw))
    del one["valid"]["vision_lengths"]
    path = tmp_path / "one.pkl"
    with open(path, "wb") as f:
        pickle.dump(one, f, protocol=4)
    with pytest.raises(MsakitError, match="split 'valid', key 'vision_lengths': required key is "
                                          "missing \\('audio_lengths' is there"):
        load_feature_file(path)
    for split in raw.values():
        del split["audio_lengths"], split["vision_lengths"]
    with open(path, "wb") as f:
        pickle.dump(raw, f, protocol=4)
    with pytest.raises(MsakitError, match="500 audio frames for 50 tokens"):
        load_feature_file(path)


# --------------------------------------------------------------------------- plots
def test_plots_take_the_representations_a_model_names(tmp_path):
    """The default hook (no names) plots every representation the model returns."""
    from msakit.models.base import MSAModel
    from msakit.reporting.plots import _Outputs, _representation_names

    assert MSAModel().plot_representations() == {}
    reps = {"a": np.zeros((3, 2)), "b": np.zeros((3, 2))}
    outputs = _Outputs(spec=dataset_spec("mosi"), model_name="toy", predictions=np.zeros(3),
                       labels=np.zeros(3), representations=reps, plot_names={})
    assert _representation_names(outputs) == {"a": "a", "b": "b"}
    outputs.plot_names = {"b": "B", "c": "C"}
    assert _representation_names(outputs) == {"b": "B"}
    outputs.plot_names = {"c": "C"}
    with pytest.raises(MsakitError, match="no representations to plot"):
        _representation_names(outputs)
