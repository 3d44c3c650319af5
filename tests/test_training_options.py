"""MMSA's training-loop settings in the generic Trainer: ``optimizer=adam`` (L2 weight decay),
``accumulate`` (MMSA's update_epochs: summed gradients, one step per group of batches) and
``clip_value`` (MMSA's grad_clip: every entry clipped after each backward pass)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from msakit.config import RunConfig, validate
from msakit.core.errors import MsakitError, TrainingDiverged
from msakit.data.batching import collate
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.models.base import Dims
from msakit.models.self_mm import SelfMM, SelfMMConfig
from msakit.training import trainer as trainer_module
from msakit.training.distributed import DistContext
from msakit.training.trainer import EarlyStopping, Prepared, Trainer, set_dropout

GROUPS = ("text", "audio", "vision", "other")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import write_short_synthetic

    path = tmp_path_factory.mktemp("options") / "mosi.pkl"
    return load_feature_file(write_short_synthetic(path, "mosi", (10, 4, 4),
                                                   {"audio": 20, "vision": 15}))


@pytest.mark.parametrize("every", [False, True], ids=["per-group", "step-each-batch"])
def test_trainer_follows_mmsa_loop(data, tiny_bert, one_thread, every):
    """One epoch of 5 batches, accumulate 2: steps after batches 2, 4 and 5 (the remainder),
    each on summed, value-clipped gradients, with Adam and L2 weight decay. With
    ``step_each_batch`` (MMSA's missingTask trainer, written out below as its TFR_NET.py
    runs): a step after every batch on the group's running sum and a second one after
    batches 2 and 4 (complete groups), none more after batch 5."""
    config = RunConfig(model_name="self_mm", dataset="mosi", batch_size=2, epochs=1,
                       lr=dict.fromkeys(GROUPS, 1e-3), weight_decay=dict.fromkeys(GROUPS, 0.01),
                       schedule="constant", warmup=0.0, optimizer="adam", accumulate=2,
                       clip_value=1e-3, dropout=0.0, step_each_batch=every)
    validate(config)
    torch.manual_seed(0)
    model = SelfMM(SelfMMConfig(), Dims.of(data), load_text_encoder(str(tiny_bert)))
    manual = copy.deepcopy(model)
    model_before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, config, data.splits["train"], data.splits["valid"], quiet=True)
    trainer.prepare()
    plan = trainer._plan(0)
    assert len(plan) == 5
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert trainer.optimizer.defaults["fused"] is True  # the fused kernel on CPU
    trainer.train_epoch(0)

    set_dropout(manual, 0.0)
    manual.train()
    manual.on_train_start(data.splits["train"])
    manual.on_epoch_start(0)
    # MMSA's Self-MM groups: BERT's biases and LayerNorms without weight decay.
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    named = list(manual.named_parameters())
    plain = [p for n, p in named if n.startswith("text_encoder.") and any(k in n for k in no_decay)]
    decayed = [p for n, p in named if all(p is not q for q in plain)]
    optimizer = torch.optim.Adam([{"params": decayed, "weight_decay": 0.01},
                                  {"params": plain, "weight_decay": 0.0}], lr=1e-3)
    steps = 0
    left = 2  # MMSA's left_epochs
    for position, indices in enumerate(plan):
        if left == 2:
            optimizer.zero_grad()
        left -= 1
        batch = collate(data.splits["train"], indices)
        manual.compute_loss(manual(batch), batch).loss.backward()
        torch.nn.utils.clip_grad_value_(manual.parameters(), 1e-3)
        if every:
            optimizer.step()
            steps += 1
        if not left or (not every and position == len(plan) - 1):
            optimizer.step()
            steps += 1
            left = 2
    assert steps == (7 if every else 3)
    assert trainer_module.optimizer_steps(len(plan), config) == steps
    changed = False
    for (name, ours), theirs in zip(model.state_dict().items(), manual.state_dict().values(),
                                    strict=True):
        # atol 1e-6: the Trainer's Adam is PyTorch's fused kernel (the loop above: its
        # for-loop one), the same update rounded in another order; BERT's key biases, whose
        # gradient is float noise around 0, move by ~1e-7 on that noise. A missed or extra
        # step moves every parameter by ~lr = 1e-3.
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
        changed |= not torch.equal(ours, model_before[name])
    assert changed


@pytest.mark.parametrize(("key", "value"), [("optimizer", "sgd"), ("accumulate", 0),
                                            ("clip_value", -1.0)])
def test_bad_loop_settings_are_refused(key, value):
    config = RunConfig(model_name="self_mm", dataset="mosi", **{key: value})
    with pytest.raises(MsakitError, match=key):
        validate(config)


def test_fp16_with_accumulation_is_refused():
    config = RunConfig(model_name="self_mm", dataset="mosi", amp="fp16", accumulate=2)
    with pytest.raises(MsakitError, match="accumulate"):
        validate(config)


def test_heads_that_do_not_divide_a_width_name_the_keys_that_choose_them(tmp_path, tiny_bert):
    """Own corpora have other widths than the presets were made for (e.g. 25 eGeMAPS features
    under SIMS's 3 audio heads): the error says which ``--set`` keys fix it."""
    from msakit.training.inputs import build_model

    config = RunConfig(model_name="clgsi", dataset="mosi", text_encoder=str(tiny_bert),
                       model={"audio_heads": 3})
    encoder = load_text_encoder(config.text_encoder)
    with pytest.raises(MsakitError) as caught:
        build_model(config, Dims(audio=25, vision=20), encoder)
    message = str(caught.value)
    assert message.startswith("cannot build clgsi: 3 heads do not divide the feature width 25")
    assert "--set " in message and "audio_heads" in message and "vision_heads" in message


# --------------------------------------------------------------------------- the lifecycle
def _self_mm_trainer(data, tiny_bert, **kwargs) -> Trainer:
    config = RunConfig(model_name="self_mm", dataset="mosi", batch_size=2, epochs=2,
                       lr=dict.fromkeys(GROUPS, 1e-3), schedule="constant", warmup=0.0,
                       dropout=0.0)
    validate(config)
    torch.manual_seed(0)
    model = SelfMM(SelfMMConfig(), Dims.of(data), load_text_encoder(str(tiny_bert)))
    return Trainer(model, config, data.splits["train"], data.splits["valid"], quiet=True,
                   **kwargs)


def test_prepare_builds_the_state_that_training_reads(data, tiny_bert, one_thread):
    trainer = _self_mm_trainer(data, tiny_bert)
    with pytest.raises(RuntimeError, match="prepare"):
        trainer.train_epoch(0)
    trainer.prepare()
    prepared = trainer.prepared
    assert isinstance(prepared, Prepared) and prepared.start_epoch == 0
    assert [p.name for p in prepared.phases] == list(prepared.optimizers)
    assert trainer.optimizer is prepared.optimizers[prepared.phases[-1].name]
    assert prepared.scaler is None and not prepared.amp.enabled


def test_step_losses_are_read_once_per_interval_with_the_same_numbers(
        data, tiny_bert, one_thread, tmp_path, monkeypatch):
    """5 steps an epoch: with a read every 2 steps the losses leave the device (one all-reduce
    and one copy) at steps 2, 4 and 5 only; the step log and the epoch means are those of a
    run that reads once at the epoch's end, and the means are the step log's means."""
    reads = []
    real_sum = DistContext.all_sum

    def all_sum(self, value):
        reads.append(tuple(value.shape))
        return real_sum(self, value)

    monkeypatch.setattr(DistContext, "all_sum", all_sum)
    runs = {}
    for every in (2, 100):
        monkeypatch.setattr(trainer_module, "READ_EVERY", every)
        reads.clear()
        log = tmp_path / f"steps-{every}.jsonl"
        trainer = _self_mm_trainer(data, tiny_bert, log_steps=log)
        trainer.fit()
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        runs[every] = (trainer.history, lines, list(reads))
        assert trainer.sinks.step_log is None  # closed with fit
        # Early stopping compares the unrounded validation MAE (tables round it to 4 decimals).
        maes = [h["valid_MAE"] for h in trainer.history]
        assert trainer.stopper.best == min(maes) and any(m != round(m, 4) for m in maes)
    (history, lines, reads_2), (history_all, lines_all, reads_100) = runs[2], runs[100]
    columns = len(("loss", "task", "text", "audio", "vision"))  # Self-MM's step losses
    assert reads_2 == [(2, columns), (2, columns), (1, columns)] * 2
    assert reads_100 == [(5, columns)] * 2
    assert lines == lines_all and [line["step"] for line in lines] == list(range(1, 11))
    for key in ("train_loss", "train_task_loss", "train_text_loss", "train_audio_loss",
                "train_vision_loss"):
        assert [h[key] for h in history] == [h[key] for h in history_all]
    first = [line["loss"] for line in lines[:5]]
    assert history[0]["train_loss"] == sum(first) / 5


def test_a_nan_loss_between_reads_names_its_step_and_logs_the_steps_before(
        data, tiny_bert, one_thread, tmp_path, monkeypatch):
    real = SelfMM.compute_loss
    state = {}

    def poisoned(self, *args, **kwargs):
        losses = real(self, *args, **kwargs)
        if self.training and state["trainer"].global_step == 2:  # the third step
            losses = dataclasses.replace(losses, loss=losses.loss * float("nan"))
        return losses

    monkeypatch.setattr(SelfMM, "compute_loss", poisoned)
    log = tmp_path / "steps.jsonl"
    state["trainer"] = trainer = _self_mm_trainer(data, tiny_bert, log_steps=log,
                                                  run_dir=tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1, step 3 \(loss "
                                               r"nan\); lower the learning rate$"):
        trainer.fit()
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    assert not (tmp_path / "run" / "last.pt").exists()


def test_early_stopping_tells_apart_maes_that_round_alike():
    """On unrounded values the 1e-6 tolerance is what decides (MMSA's 4-decimal values tie)."""
    stopper = EarlyStopping(patience=2)
    assert stopper.update(0.51234, 0)
    assert stopper.update(0.51231, 1)  # 3e-5 lower: a new best; both are 0.5123 in a table
    assert not stopper.update(0.5123095, 2)  # 5e-7 lower: within the tolerance
    assert (stopper.best, stopper.best_epoch, stopper.bad_epochs) == (0.51231, 1, 1)
