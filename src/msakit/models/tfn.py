"""TFN: Tensor Fusion Network (Zadeh et al., EMNLP 2017), as MMSA implements it.

Reads top to bottom: the two sub-networks (also LMF's, :mod:`msakit.models.lmf`), the model,
then its registration. Every difference between the paper and MMSA's code is in
docs/readings.md ("TFN").

* Audio and vision (the paper's "embedding sub-networks"): each sample's frames are averaged
  over time, then BatchNorm -> dropout -> three Linear + ReLU layers (:class:`VectorSubNet`).
  MMSA (``need_normalized``) averages over every padded frame of the file, zeros included,
  which is ``padding="mmsa"`` (the default); ``padding="valid"`` averages over the valid frames.
* Text: a one-layer LSTM over the precomputed text features (the file's ``text``, frozen BERT
  outputs in MMSA's files; the paper used GloVe vectors), its last hidden state through a
  Linear layer (:class:`TextSubNet`). MMSA runs the LSTM over every padded position;
  ``padding="valid"`` stops it at each sample's last token.
* Fusion: z = [1; z_a] ⊗ [1; z_v] ⊗ [1; z_t] flattened, then dropout and a 3-layer head
  (ReLU, ReLU, linear); the output o becomes ``bound * (2 sigmoid(o) - 1)``, computed as MMSA
  does (``6 sigmoid(o) - 3`` for bound 3, MMSA's value on every data set, SIMS included).
* Loss: L1 (MMSA's trainer).

Shapes: text features (B, Lt, Dt), audio (B, La, Da), vision (B, Lv, Dv).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.encoders.sequence import masked_mean
from msakit.models.base import (
    Batch,
    Dims,
    L1Regression,
    ModelOutput,
    groups_by_prefix,
)
from msakit.models.import_weights import rename_mmsa
from msakit.models.registry import ModelSpec, register_model

PADDINGS = ("mmsa", "valid")


class VectorSubNet(nn.Module):
    """BatchNorm -> dropout -> 3 x (Linear, ReLU): (B, D_in) -> (B, hidden).

    The audio and vision sub-network of TFN and LMF (MMSA's ``SubNet``, same parameters)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim)
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(self.drop(self.norm(x))))
        return F.relu(self.fc3(F.relu(self.fc2(h))))


class TextSubNet(nn.Module):
    """A one-layer LSTM's last hidden state, then a Linear layer: (B, Lt, Dt) -> (B, out).

    MMSA's ``TextSubNet`` (same parameters). Its dropout is 0 for a one-layer LSTM, whatever
    its configuration says, so there is none here. With ``lengths`` the LSTM stops at each
    sample's last valid token; without, it reads every position."""

    def __init__(self, in_dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps: torch.Tensor | PackedSequence = x
        if lengths is not None:
            steps = pack_padded_sequence(
                x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
            )
        _, (h, _) = self.lstm(steps)
        return self.fc(h[0])


def pooled_inputs(
    batch: Batch, valid: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Audio and vision averaged over time (B, D) and the text lengths to read (None: all).

    ``valid=False`` is MMSA's ``need_normalized``: the mean over every frame the batch holds
    (the file's full padded length, :meth:`MSAModel.reads_padding`)."""
    audio, vision = batch.audio, batch.vision
    if not valid:
        return audio.mean(dim=1), vision.mean(dim=1), None
    frames_a = torch.arange(audio.size(1), device=audio.device)
    frames_v = torch.arange(vision.size(1), device=vision.device)
    audio_mean = masked_mean(audio, frames_a[None] < batch.audio_lengths[:, None])
    vision_mean = masked_mean(vision, frames_v[None] < batch.vision_lengths[:, None])
    return audio_mean, vision_mean, batch.text[:, 1].sum(dim=1)


def with_one(x: torch.Tensor) -> torch.Tensor:
    """[1; x]: (B, d) -> (B, d + 1), the constant that keeps unimodal terms in the product."""
    return torch.cat([x.new_ones(x.size(0), 1), x], dim=1)


def text_width(dims: Dims, model: str) -> int:
    """The width of the file's precomputed text features, which the model needs."""
    if dims.text_dim is None:
        raise MsakitError(f"{model} reads the file's precomputed text features ('text'); "
                          "the data were loaded without them")
    return dims.text_dim


@dataclass
class TFNConfig(ModelConfig, model="tfn"):
    """TFN's hyperparameters. Defaults: MMSA's MOSI configuration (config_regression.json);
    the other data sets' values are the presets at the end of this file.

    MMSA's ``hidden_dims`` are (text, audio, vision); of its ``dropouts`` (audio, vision, text,
    post-fusion) the text one has no effect (:class:`TextSubNet`), so it is not here."""

    text_hidden: int = hp(128, "width of the text LSTM (MMSA hidden_dims[0])", low=1)
    audio_hidden: int = hp(32, "width of the audio sub-network (MMSA hidden_dims[1])", low=1)
    vision_hidden: int = hp(128, "width of the vision sub-network (MMSA hidden_dims[2])", low=1)
    text_out: int = hp(32, "width of z_t, the text sub-network's output", low=1)
    post_fusion_dim: int = hp(64, "width of the two post-fusion layers", low=1)
    audio_dropout: float = hp(0.3, "dropout in the audio sub-network", low=0.0, high=1.0)
    vision_dropout: float = hp(0.3, "dropout in the vision sub-network", low=0.0, high=1.0)
    post_fusion_dropout: float = hp(0.5, "dropout on the fusion tensor", low=0.0, high=1.0)
    output_bound: float = hp(3.0, "predictions lie in (-bound, bound) (MMSA: 3 everywhere)",
                             low=0.0)
    padding: str = hp("mmsa", "mmsa: average every padded frame and run the LSTM over every "
                      "position (MMSA); valid: valid frames and tokens only", choices=PADDINGS)


class TFN(L1Regression):
    """Tensor Fusion Network (module docstring)."""

    def __init__(self, config: TFNConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__()
        c = self.config = config
        self.audio_net = VectorSubNet(dims.audio, c.audio_hidden, c.audio_dropout)
        self.vision_net = VectorSubNet(dims.vision, c.vision_hidden, c.vision_dropout)
        self.text_net = TextSubNet(text_width(dims, "TFN"), c.text_hidden, c.text_out)
        fused = (c.audio_hidden + 1) * (c.vision_hidden + 1) * (c.text_out + 1)
        self.post_fusion_drop = nn.Dropout(c.post_fusion_dropout)
        self.post_fusion_1 = nn.Linear(fused, c.post_fusion_dim)
        self.post_fusion_2 = nn.Linear(c.post_fusion_dim, c.post_fusion_dim)
        self.post_fusion_3 = nn.Linear(c.post_fusion_dim, 1)

    def reads_padding(self) -> bool:
        return self.config.padding == "mmsa"

    def subnetworks(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The three unimodal representations z_t, z_a, z_v, each (B, d_m)."""
        audio, vision, text_lengths = pooled_inputs(batch, self.config.padding == "valid")
        return {
            "text": self.text_net(batch.text_features, text_lengths),
            "audio": self.audio_net(audio),
            "vision": self.vision_net(vision),
        }

    def forward(self, batch: Batch) -> ModelOutput:
        reps = self.subnetworks(batch)
        a, v, t = with_one(reps["audio"]), with_one(reps["vision"]), with_one(reps["text"])
        fused = (a.unsqueeze(2) * v.unsqueeze(1)).flatten(1)  # (B, (da+1)(dv+1))
        fused = (fused.unsqueeze(2) * t.unsqueeze(1)).flatten(1)  # (B, (da+1)(dv+1)(dt+1))
        h = F.relu(self.post_fusion_1(self.post_fusion_drop(fused)))
        out = self.post_fusion_3(F.relu(self.post_fusion_2(h))).squeeze(1)
        bound = self.config.output_bound
        return ModelOutput(torch.sigmoid(out) * (2 * bound) + (-bound), reps)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(
            self, {"text": ("text_net.",), "audio": ("audio_net.",), "vision": ("vision_net.",)}
        )


# MMSA key (after ``Model.``) -> msakit key; None: checked, then dropped.
MMSA_SUBNET_RULES: list[tuple[str, str | None]] = [
    (r"audio_subnet\.norm\.(.+)", r"audio_net.norm.\1"),
    (r"video_subnet\.norm\.(.+)", r"vision_net.norm.\1"),
    (r"audio_subnet\.linear_([123])\.(weight|bias)", r"audio_net.fc\1.\2"),
    (r"video_subnet\.linear_([123])\.(weight|bias)", r"vision_net.fc\1.\2"),
    (r"text_subnet\.rnn\.(.+)", r"text_net.lstm.\1"),
    (r"text_subnet\.linear_1\.(weight|bias)", r"text_net.fc.\1"),
]
"""The sub-networks that TFN and LMF share (MMSA's ``SubNet`` and ``TextSubNet``)."""
MMSA_TFN_RULES = [
    *MMSA_SUBNET_RULES,
    (r"post_fusion_layer_([123])\.(weight|bias)", r"post_fusion_\1.\2"),
    (r"output_(range|shift)", None),
]
MMSA_OUTPUT_SCALE = {"Model.output_range": 6.0, "Model.output_shift": -3.0}
"""TFN's fixed output scaling in MMSA (a prediction in (-3, 3) on every data set)."""


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's TFN state dict (``torch.save(AMIO.state_dict())``) -> msakit's TFN state dict."""
    mapped = rename_mmsa(state, MMSA_TFN_RULES, model="TFN")
    for key, value in MMSA_OUTPUT_SCALE.items():
        if key not in state:
            raise MsakitError(f"not MMSA's TFN weights: missing key {key}")
        if state[key].numel() != 1 or float(state[key]) != value:
            raise MsakitError(f"{key} is {state[key].flatten().tolist()}, MMSA's TFN has "
                              f"[{value}]; msakit's output bound (--set output_bound) is 3")
    return mapped


def mmsa_run(batch_size: int, lr: float) -> dict:
    """MMSA's training of TFN and LMF: Adam at one learning rate, no schedule, early stop after
    8 epochs without a better validation result (MMSA trains until then; 200 is a cap)."""
    return {"text_encoder": None, "batch_size": batch_size,
            "lr": groups(text=lr, audio=lr, vision=lr, other=lr),
            "weight_decay": groups(text=0.0, audio=0.0, vision=0.0, other=0.0), "optimizer": "adam",
            "schedule": "constant", "warmup": 0.0, "epochs": 200, "early_stop": 8}


TFN_PRESETS = {  # MMSA's config_regression.json, "tfn"
    "mosi": {"run": mmsa_run(32, 1e-3), "model": {}},
    "mosei": {"run": mmsa_run(128, 5e-3), "model": {
        "audio_hidden": 16, "text_out": 128, "post_fusion_dim": 16, "audio_dropout": 0.4,
        "vision_dropout": 0.4, "post_fusion_dropout": 0.4}},
    "sims": {"run": mmsa_run(32, 5e-4), "model": {
        "text_out": 256, "post_fusion_dim": 32, "audio_dropout": 0.4, "vision_dropout": 0.4,
        "post_fusion_dropout": 0.4}},
    "simsv2": {"run": mmsa_run(128, 2e-3), "model": {  # the repository's config only
        "text_hidden": 128, "audio_hidden": 32, "vision_hidden": 128, "text_out": 128,
        "post_fusion_dim": 32, "audio_dropout": 0.3, "vision_dropout": 0.3,
        "post_fusion_dropout": 0.5}},
}

SPEC = register_model(
    ModelSpec(
        name="tfn",
        title="TFN",
        paper="Zadeh et al., EMNLP 2017",
        config=TFNConfig,
        build=TFN,
        presets=TFN_PRESETS,
        search_space={  # MMSA's config_tune.json
            "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
            "text_out": ("choice", [32, 64, 128, 256]),
            "post_fusion_dim": ("choice", [16, 32, 64, 128]),
            "post_fusion_dropout": ("choice", [0.2, 0.3, 0.4, 0.5]),
            "audio_hidden": ("choice", [16, 32]),
        },
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
