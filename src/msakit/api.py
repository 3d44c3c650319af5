"""The Python API behind every ``msakit`` command: train, evaluate, predict, synth, demo.

Each function validates all of its input before it writes anything, and raises
:class:`msakit.core.errors.MsakitError` (one line) for bad input. The public functions check their
arguments' types against their annotations first (:func:`checked_arguments`): no coercion, so
``seeds="12"`` or ``epochs=2.7`` is an error, not seeds [1, 2] or 2 epochs.

This module is the facade: the work is done below it, by the run orchestration
(:mod:`msakit.training.runs`: :func:`~msakit.training.runs.run_training` takes a configuration,
the data, an output folder and the run's options) and the checkpoint reader
(:mod:`msakit.training.checkpoints`); their public names are importable from here as well.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from msakit.config import RunConfig, apply_overrides
from msakit.config.datasets import DatasetSpec, synthetic_names
from msakit.config.presets import DEFAULT_PRESET
from msakit.core.errors import MsakitError, warn
from msakit.core.safety import Output, check_distinct_output, check_plan
from msakit.core.typecheck import checked_arguments
from msakit.data.mmsa import FeatureFile, convert_to_npz, load_feature_file
from msakit.data.safe_format import save_npz
from msakit.data.synthetic import make_synthetic, write_synthetic
from msakit.encoders.text import DEFAULT_TEXT_ENCODER
from msakit.evaluation.metrics import undefined_warning
from msakit.evaluation.tables import results_table_text, write_results_table
from msakit.extract.analyze import analyze_videos
from msakit.extract.predict import predict_clip
from msakit.inference import prediction_rows, split_from_arrays, write_predictions
from msakit.models.base import Dims
from msakit.models.registry import DEMO_MODEL
from msakit.models.registry import preset as named_preset
from msakit.tracking import start_tracking
from msakit.training.checkpoints import (
    BUILT_PER_STORED,
    INFERENCE_BATCH,
    UNSAVED_ELEMENTS,
    UNSAVED_TENSORS,
    LoadedCheckpoint,
    evaluate_checkpoint,
    evaluate_seeds,
    load_checkpoint,
    resolve_checkpoint,
    run_seed_checkpoints,
    split_for,
)
from msakit.training.inputs import LoadedInputs, build_model, check_output_folder
from msakit.training.runs import (
    SAVE_MODES,
    RunOptions,
    StartTracker,
    TrainResult,
    horizon_note,
    run_training,
)

__all__ = ["train", "TrainResult", "evaluate", "predict", "load_checkpoint", "LoadedCheckpoint",
           "build_config", "synth", "demo", "predict_video", "analyze", "load_data",
           "checked_arguments",
           # the layers' names, importable from here as before the split (see the docstring)
           "run_training", "RunOptions", "SAVE_MODES", "horizon_note", "resolve_checkpoint",
           "split_for", "run_seed_checkpoints", "INFERENCE_BATCH", "BUILT_PER_STORED",
           "UNSAVED_ELEMENTS", "UNSAVED_TENSORS", "build_model", "dims_of",
           "write_results_table", "results_table_text", "DEMO_FILES", "DEMO_SIZES"]


# --------------------------------------------------------------------------- building blocks
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
    """Train ``model`` on an MMSA feature file for every seed; write the run folder (its
    configuration: :func:`build_config`, then the run: :func:`msakit.training.runs.run_training`).

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
    options = RunOptions(adapters=adapters, log_steps=log_steps, resume=resume,
                         overwrite=overwrite, quiet=quiet, save=save, resumable=resumable,
                         hooks=hooks, loaded=loaded, tracking=_tracking(track, track_uri))
    config = config or build_config(model, dataset, text_encoder=text_encoder, seeds=seeds,
                                    epochs=epochs, batch=batch, overrides=overrides, preset=preset)
    if init_from is not None:
        config = dataclasses.replace(config, init_from=str(init_from))
    return run_training(config, data, out, options)


def _tracking(track: str | None, uri: str | None) -> StartTracker | None:
    """``--track``'s tracker, started by the run once its checks passed (None: no tracking)."""
    return None if track is None else functools.partial(start_tracking, track, uri=uri)


# --------------------------------------------------------------------------- checkpoints
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
        return evaluate_seeds(seeds, data, split)
    ckpt = load_checkpoint(checkpoint)
    part = split_for(ckpt, data, split)
    metrics = evaluate_checkpoint(ckpt, part)
    warn(undefined_warning(metrics, f"{data} {split} split"))
    return metrics


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
