"""SIMS v2 presets: the values of thuiar/MMSA's repository config where it has them.

The ``mmsa`` 2.2.1 package has no ``simsv2`` entries; the repository's
``src/MMSA/config/config_regression.json`` ("datasetParams": {"simsv2": ...}) has them for the
models below. Each is recorded here as data, already in msakit's setting names (the same
translation as each model's MOSI/MOSEI/SIMS presets: MMSA's ``hidden_dims`` = text, audio,
vision widths; ``dropouts`` = audio, vision, (text), fusion; ``post_dropouts`` = text, audio,
vision, fusion; ``M/T/A/V`` = the multi-task loss weights; ``H`` = ``label_bound``; a
``grad_clip`` the trainer applies by value = ``clip_value``). Keys MMSA's trainers never read
(MISA's and MulT's ``weight_decay``, MISA's ``sp_weight``, CENet's ``adam_epsilon`` and
``max_grad_norm``) have no setting. The rule for the other models (SIMS's values) is in
docs/readings.md, "SIMS v2 presets".
"""

from __future__ import annotations

from typing import Any

import pytest

from msakit.models.registry import model_names, model_spec, preset


def _four(value: float) -> dict[str, float]:
    return dict.fromkeys(("text", "audio", "vision", "other"), value)


def _groups(text: float, audio: float, vision: float, other: float) -> dict[str, float]:
    return {"text": text, "audio": audio, "vision": vision, "other": other}


REPOSITORY: dict[str, dict[str, Any]] = {
    "tfn": {"batch_size": 128, "lr": _four(2e-3), "model.text_hidden": 128,
            "model.audio_hidden": 32, "model.vision_hidden": 128, "model.text_out": 128,
            "model.post_fusion_dim": 32, "model.audio_dropout": 0.3,
            "model.vision_dropout": 0.3, "model.post_fusion_dropout": 0.5},
    "lmf": {"batch_size": 32, "lr": _four(2e-3), "weight_decay": _four(1e-4),
            "model.factor_lr": 5e-4, "model.text_hidden": 64, "model.audio_hidden": 32,
            "model.vision_hidden": 64, "model.rank": 4, "model.audio_dropout": 0.3,
            "model.vision_dropout": 0.3},
    "mfn": {"batch_size": 64, "lr": _four(1e-3), "weight_decay": _four(0.0),
            "model.text_hidden": 128, "model.audio_hidden": 16, "model.vision_hidden": 128,
            "model.memory": 400, "model.att1_hidden": 32, "model.att1_dropout": 0.2,
            "model.att2_hidden": 128, "model.att2_dropout": 0.5, "model.gamma1_hidden": 32,
            "model.gamma1_dropout": 0.5, "model.gamma2_hidden": 32, "model.gamma2_dropout": 0.2,
            "model.out_hidden": 64, "model.out_dropout": 0.2},
    "ef_lstm": {"batch_size": 32, "lr": _four(5e-4), "weight_decay": _four(0.0),
                "model.hidden": 128, "model.layers": 3, "model.dropout": 0.2},
    "lf_dnn": {"batch_size": 128, "lr": _four(5e-3), "weight_decay": _four(0.0),
               "model.text_hidden": 64, "model.audio_hidden": 32, "model.vision_hidden": 64,
               "model.text_out": 256, "model.post_fusion_dim": 32, "model.audio_dropout": 0.4,
               "model.vision_dropout": 0.4, "model.post_fusion_dropout": 0.4},
    "graph_mfn": {"batch_size": 32, "lr": _four(2e-3), "weight_decay": _four(0.0),
                  "model.text_hidden": 64, "model.audio_hidden": 16, "model.vision_hidden": 64,
                  "model.memory": 400, "model.inner": 32, "model.att2_hidden": 32,
                  "model.att2_dropout": 0.7, "model.gamma1_hidden": 256,
                  "model.gamma1_dropout": 0.5, "model.gamma2_hidden": 256,
                  "model.gamma2_dropout": 0.2, "model.out_hidden": 256, "model.out_dropout": 0.2},
    "mult": {"batch_size": 16, "lr": _four(5e-4), "clip_value": 1.0, "plateau_patience": 10,
             "model.dim": 30, "model.heads": 6, "model.layers": 4, "model.attn_dropout": 0.1,
             "model.attn_dropout_audio": 0.2, "model.attn_dropout_vision": 0.0,
             "model.relu_dropout": 0.1, "model.embed_dropout": 0.2, "model.res_dropout": 0.0,
             "model.output_dropout": 0.3, "model.text_dropout": 0.5, "model.kernel_text": 5,
             "model.kernel_audio": 3, "model.kernel_vision": 1},
    "misa": {"batch_size": 16, "lr": _four(1e-4), "clip_value": 0.8,
             "text_encoder": "bert-base-chinese", "model.hidden_size": 64, "model.dropout": 0.5,
             "model.reverse_grad_weight": 0.5, "model.diff_weight": 0.5, "model.sim_weight": 1.0,
             "model.recon_weight": 0.5},
    "self_mm": {"batch_size": 16, "text_encoder": "bert-base-chinese",
                "lr": _groups(5e-5, 1e-3, 1e-3, 1e-3),
                "weight_decay": _groups(1e-2, 0.0, 0.0, 1e-3),
                "model.audio_hidden": 16, "model.vision_hidden": 64, "model.audio_layers": 1,
                "model.vision_layers": 1, "model.audio_rnn_dropout": 0.0,
                "model.vision_rnn_dropout": 0.0, "model.audio_out": 16, "model.vision_out": 32,
                "model.fusion_dim": 128, "model.text_dim": 64, "model.audio_dim": 32,
                "model.vision_dim": 32, "model.fusion_dropout": 0.0, "model.text_dropout": 0.0,
                "model.audio_dropout": 0.1, "model.vision_dropout": 0.0,
                "model.label_bound": 3.0},
    "mtfn": {"batch_size": 32, "lr": _four(5e-4),
             "weight_decay": _groups(1e-5, 1e-4, 1e-4, 0.0),  # MTFN's optimizer: none on the rest
             "model.text_hidden": 64, "model.audio_hidden": 16, "model.vision_hidden": 64,
             "model.text_out": 32, "model.post_fusion_dim": 64, "model.post_text_dim": 16,
             "model.post_audio_dim": 5, "model.post_vision_dim": 64, "model.audio_dropout": 0.3,
             "model.vision_dropout": 0.3, "model.post_text_dropout": 0.5,
             "model.post_audio_dropout": 0.5, "model.post_vision_dropout": 0.5,
             "model.post_fusion_dropout": 0.5, "model.weight_fusion": 1.0,
             "model.weight_text": 0.4, "model.weight_audio": 0.4, "model.weight_vision": 0.8},
    "mlmf": {"batch_size": 64, "lr": _four(5e-3), "weight_decay": _groups(0.0, 1e-5, 1e-5, 1e-3),
             "model.factor_lr": 5e-4, "model.rank": 6, "model.text_hidden": 64,
             "model.audio_hidden": 16, "model.vision_hidden": 64, "model.post_text_dim": 16,
             "model.post_audio_dim": 5, "model.post_vision_dim": 16, "model.audio_dropout": 0.3,
             "model.vision_dropout": 0.3, "model.post_text_dropout": 0.4,
             "model.post_audio_dropout": 0.4, "model.post_vision_dropout": 0.4,
             "model.weight_fusion": 0.4, "model.weight_text": 0.0, "model.weight_audio": 0.4,
             "model.weight_vision": 1.0},
    "mlf_dnn": {"batch_size": 64, "lr": _four(5e-3),
                "weight_decay": _groups(0.0, 1e-5, 1e-5, 1e-4),
                "model.text_hidden": 128, "model.audio_hidden": 32, "model.vision_hidden": 128,
                "model.text_out": 32, "model.post_fusion_dim": 64, "model.post_text_dim": 32,
                "model.post_audio_dim": 4, "model.post_vision_dim": 64,
                "model.audio_dropout": 0.2, "model.vision_dropout": 0.2,
                "model.post_text_dropout": 0.3, "model.post_audio_dropout": 0.3,
                "model.post_vision_dropout": 0.3, "model.post_fusion_dropout": 0.3,
                "model.weight_fusion": 0.8, "model.weight_text": 1.0, "model.weight_audio": 0.6,
                "model.weight_vision": 0.8},
    "tetfn": {"batch_size": 64, "text_encoder": "bert-base-chinese",
              "lr": _groups(5e-6, 5e-4, 5e-3, 3e-4), "weight_decay": _four(1e-3),
              "model.audio_hidden": 16, "model.vision_hidden": 32, "model.kernel_text": 5,
              "model.kernel_audio": 3, "model.dim": 50, "model.heads": 5,
              "model.attn_dropout": 0.1, "model.attn_dropout_audio": 0.0,
              "model.attn_dropout_vision": 0.1, "model.relu_dropout": 0.0,
              "model.embed_dropout": 0.0, "model.res_dropout": 0.1, "model.fusion_dim": 128,
              "model.text_dim": 64, "model.audio_dim": 16, "model.vision_dim": 32,
              "model.fusion_dropout": 0.1, "model.text_dropout": 0.1,
              "model.audio_dropout": 0.0, "model.vision_dropout": 0.0, "model.label_bound": 3.0},
    "cenet": {"batch_size": 64, "lr": _four(3e-5), "weight_decay": _four(0.0),
              "text_encoder": "bert-base-chinese"},
}
"""thuiar/MMSA's repository config_regression.json, ``simsv2`` entries, in msakit's names."""


def _setting(config: dict[str, Any], path: str) -> Any:
    value: Any = config
    for key in path.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize("model", sorted(REPOSITORY))
def test_simsv2_preset_is_the_repository_entry(model):
    built = preset(model, "simsv2").to_dict()
    got = {path: _setting(built, path) for path in REPOSITORY[model]}
    assert got == REPOSITORY[model]
    sims = preset(model, "sims").to_dict()
    assert built.pop("dataset") != sims.pop("dataset")
    assert built != sims  # SIMS v2's own values, not SIMS's under another name


def test_models_without_a_repository_entry_take_sims_values():
    """The rule of docs/readings.md "SIMS v2 presets": a model whose repository config has no
    ``simsv2`` entry runs SIMS v2 with its SIMS preset (CLGSI and ConKI: their own sections)."""
    own = {m for m in model_names() if "simsv2" in model_spec(m).presets}
    assert own - {"clgsi"} == set(REPOSITORY)
    for model in sorted(set(model_names()) - own):
        if "sims" not in model_spec(model).presets:
            continue
        v2, sims = preset(model, "simsv2").to_dict(), preset(model, "sims").to_dict()
        assert v2.pop("dataset") != sims.pop("dataset")
        assert v2 == sims, model
