"""LMF equals MMSA's LMF: imported weights give MMSA's predictions, and one training step (dropout
0) gives MMSA's loss and gradients, on the same synthetic samples read by each side's loader."""

from __future__ import annotations

import pytest
import torch
from mmsa_reference import build_pair, check_predictions, check_training_step, write_mmsa_file

from msakit.core.errors import MsakitError
from msakit.models.import_weights import check_mapped
from msakit.models.lmf import LMF, LMFConfig, import_mmsa

INDICES = [1, 2, 4, 7, 8, 11, 14, 15]
TINY = {"hidden_dims": [12, 6, 10], "rank": 3}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_lmf")
    frames = {"audio": 40, "vision": 30}
    return {like: write_mmsa_file(root / f"{like}.pkl", like, (16, 4, 4), frames)
            for like in ("mosi", "sims")}


def config_of(args, train_fusion_weights: bool) -> LMFConfig:
    text, audio, vision = args.hidden_dims
    return LMFConfig(text_hidden=text, audio_hidden=audio, vision_hidden=vision, rank=args.rank,
                     audio_dropout=args.dropouts[0], vision_dropout=args.dropouts[1],
                     factor_lr=args.factor_lr, train_fusion_weights=train_fusion_weights)


def pair(path, dataset: str, train_fusion_weights: bool = False, **overrides):
    """(MMSA's AMIO, msakit's LMF with its weights, MMSA's batch, msakit's batch)."""
    return build_pair("lmf", dataset, path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: LMF(config_of(args, train_fusion_weights), dims),
                      overrides={**TINY, **overrides})


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_predictions_equal_mmsa(files, dataset):
    check_predictions(pair(files[dataset], dataset))


@pytest.mark.parametrize(("dataset", "train_fusion_weights"),
                         [("mosi", False), ("sims", False), ("mosi", True)])
def test_training_step_equals_mmsa(files, dataset, train_fusion_weights):
    both = pair(files[dataset], dataset, train_fusion_weights, dropouts=[0.0] * 4)
    compared = check_training_step(both, import_mmsa)
    assert compared == len(list(both[1].parameters())) - (0 if train_fusion_weights else 2)


def test_optimizer_groups_follow_mmsa(files):
    """MMSA's trainer: the factors at factor_lr, w and b not trained, the rest at the lr."""
    from msakit.config import RunConfig
    from msakit.training.trainer import build_optimizer

    _, ours, _, _ = pair(files["mosi"], "mosi")
    ours.config.factor_lr = 5e-4
    run = RunConfig(model_name="lmf", dataset="mosi", optimizer="adam",
                    lr=dict.fromkeys(("text", "audio", "vision", "other"), 2e-3),
                    weight_decay=dict.fromkeys(("text", "audio", "vision", "other"), 5e-3))
    optimizer = build_optimizer(ours, run)
    assert type(optimizer) is torch.optim.Adam  # MMSA's: weight decay added to the gradient
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert all(g["weight_decay"] == 5e-3 for g in groups.values())
    assert groups["factors"]["lr"] == 5e-4
    assert {id(p) for p in groups["factors"]["params"]} == {
        id(ours.audio_factor), id(ours.vision_factor), id(ours.text_factor)}
    trained = {id(p) for g in groups.values() for p in g["params"]}
    assert id(ours.fusion_weights) not in trained and id(ours.fusion_bias) not in trained
    assert len(trained) == len(list(ours.parameters())) - 2
    assert all(g["lr"] == 2e-3 for name, g in groups.items() if name != "factors")


def test_import_names_bad_entries(files):
    reference, ours, _, _ = pair(files["mosi"], "mosi")
    state = reference.state_dict()
    state["Model.video_factor"] = state["Model.video_factor"][:2]
    with pytest.raises(MsakitError, match="shapes differ vision_factor is 2x11x1"):
        check_mapped(import_mmsa(state), ours, "w.pth")
    with pytest.raises(MsakitError, match="unexpected keys Model.post_fusion_layer_1.weight"):
        import_mmsa({**state, "Model.post_fusion_layer_1.weight": torch.zeros(1)})
