"""Self-MM: self-supervised multi-task learning with unimodal labels (Yu et al., AAAI 2021).

As MMSA implements it (thuiar/MMSA ``models/multiTask/SELF_MM.py``, trained by
``trains/multiTask/SELF_MM.py``); readings in docs/readings.md, "Self-MM".

* Representations: text = BERT's [CLS] vector; audio and vision = an LSTM over the valid frames
  (packed), its last hidden state, dropout, Linear -> ``audio_out`` / ``vision_out``.
* Four heads, one per task (fusion M on the concatenation [t; a; v], and T, A, V on each
  modality): dropout, Linear + ReLU (the head's feature F_s, which label generation reads),
  Linear + ReLU, Linear -> 1. The fusion head's output is the prediction.
* Loss (eq. 10): L1(y_M) + sum_s w_s |y_s_hat - y_s| with w_s = tanh(|y_s - y_M|), where y_s are
  the generated unimodal labels of the batch's samples.
* Unimodal label generation (ULGM, Sec. 3.3, :class:`UnimodalLabels`): every training sample
  keeps its latest feature of each task; positive/negative centres are the means of the
  features of samples whose label (of that task) is > 0 / < 0. From the second epoch each
  step computes alpha = (D_n - D_p) / (D_p + eps) for the fusion and each unimodal feature,
  the new label y_s = 0.5 alpha_s/alpha_m y_m + 0.5 (y_m + alpha_s - alpha_m) clipped to
  [-H, H], and the momentum update y_s <- (n-1)/(n+1) y_s + 2/(n+1) y_s_new at epoch n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from msakit.config import groups
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.encoders.recurrent import FinalStateLSTM
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
    l1_task,
)
from msakit.models.import_weights import ModuleRule, rename_modules
from msakit.models.registry import ModelSpec, PresetEntry, register_model

TASKS = ("fusion", "text", "audio", "vision")
UNIMODAL = TASKS[1:]
SEQUENCE_LENGTHS = ("own", "text")
MIN = 1e-8
"""epsilon in the relative distances of label generation (MMSA's ``MIN``)."""


@dataclass
class SelfMMConfig(ModelConfig, model="self_mm"):
    """Self-MM's hyperparameters; defaults: MMSA's config_regression.json ("self_mm") on MOSI,
    the other data sets' values are the presets at the end of this file. MMSA's names are in
    brackets."""

    audio_hidden: int = hp(16, "audio LSTM width (a_lstm_hidden_size)", low=1)
    vision_hidden: int = hp(32, "vision LSTM width (v_lstm_hidden_size)", low=1)
    audio_layers: int = hp(1, "audio LSTM layers (a_lstm_layers)", low=1)
    vision_layers: int = hp(1, "vision LSTM layers (v_lstm_layers)", low=1)
    audio_rnn_dropout: float = hp(0.0, "dropout after the audio LSTM (a_lstm_dropout)",
                                  low=0.0, high=1.0)
    vision_rnn_dropout: float = hp(0.0, "dropout after the vision LSTM (v_lstm_dropout)",
                                   low=0.0, high=1.0)
    audio_out: int = hp(16, "audio representation width (audio_out)", low=1)
    vision_out: int = hp(32, "vision representation width (video_out)", low=1)
    fusion_dim: int = hp(128, "fusion head width (post_fusion_dim)", low=1)
    text_dim: int = hp(32, "text head width (post_text_dim)", low=1)
    audio_dim: int = hp(16, "audio head width (post_audio_dim)", low=1)
    vision_dim: int = hp(32, "vision head width (post_video_dim)", low=1)
    fusion_dropout: float = hp(0.0, "fusion head input dropout (post_fusion_dropout)",
                               low=0.0, high=1.0)
    text_dropout: float = hp(0.1, "text head input dropout (post_text_dropout)",
                             low=0.0, high=1.0)
    audio_dropout: float = hp(0.1, "audio head input dropout (post_audio_dropout)",
                              low=0.0, high=1.0)
    vision_dropout: float = hp(0.0, "vision head input dropout (post_video_dropout)",
                               low=0.0, high=1.0)
    label_bound: float = hp(3.0, "H: generated labels are clipped to [-H, H] (H)", low=0.0)
    exclude_zero: bool = hp(True, "positive centres average labels > 0, not >= 0 (excludeZero)")
    sequence_lengths: str = hp("own", "audio/vision frames the LSTMs read: own (valid lengths, "
                               "unaligned data) or text (the text mask's length, aligned data)",
                               choices=SEQUENCE_LENGTHS)


class TaskHead(nn.Module):
    """Dropout, Linear + ReLU (the feature F_s), Linear + ReLU, Linear -> 1."""

    def __init__(self, dim: int, width: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(dim, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, dim) -> (prediction (B,), feature (B, width))."""
        feature = F.relu(self.fc1(self.dropout(x)))
        return self.fc3(F.relu(self.fc2(feature))).squeeze(-1), feature


class UnimodalLabels:
    """ULGM's state over the training split: labels, last features and centres of every task.

    ``labels[task]`` (N,) starts as the true labels; ``features[task]`` (N, d_task) as zeros.
    """

    def __init__(self, labels: torch.Tensor, widths: dict[str, int], *, bound: float,
                 exclude_zero: bool) -> None:
        self.bound, self.exclude_zero = bound, exclude_zero
        n = labels.numel()
        self.labels = {t: labels.clone() for t in TASKS}
        self.features = {t: labels.new_zeros(n, widths[t]) for t in TASKS}
        self.centres = {t: (labels.new_zeros(widths[t]), labels.new_zeros(widths[t]))
                        for t in TASKS}

    def step(self, index: torch.Tensor, features: dict[str, torch.Tensor], epoch: int) -> None:
        """After a training step (epoch counts from 1): new labels from epoch 2 on, then the
        batch's features and all centres."""
        if epoch > 1:
            self._update_labels(index, features, epoch)
        for t in TASKS:
            self.features[t][index] = features[t]
        for t in TASKS:
            positive = self.labels[t] > 0 if self.exclude_zero else self.labels[t] >= 0
            self.centres[t] = (self.features[t][positive].mean(0),
                               self.features[t][self.labels[t] < 0].mean(0))

    def _relative_distance(self, task: str, feature: torch.Tensor) -> torch.Tensor:
        """alpha = (D_n - D_p) / (D_p + eps), D = L2 distance to the positive/negative centre."""
        positive, negative = self.centres[task]
        d_p = (feature - positive).norm(dim=-1)
        d_n = (feature - negative).norm(dim=-1)
        return (d_n - d_p) / (d_p + MIN)

    def _update_labels(self, index: torch.Tensor, features: dict[str, torch.Tensor],
                       epoch: int) -> None:
        alpha_m = self._relative_distance("fusion", features["fusion"])
        y_m = self.labels["fusion"][index]
        for t in UNIMODAL:
            alpha_s = self._relative_distance(t, features[t])
            new = 0.5 * (alpha_s / (alpha_m + MIN)) * y_m + 0.5 * (y_m + alpha_s - alpha_m)
            new = new.clamp(-self.bound, self.bound)
            old = self.labels[t][index]
            self.labels[t][index] = (epoch - 1) / (epoch + 1) * old + 2 / (epoch + 1) * new

    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        for t in TASKS:
            out[f"labels.{t}"] = self.labels[t]
            out[f"features.{t}"] = self.features[t]
            out[f"centres.{t}.positive"], out[f"centres.{t}.negative"] = self.centres[t]
        return out

    def load(self, state: dict[str, torch.Tensor]) -> None:
        device = self.labels["fusion"].device
        for t in TASKS:
            self.labels[t] = state[f"labels.{t}"].to(device)
            self.features[t] = state[f"features.{t}"].to(device)
            self.centres[t] = (state[f"centres.{t}.positive"].to(device),
                               state[f"centres.{t}.negative"].to(device))


class SelfMM(MSAModel):
    """Self-MM on BERT text and unaligned audio/vision sequences."""

    name = "self_mm"
    loss_parts = UNIMODAL
    """Each unimodal output's tanh-weighted L1 against its generated labels (MMSA's
    ``weighted_loss`` for T, A, V; the loss: task + their sum); ``ctx.mean`` over the global
    batch."""

    def __init__(self, config: SelfMMConfig, dims: Dims, text_encoder: nn.Module | None) -> None:
        super().__init__()
        if text_encoder is None:
            raise MsakitError("self_mm needs a BERT text encoder")
        c = self.config = config
        self.text_encoder = text_encoder
        bert: Any = text_encoder.config  # transformers' config: settings by model type
        text_width: int = bert.hidden_size
        self.audio_net: nn.Module = FinalStateLSTM(dims.audio, c.audio_hidden, c.audio_out,
                                        layers=c.audio_layers, dropout=c.audio_rnn_dropout)
        self.vision_net: nn.Module = FinalStateLSTM(dims.vision, c.vision_hidden, c.vision_out,
                                         layers=c.vision_layers, dropout=c.vision_rnn_dropout)
        self.heads = nn.ModuleDict({
            "fusion": TaskHead(text_width + c.audio_out + c.vision_out, c.fusion_dim,
                               c.fusion_dropout),
            "text": TaskHead(text_width, c.text_dim, c.text_dropout),
            "audio": TaskHead(c.audio_out, c.audio_dim, c.audio_dropout),
            "vision": TaskHead(c.vision_out, c.vision_dim, c.vision_dropout),
        })
        self.unimodal_labels: UnimodalLabels | None = None
        self.epoch = 1

    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """text (B, 3, Lt) -> {"cls": BERT's last hidden state at [CLS] (B, d_t)}."""
        return {"cls": self.text_encoder(**bert_inputs(text)).last_hidden_state[:, 0]}

    def plot_representations(self) -> dict[str, str]:
        """The features F_s that unimodal label generation reads (each task head's first layer)."""
        return {f"feature_{t}": f"F_{t[0].upper() if t != 'fusion' else 'M'} ({t} head)"
                for t in TASKS}

    def reads_padding(self) -> bool:
        return self.config.sequence_lengths == "text"

    def _lengths(self, batch: Batch, modality: str) -> torch.Tensor:
        if self.config.sequence_lengths == "text":
            lengths = batch.text[:, 1].sum(1).long()
        else:
            lengths = batch.lengths(modality).long()
        return lengths  # clamped to [1, frames] by FinalStateLSTM

    def forward(self, batch: Batch) -> ModelOutput:
        inputs = {
            "text": self.cached_text_features(batch)["cls"],
            "audio": self.audio_net(batch.audio, self._lengths(batch, "audio")),
            "vision": self.vision_net(batch.vision, self._lengths(batch, "vision")),
        }
        inputs["fusion"] = torch.cat([inputs["text"], inputs["audio"], inputs["vision"]], -1)
        reps: dict[str, torch.Tensor] = {}
        for task in TASKS:
            prediction, feature = self.heads[task](inputs[task])
            reps[f"feature_{task}"] = feature
            reps[f"prediction_{task}"] = prediction.unsqueeze(-1)  # (B, 1)
        return ModelOutput(prediction=reps["prediction_fusion"].squeeze(-1),
                           representations=reps)

    # ------------------------------------------------------------ unimodal label generation
    def on_train_start(self, train) -> None:
        device = next(self.parameters()).device
        labels = torch.as_tensor(train.labels, dtype=torch.float32, device=device)
        widths = {t: cast(TaskHead, self.heads[t]).fc1.out_features for t in TASKS}
        self.unimodal_labels = UnimodalLabels(
            labels, widths, bound=self.config.label_bound, exclude_zero=self.config.exclude_zero
        )

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch + 1  # MMSA counts epochs from 1

    def training_state(self) -> dict[str, torch.Tensor]:
        return {} if self.unimodal_labels is None else self.unimodal_labels.state()

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        if state and self.unimodal_labels is not None:
            self.unimodal_labels.load(state)

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        """Training: L1 on the fusion output plus the tanh-weighted L1 of each unimodal output
        against its generated labels, then ULGM's update from the batch; evaluation (or before
        :meth:`on_train_start`): L1 of the fusion output."""
        reps = output.representations
        task = l1_task(output, batch, ctx)
        state = self.unimodal_labels
        if not self.training or state is None:
            return LossOutput(task, task)
        index = batch.index.to(state.labels["fusion"].device)
        y_m = state.labels["fusion"][index]
        auxiliary, parts = task.new_zeros(()), {}
        for t in UNIMODAL:
            y_s = state.labels[t][index]
            weight = torch.tanh((y_s - y_m).abs())
            error = weight * (reps[f"prediction_{t}"].squeeze(-1) - y_s).abs()
            parts[t] = ctx.mean(error)
            auxiliary = auxiliary + parts[t]
        # ULGM sees the global batch: every rank keeps the same labels.
        features = {t: ctx.gather(reps[f"feature_{t}"].detach()).float() for t in TASKS}
        everyone = ctx.gather(batch.index.to(features["fusion"].dtype)).round().long()
        state.step(everyone.to(index.device), features, self.epoch)
        return LossOutput(task + auxiliary, task, parts)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return groups_by_prefix(
            self, {"text": ("text_encoder.",), "audio": ("audio_net.",), "vision": ("vision_net.",)}
        )


# MMSA's module names (after "Model.") -> msakit's.
_MMSA_TASK = {"fusion": "fusion", "text": "text", "audio": "audio", "vision": "video"}
MMSA_RULES = [
    ModuleRule("text_model.model", "text_encoder", leaves=None),
    ModuleRule("audio_model.rnn", "audio_net.rnn", leaves=None),
    ModuleRule("audio_model.linear_1", "audio_net.out"),
    ModuleRule("video_model.rnn", "vision_net.rnn", leaves=None),
    ModuleRule("video_model.linear_1", "vision_net.out"),
    *(ModuleRule(f"post_{_MMSA_TASK[t]}_layer_{k}", f"heads.{t}.fc{k}")
      for t in TASKS for k in (1, 2, 3)),
]


def self_mm_from_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of MMSA's ``AMIO`` for ``self_mm`` (or its gradients) as msakit's
    Self-MM's. Raises :class:`MsakitError` on unknown or missing entries."""
    return rename_modules(state, MMSA_RULES, prefix="Model.",
                          describe="MMSA's Self-MM (an AMIO state dict)")


# MMSA's config_regression.json ("self_mm") and its trainer: Adam with L2 weight decay per group
# (BERT biases and LayerNorms without), update_epochs = 4, constant learning rates, early stop
# after 8 epochs, no epoch limit.
_MMSA_LOOP = {"optimizer": "adam", "accumulate": 4, "schedule": "constant", "warmup": 0.0,
              "early_stop": 8, "stop_at_horizon": False}
PRESETS: dict[str, PresetEntry] = {
    "mosi": {
        "run": {**_MMSA_LOOP, "text_encoder": "bert-base-uncased", "batch_size": 16,
                "lr": groups(text=5e-5, audio=5e-3, vision=5e-3, other=1e-3),
                "weight_decay": groups(text=1e-3, audio=1e-3, vision=1e-3, other=1e-3)},
        "model": {},
    },
    "mosei": {
        "run": {**_MMSA_LOOP, "text_encoder": "bert-base-uncased", "batch_size": 32,
                "lr": groups(text=5e-5, audio=5e-3, vision=1e-4, other=1e-3),
                "weight_decay": groups(text=1e-3, audio=0.0, vision=0.0, other=1e-2)},
        "model": {"fusion_dropout": 0.1, "text_dropout": 0.0, "audio_dropout": 0.0},
    },
    "sims": {
        "run": {**_MMSA_LOOP, "text_encoder": "bert-base-chinese", "batch_size": 32,
                "lr": groups(text=5e-5, audio=5e-3, vision=5e-3, other=1e-3),
                "weight_decay": groups(text=1e-3, audio=1e-2, vision=1e-2, other=1e-3)},
        "model": {"vision_hidden": 64, "text_dim": 64, "label_bound": 1.0},
    },
    "simsv2": {  # the repository's config only (its H is 3.0 here, not SIMS's 1.0)
        "run": {**_MMSA_LOOP, "text_encoder": "bert-base-chinese", "batch_size": 16,
                "lr": groups(text=5e-5, audio=1e-3, vision=1e-3, other=1e-3),
                "weight_decay": groups(text=1e-2, audio=0.0, vision=0.0, other=1e-3)},
        "model": {"audio_hidden": 16, "vision_hidden": 64, "audio_out": 16, "vision_out": 32,
                  "fusion_dim": 128, "text_dim": 64, "audio_dim": 32, "vision_dim": 32,
                  "fusion_dropout": 0.0, "text_dropout": 0.0, "audio_dropout": 0.1,
                  "vision_dropout": 0.0, "label_bound": 3.0},
    },
}
# The ranges of MMSA's config_tune.json ("self_mm").
SEARCH_SPACE = {
    "lr.audio": ("float", 1e-4, 5e-3, True),
    "lr.vision": ("float", 1e-4, 5e-3, True),
    "lr.other": ("float", 1e-4, 1e-3, True),
    "weight_decay.other": ("float", 1e-3, 1e-2, True),
    "fusion_dropout": ("float", 0.0, 0.1, False),
    "text_dropout": ("float", 0.0, 0.1, False),
}

SPEC = register_model(
    ModelSpec(
        name="self_mm",
        title="Self-MM",
        paper="Yu et al., AAAI 2021",
        config=SelfMMConfig,
        build=SelfMM,
        presets=PRESETS,
        search_space=SEARCH_SPACE,
        imports={"mmsa": self_mm_from_mmsa},
    )
)
