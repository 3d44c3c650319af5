"""Model plugins: a distribution installed on the path with an entry point in the
``msakit.models`` group gives the installed ``msakit`` command its models (train, evaluate,
predict, tune, report), with no wrapper script; a plugin that fails to load is one
``warning:`` line naming its distribution, and every other model still works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import msakit

PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from msakit.config.model_config import ModelConfig, hp
from msakit.encoders.sequence import masked_mean
from msakit.encoders.text import bert_inputs
from msakit.models.base import LOCAL, LossOutput, ModelOutput, MSAModel, groups_by_prefix
from msakit.models.registry import ModelSpec, register_model


@dataclass
class TinyConfig(ModelConfig, model="tiny"):
    """[CLS; mean audio; mean vision] -> Linear."""

    width: int = hp(8, "hidden width", low=1)


class Tiny(MSAModel):
    def __init__(self, config, dims, text_encoder):
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder
        d = text_encoder.config.hidden_size + dims.audio + dims.vision
        self.head = nn.Sequential(nn.Linear(d, config.width), nn.ReLU(),
                                  nn.Linear(config.width, 1))

    def text_features(self, text):
        return {"cls": self.text_encoder(**bert_inputs(text)).last_hidden_state[:, 0]}

    def forward(self, batch):
        a = masked_mean(batch.audio,
                        torch.arange(batch.audio.size(1)) < batch.audio_lengths[:, None])
        v = masked_mean(batch.vision,
                        torch.arange(batch.vision.size(1)) < batch.vision_lengths[:, None])
        fused = torch.cat([self.cached_text_features(batch)["cls"], a, v], dim=-1)
        return ModelOutput(self.head(fused).squeeze(-1), {"fused": fused})

    def compute_loss(self, output, batch, ctx=LOCAL):
        task = ctx.mean((output.prediction - batch.labels).abs())
        return LossOutput(task, task)

    def parameter_groups(self):
        return groups_by_prefix(self, {"text": ("text_encoder.",)})


register_model(ModelSpec(
    name="tiny", title="Tiny", paper="a plugin", config=TinyConfig, build=Tiny,
    presets={"mosi": {"run": {"batch_size": 8, "epochs": 1,
                              "lr": {"text": 1e-4, "other": 1e-3}}, "model": {"width": 4}}},
    search_space={"width": ("int", 2, 16)},
))
'''


def install(root: Path, dist: str, module: str, source: str) -> None:
    """A distribution as pip leaves it on a path: ``module.py`` and a dist-info folder whose
    entry_points.txt names the module in the ``msakit.models`` group."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[msakit.models]\n{module} = {module}\n")


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    install(root, "msakit-tiny-plugin", "msakit_tiny", PLUGIN)
    install(root, "msakit-broken-plugin", "msakit_broken",
            "raise ImportError('needs a package that is not installed')\n")
    return root


def msakit_cli(plugin_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m msakit ARGV`` in a fresh process with the plugins' folder on its path."""
    src = str(Path(msakit.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([str(plugin_path), src]), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "msakit", *argv], env=env, text=True,
                          capture_output=True, timeout=600)


def broken_warning(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "msakit-broken-plugin" in line]


def test_a_plugin_model_trains_evaluates_predicts_tunes_and_reports(
    plugin_path, small_mosi_npz, tiny_bert, tmp_path
):
    data, run = str(small_mosi_npz), tmp_path / "run"
    done = msakit_cli(plugin_path, "train", "--model", "tiny", "--dataset", "mosi", "--data",
                      data, "--text-encoder", str(tiny_bert), "--seeds", "1", "2", "--out",
                      str(run), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    warning = broken_warning(done.stderr)  # the broken plugin: one line, and training went on
    assert len(warning) == 1 and warning[0].startswith("warning: "), done.stderr
    assert "Traceback" not in done.stderr and "needs a package" in warning[0]
    assert (run / "seed-1" / "model.safetensors").is_file() and (run / "results.csv").is_file()

    done = msakit_cli(plugin_path, "evaluate", "--checkpoint", str(run), "--data", data)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[0] for line in done.stdout.splitlines()[-4:]] == [
        "2", "-" * len("mean"), "mean", "std"]

    predictions = tmp_path / "p.csv"
    done = msakit_cli(plugin_path, "predict", "--checkpoint", str(run / "seed-1"), "--data",
                      data, "--out", str(predictions))
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(predictions.read_text().splitlines()) == 1 + 8  # the header, 8 test clips

    done = msakit_cli(plugin_path, "report", str(run))
    assert done.returncode == 0 and "run" in done.stdout, done.stderr[-3000:]

    sweep = tmp_path / "sweep"
    done = msakit_cli(plugin_path, "tune", "--model", "tiny", "--dataset", "mosi", "--data",
                      data, "--text-encoder", str(tiny_bert), "--trials", "1", "--out",
                      str(sweep), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "msakit train --model tiny" in done.stdout


def test_without_the_plugin_on_the_path_the_model_is_unknown(tmp_path, small_mosi_npz):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = msakit_cli(empty, "train", "--model", "tiny", "--dataset", "mosi", "--data",
                      str(small_mosi_npz), "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "'tiny'" in done.stderr and not broken_warning(done.stderr)
