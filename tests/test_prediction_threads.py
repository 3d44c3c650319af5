"""Prediction on several threads (issue 24, item 2): each prediction batch is cut into parts of
clips, one per PyTorch thread, each collated and predicted on its own pool thread
(``LoadedCheckpoint.predictions``). Values, not timings (BENCHMARKS.md has the timings): the
parts predict what one thread predicts, in split order, in the run's precision, and the
threads read one memory-mapped file side by side without mixing their reads.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import clgsi_checkpoint

from msakit.api import split_for
from msakit.data import safe_format
from msakit.data.mmsa import load_feature_file
from msakit.encoders import threads
from msakit.models.import_weights import SOURCES
from msakit.training import checkpoints


@pytest.fixture
def thread_count():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _watch(ckpt) -> list[tuple[int, bool, int]]:
    """(thread, autocast on, clips) of every forward of the checkpoint's model."""
    seen: list[tuple[int, bool, int]] = []

    def hook(module, args):
        seen.append((threading.get_ident(), torch.is_autocast_enabled("cpu"), len(args[0])))

    ckpt.model.register_forward_pre_hook(hook)
    return seen


@pytest.mark.parametrize("named", ["paper", SOURCES["clgsi-authors"].preset])
@pytest.mark.parametrize("count", [2, 3])
def test_parts_predict_what_one_thread_predicts(named, count, tiny_bert, small_mosi_npz,
                                                tmp_path, thread_count, monkeypatch):
    ckpt = clgsi_checkpoint(named, tiny_bert, small_mosi_npz, tmp_path)
    part = split_for(ckpt, small_mosi_npz, "train")  # 23 clips
    thread_count(1)
    alone = ckpt.predictions(part, batch_size=10)
    seen = _watch(ckpt)
    monkeypatch.setattr(checkpoints, "MIN_PART_CLIPS", 2)
    thread_count(count)
    kept: list[np.ndarray] = []
    ours = ckpt.predictions(part, batch_size=10,
                            keep=lambda output: kept.append(output.prediction.numpy().ravel()))
    assert torch.get_num_threads() == count  # restored after the parts
    # batches of 10, 10 and 3 clips: each of the first two cut into `count` parts, each part
    # predicted on a pool thread (in whichever order they start); the last (3 clips, parts
    # of at least 2) one part, in this thread
    parts = [len(range(10)[s]) for s in threads.row_parts(10, 2)]
    assert len(parts) == count
    here = threading.get_ident()
    assert sorted(clips for thread, _, clips in seen if thread != here) == sorted(parts * 2)
    assert [clips for thread, _, clips in seen if thread == here] == [3]
    np.testing.assert_allclose(ours, alone, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(kept), ours)  # keep: in split order


def test_parts_predict_in_the_runs_precision(tiny_bert, small_mosi_npz, tmp_path, thread_count,
                                             monkeypatch):
    """autocast is per thread: each part enters the run's (bf16) in its own thread."""
    ckpt = clgsi_checkpoint("paper", tiny_bert, small_mosi_npz, tmp_path, amp="bf16")
    part = split_for(ckpt, small_mosi_npz, "train")
    seen = _watch(ckpt)
    monkeypatch.setattr(checkpoints, "MIN_PART_CLIPS", 2)
    thread_count(2)
    ckpt.predictions(part, batch_size=10)
    assert sum(thread != threading.get_ident() for thread, _, _ in seen) == 4  # 2 x 2 parts
    assert all(on for _, on, _ in seen)


def test_few_clips_stay_one_part(tiny_bert, small_mosi_npz, tmp_path, thread_count):
    ckpt = clgsi_checkpoint("paper", tiny_bert, small_mosi_npz, tmp_path)
    part = split_for(ckpt, small_mosi_npz, "train")
    seen = _watch(ckpt)
    thread_count(2)
    ckpt.predictions(part)  # 23 clips < 2 x MIN_PART_CLIPS
    assert [(thread, clips) for thread, _, clips in seen] == [(threading.get_ident(), 23)]


def test_work_a_pool_thread_splits_runs_in_that_thread(thread_count):
    """The pool never waits on itself: parts started inside a part run where they start (with
    as many threads as parts, a nested split handed to the pool would wait forever)."""
    thread_count(2)
    halves = [slice(0, 1), slice(1, 2)]

    def outer(_: slice) -> tuple[int, list[int], bool]:
        inner = threads.on_parts(lambda _: threading.get_ident(), halves)
        return threading.get_ident(), inner, threads.in_worker()

    results = threads.on_parts(outer, halves)
    for here, inner, busy in results:
        assert busy and inner == [here, here] and here != threading.get_ident()
    assert not threads.in_worker()


def test_threads_read_one_mapped_file_side_by_side(small_mosi_npz):
    """Reads of a memory-mapped split are positional: eight threads taking different clips of
    one file at once get what one thread gets (a shared file position would mix them)."""
    audio = load_feature_file(str(small_mosi_npz)).splits["train"].audio
    assert safe_format.is_mapped(audio)
    whole = np.asarray(audio)
    picks = [np.random.default_rng(seed).permutation(len(whole))[:5] for seed in range(400)]

    def take(indices: np.ndarray) -> np.ndarray:
        return safe_format.take(audio, indices, whole.shape[1])

    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(take, picks))
    for indices, got in zip(picks, taken, strict=True):
        np.testing.assert_array_equal(got, whole[indices])


def test_an_interruption_while_the_pool_starts_leaves_no_thread_behind(monkeypatch):
    """A Ctrl-C that lands while the pool starts a thread, before ``concurrent.futures``
    registers it for its exit hook, would leave a thread the interpreter waits for forever
    after the command's last line (seen: SIGTERM to a starting tune trial). The pool is shut
    down instead, which wakes every thread of it, registered or not."""
    from concurrent.futures import thread as futures_thread

    started = []
    original = futures_thread.ThreadPoolExecutor._adjust_thread_count

    def interrupted(self):
        original(self)
        for worker in self._threads:  # as if the signal came before the registration
            futures_thread._threads_queues.pop(worker, None)
            started.append(worker)
        raise KeyboardInterrupt

    monkeypatch.setattr(threads, "_POOL", None)
    monkeypatch.setattr(futures_thread.ThreadPoolExecutor, "_adjust_thread_count", interrupted)
    with pytest.raises(KeyboardInterrupt):
        threads.on_pool([lambda: 1, lambda: 2])
    assert started and threads._POOL is None
    for worker in started:
        worker.join(timeout=120)
        assert not worker.is_alive()
