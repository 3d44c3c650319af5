"""MFN equals MMSA's MFN: imported weights give MMSA's predictions, and one training step (dropout
0) gives MMSA's loss and gradients, on the same synthetic samples read by each side's loader: a
word-aligned MOSI file (MMSA's aligned_50.pkl layout) and an unaligned SIMS file, with MMSA's
inputs (audio and vision averaged over time, need_normalized, before its alignment)."""

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
from msakit.models.import_weights import check_mapped
from msakit.models.mfn import MFN, MFNConfig, import_mmsa
from msakit.models.registry import preset

INDICES = [0, 1, 4, 7, 9, 10, 12, 15]
BLOCKS = ("NN1Config", "NN2Config", "gamma1Config", "gamma2Config", "outConfig")
NAMES = ("att1", "att2", "gamma1", "gamma2", "out")
TINY = {"hidden_dims": [6, 4, 5], "memsize": 7,
        **{b: {"shapes": 5 + i, "drop": 0.3} for i, b in enumerate(BLOCKS)}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_mfn")
    return {"mosi": write_aligned_mmsa_file(root / "mosi.pkl", "mosi", (16, 4, 4)),
            "sims": write_mmsa_file(root / "sims.pkl", "sims", (16, 4, 4),
                                    {"audio": 40, "vision": 30})}


def config_of(args) -> MFNConfig:
    text, audio, vision = args.hidden_dims
    blocks = {}
    for name, block in zip(NAMES, BLOCKS, strict=True):
        blocks[f"{name}_hidden"] = args[block]["shapes"]
        blocks[f"{name}_dropout"] = args[block]["drop"]
    return MFNConfig(text_hidden=text, audio_hidden=audio, vision_hidden=vision,
                     memory=args.memsize, **blocks)


def pair(path, dataset: str, dropout: float | None = None):
    """(MMSA's AMIO, msakit's MFN with its weights, MMSA's batch, msakit's batch)."""
    overrides = dict(TINY)
    if dropout is not None:
        overrides.update({b: {**TINY[b], "drop": dropout} for b in BLOCKS})
    return build_pair("mfn", dataset, path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: MFN(config_of(args), dims), overrides=overrides)


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_predictions_equal_mmsa(files, dataset):
    check_predictions(pair(files[dataset], dataset))


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_training_step_equals_mmsa(files, dataset):
    both = pair(files[dataset], dataset, dropout=0.0)
    assert check_training_step(both, import_mmsa) == len(list(both[1].parameters()))


def test_aligned_reading_uses_the_sequences(files):
    """MMSA's reading sees the time means only (reversing the frames changes nothing);
    audio_vision="aligned" reads each step's own frame (reversing them changes the output)."""
    _, ours, _, batch = pair(files["mosi"], "mosi")
    reversed_frames = batch.replace(audio=batch.audio.flip(1), vision=batch.vision.flip(1))
    ours.eval()
    with torch.no_grad():
        mean = ours(batch).prediction
        assert torch.allclose(ours(reversed_frames).prediction, mean, atol=1e-6)
        ours.config.audio_vision = "aligned"
        aligned = ours(batch).prediction
        assert not torch.allclose(ours(reversed_frames).prediction, aligned)
    assert not torch.allclose(mean, aligned)


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_preset_is_mmsas_configuration(dataset):
    from MMSA.config import get_config_regression

    args, config = get_config_regression("mfn", dataset), preset("mfn", dataset)
    assert args.windowsize == 2
    assert config_of(args).to_dict() == config.model.to_dict()
    assert config.batch_size == args.batch_size and config.optimizer == "adam"
    assert set(config.lr.values()) == {args.learning_rate}
    assert set(config.weight_decay.values()) == {args.weight_decay}


def test_import_names_bad_entries(files):
    reference, ours, _, _ = pair(files["mosi"], "mosi")
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.extra"):
        import_mmsa({**state, "Model.extra": torch.zeros(1)})
    del state["Model.lstm_v.bias_hh"]
    with pytest.raises(MsakitError, match="no entry for msakit's lstm_vision.bias_hh"):
        check_mapped(import_mmsa(state), ours, "w.pth")
