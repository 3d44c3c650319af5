"""MTFN: multi-task TFN (Yu et al., ACL 2020, the CH-SIMS paper), as MMSA implements it.

TFN (:mod:`msakit.models.tfn`: the same sub-networks, tensor fusion and bounded fusion output)
plus one head per modality on its sub-network's output z_m: dropout, then Linear + ReLU,
Linear + ReLU, Linear (:class:`msakit.models.lf_dnn.LateFusionHead`). Trained on SIMS's (and
SIMS v2's) unimodal labels, as MMSA's multi-task trainer: the loss is
w_M L1(ŷ_M, y_M) + w_T L1(ŷ_T, y_T) + w_A L1(ŷ_A, y_A) + w_V L1(ŷ_V, y_V), with the file's
``regression_labels`` and ``regression_labels_T/A/V``; Adam at one learning rate with a weight
decay per sub-network (text, audio, vision) and none on the rest (MMSA's MTFN optimizer gives
the other parameters Adam's default, 0, whatever its ``weight_decay`` says).

The multi-task machinery (:class:`MultiTask`) is shared with MLMF and MLF-DNN
(:mod:`msakit.models.mlmf`, :mod:`msakit.models.mlf_dnn`). Evaluation reports the fusion
output; its loss is the fusion output's L1 (MMSA's validation loss weights the four terms; msakit
early-stops on the validation MAE for every model, docs/readings.md "MTFN, MLMF, MLF-DNN").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from msakit.config import groups
from msakit.config.model_config import hp
from msakit.core.errors import MsakitError
from msakit.models.base import (
    LOCAL,
    Batch,
    Dims,
    LossContext,
    LossOutput,
    ModelOutput,
    MSAModel,
    l1_task,
)
from msakit.models.import_weights import rename_mmsa
from msakit.models.lf_dnn import LateFusionHead
from msakit.models.registry import ModelSpec, register_model
from msakit.models.tfn import MMSA_OUTPUT_SCALE, MMSA_TFN_RULES, TFN, TFNConfig

UNIMODAL = {"text": "T", "audio": "A", "vision": "V"}
"""msakit's modality -> MMSA's task letter (``regression_labels_T``, ``post_text_layer_1``)."""
_MMSA_HEAD = {"text": "text", "audio": "audio", "vision": "video"}


class MultiTask(MSAModel):
    """Unimodal heads on a model's representations ``text``, ``audio``, ``vision`` and the
    weighted multi-task L1 of MMSA's multi-task trainers, on the training file's unimodal
    labels (held by the model from :meth:`on_train_start`, indexed by ``batch.index``).

    The config provides ``post_{m}_dim``, ``post_{m}_dropout`` and ``weight_{fusion,text,
    audio,vision}``; the subclass calls :meth:`add_heads` and :meth:`with_heads`."""

    config: Any  # the subclass's ModelConfig, with the settings named above

    loss_parts = tuple(UNIMODAL)
    """Each unimodal head's L1 against its labels, before its weight ``weight_{m}`` (the loss:
    ``weight_fusion`` x task + the weighted parts); ``ctx.mean`` over the global batch."""

    def add_heads(self, widths: dict[str, int]) -> None:
        c = self.config
        self.heads = nn.ModuleDict({
            m: LateFusionHead(widths[m], getattr(c, f"post_{m}_dim"),
                              getattr(c, f"post_{m}_dropout"))
            for m in UNIMODAL})
        self.unimodal_labels: dict[str, torch.Tensor] | None = None

    def with_heads(self, output: ModelOutput) -> ModelOutput:
        """``output`` with each head's prediction (B,) in ``terms`` under the modality's name."""
        for m, head in self.heads.items():
            output.terms[m] = head(output.representations[m])
        return output

    def on_train_start(self, train: Any) -> None:
        missing = [k for k in UNIMODAL.values() if k not in train.unimodal_labels]
        if missing:
            raise MsakitError(
                f"{self.config.model} trains on unimodal labels (regression_labels_T/A/V, in "
                f"SIMS and SIMS v2 files); the training split has no "
                f"regression_labels_{missing[0]}")
        device = next(self.parameters()).device
        self.unimodal_labels = {
            m: torch.as_tensor(train.unimodal_labels[k], dtype=torch.float32, device=device)
            for m, k in UNIMODAL.items()}

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        """Training: the weighted L1 of the fusion and unimodal outputs; evaluation: the
        fusion output's L1."""
        task = l1_task(output, batch, ctx)
        if not self.training:
            return LossOutput(task, task)
        if self.unimodal_labels is None:
            raise MsakitError(f"{self.config.model} trains with the training split's unimodal "
                              "labels: call on_train_start(train) first")
        c, index = self.config, batch.index
        unimodal, parts = task.new_zeros(()), {}
        for m, labels in self.unimodal_labels.items():
            target = labels[index.to(labels.device)].to(output.terms[m].dtype)
            parts[m] = ctx.mean((output.terms[m] - target).abs())
            unimodal = unimodal + getattr(c, f"weight_{m}") * parts[m]
        return LossOutput(c.weight_fusion * task + unimodal, task, parts)


@dataclass
class MTFNConfig(TFNConfig, model="mtfn"):
    """MTFN's hyperparameters: TFN's, with MMSA's SIMS configuration as defaults
    (config_regression.json; the repository's SIMS v2 entry is the ``simsv2`` preset), plus the
    heads and the loss weights."""

    text_hidden: int = hp(256, "width of the text LSTM (MMSA hidden_dims[0])", low=1)
    vision_hidden: int = hp(256, "width of the vision sub-network (MMSA hidden_dims[2])", low=1)
    text_out: int = hp(256, "width of z_t, the text sub-network's output", low=1)
    audio_dropout: float = hp(0.2, "dropout in the audio sub-network", low=0.0, high=1.0)
    vision_dropout: float = hp(0.2, "dropout in the vision sub-network", low=0.0, high=1.0)
    post_fusion_dropout: float = hp(0.2, "dropout on the fusion tensor", low=0.0, high=1.0)
    post_text_dim: int = hp(64, "width of the text head", low=1)
    post_audio_dim: int = hp(4, "width of the audio head", low=1)
    post_vision_dim: int = hp(8, "width of the vision head (MMSA post_video_dim)", low=1)
    post_text_dropout: float = hp(0.2, "dropout before the text head", low=0.0, high=1.0)
    post_audio_dropout: float = hp(0.2, "dropout before the audio head", low=0.0, high=1.0)
    post_vision_dropout: float = hp(0.2, "dropout before the vision head", low=0.0, high=1.0)
    weight_fusion: float = hp(0.6, "w_M: weight of the fusion output's L1 (MMSA M)", low=0.0)
    weight_text: float = hp(0.4, "w_T: weight of the text head's L1 (MMSA T)", low=0.0)
    weight_audio: float = hp(0.0, "w_A: weight of the audio head's L1 (MMSA A)", low=0.0)
    weight_vision: float = hp(1.0, "w_V: weight of the vision head's L1 (MMSA V)", low=0.0)


class MTFN(MultiTask, TFN):
    """Multi-task TFN (module docstring)."""

    def __init__(self, config: MTFNConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__(config, dims, text_encoder)
        self.add_heads({"text": config.text_out, "audio": config.audio_hidden,
                        "vision": config.vision_hidden})

    def forward(self, batch: Batch) -> ModelOutput:
        return self.with_heads(super().forward(batch))


MMSA_HEAD_RULES: list[tuple[str, str | None]] = [
    (rf"post_{mmsa}_layer_([123])\.(weight|bias)", rf"heads.{m}.fc\1.\2")
    for m, mmsa in _MMSA_HEAD.items()
]
"""MMSA's unimodal heads of MTFN, MLMF and MLF_DNN -> msakit's :class:`MultiTask` heads."""


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's MTFN state dict (``torch.save(AMIO.state_dict())``) -> msakit's MTFN's."""
    mapped = rename_mmsa(state, [*MMSA_HEAD_RULES, *MMSA_TFN_RULES], model="MTFN")
    for key, value in MMSA_OUTPUT_SCALE.items():
        if key not in state:
            raise MsakitError(f"not MMSA's MTFN weights: missing key {key}")
        if state[key].numel() != 1 or float(state[key]) != value:
            raise MsakitError(f"{key} is {state[key].flatten().tolist()}, MMSA's MTFN has "
                              f"[{value}]; msakit's output bound (--set output_bound) is 3")
    return mapped


def mmsa_multitask_run(batch_size: int, lr: float, decays: tuple[float, float, float, float]
                       ) -> dict:
    """MMSA's multi-task trainers: Adam at one learning rate, weight decays (text, audio,
    vision, the rest), no schedule, early stop after 8 epochs (200 is a cap)."""
    text, audio, vision, other = decays
    return {"text_encoder": None, "batch_size": batch_size,
            "lr": groups(text=lr, audio=lr, vision=lr, other=lr),
            "weight_decay": groups(text=text, audio=audio, vision=vision, other=other),
            "optimizer": "adam", "schedule": "constant",
            "warmup": 0.0, "epochs": 200, "early_stop": 8}


MULTITASK_TUNE = {  # MMSA's config_tune.json, shared by mtfn, mlmf and mlf_dnn
    "lr": ("choice", [5e-4, 1e-3, 2e-3, 5e-3]),
    "post_text_dim": ("choice", [8, 16, 32, 64]),
    "post_audio_dim": ("choice", [4, 5]),
    "post_vision_dim": ("choice", [8, 16, 32, 64]),
    "weight_fusion": ("choice", [0.2, 0.4, 0.6, 0.8, 1.0]),
    "weight_text": ("choice", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    "weight_audio": ("choice", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    "weight_vision": ("choice", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
}

SPEC = register_model(
    ModelSpec(
        name="mtfn",
        title="MTFN",
        paper="Yu et al., ACL 2020",
        config=MTFNConfig,
        build=MTFN,
        presets={  # MMSA's config_regression.json, "mtfn" (SIMS, SIMS v2: unimodal labels)
            "sims": {"run": mmsa_multitask_run(64, 5e-3, (1e-3, 1e-4, 1e-5, 0.0)), "model": {}},
            "simsv2": {  # the repository's config only
                "run": mmsa_multitask_run(32, 5e-4, (1e-5, 1e-4, 1e-4, 0.0)),
                "model": {"text_hidden": 64, "audio_hidden": 16, "vision_hidden": 64,
                          "text_out": 32, "post_fusion_dim": 64, "post_text_dim": 16,
                          "post_audio_dim": 5, "post_vision_dim": 64, "audio_dropout": 0.3,
                          "vision_dropout": 0.3, "post_fusion_dropout": 0.5,
                          "post_text_dropout": 0.5, "post_audio_dropout": 0.5,
                          "post_vision_dropout": 0.5, "weight_fusion": 1.0, "weight_text": 0.4,
                          "weight_audio": 0.4, "weight_vision": 0.8}},
        },
        search_space={**MULTITASK_TUNE, "text_out": ("choice", [32, 64, 128, 256]),
                      "post_fusion_dim": ("choice", [16, 32, 64, 128])},
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
