"""TFN equals MMSA's TFN: imported weights give MMSA's predictions, and one training step (dropout
0) gives MMSA's loss and gradients, on the same synthetic samples read by each side's loader."""

from __future__ import annotations

import pytest
import torch
from mmsa_reference import (
    build_pair,
    check_predictions,
    check_training_step,
    mmsa_args,
    write_mmsa_file,
)

from msakit.core.errors import MsakitError
from msakit.models.import_weights import check_mapped
from msakit.models.tfn import TFN, TFNConfig, import_mmsa

INDICES = [0, 3, 5, 6, 9, 10, 12, 13]
TINY = {"hidden_dims": [16, 6, 10], "text_out": 7, "post_fusion_dim": 12}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_tfn")
    frames = {"audio": 40, "vision": 30}
    return {like: write_mmsa_file(root / f"{like}.pkl", like, (16, 4, 4), frames)
            for like in ("mosi", "sims")}


def config_of(args) -> TFNConfig:
    text, audio, vision = args.hidden_dims
    a, v, _, post = args.dropouts
    return TFNConfig(text_hidden=text, audio_hidden=audio, vision_hidden=vision,
                     text_out=args.text_out, post_fusion_dim=args.post_fusion_dim,
                     audio_dropout=a, vision_dropout=v, post_fusion_dropout=post)


def pair(path, dataset: str, **overrides):
    """(MMSA's AMIO, msakit's TFN with its weights, MMSA's batch, msakit's batch)."""
    return build_pair("tfn", dataset, path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: TFN(config_of(args), dims),
                      overrides={**TINY, **overrides})


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_predictions_equal_mmsa(files, dataset):
    check_predictions(pair(files[dataset], dataset))


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_training_step_equals_mmsa(files, dataset):
    both = pair(files[dataset], dataset, dropouts=[0.0] * 4)
    assert check_training_step(both, import_mmsa) == len(list(both[1].parameters()))


def test_valid_padding_ignores_padded_content(files):
    """padding="valid" reads valid frames and tokens only; MMSA's reading sees the padding."""
    _, ours, _, batch = pair(files["mosi"], "mosi")
    ours.eval()
    changed = {}
    for key in ("audio", "vision"):
        frames = torch.arange(batch.sequence(key).size(1))
        pad = frames[None, :] >= batch.lengths(key)[:, None]
        changed[key] = batch.sequence(key) + 5.0 * pad[:, :, None]
    pad_tokens = batch.text[:, 1] == 0
    changed["text_features"] = batch.text_features + 5.0 * pad_tokens[:, :, None]
    changed = batch.replace(**changed)
    with torch.no_grad():
        assert not torch.allclose(ours(batch).prediction, ours(changed).prediction)
        ours.config.padding = "valid"
        assert not ours.reads_padding()
        assert torch.allclose(ours(batch).prediction, ours(changed).prediction, atol=1e-6)


def test_import_names_bad_entries(files):
    from MMSA.models import AMIO

    reference, ours, _, _ = pair(files["mosi"], "mosi")
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.extra"):
        import_mmsa({**state, "Model.extra": torch.zeros(1)})
    del state["Model.post_fusion_layer_2.bias"]
    with pytest.raises(MsakitError, match="no entry for msakit's post_fusion_2.bias"):
        check_mapped(import_mmsa(state), ours, "w.pth")
    wider = AMIO(mmsa_args("tfn", "mosi", files["mosi"], **{**TINY, "text_out": 9},
                           feature_dims=[768, 5, 20]))
    with pytest.raises(MsakitError, match="shapes differ text_net.fc.weight is 9x16"):
        check_mapped(import_mmsa(wider.state_dict()), ours, "w.pth")
    scaled = {**reference.state_dict(), "Model.output_range": torch.tensor([2.0])}
    with pytest.raises(MsakitError, match="output_range"):
        import_mmsa(scaled)
