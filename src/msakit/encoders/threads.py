"""Worker threads for the CPU work msakit splits itself (dropout masks, the audio/vision
feed-forward block, prediction).

Three uses share one pool: NumPy filling dropout masks side by side (it releases the GIL), the
feed-forward block split into row parts, one part per thread (:func:`on_parts`), and a
prediction batch split into parts of clips, each predicted on its own thread
(:meth:`msakit.training.checkpoints.LoadedCheckpoint.predictions`). Work that a pool thread
starts runs in that thread (:func:`in_worker`): the pool never waits on itself. The pool
starts on first use, never at import, and a forked child (a DDP worker started by fork, a
DataLoader worker) forgets the parent's threads and starts its own when it needs them.

Why parts: MOSI's audio feed-forward multiplies (frames x 5) by (5 x 2048) and back, a
memory-bound product. On one thread it runs in cache-sized row blocks
(:func:`msakit.encoders.sequence.block_rows`); on several threads, hundreds of small blocks
would each be an OpenMP parallel region with its barrier, so the rows are cut into one part per
thread instead, and each part runs its blocks on its own thread with PyTorch's intra-op threads
set to 1: one barrier per product instead of hundreds. The parts are fixed by the row count
and the thread count, and results are combined in part order; dropout masks do not depend on
the parts (:mod:`msakit.encoders.dropout` draws them for the whole activation). On another
thread count the weight gradients are summed in another order: the same to float rounding.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

_T = TypeVar("_T")
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_FORK_HOOK = False
_WORKER = threading.local()

MIN_PART_ROWS = 512
"""Fewest rows a part gets: below 2 x this, the rows stay one part (the threads' start-up
would cost more than the product)."""


def _forget_pool() -> None:
    """A forked child has none of the parent's threads: it starts its own pool when needed."""
    global _POOL, _POOL_SIZE
    _POOL, _POOL_SIZE = None, 0


def pool(size: int) -> ThreadPoolExecutor:
    """A pool of at least ``size`` threads, started on first use (never at import)."""
    global _POOL, _POOL_SIZE, _FORK_HOOK
    if not _FORK_HOOK:
        os.register_at_fork(after_in_child=_forget_pool)
        _FORK_HOOK = True
    if _POOL is None or _POOL_SIZE < size:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
        _POOL, _POOL_SIZE = ThreadPoolExecutor(size, thread_name_prefix="msakit-worker"), size
    return _POOL


def in_worker() -> bool:
    """Whether this thread is one of the pool's, running a job (its own splits run in it)."""
    return getattr(_WORKER, "busy", False)


def row_parts(rows: int, least: int | None = None) -> list[slice]:
    """The row ranges of :func:`on_parts`: one per PyTorch intra-op thread, each at least
    ``least`` rows (:data:`MIN_PART_ROWS` by default; one part on one thread or for few
    rows)."""
    least = MIN_PART_ROWS if least is None else least
    parts = max(1, min(torch.get_num_threads(), rows // max(1, least)))
    bounds = [rows * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def on_parts(work: Callable[[slice], _T], parts: Sequence[slice]) -> list[_T]:
    """``[work(part) for part in parts]``, the parts side by side on the pool's threads with
    PyTorch's intra-op threads set to 1 meanwhile (one part: in the calling thread, as is).

    ``work`` runs without autograd (in inference mode if the caller is; it fills tensors given
    to it: the caller is an autograd function's forward or backward, or a prediction) and must
    only write its own part of shared outputs."""
    if len(parts) == 1 or in_worker():
        return [work(part) for part in parts]
    threads, inference = torch.get_num_threads(), torch.is_inference_mode_enabled()
    torch.set_num_threads(1)
    try:
        return on_pool([functools.partial(_without_grad, work, part, inference)
                        for part in parts])
    finally:
        torch.set_num_threads(threads)


def on_pool(calls: Sequence[Callable[[], _T]]) -> list[_T]:
    """Each call on its own pool thread; their results, in order.

    A ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM/SIGHUP through :mod:`msakit.core.guard`) while
    the calls are handed out or awaited shuts the pool down: its threads end once their call
    returns, and the next use starts a new pool. An interruption that lands while the pool
    starts a thread can leave that thread unknown to ``concurrent.futures``' exit hook, and the
    interpreter would then wait for it forever after the command's last line."""
    workers = pool(len(calls))
    try:
        jobs = [workers.submit(call) for call in calls]
        return [job.result() for job in jobs]
    except KeyboardInterrupt:
        _abandon(workers)
        raise


def _abandon(workers: ThreadPoolExecutor) -> None:
    """Shut ``workers`` down without waiting (every thread of it, registered or not, reads the
    wake-up from its queue) and forget it if it is the shared pool."""
    global _POOL, _POOL_SIZE
    workers.shutdown(wait=False, cancel_futures=True)
    if _POOL is workers:
        _POOL, _POOL_SIZE = None, 0


def _without_grad(work: Callable[[slice], _T], part: slice, inference: bool) -> _T:
    # Grad and inference modes are per thread: a pool thread starts with grad on; a caller in
    # inference mode hands it tensors that only inference mode may write. OpenMP's thread
    # count is per thread too: set here, so that this thread's products run on it alone
    # whatever the count was when it first ran one.
    torch.set_num_threads(1)
    _WORKER.busy = True
    try:
        with torch.inference_mode() if inference else torch.no_grad():
            return work(part)
    finally:
        _WORKER.busy = False
