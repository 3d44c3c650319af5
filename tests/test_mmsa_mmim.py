"""msakit's MMIM against MMSA's own (the ``mmsa`` package): the same weights give the same
predictions, and the same training steps (MMSA's trainer code) the same losses and gradients.

MMSA's model is built from MMSA's own configuration (``config_regression.json``) with a random
1-layer BERT of width 768 saved to a temporary folder; its data come from MMSA's data loader
reading the same synthetic MMSA file that msakit reads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_bert, write_short_synthetic

MMSA = pytest.importorskip("MMSA")

from MMSA.config import get_config_regression  # noqa: E402
from MMSA.data_loader import MMDataset  # noqa: E402
from MMSA.models.AMIO import AMIO  # noqa: E402
from MMSA.trains.singleTask.MMIM import MMIM as MMSATrainer  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from msakit.core.errors import MsakitError  # noqa: E402
from msakit.data.batching import collate  # noqa: E402
from msakit.data.mmsa import load_feature_file  # noqa: E402
from msakit.encoders.text import load_text_encoder  # noqa: E402
from msakit.models.base import Dims  # noqa: E402
from msakit.models.mmim import MMIM, MMIMConfig, import_mmsa  # noqa: E402
from msakit.models.registry import create_model, model_spec  # noqa: E402
from msakit.training.trainer import evaluate_model, set_dropout  # noqa: E402

BATCH = 12
VOCAB = 1000
"""A small vocabulary keeps the 768-wide BERT small; the file's token ids are taken mod 1000."""


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A random 1-layer BERT of width 768 (MMSA's MMIM reads 768-wide text) with a vocab.txt
    (MMSA's BertTextEncoder loads the tokenizer too)."""
    folder = make_tiny_bert(tmp_path_factory.mktemp("bert768"), layers=1, hidden=768,
                            vocab=VOCAB)
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    words = [special.get(i, f"w{i}") for i in range(VOCAB)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """A MOSI-shaped file; lengths of 0 become 1 (MMSA's packing refuses empty sequences), token
    ids are taken mod VOCAB, and the ``raw_text`` / ``id`` entries MMSA's loader reads are
    added."""
    path = tmp_path_factory.mktemp("mmim") / "mosi.pkl"
    write_short_synthetic(path, "mosi", (3 * BATCH, 4, 10), {"audio": 30, "vision": 20}, seed=3)
    with open(path, "rb") as f:
        data = pickle.load(f)
    for split in data.values():
        for key in ("audio_lengths", "vision_lengths"):
            split[key] = [max(1, int(x)) for x in split[key]]
        split["text_bert"][:, 0] %= VOCAB
        n = len(split["regression_labels"])
        split.setdefault("raw_text", np.array(["text"] * n, dtype=object))
        split.setdefault("id", np.array([f"clip_{i}" for i in range(n)], dtype=object))
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def mmsa_config(data_file: Path, bert_dir: Path, **changes):
    config = get_config_regression("mmim", "mosi")
    config.update(featurePath=str(data_file), pretrained=str(bert_dir), custom_feature=None,
                  feature_T=None, feature_A=None, feature_V=None, train_mode="regression",
                  device=torch.device("cpu"), **changes)
    return config


def mmsa_loader(config, mode: str) -> DataLoader:
    dataset = MMDataset(config, mode=mode)  # MMSA's data loader, also sets feature_dims
    return DataLoader(dataset, batch_size=BATCH, shuffle=False)


def build_pair(data_file: Path, bert_dir: Path, **mmsa_changes):
    """(MMSA's AMIO, msakit's MMIM with MMSA's weights, the loaded file, MMSA's config), dropout
    0; ``mmsa_changes`` are MMSA config entries, mapped to msakit's names by ``MMSA_NAMES``."""
    config = mmsa_config(data_file, bert_dir, **mmsa_changes)
    mmsa_loader(config, "train")  # feature_dims from the file, as MMSA's run does
    torch.manual_seed(0)
    theirs = AMIO(config)
    features = load_feature_file(data_file)
    ours_config = {MMSA_NAMES[k]: v for k, v in mmsa_changes.items()}
    ours = create_model("mmim", ours_config, Dims.of(features), load_text_encoder(str(bert_dir)))
    ours.load_state_dict(model_spec("mmim").imports["mmsa"](theirs.state_dict(), ours))
    set_dropout(theirs, 0.0)
    set_dropout(ours, 0.0)
    return theirs, ours, features, config


MMSA_NAMES = {"add_va": "add_va", "cpc_layers": "cpc_layers", "n_layer": "rnn_layers"}


@pytest.fixture(scope="module")
def pair(data_file, bert_dir):
    return build_pair(data_file, bert_dir)


def test_eval_predictions_equal_mmsa(pair):
    theirs, ours, features, config = pair
    theirs.eval()
    with torch.no_grad():
        expected = torch.cat([
            theirs(b["text"], (b["audio"], b["audio_lengths"]),
                   (b["vision"], b["vision_lengths"]))["M"].squeeze(-1)
            for b in mmsa_loader(config, "test")
        ]).numpy()
    result = evaluate_model(ours, features.splits["test"], dataset="mosi", batch_size=4)
    np.testing.assert_allclose(result.predictions, expected, rtol=0, atol=1e-4)
    assert np.ptp(expected) > 1e-3  # predictions differ between samples


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()
            if p.grad is not None}


def _compare_grads(theirs, ours) -> None:
    """Every gradient within 1e-5 of its largest entry; gradients that are zero in exact
    arithmetic (BERT's key biases) are compared against 1e-3 of the model's largest."""
    mapped = import_mmsa(_grads(theirs))
    got = _grads(ours)
    assert mapped.keys() == got.keys()
    overall = max(float(v.abs().max()) for v in mapped.values())
    assert overall > 0
    for key, value in mapped.items():
        scale = max(float(value.abs().max()), 1e-3 * overall)
        assert float((got[key] - value).abs().max()) <= 1e-5 * scale, key


def _our_pass(ours, features, phase: str) -> float:
    """msakit's steps over the train split in MMSA's order: the loss MMSA's trainer reports
    (sum of batch losses x batch sizes / samples); gradients of the last batch stay."""
    split = features.splits["train"]
    ours.train()
    ours.start_phase(phase)
    total = 0.0
    for start in range(0, len(split), BATCH):
        batch = collate(split, np.arange(start, min(start + BATCH, len(split))))
        losses = ours.compute_loss(ours(batch), batch)
        ours.zero_grad(set_to_none=True)
        losses.loss.backward()
        total += float(losses.loss.detach()) * len(batch.labels)
    return total / len(split)


def _their_trainer(theirs, config) -> MMSATrainer:
    """MMSA's trainer with learning rate 0 (the weights stay) and no clipping in effect."""
    trainer = MMSATrainer(copy.copy(config))
    trainer.args.update(grad_clip=1e9, train_samples=3 * BATCH)
    trainer.model = theirs
    params = list(theirs.parameters())
    trainer.optimizer_mmilb = torch.optim.Adam(params, lr=0.0)
    trainer.optimizer_main = torch.optim.Adam(params, lr=0.0)
    return trainer


@pytest.mark.parametrize("phase", ["mmilb", "main"])
def test_training_pass_loss_and_gradients_equal_mmsa(pair, phase):
    """MMSA's train_mmilb / train_others over three batches: the main pass's third batch uses
    the memory's entropy term (mem_size 1)."""
    theirs, ours, features, config = pair
    trainer = _their_trainer(theirs, config)
    loader = {"train": mmsa_loader(config, "train")}
    if phase == "mmilb":
        expected = trainer.train_mmilb(loader)
    else:
        expected, _, _ = trainer.train_others(loader)
    got = _our_pass(ours, features, phase)
    assert got == pytest.approx(expected, rel=1e-5)
    _compare_grads(theirs, ours)


def test_import_refuses_a_foreign_or_misshapen_state(pair):
    theirs, ours, _, _ = pair
    state = theirs.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.extra"):
        import_mmsa({**state, "Model.extra": torch.zeros(1)})
    bad = dict(state)
    bad["Model.fusion_prj.linear_3.weight"] = torch.zeros(2, 128)
    with pytest.raises(MsakitError, match="shapes differ Model.fusion_prj.linear_3.weight"):
        import_mmsa(bad, ours)
    del bad["Model.fusion_prj.linear_3.weight"]
    with pytest.raises(MsakitError, match="no entry for msakit's fusion.linear_3.weight"):
        import_mmsa(bad, ours)


def test_trainer_runs_the_two_passes_with_their_own_optimizers(data_file, tiny_bert, tmp_path):
    """The generic Trainer: each epoch the mmilb pass steps only the MMILB parameters (over
    ceil(fraction x n) batches), then the main pass every other parameter, with Adam."""
    from msakit.config import RunConfig
    from msakit.training.trainer import Trainer

    features = load_feature_file(data_file)
    torch.manual_seed(0)
    model = MMIM(MMIMConfig(mmilb_fraction=0.5), Dims.of(features),
                 load_text_encoder(str(tiny_bert)))
    config = RunConfig(model_name="mmim", dataset="mosi", batch_size=BATCH, epochs=1,
                       schedule="constant", warmup=0.0, grad_clip=1.0, seeds=[1],
                       optimizer="adam")
    trainer = Trainer(model, config, features.splits["train"], features.splits["valid"],
                      seed=1, quiet=True, log_steps=tmp_path / "steps.jsonl", run_dir=tmp_path)
    snapshots: dict[str, dict[str, torch.Tensor]] = {}
    start_phase = model.start_phase

    def recording(name: str) -> None:
        snapshots[name] = {k: p.detach().clone() for k, p in model.named_parameters()}
        start_phase(name)

    model.start_phase = recording
    trainer.fit()
    assert [p.name for p in trainer.prepared.phases] == ["mmilb", "main"]
    assert all(type(o) is torch.optim.Adam for o in trainer.prepared.optimizers.values())
    # MMSA decays every BERT parameter: no no-decay group for the text encoder.
    names = [g["name"] for o in trainer.prepared.optimizers.values() for g in o.param_groups]
    assert sorted(names) == ["audio", "mmilb", "other", "text", "vision"]
    end = {k: p.detach().clone() for k, p in model.named_parameters()}

    def changed(a, b) -> set[str]:
        return {k for k in a if not torch.equal(a[k], b[k])}

    mmilb_names = {k for k in end if k.startswith("mi_")}
    # entropy_prj feeds only H, which only the main pass computes, whose optimizer does not
    # step MMILB parameters: as in MMSA, it keeps its initial values.
    moved = {k for k in mmilb_names if ".entropy_prj." not in k}
    assert changed(snapshots["mmilb"], snapshots["main"]) == moved
    main_changed = changed(snapshots["main"], end)
    assert main_changed and not main_changed & mmilb_names
    assert any(k.startswith("text_encoder.") for k in main_changed)
    lines = (tmp_path / "steps.jsonl").read_text().splitlines()
    phases = [json.loads(line)["phase"] for line in lines]
    assert phases == ["mmilb"] * 2 + ["main"] * 3  # 3 batches, mmilb over ceil(0.5 x 3)
    record = trainer.history[0]
    assert np.isfinite(record["train_mmilb_loss"]) and np.isfinite(record["train_loss"])

    # last.pt holds both optimizers; a resumed run restores each.
    again = Trainer(model, dataclasses.replace(config, epochs=2), features.splits["train"],
                    features.splits["valid"], seed=1, quiet=True, run_dir=tmp_path, resume=True)
    again.prepare()
    assert again.prepared.start_epoch == 1
    for name, optimizer in trainer.prepared.optimizers.items():
        restored = again.prepared.optimizers[name].state_dict()["state"]
        for index, state in optimizer.state_dict()["state"].items():
            assert torch.equal(restored[index]["exp_avg"], state["exp_avg"]), name


def test_variant_with_vision_audio_bound_and_deeper_networks(data_file, bert_dir):
    """add_va (a third MMILB pair), two-layer CPC networks and two-layer LSTMs (MMSA reads the
    first layer's final states): the same predictions and the same main-pass gradients."""
    theirs, ours, features, config = build_pair(data_file, bert_dir, add_va=True,
                                                cpc_layers=2, n_layer=2)
    test_eval_predictions_equal_mmsa((theirs, ours, features, config))
    trainer = _their_trainer(theirs, config)
    expected, _, _ = trainer.train_others({"train": mmsa_loader(config, "train")})
    assert _our_pass(ours, features, "main") == pytest.approx(expected, rel=1e-5)
    _compare_grads(theirs, ours)
    assert any(k.startswith("mi_va.") and p.grad is not None for k, p in ours.named_parameters())
