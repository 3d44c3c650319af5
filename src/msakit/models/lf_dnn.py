"""LF-DNN: late fusion of unimodal sub-networks by a DNN (Williams et al., 2018, "Recognizing
Emotions in Video Using Multimodal DNN Feature Fusion"; MMSA's benchmark baseline), as MMSA
implements it.

The sub-networks are TFN's (:mod:`msakit.models.tfn`): time-averaged audio and vision through
BatchNorm, dropout and three Linear + ReLU layers, a one-layer LSTM over the precomputed text
features and a Linear layer. Late fusion concatenates [z_a; z_v; z_t], then dropout and three
Linear layers (ReLU, ReLU, linear) give the prediction, with no output bound. Loss: L1 (MMSA's
trainer), Adam with one learning rate and one weight decay (L2 added to the gradient) for every
parameter.

MMSA averages audio and vision over every padded frame (``need_normalized``) and runs the LSTM
over every padded position: ``padding="mmsa"``, the default; ``padding="valid"`` reads valid
frames and tokens only (as TFN's option).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.models.base import Batch, Dims, L1Regression, ModelOutput, groups_by_prefix
from msakit.models.import_weights import rename_mmsa
from msakit.models.registry import ModelSpec, register_model
from msakit.models.tfn import (
    MMSA_SUBNET_RULES,
    PADDINGS,
    TextSubNet,
    VectorSubNet,
    pooled_inputs,
    text_width,
)


@dataclass
class LFDNNConfig(ModelConfig, model="lf_dnn"):
    """LF-DNN's hyperparameters. Defaults: MMSA's MOSI configuration (config_regression.json);
    the other data sets' values are the presets at the end of this file.

    MMSA's ``hidden_dims`` are (text, audio, vision); of its ``dropouts`` (audio, vision, text,
    post-fusion) the text one has no effect on a one-layer LSTM, so it is not here."""

    text_hidden: int = hp(128, "width of the text LSTM (MMSA hidden_dims[0])", low=1)
    audio_hidden: int = hp(16, "width of the audio sub-network (MMSA hidden_dims[1])", low=1)
    vision_hidden: int = hp(128, "width of the vision sub-network (MMSA hidden_dims[2])", low=1)
    text_out: int = hp(256, "width of z_t, the text sub-network's output", low=1)
    post_fusion_dim: int = hp(128, "width of the two post-fusion layers", low=1)
    audio_dropout: float = hp(0.2, "dropout in the audio sub-network", low=0.0, high=1.0)
    vision_dropout: float = hp(0.2, "dropout in the vision sub-network", low=0.0, high=1.0)
    post_fusion_dropout: float = hp(0.2, "dropout on the concatenated representations",
                                    low=0.0, high=1.0)
    padding: str = hp("mmsa", "mmsa: average every padded frame and run the LSTM over every "
                      "position (MMSA); valid: valid frames and tokens only", choices=PADDINGS)


class LateFusionHead(nn.Module):
    """dropout -> Linear, ReLU -> Linear, ReLU -> Linear: (B, d_in) -> (B, 1).

    MMSA's post-fusion layers of LF-DNN, and the unimodal heads of its multi-task models."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(self.drop(x)))))).squeeze(1)


class LFDNN(L1Regression):
    """Late-fusion DNN (module docstring)."""

    def __init__(self, config: LFDNNConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__()
        c = self.config = config
        self.audio_net = VectorSubNet(dims.audio, c.audio_hidden, c.audio_dropout)
        self.vision_net = VectorSubNet(dims.vision, c.vision_hidden, c.vision_dropout)
        self.text_net = TextSubNet(text_width(dims, "LF-DNN"), c.text_hidden, c.text_out)
        fused = c.audio_hidden + c.vision_hidden + c.text_out
        self.post_fusion = LateFusionHead(fused, c.post_fusion_dim, c.post_fusion_dropout)

    def reads_padding(self) -> bool:
        return self.config.padding == "mmsa"

    def forward(self, batch: Batch) -> ModelOutput:
        audio, vision, text_lengths = pooled_inputs(batch, self.config.padding == "valid")
        reps = {
            "text": self.text_net(batch.text_features, text_lengths),
            "audio": self.audio_net(audio),
            "vision": self.vision_net(vision),
        }
        fused = torch.cat([reps["audio"], reps["vision"], reps["text"]], dim=1)
        return ModelOutput(self.post_fusion(fused), {**reps, "fusion": fused})

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(
            self, {"text": ("text_net.",), "audio": ("audio_net.",), "vision": ("vision_net.",)}
        )


MMSA_LF_DNN_RULES = [
    *MMSA_SUBNET_RULES,
    (r"post_fusion_layer_([123])\.(weight|bias)", r"post_fusion.fc\1.\2"),
]


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's LF_DNN state dict (``torch.save(AMIO.state_dict())``) -> msakit's LF-DNN's."""
    return rename_mmsa(state, MMSA_LF_DNN_RULES, model="LF_DNN")


def mmsa_adam_run(batch_size: int, lr: float, weight_decay: float) -> dict:
    """MMSA's single-task trainer (LF_DNN, EF_LSTM, MFN, Graph_MFN): ``Adam(model.parameters(),
    lr, weight_decay)``, no schedule, L1 loss, early stop after 8 epochs without a better
    validation result (MMSA trains until then; 200 is a cap)."""
    return {"text_encoder": None, "batch_size": batch_size,
            "lr": groups(text=lr, audio=lr, vision=lr, other=lr),
            "weight_decay": groups(text=weight_decay, audio=weight_decay, vision=weight_decay,
                                   other=weight_decay),
            "optimizer": "adam", "schedule": "constant", "warmup": 0.0, "epochs": 200,
            "early_stop": 8}


LF_DNN_PRESETS = {  # MMSA's config_regression.json, "lf_dnn"
    "mosi": {"run": mmsa_adam_run(128, 1e-3, 1e-2), "model": {}},
    "mosei": {"run": mmsa_adam_run(64, 2e-3, 1e-3), "model": {
        "audio_hidden": 32, "text_out": 128}},
    "sims": {"run": mmsa_adam_run(128, 5e-3, 5e-3), "model": {
        "audio_hidden": 32, "post_fusion_dim": 32, "audio_dropout": 0.3, "vision_dropout": 0.3,
        "post_fusion_dropout": 0.5}},
    "simsv2": {"run": mmsa_adam_run(128, 5e-3, 0.0), "model": {  # the repository's config only
        "text_hidden": 64, "audio_hidden": 32, "vision_hidden": 64, "text_out": 256,
        "post_fusion_dim": 32, "audio_dropout": 0.4, "vision_dropout": 0.4,
        "post_fusion_dropout": 0.4}},
}

SPEC = register_model(
    ModelSpec(
        name="lf_dnn",
        title="LF-DNN",
        paper="Williams et al., 2018",
        config=LFDNNConfig,
        build=LFDNN,
        presets=LF_DNN_PRESETS,
        search_space={  # MMSA's config_tune.json, "lf_dnn"
            "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
            "weight_decay": ("choice", [0.0, 1e-3, 5e-3, 1e-2]),
            "text_out": ("choice", [32, 64, 128, 256]),
            "post_fusion_dim": ("choice", [16, 32, 64, 128]),
            "post_fusion_dropout": ("choice", [0.2, 0.3, 0.4, 0.5]),
        },
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
