"""``train.log``: every line a training command prints, kept in its run folder.

:func:`recording` tees ``sys.stdout`` and ``sys.stderr`` for the duration of a command: what
is printed still reaches the terminal, and is also kept, first in memory (until the run folder
is known to be the command's to write: the checks come first, nothing is written before), then,
once :meth:`RunLog.attach` names the file, in it (appended on ``--resume``). Progress bars are
drawn on the terminal only (:func:`terminal`); an epoch line shown above the bar in a terminal
is written to the log by :func:`echo`. Under torchrun only rank 0 attaches a file.

Nested recordings (``msakit train`` calls :func:`msakit.api.train`, which records when called
from Python) share the outer one, so the results table the command prints after the run is in
the log too.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from msakit.core.errors import MsakitError

LOG_NAME = "train.log"


class _Tee(io.TextIOBase):
    """A text stream writing to ``stream`` and to the log."""

    def __init__(self, stream: Any, log: RunLog) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        self.log.keep(text)
        return written if isinstance(written, int) else len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None)

    def writable(self) -> bool:
        return True


class RunLog:
    """The lines printed since :func:`recording` began; see the module docstring."""

    def __init__(self) -> None:
        self.pending: list[str] | None = []  # before attach; None once attached or dropped
        self.file: IO[str] | None = None
        self.path: Path | None = None

    def keep(self, text: str) -> None:
        if self.file is not None:
            self.file.write(text)
        elif self.pending is not None:
            self.pending.append(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def attach(self, path: Path, *, append: bool) -> None:
        """From now on, write to ``path`` (what was printed so far first); ``append`` keeps
        what an earlier run of the folder wrote (``--resume``)."""
        if self.file is not None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a" if append else "w", buffering=1, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise MsakitError(f"cannot write {path}: {exc.strerror}") from None
        self.path = path
        self.file.write("".join(self.pending or []))
        self.pending = None

    def close(self, error: BaseException | None = None) -> None:
        if self.file is None:
            return
        if isinstance(error, MsakitError):  # the command's last line (msakit.core.guard prints it)
            self.file.write(f"error: {error}\n")
        elif isinstance(error, KeyboardInterrupt):
            self.file.write("interrupted\n")
        self.file.close()
        self.file = None


_ACTIVE: list[RunLog] = []


@contextlib.contextmanager
def recording() -> Iterator[RunLog]:
    """Tee the standard streams into a :class:`RunLog` (the running one when nested)."""
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    log = RunLog()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(saved[0], log), _Tee(saved[1], log)
    _ACTIVE.append(log)
    error: BaseException | None = None
    try:
        yield log
    except BaseException as exc:
        error = exc
        raise
    finally:
        _ACTIVE.remove(log)
        sys.stdout, sys.stderr = saved
        log.close(error)


def attach(path: Path, *, append: bool) -> None:
    """:meth:`RunLog.attach` of the running recording (none: nothing to do)."""
    if _ACTIVE:
        _ACTIVE[-1].attach(path, append=append)


def terminal(stream: Any = None) -> Any:
    """The terminal stream under a tee (``sys.stderr`` by default): where progress bars go."""
    stream = sys.stderr if stream is None else stream
    return stream.stream if isinstance(stream, _Tee) else stream


def echo(line: str) -> None:
    """Print ``line`` on stderr: above the progress bars in a terminal (``tqdm.write``, which
    clears and redraws them), in the log too."""
    stream = terminal()
    if not stream.isatty():
        print(line, file=sys.stderr, flush=True)
        return
    from tqdm.auto import tqdm

    tqdm.write(line, file=stream)
    if isinstance(sys.stderr, _Tee):
        sys.stderr.log.keep(line + "\n")
