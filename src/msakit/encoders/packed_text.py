"""A BERT encoder run without padding tokens, on its own (Hugging Face) parameters.

Hugging Face's ``BertModel`` computes every position of the padded (B, L) batch: a batch of
shuffled sentences pays for B times its longest sentence, about twice the real tokens on MOSI.
:func:`run_text_encoder` computes the same function on the real tokens only, the way
FlashAttention-2's "unpadding" does: the embeddings are looked up as usual, the valid tokens are
packed into one (N, D) matrix, every position-wise step of every layer (the Q/K/V projection,
the output projections, GELU, dropout, LayerNorms) runs on those N rows, and attention runs per
group of sentences of similar length (:mod:`msakit.encoders.packing`), each padded to its own
longest sentence and masked as before. Q, K and V come from one matmul with the concatenated
stock weights (``query``/``key``/``value`` stay separate parameters: the state dict is
Hugging Face's). The layers' own modules are called for everything else, so their dropouts
(Hugging Face's, or msakit's fast dropout after
:func:`~msakit.encoders.dropout.use_fast_dropout`) apply as in the stock forward; the attention
probabilities are dropped by the layer's ``attention.self.dropout`` module.

Valid positions equal the stock forward's (float rounding; ``tests/test_packed_text.py``);
padded positions of the returned hidden states are zero, which is why a model that reads padded
positions (CLGSI's ``subnet_pool=padded``, the authors' preset) asks for the stock forward
(``packed=False``). Encoders that are not plain BERT encoders (decoders, relative positions,
chunked feed-forward, other architectures) always take the stock forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from msakit.encoders.packing import PackedLayout, grouped_attention, pack_layout
from msakit.encoders.sequence import attend, block_rows, records_graph
from msakit.encoders.text import bert_inputs


@dataclass
class TextOutput:
    """What msakit's models read from a text encoder (the fields of Hugging Face's output)."""

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None


def packs(model: nn.Module) -> bool:
    """Whether ``model`` is a plain BERT encoder that :func:`run_text_encoder` can unpad."""
    config = getattr(model, "config", None)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if config is None or layers is None or type(model.embeddings).__name__ != "BertEmbeddings":
        return False
    plain = (
        not getattr(config, "is_decoder", False)
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "chunk_size_feed_forward", 0)
    )
    return plain and all(type(layer).__name__ == "BertLayer" for layer in layers)


def _attention(layer: Any, rows: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """BERT's self-attention block (``layer.attention``) over packed rows (N, D)."""
    sa = layer.attention.self
    weight = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight])
    bias = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias])
    qkv = F.linear(rows, weight, bias)  # (N, 3D): one matmul instead of three
    p = sa.dropout.p if sa.training else 0.0
    dropout = sa.dropout if p > 0.0 else None

    def attention(q, k, v, padding):
        return attend(q, k, v, padding, p=p, dropout=dropout)

    context = grouped_attention(qkv, layout, sa.num_attention_heads, attention)
    return layer.attention.output(context, rows)


TEXT_BLOCK = 1 << 19
"""Hidden values per block of the text encoder's feed-forward when it predicts (2 MiB of
float32: 341 rows of MiniLM's 1536-wide intermediate layer; measured on 1 EPYC thread, 7111
rows: 256-512-row blocks 1.15-1.2x faster than the whole activation, 64-row blocks slower)."""


def _feed_forward(layer: Any, attended: torch.Tensor) -> torch.Tensor:
    """BERT's feed-forward block (``layer.intermediate``, ``layer.output``) over rows (N, D);
    without autograd, in eval mode (dropout is the identity) and in float32 (no autocast) a
    block of rows at a time, so the (rows, 4D) intermediate activation stays in cache between
    the two matmuls."""
    inter, out = layer.intermediate, layer.output
    if out.training or records_graph(attended, inter, out) or torch.is_autocast_enabled("cpu"):
        return out(inter(attended), attended)
    dense = out.dense
    step = max(64, block_rows(TEXT_BLOCK, inter.dense.out_features, attended.size(0)))
    result = attended.new_empty(attended.size(0), dense.out_features)
    for start in range(0, attended.size(0), step):
        torch.addmm(dense.bias, inter(attended[start:start + step]), dense.weight.t(),
                    out=result[start:start + step])
    return out.LayerNorm(result.add_(attended))


def _layer(layer: Any, rows: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    return _feed_forward(layer, _attention(layer, rows, layout))


def _packed(
    model: Any, inputs: dict[str, torch.Tensor], hidden_states: bool
) -> TextOutput:
    embedded = model.embeddings(
        input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"]
    )  # (B, L, D): cheap, and the positions are the padded batch's
    heads = model.config.num_attention_heads
    layout = pack_layout(inputs["attention_mask"] == 0, heads)
    rows = layout.pack(embedded)
    states = [rows]
    for layer in model.encoder.layer:
        rows = _layer(layer, rows, layout)
        states.append(rows)
    last = layout.unpack(rows)
    pooler = getattr(model, "pooler", None)
    return TextOutput(
        last_hidden_state=last,
        pooler_output=pooler(last) if pooler is not None else None,
        hidden_states=tuple(layout.unpack(s) for s in states) if hidden_states else None,
    )


def run_text_encoder(
    model: nn.Module, text: torch.Tensor, *, hidden_states: bool = False, packed: bool = True
) -> TextOutput:
    """Run a BERT-family encoder on MMSA ``text_bert`` rows (B, 3, L).

    ``packed`` (and a plain BERT encoder, :func:`packs`, with every sentence at least one
    token long): without padding tokens, padded positions of the outputs zero; otherwise the
    stock forward. ``hidden_states``: also every layer's input and the last output, as
    Hugging Face's ``output_hidden_states=True`` gives them."""
    inputs = bert_inputs(text)
    if packed and packs(model) and bool((inputs["attention_mask"].sum(1) > 0).all()):
        return _packed(model, inputs, hidden_states)
    out = model(**inputs, output_hidden_states=hidden_states)
    return TextOutput(
        last_hidden_state=out.last_hidden_state,
        pooler_output=getattr(out, "pooler_output", None),
        hidden_states=out.hidden_states if hidden_states else None,
    )
