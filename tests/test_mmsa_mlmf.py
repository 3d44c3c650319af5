"""MLMF equals MMSA's MLMF: imported weights give MMSA's fusion and unimodal predictions, and one
training step (dropout 0) gives the loss of MMSA's multi-task trainer (weighted L1 of the four
outputs on SIMS's unimodal labels) and its gradients, on the same synthetic samples read by each
side's loader; the optimizer's groups are MMSA's."""

from __future__ import annotations

import pytest
import torch
from mmsa_reference import (
    build_pair,
    check_multitask_step,
    check_predictions,
    cli_import_predictions,
    mmsa_args,
    write_mmsa_file,
)

from msakit.core.errors import MsakitError
from msakit.models.mlmf import MLMF, MLMFConfig, import_mmsa
from msakit.models.registry import preset

INDICES = [1, 2, 4, 7, 8, 11, 14, 15]
TINY = {"hidden_dims": [12, 6, 10], "rank": 3, "post_text_dim": 5, "post_audio_dim": 4,
        "post_video_dim": 6, "M": 0.2, "T": 1.0, "A": 0.4, "V": 0.8}
HEADS = {"T": "text", "A": "audio", "V": "vision"}


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_mlmf")
    return write_mmsa_file(root / "sims.pkl", "sims", (16, 4, 4), {"audio": 40, "vision": 30})


def config_of(args) -> MLMFConfig:
    text, audio, vision = args.hidden_dims
    a, v, _ = args.dropouts
    post_t, post_a, post_v, _ = args.post_dropouts
    return MLMFConfig(
        text_hidden=text, audio_hidden=audio, vision_hidden=vision, rank=args.rank,
        audio_dropout=a, vision_dropout=v, factor_lr=args.factor_lr,
        post_text_dim=args.post_text_dim, post_audio_dim=args.post_audio_dim,
        post_vision_dim=args.post_video_dim, post_text_dropout=post_t,
        post_audio_dropout=post_a, post_vision_dropout=post_v,
        weight_fusion=args.M, weight_text=args.T, weight_audio=args.A, weight_vision=args.V)


def pair(path, **overrides):
    """(MMSA's AMIO, msakit's MLMF with its weights, MMSA's batch, msakit's batch)."""
    return build_pair("mlmf", "sims", path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: MLMF(config_of(args), dims),
                      overrides={**TINY, **overrides})


def test_predictions_equal_mmsa(sims):
    reference, ours, theirs, batch = both = pair(sims)
    check_predictions(both)
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])
        got = ours(batch).terms
    for task, m in HEADS.items():
        assert torch.allclose(got[m], expected[task].view(-1), atol=1e-4), task


def test_training_step_equals_mmsa(sims):
    both = pair(sims, dropouts=[0.0] * 3, post_dropouts=[0.0] * 4)
    weights = {k: TINY[k] for k in "MTAV"}
    compared = check_multitask_step(both, import_mmsa, sims, weights)
    assert compared == len(list(both[1].parameters())) - 2  # w and b: lr 0 in MMSA


def test_optimizer_groups_follow_mmsa(sims):
    """MMSA's MLMF trainer: per-sub-network weight decays, the factors at factor_lr, w and b
    untrained, the heads in the rest at weight_decay."""
    from msakit.training.trainer import build_optimizer

    _, ours, _, _ = pair(sims)
    run = preset("mlmf", "sims")
    groups = {g["name"]: g for g in build_optimizer(ours, run).param_groups}
    assert {n: g["weight_decay"] for n, g in groups.items()} == {
        "text": 1e-4, "audio": 0.0, "vision": 1e-4, "other": 5e-3, "factors": 5e-3}
    assert groups["factors"]["lr"] == ours.config.factor_lr
    heads = {id(p) for p in ours.heads.parameters()}
    assert heads <= {id(p) for p in groups["other"]["params"]}
    trained = {id(p) for g in groups.values() for p in g["params"]}
    assert id(ours.fusion_weights) not in trained and id(ours.fusion_bias) not in trained


def test_preset_is_mmsas_configuration():
    from MMSA.config import get_config_regression

    args, config = get_config_regression("mlmf", "sims"), preset("mlmf", "sims")
    assert config_of(args).to_dict() == config.model.to_dict()
    assert config.batch_size == args.batch_size and set(config.lr.values()) == {
        args.learning_rate}
    assert config.weight_decay == {"text": args.text_weight_decay,
                                   "audio": args.audio_weight_decay,
                                   "vision": args.video_weight_decay,
                                   "other": args.weight_decay}


def test_import_names_bad_entries(sims):
    reference, _, _, _ = pair(sims)
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.output_range"):
        import_mmsa({**state, "Model.output_range": torch.ones(1)})



def test_import_weights_cli_gives_mmsas_predictions(sims, tmp_path):
    """``msakit import-weights --from mmsa`` then ``msakit predict``: MMSA's predictions."""
    config = config_of(mmsa_args("mlmf", "sims", sims, **TINY)).to_dict()
    sets = [f"{k}={v}" for k, v in config.items() if k != "padding"]
    got, expected = cli_import_predictions("mlmf", "sims", sims, tmp_path,
                                           overrides=TINY, sets=sets)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()
