"""EF-LSTM: early fusion of word-aligned features by an LSTM (MMSA's benchmark baseline, after
Williams et al., 2018), as MMSA implements it.

Reads word-aligned sequences: MMSA trains it on the aligned files (``aligned_50.pkl`` for MOSI
and MOSEI: one audio and one vision frame per token, no lengths; msakit reads them as aligned
files, :func:`msakit.data.mmsa.load_feature_file`). Where audio or vision is longer or shorter
than the text (SIMS, which has no aligned file, or an unaligned file), the sequences are first
brought to the text's padded length as MMSA's ``AlignSubNet("avg_pool")`` does
(:func:`msakit.models.align.mmsa_avg_pool`).

At each of the Lt positions the text features, audio and vision are concatenated; BatchNorm over
the positions (``BatchNorm1d(Lt)``: each position normalised over the batch and the features),
an L-layer LSTM (dropout between layers), its last layer's final hidden state, then dropout ->
Linear + ReLU -> dropout -> Linear: the prediction, with no output bound. Loss: L1, Adam with
one learning rate and one weight decay (MMSA's trainer). Every padded position is read, as MMSA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.models.align import mmsa_avg_pool
from msakit.models.base import Batch, Dims, L1Regression, ModelOutput, groups_by_prefix
from msakit.models.import_weights import rename_mmsa
from msakit.models.lf_dnn import mmsa_adam_run
from msakit.models.registry import ModelSpec, register_model
from msakit.models.tfn import text_width


def aligned_inputs(batch: Batch) -> tuple[torch.Tensor, ...]:
    """The batch's text features, audio and vision at the text's padded length (MMSA's
    ``need_model_aligned``: unchanged when all three already have the same length)."""
    text, audio, vision = batch.text_features, batch.audio, batch.vision
    assert text is not None  # a model on precomputed text features gets them in every batch
    length = text.size(1)
    if audio.size(1) == vision.size(1) == length:
        return text, audio, vision
    return text, mmsa_avg_pool(audio, length), mmsa_avg_pool(vision, length)


@dataclass
class EFLSTMConfig(ModelConfig, model="ef_lstm"):
    """EF-LSTM's hyperparameters. Defaults: MMSA's MOSI configuration (config_regression.json);
    the other data sets' values are the presets at the end of this file."""

    hidden: int = hp(128, "width of the LSTM and of the layer after it (MMSA hidden_dims)",
                     low=1)
    layers: int = hp(4, "LSTM layers (MMSA num_layers)", low=1)
    dropout: float = hp(0.5, "dropout between LSTM layers and before each Linear layer",
                        low=0.0, high=1.0)


class EFLSTM(L1Regression):
    """Early-fusion LSTM (module docstring)."""

    def __init__(self, config: EFLSTMConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__()
        c = self.config = config
        width = text_width(dims, "EF-LSTM") + dims.audio + dims.vision
        self.norm = nn.BatchNorm1d(dims.text_len)
        self.lstm = nn.LSTM(width, c.hidden, num_layers=c.layers,
                            dropout=c.dropout if c.layers > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(c.dropout)
        self.linear = nn.Linear(c.hidden, c.hidden)
        self.out = nn.Linear(c.hidden, 1)

    def reads_padding(self) -> bool:
        return True

    def forward(self, batch: Batch) -> ModelOutput:
        x = torch.cat(aligned_inputs(batch), dim=-1)
        if x.size(1) != self.norm.num_features:  # BatchNorm over positions: one length only
            raise MsakitError(f"EF-LSTM was built for {self.norm.num_features} text positions "
                              f"(its BatchNorm normalises each); the data has {x.size(1)}")
        x = self.norm(x)
        _, (h, _) = self.lstm(x)
        fused = h[-1]
        x = self.drop(F.relu(self.linear(self.drop(fused))))
        return ModelOutput(self.out(x).squeeze(1), {"fusion": fused})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {})


MMSA_EF_LSTM_RULES: list[tuple[str, str | None]] = [
    (r"(norm|lstm|linear|out)\.(.+)", r"\1.\2"),
]


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's EF_LSTM state dict (``torch.save(AMIO.state_dict())``) -> msakit's EF-LSTM's."""
    return rename_mmsa(state, MMSA_EF_LSTM_RULES, model="EF_LSTM")


EF_LSTM_PRESETS = {  # MMSA's config_regression.json, "ef_lstm" (aligned files on MOSI, MOSEI)
    "mosi": {"run": mmsa_adam_run(32, 1e-3, 5e-3), "model": {}},
    "mosei": {"run": mmsa_adam_run(128, 5e-3, 1e-4), "model": {
        "hidden": 256, "layers": 2, "dropout": 0.4}},
    "sims": {"run": mmsa_adam_run(128, 5e-4, 1e-3), "model": {
        "hidden": 32, "layers": 3, "dropout": 0.5}},
    "simsv2": {"run": mmsa_adam_run(32, 5e-4, 0.0), "model": {  # the repository's config only
        "hidden": 128, "layers": 3, "dropout": 0.2}},
}

SPEC = register_model(
    ModelSpec(
        name="ef_lstm",
        title="EF-LSTM",
        paper="Williams et al., 2018",
        config=EFLSTMConfig,
        build=EFLSTM,
        presets=EF_LSTM_PRESETS,
        search_space={  # MMSA's config_tune.json, "ef_lstm"
            "hidden": ("choice", [16, 32, 64, 128, 256]),
            "layers": ("choice", [2, 3, 4]),
            "dropout": ("choice", [0.2, 0.3, 0.4, 0.5]),
            "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
            "weight_decay": ("choice", [0.0, 1e-4, 1e-3, 5e-3]),
        },
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
