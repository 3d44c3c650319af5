"""MCTN equals MMSA's MCTN: eval predictions, and one training step's loss (L1 and the three
translation MSEs) and gradients.

MMSA's own classes run beside msakit's on the same aligned MOSI-shaped file (MMSA configures
MCTN for MOSI only; msakit's MOSEI and SIMS presets are MOSI's values): its ``AMIO`` around
``MCTN`` from its ``config_regression.json`` (hid_dim cut to 6), its ``MMDataset``, its model's
own ``loss_all``. MMSA's ``Seq2Seq`` allocates its outputs on a hard-coded ``'cuda'`` device;
the test points that attribute at the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli
from mmsa_reference_aligned import import_through_cli, mmsa_args, write_file
from mmsa_reference_bert import assert_gradients_close, mmsa_batch, mmsa_split

from msakit import api
from msakit.core.errors import MsakitError
from msakit.data.batching import collate
from msakit.data.mmsa import load_feature_file
from msakit.models.base import Dims
from msakit.models.mctn import MCTN, MCTNConfig, mctn_from_mmsa
from msakit.models.registry import preset

pytest.importorskip("MMSA")

HIDDEN = 6


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("mmsa_mctn")
    return {
        "mosi": write_file(root / "mosi.pkl", "mosi", (8, 6, 4), frames={}, aligned=True),
        "unaligned": write_file(root / "u.pkl", "mosi", (8, 6, 4),
                                frames={"audio": 60, "vision": 40}, aligned=False),
    }


def build_pair(files):
    from MMSA.models.AMIO import AMIO

    args = mmsa_args("mctn", "mosi", data=files["mosi"], hid_dim=HIDDEN)
    torch.manual_seed(1)
    reference = AMIO(args)
    for seq2seq in (reference.Model.seq2seq1, reference.Model.seq2seq2):
        seq2seq.device = "cpu"
    ff = load_feature_file(files["mosi"], text_features=True)
    ours = MCTN(MCTNConfig(hidden=HIDDEN, max_seq_len=args.max_seq_len), Dims.of(ff))
    ours.load_state_dict(mctn_from_mmsa(reference.state_dict()))
    return args, reference, ours, ff


def batches(args, ff, split, indices):
    reference = mmsa_batch(mmsa_split(args, split), indices)
    return reference, collate(ff.splits[split], np.asarray(indices), trim=False)


def test_eval_predictions_equal_mmsa(files):
    args, reference, ours, ff = build_pair(files)
    reference.eval()
    ours.eval()
    theirs, batch = batches(args, ff, "valid", list(range(6)))
    labels = theirs["labels"]["M"].view(-1, 1)
    with torch.no_grad():
        _, expected = reference(theirs["text"], theirs["audio"], theirs["vision"], labels, None)
        got = ours(batch).prediction
    expected = expected.view(-1)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert expected.std() > 1e-4


def test_training_step_loss_and_gradients_equal_mmsa(files):
    args, reference, ours, ff = build_pair(files)
    reference.train()
    ours.train()
    theirs, batch = batches(args, ff, "train", [7, 2, 5, 0, 4, 1])
    labels = theirs["labels"]["M"].view(-1, 1)
    expected, _ = reference(theirs["text"], theirs["audio"], theirs["vision"], labels, None)
    expected.backward()  # MMSA's trainer: loss_all as the model returns it
    losses = ours.compute_loss(ours(batch), batch)
    losses.loss.backward()
    torch.testing.assert_close(losses.loss, expected.detach(), rtol=1e-5, atol=0)
    grads = mctn_from_mmsa({k: p.grad for k, p in reference.named_parameters()})
    ours_grads = {k: p.grad for k, p in ours.named_parameters()}
    assert grads["to_audio.decoder.attention.attn.weight"].abs().sum() > 0
    assert_gradients_close(ours_grads, grads)


def test_sequence_axis_time_reads_each_sample_alone(files):
    """time: a sample's prediction is the same in any batch; batch (MMSA): it is not."""
    _, _, ours, ff = build_pair(files)
    ours.eval()
    split = ff.splits["valid"]
    one, other = (collate(split, np.asarray(ix), trim=False) for ix in ([0, 1, 2], [0, 4, 5]))
    with torch.no_grad():
        assert not torch.allclose(ours(one).prediction[0], ours(other).prediction[0])
        ours.config.sequence_axis = "time"
        torch.testing.assert_close(ours(one).prediction[0], ours(other).prediction[0])
    assert ours.start_message() is None


def test_unaligned_file_pads_the_shorter_modalities(files):
    """MMSA's code needs as many steps of each modality; msakit pads the shorter ones with
    zero steps (batch axis): the same predictions as the file padded by hand."""
    ff = load_feature_file(files["unaligned"], text_features=True)
    model = MCTN(MCTNConfig(hidden=HIDDEN), Dims.of(ff)).eval()
    batch = collate(ff.splits["valid"], np.arange(3), trim=False)
    padded = batch.replace(**{
        key: torch.nn.functional.pad(x, (0, 0, 0, 50 - x.size(1)))
        for key, x in (("audio", batch.audio), ("vision", batch.vision))})
    with torch.no_grad():
        torch.testing.assert_close(model(batch).prediction, model(padded).prediction)
        model.config.sequence_axis = "time"
        assert model(batch).prediction.shape == (3,)


def test_import_checks_mmsas_aliases(files):
    _, reference, _, _ = build_pair(files)
    state = reference.state_dict()
    assert "Model.seq2seq1.decoder.attention.v.weight" in state  # one tensor, three names
    state["Model.seq2seq1.decoder.attention.v.weight"] = state["Model.attn1.v.weight"] + 1
    with pytest.raises(MsakitError, match="hold different values"):
        mctn_from_mmsa(state)
    with pytest.raises(MsakitError, match="Model.extra"):
        mctn_from_mmsa({**reference.state_dict(), "Model.extra": torch.zeros(1)})


def test_preset_and_cli(files, tmp_path, capsys):
    config = preset("mctn", "mosi")
    assert config.grad_clip == 1.0 and set(config.lr.values()) == {1e-4}
    assert config.optimizer == "adam" and config.batch_size == 32
    assert preset("mctn", "mosei").to_dict() == {**config.to_dict(), "dataset": "mosei"}
    assert preset("mctn", "sims").model["max_seq_len"] == 39
    out = tmp_path / "run"
    assert run_cli(["train", "--model", "mctn", "--dataset", "mosi", "--data",
                    str(files["mosi"]), "--seeds", "3", "--out", str(out), "--quiet",
                    "--set", "epochs=1", "--set", "stop_at_horizon=true", "--set",
                    "batch_size=4", "--set", f"hidden={HIDDEN}"]) == 0
    assert type(api.load_checkpoint(out / "seed-3").model).name == "mctn"
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-3"), "--data",
                    str(files["mosi"])]) == 0
    assert "MAE" in capsys.readouterr().out


def test_import_weights_through_the_cli_gives_mmsas_predictions(files, tmp_path):
    args, reference, _, ff = build_pair(files)
    model = import_through_cli(reference.eval(), "mctn", data=files["mosi"], folder=tmp_path,
                               sets={"hidden": HIDDEN})
    theirs, batch = batches(args, ff, "test", [0, 1, 2, 3])
    labels = theirs["labels"]["M"].view(-1, 1)
    with torch.no_grad():
        _, expected = reference(theirs["text"], theirs["audio"], theirs["vision"], labels, None)
        torch.testing.assert_close(model(batch).prediction, expected.view(-1), atol=1e-4,
                                   rtol=0)
