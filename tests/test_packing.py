"""Padding-free compute: packed layouts, length-grouped attention and the unpadded BERT give the
stock layers' values and gradients (dropout 0) and their distribution (dropout on)."""

from __future__ import annotations

import pytest
import torch
from conftest import close_in_distribution
from torch import nn

from msakit.encoders import dropout as fast
from msakit.encoders import packing
from msakit.encoders.packed_text import packs, run_text_encoder
from msakit.encoders.packing import pack_layout
from msakit.encoders.sequence import PackedEncoderLayer, SequenceEncoder


def _padding(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]


def test_layout_packs_valid_frames_in_length_groups(monkeypatch):
    monkeypatch.setattr(packing, "GROUP_OVERHEAD", 10)  # cheap groups: several of them
    padding = _padding([3, 7, 1, 7, 5], 7)
    padding[4, 1] = True  # a hole inside a sequence is masked too
    layout = pack_layout(padding, heads=2)
    assert layout.keep.numel() == int((~padding).sum())
    assert sorted(layout.keep.tolist()) == (~padding).flatten().nonzero().squeeze(1).tolist()
    rows = [int(k) // 7 for k in layout.keep]
    assert rows == [1] * 7 + [3] * 7 + [4] * 4 + [0] * 3 + [2]  # longest first, ties in order
    assert len(layout.groups) > 1 and layout.groups[-1].stop == layout.keep.numel()
    x = torch.randn(5, 7, 3)
    back = layout.unpack(layout.pack(x))
    assert torch.equal(back[~padding], x[~padding]) and not back[padding].any()
    with pytest.raises(ValueError, match="valid frame"):
        pack_layout(_padding([2, 0], 3))


def test_the_cut_minimises_the_attention_cost():
    lengths = [500, 480, 300, 290, 280, 40, 30, 20]
    sizes = packing._cut(lengths, heads=1)
    assert sum(sizes) == len(lengths)

    def cost(cut):
        total, first = 0, 0
        for size in cut:
            total += size * lengths[first] ** 2 + packing.GROUP_OVERHEAD
            first += size
        return total

    assert cost(sizes) <= min(cost(c) for c in ([8], [1] * 8, [2, 3, 3], [1, 1, 3, 3]))


def _stock_pair(dim=8, heads=2, p=0.0, use_fast=False):
    torch.manual_seed(0)
    enc = SequenceEncoder(dim, heads, layers=2, feedforward=32, dropout=p)
    stock = nn.ModuleList(
        nn.TransformerEncoderLayer(dim, heads, 32, p, batch_first=True) for _ in enc.layers
    )
    for mine, theirs in zip(enc.layers, stock, strict=True):
        theirs.load_state_dict(mine.state_dict())
    if use_fast:
        fast.use_fast_dropout(enc)
    return enc, stock


@pytest.mark.parametrize("overhead", [10, 10**9])  # many groups / one group
def test_grouped_encoder_equals_stock_layers_values_and_gradients(monkeypatch, overhead):
    monkeypatch.setattr(packing, "GROUP_OVERHEAD", overhead)
    enc, stock = _stock_pair()
    x = torch.randn(6, 13, 8)
    lengths = torch.tensor([13, 4, 0, 9, 9, 1])
    out, _ = enc(x, lengths)
    h, _, padding, layout = enc.prepare(x, lengths)
    assert (len(layout.groups) > 2) == (overhead == 10)
    for layer in stock:
        h = layer(h, src_key_padding_mask=padding)
    valid = ~padding
    assert torch.allclose(out[valid], h[valid], atol=1e-5)
    assert not out[padding].any()  # padded frames are not computed
    g = torch.randn_like(out)
    out[valid].mul(g[valid]).sum().backward()
    h[valid].mul(g[valid]).sum().backward()
    for (name, a), b in zip(enc.named_parameters(), stock.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-4, rtol=1e-4), name


def test_layer_on_a_padded_batch_keeps_padded_frames_and_full_output_completes_them():
    enc, stock = _stock_pair()
    x = torch.randn(3, 6, 8)
    padding = _padding([6, 2, 4], 6)
    layer = enc.layers[0]
    layout = pack_layout(padding, 2)
    out = layer.forward_packed(x, padding, layout)
    assert torch.equal(out[padding], x[padding])
    reference = stock[0](x, src_key_padding_mask=padding)
    assert torch.allclose(out[~padding], reference[~padding], atol=1e-5)
    full = layer.forward_packed(x, padding, None)  # every frame, padded ones too
    assert torch.allclose(full, reference, atol=1e-5)


@pytest.mark.parametrize("use_fast", [False, True])
def test_grouped_encoder_with_dropout_matches_stock_in_distribution(monkeypatch, use_fast):
    """p = 0.3 everywhere, sequences of different lengths in several groups: outputs and input
    gradients at valid frames have the stock layers' mean and variance over many draws."""
    monkeypatch.setattr(packing, "GROUP_OVERHEAD", 1)
    enc, stock = _stock_pair(p=0.3, use_fast=use_fast)
    enc.train()
    stock.train()
    draws, lengths = 1500, [5, 3, 2]
    torch.manual_seed(1)
    sample = torch.randn(len(lengths), 5, 8)
    weight = torch.randn(len(lengths), 5, 8)
    padding = _padding(lengths, 5)

    def run(packed: bool):
        outs, grads = [], []
        x = sample.repeat(draws // 100, 1, 1).requires_grad_()
        pad = padding.repeat(draws // 100, 1)
        w = weight.repeat(draws // 100, 1, 1)
        for _ in range(100):
            if packed:
                out, _ = enc(x, (~pad).sum(1))
            else:
                out, _, padded, _ = enc.prepare(x, (~pad).sum(1))
                for layer in stock:
                    out = layer(out, src_key_padding_mask=padded)
            out = out.masked_fill(pad[..., None], 0.0)
            grad, = torch.autograd.grad((out * w).sum(), x)
            outs.append(out.detach().reshape(-1, len(lengths), 40))
            grads.append(grad.reshape(-1, len(lengths), 40))
        return torch.cat(outs).flatten(1), torch.cat(grads).flatten(1)

    torch.manual_seed(2)
    out_p, grad_p = run(True)
    torch.manual_seed(3)
    out_s, grad_s = run(False)
    assert out_p.std(0).max() > 0
    close_in_distribution(out_p, out_s, out_p.size(0))
    close_in_distribution(grad_p, grad_s, grad_p.size(0))


def _bert(tiny_bert, p: float):
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(tiny_bert)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = p
    torch.manual_seed(0)
    return BertModel(config)


def _text(lengths: list[int], length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    text = torch.zeros(len(lengths), 3, length)
    for i, n in enumerate(lengths):
        text[i, 0, :n] = torch.randint(5, 1000, (n,), generator=gen).float()
        text[i, 1, :n] = 1
        text[i, 2, n // 2 : n] = 1  # a second segment
    return text


def test_unpadded_bert_equals_the_stock_forward_values_and_gradients(tiny_bert):
    model = _bert(tiny_bert, 0.0).train()
    assert packs(model)
    text = _text([9, 3, 7, 9, 1], 9)
    valid = text[:, 1] > 0
    mine = run_text_encoder(model, text, hidden_states=True)
    theirs = run_text_encoder(model, text, hidden_states=True, packed=False)
    assert torch.allclose(mine.last_hidden_state[valid], theirs.last_hidden_state[valid],
                          atol=1e-5)
    assert not mine.last_hidden_state[~valid].any()
    assert torch.allclose(mine.pooler_output, theirs.pooler_output, atol=1e-5)
    assert len(mine.hidden_states) == len(theirs.hidden_states)
    for a, b in zip(mine.hidden_states, theirs.hidden_states, strict=True):
        assert torch.allclose(a[valid], b[valid], atol=1e-5)
    g = torch.randn_like(mine.last_hidden_state)
    grads = []
    for out in (mine, theirs):
        loss = (out.last_hidden_state[valid] * g[valid]).sum() + out.pooler_output.sum()
        grads.append(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))
    names = [n for n, _ in model.named_parameters()]
    for name, a, b in zip(names, *grads, strict=True):
        if b is None:
            continue
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), name
    assert "encoder.layer.0.attention.self.query.weight" in model.state_dict()


def test_unpadded_bert_with_dropout_matches_stock_in_distribution(tiny_bert):
    model = _bert(tiny_bert, 0.2).train()
    text = _text([6, 2, 4], 6).repeat(400, 1, 1)
    valid = text[:, 1] > 0
    torch.manual_seed(1)
    weight = torch.randn(3, 6, 32).repeat(400, 1, 1)

    def run(packed: bool):
        model.zero_grad()
        out = run_text_encoder(model, text, packed=packed).last_hidden_state
        out = out.masked_fill(~valid[..., None], 0.0)
        (out * weight).sum().backward()
        grad = model.encoder.layer[0].attention.self.value.weight.grad.clone()
        return out.detach().reshape(400, -1), grad

    torch.manual_seed(2)
    out_p, _ = run(True)
    torch.manual_seed(3)
    out_s, _ = run(False)
    assert out_p.std(0).max() > 0
    close_in_distribution(out_p, out_s, 400)
    # Weight gradients: one per call, over independent calls.
    small = text[:30]
    weight_small = weight[:30]

    def grads(packed: bool) -> torch.Tensor:
        rows = []
        for _ in range(60):
            model.zero_grad()
            out = run_text_encoder(model, small, packed=packed).last_hidden_state
            (out.masked_fill(~valid[:30, ..., None], 0.0) * weight_small).sum().backward()
            rows.append(model.encoder.layer[1].intermediate.dense.weight.grad.flatten().clone())
        return torch.stack(rows)

    torch.manual_seed(4)
    g_p = grads(True)
    torch.manual_seed(5)
    g_s = grads(False)
    close_in_distribution(g_p, g_s, 60, z=5.5)


def test_other_encoders_and_empty_sentences_take_the_stock_forward(tiny_bert):
    model = _bert(tiny_bert, 0.0).eval()
    text = _text([4, 0], 4)  # an empty sentence: every key masked, stock behaviour kept
    out = run_text_encoder(model, text)
    stock = run_text_encoder(model, text, packed=False)
    assert torch.equal(out.last_hidden_state, stock.last_hidden_state)
    model.config.is_decoder = True
    assert not packs(model)
    assert not packs(PackedEncoderLayer(8, 2, batch_first=True))


def test_bench_flops_reports_the_text_encoder_and_the_step_shares(tiny_bert, mosi_file):
    from msakit.bench import bench

    result = bench("clgsi", "mosi", mosi_file, batch=8, text_encoder=str(tiny_bert),
                   overrides=["feedforward=32"], warmup_steps=1, max_steps=2, flops=True)
    assert result["steps"] == 2
    peak = result["matmul_gflop_per_s"]
    for part in ("text_encoder", "step"):
        assert result[f"{part}_gflop_per_s"] > 0
        share = result[f"{part}_share_of_matmul_peak"]
        assert share == pytest.approx(result[f"{part}_gflop_per_s"] / peak, abs=1e-3)
    # The step's FLOPs include the text encoder's and the audio/vision encoders' of 8 samples.
    assert result["step_gflop"] > 0 and result["text_encoder_step_gflop"] > 0
