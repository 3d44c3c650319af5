"""LMF: Low-rank Multimodal Fusion (Liu et al., ACL 2018), as MMSA implements it.

The sub-networks are TFN's (:mod:`msakit.models.tfn`: time-averaged audio and vision through
BatchNorm and three Linear + ReLU layers, a one-layer LSTM over the precomputed text features),
with the text output half the LSTM's width, as MMSA sets it. LMF replaces TFN's outer product
by its rank-r factorisation: with z_m' = [1; z_m] and modality factors W_m^(i) (Sec. 3.2),

    h = sum_i w_i * prod_m (z_m' W_m^(i)) + b,

the prediction itself (output width 1, no activation), trained with an L1 loss.

MMSA's trainer gives the factors their own learning rate (``factor_lr``, the ``factors``
parameter group here) and leaves w and b (``fusion_weights``, ``fusion_bias``) out of its
optimizer: they keep their initial values. msakit does the same by default
(``train_fusion_weights=False``); docs/readings.md ("LMF") has the details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from msakit.config.model_config import ModelConfig, hp
from msakit.models.base import (
    Batch,
    Dims,
    L1Regression,
    ModelOutput,
    groups_by_prefix,
)
from msakit.models.import_weights import rename_mmsa
from msakit.models.registry import ModelSpec, register_model
from msakit.models.tfn import (
    MMSA_SUBNET_RULES,
    PADDINGS,
    TextSubNet,
    VectorSubNet,
    mmsa_run,
    pooled_inputs,
    text_width,
    with_one,
)


@dataclass
class LMFConfig(ModelConfig, model="lmf"):
    """LMF's hyperparameters. Defaults: MMSA's MOSI configuration (config_regression.json);
    the other data sets' values are the presets at the end of this file.

    MMSA's ``hidden_dims`` are (text, audio, vision); of its ``dropouts`` (audio, vision, text,
    post-fusion) only the first two act (the text one has no effect on a one-layer LSTM, and
    MMSA's LMF defines a post-fusion dropout it never applies)."""

    text_hidden: int = hp(128, "width of the text LSTM; z_t is half as wide", low=2)
    audio_hidden: int = hp(16, "width of the audio sub-network", low=1)
    vision_hidden: int = hp(128, "width of the vision sub-network", low=1)
    rank: int = hp(3, "r: rank of the factorised fusion tensor", low=1)
    audio_dropout: float = hp(0.3, "dropout in the audio sub-network", low=0.0, high=1.0)
    vision_dropout: float = hp(0.3, "dropout in the vision sub-network", low=0.0, high=1.0)
    factor_lr: float = hp(1e-3, "learning rate of the modality factors (group 'factors')",
                          low=0.0)
    train_fusion_weights: bool = hp(
        False, "train w and b of the fusion (the paper); MMSA's optimizer leaves them out")
    padding: str = hp("mmsa", "mmsa: average every padded frame and run the LSTM over every "
                      "position (MMSA); valid: valid frames and tokens only", choices=PADDINGS)


class LMF(L1Regression):
    """Low-rank Multimodal Fusion (module docstring)."""

    def __init__(self, config: LMFConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__()
        c = self.config = config
        text_out = c.text_hidden // 2
        self.audio_net = VectorSubNet(dims.audio, c.audio_hidden, c.audio_dropout)
        self.vision_net = VectorSubNet(dims.vision, c.vision_hidden, c.vision_dropout)
        self.text_net = TextSubNet(text_width(dims, "LMF"), c.text_hidden, text_out)
        # W_m^(i) for i = 1..r: (r, d_m + 1, 1); w (1, r); b (1, 1)
        self.audio_factor = nn.Parameter(torch.empty(c.rank, c.audio_hidden + 1, 1))
        self.vision_factor = nn.Parameter(torch.empty(c.rank, c.vision_hidden + 1, 1))
        self.text_factor = nn.Parameter(torch.empty(c.rank, text_out + 1, 1))
        self.fusion_weights = nn.Parameter(torch.empty(1, c.rank))
        self.fusion_bias = nn.Parameter(torch.zeros(1, 1))
        for p in (self.audio_factor, self.vision_factor, self.text_factor, self.fusion_weights):
            nn.init.xavier_normal_(p)
        self.fusion_weights.requires_grad_(c.train_fusion_weights)
        self.fusion_bias.requires_grad_(c.train_fusion_weights)

    def reads_padding(self) -> bool:
        return self.config.padding == "mmsa"

    def forward(self, batch: Batch) -> ModelOutput:
        audio, vision, text_lengths = pooled_inputs(batch, self.config.padding == "valid")
        reps = {
            "text": self.text_net(batch.text_features, text_lengths),
            "audio": self.audio_net(audio),
            "vision": self.vision_net(vision),
        }
        # (B, d_m + 1) @ (r, d_m + 1, 1) -> (r, B, 1), multiplied across modalities
        fused = (
            torch.matmul(with_one(reps["audio"]), self.audio_factor)
            * torch.matmul(with_one(reps["vision"]), self.vision_factor)
            * torch.matmul(with_one(reps["text"]), self.text_factor)
        )
        weighted = torch.matmul(self.fusion_weights, fused.permute(1, 0, 2))  # (B, 1, 1)
        prediction = weighted.view(-1) + self.fusion_bias.view(-1)
        return ModelOutput(prediction, reps)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(self, {
            "text": ("text_net.",), "audio": ("audio_net.",), "vision": ("vision_net.",),
            "factors": ("audio_factor", "vision_factor", "text_factor"),
        })

    def optimizer_settings(self, config: Any) -> dict[str, tuple[float, float]]:
        """The run's groups, plus ``factors`` at ``factor_lr`` with the ``other`` weight decay
        (MMSA: one weight decay for everything)."""
        settings = super().optimizer_settings(config)
        settings["factors"] = (self.config.factor_lr, config.weight_decay["other"])
        return settings


MMSA_LMF_RULES = [
    *MMSA_SUBNET_RULES,
    (r"(audio|text)_factor", r"\1_factor"),
    (r"video_factor", "vision_factor"),
    (r"fusion_(weights|bias)", r"fusion_\1"),
]


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's LMF state dict (``torch.save(AMIO.state_dict())``) -> msakit's LMF state dict."""
    return rename_mmsa(state, MMSA_LMF_RULES, model="LMF")


def _lmf_run(batch_size: int, lr: float, weight_decay: float) -> dict:
    run = mmsa_run(batch_size, lr)
    run["weight_decay"] = dict.fromkeys(run["lr"], weight_decay)  # Adam's, on every parameter
    return run


LMF_PRESETS = {  # MMSA's config_regression.json, "lmf"
    "mosi": {"run": _lmf_run(64, 1e-3, 5e-3), "model": {}},
    "mosei": {"run": _lmf_run(32, 1e-3, 1e-3), "model": {
        "rank": 4, "audio_dropout": 0.2, "vision_dropout": 0.2}},
    "sims": {"run": _lmf_run(64, 2e-3, 5e-3), "model": {
        "text_hidden": 64, "vision_hidden": 64, "rank": 4, "audio_dropout": 0.2,
        "vision_dropout": 0.2, "factor_lr": 5e-4}},
    "simsv2": {"run": _lmf_run(32, 2e-3, 1e-4), "model": {  # the repository's config only
        "text_hidden": 64, "audio_hidden": 32, "vision_hidden": 64, "rank": 4,
        "audio_dropout": 0.3, "vision_dropout": 0.3, "factor_lr": 5e-4}},
}

SPEC = register_model(
    ModelSpec(
        name="lmf",
        title="LMF",
        paper="Liu et al., ACL 2018",
        config=LMFConfig,
        build=LMF,
        presets=LMF_PRESETS,
        search_space={  # MMSA's config_tune.json
            "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
            "factor_lr": ("choice", [1e-4, 5e-4, 1e-3]),
            "weight_decay": ("choice", [0.0, 1e-4, 1e-3, 5e-3]),
            "rank": ("choice", [3, 4, 5, 6]),
            "audio_dropout": ("choice", [0.2, 0.3, 0.4]),
            "vision_dropout": ("choice", [0.2, 0.3, 0.4]),
        },
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
