"""The command line's last line of defence: every failure becomes one line, never a traceback.

:func:`run_guarded` calls a command and turns what escapes it into one ``error:`` line on stderr
and an exit status: a :class:`~msakit.core.errors.MsakitError` (bad input; status 2), a signal that
ends the command (Ctrl-C 130, SIGTERM 143, SIGHUP 129: 128 + the signal's number), an
``OSError`` (a file, the disk; status 1), ``MemoryError`` (1). Anything else is a bug in
msakit: the line names the exception and a file that holds the full traceback (status 1).

SIGINT, SIGTERM and SIGHUP all end a command the way Ctrl-C does: each raises
:class:`Interrupted`, a ``KeyboardInterrupt``, so that every cleanup path (``finally``,
``except KeyboardInterrupt``: temporary files removed, run locks released, the running Optuna
trial marked FAIL, extract's workers ended) runs for all three.
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
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from msakit.core.errors import MsakitError, one_line

__all__ = ["run_guarded", "catching_signals", "ending_signal", "Interrupted", "INTERRUPTED",
           "ENDING_SIGNALS"]

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""
ENDING_SIGNALS: dict[int, str] = {
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "terminated (SIGTERM)",
    **({signal.SIGHUP: "terminated (SIGHUP: the terminal closed)"}
       if hasattr(signal, "SIGHUP") else {}),
}
"""The signals that end a command as Ctrl-C does, and how its one line names each."""
SWALLOWED_CTRL_C_RETRY = 0.05
"""Seconds after which a signal that Python could not raise (see :class:`_Signals`) is
delivered again."""
CTRL_C_GRACE = 60.0
"""Seconds after the first ending signal within which the command must have ended; past them
msakit ends the process itself (see :meth:`_Signals._watchdog`)."""


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP. A ``KeyboardInterrupt`` (so
    that every path that cleans up after Ctrl-C cleans up after all three) that knows its
    signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def status(self) -> int:
        return 128 + self.signum


def _say(line: str, prefix: str = "error: ") -> None:
    """Print the one ``error:`` line: one line, its length bounded (:func:`one_line`), whatever
    user data it holds."""
    try:
        print(f"{prefix}{one_line(line)}", file=sys.stderr, flush=True)
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


def _is_default(signum: int) -> bool:
    """Whether ``signum`` has Python's default handling (not ignored, as ``nohup`` leaves
    SIGHUP, nor handled by someone else)."""
    current = signal.getsignal(signum)
    return current is (signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


_ending: int | None = None


def ending_signal() -> int | None:
    """The signal that is ending the command (the first one caught), or None."""
    return _ending


class _Signals:
    """Remembers the first ending signal (:data:`ENDING_SIGNALS`). A KeyboardInterrupt raised
    inside an import can leave a library half-initialised, so that the command then fails with
    some other exception (e.g. a RecursionError in NumPy's lazy attributes); after a signal
    that is still an interruption, not a bug.

    Python cannot raise an exception out of some places: a ctypes callback (openSMILE calls one
    per frame during ``msakit extract``), ``__del__``, a weakref callback. A signal landing
    there would be printed as "Exception ignored ... Traceback" and lost, and the command would
    go on; instead it is not printed and is delivered again a moment later, until it reaches
    the command.

    A library that never returns after the interruption (a wait on a lock or a thread that the
    interruption left behind) must not keep the command alive: if the command has not returned
    :data:`CTRL_C_GRACE` seconds after the first signal, the process ends with the signal's
    status and one line naming a file that holds where every thread was."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reported = False
        self.active = False
        self.previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
        self.previous_hook: Callable[[Any], object] = sys.unraisablehook  # set on entering

    @property
    def pressed(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> _Signals:
        global _ending
        if threading.current_thread() is threading.main_thread():
            _ending = None
            for signum in ENDING_SIGNALS:
                if _is_default(signum):
                    self.previous[signum] = signal.signal(signum, self._handle)
            if self.previous:
                self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
                self.active = True
        return self

    def _handle(self, signum, frame) -> None:
        global _ending
        if self.signum is None:
            self.signum = _ending = signum
            # A daemon thread: it keeps watching through the interpreter's shutdown (joining
            # other threads) and dies with a process that ended in time.
            threading.Thread(target=self._watchdog, name="msakit-signal", daemon=True).start()
        raise Interrupted(signum)

    def _watchdog(self) -> None:
        assert self.signum is not None  # set before this thread starts
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
            _say(f"{ENDING_SIGNALS[self.signum]}; msakit did not stop within {CTRL_C_GRACE:g} s "
                 f"and was ended{where}")
        os._exit(128 + self.signum)

    def _unraisable(self, unraisable) -> None:
        if not (self.active and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            self.previous_hook(unraisable)
            return
        # Not from here: the hook itself must not be interrupted.
        threading.Timer(SWALLOWED_CTRL_C_RETRY, self._deliver_again).start()

    def _deliver_again(self) -> None:
        if self.active:
            # typeshed asks for a signal.Signals; any signal number is what Python takes
            _thread.interrupt_main(self.signum or signal.SIGINT)  # type: ignore[arg-type]

    def __exit__(self, *exc) -> None:
        if self.previous:
            self.active = False
            for signum, previous in self.previous.items():
                signal.signal(signum, previous)
            self.previous = {}
            sys.unraisablehook = self.previous_hook

    def status(self, exc: BaseException | None = None) -> int:
        """The exit status of the interruption (Ctrl-C's when no signal was seen)."""
        signum = self.signum or getattr(exc, "signum", None) or signal.SIGINT
        return 128 + signum

    def report(self, exc: BaseException | None = None) -> int:
        """The one line of the interruption; its exit status."""
        self.reported = True
        status = self.status(exc)
        _say(f"{ENDING_SIGNALS.get(status - 128, 'interrupted')}; files being written were left "
             "as they were")
        return status


@contextmanager
def catching_signals() -> Iterator[_Signals]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` inside the block (in the main
    thread; those a caller set to be ignored or handled otherwise keep their handling). Nested
    blocks share the outermost one's handler: ``python -m msakit`` catches them from its first
    import on, and the command it runs reports them."""
    handler = signal.getsignal(signal.SIGINT)
    outer = getattr(handler, "__self__", None)
    if isinstance(outer, _Signals) and outer.active:
        yield outer
        return
    with _Signals() as signals:
        yield signals


NOISE = (
    # torch.load on msakit's own weights_only checkpoints (and on a refused file): not the
    # user's concern; what matters about the file is the error line msakit prints.
    r"Detected pickle protocol",
)
"""Library warnings the command line drops (regular expressions matched against the message)."""


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside the block a Python warning (NumPy's ``RuntimeWarning: Mean of empty slice``, a
    library's ``UserWarning``) reaches stderr as one ``warning:`` line, once per message, without
    the source line and location the default format adds; the :data:`NOISE` is dropped."""
    seen: set[str] = set()

    def show(message, category, *where, **more) -> None:  # warnings.showwarning's signature
        del where, more  # the file, line and source the default format adds
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        if text not in seen:
            seen.add(text)
            _say(f"warning: {text}", prefix="")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for pattern in NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        warnings.showwarning = show
        yield


def run_guarded(fn: Callable[[], int]) -> int:
    """``fn()``'s exit status, or the status of the one ``error:`` line it ended with; Python
    warnings on the way are one ``warning:`` line each (:func:`one_line_warnings`)."""
    with catching_signals() as signals, one_line_warnings():
        return _run(fn, signals)


def _run(fn: Callable[[], int], signals: _Signals) -> int:
    try:
        try:
            return fn()
        except KeyboardInterrupt as exc:
            return signals.report(exc)
        except Exception as exc:  # noqa: BLE001 - every failure is one line
            # After a signal any failure is the interruption: a KeyboardInterrupt raised inside
            # a callback from C (torch.save's writer, an import) comes back as another exception.
            return signals.report() if signals.pressed else _failure(exc)
    except KeyboardInterrupt as exc:  # a second signal while reporting the first failure
        return signals.status(exc)


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
