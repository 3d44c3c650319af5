"""EF-LSTM equals MMSA's EF_LSTM: imported weights give MMSA's predictions, and one training step
(dropout 0) gives MMSA's loss and gradients, on the same synthetic samples read by each side's
loader: a word-aligned MOSI file (MMSA's aligned_50.pkl layout, no lengths) and an unaligned SIMS
file, which both sides bring to the text's length (MMSA's AlignSubNet avg_pool)."""

from __future__ import annotations

import pytest
import torch
from mmsa_reference import (
    build_pair,
    check_predictions,
    check_training_step,
    write_aligned_mmsa_file,
    write_mmsa_file,
)

from msakit.core.errors import MsakitError
from msakit.data.mmsa import load_feature_file
from msakit.models.align import mmsa_avg_pool
from msakit.models.ef_lstm import EFLSTM, EFLSTMConfig, import_mmsa
from msakit.models.import_weights import check_mapped
from msakit.models.registry import preset

INDICES = [1, 3, 4, 6, 8, 10, 13, 14]
TINY = {"hidden_dims": 8, "num_layers": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_ef_lstm")
    return {"mosi": write_aligned_mmsa_file(root / "mosi.pkl", "mosi", (16, 4, 4)),
            "sims": write_mmsa_file(root / "sims.pkl", "sims", (16, 4, 4),
                                    {"audio": 40, "vision": 30})}


def config_of(args) -> EFLSTMConfig:
    return EFLSTMConfig(hidden=args.hidden_dims, layers=args.num_layers, dropout=args.dropout)


def pair(path, dataset: str, **overrides):
    """(MMSA's AMIO, msakit's EF-LSTM with its weights, MMSA's batch, msakit's batch)."""
    def build(args, dims):
        dims.text_len = args.seq_lens  # AMIO's alignment length, the text's padded length
        return EFLSTM(config_of(args), dims)

    return build_pair("ef_lstm", dataset, path, indices=INDICES, importer=import_mmsa,
                      build=build, overrides={**TINY, **overrides})


def test_the_aligned_file_is_read_as_aligned(files):
    train = load_feature_file(files["mosi"], text_features=True).splits["train"]
    assert train.audio.shape[1] == train.vision.shape[1] == train.text_bert.shape[2]
    assert (train.audio_lengths == train.text_lengths).all()


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_predictions_equal_mmsa(files, dataset):
    check_predictions(pair(files[dataset], dataset))


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_training_step_equals_mmsa(files, dataset):
    both = pair(files[dataset], dataset, dropout=0.0)
    assert check_training_step(both, import_mmsa) == len(list(both[1].parameters()))


def test_alignment_is_mmsas_avg_pool():
    """Longer, shorter, a multiple and the same length as the text: MMSA's AlignSubNet."""
    from easydict import EasyDict
    from MMSA.models.subNets import AlignSubNet

    x = torch.randn(2, 11, 3)
    for length in (3, 4, 11, 20):
        net = AlignSubNet(EasyDict(feature_dims=[3, 3, 3], seq_lens=[length, 11, 11]),
                          "avg_pool")
        assert torch.equal(mmsa_avg_pool(x, length), net(torch.zeros(2, length, 3), x, x)[1])


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_preset_is_mmsas_configuration(dataset):
    from MMSA.config import get_config_regression

    args, config = get_config_regression("ef_lstm", dataset), preset("ef_lstm", dataset)
    assert config_of(args).to_dict() == config.model.to_dict()
    assert config.batch_size == args.batch_size and config.optimizer == "adam"
    assert set(config.lr.values()) == {args.learning_rate}
    assert set(config.weight_decay.values()) == {args.weight_decay}


def test_import_names_bad_entries(files):
    reference, ours, _, _ = pair(files["mosi"], "mosi")
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.extra"):
        import_mmsa({**state, "Model.extra": torch.zeros(1)})
    state["Model.norm.weight"] = state["Model.norm.weight"][:10]
    with pytest.raises(MsakitError, match="shapes differ norm.weight is 10"):
        check_mapped(import_mmsa(state), ours, "w.pth")


def test_another_text_length_is_one_error(files):
    _, ours, _, batch = pair(files["mosi"], "mosi")
    shorter = batch.replace(text_features=batch.text_features[:, :40],
                            audio=batch.audio[:, :40], vision=batch.vision[:, :40])
    with pytest.raises(MsakitError, match="built for 50 text positions.*the data has 40"):
        ours.eval()(shorter)
