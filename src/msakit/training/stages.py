"""A model's adapter pretraining stage around the one generic Trainer (``msakit
pretrain-adapters``).

A model whose ``ModelSpec`` declares an :class:`~msakit.models.registry.AdapterStage` (ConKI's
stage 1, :mod:`msakit.models.conki.adapters`) pretrains knowledge adapters on an external data
set before its main training. This module runs such a stage for any model: it builds the
stage's configuration (``stage.config``), prepares the run (data, text encoder, checks), builds
the model and lets the stage prepare it (``stage.prepare``: what it freezes), trains it with the
Trainer (keeping only ``stage.keep``'s weights in ``best.pt``) and writes ``OUT/adapters.pt``
(``stage.content``), ``OUT/config.yaml`` and ``OUT/stage1/`` (``best.pt``, ``history.json``).
The main training reads the file with ``stage.read`` and installs it with ``stage.install``
(:mod:`msakit.api`). What the stage and the file are is the model's; nothing here names one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from msakit.config import RunConfig, validate
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError
from msakit.core.files import RunLock, torch_save_atomic, write_text_atomic
from msakit.core.safety import Output, check_plan, inputs
from msakit.data.batching import epoch_plan
from msakit.evaluation.metrics import metrics_json
from msakit.models.base import MSAModel
from msakit.models.registry import AdapterStage, adapter_models, model_spec
from msakit.training import distributed
from msakit.training.inputs import build_model, prepare_run, write_run_config
from msakit.training.trainer import Trainer, check_batch_size

__all__ = ["PretrainResult", "adapter_stage", "pretrain_adapters"]

ADAPTERS_FILE = "adapters.pt"
STAGE1_DIR = "stage1"


@dataclass
class PretrainResult:
    adapters: Path
    valid: dict[str, float]
    """The best epoch's validation metrics on the external data set."""
    epoch: int


def adapter_stage(model: str | None) -> AdapterStage:
    """The adapter stage ``model`` declares (None: the one model that declares one); one error
    line for a model without."""
    names = adapter_models()
    if model is None:
        if len(names) != 1:
            raise MsakitError(f"name the model whose adapters to pretrain: {', '.join(names)}")
        model = names[0]
    stage = model_spec(model).adapter_stage
    if stage is None:
        raise MsakitError(f"{model} has no adapters to pretrain; models with adapters: "
                          f"{', '.join(names)}")
    return stage


def pretrain_adapters(
    dataset: str | DatasetSpec,
    data: str | os.PathLike,
    *,
    out: str | os.PathLike,
    model: str | None = None,
    text_encoder: str | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    seed: int | None = None,
    quiet: bool = False,
    preset: str = "paper",
    overwrite: bool = False,
) -> PretrainResult:
    """Pretrain ``model``'s adapters (None: the one model with an adapter stage) for target
    ``dataset`` on the external file ``data``.

    Writes ``out/adapters.pt``, ``out/config.yaml`` (the stage's configuration) and
    ``out/stage1/`` (the Trainer's ``best.pt`` with the weights the stage keeps, and
    ``history.json``). Validates everything before writing: a folder holding another command's
    run (a training run) is refused, one holding earlier adapters only with ``overwrite``
    (:func:`msakit.core.safety.check_plan`).
    """
    check_plan(inputs("--data", [data]), [Output("--out", Path(out), "adapters")],
               overwrite=overwrite)
    stage = adapter_stage(model)
    ctx = distributed.setup()
    try:
        config, warmup_epochs = stage.config(
            dataset, text_encoder=text_encoder, epochs=epochs, batch=batch, overrides=overrides,
            preset_name=preset,
        )
        if seed is not None:
            config.seeds = [int(seed)]
            validate(config)
        return _pretrain(ctx, config, stage=stage, data=data, out=Path(out),
                         warmup_epochs=warmup_epochs, quiet=quiet)
    finally:
        distributed.teardown(ctx)


def _pretrain(
    ctx: distributed.DistContext, config: RunConfig, *, stage: AdapterStage,
    data: str | os.PathLike, out: Path, warmup_epochs: int, quiet: bool,
) -> PretrainResult:
    inputs = prepare_run(config, data, out, ctx, checkpoint_format="msakit-stage1-1")
    config = inputs.config  # with the data file's content identity
    encoder, dims = inputs.encoder, inputs.dims
    assert encoder is not None  # a model with adapters runs its text encoder
    fingerprint = stage.fingerprint(encoder)
    seed = config.seeds[0]
    torch.manual_seed(seed)
    net = build_model(config, dims, encoder, stats=inputs.stats)
    stage.prepare(net)
    check_batch_size(config, net, ctx.world_size)

    run_dir = out / STAGE1_DIR
    lock = RunLock(out) if ctx.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        return _pretrain_locked(ctx, config, net, stage=stage, inputs=inputs, out=out,
                                run_dir=run_dir, warmup_epochs=warmup_epochs, quiet=quiet,
                                seed=seed, fingerprint=fingerprint)
    finally:
        if lock is not None:
            lock.release()


def _pretrain_locked(
    ctx: distributed.DistContext, config: RunConfig, net: MSAModel, *, stage: AdapterStage,
    inputs: Any, out: Path, run_dir: Path, warmup_epochs: int, quiet: bool, seed: int,
    fingerprint: str,
) -> PretrainResult:
    features, extra = inputs.features, inputs.checkpoint_extra
    write_run_config(config, out, ctx)
    train = features.splits["train"]
    steps_per_epoch = len(epoch_plan(train, config.batch_size, seed=seed, epoch=0))
    trainer = Trainer(
        model=net,
        config=config,
        train=train,
        valid=features.splits["valid"],
        run_dir=run_dir,
        seed=seed,
        dist=ctx,
        quiet=quiet,
        checkpoint_extra=extra,
        warmup_steps=warmup_epochs * steps_per_epoch,
        best_state_filter=lambda state: {k: v for k, v in state.items() if stage.keep(k)},
    )
    trainer.fit()
    ctx.barrier()
    if not (run_dir / "best.pt").is_file():
        raise MsakitError("stage 1 reached no finite validation MAE: no adapters to save")
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    adapters_path = out / ADAPTERS_FILE
    if ctx.is_main:
        content = stage.content(best, net=net, extra=extra, fingerprint=fingerprint)
        torch_save_atomic(content, adapters_path)
        write_text_atomic(run_dir / "history.json", metrics_json(trainer.history, indent=1))
        # last.pt only serves an exact resume; it holds the frozen text encoder and is large.
        (run_dir / "last.pt").unlink(missing_ok=True)
    ctx.barrier()
    return PretrainResult(
        adapters=adapters_path, valid=dict(best["valid"]), epoch=int(best["epoch"])
    )
