"""Feature arrays memory-mapped from the npz (memory flat in the data size, issue 14 part 2)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msakit.core.errors import MsakitError
from msakit.data import load_feature_file, mmsa, save_npz
from msakit.data.batching import collate
from msakit.data.synthetic import make_synthetic

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture()
def raw() -> dict:
    return make_synthetic("mosi", 12, 5, 5, seed=0)


def _dump(path: Path, data) -> Path:
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def test_a_file_msakit_wrote_is_mapped_not_read(tmp_path, raw):
    ff = load_feature_file(save_npz(raw, tmp_path / "d.npz"))
    for split in ff.splits.values():
        for arr in (split.audio, split.vision):
            assert isinstance(arr, np.memmap)
            assert not arr.flags.owndata and not arr.flags.writeable
            assert arr.dtype == np.float32
        assert not isinstance(split.text_bert, np.memmap)  # small arrays are in memory
        assert not isinstance(split.labels, np.memmap)
    # the same content as the pickle, read into memory
    from_pickle = mmsa._validate(mmsa._read(str(_dump(tmp_path / "d.pkl", raw))), "x", None)
    np.testing.assert_array_equal(ff.splits["test"].vision, from_pickle.splits["test"].vision)


def test_convert_writes_the_mappable_format(tmp_path, raw):
    src = _dump(tmp_path / "d.pkl", raw)
    mmsa.convert_to_npz(src, tmp_path / "c.npz")
    import zipfile

    with zipfile.ZipFile(tmp_path / "c.npz") as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    assert isinstance(load_feature_file(tmp_path / "c.npz").splits["train"].audio, np.memmap)


def test_a_bad_value_in_a_late_chunk_is_found_with_the_same_message(tmp_path, raw, monkeypatch):
    n = len(raw["train"]["id"])
    raw["train"]["vision"][n - 1, 3, 2] = np.nan
    npz = save_npz(raw, tmp_path / "d.npz")
    pkl = _dump(tmp_path / "d.pkl", raw)
    monkeypatch.setattr(mmsa, "_CHUNK_ELEMENTS", 1)  # one sample per chunk
    messages = []
    for path in (npz, pkl):
        with pytest.raises(MsakitError) as info:
            load_feature_file(path)
        messages.append(str(info.value).replace(str(path), "FILE"))
    ident = raw["train"]["id"][n - 1]
    assert messages[0] == messages[1]
    assert messages[0] == f"FILE: split 'train', key 'vision': NaN at sample {n - 1} (id '{ident}')"
    assert not os.path.exists(mmsa.converted_path(str(pkl)))  # nothing written for a bad file


def test_audio_minus_inf_is_zero_in_batches_of_a_mapped_file(tmp_path, raw):
    raw["train"]["audio"][1, 0, :] = -np.inf
    raw["train"]["audio"][2, 4, 1] = -np.inf
    split = load_feature_file(save_npz(raw, tmp_path / "d.npz")).splits["train"]
    assert np.isneginf(split.audio[1, 0]).all()  # the read-only map is left as it is
    batch = collate(split, np.arange(len(split)), trim=False)
    audio = batch.audio.numpy()
    assert np.isfinite(audio).all()
    assert (audio[1, 0] == 0).all() and audio[2, 4, 1] == 0
    expected = np.where(np.isneginf(split.audio), 0, split.audio)
    np.testing.assert_array_equal(audio, expected)


def test_a_pickle_is_converted_once_and_reused_while_unchanged(tmp_path, raw, capsys):
    pkl = _dump(tmp_path / "d.pkl", raw)
    copy_path = mmsa.converted_path(str(pkl))
    first = load_feature_file(pkl)
    assert copy_path in capsys.readouterr().err
    assert first.path == str(pkl)
    assert isinstance(first.splits["train"].audio, np.memmap)
    assert first.splits["train"].audio.filename == os.path.abspath(copy_path)
    stamp = os.stat(copy_path).st_mtime_ns
    load_feature_file(pkl)
    assert capsys.readouterr().err == ""
    assert os.stat(copy_path).st_mtime_ns == stamp  # reused, not rewritten

    raw["train"]["regression_labels"][0] = 2.5  # the source changes: converted again
    _dump(pkl, raw)
    os.utime(pkl, ns=(stamp + 10**9, stamp + 10**9))
    again = load_feature_file(pkl)
    assert copy_path in capsys.readouterr().err
    assert again.splits["train"].labels[0] == 2.5

    # an error found in the copy names the pickle the user gave
    with pytest.raises(MsakitError, match=str(pkl).replace("\\", "\\\\")):
        load_feature_file(pkl, vocab_size=2)


def test_an_unwritable_cache_keeps_the_pickle_in_memory(tmp_path, raw, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv(mmsa.CACHE_ENV, str(blocker / "cache"))
    ff = load_feature_file(_dump(tmp_path / "d.pkl", raw))
    assert "could not write" in capsys.readouterr().err
    assert not isinstance(ff.splits["train"].audio, np.memmap)


_PROBE = """
import sys
import numpy as np
from msakit.data import load_feature_file
from msakit.data.batching import collate, epoch_plan

def hwm_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

before = hwm_kb()
ff = load_feature_file(sys.argv[1])
train = ff.splits["train"]
for indices in epoch_plan(train, 8, seed=0, epoch=0)[:2]:
    collate(train, indices)
print(hwm_kb() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    sizes = {}
    growth = {}
    for n in (60, 240):
        path = save_npz(make_synthetic("mosei", n, 4, 4, seed=1), tmp_path / f"m{n}.npz")
        sizes[n] = os.path.getsize(path)
        env = {**os.environ, "PYTHONPATH": SRC}
        out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], env=env,
                             capture_output=True, text=True, check=True)
        growth[n] = int(out.stdout.split()[-1]) * 1024
    added = sizes[240] - sizes[60]
    assert added > 30e6  # MOSEI-shaped samples are ~200 kB each
    # Read into memory, the extra 180 samples would add at least `added` bytes to the peak.
    assert growth[240] - growth[60] < 0.3 * added, (growth, added)
