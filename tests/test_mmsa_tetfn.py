"""TETFN equals the TETFN of thuiar/MMSA's repository: eval predictions (fusion and unimodal
outputs), four training steps over two epochs (loss and gradients) and the unimodal labels its
trainer generates.

The golden fixture ``tests/fixtures/mmsa_repo/tetfn.pt`` was written by
``tests/fixtures/mmsa_repo/make_fixtures.py`` running the repository's own ``AMIO`` (with its
avg-pool ``AlignSubNet``), ``TETFN`` and trainer (see its docstring): a random-weight model on a
tiny BERT, its saved state dict, MMSA-format batches (audio of 12 frames pooled to the 8 text
tokens, vision of 8), its eval outputs, and the trainer's steps in float64 with dropout 0. This
file reads only the fixture; the weights reach msakit through ``import-weights --from mmsa``.
"""

from __future__ import annotations

import pytest
import torch
from mmsa_repo_fixture import batch_of, check_step, cli_predictions, load
from mmsa_repo_fixture import build as build_model

from msakit.core.errors import MsakitError
from msakit.models.import_weights import check_mapped
from msakit.models.registry import preset
from msakit.models.self_mm import TASKS, UnimodalLabels
from msakit.models.tetfn import TETFN, mmsa_repo_avg_pool, tetfn_from_mmsa
from msakit.training.trainer import set_dropout

FIXTURE = load("tetfn")
KEYS = {"fusion": "M", "text": "T", "audio": "A", "vision": "V"}


def build() -> TETFN:
    """msakit's TETFN of the fixture's widths holding the fixture's weights (the importer)."""
    return build_model("tetfn", FIXTURE, label_bound=FIXTURE["label_bound"])


def test_eval_outputs_equal_mmsa_repository():
    model = build().eval()
    with torch.no_grad():
        out = model(batch_of(FIXTURE["inputs"]["test"]))
    expected = FIXTURE["eval"]
    torch.testing.assert_close(out.prediction, expected["M"], atol=1e-4, rtol=0)
    assert expected["M"].std() > 0.1  # the fixture's predictions differ between samples
    for task in ("text", "audio", "vision"):
        torch.testing.assert_close(out.representations[f"prediction_{task}"].view(-1),
                                   expected[KEYS[task]], atol=1e-4, rtol=0)


def labels_from(state: dict[str, torch.Tensor], model: TETFN) -> UnimodalLabels:
    labels = UnimodalLabels(state["labels.fusion"].float(),
                            {t: model.heads[t].fc1.out_features for t in TASKS},
                            bound=model.config.label_bound, exclude_zero=True)
    labels.load({k: v.float() for k, v in state.items()})
    return labels


@pytest.mark.parametrize("step", range(4))
def test_training_steps_and_labels_equal_mmsa_repository(step):
    """Each step from the reference trainer's label state: the loss (fusion L1 plus the
    tanh-weighted unimodal terms) to 1e-5 relative, every gradient to 1e-5 of its tensor's
    largest, and the label state the step leaves (epoch 2 moves the labels)."""
    expected = FIXTURE["steps"][step]
    model = build().train()
    set_dropout(model, 0.0)  # the reference step ran with every dropout 0
    model.unimodal_labels = labels_from(expected["before"], model)
    model.on_epoch_start(expected["epoch"] - 1)
    batch = batch_of(FIXTURE["inputs"]["train"], expected["indices"])
    loss = model.compute_loss(model(batch), batch).loss
    loss.backward()
    check_step(model, loss, expected, tetfn_from_mmsa)
    after = model.unimodal_labels.state()
    for key, value in expected["after"].items():
        torch.testing.assert_close(after[key].double(), value, rtol=0, atol=5e-5)
    if expected["epoch"] == 2:  # the unimodal labels moved away from the fusion labels
        moved = expected["after"]["labels.text"] - expected["after"]["labels.fusion"]
        assert float(moved.abs().max()) > 1e-2


def test_repository_pooling_takes_windows():
    x = torch.arange(5.0).view(1, 5, 1)
    pooled = mmsa_repo_avg_pool(x, 2)  # padded to 0 1 2 | 3 4 4
    torch.testing.assert_close(pooled.view(-1), torch.tensor([1.0, 11 / 3]))
    assert mmsa_repo_avg_pool(x, 5) is x


def test_import_refuses_foreign_keys():
    state = dict(FIXTURE["state"])
    state["Model.trans_a_with_v.middle_mha.layer_norm.weight"] = torch.ones(8)
    with pytest.raises(MsakitError, match="middle_mha"):
        tetfn_from_mmsa(state)
    del state["Model.trans_a_with_v.middle_mha.layer_norm.weight"]
    del state["Model.post_text_layer_2.bias"]
    with pytest.raises(MsakitError, match="heads.text.fc2.bias"):
        check_mapped(tetfn_from_mmsa(state), build(), "tetfn.pt")


def test_presets_are_the_repository_config():
    mosi, sims = preset("tetfn", "mosi"), preset("tetfn", "sims")
    assert mosi.batch_size == 64 and mosi.accumulate == 4 and mosi.optimizer == "adam"
    assert mosi.lr == {"text": 3e-5, "audio": 5e-4, "vision": 3e-4, "other": 3e-4}
    assert mosi.weight_decay == {"text": 1e-3, "audio": 1e-2, "vision": 0.0, "other": 1e-2}
    assert sims.model["kernel_text"] == 3 and sims.model["kernel_audio"] == 5
    assert sims.text_encoder == "bert-base-chinese" and sims.model["label_bound"] == 3.0
    assert preset("tetfn", "simsv2").lr["text"] == 5e-6


def test_import_weights_then_predict_gives_the_repository_predictions(tmp_path):
    got = cli_predictions("tetfn", FIXTURE, tmp_path)
    torch.testing.assert_close(got, FIXTURE["eval"]["M"], atol=1e-4, rtol=1e-5)
