"""The model registry: one entry per model (builder, typed config, presets, search space), read by
the command line, tune and report; a model registered here, in this file only, trains through
the CLI. Typed configs turn ``--set`` mistakes into one error line before anything is loaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from conftest import run_cli
from torch import nn

from msakit import api
from msakit.config import model_config as model_config_module
from msakit.config.model_config import ModelConfig, hp
from msakit.core.errors import MsakitError
from msakit.data.batching import Batch
from msakit.encoders.sequence import masked_mean
from msakit.encoders.text import bert_inputs, load_text_encoder
from msakit.models import registry
from msakit.models.base import (
    LOCAL,
    Dims,
    LossContext,
    LossOutput,
    ModelOutput,
    MSAModel,
    groups_by_prefix,
)
from msakit.models.clgsi import CLGSI, CLGSIConfig
from msakit.models.registry import ModelSpec, create_model, model_names, model_spec, preset


# --------------------------------------------------------------------------- a toy model
@dataclass
class ToyConfig(ModelConfig, model="toy"):
    """A late-fusion toy: [CLS; mean audio; mean vision] -> Linear."""

    width: int = hp(8, "hidden width", low=1)
    dropout: float = hp(0.0, "dropout before the head", low=0.0, high=1.0)
    pool: str = hp("mean", "how the audio/vision frames are pooled", choices=("mean",))


class Toy(MSAModel):
    def __init__(self, config: ToyConfig, dims: Dims, text_encoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder
        d = text_encoder.config.hidden_size + dims.audio + dims.vision
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(d, config.width),
                                  nn.ReLU(), nn.Linear(config.width, 1))

    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cls": self.text_encoder(**bert_inputs(text)).last_hidden_state[:, 0]}

    def forward(self, batch: Batch) -> ModelOutput:
        audio, vision = batch.audio, batch.vision
        a_mask = torch.arange(audio.size(1)) < batch.audio_lengths[:, None]
        v_mask = torch.arange(vision.size(1)) < batch.vision_lengths[:, None]
        fused = torch.cat([self.cached_text_features(batch)["cls"], masked_mean(audio, a_mask),
                           masked_mean(vision, v_mask)], dim=-1)
        return ModelOutput(self.head(fused).squeeze(-1), {"fused": fused})

    def compute_loss(self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL):
        task = ctx.mean((output.prediction - batch.labels).abs())
        return LossOutput(task, task)

    def parameter_groups(self):
        return groups_by_prefix(self, {"text": ("text_encoder.",)})


TOY_RUN = {"batch_size": 8, "epochs": 2, "lr": {"text": 1e-4, "other": 1e-3}}
TOY = ModelSpec(
    name="toy", title="Toy", paper="this test", config=ToyConfig, build=Toy,
    presets={"mosi": {"run": TOY_RUN, "model": {"width": 4}}},
    named_presets={"wide": {"mosi": {"model": {"width": 32}}}},
    search_space={"width": ("int", 2, 16), "lr.other": ("float", 1e-4, 1e-2, True)},
)


@pytest.fixture
def toy():
    """The toy registered for one test, and gone after it."""
    registry.register_model(TOY)
    yield TOY
    registry._REGISTRY.pop("toy")


# --------------------------------------------------------------------------- tests
def test_a_model_registered_in_one_file_trains_and_evaluates_through_the_cli(
    toy, small_mosi_npz, tiny_bert, tmp_path, capsys
):
    out = tmp_path / "run"
    assert run_cli(["train", "--model", "toy", "--dataset", "mosi", "--data", str(small_mosi_npz),
                    "--text-encoder", str(tiny_bert), "--seeds", "7", "--out", str(out),
                    "--quiet"]) == 0
    ckpt = api.load_checkpoint(out / "seed-7")
    assert isinstance(ckpt.model, Toy) and ckpt.model.config.width == 4  # the toy's preset
    assert ckpt.config.epochs == 2 and ckpt.config.batch_size == 8
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(out / "seed-7"), "--data",
                    str(small_mosi_npz)]) == 0
    assert "MAE" in capsys.readouterr().out


def test_a_registered_model_is_a_cli_choice_with_its_presets(toy, capsys):
    assert run_cli(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "toy (Toy)" in text and "'wide' (toy)" in text
    assert model_names()[:2] == ["clgsi", "conki"] and "toy" in model_names()
    wide = preset("toy", "mosi", "wide").model
    assert wide.to_dict() == {"width": 32, "dropout": 0.0, "pool": "mean"}
    with pytest.raises(MsakitError, match="toy has no preset for data set 'sims'; choose mosi"):
        preset("toy", "sims")


def test_an_unregistered_model_is_one_error_line(capsys):
    assert "toy" not in model_names()
    assert run_cli(["train", "--model", "toy", "--dataset", "mosi", "--data", "x.npz",
                    "--out", "o"]) == 2
    assert "invalid choice: 'toy'" in capsys.readouterr().err


def test_a_config_class_must_name_its_model():
    @dataclass
    class Other(ModelConfig, model="other-toy"):
        width: int = hp(1, "w")

    try:
        with pytest.raises(ValueError, match="declared for model 'other-toy'"):
            registry.register_model(dataclasses.replace(TOY, name="toy2", config=Other))
    finally:
        model_config_module._CONFIGS.pop("other-toy")


@pytest.mark.parametrize("item, needle", [
    ("common_dim=-4", "clgsi common_dim must be at least 1, got -4"),
    ("fusion=sum", "clgsi fusion must be one of glfk, add"),
    ("head_dropout=1.0", "clgsi head_dropout must be below 1.0"),
    ("temperature=0", "clgsi temperature must be at least"),
    ("use_common=false", None),
    ("gamma=abc", "expected a float"),
    ("no_such=1", "unknown key"),
])
def test_set_mistakes_are_one_line_before_anything_loads(item, needle):
    if needle is None:
        assert api.build_config("clgsi", "mosi", overrides=[item]).model["use_common"] is False
        return
    with pytest.raises(MsakitError, match=needle):
        api.build_config("clgsi", "mosi", overrides=[item])


def test_a_nullable_hyperparameter_takes_its_declared_type():
    assert api.build_config("conki", "mosi", overrides=["shared_dim=32"]).model["shared_dim"] == 32
    assert api.build_config("conki", "mosi", overrides=["adapter_lr=null"]).model[
        "adapter_lr"] is None
    with pytest.raises(MsakitError, match="shared_dim"):
        api.build_config("conki", "mosi", overrides=["shared_dim=wide"])
    with pytest.raises(MsakitError, match="conki modalities"):
        api.build_config("conki", "mosi", overrides=["modalities=tx"])


def test_typed_config_reads_plain_mappings_and_checks_them():
    config = CLGSIConfig.from_dict({"common_dim": 32, "gamma": 1})
    assert config.common_dim == 32 and config.gamma == 1.0 and isinstance(config.gamma, float)
    assert CLGSIConfig.from_dict(config.to_dict()) == config
    with pytest.raises(MsakitError, match="clgsi has no hyperparameter 'comon_dim'"):
        CLGSIConfig.from_dict({"comon_dim": 32})
    with pytest.raises(MsakitError, match="clgsi use_common: expected bool, got 'yes'"):
        CLGSIConfig.from_dict({"use_common": "yes"})
    with pytest.raises(MsakitError, match="clgsi audio_heads: expected int, got 1.5"):
        CLGSIConfig.from_dict({"audio_heads": 1.5})
    with pytest.raises(MsakitError, match="may not be null"):
        CLGSIConfig.from_dict({"gamma": None})


def test_a_model_builds_from_its_typed_defaults_without_presets(tiny_bert):
    encoder = load_text_encoder(str(tiny_bert))
    model = CLGSI(CLGSIConfig(common_dim=16, specific_dim=16, head_dim=8, feedforward=16),
                  Dims(audio=5, vision=20), encoder)
    assert model.config.fusion == "glfk" and model.head.net[1].in_features == 16 + 3 * 16
    same = create_model("clgsi", model.config.to_dict(), Dims(audio=5, vision=20), encoder)
    assert same.config == model.config


def test_every_hyperparameter_of_every_model_is_documented():
    for name in model_names():
        spec = model_spec(name)
        docs = spec.config.describe()
        assert docs and all(text.strip() for text in docs.values()), name
        assert spec.title and spec.paper, name
        for dataset in spec.presets:  # every preset builds a valid config
            preset(name, dataset)
            for named in spec.preset_names():
                assert preset(name, dataset, named).preset == named
        fields = {f.name for f in dataclasses.fields(spec.config)}
        for key in spec.search_space:  # every searched key is a setting or a hyperparameter
            assert key.split(".")[0] in fields | {"lr", "weight_decay", "dropout"}, (name, key)


def test_a_word_yaml_reads_as_a_boolean_stays_a_word_for_a_string_setting():
    assert api.build_config("clgsi", "mosi", overrides=["amp=off"]).amp == "off"
    with pytest.raises(MsakitError, match="clgsi fusion must be one of"):
        api.build_config("clgsi", "mosi", overrides=["fusion=yes"])
    with pytest.raises(MsakitError, match="expected true or false"):
        api.build_config("clgsi", "mosi", overrides=["use_common=off2"])
