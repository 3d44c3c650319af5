"""msakit's Trainer under ``--preset authors`` against the authors' CLGSI training loop.

``tests/fixtures/clgsi_authors/loop.pt`` was recorded by
``tests/fixtures/make_clgsi_authors_loop_fixture.py`` from the authors' ``do_train`` (their MOSI
configuration, batch 4, on the MOSI-width fixture) until their early stopping ended it: their
AdamW's parameter groups (names, lr, weight decay), every group's lr before each optimizer step,
and the validation MAEs with the epochs at which they saved a best model. This file reads only
the fixtures: it compares the groups and the schedule that ``Trainer.prepare()`` builds, and
msakit's early-stopping rule on their MAEs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from msakit import api
from msakit.config import RunConfig
from msakit.data.mmsa import load_feature_file
from msakit.models.import_weights import DROP, SOURCES
from msakit.training.trainer import EarlyStopping, Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "clgsi_authors"
LOOP = torch.load(FIXTURE / "loop.pt", weights_only=True)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> Trainer:
    """msakit's Trainer for the authors' weights and file, ``--preset authors`` (MOSI), at the
    recorded loop's batch size and horizon; prepared (optimizer, schedule, early stopping)."""
    out = tmp_path_factory.mktemp("loop") / "authors.pt"
    sets = json.loads((FIXTURE / "fixture.json").read_text())["msakit_set"]
    assert run_cli([
        "import-weights", "--from", "clgsi-authors", "--model", "clgsi", "--dataset", "mosi",
        "--weights", str(FIXTURE / "authors_state.pth"), "--data", str(FIXTURE / "data.npz"),
        "--text-encoder", str(FIXTURE / "text_encoder"), "--out", str(out),
        *[x for s in sets for x in ("--set", s)]]) == 0
    ckpt = api.load_checkpoint(out)
    splits = load_feature_file(FIXTURE / "data.npz").splits
    config = RunConfig.from_dict(ckpt.config.to_dict())
    assert config.epochs == LOOP["settings"]["config_warm_up_epochs"]  # the preset's horizon
    config.batch_size, config.reuse_memory = LOOP["settings"]["batch_size"], False
    config.epochs = LOOP["settings"]["warm_up_epochs"]  # the recorded run's (a fraction warm-up)
    trainer = Trainer(model=ckpt.model, config=config, train=splits["train"],
                      valid=splits["valid"], quiet=True)
    trainer.prepare()
    return trainer


def _their_groups_in_msakit_names(model) -> list[dict]:
    """Their groups with each parameter under its msakit name; parameters their forward never
    reads (dropped by the import: the template encoder layers, post_*_layer_2, ...) left out,
    and groups left empty by that dropped."""
    params = dict(model.named_parameters())
    groups = []
    for group in LOOP["groups"]:
        names = set()
        for name in group["names"]:
            target = SOURCES["clgsi-authors"].target(name)
            assert target is not None, name
            if target[0] != DROP:
                assert target[0] in params, name
                names.add(target[0])
        if names:
            groups.append({**group, "names": names})
    return groups


def _msakit_groups(trainer) -> list[dict]:
    optimizer = trainer.prepared.optimizers["train"]
    ids = {id(p): n for n, p in trainer.model.named_parameters()}
    return [{"names": {ids[id(p)] for p in g["params"]}, "lr": g["lr"],
             "weight_decay": g["weight_decay"], "initial_lr": g["initial_lr"]}
            for g in optimizer.param_groups]


def test_the_optimizer_groups_are_the_authors(trainer):
    """The same partition of the trained parameters (BERT with decay, BERT's biases and
    LayerNorms without, audio encoder, vision encoder, the rest), each with their lr and
    weight decay, in AdamW (their ``optim.AdamW``)."""
    theirs = _their_groups_in_msakit_names(trainer.model)
    ours = _msakit_groups(trainer)
    assert isinstance(trainer.prepared.optimizers["train"], torch.optim.AdamW)
    key = lambda g: (sorted(g["names"]), g["initial_lr"] if "initial_lr" in g else g["lr"],  # noqa: E731
                     g["weight_decay"])
    assert sorted(map(key, ours)) == sorted(map(key, theirs))
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set().union(*(g["names"] for g in ours)) == trained
    assert len(theirs) == 5  # every group of theirs kept a parameter msakit has


def test_the_schedule_is_the_authors_step_by_step(trainer):
    """Their lr before each optimizer step, every group, over the whole recorded run (warm-up
    0.1 x 73 epochs x 2 steps = 14.6 steps, unrounded, then their cosine): msakit's scheduler
    gives the same values, with the same steps per epoch and horizon (their warm_up_epochs)."""
    assert len(trainer._plan(0)) == LOOP["steps_per_epoch"]
    assert trainer.config.epochs == LOOP["settings"]["warm_up_epochs"]
    optimizer = trainer.prepared.optimizers["train"]
    scheduler = trainer.prepared.schedulers["train"]
    theirs = LOOP["lrs"]
    order = _group_order(trainer)
    ours = []
    with warnings.catch_warnings():  # stepping a schedule without optimizer steps
        warnings.simplefilter("ignore")
        for _ in range(len(theirs)):
            ours.append([optimizer.param_groups[k]["lr"] for k in order])
            scheduler.step()
    ours = torch.tensor(ours, dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    total = LOOP["steps_per_epoch"] * LOOP["settings"]["warm_up_epochs"]
    base = LOOP["groups"][0]["lr"]
    assert float(theirs[14, 0]) == pytest.approx(base * 14 / (0.1 * total), rel=1e-12)
    assert theirs[-1, 0] < theirs[15, 0] < base  # past the warm-up: their cosine


def _group_order(trainer) -> list[int]:
    """For each of their groups, the index of msakit's group with the same parameters."""
    theirs = _their_groups_in_msakit_names(trainer.model)
    assert len(theirs) == len(LOOP["groups"])
    ours = _msakit_groups(trainer)
    return [next(k for k, g in enumerate(ours) if g["names"] == t["names"]) for t in theirs]


def test_early_stopping_decides_as_the_authors(trainer):
    """msakit's rule (new best below the best by 1e-6, stop after ``early_stop`` epochs without
    one), on their validation MAEs, saves at their epochs and stops after their last epoch."""
    mae = LOOP["valid_mae"]
    assert trainer.config.early_stop == LOOP["settings"]["early_stop"]
    stopper = EarlyStopping(trainer.config.early_stop)
    saved, epochs = [], 0
    for epoch, value in enumerate(mae):
        if stopper.should_stop:
            break
        epochs += 1
        if stopper.update(value, epoch):
            saved.append(epoch + 1)
    assert saved == LOOP["saved_at_epochs"]
    assert epochs == len(mae) and stopper.should_stop
    assert len(mae) - saved[-1] == LOOP["settings"]["early_stop"]
