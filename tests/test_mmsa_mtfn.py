"""MTFN equals MMSA's MTFN: imported weights give MMSA's fusion and unimodal predictions, and one
training step (dropout 0) gives the loss of MMSA's multi-task trainer (weighted L1 of the four
outputs on SIMS's unimodal labels) and its gradients, on the same synthetic samples read by each
side's loader."""

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
from msakit.data.mmsa import load_feature_file
from msakit.models.mtfn import MTFN, MTFNConfig, import_mmsa
from msakit.models.registry import preset

INDICES = [0, 3, 5, 6, 9, 10, 12, 13]
TINY = {"hidden_dims": [12, 6, 10], "text_out": 7, "post_fusion_dim": 9, "post_text_dim": 5,
        "post_audio_dim": 4, "post_video_dim": 6, "M": 0.6, "T": 0.4, "A": 0.3, "V": 1.0}
HEADS = {"T": "text", "A": "audio", "V": "vision"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_mtfn")
    frames = {"audio": 40, "vision": 30}
    return {like: write_mmsa_file(root / f"{like}.pkl", like, (16, 4, 4), frames)
            for like in ("sims", "mosi")}


def config_of(args) -> MTFNConfig:
    text, audio, vision = args.hidden_dims
    a, v, _ = args.dropouts
    post_t, post_a, post_v, post_f = args.post_dropouts
    return MTFNConfig(
        text_hidden=text, audio_hidden=audio, vision_hidden=vision, text_out=args.text_out,
        post_fusion_dim=args.post_fusion_dim, audio_dropout=a, vision_dropout=v,
        post_fusion_dropout=post_f, post_text_dim=args.post_text_dim,
        post_audio_dim=args.post_audio_dim, post_vision_dim=args.post_video_dim,
        post_text_dropout=post_t, post_audio_dropout=post_a, post_vision_dropout=post_v,
        weight_fusion=args.M, weight_text=args.T, weight_audio=args.A, weight_vision=args.V)


def pair(path, **overrides):
    """(MMSA's AMIO, msakit's MTFN with its weights, MMSA's batch, msakit's batch)."""
    return build_pair("mtfn", "sims", path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: MTFN(config_of(args), dims),
                      overrides={**TINY, **overrides})


def test_predictions_equal_mmsa(files):
    reference, ours, theirs, batch = both = pair(files["sims"])
    check_predictions(both)
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])
        got = ours(batch).terms
    for task, m in HEADS.items():
        assert torch.allclose(got[m], expected[task].view(-1), atol=1e-4), task


def test_training_step_equals_mmsa(files):
    both = pair(files["sims"], dropouts=[0.0] * 3, post_dropouts=[0.0] * 4)
    weights = {k: TINY[k] for k in "MTAV"}
    compared = check_multitask_step(both, import_mmsa, files["sims"], weights)
    assert compared == len([p for p in both[1].parameters() if p.requires_grad])


def test_evaluation_loss_is_the_fusion_l1(files):
    _, ours, _, batch = pair(files["sims"])
    ours.eval()
    with torch.no_grad():
        output = ours(batch)
        loss = ours.compute_loss(output, batch)
    assert torch.allclose(loss.loss, (output.prediction - batch.labels).abs().mean())


def test_a_file_without_unimodal_labels_is_refused_by_name(files):
    _, ours, _, _ = pair(files["sims"])
    train = load_feature_file(files["mosi"], text_features=True).splits["train"]
    with pytest.raises(MsakitError, match="no regression_labels_T"):
        ours.on_train_start(train)


def test_preset_is_mmsas_configuration():
    from MMSA.config import get_config_regression

    args, config = get_config_regression("mtfn", "sims"), preset("mtfn", "sims")
    assert config_of(args).to_dict() == config.model.to_dict()
    assert preset("mtfn", "simsv2").model != config.model  # the repository's own simsv2 entry
    assert config.batch_size == args.batch_size and set(config.lr.values()) == {
        args.learning_rate}
    assert config.weight_decay == {"text": args.text_weight_decay,
                                   "audio": args.audio_weight_decay,
                                   "vision": args.video_weight_decay, "other": 0.0}
    with pytest.raises(MsakitError, match="no preset for data set 'mosi'"):
        preset("mtfn", "mosi")


def test_import_names_bad_entries(files):
    reference, _, _, _ = pair(files["sims"])
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.extra"):
        import_mmsa({**state, "Model.extra": torch.zeros(1)})
    with pytest.raises(MsakitError, match="output_range"):
        import_mmsa({**state, "Model.output_range": torch.tensor([2.0])})



def test_import_weights_cli_gives_mmsas_predictions(files, tmp_path):
    """``msakit import-weights --from mmsa`` then ``msakit predict``: MMSA's predictions."""
    config = config_of(mmsa_args("mtfn", "sims", files["sims"], **TINY)).to_dict()
    sets = [f"{k}={v}" for k, v in config.items() if k != "padding"]
    got, expected = cli_import_predictions("mtfn", "sims", files["sims"], tmp_path,
                                           overrides=TINY, sets=sets)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()
