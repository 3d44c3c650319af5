"""A training run, from a checked configuration to its run folder: the checks of the folder and
the inputs before anything is written (:func:`msakit.core.safety.check_plan`, ``--resume``'s
settings and data), the run lock, one :class:`~msakit.training.trainer.Trainer` per seed, each
seed's test metrics, ``results.csv``, ``train.log`` and the provenance
(:mod:`msakit.training.provenance`).

:func:`run_training` takes a configuration, the data, an output folder and the run's options
(:class:`RunOptions`); :func:`msakit.api.train` builds the configuration from a model's preset
and the command line's choices and calls it. Experiment tracking is given as a
:data:`StartTracker` (MLflow's, :func:`msakit.tracking.start_tracking`, lives on the user
surface: it draws the run's curves with :mod:`msakit.reporting`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from msakit.config import RunConfig
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError, warn
from msakit.core.files import RunLock, write_text_atomic
from msakit.core.runlog import recording
from msakit.core.safe_yaml import load_yaml, problem, read_yaml
from msakit.core.safety import STEP_LOG_RECORD, Output, check_plan, inputs, run_entries
from msakit.data.identity import check_identity, same_content
from msakit.data.tables import as_records, read_csv
from msakit.evaluation.metrics import metric_names, metrics_json, undefined_warning
from msakit.evaluation.tables import with_summary, write_results_table
from msakit.models.base import MSAModel
from msakit.models.registry import model_spec, preset_note
from msakit.training import distributed
from msakit.training.checkpoints import resolve_checkpoint
from msakit.training.device import amp_mode
from msakit.training.init_from import InitFrom, read_init_from
from msakit.training.inputs import LoadedInputs, build_model, prepare_run
from msakit.training.pretrained import (
    WEIGHTS,
    best_weights_file,
    finish_seed,
    finished_seed,
    prune_shared,
    read_checkpoint,
)
from msakit.training.provenance import RunRecords
from msakit.training.trainer import Trainer, TrainerHooks, check_batch_size, evaluate_model


@dataclass
class TrainResult:
    out: Path
    rows: list[dict[str, Any]]
    """One row per seed (``seed`` then the test metrics), then the ``mean`` and ``std`` rows."""


SAVE_MODES = ("best", "last", "none")
"""``train(save=...)``, ``--save``: what a finished seed keeps (see :func:`msakit.api.train`)."""


class Tracker(Protocol):
    """An experiment tracker of one run (main rank): each seed's per-epoch records, then the
    results (:class:`msakit.tracking.MlflowRun`)."""

    def seed_logger(self, seed: int) -> Callable[[int, dict[str, Any]], None]: ...

    def finish(self, rows: list[dict[str, Any]], out: Path, *, failed: bool = False) -> None: ...


StartTracker = Callable[..., Tracker | None]
"""``start(out=, data=, config=)`` -> the run's tracker (or None), called on the main rank once
the run's checks passed, with its folder, its data and its configuration (``config.yaml``'s
mapping)."""


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out, beside its configuration (what each does:
    :func:`msakit.api.train`). Checked when made: ``save`` one of :data:`SAVE_MODES`, ``resume``
    and ``overwrite`` not both."""

    adapters: str | os.PathLike | None = None
    log_steps: str | os.PathLike | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    save: str = "best"
    resumable: bool = True
    hooks: TrainerHooks | None = None
    loaded: LoadedInputs | None = None
    tracking: StartTracker | None = None

    def __post_init__(self) -> None:
        if self.save not in SAVE_MODES:
            raise MsakitError(f"save={self.save!r}: one of {', '.join(SAVE_MODES)}")
        if self.resume and self.overwrite:
            raise MsakitError("--resume and --overwrite exclude each other")


@dataclass
class _Run:
    """One run being trained: its data, its folder and its options, passed down as one object."""

    data: str | os.PathLike
    out: Path
    options: RunOptions
    records: RunRecords | None = None
    """The run's ``train.log`` and provenance (main rank; set by :func:`_train`)."""


def run_training(config: RunConfig, data: str | os.PathLike, out: str | os.PathLike,
                 options: RunOptions | None = None) -> TrainResult:
    """Train ``config`` on the MMSA feature file ``data`` for every seed; write the run folder
    ``out`` (what it holds: :func:`msakit.api.train`). ``options``: how (:class:`RunOptions`;
    by default a new run, its best weights kept)."""
    run = _Run(data=data, out=Path(out), options=options or RunOptions())
    ctx = distributed.setup()
    try:
        with recording():  # train.log (msakit.core.runlog)
            return _train(ctx, config, run)
    finally:
        distributed.teardown(ctx)


def _clear_run(out: Path) -> None:
    """--overwrite: remove the previous run's files (nothing else in the folder; that none of
    them is an input was checked before, :func:`msakit.core.safety.check_plan`)."""
    for path in run_entries(out, "train"):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as exc:
            raise MsakitError(f"--overwrite: cannot remove {path}: {exc.strerror}") from None


def _train(ctx: distributed.DistContext, config: RunConfig, run: _Run) -> TrainResult:
    opts, resumed = run.options, _check_outputs(run, config)
    inputs = prepare_run(config, run.data, run.out, ctx, checkpoint_format="msakit-checkpoint-1",
                         loaded=opts.loaded)
    _check_same_data(run, inputs.config.data, resumed=resumed, configured=config.data)
    config = inputs.config  # with the data's content identity, as config.yaml records it
    # Build once to surface configuration errors before anything is written.
    probe = build_model(config, inputs.dims, copy.deepcopy(inputs.encoder), stats=inputs.stats)
    check_batch_size(config, probe, ctx.world_size)
    probe.on_train_start(inputs.features.splits["train"])  # what training needs of the data
    adapter_state = None
    if opts.adapters is not None:
        stage = model_spec(config.model_name).adapter_stage
        if stage is None:
            raise MsakitError(
                f"--adapters does not apply to {config.model_name} (no adapters)")
        adapter_state = stage.read(opts.adapters, config, probe, inputs.encoder)
    notes = [preset_note(config.model_name, config.spec, config.preset), horizon_note(config),
             probe.start_message(with_adapters=opts.adapters is not None)]
    if not opts.quiet and ctx.is_main:
        for message in filter(None, notes):
            print(message, file=sys.stderr)
    init = _read_init_from(config, probe, quiet=opts.quiet or not ctx.is_main)
    del probe
    pretrained = copy.deepcopy(inputs.encoder.state_dict()) if inputs.encoder else {}
    start = opts.tracking
    tracker = (start(out=run.out, data=run.data, config=config.to_dict())
               if start is not None and ctx.is_main else None)
    lock, rows = _lock_run(run.out, ctx), []
    try:
        if opts.overwrite and ctx.is_main:
            _clear_run(run.out)
        ctx.barrier()
        run.records = (RunRecords(config.to_yaml(), run.out, data=run.data, resume=opts.resume)
                       if ctx.is_main else None)  # train.log and provenance (main rank)
        if opts.log_steps is not None and ctx.is_main:
            if not opts.resume:
                Path(opts.log_steps).unlink(missing_ok=True)  # every seed appends its lines
            # the run's own step log: the only existing file --log-steps may name later
            write_text_atomic(run.out / STEP_LOG_RECORD, f"{Path(opts.log_steps).resolve()}\n")
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
    rows = with_summary(rows, config.spec)
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
    opts = run.options
    reads = [*inputs("--data", [run.data]), *inputs("--adapters", [opts.adapters]),
             *inputs("--init-from", [config.init_from], "checkpoint"),
             *inputs("--text-encoder", [config.text_encoder], "encoder")]
    writes = [Output("--out", run.out, "train"),
              *([Output("--log-steps", Path(opts.log_steps), "log")] if opts.log_steps else [])]
    check_plan(reads, writes, overwrite=opts.overwrite, resume=opts.resume)
    if opts.resume:
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
    init: InitFrom | None = None, tracker: Tracker | None = None,
) -> list[dict[str, Any]]:
    rows, out, features, opts = [], run.out, inputs.features, run.options
    for seed in config.seeds:
        run_dir = out / f"seed-{seed}"
        if opts.resume and finished_seed(run_dir):
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
            quiet=opts.quiet,
            log_steps=Path(opts.log_steps) if opts.log_steps else None,
            resume=opts.resume,
            tensorboard=out / "tensorboard" / f"seed-{seed}",
            checkpoint_extra=inputs.checkpoint_extra,
            hooks=_seed_hooks(opts.hooks, tracker, seed, run.records),
            save_last=opts.resumable,
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
            warn(undefined_warning(result.metrics, f"{run.data} test split, seed {seed}"))
            write_text_atomic(run_dir / "history.json", metrics_json(trainer.history, indent=1))
            _write_results(out / "results.csv", rows, config.spec)
            finish_seed(run_dir, opts.save)
    if ctx.is_main:
        prune_shared(out)
    return rows


def _seed_hooks(hooks: TrainerHooks | None, tracker: Tracker | None,
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


def _write_results(path: Path, rows: list[dict[str, Any]], dataset: str | DatasetSpec) -> None:
    names = ["seed", *metric_names(dataset)]
    write_results_table(path, [{k: row[k] for k in names} for row in with_summary(rows, dataset)])
