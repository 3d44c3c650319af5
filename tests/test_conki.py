"""ConKI: the model, its ablation switches and the two stages end to end on tiny files.

Stage 1 runs on a MOSEI-shaped file (audio/vision 74/35), stage 2 on a MOSI-shaped one (5/20),
with the 12-layer, 16-wide random BERT. The synthetic sequences are cut to 40 audio and 30
vision frames so the whole file stays fast; their feature sizes are the real ones.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import best_checkpoint, make_tiny_bert, write_short_synthetic

from msakit import cli
from msakit.api import build_config, load_checkpoint
from msakit.core.errors import MsakitError
from msakit.data.batching import collate
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.losses import HierarchicalContrastiveLoss
from msakit.models import create_model
from msakit.models.base import Dims
from msakit.models.conki import (
    AV_INSERT,
    TEXT_INSERT,
    Adapter,
    insertion_points,
    single_knowledge_loss,
)
from msakit.models.conki.adapters import (
    install_adapters,
    read_adapters,
    stage1_config,
)
from msakit.training.trainer import build_optimizer

SMALL = {"adapter_dim": 8, "fusion_dim": 8, "head_dim": 8, "feedforward": 32}
SMALL_SET = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
FRAMES = {"audio": 40, "vision": 30}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors: one thread is fastest, and immune to a busy machine's oversubscription.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def short_synthetic(path: Path, like: str) -> Path:
    """write_synthetic(path, like, (24, 8, 8)) with audio/vision cut to FRAMES frames."""
    return write_short_synthetic(path, like, (24, 8, 8), FRAMES)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("conki_data")
    return {like: short_synthetic(root / f"{like}.pkl", like) for like in ("mosei", "mosi")}


@pytest.fixture(scope="module")
def stage1(tiny_bert_12, files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stage1") / "adapters"
    argv = [
        "pretrain-adapters",
        "--model",
        "conki",
        "--dataset",
        "mosi",
        "--data",
        str(files["mosei"]),
        "--text-encoder",
        str(tiny_bert_12),
        "--epochs",
        "2",
        "--batch",
        "8",
        "--out",
        str(out),
        "--quiet",
        *SMALL_SET,
    ]
    assert cli.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def stage2(tiny_bert_12, files, stage1, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stage2") / "run"
    assert (
        cli.main(
            train_argv(
                tiny_bert_12,
                files["mosi"],
                out,
                "--adapters",
                str(stage1 / "adapters.pt"),
                "--quiet",
                "--keep-last",
            )
        )
        == 0
    )
    return out


def train_argv(encoder: Path, data: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        "train",
        "--model",
        "conki",
        "--dataset",
        "mosi",
        "--data",
        str(data),
        "--text-encoder",
        str(encoder),
        "--epochs",
        str(epochs),
        "--batch",
        "8",
        "--seeds",
        "1",
        "--out",
        str(out),
        *SMALL_SET,
        *extra,
    ]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def build(encoder_dir: Path, dims: Dims, **overrides):
    config = build_config(
        "conki", "mosi", text_encoder=str(encoder_dir), overrides={**SMALL, **overrides}
    )
    encoder = load_text_encoder(config.text_encoder)
    return create_model("conki", config.model, dims, encoder), config, encoder


def first_batch(path: Path, n: int = 8) -> dict[str, torch.Tensor]:
    return collate(load_feature_file(str(path)).splits["train"], np.arange(n))


# --------------------------------------------------------------------------- model
def test_insertion_points_keep_the_relative_depth() -> None:
    assert insertion_points(TEXT_INSERT, 12) == [0, 5, 10]  # before BERT layers 1, 6, 11
    assert insertion_points(TEXT_INSERT, 6) == [0, 3, 5]  # before layers 1, 4, 6
    assert insertion_points(TEXT_INSERT, 24) == [0, 10, 20]
    assert insertion_points(TEXT_INSERT, 2) == [0, 1]  # duplicates dropped
    assert insertion_points(AV_INSERT, 2) == [1]  # before layer 2 of 2
    assert insertion_points(AV_INSERT, 4) == [2]
    assert insertion_points(AV_INSERT, 1) == [0]


def test_shapes_and_adapter_names(tiny_bert_12, files) -> None:
    model, _, _ = build(tiny_bert_12, Dims(audio=74, vision=35))
    assert model.adapter_text.points == [0, 5, 10]
    assert len(model.adapter_text.blocks) == 3
    assert model.adapter_audio.points == model.adapter_vision.points == [1]
    assert len(model.adapter_audio.blocks) == 1

    model.eval()
    output = model(first_batch(files["mosei"]))
    assert output.prediction.shape == (8,)
    for kind, m in itertools.product(("pan", "specific"), ("text", "vision", "audio")):
        assert output.representations[f"{kind}_{m}"].shape == (8, 16)  # shared width = d_t
        assert torch.isfinite(output.representations[f"{kind}_{m}"]).all()

    # Adapter parameters, and only those, have "adapter" in their names.
    in_adapters = {
        id(p)
        for module in model.modules()
        if isinstance(module, Adapter)
        for p in module.parameters()
    }
    named = dict(model.named_parameters())
    assert in_adapters == {id(p) for name, p in named.items() if "adapter" in name}
    assert len(in_adapters) > 0
    assert set(model.adapter_state()) == {k for k in named if "adapter" in k}

    # Adapters do not depend on the raw audio/vision sizes: MOSEI adapters fit a MOSI model.
    other, _, _ = build(tiny_bert_12, Dims(audio=5, vision=20))
    shapes = {k: v.shape for k, v in model.adapter_state().items()}
    assert shapes == {k: v.shape for k, v in other.adapter_state().items()}
    assert other.project_audio.weight.shape == (16, 5)


def test_text_adapter_reads_its_insertion_points(tiny_bert_12, files) -> None:
    # The last text module sits before layer 11 (index 10): changing BERT's layer 12 changes
    # O_t but not A_t; changing layer 10 changes both.
    model, _, _ = build(tiny_bert_12, Dims(audio=74, vision=35))
    model.eval()
    batch = first_batch(files["mosei"])
    with torch.no_grad():
        before = model(batch).representations
        layers = model.text_encoder.encoder.layer
        layers[11].output.dense.weight.add_(torch.randn_like(layers[11].output.dense.weight))
        after_12 = model(batch).representations
        layers[9].output.dense.weight.add_(torch.randn_like(layers[9].output.dense.weight))
        after_10 = model(batch).representations
    assert not torch.allclose(before["pan_text"], after_12["pan_text"])
    assert torch.equal(before["specific_text"], after_12["specific_text"])
    assert not torch.allclose(after_12["specific_text"], after_10["specific_text"])


def _pan_only_reference(pan: list[torch.Tensor], labels: torch.Tensor, tau: float) -> float:
    """Section 3.4's formula with O_m only: P1, P2 positive, N2 negative, one denominator/i."""
    m_count, batch = len(pan), labels.shape[0]
    z = [torch.nn.functional.normalize(x, dim=-1) for x in pan]
    rounded = [round(float(y)) for y in labels]
    total = 0.0
    for i in range(batch):
        positives, denominator = [], 0.0
        for m, n, j in itertools.product(range(m_count), range(m_count), range(batch)):
            if (m, i) == (n, j):
                continue
            f = math.exp(float(z[m][i] @ z[n][j]) / tau)
            denominator += f
            if j == i or rounded[i] == rounded[j]:
                positives.append(f)
        if positives:
            total += -sum(math.log(f / denominator) for f in positives) / len(positives)
    return total


@pytest.mark.parametrize("num_modalities", [1, 2, 3])
def test_single_knowledge_loss_is_the_loss_of_that_block_alone(num_modalities) -> None:
    gen = torch.Generator().manual_seed(num_modalities)
    pan = [torch.randn(5, 4, generator=gen, dtype=torch.float64) for _ in range(num_modalities)]
    labels = torch.tensor([0.4, 0.8, -2.2, 2.6, 1.2], dtype=torch.float64)  # -2 alone
    loss = HierarchicalContrastiveLoss(temperature=0.5, use_n1=False)
    value = single_knowledge_loss(loss, pan, labels)
    assert value.item() == pytest.approx(_pan_only_reference(pan, labels, 0.5), rel=1e-10)
    with pytest.raises(ValueError):
        single_knowledge_loss(HierarchicalContrastiveLoss(use_n1=True), pan, labels)


ABLATIONS = {
    "ta": {"modalities": "ta"},
    "tv": {"modalities": "tv"},
    "va": {"modalities": "va"},
    "w/o C2": {"use_adapters": False},
    "w/o C3": {"use_pan_knowledge": False},
    "random-init text encoder": {"pretrained_encoders": False},
    "w/o C4": {"contrastive": False},
    "w/o N1": {"use_n1": False},
    "modality fusion": {"fusion": "modality"},
    "K-Adapter residual, cls pool": {"adapter_residual": True, "adapter_pool": "cls"},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_switch_builds_and_trains_one_step(name, tiny_bert_12, files) -> None:
    torch.manual_seed(0)
    model, config, encoder = build(tiny_bert_12, Dims(audio=5, vision=20), **ABLATIONS[name])
    batch = first_batch(files["mosi"])
    named = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in named.items()}
    optimizer = build_optimizer(model, config)
    output = model(batch)
    losses = model.compute_loss(output, batch)
    assert torch.isfinite(losses.loss) and all(map(torch.isfinite, losses.parts.values()))
    optimizer.zero_grad()
    losses.loss.backward()
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in named.items())

    reps = output.representations
    c = config.model
    letters = {"text": "t", "vision": "v", "audio": "a"}
    for m, letter in letters.items():
        assert (f"pan_{m}" in reps) == (letter in c["modalities"] and c["use_pan_knowledge"])
        assert (f"specific_{m}" in reps) == (letter in c["modalities"] and c["use_adapters"])
    if "t" not in c["modalities"]:
        assert not any(k.startswith("text_encoder.") for k in named)
    if not c["use_adapters"]:
        assert not any("adapter" in k for k in named)
        assert losses.parts["contrastive"].item() > 0  # the pan-knowledge pairs remain
    if not c["use_pan_knowledge"]:  # F_m = FC(A_m); L_con over the A_m pairs alone
        assert model.inner_fusion["text"].in_features == model.widths["text"]
        assert model.contrastive is not None and not model.contrastive.use_n1
        specific = [reps[f"specific_{m}"] for m in ("text", "vision", "audio")]
        alone = single_knowledge_loss(model.contrastive, specific, batch.labels)
        assert losses.parts["contrastive"].item() == pytest.approx(alone.item())
        # the adapters still read the encoders, which still learn through them
        assert model.text_encoder.encoder.layer[0].attention.self.query.weight.grad is not None
        assert model.project_audio.weight.grad is not None
    if not c["pretrained_encoders"]:
        pretrained = encoder.embeddings.word_embeddings.weight
        assert not torch.equal(model.text_encoder.embeddings.word_embeddings.weight, pretrained)
    if not c["contrastive"]:
        assert losses.parts == {} and model.loss_parts == ()
        assert losses.loss.item() == pytest.approx(losses.task_loss.item())
    if not c["use_n1"]:
        with_n1 = HierarchicalContrastiveLoss(temperature=c["temperature"])
        pan = [reps[f"pan_{m}"] for m in ("text", "vision", "audio")]
        specific = [reps[f"specific_{m}"] for m in ("text", "vision", "audio")]
        assert losses.parts["contrastive"].item() < with_n1(pan, specific, batch.labels).item()


def test_pan_knowledge_or_adapters_are_needed(tiny_bert_12) -> None:
    with pytest.raises(MsakitError, match="pan-knowledge or adapters"):
        build(tiny_bert_12, Dims(audio=5, vision=20), use_pan_knowledge=False, use_adapters=False)


def test_adapters_trained_in_stage2_get_their_own_learning_rate(tiny_bert_12) -> None:
    """w/o C1: adapters trained from scratch on the target learn at adapter_lr (5e-5), not at
    the fine-tuning rate of "other" (1e-6 on MOSI); stage 1 keeps one rate for everything."""
    model, config, _ = build(tiny_bert_12, Dims(audio=5, vision=20))
    groups = {g["name"]: g for g in build_optimizer(model, config).param_groups}
    adapters = {id(p) for n, p in model.named_parameters() if "adapter" in n}
    assert {id(p) for p in groups["adapters"]["params"]} == adapters
    assert groups["adapters"]["lr"] == 5e-5 and groups["other"]["lr"] == 1e-6
    assert groups["adapters"]["weight_decay"] == config.weight_decay["other"]
    assert not adapters & {id(p) for p in groups["other"]["params"]}

    stage1, _ = stage1_config("mosi", text_encoder=str(tiny_bert_12), overrides=SMALL)
    assert stage1.model["adapter_lr"] is None
    model = create_model("conki", stage1.model, Dims(74, 35), load_text_encoder(str(tiny_bert_12)))
    names = [g["name"] for g in build_optimizer(model, stage1).param_groups]
    assert "adapters" not in names and "other" in names


def test_shared_dim_must_match_the_text_width_for_the_loss(
    tiny_bert_12, files, tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    assert cli.main(train_argv(tiny_bert_12, files["mosi"], out, "--set", "shared_dim=8")) == 2
    assert "error: cannot build conki" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- stages
def test_stage1_writes_adapters_with_frozen_encoders(tiny_bert_12, stage1) -> None:
    state = load(stage1 / "adapters.pt")
    assert state["format"] == "msakit-adapters-1"
    assert state["dims"]["audio"] == 74 and state["dims"]["vision"] == 35
    assert state["config"]["dataset"] == "mosei"  # external data set's metrics
    assert state["config"]["model"]["contrastive"] is False  # L_task only (Algorithm 1)
    assert state["model"] and all("adapter" in k for k in state["model"])
    assert set(state["encoders"]) and all(
        k.startswith(("audio_encoder.", "vision_encoder.")) for k in state["encoders"]
    )
    assert (stage1 / "config.yaml").is_file()
    assert not (stage1 / "stage1" / "last.pt").exists()

    # The encoders were frozen: the saved audio/vision encoders are the initial ones, and the
    # adapters moved away from theirs.
    config, _ = stage1_config("mosi", text_encoder=str(tiny_bert_12), overrides=SMALL)
    encoder = load_text_encoder(str(tiny_bert_12))
    torch.manual_seed(config.seeds[0])
    initial = create_model("conki", config.model, Dims(**state["dims"]), encoder)
    for name, value in initial.backbone_state().items():
        assert torch.equal(state["encoders"][name], value), name
    assert any(not torch.equal(state["model"][k], v) for k, v in initial.adapter_state().items())


def test_stage2_keeps_adapters_bit_identical(stage1, stage2) -> None:
    saved = load(stage1 / "adapters.pt")["model"]
    for weights in (best_checkpoint(stage2 / "seed-1")["model"],
                    load(stage2 / "seed-1" / "last.pt")["model"]):
        adapters = {k: v for k, v in weights.items() if "adapter" in k}
        assert set(adapters) == set(saved)
        for name, value in saved.items():
            assert torch.equal(adapters[name], value), name
    weights = best_checkpoint(stage2 / "seed-1")["model"]
    assert weights["project_audio.weight"].shape == (16, 5)  # the target's own projection
    with open(stage2 / "results.csv") as f:
        assert [row["seed"] for row in csv.DictReader(f)] == ["1", "mean", "std"]


def test_install_freezes_adapters_and_starts_from_stage1_encoders(tiny_bert_12, stage1) -> None:
    model, config, encoder = build(tiny_bert_12, Dims(audio=5, vision=20))
    state = read_adapters(stage1 / "adapters.pt", config, model, encoder)
    install_adapters(model, state)
    saved = load(stage1 / "adapters.pt")
    current = model.state_dict()
    for name, value in {**saved["model"], **saved["encoders"]}.items():
        assert torch.equal(current[name], value), name
    for name, param in model.named_parameters():
        assert param.requires_grad == ("adapter" not in name), name
    trainable = {id(p) for g in build_optimizer(model, config).param_groups for p in g["params"]}
    assert not any(id(p) in trainable for n, p in model.named_parameters() if "adapter" in n)


def test_adapters_of_more_modalities_fit_a_subset_model(tiny_bert_12, stage1) -> None:
    model, config, encoder = build(tiny_bert_12, Dims(5, 20), modalities="ta")
    state = read_adapters(stage1 / "adapters.pt", config, model, encoder)
    assert not any("vision" in k for k in {**state["model"], **state["encoders"]})
    install_adapters(model, state)


def test_evaluate_and_predict_on_the_conki_checkpoint(
    stage1, stage2, files, tmp_path, capsys
) -> None:
    checkpoint = stage2 / "seed-1"
    capsys.readouterr()
    assert (
        cli.main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(files["mosi"])]) == 0
    )
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert math.isfinite(metrics["MAE"]) and "Mult_acc_7" in metrics
    out = tmp_path / "pred.csv"
    assert (
        cli.main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(files["mosi"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(math.isfinite(float(r["prediction"])) for r in rows)
    loaded = load_checkpoint(checkpoint).model
    saved = load(stage1 / "adapters.pt")["model"]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())


def test_without_adapters_runs_the_no_external_data_variant(
    tiny_bert_12, files, tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    assert cli.main(train_argv(tiny_bert_12, files["mosi"], out, epochs=1)) == 0
    err = capsys.readouterr().err
    assert "note: no --adapters given: ConKI w/o external data" in err
    weights = best_checkpoint(out / "seed-1")["model"]
    assert any("adapter" in k for k in weights)


# --------------------------------------------------------------------------- bad input
def _fails(argv: list[str], out: Path, capsys, *needles: str) -> None:
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: "), err
    for needle in needles:
        assert needle in err[-1]
    assert not out.exists()


def test_other_text_encoder_in_stage2_is_an_error(
    stage1, files, tmp_path, capsys, tiny_bert_12
) -> None:
    adapters = ["--adapters", str(stage1 / "adapters.pt")]
    shallow = make_tiny_bert(tmp_path / "bert6", layers=6, hidden=16)
    _fails(
        train_argv(shallow, files["mosi"], tmp_path / "a", *adapters),
        tmp_path / "a",
        capsys,
        "another text encoder",
        "6 layers",
    )

    # Same architecture, other weights.
    from transformers import BertModel

    other = BertModel.from_pretrained(tiny_bert_12)
    with torch.no_grad():
        other.embeddings.word_embeddings.weight.add_(0.01)
    other.save_pretrained(tmp_path / "bert12b")
    _fails(
        train_argv(tmp_path / "bert12b", files["mosi"], tmp_path / "b", *adapters),
        tmp_path / "b",
        capsys,
        "other text encoder weights",
    )


def test_unfitting_adapters_files_are_errors(stage1, files, tmp_path, capsys, tiny_bert_12) -> None:
    def run(path: Path, *extra: str) -> list[str]:
        return train_argv(
            tiny_bert_12, files["mosi"], tmp_path / "run", "--adapters", str(path), *extra
        )

    out = tmp_path / "run"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    _fails(run(corrupt), out, capsys, "not readable")
    _fails(run(tmp_path / "missing.pt"), out, capsys, "does not exist")

    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    _fails(run(plain), out, capsys, "not an msakit adapters file")

    _fails(
        run(stage1 / "adapters.pt", "--set", "adapter_dim=4"),
        out,
        capsys,
        "adapter_dim=8",
        "--set adapter_dim=8",
    )

    state = load(stage1 / "adapters.pt")
    bad_shape = copy.deepcopy(state)
    name = next(iter(bad_shape["model"]))
    bad_shape["model"][name] = torch.zeros(3, 3)
    torch.save(bad_shape, tmp_path / "bad_shape.pt")
    _fails(run(tmp_path / "bad_shape.pt"), out, capsys, name, "shape")

    extra = copy.deepcopy(state)
    extra["model"]["adapter_text.blocks.7.down.weight"] = torch.zeros(8, 16)
    torch.save(extra, tmp_path / "extra_key.pt")
    _fails(run(tmp_path / "extra_key.pt"), out, capsys, "unexpected weight")

    missing = copy.deepcopy(state)
    del missing["model"][name]
    torch.save(missing, tmp_path / "missing_key.pt")
    _fails(run(tmp_path / "missing_key.pt"), out, capsys, "no weight")

    _fails(run(stage1 / "adapters.pt", "--set", "use_adapters=false"), out, capsys, "no adapters")


def test_pretrain_rejects_impossible_settings(tiny_bert_12, files, tmp_path, capsys) -> None:
    out = tmp_path / "adapters"
    base = [
        "pretrain-adapters",
        "--model",
        "conki",
        "--dataset",
        "mosi",
        "--data",
        str(files["mosei"]),
        "--text-encoder",
        str(tiny_bert_12),
        "--out",
        str(out),
    ]
    _fails([*base, "--set", "use_adapters=false"], out, capsys, "needs adapters")
    _fails([*base, "--set", "pretrained_encoders=false"], out, capsys, "stage-2 setting")
    _fails([*base, "--set", "modalities=tx"], out, capsys, "modalities")
    _fails([*base, "--set", "external=iemocap"], out, capsys, "external must be")


def test_adapter_module_equals_stock_transformer_layers_at_valid_positions() -> None:
    """The adapter's layers skip the feed-forward on padding: valid positions, and every
    gradient, equal PyTorch's own layers run over the whole padded sequence."""
    from msakit.models.conki import AdapterModule

    torch.manual_seed(0)
    module = AdapterModule(width=12, inner=8, heads=2, dropout=0.0, residual=True).eval()
    stock = torch.nn.ModuleList(
        torch.nn.TransformerEncoderLayer(8, 2, 32, 0.0, batch_first=True) for _ in module.layers
    )
    for mine, theirs in zip(module.layers, stock, strict=True):
        theirs.load_state_dict(mine.state_dict())
    x = torch.randn(3, 9, 12)
    padding = torch.arange(9)[None] >= torch.tensor([9, 4, 1])[:, None]
    out = module(x, padding)
    h = module.down(x)
    for layer in stock:
        h = layer(h, src_key_padding_mask=padding)
    ref = x + module.up(h)
    valid = ~padding
    assert torch.allclose(out[valid], ref[valid], atol=1e-5)
    grads = torch.autograd.grad(out[valid].pow(2).sum(), list(module.layers.parameters()))
    grads_ref = torch.autograd.grad(ref[valid].pow(2).sum(), list(stock.parameters()))
    for a, b in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
