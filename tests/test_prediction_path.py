"""The prediction path of a loaded checkpoint (issue 24, item 2).

``LoadedCheckpoint.predictions`` is the one place a checkpoint predicts: without autograd,
with an inference batch size, cache-sized blocks in the feed-forward layers, and the finite
check once per split. Each test checks that a fast path computes what the training path
computes (values, not timings: BENCHMARKS.md has the timings).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import clgsi_checkpoint
from torch import nn

from msakit.api import split_for
from msakit.core.errors import MsakitError
from msakit.encoders import packed_text, sequence
from msakit.encoders.packed_text import run_text_encoder
from msakit.encoders.text import load_text_encoder
from msakit.models.import_weights import SOURCES
from msakit.training.trainer import predict_split


@pytest.mark.parametrize("rows, width", [(1000, 5), (130, 20), (0, 5)])
def test_blocked_feed_forward_is_the_feed_forward(rows, width, monkeypatch, one_thread):
    torch.manual_seed(0)
    linear1, linear2 = nn.Linear(width, 2048), nn.Linear(2048, width)
    x = torch.randn(rows, width)
    trained = sequence.feed_forward(x, linear1, linear2, p=0.1, training=False)  # autograd on
    assert trained.requires_grad or rows == 0
    monkeypatch.setattr(sequence, "INFERENCE_BLOCK", 16 * 2048)  # several 16-row blocks
    with torch.inference_mode():
        blocked = sequence.feed_forward(x, linear1, linear2, p=0.1, training=False)
    assert blocked.shape == (rows, width)
    torch.testing.assert_close(blocked, trained.detach(), rtol=0, atol=1e-5)
    stock = linear2(torch.relu(linear1(x))).detach()
    torch.testing.assert_close(blocked, stock, rtol=0, atol=1e-5)


def test_training_keeps_the_autograd_feed_forward():
    """Under autograd the blocked path (which saves nothing for backward) is never taken."""
    linear1, linear2 = nn.Linear(5, 64), nn.Linear(64, 5)
    out = sequence.feed_forward(torch.randn(7, 5), linear1, linear2, p=0.0, training=True)
    out.sum().backward()
    assert linear1.weight.grad is not None and linear1.weight.grad.abs().sum() > 0


def test_blocked_text_feed_forward_is_berts(tiny_bert, monkeypatch, one_thread):
    encoder = load_text_encoder(str(tiny_bert)).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (8, 20), generator=g)
    mask = (torch.arange(20) < torch.tensor([20, 3, 11, 17, 1, 20, 9, 14])[:, None]).long()
    text = torch.stack([ids * mask, mask, torch.zeros_like(ids)], dim=1)
    stock = encoder(input_ids=text[:, 0], attention_mask=text[:, 1]).last_hidden_state.detach()
    monkeypatch.setattr(packed_text, "TEXT_BLOCK", 1)  # blocks of 64 rows: 95 rows -> two
    with torch.inference_mode():
        blocked = run_text_encoder(encoder, text).last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(blocked[valid], stock[valid], rtol=0, atol=1e-5)


@pytest.mark.parametrize("named", ["paper", SOURCES["clgsi-authors"].preset])
def test_predictions_are_the_training_paths_whatever_the_batch(named, tiny_bert,
                                                              small_mosi_npz, tmp_path):
    ckpt = clgsi_checkpoint(named, tiny_bert, small_mosi_npz, tmp_path)
    part = split_for(ckpt, small_mosi_npz, "test")
    ours = ckpt.predictions(part)
    assert ours.dtype == np.float32 and ours.shape == (len(part),) and np.ptp(ours) > 0
    np.testing.assert_allclose(ckpt.predictions(part, batch_size=3), ours, rtol=0, atol=1e-5)
    before, _ = predict_split(ckpt.model, part, batch_size=ckpt.config.batch_size,
                              with_loss=False)  # autograd's path (evaluation in training)
    np.testing.assert_allclose(ours, before, rtol=0, atol=1e-5)


def test_a_prediction_that_is_no_number_names_its_position(tiny_bert, small_mosi_npz,
                                                           tmp_path):
    """Checked once per split, the error still names the first sample without a number,
    here in the third of four batches."""
    ckpt = clgsi_checkpoint("paper", tiny_bert, small_mosi_npz, tmp_path)
    part = split_for(ckpt, small_mosi_npz, "train")
    audio = np.array(part.audio)
    audio[9, 0] = np.nan
    audio[11, 0] = np.nan
    broken = dataclasses.replace(part, audio=audio,
                                 audio_lengths=np.maximum(part.audio_lengths, 1))
    with pytest.raises(MsakitError, match=r"predicts nan for sample 9 \(position"):
        ckpt.predictions(broken, batch_size=4)


def test_blocks_are_a_one_thread_path():
    """On several threads every row is one block (one parallel region per product)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert sequence.block_rows(1 << 17, 2048, 5000) == 5000
        torch.set_num_threads(1)
        assert sequence.block_rows(1 << 17, 2048, 5000) == 64
    finally:
        torch.set_num_threads(threads)
