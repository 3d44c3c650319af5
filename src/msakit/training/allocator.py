"""Keep freed CPU buffers inside the process instead of handing them back to the OS.

A CPU training step allocates and frees many large tensors (the (frames x 2048) feed-forward
activations, attention weights, their gradients). glibc's malloc serves every block above
32 MB with a fresh ``mmap`` and returns it with ``munmap`` when freed, so each step pays page
faults and page zeroing for the same buffers again; on these machines that was 15% of a step.
Intel's PyTorch CPU guides recommend an allocator that keeps freed memory (jemalloc or tcmalloc
through ``LD_PRELOAD``); :func:`reuse_freed_memory` gets the same effect from glibc itself at run
time with ``mallopt``: no ``mmap`` for large blocks, no trimming of the heap below 1 GB of free
space. The memory then stays with the process once used (peak RSS, not the steady state, is what
a run needs either way: BENCHMARKS.md records both before and after).

Process-wide, irreversible and Linux/glibc only (a no-op elsewhere), so nothing calls it at
import: the Trainer does, on CPUs, when the run's ``reuse_memory`` setting is on. It is on
by default, from the command line and the Python API alike (``--set reuse_memory=false`` turns
it off).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_FREE_BYTES = 1 << 30

_applied = False


def _mallopt():
    """The C library's ``mallopt(param, value)``, or None off Linux or without one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed large blocks for reuse; True if it took effect."""
    global _applied
    if _applied:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # glibc returns 1 on success; other C libraries (musl) accept the call and do nothing.
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE_BYTES))
    return _applied
