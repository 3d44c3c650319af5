"""TFR-Net equals MMSA's TFR_NET (``missingTask``): eval predictions, and one training step's
loss and gradients, on data with dropped positions.

MMSA's own classes run beside msakit's on the same file: its ``AMIO`` around ``TFR_NET`` from
its ``config_regression.json`` (widths cut down), its ``MMDataset`` with ``data_missing`` (its
masks, [UNK] tokens and zeroed frames), its trainer's loss (L1, plus the weighted reconstruction
from the second epoch on). msakit's side reads the same split through the run setting's data
path (:func:`msakit.data.missing.with_missing_split`, then ``collate``). The weights go MMSA ->
msakit through the spec's ``imports["mmsa"]``, and once through ``msakit import-weights``.

MMSA's TFR_NET builds its BERT from ``bert-base-uncased`` whatever its config says
(``BertTextEncoder(use_finetune=...)``); the test points it at the tiny BERT folder.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from mmsa_reference_aligned import import_through_cli, mmsa_args, write_file
from mmsa_reference_bert import make_bert_768, mmsa_batch, mmsa_split

from msakit.core.errors import MsakitError
from msakit.data.batching import collate
from msakit.data.missing import MissingRates, with_missing_split
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.losses.reconstruction import masked_reconstruction_loss
from msakit.models.base import Dims
from msakit.models.import_weights import check_mapped
from msakit.models.registry import preset
from msakit.models.tfr_net import TFR_NET, TFRNetConfig, heads_for, tfr_net_from_mmsa
from msakit.training.trainer import set_dropout

pytest.importorskip("MMSA")

RATES = MissingRates(text=0.3, audio=0.4, vision=0.5, seeds=(3, 4, 5))
TINY = {"dst_feature_dim_nheads": [8, 2], "nlevels": 1, "num_temporal_head": 5,
        "fusion_t_hid": 6, "fusion_a_hid": 4, "fusion_v_hid": 5, "fusion_gru_layers": 2,
        "cls_hidden_dim": 8}
DROPOUTS = ("text_dropout", "attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout",
            "embed_dropout", "res_dropout", "fusion_drop", "cls_dropout")
TRAIN = [7, 2, 9, 0, 4, 5]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("mmsa_tfr_net")
    return {"bert": make_bert_768(root / "bert"),
            "data": write_file(root / "mosi.pkl", "mosi", (10, 6, 4),
                               frames={"audio": 20, "vision": 15}, aligned=False)}


@pytest.fixture(scope="module")
def mmsa_bert(setup):
    """MMSA's TFR_NET module with its BERT read from the test's folder (module docstring)."""
    from MMSA.models.missingTask.TFR_NET import model as module
    from MMSA.models.subNets.BertTextEncoder import BertTextEncoder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "BertTextEncoder",
                      functools.partial(BertTextEncoder, pretrained=str(setup["bert"])))
        yield module


def config_of(args) -> TFRNetConfig:
    dim, heads = args.dst_feature_dim_nheads
    return TFRNetConfig(
        dim=dim, heads=heads, layers=args.nlevels, temporal_heads=args.num_temporal_head,
        text_dropout=args.text_dropout, kernel_text=args.conv1d_kernel_size_l,
        kernel_audio=args.conv1d_kernel_size_a, kernel_vision=args.conv1d_kernel_size_v,
        attn_dropout=args.attn_dropout, attn_dropout_audio=args.attn_dropout_a,
        attn_dropout_vision=args.attn_dropout_v, relu_dropout=args.relu_dropout,
        embed_dropout=args.embed_dropout, res_dropout=args.res_dropout,
        attn_mask=args.attn_mask, fusion_text_hidden=args.fusion_t_hid,
        fusion_audio_hidden=args.fusion_a_hid, fusion_vision_hidden=args.fusion_v_hid,
        fusion_layers=args.fusion_gru_layers, fusion_dropout=args.fusion_drop,
        head_hidden=args.cls_hidden_dim, head_dropout=args.cls_dropout,
        reconstruction=not args.without_generator,
        reconstruction_weight_text=args.weight_gen_loss[0],
        reconstruction_weight_audio=args.weight_gen_loss[1],
        reconstruction_weight_vision=args.weight_gen_loss[2],
        similarity_weight=args.weight_sim_loss,
    )


def build_pair(setup, *, dropout: float | None = None, **overrides):
    """MMSA's args, its AMIO for TFR_NET, msakit's TFR_NET with the same weights, the file."""
    from MMSA.models.AMIO import AMIO

    if dropout is not None:
        overrides = {**dict.fromkeys(DROPOUTS, dropout), **overrides}
    args = mmsa_args("tfr_net", "mosi", data=setup["data"], bert=setup["bert"],
                     missing_rate=[RATES.text, RATES.audio, RATES.vision],
                     missing_seed=list(RATES.seeds), **{**TINY, **overrides})
    mmsa_split(args, "train")  # MMSA's loader sets feature_dims[0] to BERT's width
    torch.manual_seed(1)
    reference = AMIO(args)
    ff = load_feature_file(setup["data"])
    ours = TFR_NET(config_of(args), Dims.of(ff), load_text_encoder(str(setup["bert"])))
    ours.load_state_dict(check_mapped(tfr_net_from_mmsa(reference.state_dict()), ours, "test"))
    if dropout is not None:
        set_dropout(reference, dropout)
        set_dropout(ours, dropout)
    return args, reference, ours, ff


def batches(args, ff, split, indices):
    """MMSA's batch of ``indices`` (its ``data_missing`` inputs) and msakit's, through the
    missing-modality data path."""
    theirs = mmsa_batch(mmsa_split(args, split), indices)
    part = with_missing_split(ff.splits[split], RATES)
    return theirs, collate(part, np.asarray(indices), trim=False)


def run_mmsa(reference, theirs):
    """MMSA's forward as its trainer calls it: (prediction (B, 1), weighted reconstruction)."""
    return reference((theirs["text"], theirs["text_m"], theirs["text_missing_mask"]),
                     (theirs["audio"], theirs["audio_m"], theirs["audio_mask"],
                      theirs["audio_missing_mask"]),
                     (theirs["vision"], theirs["vision_m"], theirs["vision_mask"],
                      theirs["vision_missing_mask"]))


def test_eval_predictions_equal_mmsa(setup, mmsa_bert):
    args, reference, ours, ff = build_pair(setup)
    reference.eval()
    ours.eval()
    theirs, batch = batches(args, ff, "valid", list(range(6)))
    assert (batch.text[:, 0] == 100).any() and batch.kept["audio"].min() == 0
    with torch.no_grad():
        expected = run_mmsa(reference, theirs)[0].view(-1)
        got = ours(batch).prediction
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert expected.std() > 1e-4  # not a constant output that any model would match


@pytest.mark.parametrize("epoch", [0, 1])
def test_training_step_loss_and_gradients_equal_mmsa(setup, mmsa_bert, epoch):
    """MMSA's trainer: L1 in the first epoch, L1 + the weighted reconstruction after it."""
    args, reference, ours, ff = build_pair(setup, dropout=0.0)
    reference.train()
    ours.train()
    ours.on_epoch_start(epoch)
    theirs, batch = batches(args, ff, "train", TRAIN)
    prediction, reconstruction = run_mmsa(reference, theirs)
    task = torch.nn.L1Loss()(prediction, theirs["labels"]["M"].view(-1, 1))
    expected = task + reconstruction if epoch > 0 else task
    expected.sum().backward()
    losses = ours.compute_loss(ours(batch), batch)
    losses.loss.backward()
    torch.testing.assert_close(losses.loss, expected.detach().reshape(()), rtol=1e-5, atol=0)
    weights = args.weight_gen_loss
    weighted = sum(w * losses.parts[f"reconstruction_{m}"]
                   for w, m in zip(weights, ("text", "audio", "vision"), strict=True))
    torch.testing.assert_close(weighted.detach(), reconstruction.detach().reshape(()),
                               rtol=1e-5, atol=0)
    # Entries no loss reads (BERT's pooler; the generators in the first epoch): zeros.
    theirs_grads = tfr_net_from_mmsa({k: torch.zeros_like(p) if p.grad is None else p.grad
                                      for k, p in reference.named_parameters()})
    ours_grads = {k: torch.zeros_like(p) if p.grad is None else p.grad
                  for k, p in ours.named_parameters()}
    assert theirs_grads["text_encoder.embeddings.word_embeddings.weight"].abs().sum() > 0
    assert (theirs_grads["generator.vision.weight"].abs().sum() > 0) == (epoch > 0)
    assert set(ours_grads) == set(theirs_grads)
    for name, grad in theirs_grads.items():
        # Each tensor to 1e-5 of its largest entry, 1e-6 absolute: a few gradients are sums of
        # terms that cancel through the head's BatchNorm (the fusion's biases, ~1e-3) or zero
        # in exact arithmetic (BERT's key biases); the largest ones (~1e4, the memory
        # encoders' LayerNorms over zeroed frames) would make a shared floor check nothing.
        error = float((ours_grads[name] - grad).abs().max())
        assert error <= 1e-5 * float(grad.abs().max()) + 1e-6, (name, error)


def test_reconstruction_loss_is_mmsas(setup):
    """msakit's loss function against MMSA's RECLoss, every recloss_type; nothing dropped:
    the smooth L1 part is 0 and CMD's square roots of 1e-12 remain (MMSA's eps)."""
    from MMSA.models.missingTask.TFR_NET.model import RECLoss

    torch.manual_seed(0)
    pred, target = torch.randn(3, 7, 4), torch.randn(3, 7, 4)
    mask = (torch.rand(3, 7) > 0.5).float()
    for kind, theirs in (("combine", "combine"), ("smooth_l1", "SmoothL1Loss"),
                         ("mse", "MSELoss"), ("cmd", "cmd")):
        args = mmsa_args("tfr_net", "mosi", data=setup["data"], recloss_type=theirs)
        expected = RECLoss(args)(pred, target, mask)
        got = masked_reconstruction_loss(pred, target, mask, kind=kind, sim_weight=5.0)
        torch.testing.assert_close(got, expected.reshape(()), rtol=1e-6, atol=0)
    none = masked_reconstruction_loss(pred, target, torch.zeros(3, 7), kind="smooth_l1")
    assert float(none) == 0.0
    cmd = masked_reconstruction_loss(pred, target, torch.zeros(3, 7), kind="cmd")
    assert float(cmd) == pytest.approx(3 * 1e-6 / 1e-4)


def test_import_names_bad_entries(setup, mmsa_bert):
    _, reference, ours, _ = build_pair(setup)
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.extra"):
        tfr_net_from_mmsa({**state, "Model.extra": torch.zeros(1)})
    del state["Model.fusion_subnet.Model.audio_encoder.cnn.weight"]
    with pytest.raises(MsakitError, match="no entry for msakit's fusion.audio.cnn.weight"):
        check_mapped(tfr_net_from_mmsa(state), ours, "w.pth")


def test_import_weights_through_the_cli_gives_mmsas_predictions(setup, mmsa_bert, tmp_path):
    args, reference, ours, ff = build_pair(setup)
    c = ours.config
    sets = {k: getattr(c, k) for k in ("dim", "heads", "layers", "temporal_heads",
                                       "fusion_text_hidden", "fusion_audio_hidden",
                                       "fusion_vision_hidden", "fusion_layers", "head_hidden")}
    model = import_through_cli(reference.eval(), "tfr_net", data=setup["data"],
                               folder=tmp_path, extra=("--text-encoder", str(setup["bert"])),
                               sets=sets)
    theirs, batch = batches(args, ff, "test", [0, 1, 2, 3])
    with torch.no_grad():
        expected = run_mmsa(reference, theirs)[0].view(-1)
        torch.testing.assert_close(model(batch).prediction, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_the_preset_is_mmsas_configuration(dataset):
    """The paper preset: MMSA's config_regression.json ("tfr_net") and its data sets' missing
    rates and seeds (datasetCommonParams)."""
    from MMSA.config import get_config_regression

    theirs = get_config_regression("tfr_net", dataset)
    ours = preset("tfr_net", dataset)
    assert (ours.batch_size, ours.clip_value, ours.early_stop, ours.plateau_patience) == (
        theirs["batch_size"], theirs["grad_clip"], theirs["early_stop"], theirs["patience"])
    assert ours.lr["text"] == theirs["learning_rate_bert"]
    assert {ours.lr[g] for g in ("audio", "vision", "other")} == {theirs["learning_rate_other"]}
    assert ours.weight_decay["text"] == theirs["weight_decay_bert"]
    assert ours.weight_decay["other"] == theirs["weight_decay_other"]
    assert [ours.missing_rate[m] for m in ("text", "audio", "vision")] == theirs["missing_rate"]
    assert [ours.missing_seed] * 3 == theirs["missing_seed"]
    m = ours.model
    assert [m.reconstruction_weight_text, m.reconstruction_weight_audio,
            m.reconstruction_weight_vision] == theirs["weight_gen_loss"]
    assert (m.layers, m.embed_dropout, m.head_dropout, m.temporal_heads) == (
        theirs["nlevels"], theirs["embed_dropout"], theirs["cls_dropout"],
        theirs["num_temporal_head"])
    # MMSA's heads where they divide the padded lengths (MOSI, MOSEI); SIMS's 39 / 400 / 55,
    # where MMSA's code cannot be built, take the largest divisor up to 25
    heads = [heads_for(length, m.temporal_heads) for length in theirs["seq_lens"]]
    assert heads == ([13, 25, 11] if dataset == "sims" else [25, 25, 25])
    assert (ours.optimizer, ours.schedule, ours.text_encoder) == (
        "adam", "plateau", theirs["pretrained"])
