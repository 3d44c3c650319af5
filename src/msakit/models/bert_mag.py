"""BERT-MAG: BERT with a Multimodal Adaptation Gate (Rahman et al., ACL 2020), as MMSA runs it.

thuiar/MMSA ``models/singleTask/BERT_MAG.py`` (``MAG_BertForSequenceClassification``), trained
by ``trains/singleTask/BERT_MAG.py``. The model reads *aligned* inputs: one audio and one
vision frame per token.

* BERT's embeddings (word + position + segment, LayerNorm, dropout) e_i of every token i.
* The gate (Eq. 1-4 of the paper), per position: g_v = ReLU(W_hv [v_i; e_i]), g_a =
  ReLU(W_ha [a_i; e_i]), the displacement h_i = g_v * (W_v v_i) + g_a * (W_a a_i), scaled by
  alpha_i = min(||e_i|| / ||h_i|| * beta, 1) (||h_i|| = 0 counts as 1, MMSA's eps 1e-6 in the
  ratio), then e'_i = dropout(LayerNorm(e_i + alpha_i h_i)).
* e' goes through BERT's encoder layers (the text mask as attention mask) and pooler ([CLS],
  Linear, tanh); then dropout (BERT's ``hidden_dropout_prob``) and a Linear layer -> the
  prediction. Loss: L1 (MMSA's trainer); every parameter, BERT included, is trained.

Alignment: MMSA reads its ``aligned_50.pkl`` on MOSI and MOSEI (``need_data_aligned``); msakit
reads aligned files as they are (their lengths are the text mask's, see README "Aligned
files"). SIMS has no aligned file: MMSA's ``AlignSubNet("avg_pool")`` (``need_model_aligned``)
then averages the file's audio and vision frames down to the text length, which
:func:`msakit.models.align.mmsa_avg_pool` computes, padded frames included, as MMSA does.
Readings and the proof: docs/readings.md, "BERT-MAG, MFM, MCTN".
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
from msakit.models.align import mmsa_avg_pool
from msakit.models.base import Batch, Dims, L1Regression, ModelOutput, groups_by_prefix
from msakit.models.import_weights import ModuleRule, rename_modules
from msakit.models.registry import ModelSpec, PresetEntry, register_model


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (B, L) 0/1 attention mask as BERT's additive (B, 1, 1, L) mask: 0 where attended, the
    dtype's lowest value where masked (what Hugging Face's ``get_extended_attention_mask``
    computed, which MMSA's MAG_BertModel calls)."""
    keep = mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


@dataclass
class BERTMAGConfig(ModelConfig, model="bert_mag"):
    """BERT-MAG's hyperparameters; defaults: MMSA's config_regression.json ("bert_mag") on
    MOSI, the other data sets' values are the presets at the end of this file."""

    beta_shift: float = hp(1.0, "beta: the displacement's norm is at most beta times the "
                           "embedding's", low=0.0)
    dropout: float = hp(0.3, "dropout after the gate's LayerNorm (MMSA dropout_prob)",
                        low=0.0, high=1.0)


class MultimodalAdaptationGate(nn.Module):
    """MMSA's ``MAG``: shifts each token's embedding by a gated audio/vision displacement."""

    def __init__(self, text_dim: int, audio_dim: int, vision_dim: int, *, beta: float,
                 dropout: float) -> None:
        super().__init__()
        self.gate_vision = nn.Linear(vision_dim + text_dim, text_dim)
        self.gate_audio = nn.Linear(audio_dim + text_dim, text_dim)
        self.shift_vision = nn.Linear(vision_dim, text_dim)
        self.shift_audio = nn.Linear(audio_dim, text_dim)
        self.beta = beta
        self.norm = nn.LayerNorm(text_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, embedded: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor
                ) -> torch.Tensor:
        """embedded (B, L, D), vision (B, L, Dv), audio (B, L, Da) -> (B, L, D)."""
        weight_v = F.relu(self.gate_vision(torch.cat((vision, embedded), dim=-1)))
        weight_a = F.relu(self.gate_audio(torch.cat((audio, embedded), dim=-1)))
        shift = weight_v * self.shift_vision(vision) + weight_a * self.shift_audio(audio)
        shift_norm = shift.norm(2, dim=-1)
        shift_norm = torch.where(shift_norm == 0, torch.ones_like(shift_norm), shift_norm)
        ratio = embedded.norm(2, dim=-1) / (shift_norm + 1e-6) * self.beta
        alpha = torch.minimum(ratio, torch.ones_like(ratio)).unsqueeze(-1)
        return self.dropout(self.norm(alpha * shift + embedded))


class BERT_MAG(L1Regression):  # noqa: N801 (MMSA's name)
    """BERT-MAG on BERT token ids and audio/vision frames aligned to the tokens."""

    name = "bert_mag"

    def __init__(self, config: BERTMAGConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("bert_mag needs a BERT text encoder")
        self.config = config
        self.text_encoder = text_encoder
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        self.mag = MultimodalAdaptationGate(bert.hidden_size, dims.audio, dims.vision,
                                            beta=config.beta_shift, dropout=config.dropout)
        self.head_dropout = nn.Dropout(bert.hidden_dropout_prob)
        self.head = nn.Linear(bert.hidden_size, 1)
        self.aligned_file = dims.audio_len == dims.vision_len == dims.text_len

    def reads_padding(self) -> bool:
        # An aligned file's batches trim every modality to the same length, which changes
        # nothing ([CLS] attends valid tokens only); otherwise the file's full lengths are
        # pooled to the text length, as MMSA does.
        return not self.aligned_file

    def trains_text_encoder(self) -> bool:
        return True  # BERT's input depends on audio and vision: its outputs are never cached

    def forward(self, batch: Batch) -> ModelOutput:
        text = batch.text
        length = text.size(2)
        audio = mmsa_avg_pool(batch.audio, length)
        vision = mmsa_avg_pool(batch.vision, length)
        bert: Any = self.text_encoder  # a transformers BERT, run block by block
        inputs = bert_inputs(text)
        embedded = bert.embeddings(input_ids=inputs["input_ids"],
                                   token_type_ids=inputs["token_type_ids"])
        fused = self.mag(embedded, vision, audio)
        hidden = bert.encoder(fused, attention_mask=additive_mask(text[:, 1], fused.dtype))[0]
        pooled = bert.pooler(hidden)
        prediction = self.head(self.head_dropout(pooled)).squeeze(-1)
        return ModelOutput(prediction, {"pooled": pooled})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {"text": ("text_encoder.",)})


_MAG = "model.bert.MAG."
MMSA_RULES = [
    *(ModuleRule(f"model.bert.{part}", f"text_encoder.{part}", leaves=None)
      for part in ("embeddings", "encoder", "pooler")),
    ModuleRule(_MAG + "W_hv", "mag.gate_vision"),
    ModuleRule(_MAG + "W_ha", "mag.gate_audio"),
    ModuleRule(_MAG + "W_v", "mag.shift_vision"),
    ModuleRule(_MAG + "W_a", "mag.shift_audio"),
    ModuleRule(_MAG + "LayerNorm", "mag.norm"),
    ModuleRule("model.classifier", "head"),
]
"""MMSA's modules (after ``Model.``) -> msakit's."""


def bert_mag_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of MMSA's ``AMIO`` for ``bert_mag`` (or its gradients) as msakit's
    BERT_MAG's; raises :class:`MsakitError` on unknown or missing entries."""
    return rename_modules(state, MMSA_RULES, prefix="Model.",
                          describe="MMSA's BERT_MAG (an AMIO state dict)")


def _mmsa_run(lr: float, text_encoder: str) -> dict:
    """MMSA's trainer: Adam over every parameter at one learning rate, weight decay 0, batch
    32, no schedule, no clipping, early stop after 8 epochs without a better validation
    result and no epoch limit."""
    return {"text_encoder": text_encoder, "batch_size": 32,
            "lr": groups(text=lr, audio=lr, vision=lr, other=lr),
            "weight_decay": groups(text=0.0, audio=0.0, vision=0.0, other=0.0),
            "optimizer": "adam",
            "schedule": "constant", "warmup": 0.0, "early_stop": 8, "stop_at_horizon": False}


PRESETS: dict[str, PresetEntry] = {  # MMSA's config_regression.json, "bert_mag"
    "mosi": {"run": _mmsa_run(2e-5, "bert-base-uncased"), "model": {}},
    "mosei": {"run": _mmsa_run(1e-5, "bert-base-uncased"), "model": {"dropout": 0.2}},
    "sims": {"run": _mmsa_run(5e-5, "bert-base-chinese"), "model": {"dropout": 0.1}},
}

SPEC = register_model(
    ModelSpec(
        name="bert_mag",
        title="BERT-MAG",
        paper="Rahman et al., ACL 2020",
        config=BERTMAGConfig,
        build=BERT_MAG,
        presets=PRESETS,
        search_space={  # MMSA's config_tune.json ("bert_mag")
            "lr": ("choice", [1e-5, 2e-5, 5e-5, 1e-4]),
            "dropout": ("choice", [0.1, 0.2, 0.3, 0.4]),
        },
        imports={"mmsa": bert_mag_from_mmsa},
    )
)
