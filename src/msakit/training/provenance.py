"""Where a run came from, recorded in its ``config.yaml`` under ``provenance:``.

The settings part of ``config.yaml`` is the run's :class:`~msakit.config.RunConfig` (what
``train --config`` and ``--resume`` read; the data's path and content hash are its ``data:``).
:class:`Provenance` appends a ``provenance:`` section that neither reads: the command line,
the host, the absolute path of the data file, the versions of msakit, torch, transformers,
numpy and Python, the git commit (and whether the work tree had changes) when msakit runs from
a clone (only when ``git`` and a repository are there: never an error without them), the start
time and, written at the end of a successful run, the end time (UTC, ISO 8601). A resumed run
keeps the first start and command and adds its own to ``resumed``. Each write replaces the
file atomically.

:class:`RunRecords` starts both records of a run, this section and ``train.log``
(:mod:`msakit.core.runlog`): a new run at once, a resumed one once it has resumed (its first epoch
ended, or a seed with no epoch left ended): a resume refused on a damaged ``last.pt`` writes
nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from msakit import __version__
from msakit.core.files import write_text_atomic
from msakit.core.runlog import LOG_NAME, attach
from msakit.core.safe_yaml import dump_yaml, read_yaml

SECTION = "provenance"
_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar("msakit_command",
                                                                     default=None)


@contextlib.contextmanager
def command_line(argv: Sequence[str]) -> Iterator[None]:
    """Record ``argv`` as the command line of the runs started inside (``msakit.cli.main``);
    elsewhere the process's ``sys.argv`` is recorded."""
    token = _COMMAND.set(shlex.join(argv))
    try:
        yield
    finally:
        _COMMAND.reset(token)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version


    found = {"msakit": __version__}
    for package in ("torch", "transformers", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    found["python"] = platform.python_version()
    return found


def git_commit(where: Path | None = None) -> dict[str, Any] | None:
    """The commit of the clone msakit runs from (``where``: default msakit's own source), and
    whether its tracked files have changes; None without git, outside a repository, or in one
    that does not track msakit's source (an installed msakit in a project's folder)."""
    where = where or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True,
                                  text=True, timeout=10, check=False,
                                  env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # msakit's own files tracked there: not the repository a virtual environment sits in
    if not commit or git("ls-files", "--error-unmatch", str(Path(__file__).resolve())) is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


class Provenance:
    """The ``provenance`` section of one run's ``config.yaml``; :meth:`start` writes the file
    at the start, :meth:`finish` at the end (the main rank only)."""

    def __init__(self, config_yaml: str, out: Path, *, data: str | os.PathLike) -> None:
        self.config_yaml, self.path = config_yaml, out / "config.yaml"
        self.record: dict[str, Any] = {
            "command": _COMMAND.get() or shlex.join(sys.argv),
            "host": socket.gethostname(),
            "data_path": str(Path(data).resolve()),
            "versions": versions(),
        }
        commit = git_commit()
        if commit is not None:
            self.record["git"] = commit

    def start(self, *, resume: bool) -> None:
        """Write ``config.yaml`` with the start; on resume keep the first start and command
        (from the file) and add this one to ``resumed``."""
        started = {"started": now(), "command": self.record["command"]}
        earlier = _earlier(self.path) if resume else None
        if earlier:
            self.record = {**self.record, "command": earlier.get("command"),
                           "started": earlier.get("started"),
                           "resumed": [*_list(earlier.get("resumed")), started]}
        else:
            self.record["started"] = started["started"]
        self.record["finished"] = None
        self._write()

    def finish(self) -> None:
        self.record["finished"] = now()
        self._write()

    def _write(self) -> None:

        section = dump_yaml({SECTION: self.record}, sort_keys=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, self.config_yaml.rstrip("\n") + "\n" + section)


class RunRecords:
    """``train.log`` and the ``provenance`` section of one run (see the module docstring)."""

    def __init__(self, config_yaml: str, out: Path, *, data: str | os.PathLike,
                 resume: bool) -> None:

        self.provenance = Provenance(config_yaml, out, data=data)
        self.log, self.resume, self.begun = out / LOG_NAME, resume, False
        if not resume:
            self.begin()

    def begin(self) -> None:

        if self.begun:
            return
        self.begun = True
        attach(self.log, append=self.resume)
        self.provenance.start(resume=self.resume)

    def finish(self) -> None:
        self.begin()
        self.provenance.finish()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _earlier(path: Path) -> dict[str, Any] | None:
    """The provenance a run folder's ``config.yaml`` records (None when none can be read)."""

    try:
        saved = read_yaml(path)
    except Exception:  # noqa: BLE001 - the settings were checked before; this is a record only
        return None
    record = saved.get(SECTION) if isinstance(saved, dict) else None
    return record if isinstance(record, dict) else None
