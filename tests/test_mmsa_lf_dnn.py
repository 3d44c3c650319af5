"""LF-DNN equals MMSA's LF_DNN: imported weights give MMSA's predictions, and one training step
(dropout 0) gives MMSA's loss and gradients, on the same synthetic samples read by each side's
loader."""

from __future__ import annotations

import pytest
import torch
from mmsa_reference import build_pair, check_predictions, check_training_step, write_mmsa_file

from msakit.core.errors import MsakitError
from msakit.models.import_weights import check_mapped
from msakit.models.lf_dnn import LFDNN, LFDNNConfig, import_mmsa
from msakit.models.registry import preset

INDICES = [0, 2, 5, 6, 9, 11, 12, 15]
TINY = {"hidden_dims": [12, 6, 10], "text_out": 7, "post_fusion_dim": 9}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_lf_dnn")
    frames = {"audio": 40, "vision": 30}
    return {like: write_mmsa_file(root / f"{like}.pkl", like, (16, 4, 4), frames)
            for like in ("mosi", "sims")}


def config_of(args) -> LFDNNConfig:
    text, audio, vision = args.hidden_dims
    a, v, _, post = args.dropouts
    return LFDNNConfig(text_hidden=text, audio_hidden=audio, vision_hidden=vision,
                       text_out=args.text_out, post_fusion_dim=args.post_fusion_dim,
                       audio_dropout=a, vision_dropout=v, post_fusion_dropout=post)


def pair(path, dataset: str, **overrides):
    """(MMSA's AMIO, msakit's LF-DNN with its weights, MMSA's batch, msakit's batch)."""
    return build_pair("lf_dnn", dataset, path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: LFDNN(config_of(args), dims),
                      overrides={**TINY, **overrides})


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_predictions_equal_mmsa(files, dataset):
    check_predictions(pair(files[dataset], dataset))


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_training_step_equals_mmsa(files, dataset):
    both = pair(files[dataset], dataset, dropouts=[0.0] * 4)
    assert check_training_step(both, import_mmsa) == len(list(both[1].parameters()))


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_preset_is_mmsas_configuration(dataset):
    from MMSA.config import get_config_regression

    args, config = get_config_regression("lf_dnn", dataset), preset("lf_dnn", dataset)
    assert config_of(args).to_dict() == {**config.model, "padding": "mmsa"}
    assert config.batch_size == args.batch_size and config.optimizer == "adam"
    assert set(config.lr.values()) == {args.learning_rate}
    assert set(config.weight_decay.values()) == {args.weight_decay}
    assert config.early_stop == args.early_stop and config.text_encoder is None


def test_import_names_bad_entries(files):
    reference, ours, _, _ = pair(files["mosi"], "mosi")
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.output_range"):
        import_mmsa({**state, "Model.output_range": torch.ones(1)})
    del state["Model.post_fusion_layer_3.weight"]
    with pytest.raises(MsakitError, match="no entry for msakit's post_fusion.fc3.weight"):
        check_mapped(import_mmsa(state), ours, "w.pth")


def test_valid_padding_ignores_padded_content(files):
    """padding="valid" reads valid frames and tokens only; MMSA's reading sees the padding."""
    _, ours, _, batch = pair(files["mosi"], "mosi")
    ours.eval()
    changes = {}
    for key in ("audio", "vision"):
        x = batch.sequence(key)
        pad = torch.arange(x.size(1))[None, :] >= batch.lengths(key)[:, None]
        changes[key] = x + 5.0 * pad[:, :, None]
    changes["text_features"] = batch.text_features + 5.0 * (batch.text[:, 1] == 0)[..., None]
    changed = batch.replace(**changes)
    with torch.no_grad():
        assert not torch.allclose(ours(batch).prediction, ours(changed).prediction)
        ours.config.padding = "valid"
        assert not ours.reads_padding()
        assert torch.allclose(ours(batch).prediction, ours(changed).prediction, atol=1e-6)
