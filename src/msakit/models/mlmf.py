"""MLMF: multi-task LMF (Yu et al., ACL 2020, the CH-SIMS paper), as MMSA implements it.

LMF (:mod:`msakit.models.lmf`: TFN's sub-networks with z_t half the LSTM's width, the rank-r
factorised fusion, no output bound) plus one head per modality, trained on SIMS's (and SIMS v2's)
unimodal labels with MMSA's weighted multi-task L1 (:class:`msakit.models.mtfn.MultiTask`).
MMSA's optimizer: Adam at one learning rate with a weight decay per sub-network (text, audio,
vision) and ``weight_decay`` on the rest; the modality factors at ``factor_lr``; the fusion
weights w and b at learning rate 0 (not trained, as LMF's ``train_fusion_weights=False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msakit.config.model_config import hp
from msakit.models.base import Batch, Dims, ModelOutput
from msakit.models.import_weights import rename_mmsa
from msakit.models.lmf import LMF, MMSA_LMF_RULES, LMFConfig
from msakit.models.mtfn import MMSA_HEAD_RULES, MULTITASK_TUNE, MultiTask, mmsa_multitask_run
from msakit.models.registry import ModelSpec, register_model


@dataclass
class MLMFConfig(LMFConfig, model="mlmf"):
    """MLMF's hyperparameters: LMF's, with MMSA's SIMS configuration as defaults
    (config_regression.json; the repository's SIMS v2 entry is the ``simsv2`` preset), plus the
    heads and the loss weights.
    Of MMSA's ``post_dropouts`` the fourth (fusion) is never applied by its MLMF."""

    text_hidden: int = hp(256, "width of the text LSTM; z_t is half as wide", low=2)
    audio_hidden: int = hp(32, "width of the audio sub-network", low=1)
    vision_hidden: int = hp(256, "width of the vision sub-network", low=1)
    post_text_dim: int = hp(8, "width of the text head", low=1)
    post_audio_dim: int = hp(4, "width of the audio head", low=1)
    post_vision_dim: int = hp(32, "width of the vision head (MMSA post_video_dim)", low=1)
    post_text_dropout: float = hp(0.4, "dropout before the text head", low=0.0, high=1.0)
    post_audio_dropout: float = hp(0.4, "dropout before the audio head", low=0.0, high=1.0)
    post_vision_dropout: float = hp(0.4, "dropout before the vision head", low=0.0, high=1.0)
    weight_fusion: float = hp(0.2, "w_M: weight of the fusion output's L1 (MMSA M)", low=0.0)
    weight_text: float = hp(1.0, "w_T: weight of the text head's L1 (MMSA T)", low=0.0)
    weight_audio: float = hp(0.4, "w_A: weight of the audio head's L1 (MMSA A)", low=0.0)
    weight_vision: float = hp(0.8, "w_V: weight of the vision head's L1 (MMSA V)", low=0.0)


class MLMF(MultiTask, LMF):
    """Multi-task LMF (module docstring)."""

    def __init__(self, config: MLMFConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__(config, dims, text_encoder)
        self.add_heads({"text": config.text_hidden // 2, "audio": config.audio_hidden,
                        "vision": config.vision_hidden})

    def forward(self, batch: Batch) -> ModelOutput:
        return self.with_heads(super().forward(batch))


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's MLMF state dict (``torch.save(AMIO.state_dict())``) -> msakit's MLMF's."""
    return rename_mmsa(state, [*MMSA_HEAD_RULES, *MMSA_LMF_RULES], model="MLMF")


SPEC = register_model(
    ModelSpec(
        name="mlmf",
        title="MLMF",
        paper="Yu et al., ACL 2020",
        config=MLMFConfig,
        build=MLMF,
        presets={  # MMSA's config_regression.json, "mlmf" (SIMS, SIMS v2: unimodal labels)
            "sims": {"run": mmsa_multitask_run(128, 1e-3, (1e-4, 0.0, 1e-4, 5e-3)),
                     "model": {}},
            "simsv2": {  # the repository's config only
                "run": mmsa_multitask_run(64, 5e-3, (0.0, 1e-5, 1e-5, 1e-3)),
                "model": {"text_hidden": 64, "audio_hidden": 16, "vision_hidden": 64,
                          "rank": 6, "factor_lr": 5e-4, "audio_dropout": 0.3,
                          "vision_dropout": 0.3, "post_text_dim": 16, "post_audio_dim": 5,
                          "post_vision_dim": 16, "post_text_dropout": 0.4,
                          "post_audio_dropout": 0.4, "post_vision_dropout": 0.4,
                          "weight_fusion": 0.4, "weight_text": 0.0, "weight_audio": 0.4,
                          "weight_vision": 1.0}},
        },
        search_space={**MULTITASK_TUNE, "factor_lr": ("choice", [1e-4, 5e-4, 1e-3]),
                      "rank": ("choice", [3, 4, 5, 6])},
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
