"""MFM equals MMSA's MFM: eval predictions, and one training step's loss (L1, generative and
MMD terms) and gradients.

MMSA's own classes run beside msakit's on the same file: its ``AMIO`` (AlignSubNet included)
around ``MFM`` from its ``config_regression.json`` (widths cut down), its ``MMDataset``, its
trainer's loss (``trains/singleTask/MFM.py``). The MMD terms draw standard-normal samples: both
sides start from the same seed and draw them in the same order. Two files: an aligned
MOSI-shaped file and an unaligned SIMS-shaped one (pooled to the text length on both sides).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmsa_reference_aligned import import_through_cli, mmsa_args, write_file
from mmsa_reference_bert import assert_gradients_close, mmsa_batch, mmsa_split, share_weights

from msakit.core.errors import MsakitError
from msakit.data.batching import collate
from msakit.data.mmsa import load_feature_file
from msakit.losses.mfm import gaussian_kernel, mmd_to_sample
from msakit.models.base import Dims
from msakit.models.mfm import MFM, MFMConfig, mfm_from_mmsa
from msakit.models.registry import preset

pytest.importorskip("MMSA")

TINY = {
    "hidden_dims": [8, 4, 6], "memsize": 6, "zy_size": 5, "zl_size": 6, "za_size": 4,
    "zv_size": 7, "fy_size": 4, "fl_size": 5, "fa_size": 3, "fv_size": 6,
    "NN1Config": {"drop": 0.7, "shapes": 5}, "NN2Config": {"drop": 0.0, "shapes": 7},
    "gamma1Config": {"drop": 0.0, "shapes": 5}, "gamma2Config": {"drop": 0.5, "shapes": 6},
    "outConfig": {"drop": 0.2, "shapes": 4},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("mmsa_mfm")
    return {
        "mosi": write_file(root / "mosi.pkl", "mosi", (8, 6, 4), frames={}, aligned=True),
        "sims": write_file(root / "sims.pkl", "sims", (8, 6, 4),
                           frames={"audio": 90, "vision": 50}, aligned=False),
    }


def config_of(args) -> MFMConfig:
    text, audio, vision = args.hidden_dims
    blocks = {f"{name}_{field}": args[f"{cfg}Config"][key]
              for name, cfg in (("att1", "NN1"), ("att2", "NN2"), ("gamma1", "gamma1"),
                                ("gamma2", "gamma2"))
              for field, key in (("hidden", "shapes"), ("dropout", "drop"))}
    sizes = {k: args[k] for k in MFMConfig.__dataclass_fields__ if k.endswith(("_size",
                                                                                "_dropout"))
             and k in args}
    return MFMConfig(text_hidden=text, audio_hidden=audio, vision_hidden=vision,
                     memory=args.memsize, mmd_weight=args.lda_mmd,
                     text_recon_weight=args.lda_xl, audio_recon_weight=args.lda_xa,
                     vision_recon_weight=args.lda_xv, **blocks, **sizes)


def build_pair(files, dataset, *, dropout: float | None = None):
    from MMSA.models.AMIO import AMIO

    args = mmsa_args("mfm", dataset, data=files[dataset], **TINY)
    torch.manual_seed(1)
    reference = AMIO(args)
    with torch.no_grad():  # scaled by fan-in: PyTorch's LSTM init (1 / sqrt(hidden)) on the
        for p in reference.parameters():  # 768 text features saturates every gate
            p.normal_(0.0, 1.5 / p.size(-1) ** 0.5 if p.dim() == 2 else 0.1)
    ff = load_feature_file(files[dataset], text_features=True)
    ours = MFM(config_of(args), Dims.of(ff))
    share_weights(reference, ours, mfm_from_mmsa, dropout=dropout)
    return args, reference, ours, ff


def batches(args, ff, split, indices):
    reference = mmsa_batch(mmsa_split(args, split), indices)
    return reference, collate(ff.splits[split], np.asarray(indices), trim=False)


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_eval_predictions_equal_mmsa(files, dataset):
    args, reference, ours, ff = build_pair(files, dataset)
    reference.eval()
    ours.eval()
    assert ours.reads_padding()
    theirs, batch = batches(args, ff, "valid", list(range(6)))
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])[0].view(-1)
        got = ours(batch).prediction
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # MFM's random-weight outputs lie close together (the memory saturates over the padded
    # steps): the samples must still be told apart, far beyond the two sides' difference.
    spread = float(expected.max() - expected.min())
    assert spread > 1e-5 and float((got - expected).abs().max()) < 1e-2 * spread


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_training_step_loss_and_gradients_equal_mmsa(files, dataset):
    args, reference, ours, ff = build_pair(files, dataset, dropout=0.0)
    reference.train()
    ours.train()
    theirs, batch = batches(args, ff, "train", [7, 2, 5, 0, 4, 1])
    torch.manual_seed(5)
    pred, gen_loss, mmd_loss, missing = reference(theirs["text"], theirs["audio"],
                                                  theirs["vision"])
    labels = theirs["labels"]["M"].view(-1, 1)  # MMSA's trainer, do_train
    expected = (torch.nn.L1Loss()(pred.squeeze(1), labels.squeeze()) + gen_loss
                + args.lda_mmd * mmd_loss + missing)
    expected.backward()
    torch.manual_seed(5)
    losses = ours.compute_loss(ours(batch), batch)
    losses.loss.backward()
    torch.testing.assert_close(losses.loss, expected.detach(), rtol=1e-5, atol=0)
    assert set(losses.parts) == set(ours.loss_parts) == {"reconstruction", "mmd"}
    assert float((losses.loss - losses.task_loss).detach()) > 0.1 * float(losses.loss.detach())
    grads = mfm_from_mmsa({k: torch.zeros_like(p) if p.grad is None else p.grad
                           for k, p in reference.named_parameters()})
    ours_grads = {k: p.grad for k, p in ours.named_parameters()}
    assert grads["decoders.audio.cell.weight_hh"].abs().sum() > 0
    assert_gradients_close(ours_grads, grads)


def test_evaluation_loss_is_the_l1_term(files):
    _, _, ours, ff = build_pair(files, "mosi")
    ours.eval()
    batch = collate(ff.splits["valid"], np.arange(4), trim=False)
    with torch.no_grad():
        out = ours(batch)
        losses = ours.compute_loss(out, batch)
    l1 = (out.prediction - batch.labels).abs().mean()
    torch.testing.assert_close(losses.loss, l1)


def test_mmd_by_hand():
    """Two one-dimensional points each: k = exp(-(x - y)^2), MMD = mean k(s,s) + mean k(z,z)
    - 2 mean k(s,z)."""
    z, s = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    k = torch.exp(-torch.tensor(1.0))
    torch.testing.assert_close(gaussian_kernel(z, z), torch.tensor([[1.0, k], [k, 1.0]]))
    k4, k1 = torch.exp(-torch.tensor(4.0)), k
    expected = (2 + 2 * k4) / 4 + (2 + 2 * k1) / 4 - 2 * (1 + k4 + k1 + k1) / 4
    torch.testing.assert_close(mmd_to_sample(z, s), expected)


def test_import_refuses_foreign_keys(files):
    _, reference, _, _ = build_pair(files, "mosi")
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="Model.extra"):
        mfm_from_mmsa({**state, "Model.extra": torch.zeros(1)})


def test_presets_are_mmsas_trainer():
    config = preset("mfm", "sims")
    assert config.batch_size == 128 and config.optimizer == "adam"
    assert set(config.lr.values()) == {1e-3}  # MMSA's trainer: Adam's default learning rate
    assert set(config.weight_decay.values()) == {5e-3}
    assert config.model["zl_size"] == 256 and config.model["mmd_weight"] == 200.0
    assert config.model["gamma2_hidden"] == 256 and config.model["fy_to_y_dropout"] == 0.7


def test_trains_and_evaluates_through_the_cli(files, tmp_path, capsys):
    from conftest import run_cli

    from msakit import api

    out = tmp_path / "run"
    sets = ["epochs=1", "stop_at_horizon=true", "batch_size=4", "text_hidden=8",
            "vision_hidden=8", "memory=8", "zl_size=8", "fl_size=8", "fy_size=8"]
    assert run_cli(["train", "--model", "mfm", "--dataset", "mosi", "--data",
                    str(files["mosi"]), "--seeds", "3", "--out", str(out), "--quiet",
                    *[x for s in sets for x in ("--set", s)]]) == 0
    assert type(api.load_checkpoint(out / "seed-3").model).name == "mfm"
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-3"), "--data",
                    str(files["mosi"])]) == 0
    assert "MAE" in capsys.readouterr().out


def test_import_weights_through_the_cli_gives_mmsas_predictions(files, tmp_path):
    args, reference, ours, ff = build_pair(files, "mosi")
    model = import_through_cli(reference.eval(), "mfm", data=files["mosi"], folder=tmp_path,
                               sets=ours.config.to_dict())
    theirs, batch = batches(args, ff, "test", [0, 1, 2, 3])
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])[0].view(-1)
        torch.testing.assert_close(model(batch).prediction, expected, atol=1e-4, rtol=0)
