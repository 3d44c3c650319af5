"""ALMT: Adaptive Language-guided Multimodal Transformer (Zhang et al., EMNLP 2023).

As thuiar/MMSA's repository implements it (``models/singleTask/ALMT.py``, trained by
``trains/singleTask/ALMT.py``; not in the ``mmsa`` 2.2.1 package; MMSA's port of the authors'
Haoyu-ha/ALMT). Readings in docs/readings.md, "TETFN, CENET, ALMT".

* Embedding: BERT's last hidden states (text) and the audio and vision frames, each mapped to
  width d (Linear), prefixed with ``tokens`` learned tokens, plus a learned positional table,
  through a pre-norm Transformer; the first ``tokens`` outputs are the modality's H^0.
* AHL: a text Transformer (``ahl_depth`` - 1 layers) gives H_t^1 .. H_t^{ahl_depth} (its input
  included); the hyper-modality H_hyper (learned, ``tokens`` x d) passes ``ahl_depth`` layers,
  each LayerNorm(H_hyper) + W_o [softmax(Q_t K_a^T) V_a + softmax(Q_t K_v^T) V_v] with queries
  from the layer's text state and keys/values from H_a^0 / H_v^0 (each with its LayerNorm).
* Fusion: a cross Transformer from H_hyper (keys/values) to the last text state (queries), each
  prefixed with a learned token plus positions; its first output -> Linear -> the prediction.
  Loss: mean squared error (MMSA's trainer).

Every attention is unmasked and reads every padded position (text tokens and frames); there is
no dropout. Pre-norm layers: x + Attn(LN_q(x), LN_k(x), LN_v(x)), then x + FF(LN(x)) with
FF = Linear, GELU, Linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.encoders.text import bert_inputs
from msakit.models.base import (
    LOCAL,
    Batch,
    Dims,
    LossContext,
    LossOutput,
    ModelOutput,
    MSAModel,
    groups_by_prefix,
)
from msakit.models.import_weights import rename_mmsa
from msakit.models.registry import ModelSpec, PresetEntry, register_model

MODALITIES = ("text", "audio", "vision")


@dataclass
class ALMTConfig(ModelConfig, model="almt"):
    """ALMT's hyperparameters; defaults: the repository's config_regression.json ("almt") on
    MOSI, the other data sets' values are the presets at the end of this file. MMSA's names are
    in brackets."""

    dim: int = hp(128, "d: the width of every token (dst_feature_dims)", low=1)
    embedding_hidden: int = hp(128, "feed-forward width of the embedding Transformers "
                               "(dst_feature_hidden_dims)", low=1)
    tokens: int = hp(8, "learned tokens per modality, the length of H^0 and H_hyper "
                     "(dst_embedding_length)", low=1)
    embedding_depth_text: int = hp(1, "text embedding Transformer layers (embedding_depth)",
                                   low=1)
    embedding_depth_audio: int = hp(1, "audio embedding Transformer layers", low=1)
    embedding_depth_vision: int = hp(1, "vision embedding Transformer layers", low=1)
    embedding_heads_text: int = hp(8, "text embedding attention heads (embedding_heads)", low=1)
    embedding_heads_audio: int = hp(8, "audio embedding attention heads", low=1)
    embedding_heads_vision: int = hp(8, "vision embedding attention heads", low=1)
    head_dim: int = hp(64, "width of each head of the embedding, text and fusion Transformers "
                       "(64 in MMSA's code)", low=1)
    text_heads: int = hp(8, "heads of the AHL text Transformer (l_encoder_heads)", low=1)
    ahl_depth: int = hp(3, "AHL layers; the text Transformer has one fewer (AHL_depth)", low=1)
    hyper_heads: int = hp(8, "heads of the hyper-modality layers, each d / heads wide "
                          "(h_hyper_layer_heads)", low=1)
    fusion_hidden: int = hp(128, "feed-forward width of the fusion Transformer "
                            "(fusion_hidden_d)", low=1)
    fusion_heads: int = hp(8, "fusion Transformer heads (fusion_heads)", low=1)
    fusion_depth: int = hp(2, "fusion Transformer layers (fusion_layer_depth)", low=1)
    text_frames: int = hp(50, "text positions of the learned table (feature_length)", low=1)
    audio_frames: int = hp(375, "audio positions of the learned table (feature_length)", low=1)
    vision_frames: int = hp(500, "vision positions of the learned table (feature_length)",
                            low=1)

    def check_combination(self) -> None:
        if self.dim % self.hyper_heads:
            raise MsakitError(f"almt: hyper_heads ({self.hyper_heads}) must divide dim "
                              f"({self.dim})")


def multihead(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Projected (B, L, inner) queries, keys and values -> (B, Lq, inner): softmax attention
    per head, scores scaled by 1/sqrt(inner / heads)."""
    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), heads, -1).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    weights = F.softmax(q @ k.transpose(-1, -2) * q.size(-1) ** -0.5, dim=-1)
    out = weights @ v
    return out.transpose(1, 2).reshape(out.size(0), out.size(2), -1)


class Attention(nn.Module):
    """Multi-head attention without biases on Q, K, V; the output projection (Linear) is left
    out when one head is as wide as the input, as in the authors' code."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim) if not (heads == 1 and head_dim == dim) else None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = multihead(self.to_q(q), self.to_k(k), self.to_v(v), self.heads)
        return out if self.to_out is None else self.to_out(out)


class Block(nn.Module):
    """x + Attn(LN_q(x), LN_k(s), LN_v(s)), then x + FF(LN(x)) (s: the source, or x)."""

    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm_q, self.norm_k, self.norm_v = (nn.LayerNorm(dim) for _ in range(3))
        self.attn = Attention(dim, heads, head_dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, hidden)
        self.ff2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        source = x if source is None else source
        x = self.attn(self.norm_q(x), self.norm_k(source), self.norm_v(source)) + x
        return self.ff2(F.gelu(self.ff1(self.norm_ff(x)))) + x


class TokenTransformer(nn.Module):
    """The authors' ``Transformer``: ``tokens`` learned tokens (or none) before the sequence,
    a learned positional table of ``frames`` (+ tokens) rows, pre-norm blocks."""

    def __init__(self, frames: int, tokens: int, dim: int, *, depth: int, heads: int,
                 head_dim: int, hidden: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, frames + tokens, dim))
        self.extra_token = nn.Parameter(torch.zeros(1, tokens, dim)) if tokens else None
        self.layers = nn.ModuleList(Block(dim, heads, head_dim, hidden) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, L, d) -> the input after the positions and every layer's output."""
        if self.extra_token is not None:
            x = torch.cat([self.extra_token.expand(x.size(0), -1, -1), x], dim=1)
        states = [x + self.pos_embedding[:, : x.size(1)]]
        for layer in self.layers:
            states.append(layer(states[-1]))
        return states


class HyperLayer(nn.Module):
    """One AHL layer: LN(H_hyper) + W_o [attn(text -> audio) + attn(text -> vision)], heads of
    width d / heads (W_o left out for one head)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k_ta = nn.Linear(dim, dim, bias=False)
        self.to_k_tv = nn.Linear(dim, dim, bias=False)
        self.to_v_ta = nn.Linear(dim, dim, bias=False)
        self.to_v_tv = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim) if heads > 1 else None

    def forward(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor,
                hyper: torch.Tensor) -> torch.Tensor:
        text, audio, vision = self.norm1(text), self.norm2(audio), self.norm3(vision)
        q = self.to_q(text)
        shift = (multihead(q, self.to_k_ta(audio), self.to_v_ta(audio), self.heads)
                 + multihead(q, self.to_k_tv(vision), self.to_v_tv(vision), self.heads))
        if self.to_out is not None:
            shift = self.to_out(shift)
        return self.norm4(hyper) + shift


class CrossTransformer(nn.Module):
    """A learned token and positions before source and target, then blocks in which the
    target attends to the source."""

    def __init__(self, tokens: int, dim: int, *, depth: int, heads: int, head_dim: int,
                 hidden: int) -> None:
        super().__init__()
        self.pos_embedding_s = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.pos_embedding_t = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.extra_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList(Block(dim, heads, head_dim, hidden) for _ in range(depth))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        token = self.extra_token.expand(source.size(0), -1, -1)
        source = torch.cat([token, source], dim=1) + self.pos_embedding_s[:, : source.size(1) + 1]
        target = torch.cat([token, target], dim=1) + self.pos_embedding_t[:, : target.size(1) + 1]
        for layer in self.layers:
            target = layer(target, source)
        return target


class ALMT(MSAModel):
    """ALMT on BERT text and unaligned audio/vision frames (module docstring)."""

    name = "almt"
    text_no_decay = ()  # MMSA's AdamW decays every parameter, BERT's biases and norms too

    def __init__(self, config: ALMTConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("almt needs a BERT text encoder")
        c = self.config = config
        self.text_encoder = text_encoder
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        widths = {"text": bert.hidden_size, "audio": dims.audio,
                  "vision": dims.vision}
        lengths = {"text": dims.text_len, "audio": dims.audio_len, "vision": dims.vision_len}
        for m in MODALITIES:
            frames = getattr(c, f"{m}_frames")
            if lengths[m] > frames:
                raise MsakitError(f"almt: the data's {m} has {lengths[m]} steps, more than "
                                  f"the positional table's {m}_frames={frames} (--set "
                                  f"{m}_frames={lengths[m]})")
        self.project = nn.ModuleDict({m: nn.Linear(widths[m], c.dim) for m in MODALITIES})
        self.embedding = nn.ModuleDict({
            m: TokenTransformer(getattr(c, f"{m}_frames"), c.tokens, c.dim,
                                depth=getattr(c, f"embedding_depth_{m}"),
                                heads=getattr(c, f"embedding_heads_{m}"), head_dim=c.head_dim,
                                hidden=c.embedding_hidden)
            for m in MODALITIES
        })
        self.text_layers = TokenTransformer(c.tokens, 0, c.dim, depth=c.ahl_depth - 1,
                                            heads=c.text_heads, head_dim=c.head_dim,
                                            hidden=c.dim)
        self.h_hyper = nn.Parameter(torch.ones(1, c.tokens, c.dim))
        self.hyper = nn.ModuleList(HyperLayer(c.dim, c.hyper_heads) for _ in range(c.ahl_depth))
        self.fusion = CrossTransformer(c.tokens, c.dim, depth=c.fusion_depth,
                                       heads=c.fusion_heads, head_dim=c.head_dim,
                                       hidden=c.fusion_hidden)
        self.head = nn.Linear(c.dim, 1)

    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """text (B, 3, Lt) -> {"seq_hidden": BERT's last hidden states (B, Lt, d_t)}."""
        return {"seq_hidden": self.text_encoder(**bert_inputs(text)).last_hidden_state}

    def reads_padding(self) -> bool:
        return True  # every attention reads every padded position

    def forward(self, batch: Batch) -> ModelOutput:
        inputs = {"text": self.cached_text_features(batch)["seq_hidden"], "audio": batch.audio,
                  "vision": batch.vision}
        tokens = self.config.tokens
        h0 = {m: self.embedding[m](self.project[m](x))[-1][:, :tokens]
              for m, x in inputs.items()}
        text_states = self.text_layers(h0["text"])
        hyper = self.h_hyper.expand(h0["text"].size(0), -1, -1)
        for layer, text in zip(self.hyper, text_states, strict=True):
            hyper = layer(text, h0["audio"], h0["vision"], hyper)
        feature = self.fusion(hyper, text_states[-1])[:, 0]
        return ModelOutput(self.head(feature).squeeze(-1), {"fusion": feature})

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        """Mean squared error (MMSA's ``MSELoss``) over the global batch."""
        labels = batch.labels.to(output.prediction.dtype)
        task = ctx.mean((output.prediction - labels) ** 2)
        return LossOutput(task, task)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {"text": ("text_encoder.",)})


def _transformer_rules(theirs: str, ours: str) -> list[tuple[str, str | None]]:
    """The authors' pre-norm encoder layers under ``theirs`` -> msakit's ``Block`` list."""
    layer = rf"{theirs}\.layers\.(\d+)"
    return [
        (rf"{layer}\.0\.(norm_q|norm_k|norm_v)\.(weight|bias)", rf"{ours}.layers.\1.\2.\3"),
        (rf"{layer}\.0\.fn\.(to_q|to_k|to_v)\.weight", rf"{ours}.layers.\1.attn.\2.weight"),
        (rf"{layer}\.0\.fn\.to_out\.0\.(weight|bias)", rf"{ours}.layers.\1.attn.to_out.\2"),
        (rf"{layer}\.1\.norm\.(weight|bias)", rf"{ours}.layers.\1.norm_ff.\2"),
        (rf"{layer}\.1\.fn\.net\.0\.(weight|bias)", rf"{ours}.layers.\1.ff1.\2"),
        (rf"{layer}\.1\.fn\.net\.3\.(weight|bias)", rf"{ours}.layers.\1.ff2.\2"),
    ]


def _mmsa_rules() -> list[tuple[str, str | None]]:
    letter = {"l": "text", "a": "audio", "v": "vision"}
    rules: list[tuple[str, str | None]] = [
        (r"bertmodel\.model\.(.+)", r"text_encoder.\1"),
        (r"h_hyper", "h_hyper"),
        (r"regression_head\.(weight|bias)", r"head.\1"),
        (r"l_encoder\.pos_embedding", "text_layers.pos_embedding"),
        (r"fusion_layer\.(pos_embedding_s|pos_embedding_t|extra_token)", r"fusion.\1"),
        (r"h_hyper_layer\.layers\.(\d+)\.0\.(norm[1-4])\.(weight|bias)", r"hyper.\1.\2.\3"),
        (r"h_hyper_layer\.layers\.(\d+)\.0\.fn\.(to_q|to_[kv]_t[av])\.weight",
         r"hyper.\1.\2.weight"),
        (r"h_hyper_layer\.layers\.(\d+)\.0\.fn\.to_out\.0\.(weight|bias)", r"hyper.\1.to_out.\2"),
    ]
    for short, m in letter.items():
        rules += [(rf"embedding_{short}\.0\.(weight|bias)", rf"project.{m}.\1"),
                  (rf"embedding_{short}\.1\.(pos_embedding|extra_token)", rf"embedding.{m}.\1")]
        rules += _transformer_rules(rf"embedding_{short}\.1\.encoder", f"embedding.{m}")
    rules += _transformer_rules(r"l_encoder\.encoder", "text_layers")
    rules += _transformer_rules(r"fusion_layer\.CrossTransformerEncoder", "fusion")
    return rules


MMSA_RULES = _mmsa_rules()


def almt_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the repository's ``AMIO`` for ``almt`` (or its gradients) as msakit's
    ALMT's; raises :class:`MsakitError` naming unknown entries."""
    return rename_mmsa(state, MMSA_RULES, model="ALMT")


# The repository's trainer: AdamW over every parameter (BERT's too) at one learning rate and
# weight decay, MSE loss; the learning rate rises linearly over the first 10% of max_epochs
# (200) and then follows a cosine to 0 at epoch 200; early stop after 32 epochs.
_RUN = {"optimizer": "adamw", "batch_size": 64, "schedule": "cosine", "warmup": 0.1,
        "epochs": 200, "early_stop": 32, "stop_at_horizon": True,
        "lr": groups(text=1e-4, audio=1e-4, vision=1e-4, other=1e-4),
        "weight_decay": groups(text=1e-4, audio=1e-4, vision=1e-4, other=1e-4)}
PRESETS: dict[str, PresetEntry] = {  # the repository's config_regression.json, "almt"
    "mosi": {"run": {**_RUN, "text_encoder": "bert-base-uncased"}, "model": {}},
    "mosei": {"run": {**_RUN, "text_encoder": "bert-base-uncased"},
              "model": {"fusion_depth": 4, "audio_frames": 500}},
    "sims": {"run": {**_RUN, "text_encoder": "bert-base-chinese"},
             "model": {"fusion_depth": 4, "text_frames": 39, "audio_frames": 400,
                       "vision_frames": 55}},
}

SPEC = register_model(
    ModelSpec(
        name="almt",
        title="ALMT",
        paper="Zhang et al., EMNLP 2023",
        config=ALMTConfig,
        build=ALMT,
        presets=PRESETS,
        imports={"mmsa": almt_from_mmsa},
    )
)
