"""One typed configuration from the command line to the modules (issue 20, item 1).

``RunConfig`` holds the model's typed hyperparameters (its ``ModelConfig``) and the data set's
``DatasetSpec``; presets and ``--set`` are typed layers, checked once by the one validator that
run settings and model settings share; config.yaml and checkpoints keep their plain form, so
runs written before load; ``--dataset custom`` trains every built-in model.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli

from msakit import api
from msakit.config import DEFAULT_SEEDS, RunConfig, apply_overrides
from msakit.config.datasets import CUSTOM, DatasetSpec, custom_spec
from msakit.config.model_config import hp
from msakit.core.errors import MsakitError
from msakit.data.synthetic import write_synthetic
from msakit.models.base import Dims
from msakit.models.clgsi import CLGSIConfig
from msakit.models.registry import model_spec, preset
from msakit.training.inputs import build_model

SRC = Path(__file__).resolve().parents[1] / "src" / "msakit"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the typed object
def test_a_config_holds_typed_model_settings_and_a_dataset_spec():
    config = preset("clgsi", "mosi")
    assert isinstance(config.model, CLGSIConfig) and isinstance(config.dataset, DatasetSpec)
    assert config.dataset.name == "mosi" and config.spec is config.dataset
    # A name or a mapping given to the constructor is typed at once.
    made = RunConfig(model_name="clgsi", dataset="sims", model={"gamma": 0.5})
    assert isinstance(made.model, CLGSIConfig) and made.model.gamma == 0.5
    assert made.dataset.label_range == (-1.0, 1.0)


def test_an_old_form_config_dict_loads():
    """A checkpoint's or config.yaml's mapping, as msakit wrote them before the typed config
    (and before ``amp``, ``optimizer``, ``data``... existed): typed on reading, written back in
    the same plain form."""
    old = {
        "model_name": "clgsi", "dataset": "custom", "text_encoder": "bert-base-uncased",
        "batch_size": 16, "epochs": 3, "early_stop": 2,
        "lr": {"text": 5e-5, "audio": 1e-3, "vision": 1e-3, "other": 1e-3},
        "weight_decay": {"text": 0.0, "audio": 0.0, "vision": 0.0, "other": 0.0},
        "warmup": 0.1, "seeds": [1, 2],
        "model": {"gamma": 0.3, "temperature": 0.05, "label_scale": 2.0},
        "dataset_spec": {"name": "custom", "title": "Old corpus", "label_range": [-2.0, 2.0],
                         "metric_family": "mosi", "language": "en",
                         "text_encoder": "bert-base-uncased", "presets_from": "mosi",
                         "unimodal_labels": False, "label_scale": 2.0},
        "an_unknown_old_key": 1,
    }
    config = RunConfig.from_dict(old)
    assert isinstance(config.model, CLGSIConfig)
    assert (config.model.gamma, config.model.temperature) == (0.3, 0.05)
    assert config.model.threshold == CLGSIConfig().threshold  # absent: the default
    assert config.dataset.is_custom and config.dataset.title == "Old corpus"
    assert config.amp == "off" and config.data is None and config.preset == "paper"
    plain = config.to_dict()
    assert plain["dataset"] == CUSTOM and plain["dataset_spec"]["label_range"] == [-2.0, 2.0]
    assert plain["model"]["temperature"] == 0.05 and isinstance(plain["model"], dict)
    assert list(plain)[-3:] == ["model", "dataset_spec", "data"]  # config.yaml's order
    assert RunConfig.from_dict(yaml.safe_load(config.to_yaml())) == config
    named = RunConfig.from_dict({"model_name": "tfn", "dataset": "mosi", "dataset_spec": None})
    assert named.to_dict()["dataset_spec"] is None and named.seeds == list(DEFAULT_SEEDS)


def test_a_bad_old_config_is_one_line():
    base = {"model_name": "clgsi", "dataset": "mosi"}
    for extra, message in (
        ({"model": {"temperature": 0.0}}, "clgsi temperature must be at least"),
        ({"model": {"nope": 1}}, "clgsi has no hyperparameter 'nope'"),
        ({"model": [1]}, "model: expected a mapping"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"model_name": "nope"}, "unknown model 'nope'"),
        ({"dataset": "custom"}, "--dataset custom needs a data set spec"),
    ):
        with pytest.raises(MsakitError, match=re.escape(message)):
            RunConfig.from_dict({**base, **extra})


# --------------------------------------------------------------------------- --set to the loss
def test_set_temperature_reaches_the_loss_through_one_check(monkeypatch):
    """``--set temperature=0.2``: preset layers and the override make one CLGSIConfig, checked
    once, which the model and its loss read without checking again."""
    calls = []
    check = CLGSIConfig.check
    monkeypatch.setattr(CLGSIConfig, "check", lambda self: (calls.append(self), check(self)))
    config = api.build_config("clgsi", "mosi", overrides=["temperature=0.2"])
    assert len(calls) == 1 and calls[0] is config.model and config.model.temperature == 0.2
    net = build_model(config, Dims(audio=5, vision=20), _tiny_text_encoder())
    assert net.config is config.model
    assert net.contrastive.temperature == 0.2
    assert len(calls) == 1


def _tiny_text_encoder() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32))


def test_an_out_of_range_temperature_is_one_error_line(tmp_path, capsys):
    data = write_synthetic(tmp_path / "m.pkl", "mosi", (8, 4, 4), seed=0)
    code = run_cli(["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
                    "--out", str(tmp_path / "run"), "--set", "temperature=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error:") and "clgsi temperature must be at least" in err[0]
    assert not (tmp_path / "run").exists()


def test_run_settings_and_model_settings_share_one_validator():
    config = preset("tfn", "mosi")
    for item, message in (
        ("warmup=1.0", "warmup must be below 1.0"),
        ("lr.audio=0", "lr.audio must be a number > 0"),
        ("optimizer=sgd", "optimizer must be one of adamw, adam"),
        ("text_out=0", "tfn text_out must be at least 1"),
        ("amp=fp16", None),
    ):
        if message is None:
            assert apply_overrides(config, [item]).amp == "fp16"
            continue
        with pytest.raises(MsakitError, match=re.escape(message)):
            apply_overrides(config, [item])
    assert config == preset("tfn", "mosi")  # overrides make a new config


def test_a_run_setting_is_one_field_declaration():
    """A new run setting is one declaration: ``--set``, its check, config.yaml and reading it
    back follow from it (here declared in this file, on a RunConfig of its own)."""
    extended = dataclasses.make_dataclass(
        "ExtendedRunConfig",
        [("label_smoothing", float,
          hp(0.0, "Smooth the regression targets by this share.", low=0.0, high=1.0))],
        bases=(RunConfig,),
    )
    base = extended(model_name="tfn", dataset="mosi")
    config = apply_overrides(base, ["label_smoothing=0.25"])
    assert config.label_smoothing == 0.25 and type(config) is extended
    with pytest.raises(MsakitError, match="label_smoothing must be below 1.0"):
        apply_overrides(base, ["label_smoothing=1.5"])
    with pytest.raises(MsakitError, match="expected a float"):
        apply_overrides(base, ["label_smoothing=much"])
    plain = config.to_dict()
    assert plain["label_smoothing"] == 0.25
    assert extended.from_dict(plain) == config


def test_generic_code_reads_model_settings_as_attributes():
    """Outside the models' own files, no code indexes a model's settings by name."""
    pattern = re.compile(r"(config\.model|model_config)\[\s*['\"]")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "models":  # a method's own code may
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and pattern.search(ast.unparse(node)):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)


# --------------------------------------------------------------------------- --dataset custom
SMALL = {  # the models that train on unaligned MOSI-shaped files, at tiny widths
    "clgsi": {"common_dim": 8, "specific_dim": 8, "head_dim": 8, "feedforward": 16},
    "conki": {"adapter_dim": 4, "fusion_dim": 8, "head_dim": 8, "feedforward": 16},
    "tfn": {"text_hidden": 8, "audio_hidden": 4, "vision_hidden": 4, "text_out": 4,
            "post_fusion_dim": 8},
    "lmf": {"text_hidden": 8, "audio_hidden": 4, "vision_hidden": 4, "rank": 2},
    "mult": {"dim": 8, "heads": 2, "layers": 1, "memory_layers": 1},
    "misa": {"hidden_size": 8, "fusion_feedforward": 16},
    "self_mm": {},
    "mmim": {},
}


@pytest.fixture(scope="module")
def custom_file(tmp_path_factory) -> Path:
    """A tiny MOSI-shaped file with precomputed text features and token ids (every model
    reads it), audio/vision cut to a few frames."""
    path = tmp_path_factory.mktemp("custom") / "corpus.pkl"
    return write_synthetic(str(path), "mosi", (12, 4, 4), seed=0, text_features=True,
                           frames={"audio": 12, "vision": 10})


@pytest.mark.parametrize("model", list(SMALL))
def test_dataset_custom_trains_every_model(model, custom_file, tiny_bert, tiny_bert_12,
                                           tmp_path):
    """``--dataset custom --label-range -3 3`` through the command line, one epoch: a model
    that reads the file's precomputed text features (TFN, LMF, MulT) gets no text encoder
    from the custom spec, and the file is checked against the custom spec."""
    spec = model_spec(model)
    assert set(SMALL[model]) <= set(spec.config().to_dict())
    encoder = [] if spec.text_input == "features" else [
        "--text-encoder", str(tiny_bert_12 if model == "conki" else tiny_bert)]
    sets = [x for k, v in SMALL[model].items() for x in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    assert run_cli(["train", "--model", model, "--dataset", "custom", "--label-range", "-3",
                    "3", "--data", str(custom_file), *encoder, "--seeds", "1", "--epochs", "1",
                    "--batch", "6", "--out", str(out), "--quiet", *sets,
                    "--set", "stop_at_horizon=true"]) == 0  # one epoch also for MMSA's loop
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["dataset"] == CUSTOM and saved["dataset_spec"]["label_range"] == [-3.0, 3.0]
    assert (saved["text_encoder"] is None) == (spec.text_input == "features")
    ckpt = api.load_checkpoint(out / "seed-1")
    assert ckpt.config.dataset == custom_spec((-3, 3)) and ckpt.config.model_name == model


def test_custom_spec_text_encoder_is_a_default_not_a_flag():
    """The custom spec's encoder replaces an encoder model's preset encoder; a model without
    a text encoder stays without one (a user's --text-encoder for it is still refused)."""
    spec = custom_spec((-3, 3), text_encoder="some/bert")
    assert preset("clgsi", spec).text_encoder == "some/bert"
    for model in ("tfn", "lmf", "mult"):
        assert preset(model, spec).text_encoder is None


def test_text_encoder_flag_for_a_features_model_is_refused(custom_file, tmp_path, capsys):
    code = run_cli(["train", "--model", "tfn", "--dataset", "custom", "--label-range", "-3",
                    "3", "--data", str(custom_file), "--text-encoder", "minilm", "--out",
                    str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "drop --text-encoder minilm" in err[0]


@pytest.mark.parametrize("model", ["misa", "ef_lstm", "bert_mag"])
def test_a_model_setting_named_like_a_run_setting_round_trips(model, tmp_path):
    """MISA's own ``dropout`` and the run setting ``dropout`` (every dropout of the model) are two
    settings: a saved configuration reloads both as they were; ``--set model.dropout=`` reaches
    the model's own, ``--set dropout=`` the run's."""
    from msakit.api import build_config
    from msakit.rerun import load_run_config

    dataset = "sims" if model != "ef_lstm" else "mosi"
    config = build_config(model, dataset, overrides=["model.dropout=0.3"])
    assert config.model.dropout == 0.3 and config.dropout is None
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    again = load_run_config(path)
    assert again.to_dict() == config.to_dict()
    both = build_config(model, dataset, overrides=["dropout=0.1", "model.dropout=0.4"])
    assert both.dropout == 0.1 and both.model.dropout == 0.4
