"""``msakit tune``: two workers at once share one SQLite study (every trial recorded once), pruned
trials end cleanly, and best.yaml retrains the best trial exactly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from msakit import api, cli
from msakit.config import apply_overrides
from msakit.config.datasets import dataset_names, dataset_spec, preset_source
from msakit.core.errors import MsakitError
from msakit.models.registry import model_names, model_spec, preset
from msakit.tune import format_value, tune

SMALL = ["feedforward=32", "common_dim=16", "specific_dim=16", "head_dim=16"]
STUDY = "msakit-clgsi-mosi"


@pytest.fixture(scope="module")
def data_file(small_mosi_npz) -> Path:
    return small_mosi_npz


def tune_argv(data: Path, encoder: Path, out: Path, trials: int, epochs: int = 1) -> list[str]:
    sets = [x for s in SMALL for x in ("--set", s)]
    return ["tune", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
            "--text-encoder", str(encoder), "--trials", str(trials), "--epochs", str(epochs),
            "--batch", "8", "--out", str(out), *sets]


def load(out: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'optuna.db'}")


def test_two_workers_share_one_sqlite_study(tmp_path, data_file, tiny_bert):
    out, per_worker = tmp_path / "sweep", 2
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    argv = [sys.executable, "-m", "msakit", *tune_argv(data_file, tiny_bert, out, per_worker)]
    workers = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        logs = [w.communicate(timeout=600) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=60)
    for w, (_, err) in zip(workers, logs, strict=True):
        assert w.returncode == 0, err[-3000:]

    trials = load(out).get_trials(deepcopy=False)
    assert len(trials) == 2 * per_worker
    assert sorted(t.number for t in trials) == list(range(2 * per_worker))
    assert len({t._trial_id for t in trials}) == len(trials)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # Each worker ran its own trials: the numbers its log reports are disjoint and cover all.
    finished = [re.findall(r"Trial (\d+) (?:finished|pruned)", err) for _, err in logs]
    assert [len(f) for f in finished] == [per_worker, per_worker]
    assert sorted(int(n) for f in finished for n in f) == list(range(2 * per_worker))
    for t in trials:
        assert (trial_dir(out, t.number) / "config.yaml").is_file()

    summary = yaml.safe_load((out / "best.yaml").read_text())
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: (t.value, t.number))
    assert summary["best"]["trial"] == best.number
    assert summary["best"]["value"] == best.value
    assert summary["trials"]["COMPLETE"] + summary["trials"]["PRUNED"] == 2 * per_worker
    assert summary["command"].startswith("msakit train --model clgsi --dataset mosi")
    # Each worker prints the best it saw last; the file holds the last one written, which saw
    # every trial (the workers finish in either order).
    assert all("retrain it with:" in stdout for stdout, _ in logs)
    assert any(summary["command"] in stdout for stdout, _ in logs)


def test_summary_lock_makes_a_second_writer_wait(tmp_path):
    from msakit.tune import _locked

    events: list[str] = []
    with _locked(tmp_path / ".lock"):
        waiter = threading.Thread(target=lambda: _locked_append(tmp_path / ".lock", events))
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and events == []  # blocked while the lock is held
        events.append("first")
    waiter.join(timeout=30)
    assert events == ["first", "second"]


def _locked_append(path, events):
    from msakit.tune import _locked

    with _locked(path):
        events.append("second")


def test_pruned_trials_end_cleanly_and_a_later_worker_joins(tmp_path, data_file, tiny_bert):
    out = tmp_path / "sweep"
    common = dict(out=out, text_encoder=str(tiny_bert), batch=8, overrides=SMALL, quiet=True)
    # Every trial is pruned after its first epoch: the Trainer stops, the trial is PRUNED.
    result = tune("clgsi", "mosi", data_file, trials=2, epochs=2,
                  pruner=optuna.pruners.ThresholdPruner(upper=0.0), **common)
    assert result.best is None and not (out / "best.yaml").exists()
    trials = load(out).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in trials)
    for t in trials:  # stopped after one epoch: no test evaluation, no results table
        run = trial_dir(out, t.number)
        assert (run / "config.yaml").is_file()
        assert not list(run.glob("seed-*/*.pt"))  # not a best trial: no checkpoint is kept
        assert not (run / "results.csv").exists()

    # A second worker loads the same study (default storage and name) and adds to it.
    result = tune("clgsi", "mosi", data_file, trials=1, epochs=1,
                  pruner=optuna.pruners.NopPruner(), **common)
    trials = load(out).get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2]
    assert trials[2].state == TrialState.COMPLETE
    assert (trial_dir(out, 2) / "results.csv").is_file()

    # best.yaml retrains exactly the best trial: its --set list gives the trial's values.
    summary = yaml.safe_load((out / "best.yaml").read_text())
    assert summary == result.best and summary["best"]["trial"] == 2
    config = api.build_config("clgsi", "mosi", overrides=summary["best"]["set"])
    for name, value in trials[2].params.items():
        group, _, key = name.partition(".")
        assert (config.lr[key] if group == "lr" else config.model[name]) == value
    assert summary["config"]["model"] == config.model.to_dict()
    assert set(trials[2].params) == set(model_spec("clgsi").search_space)


def trial_dir(out: Path, number: int) -> Path:
    """Trial ``number``'s folder: ``out/STUDY/trial-K`` (the sweeps here have one study)."""
    found = list(out.glob(f"*/trial-{number}"))
    assert len(found) == 1, found
    return found[0]


def checkpoints(out: Path, name: str) -> list[int]:
    """Numbers of the trials of ``out`` that hold ``seed-*/NAME``."""
    found = out.glob(f"*/trial-*/seed-*/{name}")
    return sorted(int(p.parent.parent.name.split("-")[1]) for p in found)


def test_only_the_best_trials_keep_a_checkpoint(tmp_path, data_file, tiny_bert, monkeypatch):
    from msakit.training import inputs

    loads = []
    real = inputs.load_encoder_and_data
    monkeypatch.setattr(inputs, "load_encoder_and_data",
                        lambda *a, **k: loads.append(a[1]) or real(*a, **k))
    out = tmp_path / "sweep"
    common = dict(out=out, text_encoder=str(tiny_bert), batch=8, overrides=SMALL, quiet=True,
                  epochs=1, pruner=optuna.pruners.NopPruner())
    tune("clgsi", "mosi", data_file, trials=4, keep_checkpoints=2, **common)
    assert loads == [data_file]  # one load of the encoder and the file for all four trials
    trials = load(out).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    ranked = [t.number for t in sorted(trials, key=lambda t: (t.value, t.number))]
    assert checkpoints(out, "model.safetensors") == sorted(ranked[:2])
    assert checkpoints(out, "last.pt") == []
    for t in trials:  # every trial keeps its metrics and settings
        for name in ("config.yaml", "results.csv"):
            assert (trial_dir(out, t.number) / name).is_file()
        assert len(list(trial_dir(out, t.number).glob("seed-*/history.json"))) == 1

    # The default keeps the best one: a later worker's summary step deletes the second's.
    result = tune("clgsi", "mosi", data_file, trials=1, **common)
    trials = load(out).get_trials(deepcopy=False)
    best = min(trials, key=lambda t: (t.value, t.number))
    assert result.best["best"]["trial"] == best.number
    assert checkpoints(out, "model.safetensors") == [best.number]
    assert checkpoints(out, "last.pt") == []
    kept = api.load_checkpoint(Path(result.best["best"]["folder"]))
    assert kept.config.model.to_dict() == result.best["config"]["model"]


def test_loaded_inputs_must_fit_the_run(tmp_path, data_file, tiny_bert):
    from msakit.training.inputs import load_inputs

    config = api.build_config("clgsi", "mosi", text_encoder=str(tiny_bert), overrides=SMALL)
    loaded = load_inputs(config, data_file)
    with pytest.raises(MsakitError, match="do not fit this run"):
        api.train("clgsi", "mosi", data_file, text_encoder=str(tiny_bert), seeds=[1], epochs=1,
                  overrides=[*SMALL, "allow_vocab_mismatch=true"], out=tmp_path / "run",
                  loaded=loaded)
    assert not (tmp_path / "run").exists()


def test_values_fixed_with_set_are_not_searched(tmp_path, data_file, tiny_bert):
    result = tune("clgsi", "mosi", data_file, trials=1, epochs=1, out=tmp_path / "sweep",
                  text_encoder=str(tiny_bert), batch=8, quiet=True,
                  overrides=[*SMALL, "gamma=0.5", "lr=1e-3"])
    params = result.best["best"]["params"]
    assert "gamma" not in params and not any(name.startswith("lr.") for name in params)
    space = model_spec("clgsi").search_space
    assert set(params) == {k for k in space if k != "gamma" and "." not in k}
    assert result.best["config"]["model"]["gamma"] == 0.5
    assert result.best["config"]["lr"] == dict.fromkeys(["text", "audio", "vision", "other"], 1e-3)


def values_at(config, key: str) -> list:
    """What a search-space key stands for in a configuration: ``lr.G`` one group's value, ``lr``
    every group's (``--set lr=X`` sets them all), a run field's value, else the hyperparameter's."""
    field, _, member = key.partition(".")
    if member:
        return [getattr(config, field)[member]]
    if key in config.model:
        return [config.model[key]]
    value = getattr(config, key)
    return list(value.values()) if isinstance(value, dict) else [value]


def in_space(value, spec: tuple) -> bool:
    if spec[0] == "choice":
        return value in spec[1]
    return spec[1] <= value <= spec[2]


@pytest.mark.parametrize("model", model_names())
def test_the_search_space_holds_every_preset_value(model):
    """A sweep can reach every preset's setting of what it tunes (CLGSI's τ: 0.5 on SIMS), for
    every model, data set and named preset."""
    spec = model_spec(model)
    checked = 0
    datasets = [d for d in dataset_names()  # those the model has presets for (directly or not)
                if preset_source(dataset_spec(d), spec.presets) in spec.presets]
    for dataset in datasets:
        for name in spec.preset_names():
            config = preset(model, dataset, name)
            for key, space in spec.search_space.items():
                for value in values_at(config, key):
                    assert in_space(value, space), (model, dataset, name, key, value, space)
                    checked += 1
    assert datasets and checked >= len(spec.search_space) * len(datasets)


@pytest.mark.parametrize("value", [1e-05, 3.2e-5, 5e-3, 0.1, 1.0, 1e20, 7, True, "glfk"])
def test_values_round_trip_through_set(value):
    key = {bool: "weighted", str: "fusion", int: "beta"}.get(type(value), "lr.text")
    config = apply_overrides(preset("clgsi", "mosi"), [f"{key}={format_value(value)}"])
    got = config.lr["text"] if key == "lr.text" else config.model[key]
    assert got == value and type(got) is type(value)


def test_plain_exponents_on_the_command_line():
    config = apply_overrides(preset("clgsi", "mosi"), ["lr.audio=5e-3", "gamma=1e-1"])
    assert config.lr["audio"] == 5e-3 and config.model["gamma"] == 0.1


def test_tune_errors_are_one_line(tmp_path, data_file, tiny_bert, capsys, monkeypatch):
    argv = tune_argv(data_file, tiny_bert, tmp_path / "sweep", 1)
    cases = [
        ([*argv, "--storage", "sweep.db"], "expected a database URL"),
        ([*argv[:5], "--data", str(tmp_path / "missing.npz"), *argv[7:]], "does not exist"),
        ([*argv, "--set", "gamma=high"], "--set gamma=high"),
        ([*argv, "--keep-checkpoints", "-1"], "--keep-checkpoints must be at least 0"),
    ]
    for bad, message in cases:
        assert cli.main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(argv) == 2
    assert "not under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_a_custom_data_set_sweep_names_its_spec_in_the_retrain_command(
    tmp_path, data_file, tiny_bert
):
    """tune --dataset custom: the study is named after it, the spec is written beside best.yaml
    and the retrain command reads it back (the trials' config.yaml record it too)."""
    from msakit.config.datasets import custom_spec, read_spec_file

    spec = custom_spec((-3, 3), title="Mine")
    out = tmp_path / "sweep"
    result = tune("clgsi", spec, data_file, trials=1, epochs=1, out=out,
                  text_encoder=str(tiny_bert), batch=8, quiet=True, overrides=SMALL)
    assert result.study == "msakit-clgsi-custom"
    assert read_spec_file(out / "dataset.yaml") == spec
    command = result.best["command"]
    assert f"--dataset custom --dataset-spec {out / 'dataset.yaml'}" in command
    assert result.best["config"]["dataset_spec"]["title"] == "Mine"
    trial = yaml.safe_load((trial_dir(out, 0) / "config.yaml").read_text())
    assert trial["dataset"] == "custom" and trial["dataset_spec"]["label_range"] == [-3.0, 3.0]


def test_space_file_objective_and_seeds_steer_the_sweep_and_best_yaml_retrains(
    tmp_path, data_file, tiny_bert, capsys
):
    """--space replaces the registry's space (ranges, log scale, integers, choices),
    --objective Corr:max makes the study maximise the validation correlation (the trial's value
    is its best epoch's), the retrain command and best.yaml carry --seed, and
    ``train --config best.yaml`` retrains the best trial exactly."""
    space = tmp_path / "space.yaml"
    space.write_text("gamma: {low: 1e-3, high: 1e-1, log: true}\n"
                     "fusion_layers: {low: 1, high: 2, int: true}\n"
                     "threshold: {choices: [0.3, 0.6]}\n")
    out = tmp_path / "sweep"
    argv = [*tune_argv(data_file, tiny_bert, out, trials=2, epochs=2), "--space", str(space),
            "--objective", "Corr:max", "--seed", "7", "--quiet"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "validation Corr" in printed
    the_study = load(out)
    assert the_study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = the_study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        assert set(t.params) == {"gamma", "fusion_layers", "threshold"}
        assert 1e-3 <= t.params["gamma"] <= 1e-1 and t.params["fusion_layers"] in (1, 2)
        assert t.params["threshold"] in (0.3, 0.6)
        assert t.value == max(t.intermediate_values.values())
        assert yaml.safe_load((trial_dir(out, t.number) / "config.yaml").read_text())[
            "seeds"] == [7]
    best = max(complete, key=lambda t: (t.value, -t.number))
    summary = yaml.safe_load((out / "best.yaml").read_text())
    assert summary["best"]["trial"] == best.number and summary["metric"] == "Corr"
    assert summary["objective"] == "best validation Corr (maximised)"
    assert summary["config"]["seeds"] == [7] and summary["trial_seed"] == 7
    assert " --seeds 7 " in summary["command"] and summary["command"] in printed

    retrain = tmp_path / "retrain"
    assert cli.main(["train", "--config", str(out / "best.yaml"), "--data", str(data_file),
                     "--out", str(retrain)]) == 0, capsys.readouterr().err
    config = yaml.safe_load((retrain / "config.yaml").read_text())
    assert config["seeds"] == [7] and config["model"] == summary["config"]["model"]
    assert config["lr"] == summary["config"]["lr"]
    trial_run = trial_dir(out, best.number)
    if (trial_run / "results.csv").is_file():  # not stopped early: the same test results
        assert (retrain / "results.csv").read_text() == (trial_run / "results.csv").read_text()


@pytest.mark.parametrize(("text", "message"), [
    ("gamma: [1, 2]\n", "space.yaml: gamma: expected {low"),
    ("no_such_key: {low: 1, high: 2}\n", "space.yaml: no_such_key: "),
    ("gamma: {low: 0.5, high: 0.1}\n", "space.yaml: gamma: low 0.5 is not below high 0.1"),
    ("gamma: {low: 0, high: 1, log: true}\n", "space.yaml: gamma: log: true needs low above 0"),
    ("gamma: {low: 0.1, high: 1, step: 2}\n", "space.yaml: gamma: unknown field 'step'"),
    ("gamma: {low: a, high: 1}\n", "space.yaml: gamma: low: expected a number"),
    ("fusion_layers: {low: 1, high: 2.5, int: true}\n",
     "space.yaml: fusion_layers: high: expected an integer"),
    ("fusion_layers: {low: 0, high: 3, int: true}\n", "space.yaml: fusion_layers: "),
    ("fusion: {choices: [add, nonsense]}\n", "space.yaml: fusion: "),
    ("fusion: {choices: []}\n", "space.yaml: fusion: choices: expected a non-empty list"),
    ("common_dim: {low: 8, high: 16, int: true}\n", "common_dim: also fixed with --set"),
    ("seeds: {low: 1, high: 3, int: true}\n", "space.yaml: seeds: "),
    ("- 1\n", "space.yaml: expected a mapping"),
    ("gamma: {low: [unclosed\n", "space.yaml: not valid YAML"),
])
def test_a_bad_space_file_is_one_line_naming_the_file_and_key(
    tmp_path, data_file, tiny_bert, capsys, text, message
):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    out = tmp_path / "sweep"
    argv = [*tune_argv(data_file, tiny_bert, out, trials=1), "--space", str(space)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --space ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "optuna.db").exists()


@pytest.mark.parametrize(("objective", "message"), [
    ("Accuracy", "'Accuracy' is not a validation metric of"),
    ("MAE:up", "expected MAE:min or MAE:max"),
    ("Mult_acc_3", "is not a validation metric"),  # a SIMS metric on MOSI
])
def test_a_bad_objective_is_one_line(tmp_path, data_file, tiny_bert, capsys, objective,
                                     message):
    out = tmp_path / "sweep"
    argv = [*tune_argv(data_file, tiny_bert, out, trials=1), "--objective", objective]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --objective {objective}: ") and message in err, err
    assert not (out / "optuna.db").exists()


def test_out_has_a_default_as_train_does(tmp_path, data_file, tiny_bert, monkeypatch, capsys):
    """Without --out a sweep goes to sweeps/msakit (train: runs/msakit), its missing folders
    made; the command line and the Python API share the default, and --help says it once."""
    import inspect

    from msakit.cli import build_parser
    from msakit.config import RUN_FOLDER, SWEEP_FOLDER

    parser = build_parser()
    argv = tune_argv(data_file, tiny_bert, tmp_path, 1)
    without_out = argv[:argv.index("--out")] + argv[argv.index("--out") + 2:]
    assert parser.parse_args(without_out).out == SWEEP_FOLDER == "sweeps/msakit"
    assert parser.parse_args(["train", "--model", "clgsi", "--dataset", "mosi", "--data",
                              "x.npz"]).out == RUN_FOLDER == "runs/msakit"
    assert inspect.signature(tune).parameters["out"].default == SWEEP_FOLDER
    assert inspect.signature(api.train).parameters["out"].default == RUN_FOLDER
    tune_help = " ".join(parser._subparsers._group_actions[0].choices["tune"].format_help()
                         .split())
    assert tune_help.count("(default: sweeps/msakit)") == 1

    monkeypatch.chdir(tmp_path)
    assert cli.main(without_out) == 0
    assert f"wrote {SWEEP_FOLDER}/best.yaml" in capsys.readouterr().out
    assert (tmp_path / SWEEP_FOLDER / "best.yaml").is_file()
    assert (trial_dir(tmp_path / SWEEP_FOLDER, 0) / "results.csv").is_file()
