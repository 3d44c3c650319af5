"""Nothing silently wrong (issue 19, must-haves 7 and 8): a result msakit prints or writes is
either right or refused with one ``error:`` line; a value that does not exist is ``null`` /
blank and named in a ``warning:`` line, never a made-up number.

Issue 19's cases -> the tests here:
- ``train --resume --data OTHER.npz`` rewrote results.csv with the other file's metrics:
  test_resume_on_other_data_is_refused (and ``--config`` of a run on other data:
  tests/test_rerun.py::test_a_config_on_other_data_is_refused); a run written before msakit
  recorded its data: test_resume_of_a_run_without_recorded_data_warns
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, write_short_synthetic

TRAIN = ["--model", "clgsi", "--dataset", "mosi", "--seeds", "1", "--epochs", "1",
         "--batch", "8", "--quiet"]


def _one_error_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.fixture(scope="module")
def other_npz(tmp_path_factory) -> Path:
    """A file shaped as small_mosi_npz, with other content."""
    from msakit.data.mmsa import convert_to_npz

    root = tmp_path_factory.mktemp("other")
    pkl = write_short_synthetic(root / "other.pkl", "mosi", (23, 8, 8),
                                {"audio": 40, "vision": 30}, seed=7)
    return convert_to_npz(pkl, root / "other.npz") and root / "other.npz"


@pytest.fixture(scope="module")
def run(tiny_bert, small_mosi_npz, tmp_path_factory) -> Path:
    """A finished one-epoch CLGSI run on small_mosi_npz."""
    out = tmp_path_factory.mktemp("silent") / "run"
    assert run_cli(["train", *TRAIN, "--data", str(small_mosi_npz), "--text-encoder",
                    str(tiny_bert), "--out", str(out)]) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# --------------------------------------------------------------------------- data identity
def test_a_run_records_the_content_of_its_data(run, small_mosi_npz):
    digest = hashlib.blake2b(small_mosi_npz.read_bytes(), digest_size=32).hexdigest()
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert recorded == {"file": str(small_mosi_npz), "bytes": small_mosi_npz.stat().st_size,
                        "blake2b": digest}
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / "seed-1" / name, weights_only=True)
        assert state["config"]["data"] == recorded


def test_resume_on_other_data_is_refused(run, other_npz, tiny_bert, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _files(copy)
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--resume", "--data", str(other_npz), "--text-encoder",
                    str(tiny_bert), "--out", str(copy)]) == 2
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]["file"]
    _one_error_line(capsys.readouterr().err, "--resume", recorded, str(other_npz))
    assert _files(copy) == before


def test_resume_on_the_same_content_under_another_name_goes_on(run, small_mosi_npz, tiny_bert,
                                                                tmp_path, capsys):
    copy, data = tmp_path / "run", tmp_path / "renamed.npz"
    shutil.copytree(run, copy)
    shutil.copy(small_mosi_npz, data)
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--resume", "--data", str(data), "--text-encoder",
                    str(tiny_bert), "--out", str(copy)]) == 0
    assert capsys.readouterr().err == ""
    assert (copy / "results.csv").read_text() == (run / "results.csv").read_text()


def test_resume_of_a_run_without_recorded_data_warns(run, small_mosi_npz, tiny_bert, tmp_path,
                                                     capsys):
    """A run written before msakit recorded its data resumes, with one warning line."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    del saved["data"]
    (copy / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    capsys.readouterr()
    assert run_cli(["train", *TRAIN, "--resume", "--data", str(small_mosi_npz),
                    "--text-encoder", str(tiny_bert), "--out", str(copy)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "not checked" in err[0], err
    assert yaml.safe_load((copy / "config.yaml").read_text())["data"]["file"] == str(
        small_mosi_npz)  # recorded from now on
