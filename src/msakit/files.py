"""Writing files without losing any: atomic writes, outputs that are not inputs, run-folder locks.

* :func:`atomic_write` / :func:`write_text_atomic` / :func:`torch_save_atomic`: write to a
  uniquely named temporary file in the target's folder, then rename it over the target. On any
  failure (disk full, EFBIG, permissions, Ctrl-C) the temporary file is removed and the previous
  file, if any, is left as it was; an ``OSError`` becomes one :class:`MsakitError` line.
* :func:`check_distinct_output`: an output path may not be one of the command's inputs (nor an
  existing folder), checked before anything is read or written.
* :class:`RunLock`: a lock file holding the writer's pid and host in a run folder; a second
  writer gets one error line, a lock left by a dead process on this host is taken over with a
  warning.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msakit.errors import MsakitError

__all__ = [
    "atomic_write",
    "write_text_atomic",
    "torch_save_atomic",
    "check_distinct_output",
    "RunLock",
    "LOCK_FILE",
]

LOCK_FILE = ".msakit.lock"
_TEMPORARIES = itertools.count()
_UMASK: int | None = None


def _file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp's is 0o600."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "no space left on the device"
        if exc.errno == errno.EFBIG:
            return "file too large (a size limit of the system)"
        return exc.strerror or str(exc)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on a clean exit it replaces ``path``.

    The temporary name is unique (``.NAME.PID-N-XXXXXX.tmp``), so two writers never share one.
    On any exception the temporary file is removed and ``path`` keeps its previous content; an
    ``OSError`` (and the ``RuntimeError`` torch raises when its writer fails) is re-raised as
    ``MsakitError("cannot write PATH: reason")``. The name is chosen before the file is
    created, so that a signal (msakit.guard), whatever moment it interrupts, leaves no
    temporary file behind.
    """
    path = Path(path)
    if path.is_dir():
        raise MsakitError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MsakitError(f"cannot write {path}: {_reason(exc)}") from None
    tmp: Path | None = path.parent / (
        f".{path.name}.{os.getpid()}-{next(_TEMPORARIES)}-{secrets.token_hex(3)}.tmp")
    try:
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            tmp = None  # another writer's (never seen: the name is unique): not ours to remove
            raise
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise MsakitError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        try:
            if tmp is not None:
                tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # pragma: no cover - a folder that became unwritable meanwhile
            pass


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """``path.write_text(text)``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_atomic(path: str | os.PathLike[str], write: Callable[[Any], None]) -> Path:
    """Call ``write(binary_file)`` on a temporary file, then rename it to ``path``."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def torch_save_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)``, atomically: a reader never sees half a checkpoint, and a
    failed write (disk full) keeps the previous checkpoint."""
    import torch

    return write_atomic(path, lambda f: torch.save(obj, f))


# --------------------------------------------------------------------------- outputs vs inputs
def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_distinct_output(
    out: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str] | None],
    flag: str = "--out",
) -> None:
    """Raise ``MsakitError`` if the output file ``out`` is one of ``inputs`` (same path, symlink
    or hard link) or an existing folder. ``None`` entries are skipped; call it before anything
    is read or written."""
    if out is None:
        return
    out = Path(out)
    if out.is_dir():
        raise MsakitError(f"{flag} {out} is a folder; give a file name")
    for item in inputs:
        if item is None or not str(item):
            continue
        if _same(out, Path(item)):
            raise MsakitError(
                f"{flag} {out} is also an input ({item}); writing it would overwrite that input: "
                "choose another output file"
            )


# --------------------------------------------------------------------------- run-folder lock
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``with RunLock(folder):`` holds ``folder/.msakit.lock`` (pid and host) while it writes.

    Another live process holding the lock is one ``MsakitError``; a lock whose process is gone
    (same host) is taken over with a warning on stderr. The lock file is removed on exit.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False

    def _holder(self) -> tuple[int | None, str]:
        try:
            text = self.path.read_text()
        except OSError:
            return None, ""
        pid, _, host = text.strip().partition(" ")
        try:
            return int(pid), host
        except ValueError:
            return None, host

    def acquire(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MsakitError(f"cannot create {self.folder}: {_reason(exc)}") from None
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host = self._holder()
                here = host in ("", socket.gethostname())
                if pid is not None and (not here or _alive(pid)):
                    where = "" if here else f" on {host}"
                    raise MsakitError(
                        f"{self.folder} is being written by process {pid}{where} (lock file "
                        f"{self.path}); wait for it to end or choose another --out (if that "
                        "process is gone, delete the lock file)"
                    ) from None
                print(f"warning: {self.path}: taking over the lock of process {pid}, which is "
                      "no longer running", file=sys.stderr)
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise MsakitError(f"cannot write to {self.folder}: {_reason(exc)}") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return
        raise MsakitError(f"{self.folder}: cannot take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                pid, _ = self._holder()
                if pid == os.getpid():
                    self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
