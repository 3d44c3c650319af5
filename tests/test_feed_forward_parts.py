"""The audio/vision feed-forward block on several threads: the rows cut into one part per
thread (msakit.encoders.threads), each blocked on its own thread. Same values and gradients as
the written-out math with the same dropout mask, the same on every run for a thread count, and
prediction equal to the stock block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from msakit.encoders import sequence, threads
from msakit.encoders.dropout import dropout_multiplier


@pytest.fixture
def thread_count():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("count, rows", [(1, 700), (2, 701), (3, 1000), (2, 90)])
def test_row_parts_cover_the_rows_once(thread_count, monkeypatch, count, rows):
    monkeypatch.setattr(threads, "MIN_PART_ROWS", 100)
    thread_count(count)
    parts = threads.row_parts(rows)
    assert len(parts) == max(1, min(count, rows // 100))
    covered = [i for part in parts for i in range(part.start, part.stop)]
    assert covered == list(range(rows))


def _written_out(x, linear1, linear2, multiplier):
    return linear2(torch.relu(linear1(x)) * multiplier)


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("width", [5, 20])
def test_parts_give_the_written_out_values_and_gradients(thread_count, monkeypatch, count,
                                                         width):
    monkeypatch.setattr(threads, "MIN_PART_ROWS", 64)
    monkeypatch.setattr(sequence, "BACKWARD_BLOCK", 16 * 256)  # several blocks per part
    thread_count(count)
    torch.manual_seed(0)
    linear1, linear2 = nn.Linear(width, 256), nn.Linear(256, width)
    x = torch.randn(1001, width, requires_grad=True)
    assert len(threads.row_parts(1001)) == count
    torch.manual_seed(5)
    fast = sequence.feed_forward(x, linear1, linear2, p=0.2, training=True, fast=True)
    torch.manual_seed(5)
    reference = _written_out(x, linear1, linear2, dropout_multiplier((1001, 256), 0.2))
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(fast)
    params = [x, linear1.weight, linear1.bias, linear2.weight, linear2.bias]
    for ours, theirs in zip(torch.autograd.grad(fast, params, g),
                            torch.autograd.grad(reference, params, g), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_parts_repeat_for_a_thread_count(thread_count, monkeypatch):
    monkeypatch.setattr(threads, "MIN_PART_ROWS", 64)
    thread_count(2)
    linear1, linear2 = nn.Linear(5, 128), nn.Linear(128, 5)
    x = torch.randn(999, 5, requires_grad=True)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        out = sequence.feed_forward(x, linear1, linear2, p=0.1, training=True, fast=True)
        runs.append([out, *torch.autograd.grad(out.square().sum(),
                                               [x, linear1.weight, linear2.weight])])
    first, second = runs
    # The same dropout mask on both runs: a unit dropped in one run and kept in the other
    # would change an output by far more than rounding. Values are compared to float
    # rounding, not bit for bit: the BLAS may pick another kernel for a buffer placed
    # elsewhere in memory, and the weight gradients are the parts' sums added in part order.
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)


def test_parted_prediction_is_the_stock_block(thread_count, monkeypatch):
    monkeypatch.setattr(threads, "MIN_PART_ROWS", 64)
    thread_count(2)
    linear1, linear2 = nn.Linear(20, 256), nn.Linear(256, 20)
    x = torch.randn(777, 20)
    with torch.inference_mode():  # the workers write inference tensors: they must be in it too
        predicted = sequence.feed_forward(x, linear1, linear2, p=0.1, training=False)
    stock = linear2(torch.relu(linear1(x))).detach()
    torch.testing.assert_close(predicted, stock, rtol=0, atol=1e-5)


def test_threads_are_restored_after_the_parts(thread_count, monkeypatch):
    monkeypatch.setattr(threads, "MIN_PART_ROWS", 64)
    thread_count(2)
    seen = threads.on_parts(lambda part: (part.stop - part.start, torch.is_grad_enabled()),
                            threads.row_parts(500))
    assert [n for n, _ in seen] == [250, 250]
    assert not any(grad for _, grad in seen)  # work runs without autograd
    assert torch.get_num_threads() == 2
