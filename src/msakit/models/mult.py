"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019), as MMSA runs it.

Reads top to bottom: the crossmodal Transformer layer and encoder, the model, its registration.
docs/readings.md ("MulT") lists where MMSA's computation is worth knowing about.

* Inputs: the precomputed text features (the file's ``text``; MMSA's config sets
  ``use_bert=false``), audio and vision, each at the file's full padded length. Dropout on the
  text features, then a temporal 1-D convolution per modality (no padding, no bias) to the
  common width d (skipped when a modality already has width d).
* Crossmodal Transformers (Sec. 3.2): for each target modality, one encoder attends from it to
  each of the two others (queries: target; keys and values: source), their outputs are
  concatenated (2d) and pass a self-attention encoder (at least 3 layers). Every encoder is
  fairseq's pre-norm Transformer as the authors wrote it: inputs scaled by sqrt(d), embedding
  dropout, no positional embedding (MMSA's default), layers LayerNorm -> attention -> dropout ->
  residual, LayerNorm -> Linear(d, 4d) -> ReLU -> dropout -> Linear -> dropout -> residual,
  then a final LayerNorm. The attention dropout of a crossmodal encoder is the one of its
  source modality (MMSA's ``get_network``).
* ``attn_mask`` (MMSA: true): query i attends to key positions up to i + |L_k - L_q|
  (fairseq's future mask, extended by the length difference).
* Prediction: the last position of each memory encoder's output (index -1 of the padded
  sequence), concatenated (6d), a residual block (Linear, ReLU, dropout, Linear, plus input)
  and a Linear layer; L1 loss.

Shapes: sequences are (L, B, d) inside the encoders, as in MMSA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.models.base import (
    Batch,
    Dims,
    L1Regression,
    ModelOutput,
    groups_by_prefix,
)
from msakit.models.import_weights import rename_mmsa
from msakit.models.registry import ModelSpec, register_model
from msakit.models.tfn import text_width

MODALITIES = ("text", "audio", "vision")


def future_mask(query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
    """(Lq, Lk) additive mask: -inf where key j > i + |Lk - Lq| (MMSA's ``attn_mask``)."""
    blocked = torch.ones(query_len, key_len, dtype=torch.bool, device=device).triu(
        1 + abs(key_len - query_len))
    return torch.zeros(query_len, key_len, device=device).masked_fill(blocked, float("-inf"))


class CrossmodalLayer(nn.Module):
    """One pre-norm Transformer layer; attends to ``source`` when given, else to itself.

    The same LayerNorm normalises the queries and the keys/values, as in the authors' code."""

    def __init__(self, dim: int, heads: int, *, attn_dropout: float, relu_dropout: float,
                 res_dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=attn_dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.res_drop = nn.Dropout(res_dropout)
        self.relu_drop = nn.Dropout(relu_dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor, source: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x (Lq, B, d); source: keys and values (Lk, B, d) each; mask (Lq, Lk) or None."""
        h = self.attn_norm(x)
        if source is None:
            key = value = h
        else:
            key, value = self.attn_norm(source[0]), self.attn_norm(source[1])
        h, _ = self.attention(h, key, value, attn_mask=mask, need_weights=False)
        x = x + self.res_drop(h)
        h = self.relu_drop(F.relu(self.fc1(self.ffn_norm(x))))
        return x + self.res_drop(self.fc2(h))


class CrossmodalEncoder(nn.Module):
    """The authors' TransformerEncoder (module docstring): (Lq, B, d) -> (Lq, B, d)."""

    def __init__(self, dim: int, heads: int, layers: int, *, attn_dropout: float,
                 relu_dropout: float, res_dropout: float, embed_dropout: float,
                 causal: bool) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.causal = causal
        self.embed_drop = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            CrossmodalLayer(dim, heads, attn_dropout=attn_dropout, relu_dropout=relu_dropout,
                            res_dropout=res_dropout)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """x (Lq, B, d) attends to ``source`` (Lk, B, d) in every layer, or to itself."""
        kv = None
        if source is not None:  # keys and values get their own dropout masks, as in MMSA
            kv = (self.embed_drop(self.scale * source), self.embed_drop(self.scale * source))
        x = self.embed_drop(self.scale * x)
        mask = None
        if self.causal:
            mask = future_mask(x.size(0), x.size(0) if kv is None else kv[0].size(0), x.device)
        for layer in self.layers:
            x = layer(x, kv, mask)
        return self.norm(x)


@dataclass
class MulTConfig(ModelConfig, model="mult"):
    """MulT's hyperparameters. Defaults: MMSA's MOSI configuration (config_regression.json);
    the other data sets' values are the presets at the end of this file. MMSA's names:
    ``dst_feature_dim_nheads`` = (dim, heads), ``nlevels`` = layers, ``attn_dropout_a/_v``,
    ``conv1d_kernel_size_l/a/v``."""

    dim: int = hp(50, "d: the common width after the temporal convolutions", low=1)
    heads: int = hp(10, "attention heads (must divide d)", low=1)
    layers: int = hp(4, "layers of each crossmodal Transformer (MMSA nlevels)", low=1)
    memory_layers: int = hp(3, "the self-attention encoders have max(layers, this)", low=1)
    attn_dropout: float = hp(0.3, "attention dropout towards text; the memory encoders'",
                             low=0.0, high=1.0)
    attn_dropout_audio: float = hp(0.2, "attention dropout towards audio", low=0.0, high=1.0)
    attn_dropout_vision: float = hp(0.0, "attention dropout towards vision", low=0.0, high=1.0)
    relu_dropout: float = hp(0.0, "dropout after the feed-forward ReLU", low=0.0, high=1.0)
    embed_dropout: float = hp(0.2, "dropout on each encoder's scaled inputs", low=0.0,
                              high=1.0)
    res_dropout: float = hp(0.0, "dropout on each residual branch", low=0.0, high=1.0)
    output_dropout: float = hp(0.5, "dropout in the output residual block", low=0.0, high=1.0)
    text_dropout: float = hp(0.5, "dropout on the text features", low=0.0, high=1.0)
    kernel_text: int = hp(5, "temporal convolution kernel, text", low=1)
    kernel_audio: int = hp(5, "temporal convolution kernel, audio", low=1)
    kernel_vision: int = hp(5, "temporal convolution kernel, vision", low=1)
    attn_mask: bool = hp(True, "fairseq's future mask in every attention (MMSA's config)")

    def check_combination(self) -> None:
        if self.dim % self.heads:
            raise MsakitError(f"mult: heads ({self.heads}) must divide dim ({self.dim})")


class MulT(L1Regression):
    """Multimodal Transformer (module docstring)."""

    def __init__(self, config: MulTConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__()
        c = self.config = config
        widths = {"text": text_width(dims, "MulT"), "audio": dims.audio, "vision": dims.vision}
        kernels = {"text": c.kernel_text, "audio": c.kernel_audio, "vision": c.kernel_vision}
        self.text_drop = nn.Dropout(c.text_dropout)
        self.proj = nn.ModuleDict({
            m: nn.Conv1d(widths[m], c.dim, kernels[m], bias=False)
            for m in MODALITIES if widths[m] != c.dim
        })
        attn = {"text": c.attn_dropout, "audio": c.attn_dropout_audio,
                "vision": c.attn_dropout_vision}
        self.cross = nn.ModuleDict({
            f"{target}_with_{source}": self._encoder(c.dim, c.layers, attn[source])
            for target in MODALITIES for source in MODALITIES if source != target
        })
        self.memory = nn.ModuleDict({
            m: self._encoder(2 * c.dim, max(c.layers, c.memory_layers), c.attn_dropout)
            for m in MODALITIES
        })
        combined = 6 * c.dim
        self.head_fc1 = nn.Linear(combined, combined)
        self.head_fc2 = nn.Linear(combined, combined)
        self.head_drop = nn.Dropout(c.output_dropout)
        self.head_out = nn.Linear(combined, 1)

    def _encoder(self, dim: int, layers: int, attn_dropout: float) -> CrossmodalEncoder:
        c = self.config
        return CrossmodalEncoder(
            dim, c.heads, layers, attn_dropout=attn_dropout, relu_dropout=c.relu_dropout,
            res_dropout=c.res_dropout, embed_dropout=c.embed_dropout, causal=c.attn_mask,
        )

    def reads_padding(self) -> bool:
        return True  # MMSA reads every padded position and predicts from the last one

    def forward(self, batch: Batch) -> ModelOutput:
        inputs = {
            "text": self.text_drop(batch.text_features),
            "audio": batch.audio,
            "vision": batch.vision,
        }
        seqs = {}  # (L', B, d)
        for m, x in inputs.items():
            x = x.transpose(1, 2)  # (B, D, L)
            if m in self.proj:
                x = self.proj[m](x)
            seqs[m] = x.permute(2, 0, 1)
        reps = {}
        for target in MODALITIES:
            sources = [s for s in MODALITIES if s != target]
            h = torch.cat([self.cross[f"{target}_with_{s}"](seqs[target], seqs[s])
                           for s in sources], dim=2)
            reps[target] = self.memory[target](h)[-1]  # (B, 2d): the last position
        last = torch.cat([reps[m] for m in MODALITIES], dim=1)
        h = self.head_fc2(self.head_drop(F.relu(self.head_fc1(last)))) + last
        return ModelOutput(self.head_out(h).squeeze(1), reps)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {})  # one learning rate in MMSA: all in "other"


_LETTER = {"l": "text", "a": "audio", "v": "vision"}
_ENCODER_PARTS: list[tuple[str, str | None]] = [
    (r"layers\.(\d+)\.self_attn\.(in_proj_weight|in_proj_bias)", r"layers.\1.attention.\2"),
    (r"layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"layers.\1.attention.out_proj.\2"),
    (r"layers\.(\d+)\.(fc1|fc2)\.(weight|bias)", r"layers.\1.\2.\3"),
    (r"layers\.(\d+)\.layer_norms\.0\.(weight|bias)", r"layers.\1.attn_norm.\2"),
    (r"layers\.(\d+)\.layer_norms\.1\.(weight|bias)", r"layers.\1.ffn_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"norm.\1"),
    (r"version", None),
]


def _mmsa_rules() -> list[tuple[str, str | None]]:
    rules: list[tuple[str, str | None]] = [
        (r"proj_l\.weight", "proj.text.weight"),
        (r"proj_a\.weight", "proj.audio.weight"),
        (r"proj_v\.weight", "proj.vision.weight"),
        (r"proj([12])\.(weight|bias)", r"head_fc\1.\2"),
        (r"out_layer\.(weight|bias)", r"head_out.\1"),
    ]
    for target, t_name in _LETTER.items():
        for source, s_name in _LETTER.items():
            if source != target:
                prefix, ours = f"trans_{target}_with_{source}", f"cross.{t_name}_with_{s_name}"
                rules += [(rf"{prefix}\.{p}", None if t is None else f"{ours}.{t}")
                          for p, t in _ENCODER_PARTS]
        rules += [(rf"trans_{target}_mem\.{p}", None if t is None else f"memory.{t_name}.{t}")
                  for p, t in _ENCODER_PARTS]
    return rules


MMSA_MULT_RULES = _mmsa_rules()


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's MulT state dict (``torch.save(AMIO.state_dict())``, ``use_bert=false``) -> msakit's
    MulT state dict. A projection MMSA keeps but skips (a modality already d wide) is dropped."""
    mapped = rename_mmsa(state, MMSA_MULT_RULES, model="MulT")
    for m in MODALITIES:
        weight = mapped.get(f"proj.{m}.weight")
        if weight is not None and weight.shape[0] == weight.shape[1]:
            del mapped[f"proj.{m}.weight"]
    return mapped


MMSA_UPDATE_EPOCHS = 8
"""MMSA's MulT sums the gradients of 8 batches before each Adam step (``update_epochs``)."""


def _mult_run(batch_size: int, lr: float, patience: int, clip_value: float = 0.6) -> dict:
    """MMSA's training of MulT: Adam steps on the gradients of ``update_epochs`` batches of
    ``batch_size`` summed (``accumulate``), every entry of the running sum clipped to
    ``grad_clip`` (0.6; SIMS v2: 1.0) after each backward pass (``clip_value``, MMSA's
    ``clip_grad_value_``); the learning rate drops
    tenfold after ``patience`` epochs without a lower validation loss; Adam without weight
    decay (MMSA's config names one its optimizer never receives)."""
    return {"text_encoder": None, "batch_size": batch_size, "accumulate": MMSA_UPDATE_EPOCHS,
            "lr": groups(text=lr, audio=lr, vision=lr, other=lr),
            "weight_decay": groups(text=0.0, audio=0.0, vision=0.0, other=0.0),
            "optimizer": "adam", "schedule": "plateau", "plateau_patience": patience,
            "warmup": 0.0, "clip_value": clip_value, "epochs": 200, "early_stop": 8}


MULT_PRESETS = {  # MMSA's config_regression.json, "mult"
    "mosi": {"run": _mult_run(16, 2e-3, 5), "model": {}},
    "mosei": {"run": _mult_run(4, 5e-4, 20), "model": {
        "dim": 30, "heads": 6, "attn_dropout": 0.4, "attn_dropout_audio": 0.0,
        "embed_dropout": 0.0, "text_dropout": 0.3, "kernel_audio": 1, "kernel_vision": 3}},
    "sims": {"run": _mult_run(16, 2e-3, 10), "model": {
        "layers": 2, "attn_dropout": 0.2, "attn_dropout_audio": 0.1, "embed_dropout": 0.1,
        "res_dropout": 0.2, "output_dropout": 0.1, "text_dropout": 0.3, "kernel_audio": 1,
        "kernel_vision": 1}},
    "simsv2": {"run": _mult_run(16, 5e-4, 10, clip_value=1.0), "model": {  # the repository's
        "dim": 30, "heads": 6, "layers": 4, "attn_dropout": 0.1, "attn_dropout_audio": 0.2,
        "attn_dropout_vision": 0.0, "relu_dropout": 0.1, "embed_dropout": 0.2,
        "res_dropout": 0.0, "output_dropout": 0.3, "text_dropout": 0.5, "kernel_text": 5,
        "kernel_audio": 3, "kernel_vision": 1}},
}

SPEC = register_model(
    ModelSpec(
        name="mult",
        title="MulT",
        paper="Tsai et al., ACL 2019",
        config=MulTConfig,
        build=MulT,
        presets=MULT_PRESETS,
        search_space={  # MMSA's config_tune.json (dims whose head count 10 divides them)
            "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
            "dim": ("choice", [30, 40, 50]),
            "layers": ("choice", [2, 4, 6]),
            "attn_dropout": ("choice", [0.1, 0.2, 0.3, 0.4, 0.5]),
            "embed_dropout": ("choice", [0.0, 0.1, 0.2]),
            "text_dropout": ("choice", [0.1, 0.2, 0.3, 0.4, 0.5]),
            "output_dropout": ("choice", [0.1, 0.2, 0.3, 0.4, 0.5]),
        },
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
