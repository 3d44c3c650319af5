"""The one generic Trainer: every model, every stage, one loop.

A model contributes its modules, its parameter groups and its loss (:mod:`msakit.models.base`);
the Trainer does the rest: AdamW with a learning rate and weight decay per group (text encoder,
audio, vision, other; the text encoder's biases and LayerNorms take no decay, as in BERT
practice and the authors' code), linear warm-up then cosine (or linear) decay over the run's
horizon (``epochs`` x steps per epoch), early stopping on validation MAE, the best checkpoint,
an exact-resume ``last.pt`` written atomically at every epoch's end, per-step JSON logs,
TensorBoard curves, a progress bar, optional mixed precision (``amp``: bf16 autocast, or fp16
with a gradient scaler on CUDA; :mod:`msakit.training.device`), and DDP under torchrun.

Determinism: the batch plan of each epoch is a function of (seed, epoch), and the RNG states of
torch, numpy and random are seeded at the start and saved in ``last.pt``, so a run is
reproducible for a given seed on a given machine, and a resumed run ends where an unbroken one
does.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import numpy as np
import torch
from torch import nn

from msakit.config import RunConfig
from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError, TrainingDiverged
from msakit.core.files import torch_save_atomic, write_text_atomic
from msakit.core.runlog import echo, terminal
from msakit.data.batching import Batch, epoch_plan, iterate, join_small_batches, shard
from msakit.data.mmsa import SplitData
from msakit.encoders.dropout import use_fast_dropout
from msakit.evaluation.metrics import metric_values
from msakit.models.base import LossContext, MSAModel, TrainingPhase
from msakit.training.allocator import reuse_freed_memory
from msakit.training.device import (
    Autocast,
    amp_mode,
    apply_determinism,
    autocast_settings,
    cpu_speed_settings,
)
from msakit.training.distributed import DistContext, wrap_ddp
from msakit.training.pretrained import frozen_prefix, save_pretrained

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

PLATEAU_FACTOR = 0.1
"""``schedule=plateau`` multiplies the learning rates by this (MMSA's MulT)."""
NO_DECAY = MSAModel.text_no_decay


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU), numpy and random, and, where CUDA is available, of every
    visible GPU (``"cuda"``: a list of byte tensors, one per device)."""
    state = {
        "torch": torch.get_rng_state(),
        # numpy's stub types the state as its dict form; legacy=True (the default) is a tuple
        "numpy": _numpy_state_to_plain(np.random.get_state()),  # type: ignore[arg-type]
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`. The GPU states are restored where CUDA is available, for
    the devices both the saved state and this machine have (a state saved without CUDA leaves
    the GPUs' generators as seeded)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(_plain_to_numpy_state(state["numpy"]))
    random.setstate(_plain_to_python_state(state["python"]))
    saved = state.get("cuda")
    if saved and torch.cuda.is_available():
        for index, device_state in enumerate(saved[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


def _entries(state: dict) -> str:
    """``state``'s keys for a message: the first three and how many more."""
    keys = sorted(map(str, state))
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    return f"{', '.join(keys[:3])}{more}" if keys else "nothing"


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _plain_to_numpy_state(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached"])


def _python_state_to_plain(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _plain_to_python_state(state: dict[str, Any]) -> tuple:
    return (state["version"], tuple(state["internal"]), state["gauss"])


def smallest_batch(model: nn.Module, world_size: int = 1) -> int:
    """The fewest samples a training batch of ``model`` may hold: 2 for a model with BatchNorm
    (batch statistics of one sample do not exist; PyTorch raises), and one per DDP rank."""
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return max(2 if has_batchnorm else 1, world_size)


def check_batch_size(config: RunConfig, model: nn.Module, world_size: int = 1) -> None:
    """Raise unless ``config.batch_size`` gives ``model`` trainable batches (see
    :func:`smallest_batch`): a BatchNorm model cannot train with ``batch_size=1``, and joining
    every sample to the next would make an epoch one step, not N."""
    smallest = smallest_batch(model, world_size)
    if config.batch_size < smallest:
        raise MsakitError(
            f"batch size {config.batch_size}: {config.model_name} has BatchNorm layers, which "
            f"cannot train on batches of fewer than {smallest} samples; use --batch {smallest} "
            "or more"
        )


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability in ``model`` (nn.Dropout, attention dropouts) to ``p``."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = p
        # Hugging Face attention modules keep their probability as a float attribute.
        for attr in ("dropout_prob", "attention_dropout"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, p)
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "attention_probs_dropout_prob"):
            config.attention_probs_dropout_prob = p
            config.hidden_dropout_prob = p


def build_optimizer(
    model: MSAModel, config: RunConfig, groups: tuple[str, ...] | None = None
) -> torch.optim.Optimizer:
    """AdamW (or Adam, ``config.optimizer``) with one group per (parameter group, decay / no
    decay) pair that has parameters, over the model's parameter ``groups`` (None: all); the
    text encoder's parameters named in ``model.text_no_decay`` take no decay."""
    param_groups = []
    settings = model.optimizer_settings(config)
    for group, named in model.parameter_groups().items():
        if groups is not None and group not in groups:
            continue
        lr, weight_decay = settings[group]
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in named:
            if not param.requires_grad:
                continue
            skip = name.startswith("text_encoder.") and any(
                key in name for key in model.text_no_decay)
            (no_decay if skip else decay).append(param)
        for params, wd, suffix in (
            (decay, weight_decay, ""),
            (no_decay, 0.0, "_no_decay"),
        ):
            if params:
                param_groups.append(
                    {"params": params, "lr": lr, "weight_decay": wd,
                     "name": group + suffix}
                )
    if not param_groups:
        raise ValueError("the model has no trainable parameters")
    fused = True if _fuses(param_groups) else None
    if config.optimizer == "adam":  # weight decay as an L2 term in the gradient (MMSA)
        return torch.optim.Adam(param_groups, fused=fused)
    return torch.optim.AdamW(param_groups, fused=fused)


FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")
"""Devices whose parameters get PyTorch's fused Adam/AdamW kernel: one pass over each
parameter's value, gradient and two moments instead of a dozen element-wise ops (MiniLM's 23M
parameters on two EPYC threads: 12 ms a step against 65-80 ms; BENCHMARKS.md). The same update,
rounded in another order (2.4e-7 on values near 4 after 50 steps)."""


def _fuses(param_groups: list[dict[str, Any]]) -> bool:
    """Whether every parameter is a float tensor on a device with the fused kernel."""
    return all(
        param.device.type in FUSED_OPTIMIZER_DEVICES and param.is_floating_point()
        for group in param_groups for param in group["params"]
    )


def optimizer_steps(batches: int, config: RunConfig) -> int:
    """Optimizer steps over ``batches`` batches of one epoch: one per group of ``accumulate``
    batches (MMSA's update_epochs; a last, shorter group too), or with ``step_each_batch`` one
    per batch plus one per complete group (MMSA's missingTask trainer)."""
    if config.step_each_batch:
        return batches + batches // config.accumulate
    return -(-batches // config.accumulate)


@dataclass(frozen=True)
class _Group:
    """Where a batch stands in its group of ``accumulate`` batches: the group ``ends`` with it
    (a full group, or the epoch's last batch), and it ``complete``s a full group."""

    ends: bool
    complete: bool


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: RunConfig, total_steps: int,
    warmup_steps: int | float,  # a float with fractional_warmup (the schedules take one)
):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    if config.schedule == "plateau":  # stepped once an epoch on the validation loss
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=PLATEAU_FACTOR, patience=config.plateau_patience)
    if config.schedule == "cosine":
        # transformers types the warmup as an int; its schedules read a float as well
        return get_cosine_schedule_with_warmup(
            optimizer, warmup_steps, total_steps)  # type: ignore[arg-type]
    if config.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup_steps)  # type: ignore[arg-type]


TextCache = dict[str, torch.Tensor]


@torch.no_grad()
def build_text_cache(
    model: MSAModel, split: SplitData, batch_size: int, device: torch.device
) -> TextCache:
    """A frozen text encoder's features (``model.text_features``) for every sample of a split.

    Sequence features (``seq_*``) are stored at the split's full text length, on the CPU.
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    length = split.text_bert.shape[-1]
    for batch in iterate(split, epoch_plan(split, batch_size, seed=0, epoch=0, shuffle=False)):
        features = model.text_features(batch.text.to(device))
        for key, value in features.items():
            value = value.float().cpu()
            if key.startswith("seq_") and value.size(1) < length:
                pad = value.new_zeros((value.size(0), length - value.size(1), *value.shape[2:]))
                value = torch.cat([value, pad], dim=1)
            parts.setdefault(key, []).append(value)
    model.train(was_training)
    return {key: torch.cat(values) for key, values in parts.items()}


def add_text_cache(batch: Batch, cache: TextCache | None) -> Batch:
    """The batch with its rows of ``cache`` as its ``text_cache``."""
    if not cache:
        return batch
    index, length = batch.index, batch.text.size(-1)
    rows = {key: value.index_select(0, index) for key, value in cache.items()}
    return batch.replace(text_cache={
        key: value[:, :length] if key.startswith("seq_") else value
        for key, value in rows.items()
    })


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a validation MAE below the best by 1e-6.

    The values compared are unrounded (:func:`evaluation.metrics.metric_values`), so two epochs
    whose MAEs differ in the fifth decimal are told apart; MMSA compares its 4-decimal values
    (docs/readings.md, "Early stopping on unrounded values")."""

    patience: int
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        if value <= self.best - 1e-6:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]


@dataclass
class EvalResult:
    predictions: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    metrics: dict[str, float]
    loss: float


@dataclass
class TrainerHooks:
    """Optional callbacks after each epoch: ``on_epoch_end(epoch, valid metrics)`` (e.g. Optuna
    pruning), ``on_epoch_record(epoch, record)`` with the epoch's history record (training
    losses, validation metrics; e.g. experiment tracking). Called on the main rank only."""

    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None
    on_epoch_record: Callable[[int, dict[str, Any]], None] | None = None


def loss_keys(parts: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The losses of a training step, as the step log, TensorBoard and ``history.json`` name
    them: ``loss``, ``task_loss`` and ``<part>_loss`` for each of the model's
    :attr:`~msakit.models.base.MSAModel.loss_parts`."""
    keys = ("loss", "task_loss", *(f"{p}_loss" for p in parts))
    if len(set(keys)) != len(keys) or not all(isinstance(p, str) and p for p in parts):
        raise MsakitError(f"loss_parts {list(parts)}: the names must be distinct non-empty "
                          "strings, none of them 'task'")
    return keys


READ_EVERY = 50
"""Training steps between two reads of the step losses (:class:`StepLosses`), and a pass's end."""


@dataclass
class Prepared:
    """What :meth:`Trainer.prepare` builds for a run, in one place (:meth:`Trainer._build`):
    held as ``Trainer.prepared``, nothing of it exists before ``prepare`` and nothing else
    creates it. A resumed run loads ``last.pt`` into it."""

    amp: Autocast
    scaler: torch.amp.GradScaler | None
    """fp16 on CUDA only (:func:`msakit.training.device.autocast_settings`)."""
    phases: list[TrainingPhase]
    optimizers: dict[str, torch.optim.Optimizer]
    """One per training phase, by phase name (most models have one phase)."""
    schedulers: dict[str, Any]
    stopper: EarlyStopping
    text_cache: dict[str, TextCache | None]
    """A frozen text encoder's features of the ``train`` and ``valid`` splits, or None."""
    start_epoch: int = 0
    """The first epoch to train: 0, or the epochs a resumed ``last.pt`` completed."""


@dataclass
class Sinks:
    """Where :meth:`Trainer.fit` writes besides ``history.json``: the step log (``--log-steps``)
    and TensorBoard, each None when off (or on a rank other than 0)."""

    step_log: TextIO | None = None
    writer: Any = None

    def close(self) -> None:
        if self.step_log is not None:
            self.step_log.close()
        if self.writer is not None:
            self.writer.close()


@dataclass
class StepRecord:
    """One training step's losses as Python numbers (global over DDP ranks, as one process
    computes them), and the learning rates after its optimizer step."""

    step: int
    values: dict[str, float]
    lrs: dict[str, float]


@dataclass
class StepLosses:
    """The detached losses of a pass's steps, kept on the device until :meth:`read`: then one
    device-to-host copy and, under DDP, one all-reduce make Python numbers of all of them (a
    step does not wait for the device only to log)."""

    dist: DistContext
    keys: tuple[str, ...] = loss_keys()
    """The columns of every step's losses (:func:`loss_keys` of the model's parts)."""
    pending: list[tuple[int, dict[str, float], torch.Tensor]] = field(default_factory=list)

    def add(self, step: int, lrs: dict[str, float], losses: torch.Tensor) -> None:
        """``losses``: this rank's losses in the order of ``keys``, detached."""
        self.pending.append((step, lrs, losses))

    def read(self) -> list[StepRecord]:
        """The pending steps' global values, in step order; none are pending after.

        Each value is its mean over the ranks: the task loss is each rank's share (its mean
        over ranks is the global one); a part computed on the gathered global batch (the
        contrastive loss) is the same on every rank, so its mean is itself (exactly: the sum is
        taken in float64); see :attr:`~msakit.models.base.MSAModel.loss_parts` for the others.
        Float64 arithmetic on the float32 values, as ``float()`` of each would give."""
        if not self.pending:
            return []
        local = torch.stack([losses for _, _, losses in self.pending]).float()  # (k, keys)
        # Summed in float64 over ranks (not on one process: MPS has no float64).
        total = self.dist.all_sum(local.double() if self.dist.enabled else local)
        rows = total.cpu().double().numpy() / self.dist.world_size
        records = [
            StepRecord(step, dict(zip(self.keys, map(float, row), strict=True)), lrs)
            for (step, lrs, _), row in zip(self.pending, rows, strict=True)
        ]
        self.pending.clear()
        return records


def loss_parts_text(record: dict[str, Any], phases: tuple[str, ...] = ()) -> str:
    """``task 0.7000, contrastive 0.1100``: an epoch record's training task loss and parts
    (``train_<name>_loss``), not the losses of the earlier training ``phases``
    (``train_<phase>_loss``)."""
    skip = {"train_loss", "train_task_loss", *(f"train_{p}_loss" for p in phases)}
    parts = [("task", record["train_task_loss"])]
    parts += [(k[len("train_"):-len("_loss")], v) for k, v in record.items()
              if k.startswith("train_") and k.endswith("_loss") and k not in skip]
    return ", ".join(f"{name} {value:.4f}" for name, value in parts)


def check_finite(record: StepRecord, epoch: int) -> None:
    """Raise :class:`TrainingDiverged` naming the step unless its losses are finite."""
    values = record.values
    if not all(math.isfinite(v) for v in values.values()):
        bad = values["loss"] if not math.isfinite(values["loss"]) else float("nan")
        raise TrainingDiverged(
            f"training diverged at epoch {epoch + 1}, step {record.step} (loss {bad}); "
            "lower the learning rate"
        )


@dataclass
class Trainer:
    """Train ``model`` on ``train`` with early stopping on ``valid``; see the module docstring.

    Lifecycle: construct (the model moves to the device, wrapped in DDP under torchrun), then
    :meth:`prepare` (seeds and process settings, then :class:`Prepared`: optimizers, schedules,
    scaler, early stopping, text cache, ``last.pt`` on resume), then :meth:`fit` (which
    prepares, opens the :class:`Sinks` for its duration and trains) or, after ``prepare``,
    :meth:`train_epoch` and :meth:`evaluate` one at a time (``msakit bench``, tests).
    """

    model: MSAModel
    config: RunConfig
    train: SplitData
    valid: SplitData
    run_dir: Path | None = None
    seed: int = 0
    dist: DistContext = field(default_factory=DistContext)
    quiet: bool = False
    log_steps: Path | None = None
    resume: bool = False
    tensorboard: Path | None = None
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    hooks: TrainerHooks = field(default_factory=TrainerHooks)
    warmup_steps: int | None = None
    """Overrides ``config.warmup`` x total steps (ConKI stage 1 warms up for one epoch)."""
    best_state_filter: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    save_last: bool = True
    """Write ``last.pt`` (exact resume) at every epoch's end; ``msakit tune`` turns it off."""
    best_format: str = "pt"
    """How the best weights are kept: ``"pt"`` (``best.pt``, a torch file: ConKI's adapter
    stage, tests) or ``"safetensors"`` (``model.safetensors`` + ``config.json``, a frozen text
    encoder once per run folder: :mod:`msakit.training.pretrained`; ``msakit train``)."""

    def __post_init__(self) -> None:
        self.device = self.dist.device
        self.model.to(self.device)
        if self.config.dropout is not None:
            set_dropout(self.model, self.config.dropout)
        self.module: nn.Module = self.model
        if self.dist.enabled:
            # BatchNorm sees the global batch on GPUs and CPUs alike (see wrap_ddp).
            self.module = wrap_ddp(self.model, self.device)
        self.history: list[dict[str, Any]] = []
        self.global_step = 0
        self._steps_pending = 0  # backward passes since the last optimizer step (accumulate)
        self.step_seconds: list[float] = []
        self.step_samples: list[int] = []
        self._prepared: Prepared | None = None
        self.sinks = Sinks()  # open during fit() only

    @property
    def prepared(self) -> Prepared:
        """What :meth:`prepare` built; a ``RuntimeError`` before it ran."""
        if self._prepared is None:
            raise RuntimeError("Trainer.prepare() has not run: nothing to train with yet")
        return self._prepared

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The last training phase's optimizer (the only one for most models)."""
        return self.prepared.optimizers[self.prepared.phases[-1].name]

    @property
    def scheduler(self) -> Any:
        """The last training phase's schedule (the only one for most models)."""
        return self.prepared.schedulers[self.prepared.phases[-1].name]

    @property
    def stopper(self) -> EarlyStopping:
        return self.prepared.stopper

    # ------------------------------------------------------------------ batches
    def _plan(self, epoch: int) -> list[np.ndarray]:
        plan = epoch_plan(
            self.train, self.config.batch_size, seed=self.seed, epoch=epoch,
            sampler=self.config.sampler,
        )
        # Every batch is a step (MMSA keeps a short last batch), except one the model cannot
        # train on: see msakit.data.batching.join_small_batches.
        return join_small_batches(plan, smallest_batch(self.model, self.dist.world_size))

    def _to_device(self, batch: Batch) -> Batch:
        return batch.to(self.device, non_blocking=True)

    def _autocast(self):
        amp = self.prepared.amp
        return torch.autocast(self.device.type, dtype=amp.dtype, enabled=amp.enabled)

    def _no_sync(self, step: bool):
        """DDP's ``no_sync`` on a gradient-accumulation micro-step (``step`` False), entered
        around the forward pass, where DDP decides whether the backward pass all-reduces: the
        backward pass then only adds to this rank's gradients, and the group's last one
        all-reduces their sum (one all-reduce per optimizer step, not per batch; the same
        gradients, tests/test_distributed.py). Not with ``clip_value``, which clips the global
        running sum after every backward pass (MMSA) and so needs it after each."""
        if step or not self.dist.enabled or self.config.clip_value > 0:
            return contextlib.nullcontext()
        return cast("DistributedDataParallel", self.module).no_sync()  # wrapped when enabled

    # ------------------------------------------------------------------ training
    def prepare(self) -> None:
        """Seed and apply the run's process settings, build :attr:`prepared`, start the model's
        training state and load ``last.pt`` on resume."""
        check_batch_size(self.config, self.model, self.dist.world_size)
        seed_everything(self.seed)
        apply_determinism(self.config.deterministic, self.device.type)
        # The CPU settings (on by default, see RunConfig), never taken on GPUs.
        speed = cpu_speed_settings(self.device.type, self.config.reuse_memory,
                                   self.config.fast_dropout)
        if speed["reuse_memory"]:
            reuse_freed_memory()
        if speed["fast_dropout"]:
            use_fast_dropout(self.model)
        self._prepared = self._build()
        self.model.on_train_start(self.train)
        if self.resume and self.run_dir is not None and (self.run_dir / "last.pt").exists():
            self._prepared.start_epoch = self._load_last()

    def _build(self) -> Prepared:
        """The run's :class:`Prepared`: mixed precision and its scaler, an optimizer and a
        schedule per training phase, early stopping, and the text cache of a frozen encoder."""
        amp = autocast_settings(self.device.type, amp_mode(self.config.amp, self.config.bf16))
        phases = list(self.model.training_phases())
        optimizers: dict[str, torch.optim.Optimizer] = {}
        schedulers: dict[str, Any] = {}
        batches = len(self._plan(0))
        for phase in phases:
            total = optimizer_steps(phase.steps(batches), self.config) * self.config.epochs
            warmup = (
                self.warmup_steps
                if self.warmup_steps is not None
                else self.config.warmup * total
            )
            if not self.config.fractional_warmup:
                warmup = int(warmup)
            optimizer = build_optimizer(self.model, self.config, phase.groups)
            optimizers[phase.name] = optimizer
            schedulers[phase.name] = build_scheduler(optimizer, self.config, total, warmup)
        text_cache: dict[str, TextCache | None] = {"train": None, "valid": None}
        if self.config.cache_text and not self.model.trains_text_encoder():
            for name, split in (("train", self.train), ("valid", self.valid)):
                text_cache[name] = build_text_cache(
                    self.model, split, self.config.batch_size, self.device
                )
        return Prepared(
            amp=amp, scaler=torch.amp.GradScaler(self.device.type) if amp.scaler else None,
            phases=phases, optimizers=optimizers, schedulers=schedulers,
            stopper=EarlyStopping(self.config.early_stop), text_cache=text_cache,
        )

    def fit(self) -> dict[str, Any]:
        """Train until the horizon or early stop; return the best epoch's validation metrics."""
        self.prepare()
        start = self.prepared.start_epoch
        self.sinks = Sinks(step_log=self._open_step_log(), writer=self._writer())
        best_valid: dict[str, Any] = self._best_valid_from_history()
        try:
            epochs = (
                range(start, self.config.epochs)
                if self.config.stop_at_horizon
                else itertools.count(start)  # until early stopping
            )
            for epoch in epochs:
                if self.stopper.should_stop:
                    break
                best_valid = self._fit_epoch(epoch, best_valid)
        finally:
            self.sinks.close()
            self.sinks = Sinks()
        return best_valid

    def _fit_epoch(self, epoch: int, best_valid: dict[str, Any]) -> dict[str, Any]:
        """One epoch of :meth:`fit`: train, validate, record; the best validation metrics."""
        started = time.perf_counter()
        train_stats = self.train_epoch(epoch)
        result = self.evaluate(self.valid)
        if not (math.isfinite(result.loss) and math.isfinite(result.metrics["MAE"])):
            raise TrainingDiverged(
                f"training diverged at epoch {epoch + 1}, step {self.global_step} "
                f"(validation loss {result.loss}); lower the learning rate"
            )
        if self.config.schedule == "plateau":
            for scheduler in self.prepared.schedulers.values():
                scheduler.step(result.loss)
        improved = self.stopper.update(result.metrics["MAE"], epoch)
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": v for k, v in train_stats.items()},
            "valid_loss": result.loss,
            **{f"valid_{k}": v for k, v in result.metrics.items()},
            "seconds": round(time.perf_counter() - started, 3),
        }
        self.history.append(record)
        if improved:
            best_valid = dict(result.metrics)
            self._save_best(epoch, best_valid)
        self._log_epoch(record)
        self._print_epoch(record)
        if self.hooks.on_epoch_record is not None and self.dist.is_main:
            self.hooks.on_epoch_record(epoch, record)
        self._save_last(epoch)
        if self.hooks.on_epoch_end is not None:
            self.hooks.on_epoch_end(epoch, result.metrics)
        return best_valid

    def train_epoch(self, epoch: int, max_steps: int | None = None) -> dict[str, float]:
        """One epoch: each of the model's training phases (one for most models) passes over
        its share of the epoch's batch plan (or its first ``max_steps`` batches) with its own
        optimizer. Returns the last phase's mean losses, and ``<phase>_loss`` of the others.

        Appends each optimizer step's wall time and global sample count to ``step_seconds`` and
        ``step_samples`` (what ``msakit bench`` reports); a step that reads the losses
        (:class:`StepLosses`) includes the wait for the device.
        """
        self.module.train()
        self.model.on_epoch_start(epoch)
        plan = self._plan(epoch)
        if max_steps is not None:
            plan = plan[:max_steps]
        stats: dict[str, float] = {}
        phases = self.prepared.phases
        for phase in phases:
            self.model.start_phase(phase.name)
            means = self._train_pass(epoch, phase, plan[: phase.steps(len(plan))])
            if phase is phases[-1]:
                stats.update(means)
            else:
                stats[f"{phase.name}_loss"] = means["loss"]
        return stats

    def _train_pass(self, epoch: int, phase: TrainingPhase,
                    plan: list[np.ndarray]) -> dict[str, float]:
        """One phase's optimizer steps over ``plan``; the mean of each logged loss.

        The losses stay on the device and are read (:class:`StepLosses`) every
        :data:`READ_EVERY` steps and at the pass's end, the same steps on every rank; the
        divergence check runs on what is read, so a run whose loss turns NaN stops at that
        read naming the first such step, before any ``last.pt`` holds the damage."""
        parts = tuple(self.model.loss_parts)
        keys = loss_keys(parts)
        sums = dict.fromkeys(keys, 0.0)
        losses = StepLosses(self.dist, keys)
        bar = self._progress(len(plan), epoch)
        for position, (indices, batch) in enumerate(zip(plan, self._batches(plan),
                                                        strict=True)):
            started = time.perf_counter()
            complete = (position + 1) % self.config.accumulate == 0
            step_losses = self._train_step(indices, batch, phase=phase, parts=parts,
                                           group=_Group(ends=complete or position + 1 == len(plan),
                                                        complete=complete))
            lrs = {g["name"]: g["lr"] for g in self.prepared.optimizers[phase.name].param_groups}
            losses.add(self.global_step, lrs, step_losses)
            due = (position + 1) % READ_EVERY == 0 or position + 1 == len(plan)
            records = losses.read() if due else []
            self.step_seconds.append(time.perf_counter() - started)
            self.step_samples.append(len(indices))
            for record in records:  # the step log ends with the last finite step
                check_finite(record, epoch)
                for k in sums:
                    sums[k] += record.values[k]
                self._record_step(record, epoch, phase=phase)
            if bar is not None:
                if records:
                    bar.set_postfix(loss=f"{records[-1].values['loss']:.4f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        return {k: v / max(1, len(plan)) for k, v in sums.items()}

    def _train_step(
        self, indices: np.ndarray, batch: Batch, *,
        phase: TrainingPhase, group: _Group | None = None, parts: tuple[str, ...] = (),
    ) -> torch.Tensor:
        """Forward, loss, backward and one step of the phase's optimizer on this rank's share
        of the global batch ``indices``; returns this rank's (loss, task loss, the model's
        ``parts`` in that order), detached, on the device (:class:`StepLosses` reads them)."""
        sizes = [len(shard(indices, r, self.dist.world_size)) for r in
                 range(self.dist.world_size)]
        batch = self._to_device(batch)
        group = group or _Group(ends=True, complete=True)
        with self._no_sync(group.ends or self.config.step_each_batch), self._autocast():
            output = self.module(batch)
            ctx = LossContext(gather=self.dist.gatherer(sizes), global_batch=len(indices),
                              world_size=self.dist.world_size)
            losses = self.model.compute_loss(output, batch, ctx)
        if set(losses.parts) != set(parts):
            raise MsakitError(
                f"{type(self.model).__name__}.compute_loss returned the loss parts "
                f"{sorted(losses.parts)}, but the model declares loss_parts {list(parts)}")
        self._optimizer_step(losses.loss, phase, group=group)
        values = [losses.loss, losses.task_loss, *(losses.parts[p] for p in parts)]
        return torch.stack([v.detach().float() for v in values])

    def _optimizer_step(self, loss: torch.Tensor, phase: TrainingPhase, *,
                        group: _Group) -> None:
        """Backward (scaled under fp16 on CUDA), gradient clipping, the step of the phase's
        optimizer and its schedule. Every gradient is zeroed when a group of batches starts,
        also those of parameters another phase's optimizer steps, and clipping sees them all.
        With ``accumulate`` > 1 the gradients of a group of batches add up (MMSA's
        update_epochs) and the optimizer steps when the group ends, or, with
        ``step_each_batch``, after every batch and once more when a group is complete (MMSA's
        missingTask trainer); ``clip_value`` clips every entry after each backward pass (MMSA)."""
        optimizer = self.prepared.optimizers[phase.name]
        if self._steps_pending == 0:
            self.model.zero_grad(set_to_none=True)
        scaler = self.prepared.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if self.config.clip_value > 0:  # MMSA: after every backward pass, on the running sum
            nn.utils.clip_grad_value_(self.model.parameters(), self.config.clip_value)
        self.global_step += 1
        self._steps_pending = 0 if group.ends else self._steps_pending + 1
        every = self.config.step_each_batch
        if not (group.ends or every):
            return
        self._apply_step(optimizer, phase)
        if every and group.complete:  # MMSA steps again on the group's whole sum
            self._apply_step(optimizer, phase)

    def _apply_step(self, optimizer: torch.optim.Optimizer, phase: TrainingPhase) -> None:
        """Norm clipping (``grad_clip``), one optimizer step and its schedule's."""
        scaler = self.prepared.scaler
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self.config.schedule != "plateau":  # plateau steps once an epoch (fit)
            self.prepared.schedulers[phase.name].step()

    def _record_step(self, record: StepRecord, epoch: int, *, phase: TrainingPhase) -> None:
        """The step's line in the step log and its TensorBoard scalars, when they are on; with
        several training phases each line names its phase."""
        log, writer = self.sinks.step_log, self.sinks.writer
        several = len(self.prepared.phases) > 1
        if log is not None:
            where = {"phase": phase.name} if several else {}
            log.write(json.dumps({"seed": self.seed, "step": record.step, "epoch": epoch + 1,
                                  **where, **record.values, "lr": record.lrs}) + "\n")
        if writer is not None:
            tag = f"train_{phase.name}" if several else "train"
            for k, v in record.values.items():
                writer.add_scalar(f"{tag}/{k}", v, record.step)
            for name, lr in record.lrs.items():
                writer.add_scalar(f"lr/{name}", lr, record.step)

    def _batches(self, plan: list[np.ndarray]) -> Iterator[Batch]:
        cache = self.prepared.text_cache["train"]
        trim = not self.model.reads_padding()
        for batch in iterate(self.train, plan, rank=self.dist.rank,
                             world_size=self.dist.world_size, trim=trim):
            yield add_text_cache(batch, cache)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: SplitData) -> EvalResult:
        cache = self.prepared.text_cache["valid"] if split is self.valid else None
        return evaluate_model(
            self.model, split, dataset=self.config.spec, batch_size=self.config.batch_size,
            device=self.device, amp=amp_mode(self.config.amp, self.config.bf16),
            text_cache=cache, dist=self.dist,
        )

    # ------------------------------------------------------------------ files
    def _progress(self, total: int, epoch: int):
        if self.quiet or not self.dist.is_main or not sys.stderr.isatty():
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"seed {self.seed} epoch {epoch + 1}", leave=False,
                    dynamic_ncols=True, file=terminal())  # the bar never reaches train.log

    def _writer(self):
        if self.tensorboard is None or not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            return None
        # On resume, TensorBoard hides what a killed run logged after its last completed epoch
        # (steps > global_step), so the curves are those of an unbroken run.
        purge = self.global_step + 1 if self.resume else None
        return SummaryWriter(str(self.tensorboard), purge_step=purge)

    def _print_epoch(self, record: dict[str, Any]) -> None:
        """One line per epoch on stderr: above the progress bar in a terminal, and in the run's
        ``train.log`` (:mod:`msakit.core.runlog`)."""
        if self.quiet or not self.dist.is_main:
            return
        # Past the schedule's horizon (stop_at_horizon=false) there is no last epoch to show.
        of = f"/{self.config.epochs}" if self.config.stop_at_horizon else " (until early stop)"
        earlier = tuple(p.name for p in self.model.training_phases()[:-1])
        echo(
            f"seed {self.seed} epoch {record['epoch']}{of}: "
            f"loss {record['train_loss']:.4f} ({loss_parts_text(record, earlier)}), "
            f"valid MAE {record.get('valid_MAE', float('nan')):.4f}, {record['seconds']:.1f} s"
        )

    def _log_epoch(self, record: dict[str, Any]) -> None:
        writer = self.sinks.writer
        if writer is None:
            return
        for key, value in record.items():
            if key.startswith("valid_") and isinstance(value, float) and math.isfinite(value):
                writer.add_scalar(f"valid/{key[6:]}", value, self.global_step)
        writer.flush()

    def _open_step_log(self) -> TextIO | None:
        """The step log, opened for appending: every seed adds its lines (``seed`` field)."""
        if self.log_steps is None or not self.dist.is_main:
            return None
        try:
            self.log_steps.parent.mkdir(parents=True, exist_ok=True)
            self._truncate_step_log()
            return open(self.log_steps, "a", buffering=1)
        except OSError as exc:
            raise MsakitError(
                f"--log-steps {self.log_steps}: cannot write: {exc.strerror}"
            ) from None

    def _truncate_step_log(self) -> None:
        """Drop this seed's step lines after its last completed epoch (all of them when the seed
        starts afresh); other seeds' lines are kept."""
        assert self.log_steps is not None  # called when there is a step log
        if not self.log_steps.exists():
            return
        try:
            text = self.log_steps.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise MsakitError(f"--log-steps {self.log_steps}: not a step log (not UTF-8 text); "
                              "name a new file or the run's own step log") from None
        keep = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                seed, step = entry.get("seed", self.seed), int(entry["step"])
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                continue  # a line cut by a kill
            if seed != self.seed or step <= self.global_step:
                keep.append(line)
        write_text_atomic(self.log_steps, "".join(line + "\n" for line in keep))

    def _state(self) -> dict[str, torch.Tensor]:
        state = self.model.state_dict()
        if self.best_state_filter is not None:
            state = self.best_state_filter(state)
        return {k: v.detach().cpu() for k, v in state.items()}

    def _save_best(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        if self.best_format == "safetensors":
            save_pretrained(
                self.run_dir, self._state(),
                description={k: v for k, v in self.checkpoint_extra.items() if k != "format"},
                meta={"epoch": epoch + 1, "seed": self.seed, "valid": metrics},
                shared_prefix=frozen_prefix(self.model),
            )
            return
        torch_save_atomic(
            {
                "model": self._state(),
                "epoch": epoch + 1,
                "seed": self.seed,
                "valid": metrics,
                **self.checkpoint_extra,
            },
            self.run_dir / "best.pt",
        )

    def _save_last(self, epoch: int) -> None:
        if self.run_dir is None or not self.dist.is_main or not self.save_last:
            self.dist.barrier()
            return
        torch_save_atomic(
            {
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "model_training_state": {
                    k: v.detach().cpu() for k, v in self.model.training_state().items()
                },
                **self._optimizer_states(),
                "early_stopping": self.stopper.state_dict(),
                "rng": rng_state(),
                **({"scaler": self.prepared.scaler.state_dict()}
                   if self.prepared.scaler is not None else {}),
                "epoch": epoch + 1,
                "global_step": self.global_step,
                "history": json.dumps(self.history),
                "seed": self.seed,
                **self.checkpoint_extra,
            },
            self.run_dir / "last.pt",
        )
        self.dist.barrier()

    def _optimizer_states(self) -> dict[str, Any]:
        """``optimizer`` and ``scheduler`` states; with several training phases each is a dict
        {phase: state}."""
        prepared = self.prepared
        if len(prepared.phases) == 1:
            return {"optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}
        return {
            "optimizer": {name: o.state_dict() for name, o in prepared.optimizers.items()},
            "scheduler": {name: s.state_dict() for name, s in prepared.schedulers.items()},
        }

    def _load_optimizer_states(self, state: dict[str, Any]) -> None:
        prepared = self.prepared
        if len(prepared.phases) == 1:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            return
        for name, optimizer in prepared.optimizers.items():
            optimizer.load_state_dict(state["optimizer"][name])
            prepared.schedulers[name].load_state_dict(state["scheduler"][name])

    def _load_training_state(self, saved: Any) -> None:
        """The model's state outside its weights (e.g. Self-MM's unimodal labels), checked
        against what this run keeps: the same entries and shapes, or a ``ValueError``."""
        expected = self.model.training_state()
        if not isinstance(saved, dict) or saved.keys() != expected.keys():
            held = _entries(saved) if isinstance(saved, dict) else f"a {type(saved).__name__}"
            raise ValueError(f"its model training state holds {held}; this run keeps "
                             f"{_entries(expected)}")
        for key, tensor in expected.items():
            got = saved[key]
            if not isinstance(got, torch.Tensor) or got.shape != tensor.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ValueError(
                    f"its model training state {key} is {shape}, this run needs "
                    f"{tuple(tensor.shape)} (another training split?)"
                )
        self.model.load_training_state(saved)

    def _load_last(self) -> int:
        """Restore everything from ``last.pt``; an unreadable, truncated or foreign file is one
        ``MsakitError`` (before anything changes on disk)."""
        assert self.run_dir is not None  # called with a run folder
        path = self.run_dir / "last.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise TypeError(f"holds a {type(state).__name__}")
            if state.get("seed", self.seed) != self.seed:
                raise ValueError(f"it is seed {state.get('seed')}'s")
            self.model.load_state_dict(state["model"])
            self._load_training_state(state.get("model_training_state", {}))
            self._load_optimizer_states(state)
            self.stopper.load_state_dict(state["early_stopping"])
            set_rng_state(state["rng"])
            if self.prepared.scaler is not None and "scaler" in state:
                self.prepared.scaler.load_state_dict(state["scaler"])
            self.global_step = int(state["global_step"])
            self.history = json.loads(state["history"])
            epoch = int(state["epoch"])
            if not isinstance(self.history, list) or epoch < 0 or (
                self.config.stop_at_horizon and epoch > self.config.epochs
            ):
                raise ValueError(f"epoch {epoch} and its history do not fit this run")
        except Exception as exc:  # noqa: BLE001 - truncated, foreign or malformed: one line
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise MsakitError(
                f"{path}: cannot resume from it ({type(exc).__name__}: {first}); delete it to "
                "restart this seed, or train with --overwrite"
            ) from None
        return epoch

    def _best_valid_from_history(self) -> dict[str, Any]:
        if not self.history or self.stopper.best_epoch < 0:
            return {}
        record = self.history[self.stopper.best_epoch]
        return {k[6:]: v for k, v in record.items() if k.startswith("valid_") and k != "valid_loss"}


@torch.no_grad()
def evaluate_model(
    model: MSAModel,
    split: SplitData,
    *,
    dataset: str | DatasetSpec,
    batch_size: int,
    device: torch.device | None = None,
    bf16: bool = False,
    text_cache: TextCache | None = None,
    dist: DistContext | None = None,
    amp: str = "off",
) -> EvalResult:
    """Predictions, labels and MMSA metrics of ``model`` on a whole split, in split order; the
    metrics unrounded (:func:`evaluation.metrics.metric_values`: a table rounds them where it is
    printed).

    Under DDP (``dist``) each rank predicts its share of every batch and the shares are
    gathered, so every rank returns the same result (and takes the same early-stopping
    decisions) for 1/N of the work. ``amp`` (or ``bf16=True``, the same as ``amp="bf16"``) is
    the run's mixed precision (:func:`msakit.training.device.autocast_settings`); fp16 off
    CUDA evaluates in float32. A split without labels (``split.labelled`` False, a file to
    predict on) gets its predictions only: no metrics (``{}``) and a NaN loss.
    """
    pred, loss = predict_split(
        model, split, batch_size=batch_size, device=device, amp=amp_mode(amp, bf16),
        text_cache=text_cache, dist=dist, with_loss=split.labelled,
    )
    return EvalResult(
        predictions=pred,
        labels=split.labels,
        indices=np.arange(len(split)),
        metrics=metric_values(pred, split.labels, dataset) if split.labelled else {},
        loss=loss,
    )


@torch.no_grad()
def predict_split(
    model: MSAModel,
    split: SplitData,
    *,
    batch_size: int,
    device: torch.device | None = None,
    amp: str = "off",
    text_cache: TextCache | None = None,
    dist: DistContext | None = None,
    with_loss: bool = True,
) -> tuple[np.ndarray, float]:
    """``model``'s (N,) predictions on a whole split in split order, in eval mode, and the mean
    task loss over its batches (NaN without ``with_loss``).

    See :func:`evaluate_model` for ``amp`` and ``dist``."""
    device = device or next(model.parameters()).device
    mode = amp_mode(amp, False)
    if mode == "fp16" and device.type != "cuda":  # a GPU run's checkpoint read on a CPU
        mode = "off"
    cast = autocast_settings(device.type, mode)
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    was_training = model.training
    model.eval()
    plan = epoch_plan(split, batch_size, seed=0, epoch=0, shuffle=False)
    predictions, loss_sums = [], []  # per batch: this rank's predictions, sum of task losses
    for batch in iterate(split, plan, rank=rank, world_size=world, trim=not model.reads_padding()):
        n = len(batch)
        if n == 0:  # a last batch smaller than the number of ranks
            predictions.append(np.zeros(0, dtype=np.float32))
            loss_sums.append(0.0)
            continue
        batch = add_text_cache(batch, text_cache).to(device)
        with torch.autocast(device.type, dtype=cast.dtype, enabled=cast.enabled):
            output = model(batch)
            loss_sums.append(n * float(model.compute_loss(output, batch).task_loss.float())
                             if with_loss else math.nan)
        predictions.append(output.prediction.float().cpu().numpy())
    model.train(was_training)
    if world > 1:
        assert dist is not None  # world is 1 without one
        shares = dist.gather_objects((predictions, loss_sums))  # rank order = sample order
        predictions = [np.concatenate([s[0][b] for s in shares]) for b in range(len(plan))]
        loss_sums = [sum(s[1][b] for s in shares) for b in range(len(plan))]
    losses = [total / len(indices) for total, indices in zip(loss_sums, plan, strict=True)]
    return np.concatenate(predictions), float(np.mean(losses))
