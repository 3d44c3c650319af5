"""The command line's last line of defence: every failure becomes one line, never a traceback.

:func:`run_guarded` calls a command and turns what escapes it into one ``error:`` line on stderr
and an exit status: a :class:`~msakit.errors.MsakitError` (bad input; status 2), Ctrl-C (130),
an ``OSError`` (a file, the disk; status 1), ``MemoryError`` (1). Anything else is a bug in
msakit: the line names the exception and a file that holds the full traceback (status 1).
"""

from __future__ import annotations

import _thread
import errno
import faulthandler
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable

from msakit.errors import MsakitError

__all__ = ["run_guarded", "INTERRUPTED"]

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""
SWALLOWED_CTRL_C_RETRY = 0.05
"""Seconds after which a Ctrl-C that Python could not raise (see :class:`_CtrlC`) is
delivered again."""
CTRL_C_GRACE = 60.0
"""Seconds after the first Ctrl-C within which the command must have ended; past them msakit
ends the process itself (see :meth:`_CtrlC._watchdog`)."""


def _say(line: str) -> None:
    try:
        print(f"error: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or gone
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _traceback_file(exc: BaseException) -> str | None:
    try:
        fd, path = tempfile.mkstemp(prefix="msakit-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"msakit {' '.join(sys.argv[1:])}\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=f)
        return path
    except OSError:
        return None


class _CtrlC:
    """Remembers that Ctrl-C was pressed. A KeyboardInterrupt raised inside an import can leave
    a library half-initialised, so that the command then fails with some other exception
    (e.g. a RecursionError in NumPy's lazy attributes); after a Ctrl-C that is still an
    interruption, not a bug.

    Python cannot raise an exception out of some places: a ctypes callback (openSMILE calls one
    per frame during ``msakit extract``), ``__del__``, a weakref callback. A Ctrl-C landing there
    would be printed as "Exception ignored ... Traceback" and lost, and the command would go on;
    instead it is not printed and is delivered again a moment later, until it reaches the
    command.

    A library that never returns after a Ctrl-C (a wait on a lock or a thread that the
    interruption left behind) must not keep the command alive: if the command has not returned
    :data:`CTRL_C_GRACE` seconds after the first Ctrl-C, the process ends with status 130 and
    one line naming a file that holds where every thread was."""

    def __init__(self) -> None:
        self.pressed = False
        self.reported = False
        self.active = False
        self.previous = None
        self.previous_hook = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
            self.active = True
        return self

    def _handle(self, signum, frame) -> None:
        if not self.pressed:
            self.pressed = True
            # A daemon thread: it keeps watching through the interpreter's shutdown (joining
            # other threads) and dies with a process that ended in time.
            threading.Thread(target=self._watchdog, name="msakit-ctrl-c", daemon=True).start()
        raise KeyboardInterrupt

    def _watchdog(self) -> None:
        time.sleep(CTRL_C_GRACE)
        if not self.active:  # the command ended (in-process callers go on living)
            return
        where = ""
        try:
            fd, path = tempfile.mkstemp(prefix="msakit-hang-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(f"msakit {' '.join(sys.argv[1:])}\n")
                f.flush()
                faulthandler.dump_traceback(f, all_threads=True)
            where = f"; where it waited: {path}"
        except OSError:
            pass
        if not self.reported:
            _say(f"interrupted (Ctrl-C); msakit did not stop within {CTRL_C_GRACE:g} s and was "
                 f"ended{where}")
        os._exit(INTERRUPTED)

    def _unraisable(self, unraisable) -> None:
        if not (self.active and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            self.previous_hook(unraisable)
            return
        # Not from here: the hook itself must not be interrupted.
        threading.Timer(SWALLOWED_CTRL_C_RETRY, self._deliver_again).start()

    def _deliver_again(self) -> None:
        if self.active:
            _thread.interrupt_main()

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            self.active = False
            signal.signal(signal.SIGINT, self.previous)
            sys.unraisablehook = self.previous_hook


def run_guarded(fn: Callable[[], int]) -> int:
    """``fn()``'s exit status, or the status of the one ``error:`` line it ended with."""
    with _CtrlC() as ctrl_c:
        return _run(fn, ctrl_c)


def _run(fn: Callable[[], int], ctrl_c: _CtrlC) -> int:
    try:
        try:
            return fn()
        except KeyboardInterrupt:
            return _interrupted(ctrl_c)
        except Exception as exc:  # noqa: BLE001 - every failure is one line
            # After Ctrl-C any failure is the interruption: a KeyboardInterrupt raised inside a
            # callback from C (torch.save's writer, an import) comes back as another exception.
            return _interrupted(ctrl_c) if ctrl_c.pressed else _failure(exc)
    except KeyboardInterrupt:  # a second Ctrl-C while reporting the first failure
        return INTERRUPTED


def _interrupted(ctrl_c: _CtrlC) -> int:
    ctrl_c.reported = True
    _say("interrupted (Ctrl-C); files being written were left as they were")
    return INTERRUPTED


def _failure(exc: Exception) -> int:
    """The one line and exit status of a failure that is not a Ctrl-C."""
    if isinstance(exc, MsakitError):
        _say(str(exc))
        return 2
    if isinstance(exc, BrokenPipeError):  # e.g. `msakit report ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return 1
    if isinstance(exc, MemoryError):
        _say("out of memory; try a smaller --batch")
        return 1
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        reason = ("no space left on the device" if exc.errno == errno.ENOSPC
                  else exc.strerror or _first_line(exc))
        _say(f"{where}{reason}")
        return 1
    path = _traceback_file(exc)  # a bug: one line and the traceback in a file
    where = f"; traceback in {path}" if path else ""
    _say(f"unexpected {type(exc).__name__}: {_first_line(exc)} (a bug in msakit, please report "
         f"it{where})")
    return 1
