"""CLGSI: building blocks, padding awareness, every ablation of the paper, learning, determinism.

Models here are small: a 2-layer, 32-wide random BERT (the ``tiny_bert`` fixture) and
d_c = d_s = head width = 16, feed-forward 32.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import best_checkpoint

from msakit import api
from msakit.core.errors import MsakitError
from msakit.data.batching import Batch
from msakit.data.synthetic import make_synthetic
from msakit.encoders.sequence import SequenceEncoder, last_valid, lengths_to_mask, masked_mean
from msakit.encoders.text import load_text_encoder
from msakit.models.base import Dims
from msakit.models.clgsi import CLGSI, GLFK, CLGSIConfig, CommonFusion, Subnet
from msakit.models.registry import create_model, preset

SMALL = {"common_dim": 16, "specific_dim": 16, "head_dim": 16, "feedforward": 32}
DIMS = Dims(audio=5, vision=20)


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return load_text_encoder(str(tiny_bert))


def model_config(**overrides) -> dict:
    config = preset("clgsi", "mosi").model.to_dict()
    config.update(SMALL)
    config.update(overrides)
    return config


def build(encoder, seed: int = 0, **overrides) -> CLGSI:
    torch.manual_seed(seed)
    model = create_model("clgsi", model_config(**overrides), DIMS, copy.deepcopy(encoder))
    assert isinstance(model, CLGSI)
    return model


def make_batch(seed: int = 0) -> Batch:
    """8 samples in the collate format, with padding everywhere and zero lengths."""
    g = torch.Generator().manual_seed(seed)
    b, lt, la, lv = 8, 12, 16, 14
    text_len = torch.tensor([12, 5, 8, 3, 12, 7, 4, 9])
    mask = (torch.arange(lt) < text_len[:, None]).long()
    ids = torch.randint(1996, 29612, (b, lt), generator=g) * mask
    ids[:, 0] = 101
    text = torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)
    audio_lengths = torch.tensor([16, 3, 0, 9, 1, 16, 12, 5])
    vision_lengths = torch.tensor([0, 14, 6, 1, 14, 2, 0, 11])
    audio = torch.randn(b, la, DIMS.audio, generator=g)
    vision = torch.randn(b, lv, DIMS.vision, generator=g)
    audio *= lengths_to_mask(audio_lengths, la).unsqueeze(-1)
    vision *= lengths_to_mask(vision_lengths, lv).unsqueeze(-1)
    labels = torch.tensor([-3.0, -2.2, -1.0, -0.2, 0.0, 0.8, 1.6, 2.6])
    return Batch.from_dict({
        "text": text,
        "audio": audio,
        "audio_lengths": audio_lengths,
        "vision": vision,
        "vision_lengths": vision_lengths,
        "labels": labels,
        "index": torch.arange(b),
    })


def scribble_padding(batch: Batch, seed: int = 1) -> Batch:
    """The same batch with large random values in every padded frame and padded token."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in batch.as_dict().items()}
    for key in ("audio", "vision"):
        x = out[key]
        pad = ~lengths_to_mask(out[f"{key}_lengths"], x.size(1))
        noise = 100 * torch.randn(x.shape, generator=g)
        out[key] = torch.where(pad.unsqueeze(-1), noise, x)
    text = out["text"]
    pad = text[:, 1] == 0
    text[:, 0] = torch.where(pad, torch.randint(1996, 29612, pad.shape, generator=g), text[:, 0])
    return Batch.from_dict(out)


def pad_more(batch: Batch, extra: int = 7) -> Batch:
    """The same batch with ``extra`` more zero frames / padded tokens (same lengths)."""
    out = batch.as_dict()
    for key in ("audio", "vision"):
        x = out[key]
        out[key] = torch.cat([x, x.new_zeros(x.size(0), extra, x.size(2))], dim=1)
    text = out["text"]
    out["text"] = torch.cat([text, text.new_zeros(text.size(0), 3, extra)], dim=2)
    return Batch.from_dict(out)


# --------------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("parts", ["glfk", "gk", "lfk"])
def test_glfk_output_shape(parts):
    torch.manual_seed(0)
    glfk = GLFK(beta=16, parts=parts)
    out = glfk(torch.randn(4, 24, 3))
    assert out.shape == (4, 24)
    assert torch.isfinite(out).all()
    assert out.abs().max() <= 1.0  # tanh at the end


def conv_reference(glfk: GLFK, stacked: torch.Tensor) -> torch.Tensor:
    """GLFK as the paper draws it: nn.Conv2d over the 1-channel d_c x 3 image."""
    if glfk.global_conv is not None:
        x = glfk.global_conv(stacked.unsqueeze(1))  # (B, 1, d_c, 1)
    else:
        x = stacked.transpose(1, 2).unsqueeze(-1)  # (B, 3, d_c, 1): modalities as channels
    if glfk.local is not None:
        x = glfk.fine(glfk.local(x))  # (B, beta, d_c, 1)
    return torch.tanh(glfk.knowledge(x)).flatten(1)


@pytest.mark.parametrize(
    "parts, params",
    [
        # Global (1x3 conv) 3 + 1; Local 1 -> 8: 8 + 8, PReLU 1; Fine 8 -> 16: 128 + 16;
        # Knowledge 16 -> 1: 16 + 1  => 4 + 17 + 144 + 17 = 182
        ("glfk", 182),
        # Global 4; Knowledge 1 -> 1: 1 + 1  => 6
        ("gk", 6),
        # Local 3 -> 8: 24 + 8, PReLU 1; Fine 144; Knowledge 17  => 194
        ("lfk", 194),
    ],
)
def test_glfk_parameters_and_convolution_math(parts, params):
    torch.manual_seed(0)
    glfk = GLFK(beta=16, parts=parts)
    assert sum(p.numel() for p in glfk.parameters()) == params
    stacked = torch.randn(4, 24, 3)
    torch.testing.assert_close(glfk(stacked), conv_reference(glfk, stacked), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kind, width", [("add", 24), ("concat", 72), ("transformer", 24), ("glfk", 24), ("none", 0)]
)
def test_common_fusion_shapes(kind, width):
    torch.manual_seed(0)
    fusion = CommonFusion(kind, 24, beta=16, layers=2, heads=8).eval()
    stacked = torch.randn(5, 24, 3)
    out = fusion(stacked)
    assert out.shape == (5, width)
    assert fusion.out_dim == width
    if kind == "add":
        torch.testing.assert_close(out, stacked[..., 0] + stacked[..., 1] + stacked[..., 2])
    if kind == "concat":
        torch.testing.assert_close(out[:, 24:48], stacked[..., 1])
    if kind == "transformer":
        assert len(fusion.net.encoder.layers) == 2


def test_common_fusion_rejects_unknown_kind():
    with pytest.raises(ValueError):
        CommonFusion("sum", 24, beta=16, layers=2, heads=8)


def test_subnet_shape_and_ignores_padding():
    torch.manual_seed(0)
    subnet = Subnet(dim=20, out_dim=16, reduction=2)
    x = torch.randn(3, 10, 20)
    mask = lengths_to_mask(torch.tensor([10, 4, 0]), 10)
    out = subnet(x, mask)
    assert out.shape == (3, 16)
    assert ((out > 0) & (out < 1)).all()  # sigmoid
    changed = torch.where(mask.unsqueeze(-1), x, 50 * torch.randn(3, 10, 20))
    torch.testing.assert_close(subnet(changed, mask), out, rtol=0, atol=0)
    # the pooled input is the mean over valid frames only
    torch.testing.assert_close(masked_mean(x, mask)[1], x[1, :4].mean(0))
    assert torch.equal(masked_mean(x, mask)[2], torch.zeros(20))


# --------------------------------------------------------------------------- sequence encoder
def test_sequence_encoder_ignores_padded_frames():
    torch.manual_seed(0)
    enc = SequenceEncoder(dim=8, heads=2, layers=2, feedforward=16).eval()
    lengths = torch.tensor([10, 4, 1, 0])
    x = torch.randn(4, 10, 8)
    mask = lengths_to_mask(lengths, 10)
    changed = torch.where(mask.unsqueeze(-1), x, 30 * torch.randn(4, 10, 8))
    assert not torch.equal(changed, x)
    with torch.no_grad():
        h, m = enc(x, lengths)
        h2, m2 = enc(changed, lengths)
    assert torch.equal(m, mask) and torch.equal(m2, mask)
    torch.testing.assert_close(h2[mask], h[mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(last_valid(h2, lengths), last_valid(h, lengths), rtol=0, atol=1e-6)
    torch.testing.assert_close(masked_mean(h2, mask), masked_mean(h, mask), rtol=0, atol=1e-6)
    # last_valid really is frame length - 1
    assert torch.equal(last_valid(h, lengths)[1], h[1, 3])
    assert torch.equal(last_valid(h, lengths)[3], h[3, 0])


def test_sequence_encoder_extra_padding_changes_nothing():
    torch.manual_seed(0)
    enc = SequenceEncoder(dim=8, heads=2, layers=2, feedforward=16).eval()
    lengths = torch.tensor([6, 3, 0])
    x = torch.randn(3, 6, 8)
    longer = torch.cat([x, torch.zeros(3, 9, 8)], dim=1)
    with torch.no_grad():
        h, m = enc(x, lengths)
        h_long, m_long = enc(longer, lengths)
    torch.testing.assert_close(h_long[:, :6][m], h[m], rtol=0, atol=1e-5)
    torch.testing.assert_close(last_valid(h_long, lengths), last_valid(h, lengths), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(masked_mean(h_long, m_long), masked_mean(h, m), atol=1e-5, rtol=0)


def test_sequence_encoder_zero_length_is_finite_at_inference():
    # eval + no_grad takes PyTorch's fused encoder fast path, where a fully masked row is NaN
    torch.manual_seed(0)
    enc = SequenceEncoder(dim=8, heads=2, layers=2, feedforward=16).eval()
    lengths = torch.tensor([0, 5, 0])
    with torch.no_grad():
        h, mask = enc(torch.randn(3, 5, 8), lengths)
    assert torch.isfinite(h).all()
    assert torch.isfinite(last_valid(h, lengths)).all()
    assert torch.isfinite(masked_mean(h, mask)).all()


@pytest.mark.parametrize("train", [False, True])
def test_sequence_encoder_zero_length_is_finite(train):
    torch.manual_seed(0)
    enc = SequenceEncoder(dim=8, heads=2, layers=2, feedforward=16).train(train)
    lengths = torch.tensor([0, 5, 0])
    x = torch.randn(3, 5, 8, requires_grad=True)
    h, mask = enc(x, lengths)
    assert torch.isfinite(h).all()
    pooled = last_valid(h, lengths).sum() + masked_mean(h, mask).sum() + h.sum()
    pooled.backward()
    assert torch.isfinite(x.grad).all()
    for name, param in enc.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # a length-0 sequence's inputs get no gradient: they are padding
    assert torch.equal(x.grad[0], torch.zeros(5, 8))


# --------------------------------------------------------------------------- the full model
def test_clgsi_output_shapes(encoder):
    model = build(encoder).eval()
    batch = make_batch()
    with torch.no_grad():
        out = model(batch)
    assert out.prediction.shape == (8,)
    reps = out.representations
    for name in ("text", "audio", "vision", "common", "specific_text", "specific_audio",
                 "specific_vision"):
        assert reps[name].shape == (8, 16), name
    assert torch.isfinite(out.prediction).all()


def test_clgsi_ignores_padded_frames_and_tokens(encoder):
    model = build(encoder).eval()
    batch = make_batch()
    changed = scribble_padding(batch)
    assert not torch.equal(changed.audio, batch.audio)
    assert not torch.equal(changed.vision, batch.vision)
    assert not torch.equal(changed.text, batch.text)
    with torch.no_grad():
        a = model(batch)
        b = model(changed)
    torch.testing.assert_close(b.prediction, a.prediction, rtol=0, atol=1e-5)
    for name, rep in a.representations.items():
        torch.testing.assert_close(b.representations[name], rep, rtol=0, atol=1e-5, msg=name)


def test_clgsi_trimmed_equals_untrimmed(encoder):
    model = build(encoder).eval()
    batch = make_batch(seed=3)
    with torch.no_grad():
        trimmed = model(batch).prediction
        untrimmed = model(pad_more(batch)).prediction
    torch.testing.assert_close(untrimmed, trimmed, rtol=0, atol=1e-5)


def test_clgsi_predictions_depend_on_valid_frames(encoder):
    """The invariance above is not vacuous: a valid frame does change the prediction."""
    model = build(encoder).eval()
    batch = make_batch()
    changed = batch.replace(audio=batch.audio.clone())
    changed.audio[0, 5] += 3.0  # sample 0 has 16 valid audio frames
    with torch.no_grad():
        a, b = model(batch).prediction, model(changed).prediction
    assert (a[0] - b[0]).abs() > 1e-6
    torch.testing.assert_close(a[1:], b[1:], rtol=0, atol=1e-6)


ABLATIONS = {
    "w/o CL (Table 3)": {"contrastive": False},
    "w/o Weight (Table 3)": {"weighted": False},
    "add (Table 4)": {"fusion": "add"},
    "concat (Table 4)": {"fusion": "concat"},
    "GK (Table 4)": {"fusion": "gk"},
    "LFK (Table 4)": {"fusion": "lfk"},
    "transformer-2 (Table 8)": {"fusion": "transformer", "fusion_layers": 2},
    "w/o Con (Table 5)": {"use_common": False},
    "common features kept out of the head": {"fusion": "none"},
    "w/o Spe (Table 5)": {"use_specific": False},
    "official loss": {"variant": "official"},
    "paper": {},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_ablation_trains_one_step(encoder, name):
    overrides = ABLATIONS[name]
    model = build(encoder, **overrides).train()
    batch = make_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    out = model(batch)
    losses = model.compute_loss(out, batch)
    assert losses.loss.ndim == 0 and torch.isfinite(losses.loss)
    assert torch.isfinite(losses.task_loss) and all(map(torch.isfinite, losses.parts.values()))
    torch.testing.assert_close(
        losses.task_loss, (out.prediction - batch.labels).abs().mean()
    )
    optimizer.zero_grad()
    losses.loss.backward()
    for pname, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), pname
    optimizer.step()
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("head.") for k in changed)
    assert any(k.startswith("audio_encoder.") for k in changed)
    assert torch.isfinite(model(batch).prediction).all()

    reps = out.representations
    config = model.config
    if not (config.contrastive and config.use_common):  # w/o Con drops L_cl with it
        assert model.contrastive is None
        assert losses.parts == {} and model.loss_parts == ()
        torch.testing.assert_close(losses.loss, losses.task_loss)
    else:
        assert model.loss_parts == ("contrastive",)
        assert float(losses.parts["contrastive"].detach()) > 0
        expected = losses.task_loss + config.gamma * losses.parts["contrastive"]
        torch.testing.assert_close(losses.loss, expected)
    assert ("common" in reps) == (config.use_common and config.fusion != "none")
    assert hasattr(model, "fusion") == config.use_common
    assert hasattr(model, "project_text") == config.use_common
    assert ("text" in reps) == config.use_common
    assert ("specific_text" in reps) == config.use_specific
    if "common" in reps:
        assert model.fusion.kind == config.fusion
        width = 48 if config.fusion == "concat" else 16
        assert reps["common"].shape == (8, width)
    if config.fusion == "transformer":
        assert len(model.fusion.net.encoder.layers) == 2


@pytest.mark.parametrize("switch", [{"weighted": False}, {"variant": "official"}])
def test_loss_switches_change_the_contrastive_loss(encoder, switch):
    batch = make_batch()
    values = []
    for overrides in ({}, switch):
        model = build(encoder, seed=0, **overrides).eval()
        with torch.no_grad():
            values.append(float(model.compute_loss(model(batch), batch).parts["contrastive"]))
    assert all(np.isfinite(values))
    assert abs(values[0] - values[1]) > 1e-4


def test_no_common_and_no_specific_is_an_error(encoder):
    with pytest.raises(MsakitError):
        build(encoder, use_common=False, use_specific=False)
    with pytest.raises(MsakitError):
        build(encoder, fusion="none", use_specific=False)


def test_without_common_features_there_is_no_contrastive_loss(encoder):
    """Table 5 "w/o Con": Sec. 3.2 puts L_cl inside the common-feature module, so removing the
    module removes L_cl too, even with contrastive=true; the loss is the task loss alone."""
    batch = make_batch()
    model = build(encoder, use_common=False, contrastive=True).train()
    losses = model.compute_loss(model(batch), batch)
    assert model.contrastive is None
    assert losses.parts == {} and model.loss_parts == ()
    torch.testing.assert_close(losses.loss, losses.task_loss)
    assert not any(name.startswith(("project_", "fusion.")) for name, _ in
                   model.named_parameters())


def test_fusion_none_keeps_the_contrastive_loss_on_the_common_features(encoder):
    """fusion=none: nothing common reaches the head, T_c/A_c/V_c still train through L_cl."""
    batch = make_batch()
    model = build(encoder, fusion="none").train()
    out = model(batch)
    losses = model.compute_loss(out, batch)
    assert "common" not in out.representations
    assert float(losses.parts["contrastive"].detach()) > 0
    assert model.head.net[1].in_features == 3 * SMALL["specific_dim"]
    losses.loss.backward()
    assert model.project_audio.fc.weight.grad.abs().sum() > 0


def test_transformer_fusion_tells_the_modalities_apart():
    """Table 8: with modality-type embeddings, permuting the three stacked common features
    changes the fused output (a plain Transformer + mean would be permutation invariant)."""
    torch.manual_seed(0)
    fusion = CommonFusion("transformer", 24, beta=16, layers=2, heads=8).eval()
    stacked = torch.randn(5, 24, 3)
    permuted = stacked[..., [1, 2, 0]]
    with torch.no_grad():
        out, out_permuted = fusion(stacked), fusion(permuted)
        assert (out - out_permuted).abs().max() > 1e-3
        fusion.net.modality_embedding.zero_()  # without them: the same output
        torch.testing.assert_close(fusion(stacked), fusion(permuted), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- training
def shortened_mosi(path: Path, n_train: int, seed: int = 0) -> Path:
    """A synthetic MOSI file (dims 5/20, Lt 50) with sequences cut to 40 audio / 30 vision frames.

    The planted signal sits in every valid frame, so cutting keeps it; the real 500/375 frames
    would make each step ten times slower.
    """
    data = make_synthetic("mosi", n_train, 24, 24, seed=seed)
    for split in data.values():
        split["audio"] = np.ascontiguousarray(split["audio"][:, :40])
        split["vision"] = np.ascontiguousarray(split["vision"][:, :30])
        split["audio_lengths"] = [min(int(n), 40) for n in split["audio_lengths"]]
        split["vision_lengths"] = [min(int(n), 30) for n in split["vision_lengths"]]
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


LEARN = {
    **SMALL,
    "gamma": 0.1,
    "dropout": 0.0,
    "lr.other": 1e-2,
    "lr.audio": 1e-2,
    "lr.vision": 1e-2,
    "early_stop": 100,
}


def test_training_lowers_the_task_loss(tmp_path, tiny_bert):
    data = shortened_mosi(tmp_path / "mosi_short.pkl", 96)
    result = api.train(
        "clgsi", "mosi", data, text_encoder=str(tiny_bert), seeds=[1], epochs=8, batch=16,
        out=tmp_path / "run", overrides=LEARN, quiet=True,
    )
    history = json.loads((tmp_path / "run" / "seed-1" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 9))
    task = [h["train_task_loss"] for h in history]
    assert all(np.isfinite(task))
    # The best constant prediction (the median) has this L1 loss on the training labels.
    labels = np.asarray(make_synthetic("mosi", 96, 24, 24, seed=0)["train"]["regression_labels"])
    constant = float(np.abs(labels - np.median(labels)).mean())
    assert constant > 1.2
    final = float(np.mean(task[-3:]))
    assert final < 0.75 * task[0], task
    assert final < 0.6 * constant, (task, constant)
    # the test row: the model ranks the test samples far better than chance
    assert result.rows[0]["Corr"] > 0.5, result.rows[0]


def test_same_seed_same_results(tmp_path, tiny_bert):
    data = shortened_mosi(tmp_path / "mosi_short.pkl", 32)
    outs = []
    for run in ("a", "b"):
        api.train(
            "clgsi", "mosi", data, text_encoder=str(tiny_bert), seeds=[7], epochs=2, batch=16,
            out=tmp_path / run, overrides=SMALL, quiet=True,
        )
        outs.append(tmp_path / run)
    first, second = ((out / "results.csv").read_text() for out in outs)
    assert first == second
    assert first.splitlines()[0].startswith("seed,Has0_acc_2")

    def without_time(out: Path) -> list[dict]:
        history = json.loads((out / "seed-7" / "history.json").read_text())
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert without_time(outs[0]) == without_time(outs[1])
    a = best_checkpoint(outs[0] / "seed-7")["model"]
    b = best_checkpoint(outs[1] / "seed-7")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_the_paper_vs_authors_table_is_kept_once_in_code_and_shown_in_readings():
    """docs/readings.md shows ``DIFFERENCES`` as rendered; every row names its setting, and
    the settings that are model hyperparameters are ones ``--preset authors`` changes."""
    from pathlib import Path

    from msakit.models.clgsi.presets import CLGSI_AUTHORS
    from msakit.models.clgsi.readings import DIFFERENCES, differences_markdown

    readings = Path(__file__).resolve().parents[1] / "docs" / "readings.md"
    assert differences_markdown() in readings.read_text(encoding="utf-8")
    changed = {key for entry in CLGSI_AUTHORS.values() for key in entry["model"]}
    named = {row.switch.split("`")[1] for row in DIFFERENCES if row.switch.startswith("`")}
    hyperparameters = named & set(CLGSIConfig.__dataclass_fields__)
    assert len(hyperparameters) >= 7 and hyperparameters <= changed
