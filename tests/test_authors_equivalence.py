"""msakit against the authors' CLGSI code, and the switches that reproduce their computation.

The golden fixture ``tests/fixtures/clgsi_authors/`` was written by
``tests/fixtures/make_clgsi_authors_fixture.py`` running the authors' own code (see its
docstring): a random-weight authors' model (tiny BERT), its saved state dict, a small MMSA file,
its eval-mode predictions, and one training step's loss and gradients with dropout 0. This file
reads only the fixture.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from torch import nn

from msakit import api
from msakit.config import RunConfig
from msakit.config.datasets import dataset_spec
from msakit.core.errors import MsakitError
from msakit.data.batching import Batch, collate
from msakit.data.mmsa import load_feature_file
from msakit.encoders.sequence import SequenceEncoder, lengths_to_mask
from msakit.encoders.text import bert_inputs, load_text_encoder
from msakit.evaluation.metrics import compute_metrics
from msakit.models.base import Dims, ModelOutput
from msakit.models.clgsi import CLGSI_AUTHORS, CLGSIConfig
from msakit.models.import_weights import SOURCES
from msakit.models.registry import create_model, preset
from msakit.training.trainer import Trainer, set_dropout

FIXTURE = Path(__file__).parent / "fixtures" / "clgsi_authors"
META = json.loads((FIXTURE / "fixture.json").read_text())
LOSS_CASES = torch.load(FIXTURE / "loss_cases.pt", weights_only=True)["cases"]
"""The authors' contrastive loss on each data set's labels
(``tests/fixtures/make_clgsi_authors_loss_fixture.py``)."""


def import_argv(out: Path, weights: Path = FIXTURE / "authors_state.pth",
                settings: list[str] | None = None) -> list[str]:
    sets = META["msakit_set"] if settings is None else settings
    return [
        "import-weights", "--from", "clgsi-authors", "--model", "clgsi",
        "--dataset", META["dataset"], "--weights", str(weights),
        "--data", str(FIXTURE / "data.npz"), "--text-encoder", str(FIXTURE / "text_encoder"),
        "--out", str(out), *[x for s in sets for x in ("--set", s)],
    ]


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FIXTURE / "expected.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "authors.pt"
    assert run_cli(import_argv(out)) == 0
    return out


# --------------------------------------------------------------------------- the proof
def test_predict_and_evaluate_give_the_authors_predictions(imported, expected, tmp_path, capsys):
    csv_path = tmp_path / "predictions.csv"
    assert run_cli(["predict", "--checkpoint", str(imported), "--data",
                    str(FIXTURE / "data.npz"), "--split", "test", "--out", str(csv_path)]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    ours = np.array([float(r["prediction"]) for r in rows])
    theirs = expected["test_predictions"].numpy().astype(np.float64)
    assert [r["id"] for r in rows] == [f"test_{i}" for i in range(len(theirs))]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    assert np.ptp(theirs) > 1.0  # the fixture's predictions differ between samples

    labels = np.array([float(r["label"]) for r in rows], dtype=np.float32)
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(imported), "--data",
                    str(FIXTURE / "data.npz"), "--split", "test"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # `msakit evaluate`
    reference = compute_metrics(theirs.astype(np.float32), labels, "mosi")
    assert metrics.keys() == reference.keys()
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key


def test_the_checkpoint_carries_the_authors_configuration(imported):
    ckpt = api.load_checkpoint(imported)
    model = ckpt.config.model
    for key, value in CLGSI_AUTHORS["mosi"]["model"].items():
        assert model[key] == value, key
    assert ckpt.config.sampler == "random" and ckpt.config.seeds == [2222, 3333, 4444]
    assert ckpt.config.lr["audio"] == 5e-3 and ckpt.config.lr["vision"] == 1e-3
    assert model["common_dim"] == 16 and ckpt.state["imported_from"]["source"] == "clgsi-authors"


def test_one_training_step_gives_the_authors_loss_and_gradients(imported, expected):
    ckpt = api.load_checkpoint(imported)
    split = load_feature_file(FIXTURE / "data.npz").splits["train"]
    config = RunConfig.from_dict(ckpt.config.to_dict())
    config.dropout, config.batch_size, config.reuse_memory = 0.0, len(split), False
    model = ckpt.model
    trainer = Trainer(model=model, config=config, train=split, valid=split, quiet=True)
    trainer.prepare()
    stats = trainer.train_epoch(0, max_steps=1)  # the whole train split as one batch

    for ours, key in (("loss", "loss"), ("task_loss", "task_loss"),
                      ("contrastive_loss", "contrastive_loss")):
        assert stats[ours] == pytest.approx(float(expected[key]), rel=1e-5), ours
    theirs = SOURCES["clgsi-authors"].convert(expected["grads"], model.config)
    ours = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert ours.keys() == theirs.keys()
    # The reference is float64; msakit's step runs in float32. All gradients together agree to
    # 1e-5 relative; each tensor to 1e-5 of its own norm plus 1e-6 of the whole gradient's
    # norm (float32 rounding of sums of cancelling terms; gradients that are zero in exact
    # arithmetic, such as BERT's key biases, are rounding noise).
    total = torch.cat([g.flatten() for g in theirs.values()]).norm()
    diff = torch.cat([(ours[n].double() - g).flatten() for n, g in theirs.items()]).norm()
    assert diff <= 1e-5 * total
    for name, grad in theirs.items():
        error = float((ours[name].double() - grad).norm())
        assert error <= 1e-5 * float(grad.norm()) + 1e-6 * float(total), (name, error)


def test_in_float64_the_step_is_the_authors_to_rounding(imported, expected):
    """Without float32 rounding the agreement is ~1e-7: the same computation, not a near one.
    (The loss's pair weights come from float32 labels in their code, float64 ones here.)"""
    model = api.load_checkpoint(imported).model.double()
    set_dropout(model, 0.0)
    model.train()
    split = load_feature_file(FIXTURE / "data.npz").splits["train"]
    batch = collate(split, np.arange(len(split)), trim=False)
    batch = batch.replace(audio=batch.audio.double(), vision=batch.vision.double())
    losses = model.compute_loss(model(batch), batch)
    losses.loss.backward()
    assert float(losses.loss.detach()) == pytest.approx(float(expected["loss"]), rel=1e-6)
    theirs = SOURCES["clgsi-authors"].convert(expected["grads"], model.config)
    total = float(torch.cat([g.flatten() for g in theirs.values()]).norm())
    for name, param in model.named_parameters():
        if param.grad is None:
            assert name not in theirs
            continue
        error = float((param.grad - theirs[name]).norm())
        assert error <= 2e-6 * float(theirs[name].norm()) + 1e-9 * total, (name, error)


# --------------------------------------------------------------------------- bad input
def _state() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE / "authors_state.pth", weights_only=True)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("Model.post_fusion_layer_3.weight"), "no entry for msakit's head.net.5"),
    (lambda s: s.pop("Model.post_text_layer_2.weight"), "missing keys Model.post_text_layer_2"),
    (lambda s: s.update({"Model.extra.weight": torch.zeros(2)}), "unexpected keys Model.extra"),
    (lambda s: s.update({"Model.audio_model.position_embbeding.pe": torch.ones(1, 6, 3)}),
     "not the sinusoidal position table"),
])
def test_a_bad_state_dict_is_one_error_line(tmp_path, capsys, change, message):
    state = _state()
    change(state)
    weights = tmp_path / "bad.pth"
    torch.save(state, weights)
    out = tmp_path / "x.pt"
    assert run_cli(import_argv(out, weights)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_a_configuration_that_does_not_fit_names_the_shapes(tmp_path, capsys):
    assert run_cli(import_argv(tmp_path / "x.pt", settings=[])) == 2  # preset widths: 64
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "shapes differ" in err and "Model.post_" in err


def test_not_a_state_dict(tmp_path, capsys):
    weights = tmp_path / "list.pth"
    torch.save([1, 2], weights)
    assert run_cli(import_argv(tmp_path / "x.pt", weights)) == 2
    assert "not a state dict" in capsys.readouterr().err


# --------------------------------------------------------------------------- presets
def test_paper_defaults_are_unchanged():
    defaults = CLGSIConfig()
    assert defaults.encoder_mask is True
    assert defaults.common_frame == "last_valid"
    assert defaults.subnet_pool == "valid"
    assert defaults.clone_encoder_layers is False
    assert defaults.variant == "paper"


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_authors_overrides_apply_to_every_dataset(dataset):
    paper = preset("clgsi", dataset)
    authors = preset("clgsi", dataset, "authors")
    assert authors.preset == "authors"
    assert set(CLGSI_AUTHORS[dataset]) == {"run", "model"}
    assert authors.model["variant"] == "official" and authors.model["label_scale"] == 3.0
    assert authors.sampler == "random" and authors.seeds == [2222, 3333, 4444]
    assert authors.fractional_warmup and not authors.stop_at_horizon
    assert not paper.fractional_warmup and paper.stop_at_horizon
    assert not authors.model["encoder_mask"] and authors.model["clone_encoder_layers"]
    for key in CLGSI_AUTHORS[dataset]["model"]:
        assert key in paper.model, key  # overrides name existing keys only
    expected_dims = {"mosi": 64, "mosei": 128, "sims": 128}[dataset]
    assert authors.model["common_dim"] == authors.model["specific_dim"] == expected_dims
    assert paper.model["encoder_mask"]  # the paper preset itself is untouched


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c["name"] for c in LOSS_CASES])
def test_the_authors_preset_builds_the_authors_loss_on_each_data_sets_labels(case, encoder):
    """``--preset authors --dataset D``: the model built from the preset (registry ->
    ``model.contrastive``) computes the authors' ``contrastive_loss`` on D's labels, SIMS v2's
    unscaled labels (H = 1) included."""
    shape = dataset_spec(case["dataset"]).shape
    config = preset("clgsi", case["dataset"], "authors")
    dims = Dims(audio=shape.audio_dim, vision=shape.vision_dim)
    model = create_model("clgsi", config.model, dims, copy.deepcopy(encoder))
    feats, labels = (case["text"], case["audio"], case["vision"]), case["labels"]
    assert feats[0].dtype == labels.dtype == torch.float32
    assert feats[0].shape[1] == config.model["common_dim"]
    # A training step's path: float32 representations and labels through compute_loss.
    output = ModelOutput(prediction=torch.zeros_like(labels),
                         representations=dict(zip(("text", "audio", "vision"), feats, strict=True)))
    unread = ("text", "audio", "audio_lengths", "vision", "vision_lengths")  # the loss's input
    batch = Batch.from_dict({"labels": labels, **{k: torch.empty(0) for k in unread}})
    losses = model.compute_loss(output, batch)
    assert float(losses.parts["contrastive"]) == pytest.approx(case["expected"], rel=1e-4)
    assert float(losses.loss) == pytest.approx(
        float(labels.abs().mean()) + config.model["gamma"] * case["expected"], rel=1e-6)
    # Float64 features, float32 labels (as the reference ran): the same computation.
    exact = model.contrastive(*(x.double() for x in feats), labels)
    assert float(exact) == pytest.approx(case["expected"], rel=1e-9)


def test_the_loss_cases_tell_the_label_mappings_apart():
    """On SIMS v2 the authors' loss with H = 3 is far from theirs with simsv2's unscaled labels,
    and the boundary case is far from (y + 1) / 1 - 1: a built loss with either mapping fails
    the test above."""
    by_name = {case["name"]: case for case in LOSS_CASES}
    assert {c["dataset"] for c in LOSS_CASES} == {"mosi", "mosei", "sims", "simsv2"}
    for name in ("simsv2", "simsv2-boundary"):
        case = by_name[name]
        assert abs(case["expected_h3"] / case["expected"] - 1) > 0.5, name
    boundary = by_name["simsv2-boundary"]
    assert abs(boundary["expected_plus_minus_one"] / boundary["expected"] - 1) > 0.5


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("dataset", ["mosi", "sims", "simsv2"])
def test_the_built_loss_uses_the_configured_label_scale_under_both_variants(
        encoder, variant, dataset):
    config = preset("clgsi", dataset).model
    model = build(encoder, variant=variant, label_scale=config["label_scale"])
    assert model.contrastive.label_scale == config["label_scale"]
    assert model.contrastive.variant == variant
    assert build(encoder, variant=variant, label_scale=2.5).contrastive.label_scale == 2.5


# --------------------------------------------------------------------------- the switches
DIMS = Dims(audio=5, vision=8, text_len=10, audio_len=12, vision_len=9)
SMALL = {"common_dim": 8, "specific_dim": 8, "head_dim": 8, "feedforward": 16,
         "vision_heads": 2}


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return load_text_encoder(str(tiny_bert))


def build(encoder, **overrides):
    torch.manual_seed(0)
    config = {**preset("clgsi", "mosi").model, **SMALL, **overrides}
    model = create_model("clgsi", config, DIMS, copy.deepcopy(encoder))
    return model.eval()


def full_batch() -> Batch:
    """4 samples at the full padded lengths, padding zero, short and empty sequences."""
    g = torch.Generator().manual_seed(3)
    b = 4
    t_len = torch.tensor([10, 4, 6, 2])
    mask = (torch.arange(DIMS.text_len) < t_len[:, None]).long()
    ids = torch.randint(1000, 2000, (b, DIMS.text_len), generator=g) * mask
    a_len, v_len = torch.tensor([12, 3, 7, 0]), torch.tensor([2, 9, 0, 5])
    audio = torch.randn(b, DIMS.audio_len, DIMS.audio, generator=g)
    vision = torch.randn(b, DIMS.vision_len, DIMS.vision, generator=g)
    audio *= lengths_to_mask(a_len, DIMS.audio_len).unsqueeze(-1)
    vision *= lengths_to_mask(v_len, DIMS.vision_len).unsqueeze(-1)
    return Batch.from_dict(
        {"text": torch.stack([ids, mask, torch.zeros_like(ids)], 1), "audio": audio,
         "audio_lengths": a_len, "vision": vision, "vision_lengths": v_len,
         "labels": torch.tensor([-2.0, 0.4, 1.0, 2.8]), "index": torch.arange(b)})


def stock_encoder(ours: SequenceEncoder) -> nn.TransformerEncoder:
    """PyTorch's own encoder with our encoder's weights."""
    layer = ours.layers[0]
    stock_layer = nn.TransformerEncoderLayer(
        layer.linear1.in_features, layer.self_attn.num_heads, layer.linear1.out_features,
        dropout=0.0, batch_first=True,
    )
    stock = nn.TransformerEncoder(stock_layer, len(ours.layers), enable_nested_tensor=False)
    for k, mine in enumerate(ours.layers):
        missing = stock.layers[k].load_state_dict(mine.state_dict(), strict=True)
        assert not missing.missing_keys
    return stock.eval()


def test_unmasked_encoder_is_the_stock_encoder_over_the_padded_sequence(encoder):
    model = build(encoder, encoder_mask=False)
    batch = full_batch()
    enc = model.audio_encoder
    with torch.no_grad():
        x = batch.audio
        full = torch.full_like(batch.audio_lengths, x.size(1))
        ours, _ = enc(x, full, full_output=True)
        theirs = stock_encoder(enc)(enc.positions(x))
        masked, _ = enc(x, batch.audio_lengths)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    valid = lengths_to_mask(batch.audio_lengths, x.size(1))
    # with the padding attended, valid frames change too
    assert not torch.allclose(ours[valid], masked[valid], atol=1e-3)


def test_last_padded_reads_index_minus_one(encoder):
    batch = full_batch()
    paper = build(encoder, encoder_mask=False)
    authors = build(encoder, encoder_mask=False, common_frame="last_padded")
    with torch.no_grad():
        reps_valid = paper(batch).representations
        reps_padded = authors(batch).representations
        full = torch.full_like(batch.vision_lengths, DIMS.vision_len)
        hidden, _ = authors.vision_encoder(batch.vision, full, full_output=True)
        expected = authors.project_vision(hidden[:, -1])
    torch.testing.assert_close(reps_padded["vision"], expected)
    short = batch.vision_lengths < DIMS.vision_len
    full_rows = ~short
    assert not torch.allclose(reps_padded["vision"][short], reps_valid["vision"][short])
    torch.testing.assert_close(reps_padded["vision"][full_rows], reps_valid["vision"][full_rows])


def test_subnet_padded_pool_averages_every_position(encoder):
    batch = full_batch()
    model = build(encoder, subnet_pool="padded")
    paper = build(encoder)
    assert model.reads_padding() and not paper.reads_padding()
    with torch.no_grad():
        reps = model(batch).representations
        text_h = model.text_encoder(**bert_inputs(batch.text)).last_hidden_state
        sub = model.subnet_text
        expected = torch.sigmoid(sub.up(torch.relu(sub.down(text_h.mean(dim=1)))))
        masked = paper(batch).representations
    torch.testing.assert_close(reps["specific_text"], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(reps["specific_text"], masked["specific_text"], atol=1e-4)
    # the audio Subnet averages the full padded output (every frame computed), also when
    # the encoder masks the padding
    with torch.no_grad():
        hidden, _ = model.audio_encoder(batch.audio, batch.audio_lengths, full_output=True)
        sub = model.subnet_audio
        expected = torch.sigmoid(sub.up(torch.relu(sub.down(hidden.mean(dim=1)))))
    torch.testing.assert_close(reps["specific_audio"], expected, rtol=1e-5, atol=1e-6)


def test_full_output_keeps_valid_frames_and_completes_padded_ones(encoder):
    model = build(encoder)
    batch = full_batch()
    enc = model.vision_encoder
    lengths = batch.vision_lengths
    with torch.no_grad():
        trimmed, mask = enc(batch.vision, lengths)
        full, _ = enc(batch.vision, lengths, full_output=True)
        x = enc.positions(batch.vision)
        padding = ~mask
        padding[:, 0] &= lengths > 0  # an empty sequence attends to its frame 0
        stock = stock_encoder(enc)(x, src_key_padding_mask=padding)
    torch.testing.assert_close(full[mask], trimmed[mask])
    torch.testing.assert_close(full, stock, rtol=1e-5, atol=1e-5)


def test_cloned_encoder_layers_start_equal(encoder):
    model = build(encoder, clone_encoder_layers=True)
    paper = build(encoder)
    for enc in (model.audio_encoder, model.vision_encoder):
        first, second = (dict(layer.named_parameters()) for layer in enc.layers)
        assert all(torch.equal(first[k], second[k]) for k in first)
        assert first["linear1.weight"].data_ptr() != second["linear1.weight"].data_ptr()
    p_first, p_second = (dict(layer.named_parameters()) for layer in paper.audio_encoder.layers)
    assert not torch.equal(p_first["linear1.weight"], p_second["linear1.weight"])


def test_models_that_read_padding_get_untrimmed_batches():
    split = load_feature_file(FIXTURE / "data.npz").splits["train"]
    short = (
        (split.audio_lengths < split.audio.shape[1])
        & (split.vision_lengths < split.vision.shape[1])
        & (split.text_lengths < split.text_bert.shape[2])
    )
    idx = np.flatnonzero(short)
    assert len(idx) >= 2
    trimmed, full = collate(split, idx), collate(split, idx, trim=False)
    assert full.audio.shape[1] == split.audio.shape[1] > trimmed.audio.shape[1]
    assert full.vision.shape[1] == split.vision.shape[1] > trimmed.vision.shape[1]
    assert full.text.shape[2] == split.text_bert.shape[2] > trimmed.text.shape[2]


@pytest.mark.parametrize("key, value", [("common_frame", "middle"), ("subnet_pool", "max")])
def test_unknown_switch_values_are_rejected(encoder, key, value):
    with pytest.raises(MsakitError, match=key):
        build(encoder, **{key: value})


# --------------------------------------------------------------------------- run switches
def _trainer(imported, **settings) -> Trainer:
    ckpt = api.load_checkpoint(imported)
    split = load_feature_file(FIXTURE / "data.npz").splits["train"]
    config = RunConfig.from_dict(ckpt.config.to_dict())
    config.batch_size, config.reuse_memory = 2, False
    for key, value in settings.items():
        setattr(config, key, value)
    return Trainer(model=ckpt.model, config=config, train=split, valid=split, quiet=True)


@pytest.mark.parametrize("fractional, warmup_steps", [(False, 2), (True, 2.1)])
def test_fractional_warmup(imported, fractional, warmup_steps):
    # 7 samples in batches of 2: 3 steps per epoch (the last sample joins the batch before
    # it), 7 epochs, 21 steps, warm-up 0.1 x 21
    trainer = _trainer(imported, epochs=7, warmup=0.1, fractional_warmup=fractional)
    trainer.prepare()
    assert trainer.scheduler.lr_lambdas[0](1) == pytest.approx(1 / warmup_steps)


@pytest.mark.parametrize("stop", [True, False])
def test_training_past_the_horizon_until_early_stopping(imported, stop):
    # learning rates 0: only BatchNorm's running statistics move (and settle), so early
    # stopping (2 epochs) ends the run that does not stop at the horizon
    trainer = _trainer(imported, epochs=1, early_stop=2, stop_at_horizon=stop,
                       lr=dict.fromkeys(("text", "audio", "vision", "other"), 0.0))
    trainer.fit()
    if stop:
        assert len(trainer.history) == 1 and not trainer.stopper.should_stop
    else:
        assert len(trainer.history) >= 3 and trainer.stopper.should_stop


def test_configurations_written_before_the_switches_build_the_paper_model(encoder):
    config = {**preset("clgsi", "mosi").model, **SMALL}
    for key in ("encoder_mask", "common_frame", "subnet_pool", "clone_encoder_layers"):
        del config[key]
    model = create_model("clgsi", config, DIMS, copy.deepcopy(encoder))
    assert not model.reads_padding() and model.config.common_frame == "last_valid"
