"""The speed-ups change no math: packed feed-forward, trimming, text cache, bucketing, bf16."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from msakit import api, cli
from msakit.data.batching import collate, epoch_plan, shard
from msakit.encoders.sequence import SequenceEncoder
from msakit.encoders.text import load_text_encoder
from msakit.training.trainer import add_text_cache, build_text_cache, evaluate_model


def test_packed_layers_equal_stock_layers_forward_and_backward():
    torch.manual_seed(0)
    enc = SequenceEncoder(6, 2, layers=2, feedforward=64, dropout=0.0)
    stock = nn.ModuleList(
        nn.TransformerEncoderLayer(6, 2, 64, 0.0, batch_first=True) for _ in enc.layers
    )
    for mine, theirs in zip(enc.layers, stock, strict=True):
        theirs.load_state_dict(mine.state_dict())
    x = torch.randn(3, 11, 6)
    lengths = torch.tensor([11, 4, 0])
    out, mask = enc(x, lengths)
    h, _, padding, _ = enc.prepare(x, lengths)
    for layer in stock:
        h = layer(h, src_key_padding_mask=padding)
    keep = ~padding
    assert torch.allclose(out[keep], h[keep], atol=1e-6)
    out[keep].pow(2).sum().backward()
    h[keep].pow(2).sum().backward()
    for (name, a), b in zip(enc.named_parameters(), stock.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


def _tiny_clgsi(tiny_bert, mosi_file, **overrides):
    config = api.build_config(
        "clgsi", "mosi", text_encoder=str(tiny_bert), batch=8,
        overrides={"feedforward": 32, "dropout": 0.0, **overrides},
    )
    encoder = load_text_encoder(config.text_encoder)
    data = api.load_data(mosi_file, 30522)
    torch.manual_seed(0)
    return config, api.build_model(config, api.dims_of(data), encoder), data


def test_trimmed_batch_equals_full_padding(tiny_bert, mosi_file):
    _, model, data = _tiny_clgsi(tiny_bert, mosi_file)
    model.eval()
    split = data.splits["test"]
    batch = collate(split, np.arange(8))
    full = batch.replace(
        audio=torch.from_numpy(np.array(split.audio[:8])),
        vision=torch.from_numpy(np.array(split.vision[:8])),
        text=torch.from_numpy(np.array(split.text_bert[:8])),
    )
    with torch.no_grad():
        assert batch.audio.shape[1] < full.audio.shape[1]
        trimmed, padded = model(batch).prediction, model(full).prediction
    assert torch.allclose(trimmed, padded, atol=1e-5)


def test_frozen_text_encoder_cache_is_exact(tiny_bert_12, tmp_path):
    from msakit.data.synthetic import write_synthetic

    path = write_synthetic(str(tmp_path / "mosei.pkl"), "mosei", (12, 4, 4), seed=1)
    config = api.build_config(
        "conki", "mosei", text_encoder=str(tiny_bert_12), batch=4,
        overrides={"feedforward": 32, "adapter_dim": 8, "fusion_dim": 8, "head_dim": 8},
    )
    encoder = load_text_encoder(config.text_encoder)
    data = api.load_data(path, 30522)
    torch.manual_seed(0)
    model = api.build_model(config, api.dims_of(data), encoder)
    for p in model.text_encoder.parameters():
        p.requires_grad_(False)
    assert not model.trains_text_encoder()
    split = data.splits["train"]
    cache = build_text_cache(model, split, 5, torch.device("cpu"))
    model.train()
    assert not model.text_encoder.training  # frozen encoders run in eval mode
    batch = collate(split, np.array([3, 0, 7, 5]))
    torch.manual_seed(1)
    direct = model(batch).prediction
    torch.manual_seed(1)
    cached = model(add_text_cache(batch, cache)).prediction
    assert not batch.text_cache  # the batch it was given is unchanged
    assert any(k.startswith("seq_hidden_") for k in add_text_cache(batch, cache).text_cache)
    assert torch.allclose(direct, cached, atol=1e-6)


def test_bucket_plan_is_a_reproducible_partition_with_less_padding(mosi_file):
    split = api.load_data(mosi_file, None).splits["train"]
    n = len(split)
    plan = epoch_plan(split, 8, seed=3, epoch=2, sampler="bucket")
    again = epoch_plan(split, 8, seed=3, epoch=2, sampler="bucket")
    assert all(np.array_equal(a, b) for a, b in zip(plan, again, strict=True))
    assert sorted(np.concatenate(plan).tolist()) == list(range(n))
    other_epoch = epoch_plan(split, 8, seed=3, epoch=3, sampler="bucket")
    assert not all(np.array_equal(a, b) for a, b in zip(plan, other_epoch, strict=True))
    # Ranks take slices of the same global batches.
    for batch in plan:
        parts = [shard(batch, r, 3) for r in range(3)]
        assert np.array_equal(np.concatenate(parts), batch)

    def padded_frames(p):
        lengths = split.audio_lengths
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in p)

    random_plan = epoch_plan(split, 8, seed=3, epoch=2, sampler="random")
    assert padded_frames(plan) < padded_frames(random_plan)


def test_bf16_autocast_metrics_stay_close_to_fp32(tiny_bert, mosi_file):
    """Stated tolerance: bf16 predictions within 0.05 of fp32, MAE within 0.02."""
    config, model, data = _tiny_clgsi(tiny_bert, mosi_file)
    split = data.splits["test"]
    fp32 = evaluate_model(model, split, dataset="mosi", batch_size=8,
                          device=torch.device("cpu"), bf16=False)
    bf16 = evaluate_model(model, split, dataset="mosi", batch_size=8,
                          device=torch.device("cpu"), bf16=True)
    assert np.abs(fp32.predictions - bf16.predictions).max() < 0.05
    assert abs(fp32.metrics["MAE"] - bf16.metrics["MAE"]) < 0.02


def test_bench_prints_json_with_throughput_and_memory(tiny_bert, mosi_file, capsys):
    code = cli.main([
        "bench", "--model", "clgsi", "--dataset", "mosi", "--data", str(mosi_file),
        "--batch", "8", "--max-steps", "2", "--warmup-steps", "1", "--text-encoder",
        str(tiny_bert), "--set", "feedforward=32", "--set", "sampler=bucket", "--json",
    ])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["steps"] == 2 and result["samples"] == 16 and result["batch"] == 8
    assert result["samples_per_s"] > 0 and result["median_step_s"] > 0
    assert result["peak_rss_mb"] > 50
    assert result["sampler"] == "bucket"


@pytest.mark.parametrize("sampler", ["random", "bucket"])
def test_plan_does_not_depend_on_world_size(mosi_file, sampler):
    split = api.load_data(mosi_file, None).splits["train"]
    plan = epoch_plan(split, 6, seed=1, epoch=0, sampler=sampler)
    for world in (1, 2, 4):
        shards = [[shard(b, r, world) for b in plan] for r in range(world)]
        rebuilt = [np.concatenate([shards[r][i] for r in range(world)]) for i in range(len(plan))]
        assert all(np.array_equal(a, b) for a, b in zip(plan, rebuilt, strict=True))


def test_fast_dropout_keeps_the_right_share_scales_and_is_seeded():
    from msakit.encoders.dropout import FastDropout

    drop = FastDropout(0.1).train()
    x = torch.ones(400, 2048, requires_grad=True)
    torch.manual_seed(5)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002
    scale = 1.0 / (1.0 - 6554 / 65536)
    assert torch.allclose(y[kept], torch.full_like(y[kept], scale))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # gradient flows through the kept elements only
    torch.manual_seed(5)
    assert torch.equal(drop(x), y)  # reproducible from torch's seed
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    drop.p = 0.0  # --set dropout=0 reaches it like any nn.Dropout
    assert torch.equal(drop(x), x)


def test_unfused_attention_equals_fused_attention():
    from msakit.encoders.sequence import attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, requires_grad=True) for _ in range(3))
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 4:] = True
    fused = attend(q, k, v, padding, p=0.0)
    unfused = attend(q, k, v, padding, p=0.0, unfused=True)
    assert torch.allclose(fused, unfused, atol=1e-6)
    g = torch.randn_like(fused)
    grads_f = torch.autograd.grad(fused, (q, k, v), g)
    grads_u = torch.autograd.grad(unfused, (q, k, v), g)
    for a, b in zip(grads_f, grads_u, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # With dropout the kept weights are scaled and padded keys still get no weight.
    torch.manual_seed(1)
    dropped = attend(q, k, torch.eye(7).expand(2, 3, 7, 7), padding, p=0.5)
    assert torch.all(dropped[1, :, :, 4:] == 0)


def test_feed_forward_block_equals_the_written_out_math_with_the_same_mask():
    """ReLU + dropout in one pass, the scale moved to the small products: same values and grads
    as linear2(relu(linear1(x)) * mask / (1 - p)) with the mask drawn from the same seed."""
    from msakit.encoders.dropout import dropout_multiplier
    from msakit.encoders.sequence import feed_forward

    torch.manual_seed(0)
    linear1, linear2 = nn.Linear(5, 64), nn.Linear(64, 5)
    x = torch.randn(1500, 5, requires_grad=True)
    torch.manual_seed(3)
    fast = feed_forward(x, linear1, linear2, p=0.3, training=True, fast=True)
    torch.manual_seed(3)
    multiplier = dropout_multiplier((1500, 64), 0.3)
    assert abs((multiplier == 0).float().mean().item() - 0.3) < 0.01
    reference = linear2(torch.relu(linear1(x)) * multiplier)
    assert torch.allclose(fast, reference, atol=1e-5)
    g = torch.randn_like(fast)
    params = [x, linear1.weight, linear1.bias, linear2.weight, linear2.bias]
    for a, b in zip(torch.autograd.grad(fast, params, g), torch.autograd.grad(reference, params, g),
                    strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)
    # Eval mode: no dropout at all, the stock block.
    stock = linear2(torch.relu(linear1(x)))
    assert torch.allclose(
        feed_forward(x, linear1, linear2, p=0.3, training=False), stock, atol=1e-6
    )


def test_dropout_masks_do_not_depend_on_block_size_or_threads(monkeypatch):
    from msakit.encoders import dropout

    shape = (300, 1000)  # above the size drawn in two threads
    torch.manual_seed(7)
    whole = dropout.dropout_multiplier(shape, 0.1)
    monkeypatch.setattr(dropout, "_BLOCK", 4 * 37)
    torch.manual_seed(7)
    assert torch.equal(dropout.dropout_multiplier(shape, 0.1), whole)
    # The in-place ReLU + dropout draws the same mask from the same seed.
    x = torch.randn(shape)
    expected = torch.relu(x) * (whole != 0)
    torch.manual_seed(7)
    scale = dropout.relu_dropout_(x, 0.1)
    assert torch.equal(x, expected)
    assert scale == pytest.approx(1.0 / (1.0 - 6554 / 65536))
    assert torch.all(whole[whole != 0] == np.float32(scale))


def test_fast_dropout_is_switched_on_and_off_for_the_whole_model(tiny_bert, mosi_file):
    from msakit.encoders.dropout import FastDropout, use_fast_dropout, uses_fast_dropout
    from msakit.encoders.sequence import PackedEncoderLayer
    from msakit.training.trainer import set_dropout

    _, model, _ = _tiny_clgsi(tiny_bert, mosi_file, dropout=None)
    assert not uses_fast_dropout(model)  # create_model builds PyTorch's own dropouts
    packed = [m for m in model.modules() if isinstance(m, PackedEncoderLayer)]
    ps = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    use_fast_dropout(model)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    text = [m for m in model.text_encoder.modules() if isinstance(m, nn.Dropout)]
    assert text and all(type(m) is FastDropout for m in dropouts)
    assert [m.p for m in dropouts] == ps
    assert packed and all(m.fast_dropout for m in packed)
    set_dropout(model, 0.0)  # --set dropout=0 still reaches them
    assert all(m.p == 0.0 for m in dropouts)
    use_fast_dropout(model, False)  # and back: PyTorch's own again
    assert not uses_fast_dropout(model)
    assert all(type(m) is nn.Dropout for m in model.modules() if isinstance(m, nn.Dropout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_keeps_freed_memory_on_linux():
    from msakit.training.allocator import reuse_freed_memory

    assert reuse_freed_memory() is True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_dropout_masks_work_in_a_forked_child():
    """The mask threads do not survive a fork; a child must draw without hanging."""
    from msakit.encoders import dropout

    dropout.dropout_multiplier((400, 1000), 0.1)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        kept = pool.apply_async(_kept_share_in_child).get(timeout=60)
    assert abs(kept - 0.9) < 0.01


def _kept_share_in_child() -> float:
    from msakit.encoders import dropout

    # NumPy only: PyTorch's own OpenMP threads are not fork-safe either.
    return float(np.count_nonzero(dropout.dropout_multiplier((400, 1000), 0.1).numpy()) / 400_000)


def test_fast_dropout_keeps_a_bf16_tensor_bf16():
    from msakit.encoders.dropout import FastDropout

    x = torch.ones(64, 64, dtype=torch.bfloat16)
    y = FastDropout(0.5).train()(x)
    assert y.dtype == torch.bfloat16
    assert 0.3 < (y == 0).float().mean().item() < 0.7
