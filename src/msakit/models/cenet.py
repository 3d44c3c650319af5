"""CENET: Cross-modal Enhancement Network (Wang et al., IEEE Transactions on Multimedia 2022).

As thuiar/MMSA's repository implements it (``models/singleTask/CENET.py``, trained by
``trains/singleTask/CENET.py``; not in the ``mmsa`` 2.2.1 package). Readings in
docs/readings.md, "TETFN, CENET, ALMT".

* BERT whose token embeddings are computed without gradients (MMSA wraps its embedding layer in
  ``torch.no_grad()``: word, position and segment embeddings are never trained).
* Before BERT's layer ``injection_layer`` (MMSA: 1) the cross-modal enhancement (``CE``) shifts
  every token's hidden state: audio and vision frames are each mapped to BERT's width (Linear,
  ReLU, Linear); each token attends (one head, scores Q K^T multiplied by 8, softmax over every
  frame of the file's padded sequence, no mask) to the vision frames and to the audio frames;
  the two results are concatenated, projected back (Linear) and added to the hidden state.
* The remaining BERT layers (the text mask as attention mask); then the head on [CLS]:
  dropout, Linear, tanh, dropout, Linear -> the prediction (BERT's ``hidden_dropout_prob``).
  Loss: L1 (MMSA's trainer).
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
from msakit.models.base import Batch, Dims, L1Regression, ModelOutput, groups_by_prefix
from msakit.models.bert_mag import additive_mask
from msakit.models.import_weights import rename_mmsa
from msakit.models.registry import ModelSpec, register_model


@dataclass
class CENETConfig(ModelConfig, model="cenet"):
    """CENET's hyperparameters (fixed in the repository's code; its config_regression.json
    entry holds only training settings, the presets)."""

    injection_layer: int = hp(1, "the BERT layer before which audio and vision enhance the "
                              "text (MMSA's injection_index)", low=0)
    score_scale: float = hp(8.0, "the enhancement's attention scores are Q K^T times this "
                            "(MMSA: 8)", low=0.0)


class EnhancementAttention(nn.Module):
    """MMSA's ``SelfAttention`` with one head: tokens attend to another modality's frames."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.Wq = nn.Linear(dim, dim)  # noqa: N815 (MMSA's names)
        self.Wk = nn.Linear(dim, dim)  # noqa: N815
        self.Wv = nn.Linear(dim, dim)  # noqa: N815
        self.scale = scale

    def forward(self, text: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """text (B, Lt, d), other (B, L, d) -> (B, Lt, d)."""
        scores = self.Wq(text) @ self.Wk(other).transpose(-1, -2)
        return F.softmax(scores * self.scale, dim=-1) @ self.Wv(other)


class CrossModalEnhancement(nn.Module):
    """MMSA's ``CE``: the hidden states plus a projection of what they read in audio and
    vision."""

    def __init__(self, dim: int, audio: int, vision: int, scale: float) -> None:
        super().__init__()
        self.visual_transform = nn.Sequential(nn.Linear(vision, dim), nn.ReLU(),
                                              nn.Linear(dim, dim))
        self.acoustic_transform = nn.Sequential(nn.Linear(audio, dim), nn.ReLU(),
                                                nn.Linear(dim, dim))
        self.hv = EnhancementAttention(dim, scale)
        self.ha = EnhancementAttention(dim, scale)
        self.cat_connect = nn.Linear(2 * dim, dim)

    def forward(self, text: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor
                ) -> torch.Tensor:
        v = self.hv(text, self.visual_transform(vision))
        a = self.ha(text, self.acoustic_transform(audio))
        return self.cat_connect(torch.cat((v, a), dim=-1)) + text


class CENET(L1Regression):
    """CENET on BERT token ids and unaligned audio/vision frames."""

    name = "cenet"

    def __init__(self, config: CENETConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("cenet needs a BERT text encoder")
        self.config = config
        self.text_encoder = text_encoder
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        if config.injection_layer >= bert.num_hidden_layers:
            raise MsakitError(f"cenet: injection_layer ({config.injection_layer}) must be below "
                              f"the text encoder's {bert.num_hidden_layers} layers")
        width = bert.hidden_size
        self.enhancement = CrossModalEnhancement(width, dims.audio, dims.vision,
                                                 config.score_scale)
        self.head_dropout = nn.Dropout(bert.hidden_dropout_prob)
        self.head_dense = nn.Linear(width, width)
        self.head_out = nn.Linear(width, 1)

    def reads_padding(self) -> bool:
        return True  # the enhancement attends to every frame of the file's padded sequences

    def trains_text_encoder(self) -> bool:
        return True  # BERT's hidden states depend on audio and vision: never cached

    def forward(self, batch: Batch) -> ModelOutput:
        bert: Any = self.text_encoder  # a transformers BERT, run layer by layer
        inputs = bert_inputs(batch.text)
        with torch.no_grad():  # MMSA: the embeddings get no gradient
            hidden = bert.embeddings(input_ids=inputs["input_ids"],
                                     token_type_ids=inputs["token_type_ids"])
        mask = additive_mask(batch.text[:, 1], hidden.dtype)
        for i, layer in enumerate(bert.encoder.layer):
            if i == self.config.injection_layer:
                hidden = self.enhancement(hidden, batch.vision, batch.audio)
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        cls = hidden[:, 0]
        x = self.head_dropout(torch.tanh(self.head_dense(self.head_dropout(cls))))
        return ModelOutput(self.head_out(x).squeeze(-1), {"cls": cls})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {"text": ("text_encoder.",),
                                       "head_bias": ("head_dense.bias", "head_out.bias")})

    def optimizer_settings(self, config) -> dict[str, tuple[float, float]]:
        """MMSA decays no parameter named ``bias`` outside the enhancement: the head's biases
        are a group of their own at the ``other`` learning rate without weight decay."""
        settings = super().optimizer_settings(config)
        settings["head_bias"] = (config.lr["other"], 0.0)
        return settings


MMSA_RULES: list[tuple[str, str | None]] = [
    (r"bert\.embeddings\.(word_embeddings|position_embeddings|token_type_embeddings"
     r"|LayerNorm)\.(weight|bias)", r"text_encoder.embeddings.\1.\2"),
    (r"bert\.embeddings\.(senti|pos_tag|polarity)_embeddings\.weight", None),  # never read
    (r"bert\.encoder\.layer\.(\d+)\.(.+)", r"text_encoder.encoder.layer.\1.\2"),
    (r"bert\.encoder\.CE\.(.+)", r"enhancement.\1"),
    (r"bert\.pooler\.dense\.(weight|bias)", r"text_encoder.pooler.dense.\1"),
    (r"classifier\.dense\.(weight|bias)", r"head_dense.\1"),
    (r"classifier\.out_proj\.(weight|bias)", r"head_out.\1"),
]
"""The repository's AMIO keys (after ``Model.``) -> msakit's. The sentiment, POS-tag and
polarity embeddings that MMSA builds (``AMIO`` passes ``*_embedding=True``) are never read:
its forward passes no ids for them."""


def cenet_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the repository's ``AMIO`` for ``cenet`` (or its gradients) as msakit's
    CENET's; raises :class:`MsakitError` naming unknown entries."""
    return rename_mmsa(state, MMSA_RULES, model="CENET")


def _run(batch: int, lr: float, decay: float, encoder: str) -> dict:
    """The repository's trainer: Adam (L2 weight decay; biases and LayerNorm weights outside
    the enhancement without) at one learning rate, the global gradient norm clipped to 2, no
    schedule, early stop after 8 epochs without a better validation result, no epoch limit."""
    return {"text_encoder": encoder, "batch_size": batch,
            "lr": groups(text=lr, audio=lr, vision=lr, other=lr),
            "weight_decay": groups(text=decay, audio=decay, vision=decay, other=decay),
            "optimizer": "adam", "schedule": "constant", "warmup": 0.0, "grad_clip": 2.0,
            "early_stop": 8, "stop_at_horizon": False}


PRESETS = {  # the repository's config_regression.json, "cenet"
    "mosi": {"run": _run(64, 1e-5, 1e-4, "bert-base-uncased"), "model": {}},
    "mosei": {"run": _run(64, 1e-5, 1e-4, "bert-base-uncased"), "model": {}},
    "sims": {"run": _run(32, 2e-6, 0.0, "bert-base-chinese"), "model": {}},
    "simsv2": {"run": _run(64, 3e-5, 0.0, "bert-base-chinese"), "model": {}},
}

SPEC = register_model(
    ModelSpec(
        name="cenet",
        title="CENET",
        paper="Wang et al., IEEE TMM 2022",
        config=CENETConfig,
        build=CENET,
        presets=PRESETS,
        search_space={  # the repository's config_tune.json ("cenet") without batch_size and
            "lr": ("choice", [1e-6, 2e-6, 5e-6, 1e-5, 3e-5, 5e-5]),  # adam_epsilon
            "weight_decay": ("choice", [0.0, 1e-4]),
        },
        imports={"mmsa": cenet_from_mmsa},
    )
)
