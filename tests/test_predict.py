"""Prediction without labels: ``msakit predict`` on a file with one split and no labels, and
``msakit.predict(checkpoint, arrays)`` on clips held in memory (tiny BERT, 1 epoch)."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import msakit
from msakit.core.errors import MsakitError
from msakit.data.mmsa import load_feature_file
from msakit.data.safe_format import save_npz
from msakit.data.synthetic import make_synthetic

WORDS = ["good", "bad", "movie", "it", "was", "not", "really", "fine"]
SMALL = ["--set", "feedforward=32", "--set", "common_dim=16", "--set", "specific_dim=16",
         "--set", "head_dim=16"]


@pytest.fixture(scope="module")
def bert_with_tokenizer(tiny_bert, tmp_path_factory) -> Path:
    """The tiny random BERT plus a word-piece tokenizer of a few words (ids < its vocabulary)."""
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("bert_tok") / "bert"
    shutil.copytree(tiny_bert, folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run(bert_with_tokenizer, small_mosi_npz, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(bert_with_tokenizer), "--seeds",
                    "1", "--epochs", "1", "--batch", "8", "--out", str(out), "--quiet",
                    *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def labelled_predictions(run, small_mosi_npz, tmp_path_factory) -> dict[str, float]:
    out = tmp_path_factory.mktemp("labelled") / "p.csv"
    assert run_cli(["predict", "--checkpoint", str(run), "--data", str(small_mosi_npz),
                    "--out", str(out)]) == 0
    return {row["id"]: float(row["prediction"]) for row in _read_csv(out)[1]}


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _test_split_without_labels(small_mosi_npz: Path) -> dict[str, np.ndarray]:
    """The test split of the small file as plain arrays, every label key left out."""
    test = load_feature_file(small_mosi_npz).splits["test"]
    return {"text_bert": test.text_bert, "audio": np.asarray(test.audio),
            "vision": np.asarray(test.vision), "audio_lengths": test.audio_lengths,
            "vision_lengths": test.vision_lengths, "id": test.ids}


@pytest.mark.parametrize("fmt", ["npz", "pkl"])
def test_predict_on_one_unlabelled_split(run, small_mosi_npz, labelled_predictions, tmp_path,
                                         capsys, fmt):
    split = _test_split_without_labels(small_mosi_npz)
    data = tmp_path / f"new.{fmt}"
    if fmt == "npz":
        save_npz({"test": split}, data)
    else:
        with open(data, "wb") as f:
            pickle.dump({"test": split}, f, protocol=4)
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert run_cli(["predict", "--checkpoint", str(run), "--data", str(data), "--out",
                    str(out)]) == 0
    assert "no labels" in capsys.readouterr().out
    columns, rows = _read_csv(out)
    assert columns == ["id", "prediction"]
    assert [r["id"] for r in rows] == [str(i) for i in split["id"]]
    for row in rows:  # the same model on the same clips: the labelled file's predictions
        assert float(row["prediction"]) == pytest.approx(labelled_predictions[row["id"]],
                                                         rel=1e-5, abs=1e-6)


def test_a_single_split_is_taken_whatever_its_name(run, small_mosi_npz, labelled_predictions,
                                                   tmp_path, capsys):
    data = tmp_path / "valid_only.npz"
    save_npz({"valid": _test_split_without_labels(small_mosi_npz)}, data)
    rows = msakit.predict(run, data)
    assert [set(r) for r in rows] == [{"id", "prediction"}] * len(rows)
    assert all(r["prediction"] == pytest.approx(labelled_predictions[r["id"]], rel=1e-5,
                                                abs=1e-6) for r in rows)
    # a split the file does not hold is named, with those it does hold
    assert run_cli(["predict", "--checkpoint", str(run), "--data", str(data), "--split", "test",
                    "--out", str(tmp_path / "p.csv")]) == 2
    assert "no split 'test' (the file holds 'valid')" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_labels_stay_required_for_training_and_evaluation(run, tiny_bert, tmp_path,
                                                          capsys):
    data = tmp_path / "new.npz"
    full = make_synthetic("mosi", 4, 3, 3)
    for split in full.values():
        del split["regression_labels"]
    save_npz(full, data)
    expected = f"error: {data}: split 'train', key 'regression_labels': required key is missing"
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data", str(data)]) == 2
    assert capsys.readouterr().err.strip() == expected
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
                    "--text-encoder", str(tiny_bert), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == expected
    assert not (tmp_path / "r").exists()
    # ... and predicting on it reads the test split (three splits: --split's default)
    rows = msakit.predict(run, data)
    assert len(rows) == 3 and "label" not in rows[0]


def test_a_file_to_predict_on_is_checked_like_any_other(run, small_mosi_npz, tmp_path, capsys):
    split = _test_split_without_labels(small_mosi_npz)
    split["vision"] = split["vision"].copy()
    split["vision"][2, 0, 0] = np.nan
    data = tmp_path / "nan.npz"
    save_npz({"test": split}, data)
    assert run_cli(["predict", "--checkpoint", str(run), "--data", str(data), "--out",
                    str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {data}: split 'test', key 'vision': NaN at sample 2 (id "
                   f"'{split['id'][2]}')")
    nothing = tmp_path / "nothing.npz"
    save_npz({"other": split}, nothing)
    with pytest.raises(MsakitError, match="no split to predict on.*top-level keys: 'other'"):
        msakit.predict(run, nothing)


# --------------------------------------------------------------------------- clips in memory
def test_predict_on_arrays_matches_the_file(run, small_mosi_npz, labelled_predictions):
    clips = _test_split_without_labels(small_mosi_npz)
    few = {key: value[:3] for key, value in clips.items()}
    rows = msakit.predict(run, few)
    assert [r["id"] for r in rows] == [str(i) for i in clips["id"][:3]]
    for row in rows:
        assert row["prediction"] == pytest.approx(labelled_predictions[row["id"]], rel=1e-5,
                                                  abs=1e-6)
    # one clip without the leading N, lengths and id left out: its valid frames only
    i = 1
    one = {"text_bert": clips["text_bert"][i],
           "audio": clips["audio"][i, : clips["audio_lengths"][i]],
           "vision": clips["vision"][i, : clips["vision_lengths"][i]]}
    [row] = msakit.predict(run, one)
    assert row["id"] == "0"
    assert row["prediction"] == pytest.approx(labelled_predictions[str(clips["id"][i])],
                                              rel=1e-5, abs=1e-6)


def test_predict_on_raw_texts_tokenises_with_the_checkpoint_encoder(run, bert_with_tokenizer,
                                                                    tmp_path):
    from transformers import AutoTokenizer

    from msakit.data.tokens import tokenize

    rng = np.random.default_rng(0)
    texts = ["it was really good", "not a fine movie"]
    audio = rng.normal(size=(2, 12, 5)).astype(np.float32)
    vision = rng.normal(size=(2, 9, 20)).astype(np.float32)
    from_texts = msakit.predict(run, {"raw_text": texts, "audio": audio, "vision": vision,
                                      "id": ["a", "b"]}, out=tmp_path / "p.csv")
    tokenizer = AutoTokenizer.from_pretrained(bert_with_tokenizer)
    ids = tokenize(tokenizer, texts, 50)
    assert ids[0, 0, :6].tolist() == [2, 8, 9, 11, 5, 3]  # [CLS] it was really good [SEP]
    from_ids = msakit.predict(run, {"text_bert": ids, "audio": audio, "vision": vision,
                                    "id": ["a", "b"]})
    assert from_texts == from_ids
    assert _read_csv(tmp_path / "p.csv")[0] == ["id", "prediction"]
    [single] = msakit.predict(run, {"raw_text": texts[1], "audio": audio[1],
                                    "vision": vision[1]})
    # one clip alone against the same clip in a batch of two: other matmul shapes, other
    # summation orders (the CSV's 6 significant digits can show the last float bit)
    assert single["prediction"] == pytest.approx(from_ids[1]["prediction"], rel=1e-5, abs=1e-6)


def _clips(n: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"text_bert": np.stack([np.full((n, 8), 7), np.ones((n, 8)), np.zeros((n, 8))], 1),
            "audio": rng.normal(size=(n, 10, 5)).astype(np.float32),
            "vision": rng.normal(size=(n, 6, 20)).astype(np.float32),
            "id": np.array(["a", "b", "c"][:n])}


def _with(**changes):
    clips = _clips()
    for key, value in changes.items():
        if value is None:
            del clips[key]
        else:
            clips[key] = value(clips[key]) if callable(value) else value
    return clips


def _nan_at_b(a):
    a = a.copy()
    a[1, 3, 0] = np.nan
    return a


@pytest.mark.parametrize("arrays, message", [
    (_with(audio=_nan_at_b), "arrays: key 'audio': NaN at sample 1 (id 'b')"),
    (_with(vision=lambda v: v[:, :, :7]),
     "arrays: key 'vision': feature width 7 does not match the checkpoint's 20"),
    (_with(vision=None), "arrays: key 'vision' is missing"),
    (_with(text_bert=None), "arrays: key 'text_bert' is missing (or give the texts as raw_text)"),
    (dict(_clips(), vison=np.zeros(2)), "arrays: unknown key 'vison'"),
    (_with(audio_lengths=np.array([3, 11])),
     "arrays: key 'audio_lengths': length 11 exceeds the sequence length 10 at sample 1 "
     "(id 'b')"),
    (_with(audio_lengths=np.array([3])),
     "arrays: key 'audio_lengths': sample count mismatch: 1 entries, but 'text_bert' has 2"),
    (_with(text_bert=lambda t: np.where(np.arange(3)[None, :, None] == 1, 2, t)),
     "arrays: key 'text_bert': attention mask 2 is not 0 or 1 at sample 0 (id 'a')"),
    (_with(text_bert=lambda t: t + np.array([10**6, 0, 0])[None, :, None]),
     "arrays: key 'text_bert': token id 1000007 does not fit the vocabulary size 30522 at "
     "sample 0"),
    (_with(audio=lambda a: a[:0], vision=lambda v: v[:0], text_bert=lambda t: t[:0]),
     "arrays: no clips"),
    (_with(raw_text=["fine", "  "], text_bert=None), "arrays: key 'raw_text': empty text at "
     "sample 1"),
    (_with(audio=[[1.0, 2.0], [3.0]]), "arrays: key 'audio': not a numeric array"),
    (_with(vision=lambda v: v[0, 0]), "arrays: key 'vision': expected a 3-D array"),
    ([1, 2], "msakit.predict: data must be str | os.PathLike | Mapping[str, Any], got [1, 2]"),
])
def test_bad_arrays_are_one_line(run, arrays, message):
    with pytest.raises(MsakitError) as info:
        msakit.predict(run, arrays)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_an_encoder_without_tokenizer_asks_for_token_ids(small_mosi_npz, tiny_bert, tmp_path):
    out = tmp_path / "run"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data",
                    str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--seeds", "1",
                    "--epochs", "1", "--out", str(out), "--quiet", *SMALL]) == 0
    clips = _clips()
    clips["raw_text"] = ["good", "bad"]
    del clips["text_bert"]
    with pytest.raises(MsakitError, match="has no tokenizer here; give text_bert"):
        msakit.predict(out, clips)
