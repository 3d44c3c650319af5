"""Hyperparameter sweeps with Optuna: one study, shared by any number of workers.

``msakit tune --model M --dataset D --data FILE --trials N [--out DIR]`` (``DIR``: default
``sweeps/msakit``, :data:`msakit.config.SWEEP_FOLDER`) runs N trials in this
process. A trial samples the search space (the ``search_space`` of the model's registry entry,
in the model's file beside its presets, or the user's ``--space FILE.yaml``, :func:`read_space`),
trains one seed with the sampled values applied as ``--set`` overrides (:func:`msakit.api.train`,
in ``DIR/trial-K``), reports the objective (``--objective METRIC[:min|max]``, any validation
metric of the data set's family, default ``MAE:min``; :func:`parse_objective`) after every epoch
and returns its best value over the epochs; Optuna's median pruner stops a trial whose value is
worse than the median of earlier trials at the same epoch, and the study's best trial is the
one with the best value in the objective's direction. A trial's best weights are the epoch of
lowest validation MAE, whatever the objective (the Trainer's early stopping); with ``MAE:min``
that is the epoch whose value the trial returns.

Studies live in a relational database (``--storage``, default ``sqlite:///DIR/optuna.db``):
workers started with the same storage URL and study name (``--study``, default
``msakit-M-D``) share one study, each claiming its own trials; a PostgreSQL URL lets workers on
many machines join. A heartbeat marks the running trial of a worker that died as failed.
After every trial the worker rewrites ``DIR/best.yaml``: the best trial of the whole study, its
parameters, the ``--set`` list and the ``msakit train`` command line that retrain it, and the
full resolved configuration (``msakit train --config DIR/best.yaml`` reads it). Every trial
trains one seed (``--seed``, else the preset's first); the retraining (the command and the
configuration) uses the seeds the user asked for (``--seed S``: S; else the preset's seeds),
written out as ``--seeds``.

A trial folder keeps what a user needs and little disk: its ``config.yaml``, ``history.json``
and ``results.csv`` always, its best weights (``seed-S/model.safetensors`` + ``config.json``)
only while the trial is one of the study's
``--keep-checkpoints`` best (default 1), and never ``last.pt`` (a trial is not resumed: it
writes none, and one left by an earlier version is deleted when the trial ends). Under the lock
of ``best.yaml``, every worker's summary step deletes the weights of every finished trial
that is not among the best N (trials still running are left alone), so workers sharing one
``DIR`` agree on what stays.
A worker loads the text encoder and the data file once and gives them to every trial
(:class:`msakit.training.inputs.LoadedInputs`); it reads the file once more at the start, to
check it before anything else.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import shlex
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msakit import api
from msakit.config import SWEEP_FOLDER
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError, TrainingDiverged
from msakit.core.files import write_text_atomic
from msakit.core.safe_yaml import dump_yaml, problem, read_yaml
from msakit.core.safety import run_kind
from msakit.data.mmsa import check_dataset, load_feature_file
from msakit.evaluation.metrics import LOWER_IS_BETTER, metric_names
from msakit.models.registry import model_spec
from msakit.training.inputs import check_output_folder, load_inputs
from msakit.training.pretrained import SEED_WEIGHT_FILES, SHARED_PATTERN
from msakit.training.trainer import TrainerHooks

__all__ = ["tune", "TuneResult", "Objective", "format_value", "parse_objective",
           "read_space", "suggest"]

HEARTBEAT_SECONDS = 60
"""How often a worker marks its running trial alive; one silent for 3x as long is failed."""
SQLITE_LOCK_TIMEOUT = 60
"""Seconds a SQLite writer waits for another worker's lock before failing."""
WARMUP_EPOCHS = 1
"""Epochs of every trial that are never pruned (the first epoch's MAE says little)."""
SUMMARY = "best.yaml"


@dataclass
class TuneResult:
    study: str
    storage: str
    summary: Path | None
    """``DIR/best.yaml``, or None when no trial of the study has completed."""
    best: dict[str, Any] | None
    """The summary's content (value, params, ``set`` list, command, config)."""


# --------------------------------------------------------------------------- search space
def suggest(trial, space: dict[str, tuple]) -> dict[str, Any]:
    """Sample every entry of a search space: ``name -> ("float" | "int", low, high[, log])``
    or ``("choice", [values])``."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        log = bool(spec[3]) if len(spec) > 3 else False
        if kind == "float":
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=log)
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=log)
        elif kind == "choice":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            raise MsakitError(f"search space entry {name!r}: unknown kind {kind!r}")
    return params


SPACE_EXAMPLE = ("lr.text: {low: 1e-5, high: 1e-4, log: true}, fusion: {choices: [add, concat]}, "
                 "layers: {low: 1, high: 4, int: true}")
SPACE_FIELDS = ("low", "high", "log", "int", "choices")


def read_space(path: str | os.PathLike, check=None) -> dict[str, tuple]:
    """The search space of a ``--space`` YAML file, in :func:`suggest`'s form: every key a
    ``--set`` key mapped to ``{low: A, high: B}`` (``log: true`` samples on a log scale, ``int:
    true`` integers) or ``{choices: [V, ...]}``. ``check(key, value)``, when given, is called
    with each bound and each choice (it raises :class:`MsakitError` for a value the model's
    settings refuse). Anything wrong is one error line naming the file and the key."""
    import yaml

    where = f"--space {path}"
    try:
        raw = read_yaml(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise MsakitError(f"{where}: cannot read it ({reason})") from None
    except yaml.YAMLError as exc:
        raise MsakitError(f"{where}: not valid YAML ({problem(exc)})") from None
    if not isinstance(raw, dict) or not raw:
        raise MsakitError(f"{where}: expected a mapping of settings to ranges or choices, e.g. "
                          f"{SPACE_EXAMPLE}")
    space: dict[str, tuple] = {}
    for key, entry in raw.items():
        try:
            if not isinstance(key, str):
                raise MsakitError("expected a setting's name")
            space[key] = _space_entry(entry)
            for value in space[key][1] if space[key][0] == "choice" else space[key][1:3]:
                if check is not None:
                    check(key, value)
        except MsakitError as exc:
            message = str(exc).removeprefix("--set ").removeprefix(f"{key}: ")
            raise MsakitError(f"{where}: {key}: {message}") from None
    return space


def _space_entry(entry: Any) -> tuple:
    """One ``--space`` entry as :func:`suggest` reads it."""
    if not isinstance(entry, dict):
        raise MsakitError("expected {low: A, high: B[, log: true][, int: true]} or "
                          "{choices: [V, ...]}")
    unknown = [str(k) for k in entry if k not in SPACE_FIELDS]
    if unknown:
        raise MsakitError(f"unknown field {unknown[0]!r}; the fields are "
                          f"{', '.join(SPACE_FIELDS)}")
    if "choices" in entry:
        choices = entry["choices"]
        if len(entry) > 1:
            raise MsakitError("choices goes alone (no low, high, log or int beside it)")
        if not isinstance(choices, list) or not choices or not all(
                isinstance(c, (str, int, float, bool)) for c in choices):
            raise MsakitError("choices: expected a non-empty list of values")
        if len({(type(c), c) for c in choices}) != len(choices):
            raise MsakitError("choices: a value is listed twice")
        return ("choice", choices)
    if "low" not in entry or "high" not in entry:
        raise MsakitError("expected both low and high (or choices)")
    flags = {name: entry.get(name, False) for name in ("log", "int")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise MsakitError(f"{name}: expected true or false, got {value!r}")
    low, high = (_bound(entry[name], name, flags["int"]) for name in ("low", "high"))
    if not low < high:
        raise MsakitError(f"low {low} is not below high {high}")
    if flags["log"] and low <= 0:
        raise MsakitError(f"log: true needs low above 0, got {low}")
    return ("int" if flags["int"] else "float", low, high, flags["log"])


def _bound(value: Any, name: str, integer: bool) -> int | float:
    """A range's bound: a number (YAML reads ``1e-5``, without a dot, as a string: it is read
    as the number it spells); an integer for ``int: true``."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(
            number):
        raise MsakitError(f"{name}: expected a number, got {value!r}")
    if integer:
        if number != int(number):
            raise MsakitError(f"{name}: expected an integer (int: true), got {value!r}")
        return int(number)
    return float(number)


@dataclass(frozen=True)
class Objective:
    """What the trials optimise: one validation metric and a direction."""

    metric: str
    maximize: bool

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.maximize else "minimize"

    def __str__(self) -> str:
        return f"{self.metric}:{'max' if self.maximize else 'min'}"

    def better(self, a: float, b: float) -> float:
        return max(a, b) if self.maximize else min(a, b)


def parse_objective(text: str, spec: DatasetSpec) -> Objective:
    """``METRIC[:min|max]``: a validation metric of ``spec``'s family (``MAE``, ``Corr``,
    ``Has0_acc_2``, ...); without a direction MAE is minimised and every other metric (the
    accuracies, F1 scores, correlation) maximised (``LOWER_IS_BETTER``)."""
    metric, colon, way = text.partition(":")
    names = metric_names(spec)
    if metric not in names:
        raise MsakitError(f"--objective {text}: {metric!r} is not a validation metric of "
                          f"{spec.title}; choose {', '.join(names)} (METRIC:min or METRIC:max)")
    if colon and way not in ("min", "max"):
        raise MsakitError(f"--objective {text}: expected {metric}:min or {metric}:max")
    return Objective(metric, way == "max" if colon else metric not in LOWER_IS_BETTER)


def _rank(the_study):
    """The sort key of completed trials, best first in the study's direction (then by
    number): the one ranking of best-trial selection and checkpoint pruning."""
    from optuna.study import StudyDirection

    sign = -1.0 if the_study.direction == StudyDirection.MAXIMIZE else 1.0
    return lambda t: (sign * t.value, t.number)


def format_value(value: Any) -> str:
    """A value as ``--set key=VALUE`` reads it back exactly (floats round-trip, 1e-05 -> 1.0e-05
    so that YAML reads a float)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    return str(value)


def _dataset_flags(spec: DatasetSpec, out: Path) -> list[str]:
    """The retrain command's data set flags; a custom spec is written to ``out/dataset.yaml``
    for it to read."""
    if not spec.is_custom:
        return ["--dataset", spec.name]
    write_text_atomic(out / "dataset.yaml", dump_yaml(spec.spec_file(), sort_keys=False))
    return ["--dataset", spec.name, "--dataset-spec", str(out / "dataset.yaml")]


def _as_set(params: dict[str, Any]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


# --------------------------------------------------------------------------- storage
def default_storage(out: Path) -> str:
    return f"sqlite:///{out.resolve() / 'optuna.db'}"


def _open_storage(url: str):
    import optuna

    engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}} if url.startswith(
        "sqlite") else {"pool_pre_ping": True}
    # Workers started together may race to create the tables: retry a few times.
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # Optuna flags the heartbeat as experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=3 * HEARTBEAT_SECONDS,
                )
        except ImportError as exc:
            raise MsakitError(
                f"--storage {url}: missing database driver ({exc.name or exc}); for PostgreSQL "
                "pip install psycopg2-binary"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - sqlalchemy errors: retry, then one line
            if attempt == 4:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise MsakitError(
                    f"--storage {url}: cannot open ({type(exc).__name__}: {first})"
                ) from exc
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- trial folders
def study_folder(study_name: str) -> str:
    """The folder (in ``--out``) of a study's trial folders: its name, or, for a name that is
    not a plain folder name, the name's safe characters and a hash of it (two studies never
    share one)."""
    import hashlib
    import re

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", study_name):
        return study_name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._")[:60] or "study"
    return f"{slug}-{hashlib.sha1(study_name.encode()).hexdigest()[:10]}"


def _check_trial_folders(sweep: _Sweep, the_study) -> None:
    """Refuse (unless ``overwrite``) trial folders holding runs of trials the study does not
    have: another storage's study of the same name wrote them, and trial numbers start again
    at 0. The folders are listed before the study's trials are read, so a trial another worker
    started meanwhile is known."""
    folders = sorted(sweep.trials_dir.glob("trial-*")) if sweep.trials_dir else []
    folders = [f for f in folders if run_kind(f) is not None]
    known = {t.number for t in the_study.get_trials(deepcopy=False)}
    stale = [f for f in folders if f.name.removeprefix("trial-") not in map(str, known)]
    if stale and not sweep.overwrite:
        raise MsakitError(
            f"{stale[0]} holds a run of no trial of study {the_study.study_name!r} in this "
            "storage (a study of the same name elsewhere?); add --overwrite to let the new "
            "trials replace such folders, or choose another --out or --study"
        )


# --------------------------------------------------------------------------- tune
@dataclass(frozen=True)
class _Sweep:
    """What one worker was asked to do (the arguments of :func:`tune`)."""

    model: str
    dataset: str | DatasetSpec
    data: str | os.PathLike
    trials: int
    out: Path
    epochs: int | None
    text_encoder: str | None
    batch: int | None
    base: list[str]
    """The ``--set`` values fixed for every trial."""
    adapters: str | os.PathLike | None
    seed: int | None
    preset: str
    keep_checkpoints: int
    dataset_flags: list[str] = field(default_factory=list)
    """The retrain command's data set flags (:func:`_dataset_flags`)."""
    trials_dir: Path | None = None
    """The study's folder of trial folders, ``out/STUDY`` (:func:`study_folder`)."""
    overwrite: bool = False
    """Whether a trial may replace a run that a trial folder already holds (one left by a
    study of the same name in another storage)."""
    space_file: str | os.PathLike | None = None
    """``--space``: the search space replacing the registry's (:func:`read_space`)."""
    objective: str = "MAE:min"
    """``--objective`` as given (:func:`parse_objective`)."""
    goal: Objective = Objective("MAE", maximize=False)
    """``objective`` parsed (:func:`_check_request`)."""
    seeds: list[int] = field(default_factory=list)
    """The seeds the retrain command and ``best.yaml``'s configuration carry."""

    def trial_folder(self, number: int) -> Path:
        return (self.trials_dir or self.out) / f"trial-{number}"


def tune(
    model: str,
    dataset: str | DatasetSpec,
    data: str | os.PathLike,
    *,
    trials: int,
    out: str | os.PathLike = SWEEP_FOLDER,
    epochs: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    text_encoder: str | None = None,
    batch: int | None = None,
    overrides: list[str] | None = None,
    adapters: str | os.PathLike | None = None,
    seed: int | None = None,
    pruner=None,
    quiet: bool = False,
    preset: str = "paper",
    keep_checkpoints: int = 1,
    overwrite: bool = False,
    space: str | os.PathLike | None = None,
    objective: str = "MAE:min",
) -> TuneResult:
    """Run ``trials`` trials of the study (see the module docstring); return the summary.

    ``overrides`` (``key=value``) are fixed for every trial; the values of the search space
    (the registry's, or the YAML file ``space``: :func:`read_space`) come on top. ``objective``:
    :func:`parse_objective`. ``seed``: every trial's seed (default: the preset's first) and
    the retraining's (default: the preset's seeds). ``pruner`` replaces the ``MedianPruner``.
    ``keep_checkpoints``: how many of the best trials keep their best weights (0: none). Trial
    K of study S trains in ``out/S/trial-K``; a trial folder holding a run the study does not
    know (a same-named study elsewhere) is refused before any trial runs, unless ``overwrite``.
    """
    sweep = _Sweep(model=model, dataset=dataset, data=data, trials=trials, out=Path(out),
                   epochs=epochs, text_encoder=text_encoder, batch=batch,
                   base=list(overrides or []), adapters=adapters, seed=seed, preset=preset,
                   keep_checkpoints=keep_checkpoints, overwrite=overwrite, space_file=space,
                   objective=objective)
    config, searched, goal = _check_request(sweep, storage)
    # Loaded once for every trial of this worker, before any study exists.
    loaded = load_inputs(config, data)
    sweep.out.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(sweep.out)
    study_name = study or f"msakit-{model}-{config.dataset.name}"
    train_seed = int(seed) if seed is not None else config.seeds[0]
    sweep = dataclasses.replace(sweep, dataset_flags=_dataset_flags(config.spec, sweep.out),
                                trials_dir=sweep.out / study_folder(study_name),
                                seeds=[train_seed] if seed is not None else list(config.seeds),
                                goal=goal)
    with _optuna_logging(quiet):
        the_study = _create_study(storage, study_name, pruner, goal)
        _check_trial_folders(sweep, the_study)
        the_objective = _objective(sweep, searched, loaded, train_seed=train_seed, goal=goal)
        write_summary = _summary_writer(sweep, storage, study_name)
        the_study.optimize(the_objective, n_trials=trials, callbacks=[write_summary])
    summary = write_summary(the_study)
    return TuneResult(
        study=study_name, storage=storage,
        summary=sweep.out / SUMMARY if summary else None, best=summary,
    )


class _NoFailedTrialRecord(logging.Filter):
    """Drops Optuna's record of a failed trial (a warning with the exception's traceback).
    msakit passes Optuna no ``catch``, so the exception then ends the sweep and the command
    reports it as its one ``error:`` line (Ctrl-C, a full disk, bad input found in a trial).
    Optuna's other failure, an objective value it cannot accept, does not happen here: a trial
    whose validation MAE is not finite is pruned (:func:`_objective`), so every warning this
    logger gives is one of an exception's two records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


@contextmanager
def _optuna_logging(quiet: bool) -> Iterator[None]:
    """Optuna's per-trial log lines (not with ``quiet``), never its failed-trial tracebacks."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials_logger = logging.getLogger("optuna.study._optimize")
    no_failures = _NoFailedTrialRecord()
    trials_logger.addFilter(no_failures)
    try:
        yield
    finally:
        trials_logger.removeFilter(no_failures)
        optuna.logging.set_verbosity(verbosity)


def _check_request(
    sweep: _Sweep, storage: str | None
) -> tuple[Any, dict[str, tuple], Objective]:
    """Validate everything before any study is touched: the preset, the fixed overrides, the
    search space (every key at its low end; a ``--space`` file's every bound and choice), the
    objective, the data file, the adapters, the storage URL and the output folder. Returns the
    base configuration, the space searched (a value fixed with ``--set`` is not searched;
    ``lr=...`` fixes every ``lr.G``) and the objective."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MsakitError(
            "tune runs one trial per process: start workers as separate processes (one per GPU "
            "with CUDA_VISIBLE_DEVICES), not under torchrun"
        )
    if sweep.trials < 1:
        raise MsakitError(f"--trials must be at least 1, got {sweep.trials}")
    if sweep.keep_checkpoints < 0:
        raise MsakitError(f"--keep-checkpoints must be at least 0, got {sweep.keep_checkpoints}")
    config = _trial_config(sweep, sweep.base)
    space = _searched_space(sweep)
    goal = parse_objective(sweep.objective, config.spec)
    low = {name: spec[1] if spec[0] != "choice" else spec[1][0] for name, spec in space.items()}
    api.build_config(sweep.model, sweep.dataset, overrides=[*sweep.base, *_as_set(low)],
                     preset=sweep.preset)
    if not Path(sweep.data).is_file():
        raise MsakitError(f"data file {sweep.data} does not exist")
    # The file is checked before the text encoder is even looked for (a bad file is named as
    # such, also when the encoder is missing); load_inputs reads it again with the encoder.
    check_dataset(load_feature_file(sweep.data), config.spec)  # before any study exists
    if sweep.adapters is not None and not Path(sweep.adapters).is_file():
        raise MsakitError(f"adapters file {sweep.adapters} does not exist")
    if storage is not None and "://" not in storage:
        raise MsakitError(
            f"--storage {storage}: expected a database URL such as sqlite:///sweep.db or "
            "postgresql://user:password@host/database"
        )
    check_output_folder(sweep.out)
    return config, space, goal


def _searched_space(sweep: _Sweep) -> dict[str, tuple]:
    """The registry's search space less the keys fixed with ``--set``, or the ``--space`` file
    (whose keys may not be fixed: it is searched as written)."""
    fixed = {item.split("=", 1)[0].strip() for item in sweep.base}

    def is_fixed(name: str) -> bool:
        return name in fixed or name.split(".", 1)[0] in fixed

    if sweep.space_file is not None:
        def check(key: str, value: Any) -> None:
            if is_fixed(key):
                raise MsakitError("also fixed with --set; search it or fix it, not both")
            api.build_config(sweep.model, sweep.dataset, preset=sweep.preset,
                             overrides=[*sweep.base, f"{key}={format_value(value)}"])

        return read_space(sweep.space_file, check)
    search_space = model_spec(sweep.model).search_space
    if not search_space:
        raise MsakitError(f"model {sweep.model!r} declares no search space; give one with "
                          f"--space FILE.yaml ({SPACE_EXAMPLE})")
    return {name: spec for name, spec in search_space.items() if not is_fixed(name)}


def _trial_config(sweep: _Sweep, sets: list[str]):
    """The configuration a trial with ``--set`` values ``sets`` trains."""
    return api.build_config(sweep.model, sweep.dataset, text_encoder=sweep.text_encoder,
                            epochs=sweep.epochs, batch=sweep.batch, overrides=sets,
                            preset=sweep.preset, seeds=sweep.seeds or None)


def _create_study(storage: str, study_name: str, pruner, goal: Objective):
    """The study (created, or joined when another worker made it) in ``storage``, in the
    objective's direction (joining a study of the other direction is an error)."""
    import optuna

    database = _open_storage(storage)
    try:
        return optuna.create_study(
            storage=database,
            study_name=study_name,
            direction=goal.direction,
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(constant_liar=True),
            pruner=pruner or optuna.pruners.MedianPruner(n_warmup_steps=WARMUP_EPOCHS),
        )
    except ValueError as exc:  # e.g. an existing study of the same name maximises
        raise MsakitError(f"study {study_name!r} in {storage}: {exc}") from exc


def _objective(sweep: _Sweep, space: dict[str, tuple], loaded, *, train_seed: int,
               goal: Objective):
    """Optuna's objective: train one seed with the sampled values, report the objective's
    validation metric after every epoch (pruning), return its best value."""
    import optuna

    def objective(trial) -> float:
        sets = [*sweep.base, *_as_set(suggest(trial, space))]
        folder = sweep.trial_folder(trial.number)
        trial.set_user_attr("set", sets)
        trial.set_user_attr("folder", str(folder))
        trial.set_user_attr("seed", train_seed)
        best = [-math.inf if goal.maximize else math.inf]

        def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
            value = float(metrics[goal.metric])
            if not math.isfinite(value):  # the run diverged, or the metric is undefined
                raise optuna.TrialPruned(
                    f"validation {goal.metric} is {value} at epoch {epoch + 1}")
            best[0] = goal.better(best[0], value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"validation {goal.metric} {value:.4f} at epoch {epoch + 1}")

        try:
            api.train(
                sweep.model, sweep.dataset, sweep.data, text_encoder=sweep.text_encoder,
                seeds=[train_seed], epochs=sweep.epochs, batch=sweep.batch, out=folder,
                overrides=sets, adapters=sweep.adapters, quiet=True,
                hooks=TrainerHooks(on_epoch_end=on_epoch_end), overwrite=sweep.overwrite,
                preset=sweep.preset, loaded=loaded, resumable=False,
            )
        except TrainingDiverged as exc:  # a sampled setting too aggressive: not a crash
            raise optuna.TrialPruned(str(exc)) from None
        finally:  # a trial is never resumed (and writes none): a last.pt is only disk
            _remove(folder.glob("seed-*/last.pt"))
        return best[0]

    return objective


def _summary_writer(sweep: _Sweep, storage: str, study_name: str):
    """The callback run after every trial: rewrite ``best.yaml`` and prune checkpoints."""

    def write_summary(the_study, _trial=None) -> dict[str, Any] | None:
        # Read the study and write the file under one lock shared by the workers: the writes
        # then come in the order of the reads, so the last file written saw every trial that
        # had finished (without it, a worker that read the study before another's last trial
        # finished could write after that worker and leave a stale best.yaml).
        # The checkpoints are pruned under the same lock, from the same reading of the study.
        with _locked(sweep.out / f".{SUMMARY}.lock"):
            summary = _summary(the_study, sweep, storage=storage, study_name=study_name)
            if summary is not None:
                write_text_atomic(sweep.out / SUMMARY, dump_yaml(summary, sort_keys=False))
            _prune_checkpoints(the_study, sweep, sweep.keep_checkpoints)
        return summary

    return write_summary


def kept_trials(the_study, keep: int) -> set[int]:
    """Numbers of the ``keep`` best completed trials (best value in the study's direction,
    then lowest number)."""
    from optuna.trial import TrialState

    complete = [t for t in the_study.get_trials(deepcopy=False)
                if t.state == TrialState.COMPLETE]
    ranked = sorted(complete, key=_rank(the_study))
    return {t.number for t in ranked[:keep]}


def _prune_checkpoints(the_study, sweep: _Sweep, keep: int) -> None:
    """Delete ``last.pt`` of every finished trial and ``best.pt`` of every finished trial not
    among the ``keep`` best (a running trial, maybe another worker's, is left alone: it still
    writes and reads its checkpoints). Only this worker's ``out`` is touched."""
    kept = kept_trials(the_study, keep)
    for trial in the_study.get_trials(deepcopy=False):
        if not trial.state.is_finished():
            continue
        folder = sweep.trial_folder(trial.number)
        _remove(folder.glob("seed-*/last.pt"))
        if trial.number not in kept:  # the seed's weights, and a frozen text encoder's
            _remove([p for name in SEED_WEIGHT_FILES for p in folder.glob(f"seed-*/{name}")])
            _remove(folder.glob(SHARED_PATTERN))


def _remove(paths) -> None:
    """Delete files; one that cannot be deleted is a warning, not the end of the sweep."""
    for path in list(paths):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            warnings.warn(f"cannot delete {path}: {exc.strerror}", stacklevel=2)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (flock; a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _summary(
    the_study, sweep: _Sweep, *, storage: str, study_name: str
) -> dict[str, Any] | None:
    """The best trial of the study so far as a retrainable summary (None if none completed)."""
    from optuna.trial import TrialState

    finished = the_study.get_trials(deepcopy=False)
    counts = {state.name: 0 for state in TrialState}
    for trial in finished:
        counts[trial.state.name] += 1
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = min(complete, key=_rank(the_study))
    sets = list(best.user_attrs.get("set", []))
    goal = sweep.goal
    return {
        "study": study_name,
        "storage": storage,
        "objective": f"best validation {goal.metric} "
                     f"({'maximised' if goal.maximize else 'minimised'})",
        "metric": goal.metric,
        "best": {
            "trial": best.number,
            "value": float(best.value),
            "params": dict(best.params),
            "folder": best.user_attrs.get("folder"),
            "set": sets,
        },
        "command": shlex.join(_retrain_command(sweep, sets)),
        "trials": counts,
        "trial_seed": best.user_attrs.get("seed"),
        "config": _trial_config(sweep, sets).to_dict(),
    }


def _retrain_command(sweep: _Sweep, sets: list[str]) -> list[str]:
    """The ``msakit train`` command line that retrains a trial with ``--set`` values ``sets``."""
    command = ["msakit", "train", "--model", sweep.model, *sweep.dataset_flags,
               "--data", str(sweep.data)]
    if sweep.preset != "paper":
        command += ["--preset", sweep.preset]
    for flag, value in (("--text-encoder", sweep.text_encoder), ("--epochs", sweep.epochs),
                        ("--batch", sweep.batch), ("--adapters", sweep.adapters)):
        if value is not None:
            command += [flag, str(value)]
    if sweep.seeds:
        command += ["--seeds", *map(str, sweep.seeds)]
    for item in sets:
        command += ["--set", item]
    return [*command, "--out", str(sweep.out / "best")]
