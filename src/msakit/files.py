"""Writing files without losing any: atomic writes, outputs that are not inputs, run-folder locks.

* :func:`atomic_write` / :func:`write_text_atomic` / :func:`torch_save_atomic`: write to a
  uniquely named temporary file in the target's folder, then rename it over the target. On any
  failure (disk full, EFBIG, permissions, Ctrl-C) the temporary file is removed and the previous
  file, if any, is left as it was; an ``OSError`` becomes one :class:`MsakitError` line.
* :func:`check_distinct_output`: an output path may not be one of the command's inputs, nor
  anything but a regular file or a new name, nor a file of a run (:mod:`msakit.safety`, where
  every command's declared inputs and outputs are checked), before anything is read or written.
* :class:`RunLock`: a lock file holding the writer's pid and host in a run folder; a second
  writer gets one error line, a lock left by a dead process on this host is taken over with a
  warning.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
import tempfile
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

    The temporary name is unique (``.NAME.XXXXXXXX.tmp``), so two writers never share one. On
    any exception the temporary file is removed and ``path`` keeps its previous content; an
    ``OSError`` (and the ``RuntimeError`` torch raises when its writer fails) is re-raised as
    ``MsakitError("cannot write PATH: reason")``.
    """
    path = Path(path)
    _check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MsakitError(f"cannot write {path}: {_reason(exc)}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        _check_replaceable(path)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise MsakitError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # pragma: no cover - a folder that became unwritable meanwhile
            pass


def _check_replaceable(path: Path) -> None:
    """An atomic write replaces only a regular file (or creates a new name): never a folder,
    a symbolic link (it would replace the link, not write its target), a FIFO or a device node
    (``os.replace`` over ``/dev/null`` would remove the device)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise MsakitError(f"cannot write {path}: {_reason(exc)}") from None
    if stat.S_ISDIR(mode) or (stat.S_ISLNK(mode) and path.is_dir()):
        raise MsakitError(f"cannot write {path}: it is a folder")
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise MsakitError(f"cannot write {path}: it is {kind}; msakit replaces only regular "
                          "files")


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
def check_distinct_output(
    out: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str] | None],
    flag: str = "--out",
) -> None:
    """Raise ``MsakitError`` if the output file ``out`` is one of ``inputs`` (same file by
    device and inode: symlinks and hard links too), an existing folder, FIFO, device or symbolic
    link, or a file of an existing run (:func:`msakit.safety.check_output`). ``None`` entries
    are skipped; call it before anything is read or written."""
    if out is None:
        return
    from msakit.safety import Output, check_output

    check_output(Output(flag, Path(out)), inputs)


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
