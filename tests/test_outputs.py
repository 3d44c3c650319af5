"""Outputs and inputs (issue 19, must-haves 3 and 5's first part): one layer,
:mod:`msakit.core.safety`, decides what every command may read and write.

Structure first: every string argument of every parser declares its role (an input or output
path of some kind, or text), and for every command, every declared input refuses a FIFO and
every declared output refuses a FIFO, with one line at once, before anything is written
(generated from the parsers: a new command cannot skip the layer).

Then issue 19's "Why" -> the cases here (``CASES`` ids unless a test function is named):

19 ways to lose a file
- predict --out RUN/seed-1/last.pt: predict-out-last-pt
- report --out RUN/seed-1/model.safetensors: report-out-best-pt
- plot curves --out RUN/config.yaml: plot-curves-out-config
- plot weights --out RUN/results.csv: plot-weights-out-results
- --log-steps deletes another run's model.safetensors: log-steps-other-best-pt
- --log-steps deletes the --dataset-spec input: log-steps-is-dataset-spec
- --log-steps deletes a device node: log-steps-device, log-steps-fifo
- --resume empties any text file given as --log-steps: resume-log-steps-text-file
- atomic writes replace a device node (predict --out /dev/null as root): predict-out-device,
  test_atomic_write_never_replaces_a_device_fifo_or_symlink
- atomic writes replace a symlink: predict-out-symlink, test_atomic_write_never_replaces_...
- demo --out DIR deletes DIR/run: demo-out-holding-run
- pretrain-adapters --out RUN rewrites a train run's config.yaml: pretrain-out-train-run
- --overwrite deletes --data in the run folder: overwrite-deletes-data
- --overwrite deletes --init-from in the run folder: overwrite-deletes-init-from
- two tune studies in one --out overwrite each other's trial folders:
  test_two_studies_in_one_out_keep_their_trial_folders
- extract --out may be a listed video: extract-out-is-video
- extract deletes an input failures CSV: extract-failures-csv-is-input
- an existing file without --overwrite (predict, extract, merge, convert, retokenize, report,
  plot, synth, import-weights, --log-steps, demo): *-exists, test_every_output_refuses_...;
  tune's trial folders of a study of the same name elsewhere: test_two_studies_...
(two extract shards writing one --out and RunLock's two holders are the kernel lock's:
issue 19 must-have 4.)

9 hangs (a FIFO as ...): hang-data, hang-checkpoint, hang-config, hang-dataset-spec,
hang-init-from, hang-texts, hang-clips-csv, hang-video, hang-history-json; every input argument
of every command: test_every_input_refuses_a_fifo_at_once.

A hang is a failure: each case runs under an alarm (a backstop of :data:`BACKSTOP` seconds that a
passing case never comes near: the refusal is immediate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import run_cli, write_short_synthetic

BACKSTOP = int(os.environ.get("MSAKIT_TEST_HANG_BACKSTOP", "120"))


class Hung(BaseException):
    """Raised by the backstop alarm: the command blocked."""


@contextmanager
def backstop(seconds: int = BACKSTOP):
    def ring(*_):
        raise Hung(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _device(path: Path) -> Path | None:
    """A character device like /dev/null at ``path`` (root only), else None."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        return None
    return path


# --------------------------------------------------------------------------- structure
def _parsers(parser: argparse.ArgumentParser, name: str = ""):
    """(command name, parser) of every command (``plot FIGURE`` included)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for sub in subs:
        for child, p in sub.choices.items():
            yield from _parsers(p, f"{name} {child}".strip())


def _string_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if type(action) in (argparse._StoreAction, argparse._AppendAction) and (
                action.type is None and action.choices is None):
            yield action


def test_every_string_argument_declares_its_role():
    """A path argument added without a role (``_arg``) fails here: every string-valued
    argument of every command is declared an input, an output or text."""
    from msakit.cli import build_parser
    from msakit.core.safety import Role

    missing = [f"{name} {a.option_strings or a.dest}" for name, p in _parsers(build_parser())
               for a in _string_actions(p) if not isinstance(getattr(a, "role", None), Role)]
    assert not missing, missing
    # what must be a path is one
    roles = {(name, (a.option_strings or [a.dest])[0]): a.role
             for name, p in _parsers(build_parser()) for a in _string_actions(p)}
    for (name, flag), role in roles.items():
        if flag in ("--data", "--checkpoint", "--config", "--dataset-spec", "--init-from",
                    "--texts", "clips", "--weights", "--adapters", "--video", "file", "parts"):
            assert role.direction == "input", (name, flag)
        if flag in ("--out", "--log-steps"):
            assert role.direction == "output", (name, flag)


def _minimal_argv(name: str, parser: argparse.ArgumentParser, root: Path,
                  skip: argparse.Action) -> list[str]:
    """A command line the parser accepts: every required argument but ``skip`` given (a real
    regular file for inputs, a new name for outputs)."""
    argv = name.split()
    dummy = root / "dummy.bin"
    dummy.write_bytes(b"x")
    for action in parser._actions:
        if action is skip or not (action.required or not action.option_strings):
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue
        role = getattr(action, "role", None)
        if role is not None and role.direction == "input":
            value = [str(root if role.kind in ("folder", "run", "encoder") else dummy)]
        elif role is not None and role.direction == "output":
            value = [str(root / f"new-{action.dest}")]
        elif action.choices is not None:
            value = [str(next(iter(action.choices)))]
        else:
            value = ["1"] * (action.nargs if isinstance(action.nargs, int) else 1)
        argv += [*action.option_strings[:1], *value]
    return argv


def _declared(kind: str):
    from msakit.cli import build_parser

    for name, parser in _parsers(build_parser()):
        for action in _string_actions(parser):
            if getattr(action, "role", None) is not None and action.role.direction == kind:
                yield pytest.param(name, action.dest,
                                   id=f"{name.replace(' ', '-')}-{action.dest}")


def _with(name: str, dest: str, root: Path, value: str) -> list[str]:
    from msakit.cli import build_parser

    parser = dict(_parsers(build_parser()))[name]
    action = next(a for a in parser._actions if a.dest == dest)
    argv = _minimal_argv(name, parser, root, action)
    return [*argv, *action.option_strings[:1], value]


def _refused(argv: list[str], capsys, root: Path) -> str:
    before = sorted((str(p), p.lstat().st_mode) for p in root.rglob("*"))
    capsys.readouterr()
    with backstop():
        code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert sorted((str(p), p.lstat().st_mode) for p in root.rglob("*")) == before
    return lines[0]


@pytest.mark.parametrize("name, dest", list(_declared("input")))
def test_every_input_refuses_a_fifo_at_once(name, dest, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    line = _refused(_with(name, dest, tmp_path, str(fifo)), capsys, tmp_path)
    assert "FIFO" in line and str(fifo) in line, line


@pytest.mark.parametrize("name, dest", list(_declared("output")))
def test_every_output_refuses_a_fifo_and_an_existing_file(name, dest, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    line = _refused(_with(name, dest, tmp_path, str(fifo)), capsys, tmp_path)
    assert str(fifo) in line and ("FIFO" in line or "not a folder" in line), line
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me\n")
    line = _refused(_with(name, dest, tmp_path, str(existing)), capsys, tmp_path)
    assert str(existing) in line, line
    assert existing.read_text() == "keep me\n"


# --------------------------------------------------------------------------- the files
class W:
    """The files of this module's cases (built once)."""


@pytest.fixture(scope="module")
def w(tmp_path_factory, tiny_bert) -> type[W]:
    from msakit.data.mmsa import convert_to_npz

    root = tmp_path_factory.mktemp("outputs")
    W.root, W.bert = root, tiny_bert
    pkl = write_short_synthetic(root / "mosi.pkl", "mosi", (23, 8, 8),
                                {"audio": 40, "vision": 30})
    W.data = root / "mosi.npz"
    convert_to_npz(pkl, W.data)
    W.run = root / "run"
    assert run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(W.data),
                    "--text-encoder", str(tiny_bert), "--seeds", "1", "--epochs", "1",
                    "--batch", "8", "--out", str(W.run), "--quiet", "--log-steps",
                    str(root / "steps.jsonl")]) == 0
    W.ckpt = W.run / "seed-1"
    W.other = root / "other_run"
    shutil.copytree(W.run, W.other)
    (W.other / ".msakit-step-log").unlink(missing_ok=True)
    # a run folder holding its inputs, for --overwrite
    W.inside = root / "inside"
    shutil.copytree(W.run, W.inside)
    W.inside_data = W.inside / "seed-1" / "data.npz"
    shutil.copy(W.data, W.inside_data)
    W.spec = root / "spec.yaml"
    W.spec.write_text("label_range: [-3, 3]\n")
    W.text = root / "notes.txt"
    W.text.write_text("my notes, not a step log\n")
    W.fifo = root / "fifo"
    os.mkfifo(W.fifo)
    W.device = _device(root / "null")
    W.link = root / "link.csv"
    W.link.symlink_to(root / "target.csv")
    (root / "target.csv").write_text("target\n")
    W.clips = root / "clips.csv"
    W.video = root / "clip1.mp4"
    W.video.write_bytes(b"not really a video")
    W.clips.write_text(f"id,video,text,label,split\nc1,{W.video.name},hello,1.0,train\n")
    W.fifo_clips = root / "fifo_clips.csv"
    W.fifo_clips.write_text("id,video,text,label,split\nc1,fifo,hello,1.0,train\n")
    W.failures = root / "x.failures.csv"
    W.failures.write_text("id,video,reason\nc1,clip1.mp4,bad\n")
    W.hist_run = root / "hist_run"
    shutil.copytree(W.run, W.hist_run)
    (W.hist_run / "seed-1" / "history.json").unlink()
    os.mkfifo(W.hist_run / "seed-1" / "history.json")
    W.existing = root / "existing.csv"
    W.existing.write_text("keep\n")
    (root / "demo").mkdir()
    shutil.copytree(W.run, root / "demo" / "run")
    return W


def _train(w, *extra: str, out: str = "{case}/run", data: Path | None = None,
           dataset: str = "mosi") -> list[str]:
    return ["train", "--model", "clgsi", "--dataset", dataset, "--data", str(data or w.data),
            "--text-encoder", str(w.bert), "--seeds", "1", "--epochs", "1", "--batch", "8",
            "--out", out, "--quiet", *extra]


def _predict(w, out: str, *extra: str) -> list[str]:
    return ["predict", "--checkpoint", str(w.ckpt), "--data", str(w.data), "--out", out, *extra]


def _maybe_device(w) -> str:
    if w.device is None:
        pytest.skip("creating a device node needs root")
    return str(w.device)


CASES = [
    # ---- outputs that replace a run's file
    ("predict-out-last-pt", lambda w: _predict(w, str(w.run / "seed-1" / "last.pt")),
     "is a file of the run in"),
    ("predict-out-last-pt-overwrite", lambda w: _predict(w, str(w.run / "seed-1" / "last.pt"),
                                                         "--overwrite"),
     "is a file of the run in"),
    ("report-out-best-pt", lambda w: ["report", str(w.other), "--out",
                                      str(w.run / "seed-1" / "model.safetensors")],
     "is a file of the run in"),
    ("plot-curves-out-config", lambda w: ["plot", "curves", str(w.other), "--out",
                                          str(w.run / "config.yaml")],
     "is a file of the run in"),
    ("plot-weights-out-results", lambda w: ["plot", "weights", "--out",
                                            str(w.run / "results.csv")],
     "is a file of the run in"),
    ("predict-out-step-log", lambda w: _predict(w, str(w.root / "steps.jsonl"), "--overwrite"),
     "is the step log of a run"),
    # ---- --log-steps
    ("log-steps-other-best-pt", lambda w: _train(w, "--log-steps",
                                                 str(w.other / "seed-1" / "model.safetensors")),
     "--log-steps .*is a file of the run in"),
    ("log-steps-is-dataset-spec", lambda w: _train(w, "--log-steps", str(w.spec),
                                                   "--dataset-spec", str(w.spec),
                                                   dataset="custom"),
     "--log-steps .*is also an input"),
    ("log-steps-fifo", lambda w: _train(w, "--log-steps", str(w.fifo)), "--log-steps .*FIFO"),
    ("log-steps-device", lambda w: _train(w, "--log-steps", _maybe_device(w)),
     "--log-steps .*character device"),
    ("log-steps-existing-text", lambda w: _train(w, "--log-steps", str(w.text)),
     "--log-steps .*exists and is not the step log of the run"),
    ("resume-log-steps-text-file", lambda w: _train(w, "--resume", "--log-steps", str(w.text),
                                                    out=str(w.other)),
     "--log-steps .*exists and is not the step log of the run"),
    ("resume-log-steps-another-runs-log", lambda w: _train(
        w, "--resume", "--log-steps", str(w.root / "steps.jsonl"), out=str(w.other)),
     "--log-steps .*not the step log of the run"),
    ("log-steps-own-log-without-resume", lambda w: _train(
        w, "--log-steps", str(w.root / "steps.jsonl"), out=str(w.run)),
     "already holds a run|is the run's step log"),
    # ---- outputs that are not regular files
    ("predict-out-device", lambda w: _predict(w, _maybe_device(w), "--overwrite"),
     "character device; msakit writes only to regular files"),
    ("predict-out-symlink", lambda w: _predict(w, str(w.link), "--overwrite"),
     "symbolic link; msakit writes only to regular files"),
    ("convert-out-fifo", lambda w: ["convert", str(w.data), "--out", str(w.fifo),
                                    "--overwrite"], "FIFO"),
    # ---- run folders
    ("demo-out-holding-run", lambda w: ["demo", "--out", str(w.root / "demo")],
     "already holds a run"),
    ("pretrain-out-train-run", lambda w: ["pretrain-adapters", "--model", "conki", "--dataset",
                                          "mosi", "--data", str(w.data), "--out", str(w.run),
                                          "--overwrite"],
     "holds the output of msakit train"),
    ("overwrite-deletes-data", lambda w: _train(w, "--overwrite", out=str(w.inside),
                                                data=w.inside_data),
     "--overwrite would delete .*data.npz \\(--data\\)"),
    ("overwrite-deletes-init-from", lambda w: _train(w, "--overwrite", "--init-from",
                                                     str(w.inside / "seed-1" / "model.safetensors"),
                                                     out=str(w.inside)),
     "--overwrite would delete .*model.safetensors \\(--init-from\\)"),
    ("overwrite-deletes-config", lambda w: ["train", "--config", str(w.inside), "--data",
                                            str(w.data), "--out", str(w.inside), "--overwrite"],
     "--overwrite would delete .*config.yaml \\(--config\\)"),
    ("train-out-seed-folder", lambda w: _train(w, out=str(w.run / "seed-1")),
     "is part of the run in"),
    # ---- extract
    ("extract-out-is-video", lambda w: ["extract", str(w.clips), "--out", str(w.video),
                                        "--overwrite", "--quiet"],
     "is also an input \\(video"),
    ("extract-failures-csv-is-input", lambda w: ["extract", str(w.failures), "--out",
                                                 str(w.root / "x.npz")],
     "failures CSV.*is also an input"),
    # ---- an existing file without --overwrite
    ("predict-exists", lambda w: _predict(w, str(w.existing)), "exists; add --overwrite"),
    ("convert-exists", lambda w: ["convert", str(w.data), "--out", str(w.existing)],
     "exists; add --overwrite"),
    ("report-exists", lambda w: ["report", str(w.run), "--out", str(w.existing)],
     "exists; add --overwrite"),
    ("plot-exists", lambda w: ["plot", "weights", "--out", str(w.existing)],
     "exists; add --overwrite"),
    ("merge-exists", lambda w: ["merge", str(w.data), "--out", str(w.existing)],
     "exists; add --overwrite"),
    ("retokenize-exists", lambda w: ["retokenize", str(w.data), "--text-encoder", "minilm",
                                     "--out", str(w.existing)], "exists; add --overwrite"),
    ("extract-exists", lambda w: ["extract", str(w.clips), "--out", str(w.existing)],
     "exists; add --overwrite"),
    ("synth-exists", lambda w: ["synth", "--like", "mosi", "--n", "2", "2", "2", "--out",
                                str(w.existing)], "exists; add --overwrite"),
    # ---- the 9 hangs: a FIFO as an input
    ("hang-data", lambda w: ["evaluate", "--checkpoint", str(w.ckpt), "--data", str(w.fifo)],
     "FIFO"),
    ("hang-checkpoint", lambda w: ["evaluate", "--checkpoint", str(w.fifo), "--data",
                                   str(w.data)], "FIFO"),
    ("hang-config", lambda w: ["train", "--config", str(w.fifo), "--data", str(w.data),
                               "--out", "{case}/run"], "FIFO"),
    ("hang-dataset-spec", lambda w: _train(w, "--dataset-spec", str(w.fifo), dataset="custom"),
     "FIFO"),
    ("hang-init-from", lambda w: _train(w, "--init-from", str(w.fifo)), "FIFO"),
    ("hang-texts", lambda w: ["retokenize", str(w.data), "--text-encoder", "minilm", "--texts",
                              str(w.fifo), "--out", "{case}/r.npz"], "FIFO"),
    ("hang-clips-csv", lambda w: ["extract", str(w.fifo), "--out", "{case}/x.npz"], "FIFO"),
    ("hang-video", lambda w: ["extract", str(w.fifo_clips), "--out", "{case}/x.npz", "--quiet"],
     "video .*FIFO"),
    ("hang-history-json", lambda w: ["plot", "curves", str(w.hist_run), "--out",
                                     "{case}/c.png"], "history.json is a FIFO"),
    ("hang-resume-history", lambda w: _train(w, "--resume", out=str(w.hist_run)),
     "history.json is a FIFO"),
]


def _snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for root in roots:
        for path in root.rglob("*"):
            st = path.lstat()
            out[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("argv_of, pattern", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_refused_before_anything_is_touched(w, tmp_path, capsys, argv_of, pattern):
    import re

    case = tmp_path / "case"
    case.mkdir()
    argv = [a.replace("{case}", str(case)) for a in argv_of(w)]
    before = _snapshot(w.root, case)
    capsys.readouterr()
    with backstop():
        code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(pattern, lines[0]), lines[0]
    assert _snapshot(w.root, case) == before, "something was written or removed"


# --------------------------------------------------------------------------- what is allowed
def test_overwrite_replaces_and_a_new_file_in_a_run_folder_is_fine(w, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert run_cli(_predict(w, str(out))) == 0
    first = out.read_text()
    assert run_cli(_predict(w, str(out))) == 2  # exists
    assert run_cli(_predict(w, str(out), "--overwrite")) == 0
    assert out.read_text() == first
    plot = w.run / "curves-new.png"
    try:
        assert run_cli(["plot", "curves", str(w.run), "--out", str(plot)]) == 0
        assert plot.stat().st_size > 0
    finally:
        plot.unlink(missing_ok=True)


def test_a_run_continues_its_own_step_log(w, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(w.run, run)
    log = tmp_path / "steps.jsonl"
    argv = _train(w, "--log-steps", str(log), out=str(run))
    assert run_cli([*argv, "--overwrite"]) == 0
    assert (run / ".msakit-step-log").read_text().strip() == str(log.resolve())
    lines = log.read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps
    assert run_cli([*argv, "--resume"]) == 0
    assert log.read_text().splitlines() == lines
    assert run_cli([*argv, "--overwrite"]) == 0  # its own log, replaced
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == steps
    kept = log.read_bytes()
    assert run_cli(argv) == 2  # without either: refused, the log kept
    assert log.read_bytes() == kept


def test_atomic_write_never_replaces_a_device_fifo_or_symlink(tmp_path):
    from msakit.core.errors import MsakitError
    from msakit.core.files import write_text_atomic

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    (tmp_path / "target").write_text("target\n")
    link.symlink_to(tmp_path / "target")
    targets = [(fifo, "FIFO"), (link, "symbolic link")]
    device = _device(tmp_path / "null")
    if device is not None:
        targets.append((device, "device"))
    for path, kind in targets:
        mode = path.lstat().st_mode
        with pytest.raises(MsakitError, match=kind):
            write_text_atomic(path, "x")
        assert path.lstat().st_mode == mode
    assert (tmp_path / "target").read_text() == "target\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["fifo", "link", "target", *(["null"] if device else [])])


def test_open_input_refuses_a_fifo_without_blocking(tmp_path):
    from msakit.core.errors import MsakitError
    from msakit.core.safety import open_input

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with backstop(), pytest.raises(MsakitError, match="FIFO"):
        open_input(fifo)
    (tmp_path / "f.txt").write_text("hello\n")
    with open_input(tmp_path / "f.txt") as f:
        assert f.read() == "hello\n"
    with pytest.raises(FileNotFoundError):
        open_input(tmp_path / "none.txt")


def test_two_studies_in_one_out_keep_their_trial_folders(w, tmp_path, capsys):
    """Each study trains in OUT/STUDY/trial-K; a study of the same name in another storage
    finds trial folders it does not know and is refused (unless --overwrite)."""
    pytest.importorskip("optuna")
    out = tmp_path / "sweep"
    base = ["tune", "--model", "clgsi", "--dataset", "mosi", "--data", str(w.data),
            "--text-encoder", str(w.bert), "--trials", "1", "--epochs", "1", "--batch", "8",
            "--out", str(out), "--quiet"]
    for study in ("a", "b"):
        assert run_cli([*base, "--study", study]) == 0, capsys.readouterr().err
    assert (out / "a" / "trial-0" / "config.yaml").is_file()
    assert (out / "b" / "trial-0" / "config.yaml").is_file()
    kept = (out / "a" / "trial-0" / "results.csv").read_bytes()
    other = ["--storage", f"sqlite:///{tmp_path / 'other.db'}", "--study", "a"]
    capsys.readouterr()
    assert run_cli([*base, *other]) == 2
    assert "holds a run of no trial of study 'a'" in capsys.readouterr().err
    assert (out / "a" / "trial-0" / "results.csv").read_bytes() == kept
    assert run_cli([*base, *other, "--overwrite"]) == 0


def test_study_folder_names_never_collide():
    from msakit.tune import study_folder

    assert study_folder("msakit-clgsi-mosi") == "msakit-clgsi-mosi"
    names = {study_folder(s) for s in ("a/b", "a_b", "a b", "../x", ".", "")}
    assert len(names) == 6 and all("/" not in n and n not in (".", "..", "") for n in names)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
