"""BERT-MAG equals MMSA's BERT_MAG: eval predictions, and one training step's loss and gradients.

MMSA's own classes run beside msakit's: its ``AMIO`` (with the AlignSubNet of
``need_model_aligned``) around ``BERT_MAG`` from its ``config_regression.json``, its
``MMDataset`` reading the same file, its trainer's L1 loss. The weights go MMSA -> msakit
through the spec's ``imports["mmsa"]``. Two files: an aligned MOSI-shaped file (MMSA's
``aligned_50.pkl`` layout, no audio/vision lengths; msakit trims its batches) and an unaligned
SIMS-shaped one (SIMS has no aligned file: both sides pool the frames to the text length).

MMSA 2.2.1's BERT_MAG predates transformers 5, so three of its calls into transformers are
given back for the test (:func:`mmsa_bert_mag`), as transformers 4 defined them: the additive
attention mask, the (absent) head mask, and weight initialisation, which is skipped (the
weights are random either way and go to msakit by the importer). MMSA's forward is unchanged.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from conftest import run_cli
from mmsa_reference_aligned import import_through_cli, mmsa_args, write_file
from mmsa_reference_bert import (
    assert_gradients_close,
    make_bert_768,
    mmsa_batch,
    mmsa_split,
    share_weights,
)

from msakit import api
from msakit.core.errors import MsakitError
from msakit.data.batching import collate
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.models.align import mmsa_avg_pool
from msakit.models.base import Dims
from msakit.models.bert_mag import (
    BERT_MAG,
    BERTMAGConfig,
    additive_mask,
    bert_mag_from_mmsa,
)
from msakit.models.registry import preset

pytest.importorskip("MMSA")


@pytest.fixture(scope="module")
def mmsa_bert_mag(setup):
    """MMSA's BERT_MAG module, runnable under transformers 5 (module docstring)."""
    from transformers import BertConfig

    module = importlib.import_module("MMSA.models.singleTask.BERT_MAG")

    def extended(self, mask, shape, device=None):
        return additive_mask(mask, self.dtype)

    def from_pretrained(cls, name, args, num_labels):
        return cls(BertConfig.from_pretrained(setup["bert"], num_labels=num_labels), args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module.MAG_BertModel, "get_extended_attention_mask", extended,
                      raising=False)
        patch.setattr(module.MAG_BertModel, "get_head_mask", lambda self, h, n: [None] * n,
                      raising=False)
        for cls in (module.MAG_BertModel, module.MAG_BertForSequenceClassification):
            patch.setattr(cls, "init_weights", lambda self: None)
        patch.setattr(module.MAG_BertForSequenceClassification, "from_pretrained",
                      classmethod(from_pretrained))
        yield module


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("mmsa_bert_mag")
    return {
        "bert": make_bert_768(root / "bert"),
        "mosi": write_file(root / "mosi.pkl", "mosi", (10, 6, 4), frames={}, aligned=True),
        "sims": write_file(root / "sims.pkl", "sims", (10, 6, 4),
                           frames={"audio": 90, "vision": 50}, aligned=False),
    }


def build_pair(setup, dataset, *, dropout: float | None = None):
    """MMSA's AMIO for BERT_MAG and msakit's BERT_MAG holding the same weights."""
    from MMSA.models.AMIO import AMIO

    args = mmsa_args("bert_mag", dataset, data=setup[dataset], bert=setup["bert"])
    ff = load_feature_file(setup[dataset])
    dims = Dims.of(ff)
    torch.manual_seed(1)
    reference = AMIO(args)
    ours = BERT_MAG(BERTMAGConfig(beta_shift=args.beta_shift, dropout=args.dropout_prob), dims,
                    load_text_encoder(str(setup["bert"])))
    share_weights(reference, ours, bert_mag_from_mmsa, dropout=dropout)
    return args, reference, ours, ff


def batches(args, ff, split, indices, trim):
    reference = mmsa_batch(mmsa_split(args, split), indices)
    return reference, collate(ff.splits[split], np.asarray(indices), trim=trim)


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_eval_predictions_equal_mmsa(setup, mmsa_bert_mag, dataset):
    args, reference, ours, ff = build_pair(setup, dataset)
    reference.eval()
    ours.eval()
    assert ours.reads_padding() == (dataset == "sims")  # the aligned file's batches are trimmed
    theirs, batch = batches(args, ff, "valid", list(range(6)), trim=not ours.reads_padding())
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])["M"].view(-1)
        got = ours(batch).prediction
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert expected.std() > 1e-4  # not a constant output that any model would match


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_training_step_loss_and_gradients_equal_mmsa(setup, mmsa_bert_mag, dataset):
    args, reference, ours, ff = build_pair(setup, dataset, dropout=0.0)
    reference.train()
    ours.train()
    theirs, batch = batches(args, ff, "train", [7, 2, 9, 0, 4, 5],
                            trim=not ours.reads_padding())
    outputs = reference(theirs["text"], theirs["audio"], theirs["vision"])["M"]
    expected = torch.nn.L1Loss()(outputs, theirs["labels"]["M"].view(-1, 1))  # MMSA's trainer
    expected.backward()
    losses = ours.compute_loss(ours(batch), batch)
    losses.loss.backward()
    torch.testing.assert_close(losses.loss, expected.detach(), rtol=1e-5, atol=0)
    grads = bert_mag_from_mmsa({k: p.grad for k, p in reference.named_parameters()})
    ours_grads = {k: p.grad for k, p in ours.named_parameters()}
    assert grads["mag.gate_audio.weight"].abs().sum() > 0
    assert_gradients_close(ours_grads, grads)


def test_aligned_file_lengths_are_the_token_counts(setup):
    """msakit reads MMSA's aligned layout: no length keys, every modality as long as the text;
    a trimmed batch has as many audio and vision frames as tokens."""
    split = load_feature_file(setup["mosi"]).splits["train"]
    tokens = split.text_bert[:, 1].sum(axis=1)
    np.testing.assert_array_equal(split.audio_lengths, tokens)
    np.testing.assert_array_equal(split.vision_lengths, tokens)
    batch = collate(split, np.arange(5), trim=True)
    assert batch.audio.shape[1] == batch.vision.shape[1] == batch.text.shape[2]


def test_avg_pool_is_mmsas_align_subnet():
    """mmsa_avg_pool: position j averages frames j, j + n, ... (the last frame repeated)."""
    x = torch.arange(7.0).view(1, 7, 1)
    expected = [(0 + 3 + 6) / 3, (1 + 4 + 6) / 3, (2 + 5 + 6) / 3]
    assert mmsa_avg_pool(x, 3).flatten().tolist() == pytest.approx(expected)
    assert mmsa_avg_pool(x, 7) is x


def test_import_refuses_foreign_keys(setup, mmsa_bert_mag):
    _, reference, _, _ = build_pair(setup, "mosi")
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="Model.extra.weight"):
        bert_mag_from_mmsa({**state, "Model.extra.weight": torch.zeros(1)})
    del state["Model.model.bert.MAG.W_hv.weight"]
    with pytest.raises(MsakitError, match="W_hv.weight"):
        bert_mag_from_mmsa(state)


def test_presets_and_cli_on_an_aligned_file(setup, tiny_bert, tmp_path, capsys):
    config = preset("bert_mag", "sims")
    assert config.text_encoder == "bert-base-chinese" and config.batch_size == 32
    assert set(config.lr.values()) == {5e-5} and config.model["dropout"] == 0.1
    assert config.optimizer == "adam" and not config.stop_at_horizon
    out = tmp_path / "run"
    assert run_cli(["train", "--model", "bert_mag", "--dataset", "mosi", "--data",
                    str(setup["mosi"]), "--text-encoder", str(tiny_bert), "--seeds", "3",
                    "--out", str(out), "--set", "epochs=1", "--set", "stop_at_horizon=true",
                    "--set", "batch_size=4", "--quiet"]) == 0
    ckpt = api.load_checkpoint(out / "seed-3")
    assert type(ckpt.model).name == "bert_mag"
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-3"), "--data",
                    str(setup["mosi"])]) == 0
    assert "MAE" in capsys.readouterr().out


def test_import_weights_through_the_cli_gives_mmsas_predictions(setup, mmsa_bert_mag, tmp_path):
    args, reference, _, ff = build_pair(setup, "mosi")
    model = import_through_cli(reference.eval(), "bert_mag", data=setup["mosi"],
                               folder=tmp_path, extra=("--text-encoder", str(setup["bert"])),
                               sets={"beta_shift": args.beta_shift,
                                     "dropout": args.dropout_prob})
    theirs, batch = batches(args, ff, "test", [0, 1, 2, 3], trim=True)
    with torch.no_grad():
        expected = reference(theirs["text"], theirs["audio"], theirs["vision"])["M"].view(-1)
        torch.testing.assert_close(model(batch).prediction, expected, atol=1e-4, rtol=0)
