"""The ``msakit`` command line: one-line errors for bad files, synth, and train -> evaluate ->
predict end to end on MOSI- and SIMS-shaped synthetic files (tiny BERT, 1 epoch)."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import best_checkpoint

import msakit
from msakit.cli import main
from msakit.data.mmsa import load_feature_file
from msakit.data.synthetic import make_synthetic
from msakit.evaluation.metrics import compute_metrics

MOSI_NAMES = [
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
]
SIMS_NAMES = ["Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"]
SMALL = ["--set", "feedforward=32", "--set", "common_dim=16", "--set", "specific_dim=16",
         "--set", "head_dim=16"]


def run(argv: list[str]) -> int:
    """msakit.cli.main in-process; argparse errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def train_argv(data: Path, out: Path, tiny_bert: Path, dataset: str = "mosi") -> list[str]:
    return [
        "train", "--model", "clgsi", "--dataset", dataset, "--data", str(data),
        "--text-encoder", str(tiny_bert), "--out", str(out), "--epochs", "1", "--seeds", "1",
        "--quiet", *SMALL,
    ]


def dump(data, path: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def error_line(err: str) -> str:
    """The one ``error:`` line of a failed command; every other stderr line is a warning or a
    note."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    others = [line for line in lines if not line.startswith(("error:", "warning:", "note:"))]
    assert not others, err
    return errors[0]


# --------------------------------------------------------------------------- bad files
def _mutated(change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        data = make_synthetic("mosi", 6, 4, 4)
        change(data)
        return dump(data, folder / "bad.pkl")

    return build


def _missing(folder: Path) -> Path:
    return folder / "does-not-exist.pkl"


def _random_bytes(folder: Path) -> Path:
    path = folder / "noise.pkl"
    path.write_bytes(b"\x01\x02" + np.random.default_rng(0).bytes(4000))
    return path


def _truncated(folder: Path) -> Path:
    path = dump(make_synthetic("mosi", 6, 4, 4), folder / "cut.pkl")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def _set(split: str, key: str, value_of: Callable[[dict], object]) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data[split][key] = value_of(data[split])

    return change


def _poke(split: str, key: str, index: tuple, value: float) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data[split][key]
        if isinstance(target, list):  # lengths are python lists in MMSA files
            target[index[0]] = value
        else:
            target[index] = value

    return change


BAD_FILES = {
    "missing path": (_missing, ["no such file"]),
    "not a pickle": (_random_bytes, []),
    "truncated pickle": (_truncated, ["truncated"]),
    "missing split": (_mutated(lambda d: d.pop("valid")), ["'valid'"]),
    "missing key": (_mutated(lambda d: d["test"].pop("vision")), ["'test'", "'vision'"]),
    "dims differ between splits": (
        _mutated(_set("valid", "audio", lambda s: s["audio"][:, :, :4])),
        ["'valid'", "'audio'", "4"],
    ),
    "label count mismatch": (
        _mutated(_set("train", "regression_labels", lambda s: s["regression_labels"][:-1])),
        ["'train'", "'regression_labels'"],
    ),
    "NaN in vision": (
        _mutated(_poke("valid", "vision", (2, 0, 3), float("nan"))),
        ["'valid'", "'vision'", "NaN", "sample 2"],
    ),
    "+inf in audio": (
        _mutated(_poke("test", "audio", (1, 0, 0), float("inf"))),
        ["'test'", "'audio'", "+inf", "sample 1"],
    ),
    "length longer than the sequence": (
        _mutated(_poke("train", "vision_lengths", (3,), 376)),
        ["'train'", "'vision_lengths'", "376", "sample 3"],
    ),
    "token id outside the vocabulary": (
        _mutated(_poke("train", "text_bert", (2, 0, 1), 30522.0)),
        ["'train'", "'text_bert'", "30522", "sample 2"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_reader_errors_are_one_line_and_write_nothing(case, tmp_path, tiny_bert, capsys):
    build, fragments = BAD_FILES[case]
    path = build(tmp_path)
    out = tmp_path / "run"
    code = run(train_argv(path, out, tiny_bert))
    err = capsys.readouterr().err
    assert code == 2, err
    line = error_line(err)
    assert str(path) in line
    for fragment in fragments:
        assert fragment in line, line
    assert not out.exists()


def test_no_traceback_reaches_the_terminal(tmp_path, tiny_bert):
    path = _random_bytes(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "msakit", *train_argv(path, out, tiny_bert)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc.stderr)
    assert str(path) in line
    assert not out.exists()


def test_unknown_set_key_is_an_error(tmp_path, tiny_bert, mosi_file, capsys):
    out = tmp_path / "run"
    code = run([*train_argv(mosi_file, out, tiny_bert), "--set", "no_such_key=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no_such_key" in error_line(err)
    assert not out.exists()


def test_bad_set_value_type_is_an_error(tmp_path, tiny_bert, mosi_file, capsys):
    out = tmp_path / "run"
    code = run([*train_argv(mosi_file, out, tiny_bert), "--set", "contrastive=maybe"])
    assert code == 2
    assert "contrastive" in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_neg_inf_audio_and_empty_vision_train(tmp_path, tiny_bert, capsys):
    data = make_synthetic("mosi", 6, 4, 4)
    for split in ("train", "valid"):
        data[split]["audio"][0, 0, 0] = -np.inf  # frame 0 is always a valid audio frame
        data[split]["vision_lengths"][1] = 0
        data[split]["vision"][1] = 0.0
    path = dump(data, tmp_path / "edge.pkl")
    loaded = load_feature_file(path)
    assert loaded.splits["train"].audio[0, 0, 0] == 0.0
    assert np.isfinite(loaded.splits["train"].audio).all()
    assert loaded.splits["train"].vision_lengths[1] == 0

    out = tmp_path / "run"
    code = run(train_argv(path, out, tiny_bert))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    history = json.loads((out / "seed-1" / "history.json").read_text())
    record = history[0]
    for key in ("train_loss", "train_task_loss", "train_contrastive_loss", "valid_loss",
                "valid_MAE"):
        assert math.isfinite(record[key]), (key, record)
    with open(out / "results.csv") as f:
        row = next(csv.DictReader(f))
    assert math.isfinite(float(row["MAE"]))


# --------------------------------------------------------------------------- synth
@pytest.mark.parametrize(
    "like, text_len, audio, vision, vocab",
    [("mosi", 50, (500, 5), (375, 20), 30522), ("sims", 39, (400, 33), (55, 709), 21128)],
)
def test_synth_writes_the_real_shapes(tmp_path, capsys, like, text_len, audio, vision, vocab):
    path = tmp_path / f"{like}.pkl"
    code = run(["synth", "--like", like, "--n", "3", "2", "4", "--out", str(path)])
    assert code == 0, capsys.readouterr().err
    data = load_feature_file(path, vocab_size=vocab)
    for split, n in zip(("train", "valid", "test"), (3, 2, 4), strict=True):
        part = data.splits[split]
        assert part.text_bert.shape == (n, 3, text_len)
        assert part.audio.shape == (n, *audio)
        assert part.vision.shape == (n, *vision)
        assert part.labels.shape == (n,)
        bound = 1.0 if like == "sims" else 3.0
        assert np.abs(part.labels).max() <= bound
        assert set(part.unimodal_labels) == ({"T", "A", "V"} if like == "sims" else set())
    assert (data.audio_len, data.audio_dim, data.vision_len, data.vision_dim) == (*audio, *vision)


def test_synth_makes_missing_folders_and_refuses_a_file_above(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "x.npz"
    assert run(["synth", "--like", "mosi", "--n", "3", "2", "2", "--out", str(out)]) == 0
    assert out.is_file()
    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "afile" / "sub" / "x.npz"
    code = run(["synth", "--like", "mosi", "--n", "3", "2", "2", "--out", str(bad)])
    assert code == 2
    assert "is a file, not a folder" in error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module", params=["mosi", "sims"])
def trained(request, tmp_path_factory, tiny_bert, mosi_file, sims_file):
    """``msakit train`` with 2 seeds for 1 epoch; returns (dataset, data file, run folder)."""
    dataset = request.param
    data = mosi_file if dataset == "mosi" else sims_file
    out = tmp_path_factory.mktemp(f"cli_{dataset}") / "run"
    argv = train_argv(data, out, tiny_bert, dataset)
    argv[argv.index("--seeds") + 1 : argv.index("--seeds") + 2] = ["1", "2"]
    # encoder_dropout=0 lets the 500-frame attention take the fused kernel (3x faster on CPU)
    assert run([*argv, "--batch", "16", "--set", "encoder_dropout=0"]) == 0
    return dataset, data, out


def read_results(out: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = {row["seed"]: row for row in reader}
        return list(reader.fieldnames or []), rows


def same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_train_writes_results_checkpoints_and_config(trained):
    dataset, _, out = trained
    names = MOSI_NAMES if dataset == "mosi" else SIMS_NAMES
    header, rows = read_results(out)
    assert header == ["seed", *names]
    assert list(rows) == ["1", "2", "mean", "std"]
    for name in names:
        a, b = float(rows["1"][name]), float(rows["2"][name])
        mean, std = float(rows["mean"][name]), float(rows["std"][name])
        assert abs(mean - (a + b) / 2) <= 1e-4, name
        assert 0 <= std <= abs(a - b) + 1e-4, name
        for value in rows["1"][name], rows["2"][name], rows["mean"][name]:
            assert float(value) == round(float(value), 4)
    for seed in (1, 2):
        ckpt = best_checkpoint(out / f"seed-{seed}")
        assert "model" in ckpt and "config" in ckpt
        assert ckpt["config"]["model_name"] == "clgsi"
        assert ckpt["config"]["dataset"] == dataset
        assert any(k.startswith("text_encoder.") for k in ckpt["model"])
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model_name"] == "clgsi" and config["dataset"] == dataset
    assert config["seeds"] == [1, 2]
    assert config["model"]["common_dim"] == 16


@pytest.mark.parametrize("seed", [1, 2])
def test_evaluate_prints_the_results_row(trained, seed, capsys):
    dataset, data, out = trained
    capsys.readouterr()
    code = run(["evaluate", "--checkpoint", str(out / f"seed-{seed}"),
                "--data", str(data), "--split", "test"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    _, rows = read_results(out)
    row = rows[str(seed)]
    assert list(metrics) == [k for k in row if k != "seed"]
    for name, value in metrics.items():
        assert same_number(float(value), float(row[name])), (name, value, row[name])


def test_evaluate_on_a_run_folder_gives_every_seed_and_mean_std(trained, tmp_path, capsys):
    """A run folder with two seeds: the table training wrote (results.csv), re-computed from
    the checkpoints, printed, written as CSV and JSON, and returned by the Python API."""
    dataset, data, out = trained
    header, expected = read_results(out)
    capsys.readouterr()
    table = tmp_path / "sub" / "table.csv"
    table.parent.mkdir()
    code = run(["evaluate", "--checkpoint", str(out), "--data", str(data), "--out", str(table)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.splitlines()[0].split() == header
    assert table.read_text() == (out / "results.csv").read_text()
    assert run(["evaluate", "--checkpoint", str(out), "--data", str(data), "--out",
                str(tmp_path / "table.json")]) == 0
    rows = json.loads((tmp_path / "table.json").read_text())
    assert [row["seed"] for row in rows] == [1, 2, "mean", "std"]
    api_rows = msakit.evaluate(out, data, "test")
    assert [row["seed"] for row in api_rows] == [1, 2, "mean", "std"]
    for row in api_rows:
        for name in header[1:]:
            value = float("nan") if row[name] == "" else float(row[name])
            want = expected[str(row["seed"])][name]
            assert same_number(value, float(want) if want else float("nan")), (row, name)
    valid = msakit.evaluate(out, data, "valid")
    assert valid[0] != api_rows[0]  # another split, other numbers


def test_predict_writes_one_row_per_test_sample(trained, tmp_path, capsys):
    dataset, data, out = trained
    preds = tmp_path / "preds.csv"
    code = run(["predict", "--checkpoint", str(out / "seed-1"), "--data", str(data),
                "--out", str(preds)])
    assert code == 0, capsys.readouterr().err
    with open(preds, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == ["id", "prediction", "label"]
    test = load_feature_file(data).splits["test"]
    assert [r["id"] for r in rows] == [str(i) for i in test.ids]
    assert len(set(r["id"] for r in rows)) == len(test)
    labels = np.array([float(r["label"]) for r in rows])
    np.testing.assert_allclose(labels, test.labels, rtol=0, atol=1e-6)
    predictions = np.array([float(r["prediction"]) for r in rows])
    assert np.isfinite(predictions).all()
    # the written predictions reproduce the seed's test row of results.csv
    _, results = read_results(out)
    metrics = compute_metrics(predictions, labels, dataset)
    for name, value in metrics.items():
        assert same_number(value, float(results["1"][name])), name
