"""Self-MM equals MMSA's Self-MM: eval predictions; training steps' loss and gradients; and the
unimodal labels its trainer generates over two epochs (the momentum update from epoch 2).

MMSA's own classes run beside msakit's on the same file: its ``AMIO`` model built from its
``config_regression.json`` (widths cut down), its ``MMDataset`` reading the file, its trainer's
``init_labels``, ``weighted_loss``, ``update_labels``, ``update_features`` and
``update_centers`` in the order of its ``do_train``. No optimizer step is taken, so both sides
keep equal weights and every step can be compared.
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
from msakit.models.self_mm import (
    TASKS,
    SelfMM,
    SelfMMConfig,
    UnimodalLabels,
    self_mm_from_mmsa,
)

pytest.importorskip("MMSA")

# MMSA's names -> msakit's, with small widths.
WIDTHS = {
    "a_lstm_hidden_size": ("audio_hidden", 6), "v_lstm_hidden_size": ("vision_hidden", 5),
    "audio_out": ("audio_out", 4), "video_out": ("vision_out", 3),
    "post_fusion_dim": ("fusion_dim", 12), "post_text_dim": ("text_dim", 8),
    "post_audio_dim": ("audio_dim", 6), "post_video_dim": ("vision_dim", 7),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    return mmsa_files(tmp_path_factory.mktemp("mmsa_self_mm"), {"audio": 40, "vision": 30})


def build_pair(setup, *, dropout: float | None = None):
    """MMSA's AMIO for self_mm and msakit's SelfMM holding the same weights."""
    from MMSA.models.AMIO import AMIO

    args = mmsa_args("self_mm", "mosi", data=setup["data"], bert=setup["bert"],
                     **{k: v for k, (_, v) in WIDTHS.items()})
    torch.manual_seed(1)
    reference = AMIO(args)
    ff = load_feature_file(setup["data"])
    config = SelfMMConfig(**dict(WIDTHS.values()), label_bound=args.H)
    ours = SelfMM(config, Dims.of(ff), load_text_encoder(str(setup["bert"])))
    share_weights(reference, ours, self_mm_from_mmsa, dropout=dropout)
    return args, reference, ours, ff


def run_reference(model, batch):
    return model(batch["text"], (batch["audio"], batch["audio_lengths"]),
                 (batch["vision"], batch["vision_lengths"]))


def test_eval_predictions_equal_mmsa(setup):
    args, reference, ours, ff = build_pair(setup)
    reference.eval()
    ours.eval()
    indices = np.arange(6)
    theirs = mmsa_batch(mmsa_split(args, "valid"), indices)
    batch = collate(ff.splits["valid"], indices)
    with torch.no_grad():
        expected = run_reference(reference, theirs)
        got = ours(batch)
    torch.testing.assert_close(got.prediction, expected["M"].view(-1), atol=1e-4, rtol=0)
    assert expected["M"].std() > 1e-4
    for task, key in (("text", "T"), ("audio", "A"), ("vision", "V")):
        torch.testing.assert_close(got.representations[f"prediction_{task}"], expected[key],
                                   atol=1e-4, rtol=0)
    # Evaluation loss: MMSA's do_test takes L1 of the fusion output against the true labels.
    loss = ours.compute_loss(got, batch).loss
    torch.testing.assert_close(loss, (expected["M"].view(-1) - theirs["labels"]["M"].view(-1))
                               .abs().mean(), rtol=1e-5, atol=1e-6)


def test_training_steps_and_label_generation_equal_mmsa(setup):
    from MMSA.trains.multiTask.SELF_MM import SELF_MM as SelfMMTrainer

    args, reference, ours, ff = build_pair(setup, dropout=0.0)
    reference.train()
    ours.train()
    train = mmsa_split(args, "train")
    trainer = SelfMMTrainer(args)
    everything = mmsa_batch(train, range(len(train)))
    trainer.init_labels(everything["index"].view(-1), everything["labels"]["M"].view(-1))
    ours.on_train_start(ff.splits["train"])
    # Label generation divides by distances and by alpha_M, which magnify the features'
    # rounding: a twin of the state fed with MMSA's own features must agree to 1e-6, msakit's
    # model end to end to 1e-3.
    twin = UnimodalLabels(torch.as_tensor(ff.splits["train"].labels),
                          {t: ours.heads[t].fc1.out_features for t in TASKS},
                          bound=args.H, exclude_zero=args.excludeZero)
    plan = {1: [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], 2: [[3, 7, 1, 8, 0], [2, 4, 5, 6, 9]]}
    for epoch, batches in plan.items():
        ours.on_epoch_start(epoch - 1)
        for indices in batches:
            expected = reference_step(trainer, reference, mmsa_batch(train, indices), epoch)
            reference.zero_grad()
            ours.zero_grad()
            expected_loss, expected_grads, features = expected
            twin.step(torch.as_tensor(indices), dict(zip(TASKS, features, strict=True)), epoch)
            batch = collate(ff.splits["train"], np.asarray(indices))
            losses = ours.compute_loss(ours(batch), batch)
            losses.loss.backward()
            torch.testing.assert_close(losses.loss.detach(), expected_loss, rtol=1e-5, atol=0)
            assert_gradients_close(grads_of(ours), self_mm_from_mmsa(expected_grads))
        for task in TASKS:
            expected_labels = trainer.label_map[task]
            torch.testing.assert_close(twin.labels[task], expected_labels, rtol=0, atol=1e-6)
            torch.testing.assert_close(ours.unimodal_labels.labels[task], expected_labels,
                                       rtol=0, atol=1e-3)
    # Epoch 2 moved the unimodal labels away from the true labels (the test has teeth).
    moved = (ours.unimodal_labels.labels["text"] - ours.unimodal_labels.labels["fusion"]).abs()
    assert moved.max() > 1e-3


def reference_step(trainer, model, batch, epoch):
    """One step of MMSA's Self-MM do_train without the optimizer: (loss, gradients)."""
    indexes = batch["index"].view(-1)
    outputs = run_reference(model, batch)
    loss = 0.0
    for m in "MTAV":
        mode = trainer.name_map[m]
        loss += trainer.weighted_loss(outputs[m], trainer.label_map[mode][indexes],
                                      indexes=indexes, mode=mode)
    loss.backward()
    grads = {k: torch.zeros_like(p) if p.grad is None else p.grad.clone()
             for k, p in model.named_parameters()}
    features = [outputs[f"Feature_{k}"].detach() for k in "ftav"]
    if epoch > 1:
        trainer.update_labels(*features, epoch, indexes, outputs)
    trainer.update_features(*features, indexes)
    trainer.update_centers()
    return loss.detach(), grads, features


def grads_of(model):
    return {k: torch.zeros_like(p) if p.grad is None else p.grad
            for k, p in model.named_parameters()}


def test_resume_state_round_trips(setup):
    _, _, ours, ff = build_pair(setup, dropout=0.0)
    ours.train()
    ours.on_train_start(ff.splits["train"])
    for epoch in (0, 1):
        ours.on_epoch_start(epoch)
        batch = collate(ff.splits["train"], np.arange(10))
        ours.compute_loss(ours(batch), batch)
    saved = {k: v.clone() for k, v in ours.training_state().items()}
    fresh = build_pair(setup)[2]
    fresh.on_train_start(ff.splits["train"])
    fresh.load_training_state(saved)
    for key, value in fresh.training_state().items():
        torch.testing.assert_close(value, saved[key])
    assert not torch.equal(saved["labels.text"], saved["labels.fusion"])


def test_import_refuses_foreign_keys(setup):
    _, reference, _, _ = build_pair(setup)
    state = reference.state_dict()
    del state["Model.post_text_layer_2.bias"]
    with pytest.raises(MsakitError, match="post_text_layer_2.bias"):
        self_mm_from_mmsa(state)


def test_trainer_drives_label_generation(setup, tmp_path):
    """The generic Trainer calls the hooks: after two epochs the unimodal labels have moved,
    and last.pt carries them for a resume."""
    from msakit.config import RunConfig
    from msakit.training.trainer import Trainer

    _, _, ours, ff = build_pair(setup)
    config = RunConfig(model_name="self_mm", dataset="mosi", batch_size=4, epochs=2,
                       lr=dict.fromkeys(("text", "audio", "vision", "other"), 1e-4),
                       schedule="constant", warmup=0.0)
    trainer = Trainer(ours, config, ff.splits["train"], ff.splits["valid"], run_dir=tmp_path,
                      quiet=True)
    trainer.fit()
    labels = ours.unimodal_labels.labels
    assert (labels["audio"] - labels["fusion"]).abs().max() > 1e-3
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["model_training_state"]
    torch.testing.assert_close(saved["labels.audio"], labels["audio"])
    assert not any(k.startswith("labels.") for k in ours.state_dict())
