"""Fuzzing in the test suite (issue 19, items 2 and 8; docs/reliability.md, "Fuzzing").

* every fuzz target (tests/fuzz/targets.py) keeps its contract on the committed corpus
  (tests/fuzz/corpus/TARGET/) and on a fixed number of generated inputs, the same bytes on every
  machine (``run.py replay``; a crash, an exception other than MsakitError, too much CPU time or
  memory fails);
* no command line exits 1 or prints a traceback on any corpus file (``run.py cli``);
* every reader of a user's file in src/msakit is a target or says why it is not;
* each seed ``make_seeds.py`` wrote is accepted by its reader (else mutations start from a
  refused file).

Both runs happen in a child process that the runner restarts after a crash, so a crashing input
fails its target's test instead of ending pytest. ``make fuzz`` runs the long campaign.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
SRC = Path(__file__).resolve().parents[1] / "src" / "msakit"
sys.path.insert(0, str(FUZZ))

import targets  # noqa: E402

from msakit.core.errors import MsakitError  # noqa: E402

# A backstop for a stuck child, far above a run on a busy machine (not a measurement).
TIMEOUT_S = 1800


def _run(mode: str, tmp_path_factory) -> dict:
    report = tmp_path_factory.mktemp(f"fuzz-{mode}") / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(FUZZ / "run.py"), mode, "--report", str(report)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> dict:
    return _run("replay", tmp_path_factory)


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict:
    return _run("cli", tmp_path_factory)


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_target_keeps_its_contract_on_the_corpus_and_generated_inputs(replay, name):
    result = replay["results"][name]
    assert not result["failures"], "\n".join(result["failures"])
    files = targets.corpus_files(name)
    assert result["inputs"] >= len(files) > 0


def test_no_command_line_exits_1_or_prints_a_traceback_on_the_corpus(cli):
    failures = [f for r in cli["results"].values() for f in r["failures"]]
    assert not failures, "\n".join(failures)
    assert sum(r["inputs"] for r in cli["results"].values()) >= len(targets.TARGETS)


def test_every_known_failure_still_happens(replay, cli):
    """An entry of KNOWN_FAILURES that matches nothing is fixed: delete it."""
    stale = set(replay["stale"]) & set(cli["stale"])
    assert not stale, f"fixed; delete from KNOWN_FAILURES: {sorted(stale)}"


# --------------------------------------------------------------------------- every reader
READ_CALLS = {"yaml.safe_load", "yaml.load", "json.loads", "json.load", "csv.reader",
              "csv.DictReader", "np.load", "torch.load", "restricted_load", "read_csv",
              "pickle.load", "pickle.loads", "load_yaml", "read_yaml"}


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else None


def _readers(node: ast.AST, prefix: str, rel: str, out: set[str]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            _readers(child, f"{prefix}{child.name}.", rel, out)
            continue
        if isinstance(child, ast.Call) and _call_name(child.func) in READ_CALLS:
            out.add(f"{rel}::{prefix.rstrip('.') or '<module>'}")
        _readers(child, prefix, rel, out)


def test_every_reader_is_a_target_or_says_why_not():
    found: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        _readers(ast.parse(path.read_text(encoding="utf-8")), "", path.relative_to(SRC)
                 .as_posix(), found)
    listed = set(targets.READERS)
    assert not found - listed, f"readers with no fuzz target: add them to READERS: " \
                               f"{sorted(found - listed)}"
    assert not listed - found, f"READERS lists functions that read nothing: {listed - found}"
    for reader, where in targets.READERS.items():
        assert where in targets.TARGETS or where.startswith("not fuzzed: "), (reader, where)


def test_every_generated_seed_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("MSAKIT_CACHE_DIR", str(tmp_path / "cache"))  # restored afterwards
    ws = targets.Workspace(tmp_path)
    for name, target in targets.TARGETS.items():
        seeds = [p for p in targets.corpus_files(name) if p.name.startswith("seed-")]
        assert seeds, name
        for seed in seeds:
            refused = []
            for label, call in target.calls(ws, seed.read_bytes()):
                try:
                    call()
                except MsakitError as exc:  # e.g. a file to predict on, read for training
                    refused.append(f"{label}: {exc}")
            calls = len(target.calls(ws, seed.read_bytes()))
            assert len(refused) < calls, f"{seed.name} is refused by every reader: {refused}"


# --------------------------------------------------------------------------- seed folders
@pytest.mark.parametrize("name", ["seed_config", "seed_weights"])
def test_seed_folder_targets_keep_the_contract_past_the_parser(name, tmp_path, monkeypatch):
    """A seed folder's config.json and model.safetensors (issue 21): the committed seeds load
    and evaluate, and the target's generated inputs (the same bytes on every machine) each load
    or are refused with one MsakitError line, for many different reasons (the mutations get
    past the JSON and header parsers to the checks behind them), writing nothing."""
    monkeypatch.setenv("MSAKIT_CACHE_DIR", str(tmp_path / "cache"))  # restored afterwards
    ws = targets.Workspace(tmp_path)
    target = targets.TARGETS[name]
    seeds = [p for p in targets.corpus_files(name) if p.name.startswith("seed-")]
    assert seeds
    for seed in seeds:
        for _, call in target.calls(ws, seed.read_bytes()):
            call()  # a valid seed folder: every call succeeds
    generator, refusals, loaded = targets.Generator(target), set(), 0
    for index in range(30):
        data = generator.case(index)
        assert not targets.check(target, data, ws), index
        (_, load), *_ = target.calls(ws, data)  # load_checkpoint of the folder
        try:
            load()
            loaded += 1
        except MsakitError as exc:
            message = str(exc)
            assert "\n" not in message, message
            # the reason, without the file's name: "not a readable safetensors file (...)"
            refusals.add(" ".join(message.split(": ", 1)[-1].split()[:4]))
    past_parser = {r for r in refusals if not r.startswith("not a readable")}
    assert len(past_parser) >= 2 and loaded + len(past_parser) >= 3, (loaded, refusals)
    for repro in targets.corpus_files(name):  # the header's metrics: a mapping of numbers only
        if repro.name.startswith("repro-valid-"):
            (_, load), *_ = target.calls(ws, repro.read_bytes())
            with pytest.raises(MsakitError, match=r"its metadata \(epoch, seed, valid\) is "):
                load()
