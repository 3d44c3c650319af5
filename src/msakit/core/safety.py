"""Outputs and inputs: the one place that decides what a command may read and write.

Every command declares the paths it reads and writes before it touches anything: on the command
line each path argument carries a :class:`Role` (``msakit.cli``; ``tests/test_outputs.py``
checks that every argument of every parser has one), and ``msakit.cli.main`` hands the declared
paths to :func:`check_plan` before the command runs; the Python API's entry points call
:func:`check_plan` with theirs. :func:`check_plan` refuses, with one :class:`MsakitError` line
and nothing written or opened:

* an input that is not a regular file (a FIFO, a device, a socket; a folder where a file is
  expected) or not a folder where one is expected, or that cannot be read; files inside an input
  folder that the command reads (a run's ``results.csv``, ``config.yaml``, ``history.json``, a
  checkpoint folder's ``model.safetensors``, ``config.json`` or ``best.pt``) are checked the
  same way. A missing input is left to the command, whose reader names it;
* an output that is an input (the same file, compared by device and inode, so through symbolic
  and hard links);
* an output file that exists and is not a regular file (a folder, a symbolic link, a FIFO, a
  device), or is a file of an existing run (:data:`RUN_FILE_NAMES` in a run folder or one of its
  ``seed-S``/``stage1`` folders, a run's ``tensorboard`` files, a step log, known by its first
  line); new files in a run folder (plots, tables) are fine;
* an output file that exists, without ``overwrite`` (``--overwrite``);
* an output whose folder cannot be made: the nearest existing folder above it is a file, or
  cannot be written. Missing folders above an output are fine: the atomic writer
  (:func:`msakit.core.files.atomic_write`) creates them, for every command alike;
* a run folder (``train --out``, ``pretrain-adapters --out``, ``tune --out``) that holds another
  kind of run, or the same kind without ``--resume``/``--overwrite``; an ``--overwrite`` that
  would delete one of the command's inputs;
* a step log (``--log-steps``) that exists and is not the step log recorded by the run in
  ``--out`` (:data:`STEP_LOG_RECORD`): a new run writes only a new file (or, with ``--overwrite``,
  its own earlier log), ``--resume`` appends only to the log msakit wrote for that run.

:func:`open_input` opens a file for reading without the check-then-open race (``O_NONBLOCK``,
then ``fstat``): a FIFO swapped in after the check is still one error line, never a hang.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from msakit.core.errors import MsakitError
from msakit.core.files import describe_mode as _describe
from msakit.core.files import open_input, open_readable
from msakit.core.safe_yaml import load_yaml

__all__ = [
    "Role", "Input", "Output", "check_plan", "check_input", "check_output", "check_distinct_output",
    "open_input",
    "open_readable",
    "run_kind", "run_entries", "STEP_LOG_RECORD", "RUN_FILE_NAMES", "TRAIN_ENTRIES",
]

STEP_LOG_RECORD = ".msakit-step-log"
"""A train run folder's record of its step log (the log's absolute path, one line)."""
TRAIN_ENTRIES = ("config.yaml", "results.csv", "tensorboard", STEP_LOG_RECORD, "train.log",
                 "text_encoder-*.safetensors", "seed-*")
"""What a train run folder holds (``--overwrite`` removes exactly these)."""
ADAPTERS_ENTRIES = ("config.yaml", "adapters.pt", "stage1")
"""What ``pretrain-adapters --out`` holds."""
TUNE_ENTRIES = ("best.yaml", "optuna.db", "dataset.yaml")
"""What ``tune --out`` holds besides its studies' trial folders."""
RUN_FILE_NAMES = frozenset({
    "config.yaml", "results.csv", "history.json", "best.pt", "last.pt", "adapters.pt",
    "model.safetensors", "config.json", "train.log", "best.yaml", "optuna.db", "dataset.yaml",
    ".msakit.lock", STEP_LOG_RECORD,
})
"""Names of the files msakit keeps in a run folder and its ``seed-S``/``stage1`` folders."""
_SUB_FOLDERS = ("seed-*", "stage1", "trial-*")


# --------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class Role:
    """What a command-line argument is: an input or output path of some ``kind``, or not a path
    (``direction`` ``"text"``). Input kinds: ``file``, ``folder``, ``checkpoint`` (a file or a
    folder holding ``model.safetensors`` or ``best.pt``), ``config`` (a ``config.yaml`` or the
    run folder holding it), ``run`` (a run folder read by ``report``/``plot curves``),
    ``encoder`` (a hub name or a folder), ``videos`` (a file, or a folder whose files are each
    read). Output kinds: ``file``, ``log``, ``folder``, and the run folders ``train``,
    ``adapters``, ``tune``. ``companions``: further outputs derived from the value (extract's
    failures CSV, demo's files), as (flag, path, kind). ``stdout``: an output file that may be
    ``-``, standard output (a table, predictions); ``-`` is refused for the others."""

    direction: str
    kind: str = "file"
    companions: Callable[[Path], Sequence[tuple[str, Path, str]]] | None = None
    stdout: bool = False

    def __post_init__(self) -> None:
        kinds = {"input": _INPUT_KINDS, "output": _OUTPUT_KINDS, "text": {"file"}}
        if self.kind not in kinds.get(self.direction, ()):
            raise ValueError(f"no {self.direction} role of kind {self.kind!r}")


_INPUT_KINDS = {"file", "folder", "checkpoint", "config", "run", "encoder", "videos"}
_OUTPUT_KINDS = {"file", "log", "folder", "train", "adapters", "tune"}


@dataclass(frozen=True)
class Input:
    flag: str
    path: Path
    kind: str = "file"


@dataclass(frozen=True)
class Output:
    flag: str
    path: Path
    kind: str = "file"


def inputs(flag: str, paths: Iterable[Any], kind: str = "file") -> list[Input]:
    """``Input`` entries of the given paths (None and empty values skipped)."""
    return [Input(flag, Path(p), kind) for p in paths if p is not None and str(p)]


# --------------------------------------------------------------------------- the decision
def check_plan(
    reads: Iterable[Input], writes: Iterable[Output], *, overwrite: bool = False,
    resume: bool = False,
) -> None:
    """Refuse (one ``MsakitError`` line) what the module docstring lists; open nothing."""
    read: list[tuple[str, Path]] = []
    for item in reads:
        read += check_input(item)
    writes = list(writes)
    for out in writes:
        if out.kind in ("file", "log"):
            _check_output_file(out, read, overwrite=overwrite, resume=resume, writes=writes)
        else:
            _check_output_folder(out, read, overwrite=overwrite, resume=resume)


def _stat(path: Path, *, follow: bool = True) -> os.stat_result | None:
    try:
        return os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise MsakitError(f"{path}: cannot read its status: {exc.strerror}") from None


def check_input(item: Input) -> list[tuple[str, Path]]:
    """Check one declared input; return (flag, path) of every file the command reads there."""
    flag, path, kind = item.flag, item.path, item.kind
    st = _stat(path)
    if st is None and kind == "encoder":  # a hub name (or a folder: its loader names it)
        return []
    if st is None:  # refused before any model, encoder or data is loaded
        raise MsakitError(f"{flag} {path} does not exist (no such file or folder)")
    if kind == "encoder":
        if not stat.S_ISDIR(st.st_mode):
            raise MsakitError(f"{flag} {path} is {_describe(st.st_mode)}, not a folder")
        return []
    if kind == "videos" and stat.S_ISDIR(st.st_mode):  # a folder of videos: each file in it
        return [found for entry in sorted(path.iterdir()) if not entry.is_dir()
                for found in check_input(Input(flag, entry, "file"))]
    wants_folder = kind in ("folder", "run")
    if stat.S_ISDIR(st.st_mode):
        if kind == "file":
            raise MsakitError(f"{flag} {path} is a directory, not a regular file")
    elif wants_folder:
        raise MsakitError(f"{flag} {path} is {_describe(st.st_mode)}, not a folder")
    elif not stat.S_ISREG(st.st_mode):
        raise MsakitError(f"{flag} {path} is {_describe(st.st_mode)}, not a regular file; "
                          "msakit reads only regular files")
    if not os.access(path, os.R_OK):
        raise MsakitError(f"{flag} {path} cannot be read (permission denied)")
    if not stat.S_ISDIR(st.st_mode):
        return [(flag, path)]
    inside = {"checkpoint": ("best.pt", "seed-*/best.pt", "model.safetensors", "config.json",
                             "seed-*/model.safetensors", "seed-*/config.json",
                             "text_encoder-*.safetensors"),
              "config": ("config.yaml",),
              "run": ("results.csv", "config.yaml", "history.json", "seed-*/history.json"),
              "folder": ()}[kind]
    found = []
    for pattern in inside:
        for file in sorted(path.glob(pattern)):
            found += check_input(Input(flag, file, "file"))
    return found


# --------------------------------------------------------------------------- outputs
def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (device and inode; by real path when either is
    missing)."""
    sa, sb = _stat(a), _stat(b)
    if sa is not None and sb is not None:
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(out: Output, read: Iterable[Any], *, overwrite: bool = True) -> None:
    """One output file against the paths ``read`` (not checked as inputs here): the rules of
    :func:`check_plan` for an output file. ``overwrite=True`` (the Python API's default: an
    existing regular file is replaced as ``open(path, "w")`` would)."""
    paths = [("", Path(p)) for p in read if p is not None and str(p)]
    _check_output_file(out, paths, overwrite=overwrite, resume=False, writes=[out])


def _check_output_file(
    out: Output, read: list[tuple[str, Path]], *, overwrite: bool, resume: bool,
    writes: list[Output],
) -> None:
    flag, path = out.flag, out.path
    check_parent(flag, path)
    for in_flag, in_path in read:
        if _same(path, in_path):
            raise MsakitError(
                f"{flag} {path} is also an input ({f'{in_flag} ' if in_flag else ''}{in_path}); "
                "writing it would "
                "overwrite that input: choose another output file"
            )
    lst = _stat(path, follow=False)
    if lst is not None:
        if stat.S_ISDIR(lst.st_mode) or (stat.S_ISLNK(lst.st_mode) and path.is_dir()):
            raise MsakitError(f"{flag} {path} is a folder; give a file name")
        if not stat.S_ISREG(lst.st_mode):
            raise MsakitError(
                f"{flag} {path} is {_describe(lst.st_mode)}; msakit writes only to regular "
                "files or new names (give another name)"
            )
    run_dirs = [w.path for w in writes if w.kind == "train"]
    owner = _run_owning(path, run_dirs)
    if out.kind == "log":
        _check_step_log(out, lst is not None, run_dirs, overwrite=overwrite, resume=resume)
        return
    if owner is not None:
        raise MsakitError(
            f"{flag} {path} is a file of the run in {owner}; writing it would replace that "
            "run's file: choose another name"
        )
    if lst is not None and _is_step_log(path):
        raise MsakitError(f"{flag} {path} is the step log of a run (--log-steps); writing it "
                          "would replace it: choose another name")
    if lst is not None and not overwrite:
        raise MsakitError(f"{flag} {path} exists; add --overwrite to replace it, or choose "
                          "another name")


def check_parent(flag: str, path: Path) -> None:
    """Refuse an output whose folders cannot be made: the nearest existing path above
    ``path`` must be a writable folder (the missing ones are created when it is written)."""
    above = Path(os.path.abspath(path)).parent
    while _stat(above) is None and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise MsakitError(f"{flag} {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise MsakitError(f"{flag} {path}: cannot write to {above} (permission denied)")


def _check_step_log(
    out: Output, exists: bool, run_dirs: list[Path], *, overwrite: bool, resume: bool
) -> None:
    """``--log-steps``: a new file, or the step log the run in ``--out`` recorded (replaced
    with ``--overwrite``, appended to with ``--resume``)."""
    flag, path = out.flag, out.path
    owner = _run_owning(path, run_dirs)
    if owner is not None and not any(_same(path, log) for log in _logs(run_dirs)):
        raise MsakitError(f"{flag} {path} is a file of the run in {owner}; choose another name "
                          "for the step log")
    if not exists:
        return
    if not any(_same(path, log) for log in _logs(run_dirs)):
        raise MsakitError(
            f"{flag} {path} exists and is not the step log of the run in --out; msakit writes "
            "a step log only to a new file or to the run's own log: choose another name"
        )
    if not (resume or overwrite):
        raise MsakitError(f"{flag} {path} is the run's step log; add --resume to continue the "
                          "run, --overwrite to replace it, or choose another name")


def _is_step_log(path: Path) -> bool:
    """Whether the regular file ``path`` starts with a line of msakit's step log."""
    try:
        with open_input(path, "rb") as f:
            first = f.read(4096).split(b"\n", 1)[0]
        entry = json.loads(first)
    except (OSError, MsakitError, ValueError, RecursionError):  # 4 KB of '[' is deep enough
        return False
    return isinstance(entry, dict) and {"seed", "step"} <= set(entry)


def _logs(run_dirs: list[Path]) -> list[Path]:
    return [log for log in map(recorded_step_log, run_dirs) if log is not None]


def recorded_step_log(run: Path) -> Path | None:
    """The step log the train run folder ``run`` recorded (:data:`STEP_LOG_RECORD`)."""
    record = run / STEP_LOG_RECORD
    st = _stat(record, follow=False)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
        return None
    try:
        text = record.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Path(text) if text else None


def _entry_of(path: Path, folder: Path, entries: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``entries`` of ``folder``, or lies inside one."""
    try:
        rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return bool(rel.parts) and any(fnmatch.fnmatch(rel.parts[0], e) for e in entries)


def _run_owning(path: Path, run_dirs: list[Path]) -> Path | None:
    """The run folder that ``path`` is a file of (see the module docstring), or None."""
    real = Path(os.path.realpath(path))
    for run in run_dirs:  # a run this command is about to write
        if _entry_of(real, run, TRAIN_ENTRIES):
            return run
    parents = [real.parent, real.parent.parent]
    if real.name in RUN_FILE_NAMES:
        if run_kind(parents[0]) is not None:
            return parents[0]
        if any(fnmatch.fnmatch(parents[0].name, p) for p in _SUB_FOLDERS) and run_kind(
                parents[1]) is not None:
            return parents[1]
    for ancestor in real.parents:
        if ancestor.name == "tensorboard" and run_kind(ancestor.parent) == "train":
            return ancestor.parent
    for folder in parents[:1]:
        log = recorded_step_log(folder) if run_kind(folder) == "train" else None
        if log is not None and _same(log, real):
            return folder
    return None


# --------------------------------------------------------------------------- run folders
def run_kind(folder: Path) -> str | None:
    """What ``folder`` holds: ``"adapters"`` (pretrain-adapters), ``"tune"`` (a sweep),
    ``"train"`` (a training run, finished or not), or None (no run)."""
    if not folder.is_dir():
        return None
    if (folder / "adapters.pt").exists() or (folder / "stage1").is_dir():
        return "adapters"
    if any((folder / name).exists() for name in ("best.yaml", "optuna.db")):
        return "tune"
    if any((folder / name).exists() for name in TRAIN_ENTRIES if "*" not in name):
        return "train"
    if any(folder.glob("seed-*/*.pt")) or any(folder.glob("seed-*/history.json")) or any(
            folder.glob("seed-*/model.safetensors")):
        return "train"
    return None


def _trained(folder: Path) -> bool:
    """Whether the train run in ``folder`` holds something worth keeping: its results, or a
    seed that finished an epoch (a checkpoint) or its training (``history.json``). A first run
    that failed before its first epoch ended (a full disk, a signal, a setting found bad late)
    leaves at most its ``config.yaml``, an empty seed folder and TensorBoard's first events."""
    return ((folder / "results.csv").exists() or any(folder.glob("seed-*/*.pt"))
            or any(folder.glob("seed-*/model.safetensors"))
            or any(folder.glob("seed-*/history.json")))


def _check_run_config(folder: Path) -> None:
    """A ``config.yaml`` that is not an msakit run's is never replaced."""
    config = folder / "config.yaml"
    if not (config.exists() or config.is_symlink()):
        return
    try:
        with open_input(config, "rb") as f:
            saved = load_yaml(f.read(1 << 20))
    except (OSError, ValueError, MsakitError, yaml.YAMLError):
        saved = None
    if not (isinstance(saved, dict) and "model_name" in saved and "dataset" in saved):
        raise MsakitError(f"{config} is not the configuration of an msakit run; training "
                          "would replace it: choose another --out")


_ENTRIES = {"train": TRAIN_ENTRIES, "adapters": ADAPTERS_ENTRIES, "tune": TUNE_ENTRIES}
_COMMAND = {"train": "msakit train", "adapters": "msakit pretrain-adapters",
            "tune": "msakit tune"}


def run_entries(folder: Path, kind: str = "train") -> list[Path]:
    """The existing entries of a run folder of ``kind`` (what ``--overwrite`` removes)."""
    return [p for pattern in _ENTRIES[kind] for p in sorted(folder.glob(pattern))
            if p.exists() or p.is_symlink()]


def _check_output_folder(
    out: Output, read: list[tuple[str, Path]], *, overwrite: bool, resume: bool
) -> None:
    flag, path, kind = out.flag, out.path, out.kind
    check_parent(flag, path)
    if path.exists() and not path.is_dir():
        raise MsakitError(f"{flag} {path} exists and is not a folder")
    if path.is_dir() and not os.access(path, os.W_OK):
        raise MsakitError(f"cannot write to {path}")
    parent = Path(os.path.realpath(path)).parent
    outer = run_kind(parent)
    if outer is not None and _entry_of(path, parent, _ENTRIES[outer]):
        raise MsakitError(f"{flag} {path} is part of the run in {parent}; choose a folder "
                          "outside it")
    if kind == "folder":
        return
    held = run_kind(path)
    if held is not None and held != kind:
        raise MsakitError(f"{flag} {path} holds the output of {_COMMAND[held]}; choose "
                          "another folder")
    if held is None or kind == "tune":
        return
    if kind == "train" and resume:
        for pattern in ("config.yaml", "seed-*/last.pt", "seed-*/best.pt", "seed-*/history.json",
                        "seed-*/model.safetensors", "seed-*/config.json", "train.log",
                        "text_encoder-*.safetensors"):
            for file in path.glob(pattern):
                check_input(Input(f"{flag} {path}:", file))
        return
    if kind == "train" and not overwrite and not _trained(path):
        _check_run_config(path)
        return  # a first run that failed before its first epoch ended: the command runs again
    if not overwrite:
        extra = " add --resume to continue it," if kind == "train" else ""
        raise MsakitError(f"{path} already holds a run;{extra} add --overwrite to replace it, "
                          "or choose another --out")
    _check_overwrite_keeps_inputs(out, read)


def _check_overwrite_keeps_inputs(out: Output, read: list[tuple[str, Path]]) -> None:
    """``--overwrite`` removes the run's entries: none of them may be one of the inputs."""
    doomed = set()
    for entry in run_entries(out.path, out.kind):
        files = [entry] if not entry.is_dir() or entry.is_symlink() else [
            p for p in entry.rglob("*") if not p.is_dir()]
        for file in files:
            st = _stat(file, follow=False)
            if st is not None:
                doomed.add((st.st_dev, st.st_ino))
    for flag, path in read:
        st = _stat(path)
        same = st is not None and (st.st_dev, st.st_ino) in doomed
        if same or _entry_of(path, out.path, _ENTRIES[out.kind]):
            raise MsakitError(
                f"--overwrite would delete {path} ({flag}), an input of this command, with the "
                f"run in {out.path}: move it out of the run folder first"
            )


# --------------------------------------------------------------------------- reading


def check_distinct_output(
    out: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str] | None],
    flag: str = "--out",
) -> None:
    """Raise ``MsakitError`` if the output file ``out`` is one of ``inputs`` (same file by
    device and inode: symlinks and hard links too), an existing folder, FIFO, device or symbolic
    link, or a file of an existing run (:func:`check_output`). ``None`` entries
    are skipped; call it before anything is read or written."""
    if out is None:
        return
    check_output(Output(flag, Path(out)), inputs)
