"""MISA equals MMSA's MISA: eval predictions, and one training step's loss and gradients.

MMSA's own classes run beside msakit's on the same file: its ``AMIO`` model built from its
``config_regression.json`` (hidden size cut to 16), its ``MMDataset`` reading the file, its
trainer's loss terms (``trains/singleTask/MISA.py``). The weights go MMSA -> msakit through the
spec's ``imports["mmsa"]`` function.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmsa_reference_bert import (
    assert_gradients_close,
    mmsa_args,
    mmsa_batch,
    mmsa_files,
    mmsa_split,
    share_weights,
)

from msakit.core.errors import MsakitError
from msakit.data.batching import collate
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.models.base import Dims
from msakit.models.misa import MISA, MISAConfig, misa_from_mmsa

pytest.importorskip("MMSA")

HIDDEN = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    # MMSA's MISA reads the first text-length frames: at least 50 of each.
    return mmsa_files(tmp_path_factory.mktemp("mmsa_misa"), {"audio": 60, "vision": 55})


def build_pair(setup, *, dropout: float | None = None, **config):
    """MMSA's AMIO for MISA and msakit's MISA holding the same weights."""
    from MMSA.models.AMIO import AMIO

    args = mmsa_args("misa", "mosi", data=setup["data"], bert=setup["bert"],
                     hidden_size=HIDDEN, **config)
    torch.manual_seed(1)
    reference = AMIO(args)
    ff = load_feature_file(setup["data"])
    ours = MISA(MISAConfig(hidden_size=HIDDEN, **_ours(config)), Dims.of(ff),
                load_text_encoder(str(setup["bert"])))
    share_weights(reference, ours, misa_from_mmsa, dropout=dropout)
    return args, reference, ours, ff


def _ours(config):
    """The MMSA settings that msakit's MISAConfig names the same."""
    return {k: v for k, v in config.items() if k in MISAConfig.__dataclass_fields__}


def batches(args, ff, split, indices, trim):
    reference = mmsa_batch(mmsa_split(args, split), indices)
    return reference, collate(ff.splits[split], np.asarray(indices), trim=trim)


@pytest.mark.parametrize("rnncell", ["lstm", "gru"])
def test_eval_predictions_equal_mmsa(setup, rnncell):
    args, reference, ours, ff = build_pair(setup, rnncell=rnncell)
    reference.eval()
    ours.eval()
    indices = list(range(6))
    theirs, batch = batches(args, ff, "valid", indices, trim=not ours.reads_padding())
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])["M"].view(-1)
        got = ours(batch).prediction
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert expected.std() > 1e-4  # not a constant output that any model would match


def test_training_step_loss_and_gradients_equal_mmsa(setup):
    from MMSA.trains.singleTask.MISA import MISA as MISATrainer

    args, reference, ours, ff = build_pair(setup, dropout=0.0)
    reference.train()
    ours.train()
    indices = [7, 2, 9, 0, 4, 5]
    theirs, batch = batches(args, ff, "train", indices, trim=not ours.reads_padding())
    # MMSA's training step (trains/singleTask/MISA.py, do_train): the same terms and weights.
    trainer = MISATrainer(args)
    trainer.model = reference
    outputs = reference(theirs["text"], theirs["audio"], theirs["vision"])["M"]
    expected = (
        trainer.criterion(outputs, theirs["labels"]["M"].view(-1, 1))
        + args.diff_weight * trainer.get_diff_loss()
        + args.sim_weight * trainer.get_cmd_loss()
        + args.recon_weight * trainer.get_recon_loss()
    )
    expected.backward()
    losses = ours.compute_loss(ours(batch), batch)
    losses.loss.backward()
    torch.testing.assert_close(losses.loss, expected.detach(), rtol=1e-5, atol=0)
    # Modules no loss reads (sp_discriminator, tlayer_norm) have no gradient: zeros, dropped.
    grads = misa_from_mmsa({k: torch.zeros_like(p) if p.grad is None else p.grad
                            for k, p in reference.named_parameters()})
    ours_grads = {k: torch.zeros_like(p) if p.grad is None else p.grad
                  for k, p in ours.named_parameters()}
    assert grads["text_encoder.embeddings.word_embeddings.weight"].abs().sum() > 0
    assert_gradients_close(ours_grads, grads)


def test_own_lengths_read_only_valid_frames(setup):
    """sequence_lengths="own": audio/vision padding past their own lengths changes nothing."""
    ff = load_feature_file(setup["data"])
    model = MISA(MISAConfig(hidden_size=HIDDEN, sequence_lengths="own"), Dims.of(ff),
                 load_text_encoder(str(setup["bert"]))).eval()
    assert not model.reads_padding()
    batch = collate(ff.splits["valid"], np.arange(6), trim=True)
    noisy = batch.replace(audio=batch.audio.clone())
    for i, n in enumerate(batch.audio_lengths.tolist()):
        noisy.audio[i, n:] = 7.0
    with torch.no_grad():
        torch.testing.assert_close(model(noisy).prediction, model(batch).prediction)


def test_import_refuses_foreign_keys(setup):
    _, reference, _, _ = build_pair(setup)
    state = reference.state_dict()
    state["Model.extra.weight"] = torch.zeros(1)
    with pytest.raises(MsakitError, match="Model.extra.weight"):
        misa_from_mmsa(state)
    del state["Model.extra.weight"]
    del state["Model.shared.shared_1.weight"]
    with pytest.raises(MsakitError, match="shared"):
        misa_from_mmsa(state)


def test_adversarial_similarity_reverses_the_shared_gradient(setup):
    """similarity="adversarial" (MMSA's use_cmd_sim=false, which MMSA's trainer cannot run):
    the discriminator learns to tell the modalities apart, the shared encoder gets the reversed
    gradient, scaled by reverse_grad_weight."""
    import torch.nn.functional as F

    ff = load_feature_file(setup["data"])
    model = MISA(MISAConfig(hidden_size=HIDDEN, similarity="adversarial", dropout=0.0,
                            reverse_grad_weight=0.5),
                 Dims.of(ff), load_text_encoder(str(setup["bert"]))).train()
    batch = collate(ff.splits["train"], np.arange(8), trim=not model.reads_padding())
    reps = model(batch).representations
    model._similarity(reps).backward(retain_graph=True)
    reversed_grad = model.shared.weight.grad.clone()
    discriminator_grad = model.discriminator[0].weight.grad.clone()
    model.zero_grad()
    shared = [reps[f"shared_{m}"] for m in ("text", "vision", "audio")]
    logits = torch.cat([model.discriminator(s) for s in shared])
    domains = torch.arange(3).repeat_interleave(8)
    F.cross_entropy(logits, domains).backward()
    torch.testing.assert_close(reversed_grad, -0.5 * model.shared.weight.grad)
    torch.testing.assert_close(discriminator_grad, model.discriminator[0].weight.grad)
    assert reversed_grad.abs().max() > 0
