"""CENET equals the CENET of thuiar/MMSA's repository: eval predictions and one training step's
loss and gradients.

The golden fixture ``tests/fixtures/mmsa_repo/cenet.pt`` was written by
``tests/fixtures/mmsa_repo/make_fixtures.py`` running the repository's own ``AMIO`` (its
``CENET``, a ``pytorch_transformers`` BERT with the cross-modal enhancement before layer 1, built
on a tiny random BERT configuration) and its trainer's L1 loss, in float64 with dropout 0. This
file reads only the fixture; the weights reach msakit through ``import-weights --from mmsa``.
"""

from __future__ import annotations

import pytest
import torch
from mmsa_repo_fixture import batch_of, build, check_step, cli_predictions, load

from msakit.config import RunConfig
from msakit.core.errors import MsakitError
from msakit.models.cenet import cenet_from_mmsa
from msakit.models.registry import preset
from msakit.training.trainer import build_optimizer, set_dropout

FIXTURE = load("cenet")


def test_eval_predictions_equal_mmsa_repository():
    model = build("cenet", FIXTURE).eval()
    with torch.no_grad():
        out = model(batch_of(FIXTURE["inputs"]["test"]))
    torch.testing.assert_close(out.prediction, FIXTURE["eval"]["M"], atol=1e-4, rtol=0)
    assert FIXTURE["eval"]["M"].std() > 0.1


def test_training_step_equals_mmsa_repository():
    """The L1 loss and every gradient; the embeddings and the pooler get none (MMSA computes
    the embeddings without gradients and never reads the pooler)."""
    model = build("cenet", FIXTURE).train()
    set_dropout(model, 0.0)
    batch = batch_of(FIXTURE["inputs"]["train"])
    loss = model.compute_loss(model(batch), batch).loss
    loss.backward()
    check_step(model, loss, FIXTURE["steps"][0], cenet_from_mmsa)
    frozen = [n for n, p in model.named_parameters() if p.grad is None]
    assert frozen and all(".embeddings." in n or ".pooler." in n for n in frozen)


def test_the_enhancement_reads_audio_and_vision():
    model = build("cenet", FIXTURE).eval()
    batch = batch_of(FIXTURE["inputs"]["test"])
    with torch.no_grad():
        base = model(batch).prediction
        for key in ("audio", "vision"):
            changed = model(batch.replace(**{key: batch.sequence(key) + 1.0})).prediction
            assert float((changed - base).abs().max()) > 1e-3, key


def test_optimizer_groups_are_the_repository_trainers():
    """MMSA: decay on everything but parameters named bias / LayerNorm.weight outside CE."""
    model = build("cenet", FIXTURE)
    config = preset("cenet", "mosi")
    optimizer = build_optimizer(model, RunConfig.from_dict(config.to_dict()))
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert decay[id(names["head_dense.bias"])] == 0.0
    assert decay[id(names["head_dense.weight"])] == 1e-4
    assert decay[id(names["enhancement.cat_connect.bias"])] == 1e-4
    assert decay[id(names["text_encoder.encoder.layer.0.output.LayerNorm.weight"])] == 0.0
    assert {g["lr"] for g in optimizer.param_groups} == {1e-5}
    assert config.grad_clip == 2.0 and config.optimizer == "adam"


def test_import_refuses_foreign_keys():
    state = dict(FIXTURE["state"])
    state["Model.bert.encoder.CE2.cat_connect.weight"] = torch.ones(2)
    with pytest.raises(MsakitError, match="CE2"):
        cenet_from_mmsa(state)


def test_import_weights_then_predict_gives_the_repository_predictions(tmp_path):
    got = cli_predictions("cenet", FIXTURE, tmp_path)
    torch.testing.assert_close(got, FIXTURE["eval"]["M"], atol=1e-4, rtol=1e-5)
