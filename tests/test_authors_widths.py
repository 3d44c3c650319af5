"""msakit's ``--preset authors`` against the authors' CLGSI code at SIMS and MOSEI widths.

The fixtures ``tests/fixtures/clgsi_authors_{sims,mosei}/`` were written by
``tests/fixtures/make_clgsi_authors_widths_fixture.py`` running the authors' code with their own
``sims`` / ``mosei`` configuration (d_c = d_s = 128, d_f = 256, their encoder heads, Subnet
reduction and dropouts) on the data sets' audio/vision widths (SIMS 33/709, MOSEI 74/35). msakit
imports their weights with ``--preset authors`` and no ``--set``: the preset itself must give
their model. The same checks as the MOSI fixture (tests/test_authors_equivalence.py): eval
predictions, one training step's loss and gradients. This file reads only the fixtures.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import close_in_distribution, run_cli

from msakit import api
from msakit.config import RunConfig
from msakit.data.batching import collate
from msakit.data.mmsa import load_feature_file
from msakit.encoders.dropout import use_fast_dropout
from msakit.models.import_weights import SOURCES
from msakit.training.trainer import Trainer, set_dropout

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import clgsi_recipe  # noqa: E402

DATASETS = ("sims", "mosei")


def fixture_dir(dataset: str) -> Path:
    return FIXTURES / f"clgsi_authors_{dataset}"


def authors_state(dataset: str) -> dict[str, torch.Tensor]:
    """Their state dict as the fixture script loaded it: recipe tensors and stored buffers."""
    saved = torch.load(fixture_dir(dataset) / "state.pt", weights_only=True)
    return {**clgsi_recipe.fill(saved["shapes"], shifts=saved["shifts"]), **saved["buffers"]}


@pytest.fixture(scope="module", params=DATASETS)
def case(request, tmp_path_factory) -> dict:
    dataset = request.param
    folder = fixture_dir(dataset)
    tmp = tmp_path_factory.mktemp(f"authors_{dataset}")
    torch.save(authors_state(dataset), tmp / "authors_state.pth")
    out = tmp / "imported.pt"
    argv = ["import-weights", "--from", "clgsi-authors", "--model", "clgsi",
            "--dataset", dataset, "--weights", str(tmp / "authors_state.pth"),
            "--data", str(folder / "data.npz"),
            "--text-encoder", str(FIXTURES / "clgsi_authors" / "text_encoder"), "--out", str(out)]
    assert run_cli(argv) == 0
    expected = torch.load(folder / "expected.pt", weights_only=True)
    meta = json.loads((folder / "fixture.json").read_text())
    return {"dataset": dataset, "folder": folder, "checkpoint": out, "expected": expected,
            "meta": meta, "tmp": tmp}


def test_the_fixture_holds_the_data_sets_configuration(case):
    meta = case["meta"]
    settings = meta["authors_settings"]
    assert meta["msakit_set"] == [] and meta["feature_dims"][1:] == {
        "sims": [33, 709], "mosei": [74, 35]}[case["dataset"]]
    model = api.load_checkpoint(case["checkpoint"]).config.model
    assert model["common_dim"] == model["specific_dim"] == settings["post_text_dim"] == 128
    assert model["head_dim"] == settings["post_fusion_dim"] == 256
    assert (model["audio_heads"], model["vision_heads"]) == (
        settings["a_encoder_heads"], settings["v_encoder_heads"])
    assert model["subnet_reduction"] == settings["skip_net_reduction"]
    assert model["projection_dropout"] == settings["post_text_dropout"]
    assert model["head_dropout"] == settings["post_fusion_dropout"]
    assert model["gamma"] == settings["gamma"] == case["expected"]["gamma"]


def test_predictions_are_the_authors(case):
    csv_path = case["tmp"] / "predictions.csv"
    assert run_cli(["predict", "--checkpoint", str(case["checkpoint"]), "--data",
                    str(case["folder"] / "data.npz"), "--split", "test",
                    "--out", str(csv_path)]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    ours = np.array([float(r["prediction"]) for r in rows])
    theirs = case["expected"]["test_predictions"].numpy().astype(np.float64)
    assert [r["id"] for r in rows] == [f"test_{i}" for i in range(len(theirs))]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    assert np.ptp(theirs) > 0.05  # the predictions differ between samples


def _in_authors_order(grad: torch.Tensor, name: str, shape: torch.Size, config) -> torch.Tensor:
    """msakit's gradient of the authors' entry ``name``, flat in the authors' element order (the
    import's transforms only permute: applied to element numbers they give the permutation)."""
    msakit_name, transform = SOURCES["clgsi-authors"].target(name)
    numbers = torch.arange(shape.numel(), dtype=torch.float64).reshape(shape)
    where = transform(numbers, config).flatten().long()
    out = torch.empty(shape.numel(), dtype=torch.float64)
    out[where] = grad.detach().double().flatten()
    return out


def _authors_order(model, case) -> dict[str, torch.Tensor]:
    """msakit's gradients under the authors' names, at the positions the fixture stored."""
    shapes = torch.load(case["folder"] / "state.pt", weights_only=True)["shapes"]
    params = dict(model.named_parameters())
    received = {SOURCES["clgsi-authors"].target(n)[0] for n in case["expected"]["grads"]}
    assert received == {n for n, p in params.items() if p.grad is not None}
    out = {}
    for name in case["expected"]["grads"]:
        msakit_name = SOURCES["clgsi-authors"].target(name)[0]
        flat = _in_authors_order(params[msakit_name].grad, name, torch.Size(shapes[name]),
                                 model.config)
        out[name] = (flat, flat[clgsi_recipe.sample_positions(name, flat.numel())]
                     if flat.numel() > clgsi_recipe.WHOLE else flat)
    return out


def _check_gradients(ours: dict, theirs: dict, *, rel: float, floor: float) -> None:
    """Each stored gradient (whole or sampled) to ``rel`` of its own norm plus ``floor`` of the
    norm of all stored values, and each tensor's whole norm the same way."""
    total = float(torch.cat([t["values"] for t in theirs.values()]).norm())
    norm_total = float(torch.stack([t["norm"] for t in theirs.values()]).norm())
    for name, ref in theirs.items():
        whole, stored = ours[name]
        error = float((stored - ref["values"]).norm())
        assert error <= rel * float(ref["values"].norm()) + floor * total, (name, error)
        norm_error = abs(float(whole.norm() - ref["norm"]))
        assert norm_error <= rel * float(ref["norm"]) + floor * norm_total, (name, norm_error)


def test_one_training_step_gives_the_authors_loss_and_gradients(case):
    """msakit's Trainer step (float32) against their float64 step: the loss to 1e-5 relative;
    gradients to 1e-5 of their own norm plus 1e-5 of the whole gradient's: at these widths the
    biases before the head's BatchNorm have gradient 0 in exact arithmetic (the batch mean
    removes them) and float32 rounding of 7 x 512 cancelling terms leaves ~1e-4 there. The
    float64 test below holds every tensor to 2e-6."""
    ckpt = api.load_checkpoint(case["checkpoint"])
    split = load_feature_file(case["folder"] / "data.npz").splits["train"]
    config = RunConfig.from_dict(ckpt.config.to_dict())
    config.dropout, config.batch_size, config.reuse_memory = 0.0, len(split), False
    trainer = Trainer(model=ckpt.model, config=config, train=split, valid=split, quiet=True)
    trainer.prepare()
    stats = trainer.train_epoch(0, max_steps=1)
    expected = case["expected"]
    for key in ("loss", "task_loss", "contrastive_loss"):
        assert stats[key] == pytest.approx(float(expected[key]), rel=1e-5), key
    _check_gradients(_authors_order(ckpt.model, case), expected["grads"], rel=1e-5, floor=1e-5)


def test_in_float64_the_step_is_the_authors_to_rounding(case):
    model = api.load_checkpoint(case["checkpoint"]).model.double()
    set_dropout(model, 0.0)
    model.train()
    split = load_feature_file(case["folder"] / "data.npz").splits["train"]
    batch = collate(split, np.arange(len(split)), trim=False)
    batch = batch.replace(audio=batch.audio.double(), vision=batch.vision.double())
    losses = model.compute_loss(model(batch), batch)
    losses.loss.backward()
    assert float(losses.loss.detach()) == pytest.approx(float(case["expected"]["loss"]),
                                                        rel=1e-6)
    _check_gradients(_authors_order(model, case), case["expected"]["grads"], rel=2e-6,
                     floor=1e-9)


# --------------------------------------------------------------------------- dropout placement
def msakit_draws(model, split, n: int) -> dict[str, torch.Tensor]:
    """``n`` training-mode forwards (the preset's dropouts) on the whole train split."""
    units = 16
    batch = collate(split, np.arange(len(split)), trim=False)
    model.train()
    draws = {k: [] for k in ("prediction", "text", "audio", "vision", "loss")}
    with torch.no_grad():
        for _ in range(n):
            output = model(batch)
            draws["loss"].append(model.compute_loss(output, batch).loss)
            draws["prediction"].append(output.prediction.view(-1))
            for key in ("text", "audio", "vision"):
                draws[key].append(output.representations[key][:, :units])
    return {k: torch.stack(v) for k, v in draws.items()}


def _draws_for(case, *, fast: bool, change=None) -> dict[str, torch.Tensor]:
    model = api.load_checkpoint(case["checkpoint"]).model
    if fast:
        use_fast_dropout(model)
    if change is not None:
        change(model)
    split = load_feature_file(case["folder"] / "data.npz").splits["train"]
    torch.manual_seed(11)
    n = torch.load(case["folder"] / "dropout.pt", weights_only=True)["draws"]["loss"].numel()
    return msakit_draws(model, split, n)


@pytest.mark.parametrize("fast", [False, True], ids=["torch-masks", "fast-dropout"])
def test_dropout_on_the_step_is_the_authors_in_distribution(case, fast):
    """With every dropout of the preset on (the authors' p: encoders 0.1, Projections
    post_*_dropout, the head's input post_fusion_dropout), msakit's training-mode predictions,
    common representations and loss have the authors' means and variances over 300 draws
    (``close_in_distribution``, per sample and unit), with PyTorch's masks and with
    ``fast_dropout``'s NumPy masks (the CLI's default)."""
    theirs = torch.load(case["folder"] / "dropout.pt", weights_only=True)["draws"]
    ours = _draws_for(case, fast=fast)
    n = theirs["loss"].numel()
    for key, values in theirs.items():
        assert ours[key].shape == values.shape, key
        close_in_distribution(ours[key].double(), values.double(), n)
    assert theirs["prediction"].std(0).min() > 1e-3  # the draws differ: dropout was on


def _move_projection_dropout(model) -> None:
    """A misplaced dropout: the Projections' dropout p moved to the head's input."""
    p = model.project_text.dropout.p
    for name in ("project_text", "project_audio", "project_vision"):
        getattr(model, name).dropout.p = 0.0
    model.head.net[0].p = p


def test_a_misplaced_dropout_is_detected(case):
    """The comparison above has the power to see a dropout in the wrong place (on MOSEI, where
    the forwards are cheap: the head's p 0.1 becomes the Projections' 0.01 and those 0)."""
    if case["dataset"] != "mosei":
        pytest.skip("one data set suffices")
    theirs = torch.load(case["folder"] / "dropout.pt", weights_only=True)["draws"]
    ours = _draws_for(case, fast=False, change=_move_projection_dropout)
    with pytest.raises(AssertionError):
        for key in ("text", "audio", "vision"):
            close_in_distribution(ours[key].double(), theirs[key].double(), len(theirs["loss"]))
