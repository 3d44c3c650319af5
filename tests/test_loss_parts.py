"""Loss parts named by the model (issue 21, item 4): each model declares the terms of its loss
besides the task loss (``MSAModel.loss_parts``), and the epoch line, ``history.json``, the step
log and TensorBoard name them so: LMF has none, Self-MM its unimodal losses, CLGSI its
contrastive loss. ``msakit plot curves`` draws the parts of new runs and old runs alike."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli

from msakit.models.lmf import LMF
from msakit.reporting import plots

SMALL_CLGSI = ["feedforward=32", "common_dim=16", "specific_dim=16", "head_dim=16"]
SMALL_LMF = ["text_hidden=8", "audio_hidden=4", "vision_hidden=8"]
# model: (the parts it names, its data ("features": a file with precomputed text), --set)
CASES = {
    "lmf": ((), "features", SMALL_LMF),
    "self_mm": (("text", "audio", "vision"), "npz", []),
    "clgsi": (("contrastive",), "npz", SMALL_CLGSI),
}
EPOCH_LINE = re.compile(r"seed 3 epoch \d+/2: loss (\S+) \((.*)\), valid MAE")


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    from mmsa_reference import write_mmsa_file

    root = tmp_path_factory.mktemp("loss_parts")
    return write_mmsa_file(root / "mosi.pkl", "mosi", (12, 4, 4), {"audio": 24, "vision": 18})


def train(model: str, data, tiny_bert, out, sets: list[str]) -> int:
    encoder = [] if model == "lmf" else ["--text-encoder", str(tiny_bert)]
    argv = ["train", "--model", model, "--dataset", "mosi", "--data", str(data), *encoder,
            "--seeds", "3", "--out", str(out), "--log-steps", str(out.parent / "steps.jsonl")]
    for s in ["epochs=2", "stop_at_horizon=true", "batch_size=6", *sets]:
        argv += ["--set", s]
    return run_cli(argv)


def train_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t for t in acc.Tags()["scalars"] if t.startswith("train/")}


@pytest.mark.parametrize("model", CASES)
def test_every_log_names_the_models_loss_parts(model, features_file, small_mosi_npz, tiny_bert,
                                               tmp_path, capsys):
    parts, data, sets = CASES[model]
    data = features_file if data == "features" else small_mosi_npz
    out = tmp_path / "run"
    assert train(model, data, tiny_bert, out, sets) == 0, capsys.readouterr().err
    keys = {"loss", "task_loss", *(f"{p}_loss" for p in parts)}

    lines = [m for m in map(EPOCH_LINE.match, capsys.readouterr().err.splitlines()) if m]
    assert len(lines) == 2
    for line in lines:  # "loss 0.81 (task 0.70, contrastive 0.11)"; LMF: "(task 0.81)"
        named = [item.split(" ")[0] for item in line.group(2).split(", ")]
        assert named == ["task", *parts]
    history = json.loads((out / "seed-3" / "history.json").read_text())
    for record in history:
        assert {k for k in record if k.startswith("train_")} == {f"train_{k}" for k in keys}
        if not parts:
            assert record["train_loss"] == record["train_task_loss"]
    steps = [json.loads(s) for s in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert steps and all(set(s) - {"seed", "step", "epoch", "lr"} == keys for s in steps)
    assert train_tags(out / "tensorboard" / "seed-3") == {f"train/{k}" for k in keys}


def test_a_model_whose_loss_returns_undeclared_parts_is_one_error_line(
        features_file, tiny_bert, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(LMF, "loss_parts", ("contrastive",))
    assert train("lmf", features_file, tiny_bert, tmp_path / "run", SMALL_LMF) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: LMF.compute_loss returned the loss parts")
    assert "loss_parts ['contrastive']" in err[0]


def test_curves_draw_the_parts_of_new_and_old_histories(tmp_path, monkeypatch):
    """A run written before the parts were named has ``train_contrastive_loss`` (for every
    model); one written after has the model's parts: both are drawn, each part by name."""
    old = {"train_task_loss": 0.9, "train_contrastive_loss": 0.0}
    new = {"train_task_loss": 0.8, "train_text_loss": 0.3, "train_audio_loss": 0.2}
    for seed, parts in (("1", old), ("2", new)):
        (tmp_path / "run" / f"seed-{seed}").mkdir(parents=True)
        history = [{"epoch": e, "train_loss": 1.0, **parts, "valid_loss": 0.9, "valid_MAE": 0.9}
                   for e in (1, 2)]
        (tmp_path / "run" / f"seed-{seed}" / "history.json").write_text(json.dumps(history))
    figures = []
    real_save = plots._save

    def save(fig, out, extra=None):
        figures.append(fig)
        return real_save(fig, out, extra)

    monkeypatch.setattr(plots, "_save", save)
    plots.plot_curves(tmp_path / "run", tmp_path / "curves.png")
    panel = figures[0].axes[1]
    assert panel.get_title() == "Other training losses"
    assert [t.get_text() for t in panel.get_legend().get_texts()] == ["contrastive", "text",
                                                                      "audio"]
    drawn = [list(line.get_ydata()) for line in panel.get_lines()]
    assert [0.0, 0.0] in drawn and [0.3, 0.3] in drawn and [0.2, 0.2] in drawn
    assert (tmp_path / "curves.png").stat().st_size > 0
