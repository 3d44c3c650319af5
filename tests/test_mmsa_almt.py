"""ALMT equals the ALMT of thuiar/MMSA's repository: eval predictions and one training step's
loss and gradients.

The golden fixture ``tests/fixtures/mmsa_repo/almt.pt`` was written by
``tests/fixtures/mmsa_repo/make_fixtures.py`` running the repository's own ``AMIO`` (its
``ALMT``, on a tiny random BERT; width 128, which its regression head ``Linear(128, 1)``
requires; an audio positional table longer than the file's frames) and its trainer's MSE loss,
in float64. This file reads only the fixture; the weights reach msakit through
``import-weights --from mmsa``.
"""

from __future__ import annotations

import pytest
import torch
from mmsa_repo_fixture import batch_of, build, check_step, cli_predictions, dims_of, load

from msakit.core.errors import MsakitError
from msakit.models.almt import ALMT, ALMTConfig, almt_from_mmsa
from msakit.models.registry import preset
from msakit.training.trainer import build_optimizer

FIXTURE = load("almt")


def test_eval_predictions_equal_mmsa_repository():
    model = build("almt", FIXTURE).eval()
    with torch.no_grad():
        out = model(batch_of(FIXTURE["inputs"]["test"]))
    torch.testing.assert_close(out.prediction, FIXTURE["eval"]["M"], atol=1e-4, rtol=0)
    assert FIXTURE["eval"]["M"].std() > 0.1


def step(dtype: torch.dtype):
    model = build("almt", FIXTURE).train().to(dtype)
    batch = batch_of(FIXTURE["inputs"]["train"])
    batch = batch.replace(audio=batch.audio.to(dtype), vision=batch.vision.to(dtype),
                          labels=batch.labels.to(dtype))
    loss = model.compute_loss(model(batch), batch).loss
    loss.backward()
    return model, loss


def test_training_step_equals_mmsa_repository():
    """The MSE loss and every parameter's gradient (ALMT has no dropout), run in float64 as the
    reference was: each gradient within 1e-5 of its tensor's largest entry (measured: 6e-8,
    the float32 storage of the reference's gradients)."""
    model, loss = step(torch.float64)
    check_step(model, loss, FIXTURE["steps"][0], almt_from_mmsa)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert all(n.startswith("text_encoder.pooler.") for n in unused)  # BERT's, never read


def test_float32_training_step_is_the_reference_up_to_rounding():
    """In float32 (as msakit trains) the loss agrees to 1e-5 relative and all gradients
    together to 1e-5 relative (measured 1e-6 and 3e-6; single tensors with near-cancelling
    sums, such as the key LayerNorms' biases whose exact gradient is 0, carry float32 noise)."""
    model, loss = step(torch.float32)
    expected = FIXTURE["steps"][0]
    torch.testing.assert_close(loss.detach().double(), expected["loss"], rtol=1e-5, atol=0)
    theirs = almt_from_mmsa(expected["grads"])
    ours = dict(model.named_parameters())
    error = sum(float(((ours[n].grad - g) ** 2).sum()) for n, g in theirs.items())
    norm = sum(float((g ** 2).sum()) for g in theirs.values())
    assert (error / norm) ** 0.5 < 1e-5


def test_every_modality_and_padded_step_is_read():
    """No masks, as in MMSA: a padded audio frame changes the prediction."""
    model = build("almt", FIXTURE).eval()
    batch = batch_of(FIXTURE["inputs"]["test"])
    short = int(batch.audio_lengths.argmin())
    assert batch.audio_lengths[short] < batch.audio.size(1)
    audio = batch.audio.clone()
    audio[short, -1] = 1.0
    with torch.no_grad():
        base = model(batch).prediction
        changed = model(batch.replace(audio=audio)).prediction
    assert abs(float(changed[short] - base[short])) > 1e-4


def test_a_file_longer_than_the_positional_table_is_one_error():
    settings = {**FIXTURE["msakit"], "audio_frames": 4}
    encoder = build("almt", FIXTURE).text_encoder
    with pytest.raises(MsakitError, match="audio has 6 steps.*audio_frames=6"):
        ALMT(ALMTConfig(**settings), dims_of(FIXTURE), encoder)


def test_optimizer_and_presets_are_the_repository_trainers():
    model = build("almt", FIXTURE)
    config = preset("almt", "mosi")
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {1e-4}  # BERT's biases too
    assert {g["lr"] for g in optimizer.param_groups} == {1e-4}
    assert config.schedule == "cosine" and config.warmup == 0.1 and config.early_stop == 32
    sims = preset("almt", "sims").model
    assert (sims["text_frames"], sims["audio_frames"], sims["vision_frames"]) == (39, 400, 55)
    assert preset("almt", "mosei").model["fusion_depth"] == 4


def test_import_refuses_foreign_keys():
    state = dict(FIXTURE["state"])
    state["Model.h_hyper_layer.layers.0.0.fn.to_k_tx.weight"] = torch.ones(2)
    with pytest.raises(MsakitError, match="to_k_tx"):
        almt_from_mmsa(state)


def test_import_weights_then_predict_gives_the_repository_predictions(tmp_path):
    got = cli_predictions("almt", FIXTURE, tmp_path)
    torch.testing.assert_close(got, FIXTURE["eval"]["M"], atol=1e-4, rtol=1e-5)
