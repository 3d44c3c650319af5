"""msakit's pickle reader (``src/msakit/data/safe_pickle.py``) and the pickle cache.

- Genuine content loads as :func:`pickle.loads` gives it: plain data and arrays under protocols
  0-5 (NumPy 2 module paths), and MMSA-shaped files written by NumPy 1.26 itself
  (``tests/fixtures/numpy1``, see ``make_numpy1_pickles.py``).
- The seed corpus (``tests/fuzz/corpus/pickle``, written by ``tests/fuzz/make_pickle_corpus.py``):
  genuine files load, every red-team and hostile file is one ``MsakitError`` line naming it,
  in a subprocess whose address space is capped (an allocation bomb is a failure, not a slow
  pass; a crash is a failure, not a dead pytest).
- The red-team files of issue 19 through ``msakit convert``, ``evaluate`` and ``train``: exit
  2, one ``error:`` line, nothing written (outputs, run folder, cache), peak RSS of the process
  within :data:`RSS_SLACK` of the same command on a genuine file of the same shape.
- Each cap (decoded bytes, elements, depth) refuses what exceeds it and passes the same content
  stored without sharing; any prefix or byte mutation of a genuine file loads or is refused.
- The validator turns no short list of ids into a huge fixed-width array.
- The cache keys on content: a file replaced by another of the same size and modification time
  is read anew.
- One reader: no module of msakit unpickles by any other route.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import subprocess
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from msakit.core.errors import MsakitError
from msakit.data import mmsa
from msakit.data.mmsa import load_feature_file
from msakit.data.safe_format import read_extra
from msakit.data.safe_pickle import (
    ALLOWANCE,
    DEPTH_LIMIT,
    ELEMENT_ALLOWANCE,
    ELEMENT_EXPANSION,
    EXPANSION,
    restricted_load,
)

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CORPUS_DIR = ROOT / "tests" / "fuzz" / "corpus" / "pickle"
NUMPY1 = ROOT / "tests" / "fixtures" / "numpy1"
RSS_SLACK = 128 << 20
"""A refused file may take at most this much more peak RSS than a genuine file (bytes)."""
ADDRESS_SPACE = 1 << 30
"""The address-space cap (RLIMIT_AS) of the subprocess that reads the whole corpus."""


def _load_corpus_module():
    spec = importlib.util.spec_from_file_location(
        "make_pickle_corpus", ROOT / "tests" / "fuzz" / "make_pickle_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus_module()


# --------------------------------------------------------------------------- genuine content
def _assert_same(got, want) -> None:
    """Equal content: same container types (OrderedDict read as dict, bytearray as bytes
    allowed), arrays of the same values, shape and dtype up to byte order."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.shape == want.shape
        assert got.dtype == want.dtype.newbyteorder("=")
        if want.dtype.kind == "O":
            for a, b in zip(got.ravel(), want.ravel(), strict=True):
                _assert_same(a, b)
        else:
            np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert type(got) is dict and list(got) == list(want)
        for key in want:
            _assert_same(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _assert_same(a, b)
    else:
        assert type(got) is type(want) or isinstance(want, bytearray), (got, want)
        assert got == want or (got != got and want != want), (got, want)


VALUES = [
    np.arange(3.0), np.array(["a", "bc"], dtype=object), np.float64(1.5), np.str_("ab"),
    np.array([], dtype=np.float32), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.array(["x", "yz"]), np.array([b"ab"]), np.zeros((0, 5, 3)), np.arange(4, dtype=">f4"),
    np.arange(24, dtype=np.int16).reshape(2, 3, 4)[:, ::2], np.array(True), np.bool_(False),
    np.array([np.float64(1), "a", 2, 2.5], dtype=object), np.uint8(200), np.float16(0.5),
    np.array([1, 2], dtype=np.uint64), np.arange(10.0)[::3], np.int64(-3),
    b"", b"xyz", "h\u00e9llo\n\\u", 1 << 70, -5, 3.25, True, None, (1, (2, (3,))), [[], [[]]],
    {1, 2}, frozenset({"a"}), OrderedDict(a=1, b=[1]), bytearray(b"abc"),
    {"train": {"id": np.array(["a$_1", "b"], dtype=object), "audio_lengths": [1, 2],
               "audio": np.random.default_rng(0).random((2, 3, 4))}, "valid": None},
]


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_and_arrays_load_as_pickle_loads_them(protocol):
    shared = np.arange(5.0)
    text = "shared-string"
    for value in [*VALUES, [shared, shared, {"k": shared}], [text, text]]:
        blob = pickle.dumps(value, protocol)
        _assert_same(restricted_load(blob), pickle.loads(blob))


@pytest.mark.parametrize("path", sorted(NUMPY1.glob("*.pkl")), ids=lambda p: p.stem)
def test_pickles_written_by_numpy_1_load(path):
    blob = path.read_bytes()
    assert b"numpy.core" in blob and b"numpy._core" not in blob
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core, under NumPy 2
        expected = pickle.loads(blob)
    _assert_same(restricted_load(blob), expected)
    ff = load_feature_file(path)
    np.testing.assert_array_equal(ff.splits["train"].labels,
                                  expected["train"]["regression_labels"])
    assert list(ff.splits["valid"].ids) == list(expected["valid"]["id"])


def test_boolean_bytes_other_than_0_and_1_are_true_and_count_once():
    flags = corpus.op_dtype("b1", corpus.simple_state("|"))
    arr = restricted_load(corpus.whole(corpus.array((3,), flags, b"\x00\x41\x01")))
    assert arr.dtype == np.bool_ and arr.tolist() == [False, True, True]
    assert int(arr.sum()) == 2 and arr.view(np.uint8).tolist() == [0, 1, 1]


# --------------------------------------------------------------------------- the corpus
def test_the_committed_corpus_is_the_one_the_script_writes():
    # The fuzz harness keeps its own files beside these (tests/fuzz/make_seeds.py: seed-*,
    # repro-*, crash-*): the script's are every other one.
    names = {p.stem for p in CORPUS_DIR.glob("*.pkl")
             if not p.name.startswith(("seed-", "repro-", "crash-"))}
    assert names == set(corpus.corpus())
    for name in names:  # same kind of file: a genuine one loads, a hostile one is refused
        fresh = corpus.corpus()[name]
        assert _outcome(fresh) == _outcome((CORPUS_DIR / f"{name}.pkl").read_bytes()), name


def _outcome(blob: bytes) -> str:
    try:
        restricted_load(blob, "F")
    except MsakitError as e:
        return re.sub(r"[\d,]+", "N", str(e))
    return "loaded"


_READ_ALL = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from msakit.data.mmsa import load_feature_file
from msakit.data.safe_format import read_extra
from msakit.core.errors import MsakitError
for path in sys.argv[2:]:
    try:
        ff = load_feature_file(path)
        print(os.path.basename(path), "loaded", sum(len(s) for s in ff.splits.values()))
    except MsakitError as e:
        print(os.path.basename(path), "error", str(e).replace(chr(10), "\\\\n"))
    except BaseException as e:
        print(os.path.basename(path), "OTHER", type(e).__name__, e)
    sys.stdout.flush()
"""


def test_every_corpus_file_loads_or_is_refused_in_bounded_memory(tmp_path):
    files = sorted(CORPUS_DIR.glob("*.pkl"))
    env = {**os.environ, "PYTHONPATH": str(SRC), "MSAKIT_CACHE_DIR": str(tmp_path / "cache"),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _READ_ALL, str(ADDRESS_SPACE), *map(str, files)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"status {proc.returncode}: {proc.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert set(lines) == {p.name for p in files}
    for path in files:
        outcome = lines[path.name]
        if path.name.startswith("genuine-"):
            assert outcome.startswith("loaded "), (path.name, outcome)
        elif path.name.startswith("seed-"):  # the fuzz harness's: some load only to predict
            assert outcome.startswith(("loaded ", f"error {path}: ")), (path.name, outcome)
        else:
            assert outcome.startswith(f"error {path}: "), (path.name, outcome)
            assert "\\n" not in outcome


# --------------------------------------------------------------------------- through the CLI
_MEASURED = """
import resource, subprocess, sys
with open(sys.argv[1], "w") as err:
    status = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err)
print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _measured(argv: list[str], work: Path, name: str) -> tuple[int, str, int]:
    """``msakit ARGV`` in its own process: (exit status, stderr, peak RSS in bytes of that
    process alone)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MSAKIT_CACHE_DIR": str(work / "cache")}
    err = work.parent / f"{name}.stderr"
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, str(err), sys.executable, "-m", "msakit", *argv],
        env=env, capture_output=True, text=True, timeout=900, cwd=work)
    assert proc.returncode == 0, proc.stderr
    status, rss_kb = map(int, proc.stdout.split())
    return status, err.read_text(), rss_kb * 1024


def _argv(command: str, data: Path, work: Path, world: dict) -> list[str]:
    if command == "convert":
        return ["convert", str(data), "--out", str(work / "out.npz")]
    if command == "evaluate":
        return ["evaluate", "--checkpoint", str(world["ckpt"]), "--data", str(data)]
    return ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
            "--text-encoder", str(world["bert"]), "--seeds", "1", "--epochs", "1",
            "--batch", "8", "--out", str(work / "run"), "--quiet"]


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory, tiny_bert) -> dict:
    """Peak RSS of ``convert`` and ``train`` on a genuine file (the tiny MMSA-shaped one of the
    corpus), and the checkpoint of that run, which ``evaluate`` uses."""
    root = tmp_path_factory.mktemp("cli")
    genuine = root / "genuine.pkl"
    genuine.write_bytes(corpus.corpus()["genuine-protocol-4"])
    world: dict = {"bert": tiny_bert}
    for command in ("convert", "train"):
        work = root / f"baseline-{command}"
        work.mkdir()
        status, err, world[command] = _measured(_argv(command, genuine, work, world), work,
                                                command)
        assert status == 0, err
    world["ckpt"] = next((root / "baseline-train" / "run").rglob("model.safetensors"))
    return world


RED_TEAM = sorted(CORPUS_DIR.glob("redteam-*.pkl"))
# Every red-team file through convert; the three of issue 19's "Done when" (the SIGSEGV, the
# uninitialised memory, the bytearray bomb) also through evaluate and train.
CLI_CASES = [
    *[(p, "convert") for p in RED_TEAM],
    *[(p, c) for p in RED_TEAM if p.stem.split("-")[1] in ("a", "c", "d")
      for c in ("evaluate", "train")],
]


@pytest.mark.parametrize(("path", "command"), CLI_CASES,
                         ids=[f"{p.stem.split('-')[1]}-{c}" for p, c in CLI_CASES])
def test_red_team_pickles_are_one_line_nothing_written_bounded_memory(
    tmp_path, cli_world, path, command
):
    """Exit 2, one line, nothing written; peak RSS within :data:`RSS_SLACK` of the same kind
    of command on a genuine file (``train``'s for evaluate and train)."""
    work = tmp_path / "work"
    work.mkdir()
    status, err, rss = _measured(_argv(command, path, work, cli_world), work, command)
    assert status == 2, f"status {status} (negative: killed by a signal): {err[-2000:]}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    assert "Traceback" not in err
    assert sorted(p.name for p in work.rglob("*")) == [], "something was written"
    limit = cli_world["convert" if command == "convert" else "train"] + RSS_SLACK
    assert rss <= limit, f"peak RSS {rss >> 20} MiB > {limit >> 20} MiB"


# --------------------------------------------------------------------------- the caps
def test_shared_references_count_each_time_so_a_small_file_cannot_expand(tmp_path):
    text = "x" * 1000
    shared = pickle.dumps([text] * 20_000, 4)  # one string, 20,000 references: 80 KB
    path = tmp_path / "shared.pkl"
    path.write_bytes(shared)
    with open(path, "rb") as f, pytest.raises(MsakitError) as info:
        restricted_load(f, str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: refused: ") and "decoded bytes" in message
    assert f"{EXPANSION} x the file's" in message and "\n" not in message
    # the same content written out (each string its own object) is a file of its size: loads
    distinct = pickle.dumps([text[:-1] + str(i % 10) for i in range(20_000)], 4)
    assert len(restricted_load(distinct)) == 20_000
    assert len(distinct) * EXPANSION + ALLOWANCE > 20_000 * 4000


def test_elements_reached_through_shared_references_are_capped():
    inner = [None] * 1000
    blob = pickle.dumps([inner] * 2000, 4)  # 2,000,000 elements from 6 KB
    assert ELEMENT_EXPANSION * len(blob) + ELEMENT_ALLOWANCE < 2_000_000
    with pytest.raises(MsakitError, match="elements"):
        restricted_load(blob, "f.pkl")
    assert len(restricted_load(pickle.dumps([inner] * 200, 4))) == 200


def test_nesting_deeper_than_the_limit_is_refused():
    def nested(depth: int) -> list:
        value: list = []
        for _ in range(depth - 1):
            value = [value]
        return value

    assert restricted_load(pickle.dumps(nested(DEPTH_LIMIT), 4)) == nested(DEPTH_LIMIT)
    with pytest.raises(MsakitError, match=f"nested deeper than {DEPTH_LIMIT}"):
        restricted_load(pickle.dumps(nested(DEPTH_LIMIT + 2), 4), "f.pkl")


def test_a_size_declared_beyond_the_file_allocates_nothing():
    blob = corpus.corpus()["hostile-binbytes8-of-2-40"]
    with pytest.raises(MsakitError, match="truncated"):
        restricted_load(blob, "f.pkl")


@pytest.mark.parametrize("name", ["genuine-protocol-0", "genuine-protocol-2",
                                  "genuine-protocol-4", "genuine-protocol-5"])
def test_any_prefix_or_byte_change_of_a_genuine_file_loads_or_is_one_error(name):
    blob = corpus.corpus()[name]
    candidates = [blob[:n] for n in range(0, len(blob), max(1, len(blob) // 400))]
    rng = np.random.default_rng(0)
    for _ in range(600):
        mutated = bytearray(blob)
        for i in rng.integers(0, len(blob), size=rng.integers(1, 4)):
            mutated[i] = int(rng.integers(0, 256))
        candidates.append(bytes(mutated))
    for data in candidates:
        try:
            restricted_load(data, "F")
        except MsakitError as e:
            assert str(e).startswith("F: ") and "\n" not in str(e)


def test_one_very_long_id_among_many_short_ones_is_one_line(tmp_path):
    """Fixed-width unicode would make 20,001 ids of which one has 10^6 characters 80 GB."""
    data = corpus.mmsa((20_001, 2, 2))
    data["train"]["id"][7] = "x" * 1_000_000
    path = tmp_path / "long-id.pkl"
    path.write_bytes(pickle.dumps(data, 4))
    with pytest.raises(MsakitError) as info:
        load_feature_file(path)
    assert str(info.value).startswith(f"{path}: split 'train', key 'id': a text of 1,000,000 "
                                      "characters among 20,001")


# --------------------------------------------------------------------------- the cache
def test_a_replaced_file_of_the_same_size_and_mtime_is_read_anew(tmp_path, capsys):
    data = corpus.mmsa()
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(data, 4))
    first = load_feature_file(path)
    assert "converted" in capsys.readouterr().err
    stat = path.stat()
    data["train"]["regression_labels"] = -data["train"]["regression_labels"]
    replacement = tmp_path / "new.pkl"
    replacement.write_bytes(pickle.dumps(data, 4))
    os.replace(replacement, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    again = load_feature_file(path)
    assert "converted" in capsys.readouterr().err
    np.testing.assert_array_equal(again.splits["train"].labels, -first.splits["train"].labels)
    recorded = read_extra(mmsa.converted_path(str(path)), "msakit_source")
    assert mmsa.content_digest(path)[1] in str(recorded)
    load_feature_file(path)  # unchanged content: the copy is reused, silently
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- one reader
def test_no_module_unpickles_by_another_route():
    patterns = re.compile(r"pickle\.(loads?|Unpickler)\(|\(pickle\.Unpickler\)"
                          r"|allow_pickle\s*=\s*True|torch\.load\((?![^)]*weights_only=True)")
    offenders = []
    for path in sorted((SRC / "msakit").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if patterns.search(line) and not line.lstrip().startswith(("#", '"', "`")):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []
