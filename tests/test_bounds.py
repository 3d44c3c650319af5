"""Resource bounds on what a file may make msakit do (issue 19, must-have 5).

Small hostile files that used to cost gigabytes or end in "unexpected" errors: a YAML alias
bomb in every YAML reader (--config, --dataset-spec, a run's config.yaml read by report and
--resume, --set values), error lines quoting unbounded user data, checkpoints whose
configuration declares a model far larger than the weights they hold, token ids longer than the
text encoder's positions (retokenize --max-length, a data file's Lt), and one long clip padding
a whole extracted corpus. Each case: status 2 (or a bounded result), one ``error:`` line of
bounded length, nothing written.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import best_checkpoint, run_cli

from msakit.core.errors import MAX_LINE

SRC = Path(__file__).resolve().parents[1] / "src"
LINE_BOUND = MAX_LINE + 100  # the cut message's note of its length


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err[:2000]
    assert all(line.startswith(("error:", "warning:", "note:")) for line in lines), err[:2000]
    assert len(errors[0]) <= LINE_BOUND, len(errors[0])
    return errors[0]


def _bomb(levels: int = 6) -> str:
    """The "billion laughs": ``levels`` lists of nine aliases of the previous list (9**levels
    strings once expanded; a few hundred bytes)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _flow_bomb(levels: int = 6) -> str:
    """The same on one line (a ``--set`` value)."""
    items = [f"&a0 [{', '.join(['lol'] * 9)}]"]
    items += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return f"[{', '.join(items)}]"


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_mosi_npz, tiny_bert) -> Path:
    out = tmp_path_factory.mktemp("bounds") / "run"
    assert run_cli(_train(small_mosi_npz, tiny_bert, out)) == 0
    return out


def _train(data: Path, bert: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
            "--text-encoder", str(bert), "--seeds", "1", "--epochs", "1", "--batch", "8",
            "--out", str(out), "--quiet", *extra]


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("reader", ["config", "dataset-spec", "report", "resume", "set"])
def test_a_yaml_alias_bomb_is_one_short_line_in_every_reader(run, small_mosi_npz, tiny_bert,
                                                             tmp_path, capsys, reader):
    """450 bytes used to take 1.45 GB and print a 351 MB error line."""
    bomb = tmp_path / "bomb.yaml"
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    new = tmp_path / "new"
    argv = {
        "config": ["train", "--config", str(bomb), "--data", str(small_mosi_npz), "--out",
                   str(new), "--quiet"],
        "dataset-spec": ["train", "--model", "clgsi", "--dataset", "custom", "--dataset-spec",
                         str(bomb), "--data", str(small_mosi_npz), "--text-encoder",
                         str(tiny_bert), "--out", str(new), "--quiet"],
        "report": ["report", str(folder), "--out", str(tmp_path / "table.md")],
        "resume": _train(small_mosi_npz, tiny_bert, folder, "--resume"),
        "set": _train(small_mosi_npz, tiny_bert, new, "--set", f"gamma={_flow_bomb()}"),
    }[reader]
    text = _bomb()
    if reader in ("report", "resume"):
        (folder / "config.yaml").write_text(text + (folder / "config.yaml").read_text())
    else:
        bomb.write_text(text)
    before = _listing(tmp_path)
    capsys.readouterr()
    assert run_cli(argv) == 2
    line = one_error(capsys.readouterr().err)
    assert "aliases" in line, line
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("text, problem", [
    ("a: " + "[" * 10000 + "]" * 10000 + "\n", "nested deeper than"),
    ("a: " + "9" * 5000 + "\n", "cannot be read"),
    ("# padding\n" * 120000, "longer than"),
])
def test_yaml_that_is_too_deep_or_long_is_one_line(small_mosi_npz, tmp_path, capsys, text,
                                                   problem):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert run_cli(["train", "--config", str(config), "--data", str(small_mosi_npz), "--out",
                    str(tmp_path / "r"), "--quiet"]) == 2
    assert problem in one_error(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_msakit_writes_yaml_it_reads_back():
    from msakit.core.safe_yaml import dump_yaml, load_yaml

    shared = [1, 2]
    text = dump_yaml({"a": shared, "b": shared})  # PyYAML's safe_dump writes &id001 / *id001
    assert "*" not in text and load_yaml(text) == {"a": [1, 2], "b": [1, 2]}


# --------------------------------------------------------------------------- error lines
def test_an_error_line_is_one_bounded_line(tmp_path, capsys):
    """A file name of 100,000 characters, or one holding a line break, is quoted in one line
    of bounded length (the OSError path and MsakitError alike)."""
    long = tmp_path / ("x" * 100_000)
    assert run_cli(["evaluate", "--checkpoint", str(long), "--data", str(long)]) in (1, 2)
    assert "xxxx" in one_error(capsys.readouterr().err)
    broken = tmp_path / "a\nb.pt"
    assert run_cli(["evaluate", "--checkpoint", str(broken), "--data", str(broken)]) == 2
    assert "a\\nb.pt" in one_error(capsys.readouterr().err)


def test_msakit_error_keeps_its_message_bounded():
    from msakit.core.errors import MsakitError

    message = str(MsakitError("bad value " + "y" * 10**6 + " at the end"))
    assert len(message) <= LINE_BOUND and message.startswith("bad value yyy")
    assert message.endswith("y at the end") and "characters in all" in message


# --------------------------------------------------------------------------- checkpoints
def _bloated(run: Path, tmp_path: Path, name: str, *, encoder=None, model=None,
             weights: bool = True) -> Path:
    state = best_checkpoint(run / "seed-1")
    state["text_encoder_config"] = {**state["text_encoder_config"], **(encoder or {})}
    state["config"] = {**state["config"], "model": {**state["config"]["model"], **(model or {})}}
    if not weights:
        state["model"] = {}
    torch.save(state, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("declared", [
    {"encoder": {"vocab_size": 2_000_000}},
    {"encoder": {"num_hidden_layers": 100_000}},
    {"encoder": {"max_position_embeddings": 100_000_000}},
    {"encoder": {"hidden_size": 1_000_000, "intermediate_size": 1_000_000}},
    {"model": {"common_dim": 1_000_000}},
    {"model": {"audio_layers": 100_000}},
], ids=["vocab", "layers", "positions", "width", "model-width", "model-layers"])
def test_a_checkpoint_describing_more_than_it_holds_is_refused_before_building(
    run, tmp_path, declared
):
    """The model a checkpoint describes is first built on the meta device (no memory), each
    parameter counted against the weights the file holds: the file's size bounds what its
    configuration can make msakit allocate."""
    from torch.nn.modules import module as nn_module

    from msakit.api import BUILT_PER_STORED, UNSAVED_TENSORS, load_checkpoint
    from msakit.core.errors import MsakitError

    path = _bloated(run, tmp_path, "big.pt", **declared)
    stored = len(torch.load(path, map_location="cpu", weights_only=True)["model"])
    registered = []
    hook = nn_module.register_module_parameter_registration_hook(
        lambda module, name, param: registered.append(name))
    try:
        with pytest.raises(MsakitError, match="weights do not fit the model it describes: its "
                                              "configuration asks for far more than"):
            load_checkpoint(path)
    finally:
        hook.remove()
    # Refused at the first tensors past the bound, not after building what the file describes
    # (counted, not timed: 100,000 layers would register millions of parameters).
    assert len(registered) <= BUILT_PER_STORED * stored + UNSAVED_TENSORS + 64


def test_a_4kb_checkpoint_declaring_a_huge_vocabulary_stays_small(run, small_mosi_npz,
                                                                  tmp_path):
    """Measured in a process of its own: its peak memory is that of evaluating a genuine
    checkpoint, not that of a 2,000,000-word embedding (which took 3.6 GB)."""
    bomb = _bloated(run, tmp_path, "bomb.pt", encoder={"vocab_size": 2_000_000,
                                                       "hidden_size": 256,
                                                       "num_attention_heads": 2},
                    weights=False)
    assert bomb.stat().st_size < 8192

    def peak(checkpoint: Path) -> tuple[int, str, int]:
        code = ("import resource, subprocess, sys\n"
                "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
                "sys.stderr.write(p.stderr)\n"
                "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
        proc = subprocess.run(
            [sys.executable, "-c", code, sys.executable, "-m", "msakit", "evaluate",
             "--checkpoint", str(checkpoint), "--data", str(small_mosi_npz)],
            capture_output=True, text=True, timeout=600,
            env={"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                 "PATH": "/usr/bin:/bin"})
        status, kb = proc.stdout.split()
        return int(status), proc.stderr, int(kb)

    genuine_status, _, genuine_kb = peak(run / "seed-1")
    status, err, kb = peak(bomb)
    assert genuine_status == 0 and status == 2, err
    assert "asks for far more than" in one_error(err)
    # 2,000,000 x 256 float32 is 2 GB
    assert kb < genuine_kb + 256 * 1024, (kb, genuine_kb)


# --------------------------------------------------------------------------- text length
def _long_text_file(src: Path, out: Path, length: int) -> Path:
    """``src`` with its token ids padded to ``length`` columns (Lt)."""
    from msakit.data.mmsa import load_feature_file, split_to_mmsa
    from msakit.data.safe_format import save_npz

    ff = load_feature_file(str(src))
    content = {}
    for name, split in ff.splits.items():
        arrays = split_to_mmsa(split)
        ids = arrays["text_bert"]
        arrays["text_bert"] = np.concatenate(
            [ids, np.zeros((ids.shape[0], 3, length - ids.shape[2]), ids.dtype)], axis=2)
        content[name] = arrays
    save_npz(content, out)
    return out


def test_token_ids_longer_than_the_encoder_reads_are_one_line_at_load(
    run, small_mosi_npz, tiny_bert, tmp_path, capsys
):
    """Lt beyond the text encoder's positions (the tiny test BERT reads 64) ended in
    "unexpected RuntimeError" deep in the encoder."""
    data = _long_text_file(small_mosi_npz, tmp_path / "long.npz", 80)
    capsys.readouterr()
    assert run_cli(_train(data, tiny_bert, tmp_path / "r")) == 2
    line = one_error(capsys.readouterr().err)
    assert "text length 80" in line and "64 positions" in line, line
    assert not (tmp_path / "r").exists()
    assert run_cli(["evaluate", "--checkpoint", str(run), "--data", str(data)]) == 2
    assert "text length 80" in one_error(capsys.readouterr().err)


def test_retokenize_max_length_is_bounded_by_the_encoder(small_mosi_npz, tmp_path, capsys):
    """--max-length 600 for a 512-position encoder wrote ids no model could read."""
    from msakit.data.mmsa import load_feature_file

    ff = load_feature_file(str(small_mosi_npz))
    texts = tmp_path / "texts.csv"
    texts.write_text("id,text\n" + "".join(f"{i},some words\n" for split in ff.splits.values()
                                            for i in split.ids))
    out = tmp_path / "re.npz"
    argv = ["retokenize", str(small_mosi_npz), "--text-encoder", "minilm", "--texts",
            str(texts), "--out", str(out), "--max-length"]
    assert run_cli([*argv, "600"]) == 2
    assert "at most 512" in one_error(capsys.readouterr().err)
    assert not out.exists()
    assert run_cli([*argv, "512"]) == 0
    assert load_feature_file(str(out)).text_len == 512


# --------------------------------------------------------------------------- extraction
def test_extract_reads_the_first_max_seconds_of_each_clip(tmp_path, capsys):
    """One long clip no longer pads every clip of the corpus to its length: each clip is read
    for ``--max-seconds`` (default 60 s) at most."""
    for module in ("av", "cv2", "opensmile", "skimage"):
        pytest.importorskip(module)
    from video_clips import FPS, make_clip, moving

    from msakit.data.mmsa import load_feature_file
    from msakit.extract.audio import FRAME_RATE
    from msakit.extract.settings import DEFAULT_MAX_SECONDS, read_metadata

    assert DEFAULT_MAX_SECONDS == 60
    rows = []
    for i, (split, frames) in enumerate([("train", 10), ("valid", 10), ("test", 50)]):
        make_clip(tmp_path / f"c{i}.mp4", moving(frames, (4, 4), (1, 0)))
        rows.append({"id": f"c{i}", "video": f"c{i}.mp4", "text": f"clip {i}", "label": 1.0,
                     "split": split})
    with open(tmp_path / "clips.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "x.npz"
    assert run_cli(["extract", str(tmp_path / "clips.csv"), "--out", str(out), "--quiet",
                    "--max-seconds", "2"]) == 0, capsys.readouterr().err
    ff = load_feature_file(str(out))
    # the 5 s clip is read for 2 s: the corpus is padded to 2 s, not 5 s
    assert ff.audio_len <= 2 * FRAME_RATE + 1 and ff.vision_len <= 2 * FPS
    assert int(ff.splits["test"].audio_lengths[0]) > 1.5 * FRAME_RATE
    assert read_metadata(str(out))["settings"]["max_seconds"] == 2.0
