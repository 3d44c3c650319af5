"""MLF-DNN: multi-task LF-DNN (Yu et al., ACL 2020, the CH-SIMS paper), as MMSA implements it.

LF-DNN (:mod:`msakit.models.lf_dnn`: TFN's sub-networks, late fusion of [z_a; z_v; z_t] by a
three-layer network, no output bound) plus one head per modality, trained on SIMS's (and SIMS
v2's) unimodal labels with MMSA's weighted multi-task L1 (:class:`msakit.models.mtfn.MultiTask`).
MMSA's optimizer: Adam at one learning rate with a weight decay per sub-network (text, audio,
vision) and ``weight_decay`` on the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msakit.config.model_config import hp
from msakit.models.base import Batch, Dims, ModelOutput
from msakit.models.import_weights import rename_mmsa
from msakit.models.lf_dnn import LFDNN, MMSA_LF_DNN_RULES, LFDNNConfig
from msakit.models.mtfn import MMSA_HEAD_RULES, MULTITASK_TUNE, MultiTask, mmsa_multitask_run
from msakit.models.registry import ModelSpec, register_model


@dataclass
class MLFDNNConfig(LFDNNConfig, model="mlf_dnn"):
    """MLF-DNN's hyperparameters: LF-DNN's, with MMSA's SIMS configuration as defaults
    (config_regression.json; the repository's SIMS v2 entry is the ``simsv2`` preset), plus the
    heads and the loss weights."""

    text_hidden: int = hp(64, "width of the text LSTM (MMSA hidden_dims[0])", low=1)
    audio_hidden: int = hp(32, "width of the audio sub-network (MMSA hidden_dims[1])", low=1)
    vision_hidden: int = hp(64, "width of the vision sub-network (MMSA hidden_dims[2])", low=1)
    text_out: int = hp(32, "width of z_t, the text sub-network's output", low=1)
    post_fusion_dim: int = hp(32, "width of the two post-fusion layers", low=1)
    audio_dropout: float = hp(0.3, "dropout in the audio sub-network", low=0.0, high=1.0)
    vision_dropout: float = hp(0.3, "dropout in the vision sub-network", low=0.0, high=1.0)
    post_fusion_dropout: float = hp(0.5, "dropout on the concatenated representations",
                                    low=0.0, high=1.0)
    post_text_dim: int = hp(16, "width of the text head", low=1)
    post_audio_dim: int = hp(4, "width of the audio head", low=1)
    post_vision_dim: int = hp(32, "width of the vision head (MMSA post_video_dim)", low=1)
    post_text_dropout: float = hp(0.5, "dropout before the text head", low=0.0, high=1.0)
    post_audio_dropout: float = hp(0.5, "dropout before the audio head", low=0.0, high=1.0)
    post_vision_dropout: float = hp(0.5, "dropout before the vision head", low=0.0, high=1.0)
    weight_fusion: float = hp(0.6, "w_M: weight of the fusion output's L1 (MMSA M)", low=0.0)
    weight_text: float = hp(0.2, "w_T: weight of the text head's L1 (MMSA T)", low=0.0)
    weight_audio: float = hp(0.8, "w_A: weight of the audio head's L1 (MMSA A)", low=0.0)
    weight_vision: float = hp(0.8, "w_V: weight of the vision head's L1 (MMSA V)", low=0.0)


class MLFDNN(MultiTask, LFDNN):
    """Multi-task LF-DNN (module docstring)."""

    def __init__(self, config: MLFDNNConfig, dims: Dims, text_encoder: nn.Module | None = None
                 ) -> None:
        super().__init__(config, dims, text_encoder)
        self.add_heads({"text": config.text_out, "audio": config.audio_hidden,
                        "vision": config.vision_hidden})

    def forward(self, batch: Batch) -> ModelOutput:
        return self.with_heads(super().forward(batch))


def import_mmsa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSA's MLF_DNN state dict (``torch.save(AMIO.state_dict())``) -> msakit's MLF-DNN's."""
    return rename_mmsa(state, [*MMSA_HEAD_RULES, *MMSA_LF_DNN_RULES], model="MLF_DNN")


SPEC = register_model(
    ModelSpec(
        name="mlf_dnn",
        title="MLF-DNN",
        paper="Yu et al., ACL 2020",
        config=MLFDNNConfig,
        build=MLFDNN,
        presets={  # MMSA's config_regression.json, "mlf_dnn" (SIMS, SIMS v2: unimodal labels)
            "sims": {"run": mmsa_multitask_run(32, 2e-3, (1e-4, 1e-3, 1e-4, 0.0)), "model": {}},
            "simsv2": {  # the repository's config only
                "run": mmsa_multitask_run(64, 5e-3, (0.0, 1e-5, 1e-5, 1e-4)),
                "model": {"text_hidden": 128, "audio_hidden": 32, "vision_hidden": 128,
                          "text_out": 32, "post_fusion_dim": 64, "post_text_dim": 32,
                          "post_audio_dim": 4, "post_vision_dim": 64, "audio_dropout": 0.2,
                          "vision_dropout": 0.2, "post_fusion_dropout": 0.3,
                          "post_text_dropout": 0.3, "post_audio_dropout": 0.3,
                          "post_vision_dropout": 0.3, "weight_fusion": 0.8, "weight_text": 1.0,
                          "weight_audio": 0.6, "weight_vision": 0.8}},
        },
        search_space={**MULTITASK_TUNE, "text_out": ("choice", [32, 64, 128, 256]),
                      "post_fusion_dim": ("choice", [16, 32, 64, 128])},
        text_input="features",
        imports={"mmsa": import_mmsa},
    )
)
