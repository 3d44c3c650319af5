"""Around training: exact resume after SIGKILL, TensorBoard logs, the progress bar, and files
that run no code (npz features, ``weights_only`` checkpoints)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import best_checkpoint, run_cli, write_short_synthetic

from msakit import api
from msakit.data.mmsa import convert_to_npz, load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.training.trainer import Trainer

SMALL = ["--set", "feedforward=32", "--set", "common_dim=16", "--set", "specific_dim=16",
         "--set", "head_dim=16"]
FRAMES = {"audio": 20, "vision": 16}
SEEDS = ("5", "6")
EPOCHS = 3
STEPS_PER_EPOCH = 3  # 24 training samples, batch 8
# One thread per process: the two runs of the test share the machine without oversubscription,
# and every run (unbroken, killed, resumed) uses the same kernels.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}
TIMEOUT = 600


pytestmark = pytest.mark.usefixtures("one_thread")
run = run_cli


def short_file(folder: Path) -> tuple[Path, Path]:
    """A MOSI-shaped synthetic pickle (24/8/8, audio/vision cut to FRAMES) and its npz."""
    pkl = write_short_synthetic(folder / "mosi.pkl", "mosi", (24, 8, 8), FRAMES)
    convert_to_npz(pkl, folder / "mosi.npz")
    return pkl, folder / "mosi.npz"


def train_argv(data: Path, out: Path, tiny_bert: Path) -> list[str]:
    return ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
            "--text-encoder", str(tiny_bert), "--out", str(out), "--epochs", str(EPOCHS),
            "--seeds", *SEEDS, "--batch", "8", "--quiet", "--set", "early_stop=10", *SMALL]


def msakit(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "msakit", *argv], env=ENV, text=True,
                            **kwargs)


def saved_epoch(path: Path) -> int:
    """The "epoch" entry of a last.pt, 0 while there is none (it is replaced atomically)."""
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


# The killed run: the CLI, with the trainer's checkpoint writer wrapped so that the process
# SIGKILLs itself the moment seed 6's first last.pt has landed. Watching the file from outside
# raced: an epoch takes ~0.1 s, and seed 6 sometimes finished before the signal arrived.
KILLED_RUN = """
import os, signal, sys
import torch
from msakit.training import trainer
from msakit.cli import main

save = trainer.torch_save_atomic

def save_then_die(obj, path):
    out = save(obj, path)
    if path.name == "last.pt" and path.parent.name == "seed-6" and obj["epoch"] >= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

trainer.torch_save_atomic = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def killed_run(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KILLED_RUN, *argv], env=ENV, text=True,
                            **kwargs)


@pytest.fixture(scope="module")
def resume(tmp_path_factory, tiny_bert):
    """Seeds 5 and 6, 3 epochs each: an unbroken run, and a run killed (SIGKILL) once seed 6
    has finished its first epoch (it kills itself there), then continued with --resume."""
    root = tmp_path_factory.mktemp("resume")
    pkl, data = short_file(root)
    unbroken_dir, killed_dir = root / "unbroken", root / "killed"
    unbroken = msakit(train_argv(data, unbroken_dir, tiny_bert), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    try:
        with open(root / "killed.err", "w") as err:
            killed = killed_run(train_argv(data, killed_dir, tiny_bert),
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            killed.wait(timeout=TIMEOUT)
        finally:
            killed.kill()
        assert killed.returncode == -signal.SIGKILL, (root / "killed.err").read_text()
        seed5 = killed_dir / "seed-5"
        before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in seed5.iterdir()}
        at_kill = SimpleNamespace(
            returncode=killed.returncode,
            epoch=saved_epoch(killed_dir / "seed-6" / "last.pt"),
            results=(killed_dir / "results.csv").read_text(),
        )
        resumed = msakit([*train_argv(data, killed_dir, tiny_bert), "--resume"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        resumed_out, resumed_err = resumed.communicate(timeout=TIMEOUT)
        unbroken_out, unbroken_err = unbroken.communicate(timeout=TIMEOUT)
        assert unbroken.returncode == 0, unbroken_err
        assert resumed.returncode == 0, resumed_err
    except BaseException:
        unbroken.kill()
        raise
    return SimpleNamespace(
        root=root, pkl=pkl, data=data, unbroken=unbroken_dir, killed=killed_dir,
        at_kill=at_kill, seed5_before=before, stderr=[unbroken_err, resumed_err],
    )


def test_the_run_was_killed_mid_training(resume):
    assert resume.at_kill.returncode == -signal.SIGKILL
    assert 1 <= resume.at_kill.epoch <= EPOCHS
    # Seed 5 had finished and seed 6 had not: results.csv held seed 5 only.
    assert [line.split(",")[0] for line in resume.at_kill.results.splitlines()] == [
        "seed", "5", "mean", "std"
    ]


def test_a_killed_run_resumes_with_no_warning(resume):
    """SIGKILL left the lock file behind but no lock (the kernel dropped it): the resumed run
    says nothing about it."""
    resumed_err = resume.stderr[1]
    assert "warning" not in resumed_err and "lock" not in resumed_err, resumed_err


def test_resumed_run_ends_with_the_metrics_of_an_unbroken_run(resume):
    assert (resume.killed / "results.csv").read_text() == (
        resume.unbroken / "results.csv").read_text()
    for seed in SEEDS:
        a = best_checkpoint(resume.unbroken / f"seed-{seed}")
        b = best_checkpoint(resume.killed / f"seed-{seed}")
        assert a["epoch"] == b["epoch"] and a["valid"] == b["valid"]
        assert a["model"].keys() == b["model"].keys()
        for key, value in a["model"].items():
            assert torch.equal(value, b["model"][key]), key

        def without_time(path: Path) -> list[dict]:
            return [{k: v for k, v in r.items() if k != "seconds"}
                    for r in json.loads(path.read_text())]

        assert without_time(resume.killed / f"seed-{seed}" / "history.json") == without_time(
            resume.unbroken / f"seed-{seed}" / "history.json")


def test_a_finished_seed_is_not_retrained(resume):
    """Seed 5 finished before the kill and kept its best weights only (no last.pt): the resume
    takes its row from results.csv and touches none of its files."""
    seed5 = resume.killed / "seed-5"
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in seed5.iterdir()}
    assert set(after) == {"model.safetensors", "config.json", "history.json"}
    assert after == resume.seed5_before


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logs_losses_learning_rates_and_validation_metrics(resume):
    logs = scalars(resume.unbroken / "tensorboard" / "seed-5")
    steps = list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    for tag in ("train/loss", "train/task_loss", "train/contrastive_loss", "lr/text",
                "lr/text_no_decay", "lr/audio", "lr/vision", "lr/other"):
        assert [s for s, _ in logs[tag]] == steps, tag
    lrs = [v for _, v in logs["lr/other"]]
    assert lrs[-1] < lrs[0] == max(lrs)  # the schedule decays
    epoch_ends = [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
    history = json.loads((resume.unbroken / "seed-5" / "history.json").read_text())
    for metric in ("MAE", "Corr", "Has0_acc_2", "Non0_F1_score", "Mult_acc_7", "loss"):
        assert [s for s, _ in logs[f"valid/{metric}"]] == epoch_ends
        assert [v for _, v in logs[f"valid/{metric}"]] == pytest.approx(
            [r[f"valid_{metric}"] for r in history], abs=1e-6)


def test_tensorboard_of_the_resumed_run_equals_the_unbroken_one(resume):
    # What the killed process logged after its last completed epoch is purged on resume.
    a = scalars(resume.unbroken / "tensorboard" / "seed-6")
    b = scalars(resume.killed / "tensorboard" / "seed-6")
    assert a.keys() == b.keys()
    for tag in a:
        assert a[tag] == b[tag], tag


def test_npz_and_pickle_give_the_same_metrics(resume, capsys):
    for err in resume.stderr:  # both training processes read the npz file
        assert "pickle" not in err, err
    ckpt = resume.unbroken / "seed-5"
    capsys.readouterr()
    assert run(["evaluate", "--checkpoint", str(ckpt), "--data", str(resume.data)]) == 0
    from_npz = capsys.readouterr()
    assert from_npz.err == ""
    assert run(["evaluate", "--checkpoint", str(ckpt), "--data", str(resume.pkl)]) == 0
    from_pkl = capsys.readouterr()
    # the restricted unpickler runs no code: nothing to warn of; one note on the converted copy
    assert [line.split(" ")[0] for line in from_pkl.err.splitlines()] == ["note:"]
    metrics = json.loads(from_npz.out.splitlines()[-1])
    assert metrics == json.loads(from_pkl.out.splitlines()[-1])
    row = (resume.unbroken / "results.csv").read_text().splitlines()[1].split(",")
    assert row[0] == "5" and [float(x) for x in row[1:]] == list(metrics.values())


def test_resume_with_other_settings_is_refused(resume, tiny_bert, capsys):
    argv = train_argv(resume.data, resume.killed, tiny_bert)
    before = (resume.killed / "config.yaml").read_text()
    capsys.readouterr()
    assert run([*argv, "--resume", "--set", "gamma=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "gamma" in err
    assert (resume.killed / "config.yaml").read_text() == before


def test_every_torch_load_in_msakit_is_weights_only():
    src = Path(api.__file__).parent
    calls = 0
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                calls += 1
                flags = {k.arg: k.value for k in node.keywords}
                assert isinstance(flags.get("weights_only"), ast.Constant), (path, node.lineno)
                assert flags["weights_only"].value is True, (path, node.lineno)
    assert calls >= 3


# --------------------------------------------------------------------------- progress bar
class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture(scope="module")
def small_trainer_parts(tmp_path_factory, tiny_bert):
    _, data = short_file(tmp_path_factory.mktemp("progress"))
    config = api.build_config("clgsi", "mosi", text_encoder=str(tiny_bert), epochs=1, batch=8,
                              overrides=[s for s in SMALL if s != "--set"])
    encoder = load_text_encoder(config.text_encoder)
    features = load_feature_file(data)
    return config, encoder, features


@pytest.mark.parametrize("quiet, tty, shown", [(False, True, True), (False, False, False),
                                               (True, True, False)])
def test_progress_bar_on_a_terminal_only_and_epoch_lines_without_one(
    small_trainer_parts, monkeypatch, quiet, tty, shown
):
    config, encoder, features = small_trainer_parts
    model = api.build_model(config, api.dims_of(features), copy.deepcopy(encoder))
    stream = Terminal(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    trainer = Trainer(model=model, config=config, train=features.splits["train"],
                      valid=features.splits["valid"], quiet=quiet)
    trainer.fit()
    out = stream.getvalue()
    if not shown:
        # no bar; without a terminal (and not --quiet), one plain line per epoch instead
        lines = [] if quiet else [f"seed 0 epoch {e}/{config.epochs}" for e in
                                  range(1, config.epochs + 1)]
        assert [line.split(":")[0] for line in out.splitlines()] == lines, out
        return
    assert "epoch 1" in out
    assert re.search(r"loss=\d+\.\d{4}", out), out
    # tqdm's [elapsed<remaining, rate]: the time left in the epoch
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", out), out


@pytest.mark.parametrize("horizon, shown", [(True, "seed 0 epoch 3/1"),
                                            (False, "seed 0 epoch 3 (until early stop)")])
def test_an_epoch_line_past_the_horizon_does_not_claim_a_last_epoch(
    small_trainer_parts, monkeypatch, horizon, shown
):
    """MISA/Self-MM/authors presets train past --epochs until early stop: no 'epoch 3/1'."""
    config, encoder, features = small_trainer_parts
    config = dataclasses.replace(config, stop_at_horizon=horizon)
    model = api.build_model(config, api.dims_of(features), copy.deepcopy(encoder))
    stream = Terminal(False)
    monkeypatch.setattr(sys, "stderr", stream)
    trainer = Trainer(model=model, config=config, train=features.splits["train"],
                      valid=features.splits["valid"])
    trainer._print_epoch({"epoch": 3, "train_loss": 1.0, "train_task_loss": 1.0,
                          "train_contrastive_loss": 0.0, "valid_MAE": 0.5, "seconds": 1.0})
    assert stream.getvalue().split(":")[0] == shown
