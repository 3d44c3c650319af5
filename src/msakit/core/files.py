"""Writing files without losing any: atomic writes, outputs that are not inputs, run-folder locks.

* :func:`atomic_write` / :func:`write_text_atomic` / :func:`torch_save_atomic`: write to a
  uniquely named temporary file in the target's folder, then rename it over the target. On any
  failure (disk full, EFBIG, permissions, Ctrl-C) the temporary file is removed and the previous
  file, if any, is left as it was; an ``OSError`` becomes one :class:`MsakitError` line.
* :func:`check_distinct_output`: an output path may not be one of the command's inputs, nor
  anything but a regular file or a new name, nor a file of a run (:mod:`msakit.core.safety`, where
  every command's declared inputs and outputs are checked), before anything is read or written.
* :class:`RunLock`: a kernel lock (``flock``) on a run folder's lock file, dropped by the
  operating system when the process ends however it ends; a second writer gets one error line
  naming the holder.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import secrets
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from msakit.core.errors import MsakitError

__all__ = [
    "atomic_write",
    "write_text_atomic",
    "torch_save_atomic",
    "RunLock",
    "open_input",
    "open_readable",
    "describe_mode",
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
    created, so that a signal (msakit.core.guard), whatever moment it interrupts, leaves no
    temporary file behind.
    """
    path = Path(path)
    _check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MsakitError(f"cannot write {path}: {_reason(exc)}") from None
    temporary = path.parent / (
        f".{path.name}.{os.getpid()}-{next(_TEMPORARIES)}-{secrets.token_hex(3)}.tmp")
    tmp: Path | None = temporary  # what to remove at the end, if anything
    try:
        try:
            os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            tmp = None  # another writer's (never seen: the name is unique): not ours to remove
            raise
        yield temporary
        os.chmod(temporary, _file_mode())
        _check_replaceable(path)
        os.replace(temporary, path)
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


# --------------------------------------------------------------------------- reading inputs
def describe_mode(mode: int) -> str:
    """What a file of ``mode`` is, in words (for error lines)."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def open_input(path: str | os.PathLike[str], mode: str = "r", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for reading, refusing anything but a regular file without blocking
    (``O_NONBLOCK`` then ``fstat``): a FIFO or a device is one ``MsakitError`` line, even one
    put there after the command's checks. ``OSError`` (a missing file) is raised as ``open``
    raises it."""
    if any(c in mode for c in "wax+"):
        raise ValueError("open_input reads only")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MsakitError(f"{path} is {describe_mode(st.st_mode)}, not a regular file; msakit "
                              "reads only regular files")
        os.set_blocking(fd, True)
        return open(fd, mode, **kwargs)  # noqa: SIM115 - the caller closes it
    except BaseException:
        os.close(fd)
        raise


def open_readable(path: str | os.PathLike[str], mode: str = "r", **kwargs: Any) -> IO[Any]:
    """:func:`open_input`, with every failure to open as one ``MsakitError`` line naming the
    file (missing, not a regular file, not readable): the one way msakit's readers open a
    user's file."""
    try:
        return open_input(path, mode, **kwargs)
    except FileNotFoundError:
        raise MsakitError(f"{path}: no such file") from None
    except OSError as exc:
        raise MsakitError(f"{path}: cannot open: {exc.strerror or type(exc).__name__}") from None


# --------------------------------------------------------------------------- run-folder lock
class RunLock:
    """``with RunLock(folder):`` holds a kernel lock on ``folder/.msakit.lock`` while it writes.

    The lock is ``flock(LOCK_EX | LOCK_NB)`` on the open lock file: the operating system drops
    it when the process ends, however it ends (SIGKILL, a crash, the machine's power), so a lock
    is never stale and nothing has to be deleted by hand. A file left behind by a process that
    died holds no lock: the next writer simply takes it. The holder writes its pid and host into
    the file so that a second writer's one error line can name it.

    Never two holders: the file is removed on release while the lock is still held, and a writer
    that locked a file which was meanwhile removed or replaced (its inode is no longer the
    path's) lets it go and tries again, so a lock always lives on the file the path names.
    """

    _ATTEMPTS = 50

    def __init__(self, folder: str | os.PathLike[str], name: str = LOCK_FILE) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """``process PID`` (``on HOST`` when another host) as the lock file names it."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(200).decode("utf-8", "replace")
        except OSError:
            text = ""
        pid, _, host = text.strip().partition(" ")
        if not pid.isdigit():
            return "another process"
        where = "" if host in ("", socket.gethostname()) else f" on {host[:100]}"
        return f"process {pid}{where}"

    def acquire(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MsakitError(f"cannot create {self.folder}: {_reason(exc)}") from None
        for _ in range(self._ATTEMPTS):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise MsakitError(
                    f"{self.folder} is being written by {self.holder()} (lock {self.path}); "
                    "wait for it to end or choose another --out") from None
            except BaseException:
                os.close(fd)
                raise
            if self._still_named(fd):
                self._fd = fd
                self._write_holder(fd)
                return
            os.close(fd)  # removed or replaced after we opened it: lock the path's file
        raise MsakitError(f"{self.folder}: cannot take the lock {self.path}")

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MsakitError(f"cannot lock {self.folder} ({self.path}): {_reason(exc)}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise MsakitError(f"cannot lock {self.folder}: {self.path} is not a regular file")
        return fd

    def _still_named(self, fd: int) -> bool:
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def _write_holder(self, fd: int) -> None:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # the lock is held all the same; only the error line of a second writer is vaguer

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._still_named(fd):
                self.path.unlink()  # while still locked: see the class docstring
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
