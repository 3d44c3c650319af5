"""msakit's speed settings are explicit: nothing happens at import or in ``create_model``; the
Trainer applies the allocator and the fast dropout on CPUs when the run asks (the command line
does, the Python API does not unless told). The fast paths refuse or fix inputs they cannot
take, and the packed encoder layer is the stock layer in distribution, with dropout on."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import close_in_distribution, run_cli
from torch import nn

import msakit
from msakit.encoders import dropout
from msakit.encoders.packing import pack_layout
from msakit.encoders.sequence import PackedEncoderLayer
from msakit.training import allocator

TINY = ["feedforward=32", "early_stop=1"]


def test_importing_msakit_starts_no_thread_and_registers_no_fork_hook():
    """In a fresh interpreter, spy on os.register_at_fork, then import every msakit module."""
    script = r"""
import json, logging, os, random, threading
hooks = []
real = os.register_at_fork
def spy(**kwargs):
    hooks.append(sorted(getattr(f, "__module__", "?") or "?" for f in kwargs.values()))
    return real(**kwargs)
os.register_at_fork = spy
import torch, transformers  # third-party start-up is not msakit's
names = ("transformers", "transformers.modeling_utils")
levels = [logging.getLogger(n).level for n in names]
verbosity = transformers.logging.get_verbosity()
hooks.clear()
threads = threading.active_count()
import msakit, msakit.cli, msakit.encoders.dropout, msakit.encoders.sequence
import msakit.encoders.text, msakit.models.registry, msakit.training.trainer
msakit.models.registry.model_names()
print(json.dumps({
    "threads": [threads, threading.active_count()],
    "hooks": hooks,
    "levels": [levels, [logging.getLogger(n).level for n in names]],
    "verbosity": [verbosity, transformers.logging.get_verbosity()],
}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["threads"][0] == seen["threads"][1]
    # (a library msakit imports may register its own; none of msakit's)
    assert [h for h in seen["hooks"] if any(m.startswith("msakit") for m in h)] == []
    assert seen["levels"][0] == seen["levels"][1]
    assert seen["verbosity"][0] == seen["verbosity"][1]


@pytest.fixture
def spies(monkeypatch):
    """Record mallopt calls (without touching the real allocator) and NumPy mask draws."""
    calls = {"mallopt": [], "masks": 0}

    def fake_mallopt(param: int, value: int) -> int:
        calls["mallopt"].append((param, value))
        return 1

    real_each_stream = dropout._each_stream

    def each_stream(*args, **kwargs):
        calls["masks"] += 1
        return real_each_stream(*args, **kwargs)

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator, "_mallopt", lambda: fake_mallopt)
    monkeypatch.setattr(dropout, "_each_stream", each_stream)
    return calls


def _callers_models(tiny_bert):
    from transformers import AutoModel

    return nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2)), AutoModel.from_pretrained(tiny_bert)


def test_python_api_told_changes_nothing_outside_the_model(spies, tiny_bert, small_mosi_npz,
                                                           tmp_path):
    """With both CPU speed settings off, the allocator, the caller's modules and the loggers
    stay as they were."""
    mine, bert = _callers_models(tiny_bert)
    before = [type(m) for m in [*mine.modules(), *bert.modules()]]
    names = ("transformers", "transformers.modeling_utils")
    levels = [logging.getLogger(n).level for n in names]
    msakit.train(
        "clgsi", "mosi", small_mosi_npz, text_encoder=str(tiny_bert), seeds=[3], epochs=1,
        batch=8, out=tmp_path / "run", quiet=True,
        overrides=[*TINY, "reuse_memory=false", "fast_dropout=false"],
    )
    assert spies["mallopt"] == []  # the allocator is left alone
    assert spies["masks"] == 0  # no NumPy-drawn dropout mask
    assert [type(m) for m in [*mine.modules(), *bert.modules()]] == before
    assert [logging.getLogger(n).level for n in names] == levels
    assert not dropout.uses_fast_dropout(bert)


def test_python_api_turns_the_fast_paths_on_by_default(spies, tiny_bert, small_mosi_npz,
                                                       tmp_path):
    """The same defaults as the command line; the fast dropout stays inside the run's model."""
    mine, bert = _callers_models(tiny_bert)
    before = [type(m) for m in [*mine.modules(), *bert.modules()]]
    msakit.train(
        "clgsi", "mosi", small_mosi_npz, text_encoder=str(tiny_bert), seeds=[3], epochs=1,
        batch=8, out=tmp_path / "run", quiet=True, overrides=TINY,
    )
    assert (allocator._M_MMAP_MAX, 0) in spies["mallopt"]
    assert (allocator._M_TRIM_THRESHOLD, allocator._KEEP_FREE_BYTES) in spies["mallopt"]
    assert spies["masks"] > 0
    # The caller's other models (a Hugging Face encoder among them) keep nn.Dropout.
    assert [type(m) for m in [*mine.modules(), *bert.modules()]] == before


@pytest.mark.parametrize("switches", [[], ["reuse_memory=false", "fast_dropout=false"]])
def test_command_line_turns_the_fast_paths_on_unless_told(
    spies, switches, tiny_bert, small_mosi_npz, tmp_path
):
    sets = [x for s in [*TINY, *switches] for x in ("--set", s)]
    argv = ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(small_mosi_npz),
            "--text-encoder", str(tiny_bert), "--seeds", "3", "--epochs", "1", "--batch", "8",
            "--out", str(tmp_path / "run"), "--quiet", *sets]
    assert run_cli(argv) == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    on = not switches
    assert (f"fast_dropout: {str(on).lower()}" in saved) and (f"reuse_memory: {str(on).lower()}"
                                                              in saved)
    assert bool(spies["mallopt"]) is on
    assert (spies["masks"] > 0) is on


def test_relu_dropout_on_a_non_contiguous_tensor_is_the_contiguous_result():
    torch.manual_seed(0)
    x = torch.randn(300, 400).t()  # a transposed view: its NumPy reshape would be a copy
    assert not x.is_contiguous()
    y = x.contiguous()
    torch.manual_seed(9)
    scale_x = dropout.relu_dropout_(x, 0.25)
    torch.manual_seed(9)
    scale_y = dropout.relu_dropout_(y, 0.25)
    assert scale_x == scale_y
    assert torch.equal(x, y)  # changed in place, with the mask a contiguous tensor gets
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - (0.5 + 0.5 * 0.25)) < 0.01  # ReLU's half, then a quarter of the rest
    with pytest.raises(ValueError, match="float32 CPU tensor"):
        dropout.relu_dropout_(torch.randn(4, 4, dtype=torch.float64), 0.1)


def _layers(p: float, fast: bool) -> tuple[PackedEncoderLayer, nn.TransformerEncoderLayer]:
    torch.manual_seed(0)
    packed = PackedEncoderLayer(8, 2, dim_feedforward=32, dropout=p, batch_first=True)
    stock = nn.TransformerEncoderLayer(8, 2, dim_feedforward=32, dropout=p, batch_first=True)
    stock.load_state_dict(packed.state_dict())
    if fast:
        dropout.use_fast_dropout(packed)
    return packed, stock


@pytest.mark.parametrize("fast", [False, True])
def test_packed_layer_inherited_entry_points_are_the_stock_layer(fast):
    packed, stock = _layers(0.0, fast)
    x = torch.randn(3, 5, 8)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    for train in (True, False):
        packed.train(train)
        stock.train(train)
        with torch.no_grad():
            for kwargs in ({}, {"src_key_padding_mask": padding}, {"src_mask": causal}):
                valid = ~padding if "src_key_padding_mask" in kwargs else slice(None)
                assert torch.allclose(packed(x, **kwargs)[valid], stock(x, **kwargs)[valid],
                                      atol=1e-6)
    encoder = nn.TransformerEncoder(packed, 2, enable_nested_tensor=False)
    assert encoder(x, src_key_padding_mask=padding).shape == x.shape
    # With dropout on, the inherited forward runs and backpropagates too.
    packed_p, _ = _layers(0.3, fast)
    packed_p(x.requires_grad_(), src_key_padding_mask=padding).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("fast", [False, True])
def test_packed_layer_with_dropout_matches_the_stock_layer_in_distribution(fast):
    """p = 0.3 on every dropout (attention, feed-forward, both residual branches): the packed
    path and PyTorch's layer give outputs, input gradients and weight gradients with the same
    mean and variance over many independent draws (each batch row draws its own masks)."""
    draws, length, valid = 4000, 6, 4
    packed, stock = _layers(0.3, fast)
    packed.train()
    stock.train()
    torch.manual_seed(1)
    sequence = torch.randn(1, length, 8)
    padding = torch.zeros(draws, length, dtype=torch.bool)
    padding[:, valid:] = True
    weight = torch.randn(valid, 8)
    layout = pack_layout(padding, 2)

    def run(layer, packed_path: bool):
        x = sequence.expand(draws, -1, -1).clone().requires_grad_()
        if packed_path:
            out = layer.forward_packed(x, padding, layout)
        else:
            out = layer(x, src_key_padding_mask=padding)
        out = out[:, :valid]
        grad_x, = torch.autograd.grad((out * weight).sum(), x)
        return out.detach().reshape(draws, -1), grad_x[:, :valid].reshape(draws, -1)

    torch.manual_seed(2)
    out_p, grad_p = run(packed, True)
    torch.manual_seed(3)
    out_s, grad_s = run(stock, False)
    assert out_p.std(0).min() > 0  # dropout is on: the draws differ
    close_in_distribution(out_p, out_s, draws)
    close_in_distribution(grad_p, grad_s, draws)

    # Weight gradients: one per chunk of rows, the chunks being independent draws.
    chunks, rows = 100, 20
    x = sequence.expand(rows, -1, -1)
    pad = padding[:rows]
    kept = pack_layout(pad, 2)

    def weight_grads(layer, packed_path: bool) -> torch.Tensor:
        grads = []
        for _ in range(chunks):
            out = layer.forward_packed(x, pad, kept) if packed_path else layer(
                x, src_key_padding_mask=pad
            )
            params = [layer.linear1.weight, layer.linear2.weight, layer.self_attn.in_proj_weight]
            g = torch.autograd.grad((out[:, :valid] * weight).sum(), params)
            grads.append(torch.cat([t.flatten() for t in g]))
        return torch.stack(grads)

    torch.manual_seed(4)
    wg_p = weight_grads(packed, True)
    torch.manual_seed(5)
    wg_s = weight_grads(stock, False)
    close_in_distribution(wg_p, wg_s, chunks, z=5.5)


def test_the_test_of_distributions_catches_a_missing_dropout_scale():
    """The tolerance is tight enough to see dropout without its 1 / (1 - p) scale."""
    torch.manual_seed(0)
    n = 4000
    x = torch.rand(n, 16) + 1.0
    mask = (torch.rand(n, 16) > 0.3).float()
    right, unscaled = x * mask / 0.7, x * mask
    with pytest.raises(AssertionError):
        close_in_distribution(right, unscaled, n)
    other = (torch.rand(n, 16) + 1.0) * (torch.rand(n, 16) > 0.3).float() / 0.7
    close_in_distribution(right, other, n)
    assert math.isfinite(float(right.var(0).mean()))
