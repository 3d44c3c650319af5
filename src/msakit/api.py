"""The Python API behind every ``msakit`` command: train, evaluate, predict, synth, demo.

Each function validates all of its input before it writes anything, and raises
:class:`msakit.core.errors.MsakitError` (one line) for bad input. The public functions check their
arguments' types against their annotations first (:func:`checked_arguments`): no coercion, so
``seeds="12"`` or ``epochs=2.7`` is an error, not seeds [1, 2] or 2 epochs.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import inspect
import io
import os
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch

from msakit.config import RunConfig, apply_overrides
from msakit.config.datasets import DatasetSpec, synthetic_names
from msakit.config.presets import DEFAULT_PRESET
from msakit.core.errors import MsakitError
from msakit.core.files import RunLock, write_text_atomic
from msakit.core.runlog import recording
from msakit.core.safe_yaml import load_yaml, problem, read_yaml
from msakit.core.safety import (
    STEP_LOG_RECORD,
    Input,
    Output,
    check_distinct_output,
    check_input,
    check_plan,
    inputs,
    run_entries,
)
from msakit.data.batching import epoch_plan, iterate
from msakit.data.identity import check_identity, same_content
from msakit.data.missing import run_rates, with_missing_split
from msakit.data.mmsa import (
    FeatureFile,
    SplitData,
    check_dataset,
    convert_to_npz,
    load_feature_file,
)
from msakit.data.safe_format import save_npz
from msakit.data.synthetic import make_synthetic, write_synthetic
from msakit.data.tables import as_records, read_csv
from msakit.encoders.text import (
    DEFAULT_TEXT_ENCODER,
    check_text_length,
    text_encoder_from_config,
)
from msakit.evaluation.metrics import (
    metric_names,
    metric_values,
    metrics_json,
    rounded,
    undefined_warning,
    without_nan,
)
from msakit.extract.analyze import analyze_videos
from msakit.extract.predict import predict_clip
from msakit.extract.settings import check_record, describe, read_metadata
from msakit.inference import prediction_rows, split_from_arrays, write_predictions
from msakit.models.base import Dims, MSAModel, first_non_finite
from msakit.models.registry import DEMO_MODEL, model_spec, preset_note
from msakit.models.registry import preset as named_preset
from msakit.provenance import RunRecords
from msakit.tracking import MlflowRun, start_tracking
from msakit.training import distributed
from msakit.training.device import amp_mode, autocast_settings
from msakit.training.init_from import InitFrom, read_init_from
from msakit.training.inputs import (
    LoadedInputs,
    build_model,
    check_output_folder,
    prepare_run,
)
from msakit.training.pretrained import (
    WEIGHTS,
    best_weights_file,
    finish_seed,
    finished_seed,
    is_pretrained,
    prune_shared,
    read_checkpoint,
)
from msakit.training.trainer import Trainer, TrainerHooks, check_batch_size, evaluate_model

__all__ = ["train", "evaluate", "predict", "load_checkpoint", "build_config", "synth", "demo"]


# --------------------------------------------------------------------------- building blocks
_Function = TypeVar("_Function", bound=Callable[..., Any])


def checked_arguments(fn: _Function) -> _Function:
    """``fn`` with its arguments checked against its annotations before it runs (pydantic's
    strict validation: no coercion; ``bool`` is no ``int``, ``"12"`` no ``list[int]``, an
    ``int`` is a ``float``; classes by ``isinstance``). A mismatch is one ``MsakitError``
    naming the function, the argument, the annotation and the value given."""
    signature = inspect.signature(fn)
    adapters: dict[str, Any] = {}

    def adapter(name: str) -> Any:  # built on first use: importing msakit stays quick
        if name not in adapters:
            from pydantic import ConfigDict, TypeAdapter

            hint = typing.get_type_hints(fn).get(name, Any)
            adapters[name] = None if hint is Any else TypeAdapter(
                hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
        return adapters[name]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise MsakitError(f"msakit.{fn.__name__}: {exc}") from None
        for name, value in bound.arguments.items():
            check = adapter(name)
            try:
                if check is not None:
                    check.validate_python(value, strict=True)
            except ValidationError:
                given = repr(value)
                given = given if len(given) <= 60 else given[:57] + "..."
                raise MsakitError(
                    f"msakit.{fn.__name__}: {name} must be {fn.__annotations__[name]}, got "
                    f"{given} (of type {type(value).__name__})") from None
        return fn(*args, **kwargs)

    return cast(_Function, call)  # functools.wraps: fn's signature, checked


@checked_arguments
def build_config(
    model: str,
    dataset: str | DatasetSpec,
    *,
    text_encoder: str | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    preset: str = DEFAULT_PRESET,
    base: RunConfig | None = None,
) -> RunConfig:
    """The named preset (``paper``, or one the model declares, e.g. CLGSI's ``authors``) of
    (model, dataset) with the command line's choices applied; ``base`` (a saved run's
    configuration, :func:`msakit.rerun.load_run_config`) replaces the preset."""
    # One configuration, typed layers in order (preset, flags, --set), checked once at the end.
    config = copy.deepcopy(base) if base is not None else named_preset(model, dataset, preset,
                                                                       check=False)
    if text_encoder is not None:
        config.text_encoder = text_encoder
    if seeds is not None:  # types checked (checked_arguments); [] is "no seed given"
        config.seeds = list(seeds)
    if epochs is not None:  # the user's --epochs caps every model, early stopping or not
        config.epochs, config.stop_at_horizon = epochs, True
    if batch is not None:
        config.batch_size = batch
    return apply_overrides(config, overrides or [])


def dims_of(data: FeatureFile) -> Dims:
    return Dims.of(data)


def load_data(
    path: str | os.PathLike, vocab_size: int | None, *, text_features: bool = False
) -> FeatureFile:
    return load_feature_file(str(path), vocab_size=vocab_size, text_features=text_features)


# --------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    out: Path
    rows: list[dict[str, Any]]
    """One row per seed (``seed`` then the test metrics), then the ``mean`` and ``std`` rows."""


@checked_arguments
def train(
    model: str,
    dataset: str | DatasetSpec,
    data: str | os.PathLike,
    *,
    text_encoder: str | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    out: str | os.PathLike = "runs/msakit",
    overrides: list[str] | dict[str, Any] | None = None,
    adapters: str | os.PathLike | None = None,
    log_steps: str | os.PathLike | None = None,
    resume: bool = False,
    quiet: bool = False,
    config: RunConfig | None = None,
    hooks: Any = None,
    overwrite: bool = False,
    preset: str = DEFAULT_PRESET,
    loaded: LoadedInputs | None = None,
    save: str = "best",
    resumable: bool = True,
    init_from: str | os.PathLike | None = None,
    track: str | None = None,
    track_uri: str | None = None,
) -> TrainResult:
    """Train ``model`` on an MMSA feature file for every seed; write the run folder.

    Writes ``out/config.yaml`` (and its ``provenance``), ``out/train.log``, per seed the best
    weights ``seed-S/model.safetensors`` + ``config.json`` (:mod:`msakit.training.pretrained`),
    ``seed-S/last.pt`` (exact resume), ``seed-S/history.json`` and ``out/results.csv`` (a row
    per seed with the test metrics under MMSA's names, then the ``mean`` and ``std`` rows).
    ``save``: what a finished seed keeps: ``"best"`` (its best weights), ``"last"`` (also
    ``last.pt``), ``"none"`` (no weights; a resume reads its row from ``results.csv``).
    ``resumable=False`` writes no ``last.pt`` at all (``msakit tune``'s trials).

    A folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (replace it); the folder is locked (``out/.msakit.lock``) while the run writes.
    ``preset`` names the starting configuration: ``paper`` (the default) or, for CLGSI,
    ``authors`` (the authors' released code's settings); it is recorded in ``config.yaml``.

    ``loaded``: the text encoder and feature file already loaded for this configuration and
    ``data`` (:func:`msakit.training.inputs.load_inputs`), so that a caller running many
    trainings on one file (``msakit tune``) loads them once; by default they are loaded here.
    ``init_from``: a checkpoint of the same model (e.g. trained on another data set) every seed
    starts from; tensors whose shapes differ keep their fresh initialisation and are listed
    (:mod:`msakit.training.init_from`). Recorded in ``config.yaml`` (``init_from``).
    ``track="mlflow"``: log the run to MLflow (:mod:`msakit.tracking`): settings, per-epoch
    metrics of every seed, the results table and the curves; ``track_uri`` names the tracking
    server or store (default: ``MLFLOW_TRACKING_URI``, else MLflow's embedded default).
    """
    run = _Run(**{**locals(), "out": Path(out)})  # every argument, as one object
    if resume and overwrite:
        raise MsakitError("--resume and --overwrite exclude each other")
    ctx = distributed.setup()
    try:
        with recording():  # train.log (msakit.core.runlog)
            return _train(ctx, run)
    finally:
        distributed.teardown(ctx)


def _clear_run(out: Path) -> None:
    """--overwrite: remove the previous run's files (nothing else in the folder; that none of
    them is an input was checked before, :func:`msakit.core.safety.check_plan`)."""
    import shutil

    for path in run_entries(out, "train"):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as exc:
            raise MsakitError(f"--overwrite: cannot remove {path}: {exc.strerror}") from None


SAVE_MODES = ("best", "last", "none")
"""``train(save=...)``, ``--save``: what a finished seed keeps (see :func:`train`)."""


@dataclass
class _Run:
    """The arguments of one :func:`train` call (see there), passed down as one object."""

    model: str
    dataset: str | DatasetSpec
    data: str | os.PathLike
    out: Path
    text_encoder: str | None = None
    seeds: list[int] | None = None
    epochs: int | None = None
    batch: int | None = None
    overrides: list[str] | dict[str, Any] | None = None
    adapters: str | os.PathLike | None = None
    log_steps: str | os.PathLike | None = None
    resume: bool = False
    quiet: bool = False
    config: RunConfig | None = None
    hooks: Any = None
    overwrite: bool = False
    preset: str = DEFAULT_PRESET
    loaded: LoadedInputs | None = None
    save: str = "best"
    resumable: bool = True
    init_from: str | os.PathLike | None = None
    track: str | None = None
    track_uri: str | None = None
    records: RunRecords | None = None
    """The run's ``train.log`` and provenance (main rank; set by :func:`_train`)."""

    def __post_init__(self) -> None:
        if self.save not in SAVE_MODES:
            raise MsakitError(f"save={self.save!r}: one of {', '.join(SAVE_MODES)}")


def _train(ctx: distributed.DistContext, run: _Run) -> TrainResult:
    config = run.config or build_config(
        run.model, run.dataset, text_encoder=run.text_encoder, seeds=run.seeds,
        epochs=run.epochs, batch=run.batch, overrides=run.overrides, preset=run.preset,
    )
    if run.init_from is not None:
        config = dataclasses.replace(config, init_from=str(run.init_from))
    resumed = _check_outputs(run, config)
    inputs = prepare_run(config, run.data, run.out, ctx, checkpoint_format="msakit-checkpoint-1",
                         loaded=run.loaded)
    _check_same_data(run, inputs.config.data, resumed=resumed, configured=config.data)
    config = inputs.config  # with the data's content identity, as config.yaml records it
    # Build once to surface configuration errors before anything is written.
    probe = build_model(config, inputs.dims, copy.deepcopy(inputs.encoder), stats=inputs.stats)
    check_batch_size(config, probe, ctx.world_size)
    probe.on_train_start(inputs.features.splits["train"])  # what training needs of the data
    adapter_state = None
    if run.adapters is not None:
        stage = model_spec(config.model_name).adapter_stage
        if stage is None:
            raise MsakitError(
                f"--adapters does not apply to {config.model_name} (no adapters)")
        adapter_state = stage.read(run.adapters, config, probe, inputs.encoder)
    notes = [preset_note(config.model_name, config.spec, config.preset), horizon_note(config),
             probe.start_message(with_adapters=run.adapters is not None)]
    if not run.quiet and ctx.is_main:
        for message in filter(None, notes):
            print(message, file=sys.stderr)
    init = _read_init_from(config, probe, quiet=run.quiet or not ctx.is_main)
    del probe
    pretrained = copy.deepcopy(inputs.encoder.state_dict()) if inputs.encoder else {}
    tracker = (start_tracking(run.track, uri=run.track_uri, out=run.out, data=run.data,
                              config=config.to_dict()) if ctx.is_main else None)
    lock, rows = _lock_run(run.out, ctx), []
    try:
        if run.overwrite and ctx.is_main:
            _clear_run(run.out)
        ctx.barrier()
        run.records = (RunRecords(config.to_yaml(), run.out, data=run.data, resume=run.resume)
                       if ctx.is_main else None)  # train.log and provenance (main rank)
        if run.log_steps is not None and ctx.is_main:
            if not run.resume:
                Path(run.log_steps).unlink(missing_ok=True)  # every seed appends its lines
            # the run's own step log: the only existing file --log-steps may name later
            write_text_atomic(run.out / STEP_LOG_RECORD, f"{Path(run.log_steps).resolve()}\n")
        rows = _train_seeds(ctx, config, run=run, inputs=inputs, pretrained=pretrained,
                            adapter_state=adapter_state, init=init, tracker=tracker)
        if run.records is not None:
            run.records.finish()
    except BaseException:
        if tracker is not None:
            tracker.finish(rows, run.out, failed=True)
        raise
    finally:
        if lock is not None:
            lock.release()
    rows = _with_summary(rows, config.spec)
    if tracker is not None:
        tracker.finish(rows, run.out)
    return TrainResult(out=run.out, rows=rows)


def horizon_note(config: RunConfig) -> str | None:
    """The start line of a run that trains past ``epochs`` until early stopping (MMSA's rule for
    its models, ``stop_at_horizon=false``): how it ends and how to cap it."""
    if config.stop_at_horizon:
        return None
    return (f"note: trains until early stopping ({config.early_stop} epochs without a better "
            f"validation MAE), as the preset's reference code does; --epochs N caps it")


def _check_outputs(run: _Run, config: RunConfig) -> dict[str, Any] | None:
    """The run folder and the step log against the inputs (:func:`msakit.core.safety.check_plan`):
    nothing of the inputs or of another run is overwritten; --resume continues only a run
    started with the same settings, and returns the data identity the run recorded
    (:func:`_check_resume_config`)."""
    reads = [*inputs("--data", [run.data]), *inputs("--adapters", [run.adapters]),
             *inputs("--init-from", [config.init_from], "checkpoint"),
             *inputs("--text-encoder", [config.text_encoder], "encoder")]
    writes = [Output("--out", run.out, "train"),
              *([Output("--log-steps", Path(run.log_steps), "log")] if run.log_steps else [])]
    check_plan(reads, writes, overwrite=run.overwrite, resume=run.resume)
    if run.resume:
        return _check_resume_config(run.out, config)
    return None


def _read_init_from(config: RunConfig, probe: MSAModel, *, quiet: bool) -> InitFrom | None:
    """The checkpoint of ``--init-from`` checked against the run's model, and the note saying
    which tensors are re-initialised (before anything is written)."""
    if not config.init_from:
        return None
    try:
        path = resolve_checkpoint(config.init_from)
    except MsakitError as exc:
        raise MsakitError(f"--init-from: {exc}") from None
    init = read_init_from(path, config.model_name, probe)
    if not quiet:
        print("\n".join(init.describe()), file=sys.stderr, flush=True)
    return init


def _lock_run(out: Path, ctx) -> RunLock | None:
    """The main rank locks ``out``; under torchrun every rank learns whether it could."""
    lock, error = (RunLock(out) if ctx.is_main else None), None
    if lock is not None:
        try:
            lock.acquire()
        except MsakitError as exc:
            error = exc
    if ctx.enabled:
        failed = ctx.all_sum(torch.tensor(float(error is not None), device=ctx.device))
        if float(failed) > 0 and error is None:
            if lock is not None:
                lock.release()
            raise MsakitError(f"{out}: the main rank could not lock the run folder")
    if error is not None:
        raise error
    return lock


def _train_seeds(
    ctx: distributed.DistContext, config: RunConfig, *, run: _Run, inputs: Any,
    pretrained: dict[str, torch.Tensor], adapter_state: dict[str, Any] | None,
    init: InitFrom | None = None, tracker: MlflowRun | None = None,
) -> list[dict[str, Any]]:
    rows, out, features = [], run.out, inputs.features
    for seed in config.seeds:
        run_dir = out / f"seed-{seed}"
        if run.resume and finished_seed(run_dir):
            rows.append(_finished_row(out, seed, config.spec))
            continue
        torch.manual_seed(seed)
        if inputs.encoder is not None:
            inputs.encoder.load_state_dict(pretrained)
        net = build_model(config, inputs.dims, copy.deepcopy(inputs.encoder), stats=inputs.stats)
        if adapter_state is not None:
            stage = model_spec(config.model_name).adapter_stage
            assert stage is not None  # adapters were read for a model that has them
            stage.install(net, adapter_state)
        if init is not None:
            init.apply(net)
        trainer = Trainer(
            model=net,
            config=config,
            train=features.splits["train"],
            valid=features.splits["valid"],
            run_dir=run_dir,
            seed=seed,
            dist=ctx,
            quiet=run.quiet,
            log_steps=Path(run.log_steps) if run.log_steps else None,
            resume=run.resume,
            tensorboard=out / "tensorboard" / f"seed-{seed}",
            checkpoint_extra=inputs.checkpoint_extra,
            hooks=_seed_hooks(run.hooks, tracker, seed, run.records),
            save_last=run.resumable,
            best_format="safetensors",
        )
        trainer.fit()
        if run.records is not None:
            run.records.begin()  # a resumed seed with no epoch left
        ctx.barrier()
        _load_best(net, run_dir)
        result = evaluate_model(
            net, features.splits["test"], dataset=config.spec,
            batch_size=config.batch_size, device=ctx.device,
            amp=amp_mode(config.amp, config.bf16), dist=ctx,
        )
        rows.append({"seed": seed, **result.metrics})
        if ctx.is_main:
            _warn(undefined_warning(result.metrics, f"{run.data} test split, seed {seed}"))
            write_text_atomic(run_dir / "history.json", metrics_json(trainer.history, indent=1))
            _write_results(out / "results.csv", rows, config.spec)
            finish_seed(run_dir, run.save)
    if ctx.is_main:
        prune_shared(out)
    return rows


def _seed_hooks(hooks: TrainerHooks | None, tracker: MlflowRun | None,
                seed: int, records: RunRecords | None = None) -> TrainerHooks:
    """The caller's hooks, with the tracker's per-epoch logging of this seed, and the run's
    records begun at the first epoch's end (a resumed run: :class:`RunRecords`)."""
    hooks = hooks or TrainerHooks()
    log = tracker.seed_logger(seed) if tracker is not None else hooks.on_epoch_record
    if records is None or records.begun:
        return dataclasses.replace(hooks, on_epoch_record=log)

    def on_epoch_record(epoch: int, record: dict[str, Any]) -> None:
        records.begin()
        if log is not None:
            log(epoch, record)

    return dataclasses.replace(hooks, on_epoch_record=on_epoch_record)


def _load_best(net: torch.nn.Module, run_dir: Path) -> None:
    """The seed's best weights, read back from its folder (or an earlier run's best.pt)."""
    path = best_weights_file(run_dir) or run_dir / WEIGHTS
    try:
        net.load_state_dict(read_checkpoint(path)["model"])
    except Exception as exc:  # noqa: BLE001 - deleted or damaged since: one line
        raise MsakitError(
            f"{path}: cannot read the best checkpoint back "
            f"({type(exc).__name__}); train this seed again with --overwrite"
        ) from None


def _finished_row(out: Path, seed: int, dataset: str | DatasetSpec) -> dict[str, Any]:
    """A seed that finished before a resume (``history.json``, no ``last.pt``): its test row
    as ``results.csv`` holds it."""

    path = out / "results.csv"
    try:
        records = as_records(read_csv(path)) if path.is_file() else []
        row = next((r for r in records if r.get("seed") == str(seed)), None)
        if row is not None:
            return {"seed": seed, **{k: float(row.get(k) or "nan")
                                     for k in metric_names(dataset)}}
    except (MsakitError, TypeError, ValueError):
        pass
    raise MsakitError(f"{out / f'seed-{seed}'}: the seed finished (history.json, no last.pt) "
                      f"but {path} holds no row for it; train it again with --overwrite")


def _check_resume_config(out: Path, config: RunConfig) -> dict[str, Any] | None:
    """--resume continues a run only with the settings it was started with (seeds aside).
    Returns the content identity of the data the run recorded (None for a run written before
    msakit recorded one: a ``warning:`` line says that the data is not checked)."""
    import yaml

    path = out / "config.yaml"
    if not path.is_file():
        return None
    try:
        saved = read_yaml(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MsakitError(
            f"{path}: cannot read it ({problem(exc)}); --resume needs the run's "
            "config.yaml (or use --overwrite to start again)"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model", {}), dict):
        raise MsakitError(f"{path}: not an msakit config.yaml (use --overwrite to start again)")
    def flat(cfg: dict[str, Any]) -> dict[str, Any]:  # --set names: lr.text, gamma, ...
        out = {k: v for k, v in cfg.items() if not isinstance(v, dict) and k != "seeds"}
        for key, value in cfg.items():
            if isinstance(value, dict) and key not in ("data", "provenance"):  # see
                # _recorded_data; provenance: where the run came from, not a setting
                out.update({(k if key == "model" else f"{key}.{k}"): v for k, v in value.items()})
        return out

    started = saved
    # Folders written before named presets existed started from the paper preset.
    if started.get("preset", "paper") != config.preset:
        raise MsakitError(
            f"{path}: the run was started with --preset {started.get('preset', 'paper')}, not "
            f"{config.preset}; resume with the same options, or train into a new --out"
        )
    # Fields added since the folder was written hold their defaults there (preset: paper).
    defaults = RunConfig(model_name=config.model_name, dataset=config.dataset).to_dict()
    old = flat({**{k: v for k, v in defaults.items() if k != "model"}, **started})
    new = flat(load_yaml(config.to_yaml()))
    changed = sorted((str(k) for k in old.keys() | new.keys() if old.get(k) != new.get(k)),
                     key=str)  # a hand-edited config.yaml may hold keys that are no strings
    if changed:
        raise MsakitError(
            f"{path}: the run was started with other settings ({', '.join(changed)}); resume "
            "with the same options, or train into a new --out"
        )
    return _recorded_data(path, saved)


def _recorded_data(path: Path, saved: dict[str, Any]) -> dict[str, Any] | None:
    """The data identity a run's config.yaml records, checked; None (and a ``warning:`` line)
    for a run written before msakit recorded one."""

    if saved.get("data") is None:
        print(f"warning: {path} records no content identity of the data the run trained on "
              "(written before msakit recorded one): --data is not checked against it",
              file=sys.stderr)
        return None
    return check_identity(saved["data"], str(path))


def _check_same_data(
    run: _Run, given: dict[str, Any] | None, *, resumed: dict[str, Any] | None,
    configured: dict[str, Any] | None,
) -> None:
    """--data must hold the content the resumed run, and the run of a --config, trained on."""
    assert given is not None  # prepare_run records the data's identity

    for recorded, whose, hint in (
        (resumed, f"--resume: {run.out} was trained on",
         "resume with its own data, or train into a new --out"),
        (configured, "--config: its run was trained on",
         "to train these settings on other data, delete 'data' from a copy of its config.yaml"),
    ):
        if recorded is not None and not same_content(recorded, given):
            raise MsakitError(
                f"{whose} {recorded['file']} (blake2b {recorded['blake2b'][:16]}), not on "
                f"--data {run.data} (blake2b {given['blake2b'][:16]}): other content; {hint}"
            )


def _with_summary(
    rows: list[dict[str, Any]], dataset: str | DatasetSpec
) -> list[dict[str, Any]]:
    """``rows`` rounded to 4 decimals (:func:`evaluation.metrics.rounded`, as MMSA's tables), then
    the ``mean`` and ``std`` rows of the rounded values; with one seed the std row is blank (a
    spread of one value is not 0, it is unknown)."""
    names = metric_names(dataset)
    rows = [{**row, **rounded({k: row[k] for k in names})} for row in rows]  # a printed table
    values = np.array([[row[k] for k in names] for row in rows], dtype=np.float64)
    mean = dict(zip(names, values.mean(0).round(4).tolist(), strict=True))
    if len(rows) > 1:
        std = dict(zip(names, values.std(0).round(4).tolist(), strict=True))
    else:
        std = dict.fromkeys(names, "")
    return [*rows, {"seed": "mean", **mean}, {"seed": "std", **std}]


def _write_results(path: Path, rows: list[dict[str, Any]], dataset: str | DatasetSpec) -> None:
    names = ["seed", *metric_names(dataset)]
    write_results_table(path, [{k: row[k] for k in names} for row in _with_summary(rows, dataset)])


# --------------------------------------------------------------------------- checkpoints
INFERENCE_BATCH = 256
"""Clips per batch when a loaded checkpoint predicts (:meth:`LoadedCheckpoint.predictions`):
without gradients a batch keeps no activations for backward, so a larger batch than training's
costs little memory and gives the text encoder's matmuls more rows. Batches are trimmed to
their longest clip and the audio/vision encoders skip padding, so their size does not pad more
work; a model that reads padded frames is padded to the file's lengths anyway."""


@dataclass
class LoadedCheckpoint:
    model: MSAModel
    config: RunConfig
    dims: Dims
    state: dict[str, Any]
    path: Path = Path("checkpoint")

    def predictions(self, part: SplitData, *, batch_size: int = INFERENCE_BATCH,
                    keep: Any = None) -> np.ndarray:
        """The model's (N,) float32 predictions of ``part``, in split order: eval mode, no
        autograd (``torch.inference_mode``), the run's precision (``amp``), batches of
        ``batch_size`` clips in split order, no work on the host between batches. ``keep``,
        if given, is called with every batch's output (e.g. to keep representations).

        The one place a loaded checkpoint predicts (``evaluate``, ``predict``, ``plot``,
        ``predict --video``, ``analyze``): every prediction is a finite number, checked once
        over the split, or one :class:`MsakitError` naming the checkpoint and the first sample
        (its position in the split) without one."""

        mode = amp_mode(self.config.amp, self.config.bf16)
        cast = autocast_settings("cpu", "off" if mode == "fp16" else mode)  # fp16: CUDA only
        model = self.model.eval()
        plan = epoch_plan(part, batch_size, seed=0, epoch=0, shuffle=False)
        out = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=cast.dtype,
                                                     enabled=cast.enabled):
            for batch in iterate(part, plan, trim=not model.reads_padding()):
                output = model(batch)
                out.append(output.prediction.detach().float().reshape(-1))
                if keep is not None:
                    keep(output)
        predictions = torch.cat(out) if out else torch.zeros(0)
        _check_finite(self.path, predictions)
        return predictions.numpy()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file (``model.safetensors``, its ``config.json``, a ``best.pt``), or a
    folder holding one: a seed's (``RUN/seed-S``) or a run's with one seed (``RUN``)."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise MsakitError(f"checkpoint {path} does not exist")
        return path
    if (path / WEIGHTS).is_file() or (path / "config.json").is_file():
        return path / WEIGHTS
    if (path / "best.pt").is_file():
        return path / "best.pt"
    found = sorted({p.parent for pattern in (f"seed-*/{WEIGHTS}", "seed-*/best.pt")
                    for p in path.glob(pattern)})
    if len(found) == 1:
        return best_weights_file(found[0]) or found[0] / WEIGHTS
    if not found:
        raise MsakitError(f"checkpoint {path} is a folder without {WEIGHTS} (or best.pt), "
                          "nor seed-*/ folders holding one")
    seeds = ", ".join(p.name for p in found)
    raise MsakitError(
        f"{path} holds several seeds ({seeds}); pass one, e.g. --checkpoint {found[0]}"
    )


def _describe_checkpoint(path: Path, state: Any) -> tuple[RunConfig, Dims, dict[str, Any]]:
    """The checkpoint's configuration, dims and text-encoder config, with their structure
    checked (keys, types, dims); one ``MsakitError`` line on any mismatch."""
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MsakitError(f"{path}: not an msakit checkpoint (no 'model' and 'config' entries)")
    for key, kind in (("model", dict), ("config", dict), ("dims", dict),
                      ("text_encoder_config", dict)):
        if not isinstance(state.get(key), kind):
            raise MsakitError(f"{path}: not an msakit checkpoint ('{key}' is missing or not a "
                              f"{kind.__name__})")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor)
               for k, v in state["model"].items()):
        raise MsakitError(f"{path}: 'model' is not a mapping of names to tensors")
    try:
        config = RunConfig.from_dict(state["config"])  # typed and checked once
        dims = Dims(**state["dims"])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for k, v in dims.to_dict().items() if not (k == "text_dim" and v is None)):
            raise ValueError(f"dims {dims.to_dict()}")
    except MsakitError as exc:
        raise MsakitError(f"{path}: its configuration is invalid ({exc})") from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise MsakitError(
            f"{path}: its configuration or dims are malformed ({type(exc).__name__}: {exc})"
        ) from None
    return config, dims, state["text_encoder_config"]


def _check_contents(path: Path, state: dict[str, Any]) -> None:
    """What a well-formed checkpoint holds beside its description: finite weights (a NaN
    weight makes every prediction NaN, hence no metric), and an extractor record with its
    structure (:func:`msakit.extract.settings.check_record`)."""

    bad = first_non_finite(state["model"])
    if bad is not None:
        raise MsakitError(f"{path}: weight {bad} holds NaN or infinite values; a model with "
                          "it predicts no number (a diverged or damaged checkpoint)")
    if state.get("extractor") is not None:

        check_record(state["extractor"], f"{path}: 'extractor'")


@checked_arguments
def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Rebuild a trained model from its checkpoint alone: a seed's folder
    (``model.safetensors`` + ``config.json``, read with no pickle at all) or a torch file such
    as an earlier ``best.pt`` (``weights_only=True``).

    ``path`` may also be a run folder (see :func:`resolve_checkpoint`).
    """
    path = resolve_checkpoint(path)
    if not is_pretrained(path):
        check_input(Input("checkpoint", path))  # a FIFO or a device: one line, not a hang
    state = read_checkpoint(path)  # checks each file it opens
    config, dims, encoder_config = _describe_checkpoint(path, state)
    _check_contents(path, state)
    try:
        # First without memory (the meta device), bounded by what the file stores: a small
        # file that declares a huge vocabulary, width or depth is refused before anything
        # is allocated; then for real, once every shape is known to be the checkpoint's.
        with torch.device("meta"), _described_within(path, state["model"]):
            described = build_model(config, dims, text_encoder_from_config(encoder_config))
        _check_fits(path, config, described, state["model"])
        del described
        model = build_model(config, dims, text_encoder_from_config(encoder_config))
        model.load_state_dict(state["model"], strict=False)
    except MsakitError:
        raise
    except Exception as exc:  # noqa: BLE001 - shapes, unknown settings: one line
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise MsakitError(
            f"{path}: weights do not fit the model it describes ({type(exc).__name__}: {first})"
        ) from None
    model.eval()
    return LoadedCheckpoint(model=model, config=config, dims=dims, state=state, path=path)


def _check_finite(path: Path, predictions: torch.Tensor) -> None:
    """Every prediction of a checkpoint's model is a finite number, or one ``MsakitError``
    naming the checkpoint and the first sample (its position in the split) without one."""
    finite = torch.isfinite(predictions)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0])
    raise MsakitError(f"{path}: the model predicts {float(predictions[first])} for sample "
                      f"{first} (position in the split): its weights are finite, its "
                      "computation is not")


BUILT_PER_STORED = 4
"""Building a model registers more tensors than it keeps (``nn.TransformerEncoder`` copies a
layer it then drops): building the model a checkpoint describes may register this many times
the tensors and values the checkpoint stores, plus :data:`UNSAVED_ELEMENTS` and
:data:`UNSAVED_TENSORS`, before it is refused."""
UNSAVED_ELEMENTS = 1 << 20
"""Tensor elements beyond that (buffers that are not saved, such as a text encoder's position
ids)."""
UNSAVED_TENSORS = 1024
"""Parameters and buffers beyond that."""


@contextmanager
def _described_within(path: Path, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """While a checkpoint's model is built: every parameter and buffer registered counts, and
    more elements or tensors than :data:`BUILT_PER_STORED` times those the checkpoint stores
    (plus :data:`UNSAVED_ELEMENTS`, :data:`UNSAVED_TENSORS`) stop the build with one line. The
    file's size thus bounds what its configuration (vocabulary, widths, layers, positions) may
    make msakit build."""
    from torch.nn.modules import module as nn_module

    stored = (sum(t.numel() for t in weights.values()), len(weights))
    limit = (BUILT_PER_STORED * stored[0] + UNSAVED_ELEMENTS,
             BUILT_PER_STORED * stored[1] + UNSAVED_TENSORS)
    seen = [0, 0]

    def count(_module, name: str, tensor) -> None:
        if tensor is None:
            return
        seen[0] += tensor.numel()
        seen[1] += 1
        if seen[0] > limit[0] or seen[1] > limit[1]:
            raise MsakitError(
                f"{path}: weights do not fit the model it describes: its configuration asks for "
                f"far more than the {stored[1]} tensors of {stored[0]} values it holds "
                f"(exceeded at '{name}', shape {tuple(tensor.shape)})"
            )

    hooks = [nn_module.register_module_parameter_registration_hook(count),
             nn_module.register_module_buffer_registration_hook(count)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _check_fits(path: Path, config: RunConfig, model: MSAModel,
                weights: dict[str, torch.Tensor]) -> None:
    """Every tensor of the (meta) ``model`` is in ``weights`` with its shape, and no other:
    the weights are exactly those of the model the checkpoint describes."""
    expected = model.state_dict()
    missing = [k for k in expected.keys() - weights.keys() if not k.endswith("position_ids")]
    wrong = [k for k in expected.keys() & weights.keys() if expected[k].shape != weights[k].shape]
    if missing or wrong or weights.keys() - expected.keys():
        detail = (f" ('{wrong[0]}' is {tuple(weights[wrong[0]].shape)}, the model's "
                  f"{tuple(expected[wrong[0]].shape)})" if wrong else "")
        raise MsakitError(
            f"{path}: weights do not fit the {config.model_name} model it describes{detail}"
        )


def split_for(
    ckpt: LoadedCheckpoint, data: str | os.PathLike, split: str | None, *,
    prediction: bool = False,
) -> SplitData:
    """One split of the feature file ``data``, loaded and checked against the checkpoint: the
    token ids against its text encoder's vocabulary, the feature sizes against its dims, the
    labels against its data set, the extractor settings against its training data's.
    ``prediction``: labels are optional and the file may hold one split
    (:func:`load_feature_file`); ``split`` None then takes the file's only split, else ``test``."""
    check_input(Input("data", Path(data)))
    vocab = ckpt.state["text_encoder_config"].get("vocab_size", 0)
    vocab = int(vocab) if isinstance(vocab, int) and vocab > 0 else None
    features = load_feature_file(str(data), vocab_size=vocab, prediction=prediction,
                                 text_features=ckpt.dims.text_dim is not None)
    if split is None:
        split = next(iter(features.splits)) if len(features.splits) == 1 else "test"
    if split not in features.splits:
        held = ", ".join(repr(s) for s in features.splits)
        raise MsakitError(f"{data}: no split {split!r} (the file holds {held})")
    check_text_length(features.text_len, ckpt.state["text_encoder_config"], str(data),
                      ckpt.config.text_encoder)
    if features.text_dim != ckpt.dims.text_dim:
        raise MsakitError(f"{data}: text features {features.text_dim} wide, the checkpoint's "
                          f"{ckpt.dims.text_dim}")
    _check_same_extractor(ckpt, data)  # first: it names both extractors (e.g. mediapipe, opencv)
    if (features.audio_dim, features.vision_dim) != (ckpt.dims.audio, ckpt.dims.vision):
        raise MsakitError(
            f"{data}: audio/vision feature sizes {features.audio_dim}/{features.vision_dim} do "
            f"not match the checkpoint's {ckpt.dims.audio}/{ckpt.dims.vision}"
        )
    spec = ckpt.config.spec
    check_dataset(features, spec, f"the checkpoint's data set ({spec.title})")
    return features.splits[split]


def _check_same_extractor(ckpt: LoadedCheckpoint, data: str | os.PathLike) -> None:
    """Features from `msakit extract` must come from the extractor settings the model saw."""

    trained = ckpt.state.get("extractor")
    given = read_metadata(data)
    if trained is None and given is None:
        return
    if trained is None or given is None or trained["settings"] != given["settings"]:
        def what(record: dict[str, Any] | None) -> str:
            return describe(record["settings"]) if record else "not from msakit extract"

        raise MsakitError(
            f"{data}: its features ({what(given)}) are not those the checkpoint was trained on "
            f"({what(trained)}); the model does not apply to them"
        )


@checked_arguments
def evaluate(
    checkpoint: str | os.PathLike, data: str | os.PathLike, split: str = "test"
) -> dict[str, float] | list[dict[str, Any]]:
    """MMSA metrics of a checkpoint on one split of a feature file.

    For one checkpoint (a ``best.pt``, a seed folder, a run folder with one seed): a dict of
    its metrics, unrounded (``msakit evaluate`` prints them rounded to MMSA's 4 decimals).
    For a run folder with several seeds (``RUN/seed-S/best.pt``): the rows of the same table
    as training's results (:attr:`TrainResult.rows`): one row per seed in seed order
    (``{"seed": S, metric: value}``, rounded to 4 decimals), then the ``mean`` and ``std``
    rows. A metric that does not exist on the split (constant labels, one sample:
    :data:`msakit.evaluation.metrics.UNDEFINED_WHEN`) is NaN, named in a ``warning:`` line on
    stderr."""
    seeds = run_seed_checkpoints(checkpoint)
    if seeds:
        return _evaluate_seeds(seeds, data, split)
    ckpt = load_checkpoint(checkpoint)
    part = split_for(ckpt, data, split)
    metrics = _evaluate_checkpoint(ckpt, part)
    _warn(undefined_warning(metrics, f"{data} {split} split"))
    return metrics


def run_seed_checkpoints(path: str | os.PathLike) -> list[tuple[int | str, Path]]:
    """The best weights of every seed of a run folder that holds several seeds (a seed's
    ``model.safetensors``, or an earlier run's ``best.pt``), as ``(S, path)`` in seed order; an
    empty list for anything else (a checkpoint file, a seed folder, a run folder with one seed
    or none: :func:`resolve_checkpoint` reads those)."""
    path = Path(path)
    if not path.is_dir() or (path / WEIGHTS).is_file() or (path / "best.pt").is_file():
        return []
    found = []
    for folder in sorted({p.parent for pattern in (f"seed-*/{WEIGHTS}", "seed-*/best.pt")
                          for p in path.glob(pattern)}):
        label = folder.name.removeprefix("seed-")
        found.append((int(label) if label.isdigit() else label,
                      best_weights_file(folder) or folder / WEIGHTS))
    found.sort(key=lambda item: (isinstance(item[0], str), item[0]))
    return found if len(found) > 1 else []


def _evaluate_seeds(
    seeds: list[tuple[int | str, Path]], data: str | os.PathLike, split: str
) -> list[dict[str, Any]]:
    """Every seed's metrics on ``split`` of ``data`` and their mean and std (the results table
    of training, :func:`_with_summary`); the seeds must share a data set's metrics."""
    rows: list[dict[str, Any]] = []
    first: tuple[Path, DatasetSpec] | None = None
    for seed, path in seeds:
        ckpt = load_checkpoint(path)
        spec = ckpt.config.spec
        if first is not None and metric_names(spec) != metric_names(first[1]):
            raise MsakitError(
                f"{path}: trained on {spec.title}, {first[0]} on {first[1].title}; the seeds of "
                "one run folder share a data set (evaluate each checkpoint on its own)"
            )
        first = first or (path, spec)
        metrics = _evaluate_checkpoint(ckpt, split_for(ckpt, data, split))
        _warn(undefined_warning(metrics, f"{data} {split} split, seed {seed}"))
        rows.append({"seed": seed, **metrics})
    assert first is not None
    return _with_summary(rows, first[1])


def write_results_table(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write a results table's rows (per-seed rows, then ``mean`` and ``std``, as
    :attr:`TrainResult.rows`) to ``path``: JSON for a ``.json`` name (an undefined metric is
    null), else CSV (as ``results.csv``: an undefined metric is a blank cell)."""
    path = Path(path)
    write_text_atomic(path, results_table_text(
        rows, "json" if path.suffix.lower() == ".json" else "csv"))


def results_table_text(rows: list[dict[str, Any]], fmt: str = "csv") -> str:
    """A results table's rows as ``fmt``: ``json`` (an undefined metric is null) or ``csv`` (as
    ``results.csv``: an undefined metric is a blank cell)."""
    if fmt == "json":
        return metrics_json(rows, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in without_nan(row).items()})
    return buf.getvalue()


def _warn(line: str | None) -> None:
    """A ``warning:`` line on stderr (nothing for None)."""
    if line is not None:
        print(line, file=sys.stderr, flush=True)


def _evaluate_checkpoint(ckpt: LoadedCheckpoint, part: SplitData) -> dict[str, float]:
    """MMSA metrics of the checkpoint's predictions of ``part`` (labelled), under the run's
    missing-modality setting (``missing_rate``: the positions its test split lost in
    training)."""
    part = with_missing_split(part, run_rates(ckpt.config))
    return metric_values(ckpt.predictions(part), part.labels, ckpt.config.spec)


@checked_arguments
def predict(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike | Mapping[str, Any],
    split: str | None = None,
    out: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Predictions of a checkpoint: ``{"id", "prediction"}`` per sample, with ``"label"`` when
    the data have labels; written as CSV (``id,prediction[,label]``, 6 significant digits) to
    ``out`` when given. ``out`` may not be the checkpoint or the data file.

    ``data`` is a feature file (labels optional; ``split`` defaults to the file's only split,
    else ``test``) or one or a few clips in memory: a dict with ``text_bert`` (N, 3, Lt) or
    ``raw_text`` (N strings), ``audio`` (N, La, Da), ``vision`` (N, Lv, Dv) and optionally
    ``audio_lengths``, ``vision_lengths``, ``id`` (see :mod:`msakit.inference`).
    """
    # data: clips in memory, else a path (checked_arguments)
    if out is not None:
        check_distinct_output(out, [*([] if isinstance(data, Mapping) else [data]), checkpoint,
                                    resolve_checkpoint(checkpoint)])
        check_output_folder(Path(out).parent if Path(out).parent != Path("") else Path("."))
    ckpt = load_checkpoint(checkpoint)
    if isinstance(data, Mapping):
        if split is not None:
            raise MsakitError("predict: split names a split of a file; clips in memory have none")
        part = split_from_arrays(data, ckpt)
    else:
        part = split_for(ckpt, data, split, prediction=True)
    rows = prediction_rows(part, ckpt.predictions(part))
    if out is not None:
        write_predictions(rows, out)
    return rows


# --------------------------------------------------------------------------- synth and demo
@checked_arguments
def synth(like: str, n: tuple[int, int, int] | list[int], out: str | os.PathLike, seed: int = 0,
          *, text_features: bool = False) -> Path:
    """Write a synthetic MMSA feature file shaped like the named data set ``like`` (see
    :func:`msakit.data.synthetic.synthetic_names`); with ``text_features``, also the ``text``
    key that the models without a text encoder (TFN, LMF, MulT) read."""
    if like not in synthetic_names():
        raise MsakitError(f"--like must be one of {', '.join(synthetic_names())}, got {like!r}")
    if len(n) != 3 or min(n) < 1:
        raise MsakitError(f"three splits of at least one sample each (train, valid, test), got "
                          f"{' '.join(map(str, n))}")
    out = Path(out)
    check_distinct_output(out, [])  # its missing folders are made when it is written
    if out.suffix == ".npz":  # the code-free format, as the name says
        save_npz(make_synthetic(like, *n, seed=seed, text_features=text_features), out)
        return out
    write_synthetic(str(out), like, n, seed=seed, text_features=text_features)
    return out


DEMO_SIZES = (256, 64, 96)
DEMO_FILES = (("synthetic_mosi.pkl", "file"), ("synthetic_mosi.npz", "file"), ("run", "train"))
"""What ``demo`` writes in its folder (name, kind of output: :class:`msakit.core.safety.Output`)."""


@checked_arguments
def demo(
    out: str | os.PathLike | None = None, quiet: bool = False,
    overrides: list[str] | None = None, *, overwrite: bool = False,
) -> TrainResult:
    """Train CLGSI on built-in synthetic MOSI-shaped data with the packaged text encoder;
    ``overrides`` (``key=value``) come after the demo's own.

    Two seeds, 4 epochs and length-bucketed batches (``sampler=bucket``, about 1.4x less CPU
    time per sample than plain shuffling on this data) keep it near 2 minutes on 2 CPU cores;
    ``msakit train`` defaults to five seeds and plain shuffled batches.

    A folder that already holds the demo's files is refused unless ``overwrite``."""
    if out is not None:
        check_plan([], [Output("--out", Path(out), "folder"),
                        *(Output(f"--out (its {name})", Path(out) / name, kind)
                          for name, kind in DEMO_FILES)], overwrite=overwrite)
    workdir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="msakit-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pickled = synth("mosi", DEMO_SIZES, workdir / "synthetic_mosi.pkl", seed=0)
    data = workdir / "synthetic_mosi.npz"
    convert_to_npz(pickled, data)
    return train(
        DEMO_MODEL,
        "mosi",
        data,
        text_encoder=DEFAULT_TEXT_ENCODER,
        seeds=[1, 2],
        epochs=4,
        batch=32,
        out=workdir / "run",
        overrides=["early_stop=6", "sampler=bucket", *(overrides or [])],
        quiet=quiet,
        overwrite=overwrite,
    )


@checked_arguments
def predict_video(
    checkpoint: str | os.PathLike,
    video: str | os.PathLike,
    text: str | None = None,
    *,
    openface_csv: str | os.PathLike | None = None,
) -> Any:
    """The sentiment of one raw clip: ``video`` extracted as the checkpoint's training data was
    (its recorded ``msakit extract`` settings), then the model's prediction
    (:class:`msakit.extract.predict.VideoPrediction`). Without ``text``, speech recognition."""
    return predict_clip(load_checkpoint(checkpoint), video, text, checkpoint=checkpoint,
                        openface_csv=openface_csv)


def analyze(
    videos: list[str | os.PathLike],
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: Any = None,
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> Any:
    """Long videos as sentiment timelines (:mod:`msakit.extract.analyze`): each video split
    into utterances, each extracted as the checkpoint's training data was and predicted;
    ``out/NAME/timeline.csv`` and ``timeline.png`` per video
    (:class:`msakit.extract.analyze.AnalyzeResult`)."""
    return analyze_videos(videos, out, checkpoint=resolve_checkpoint(checkpoint),
                          loader=load_checkpoint, options=options, workers=workers,
                          resume=resume, progress=progress)
