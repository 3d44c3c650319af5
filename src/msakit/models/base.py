"""What every msakit model provides to the one generic Trainer: the model contract.

A model is an :class:`MSAModel` (an ``nn.Module``) built as ``NAME(config, dims, text_encoder)``.

Required (every model implements these three; :class:`MSAModel` raises otherwise):

* ``forward(batch: Batch) -> ModelOutput``: the prediction and the representations its loss
  needs. A :class:`~msakit.data.batching.Batch` is a typed dataclass (``batch.text``,
  ``batch.audio``, ``batch.audio_lengths``, ``batch.labels``, ``batch.index``, ...). Generic
  code always calls ``model(batch)`` (``__call__``), never ``forward``, so forward pre-hooks
  (:class:`FeatureStandardizer`) and DDP see every batch.
* ``compute_loss(output, batch, ctx: LossContext) -> LossOutput``: ``ctx`` carries the
  distributed arguments (``ctx.gather`` concatenates a per-rank tensor over all ranks with
  gradients, so contrastive losses see the global batch; ``ctx.mean`` is a per-sample loss's
  mean over the global batch); the default ``ctx`` is one process. ``LossOutput.parts`` holds
  the loss's terms other than the task loss, named as :attr:`MSAModel.loss_parts` declares.
* ``parameter_groups() -> {"text" | "audio" | "vision" | "other" | own: [(name, param)]}``:
  the groups the RunConfig's *named* learning rates and weight decays apply to
  (``lr.text``, ``lr.audio``, ...). Every model builds them with :func:`groups_by_prefix`.

Optional protocols (opt-in; the defaults below do nothing or the common thing):

* text features: :meth:`MSAModel.text_features` (what ``forward`` needs from a text encoder,
  cached by the Trainer while the encoder is frozen) and :meth:`MSAModel.cached_text_features`;
  :meth:`MSAModel.reads_padding` for models that read padded positions.
* stateful losses (Self-MM's per-sample labels): :meth:`MSAModel.on_train_start`,
  :meth:`MSAModel.on_epoch_start`, :meth:`MSAModel.training_state` /
  :meth:`MSAModel.load_training_state` (kept in ``last.pt``).
* training phases (MMIM): :meth:`MSAModel.training_phases` (the passes of an epoch, each with an
  optimizer of its own) and :meth:`MSAModel.start_phase`.
* optimizer: :meth:`MSAModel.optimizer_settings` (groups of its own),
  :attr:`MSAModel.text_no_decay` (BERT practice; MMIM decays them all, as MMSA).
* adapters (ConKI): :attr:`MSAModel.supports_adapters` with ``has_adapters``,
  ``adapter_state``, ``adapter_signature``, ``load_adapters``; the model's ``ModelSpec``
  declares the stage that trains them.
* messages and plots: :meth:`MSAModel.start_message`, :meth:`MSAModel.plot_representations`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from msakit.data.batching import Batch

Gather = Callable[[torch.Tensor], torch.Tensor]


def no_gather(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class ModelOutput:
    """prediction (B,), named representations (B, d) for losses and plots, and ``terms``:
    other tensors the model's loss reads (e.g. MMIM's MI bounds, scalars), empty by default."""

    prediction: torch.Tensor
    representations: dict[str, torch.Tensor] = field(default_factory=dict)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LossOutput:
    """A training step's loss and what it is made of.

    ``loss`` is what is minimised; ``task_loss`` the task term (the prediction against the
    labels; what validation reports); ``parts`` the model's other terms by name, exactly the
    names of :attr:`MSAModel.loss_parts` in training (empty for a model whose loss is its task
    loss, and in evaluation). A part is the term as the model's ``loss_parts`` documents it
    (usually before its weight: ``loss = task + Σ weight × part``); the Trainer logs each as
    ``<name>_loss`` (step log, TensorBoard ``train/<name>_loss``, ``history.json``
    ``train_<name>_loss``) and shows it by name in the epoch line."""

    loss: torch.Tensor
    task_loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.parts, dict):  # the contract before the parts were named
            raise TypeError(
                "LossOutput(loss, task_loss, parts): parts is a dict {name: term} of the names "
                f"in the model's loss_parts, not a {type(self.parts).__name__} (the third "
                "field was contrastive_loss before msakit named the parts)")


@dataclass
class Dims:
    """Feature sizes of a data file that a model is built for."""

    audio: int
    vision: int
    text_len: int = 50
    audio_len: int = 500
    vision_len: int = 375
    text_dim: int | None = None
    """Width of the file's precomputed text features (models that read them; else None)."""

    @classmethod
    def of(cls, data: Any) -> Dims:
        """The dims of a loaded feature file (:class:`msakit.data.FeatureFile`)."""
        return cls(
            audio=data.audio_dim,
            vision=data.vision_dim,
            text_len=data.text_len,
            audio_len=data.audio_len,
            vision_len=data.vision_len,
            text_dim=data.text_dim,
        )

    def to_dict(self) -> dict[str, int | None]:
        return {
            "audio": self.audio,
            "vision": self.vision,
            "text_len": self.text_len,
            "audio_len": self.audio_len,
            "vision_len": self.vision_len,
            "text_dim": self.text_dim,
        }


@dataclass(frozen=True)
class TrainingPhase:
    """One pass of a training epoch over the epoch's batches (see
    :meth:`MSAModel.training_phases`): its optimizer steps the parameter ``groups`` (None: all
    of the model's groups) over the first ceil(``fraction`` x n) of the n batches."""

    name: str
    groups: tuple[str, ...] | None = None
    fraction: float = 1.0

    def steps(self, batches: int) -> int:
        return max(1, min(batches, math.ceil(self.fraction * batches - 1e-9)))


def task_mean(per_sample: torch.Tensor, global_batch: int | None, world_size: int) -> torch.Tensor:
    """Mean of a per-sample loss over the global batch, as seen by one rank.

    DDP averages gradients over ranks, so each rank returns ``sum_local / global_batch * world``;
    with one process this is the plain mean.
    """
    if global_batch is None or world_size == 1:
        return per_sample.mean()
    return per_sample.sum() * (world_size / global_batch)


@dataclass(frozen=True)
class LossContext:
    """Where a loss is computed: under DDP, this rank's share of a global batch.

    ``gather`` concatenates a per-rank (b, ...) tensor over all ranks in rank order, with
    gradients (the identity in one process); ``global_batch`` is the number of samples over all
    ranks (None: this batch's size); ``world_size`` the number of ranks."""

    gather: Gather = no_gather
    global_batch: int | None = None
    world_size: int = 1

    def mean(self, per_sample: torch.Tensor) -> torch.Tensor:
        """``per_sample``'s mean over the global batch, as seen by this rank
        (:func:`task_mean`)."""
        return task_mean(per_sample, self.global_batch, self.world_size)


LOCAL = LossContext()
"""One process, the whole batch: evaluation, tests, reference comparisons."""


def l1_task(output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL) -> torch.Tensor:
    """The task loss every model shares: mean absolute error of the prediction against the
    batch's labels, over the global batch (:meth:`LossContext.mean`)."""
    labels = batch.labels.to(output.prediction.dtype)
    return ctx.mean((output.prediction - labels).abs())


STANDARDIZER = "feature_standardizer"
"""The submodule of an :class:`MSAModel` trained with ``standardize=true``; its state-dict keys
start with ``feature_standardizer.``."""


class FeatureStandardizer(nn.Module):
    """``(x - mean) * scale`` per feature on the valid frames of a batch's ``audio`` and
    ``vision`` (positions below ``audio_lengths`` / ``vision_lengths``); padded frames are left
    exactly as they are. ``mean`` and ``scale`` (1 / std, 0 for a constant feature) are float32
    buffers in the model's state dict, computed from the training split
    (:mod:`msakit.data.standardize`); they start as NaN until set or loaded."""

    def __init__(self, audio: int, vision: int) -> None:
        super().__init__()
        for key, width in (("audio", audio), ("vision", vision)):
            self.register_buffer(f"{key}_mean", torch.full((width,), math.nan))
            self.register_buffer(f"{key}_scale", torch.full((width,), math.nan))

    def set_stats(self, stats: Any) -> None:
        """Take the (D,) arrays of a :class:`msakit.data.standardize.FeatureStats`."""
        for name, buffer in self.named_buffers():
            buffer.copy_(torch.as_tensor(getattr(stats, name), dtype=buffer.dtype))

    def forward(self, batch: Batch) -> Batch:
        """A new batch with standardised ``audio`` and ``vision`` (the input is unchanged).
        Under the missing-modality protocol a dropped frame stays zero (as the model sees it)
        and the complete inputs (``batch.complete``) are standardised too."""
        out: dict[str, torch.Tensor] = {}
        complete = dict(batch.complete)
        for key in ("audio", "vision"):
            x = batch.sequence(key)
            positions = torch.arange(x.shape[1], device=x.device)
            valid = positions[None, :] < batch.lengths(key).to(x.device)[:, None]
            kept = batch.kept.get(key)
            present = valid if kept is None else valid & (kept.to(x.device) > 0)
            out[key] = self._standardized(key, x, present)
            if key in complete:
                complete[key] = self._standardized(key, complete[key], valid)
        return batch.replace(**out, complete=complete)

    def _standardized(self, key: str, x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, D) standardised with ``key``'s statistics at the (B, L) ``where``."""
        mean = getattr(self, f"{key}_mean").to(x.dtype)
        scale = getattr(self, f"{key}_scale").to(x.dtype)
        return torch.where(where[..., None], (x - mean) * scale, x)


def _standardize_inputs(model: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of a model with a :class:`FeatureStandardizer`: every call of the
    model (training, evaluation, prediction, under DDP too) sees the standardised batch."""
    return (getattr(model, STANDARDIZER)(args[0]), *args[1:])


class MSAModel(nn.Module):
    """Base class of every model (the contract: this module's docstring).

    Required: ``forward(batch) -> ModelOutput``, :meth:`compute_loss` and
    :meth:`parameter_groups` (with :func:`groups_by_prefix`). Everything else is an optional
    protocol with a default that a model overrides where it differs (generic code never asks
    which model it holds)."""

    text_no_decay: tuple[str, ...] = (
        "bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm", "norm.weight"
    )
    """Text-encoder parameters whose name contains one of these take no weight decay (BERT
    practice, both papers' code); a model that decays them all sets ``()``."""

    supports_adapters = False
    """Whether ``--adapters`` (pretrained knowledge adapters, ConKI's stage 1) applies; such a
    model provides ``has_adapters``, ``adapter_state()``, ``adapter_signature()`` and
    ``load_adapters`` (see :mod:`msakit.training.stages`)."""

    loss_parts: tuple[str, ...] = ()
    """The names of the loss's terms besides the task loss: the keys of
    :attr:`LossOutput.parts` that :meth:`compute_loss` returns in training (``()``: the loss is
    the task loss). The Trainer reads it at the start of each training pass (after
    :meth:`start_phase`), so a model whose terms depend on its settings sets it in
    ``__init__`` and one whose terms differ by training phase makes it a property.

    Under DDP the Trainer reports each part's mean over the ranks: a part computed on the
    gathered global batch (``ctx.gather``) is the same on every rank, a per-sample mean taken
    with ``ctx.mean`` averages to the global batch's mean, a mean over the rank's own samples
    to the mean of the ranks' means."""

    def forward(self, batch: Batch) -> ModelOutput:
        """Required: the prediction and representations for ``batch``."""
        raise NotImplementedError(f"{type(self).__name__} implements no forward")

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        """Required: the loss of ``output`` on ``batch``; ``ctx`` says which share of which
        global batch this rank holds (:class:`LossContext`)."""
        raise NotImplementedError(f"{type(self).__name__} implements no compute_loss")

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Required: {"text" | "audio" | "vision" | "other": [(name, parameter), ...]}, built
        with :func:`groups_by_prefix`; a model may add groups of its own, whose settings
        :meth:`optimizer_settings` gives."""
        raise NotImplementedError(f"{type(self).__name__} implements no parameter_groups")

    def training_phases(self) -> tuple[TrainingPhase, ...]:
        """The passes of every training epoch, in order, each with an optimizer (and schedule)
        of its own; the Trainer calls :meth:`start_phase` before each. Default: one pass, one
        optimizer over all parameter groups."""
        return (TrainingPhase("train"),)

    def start_phase(self, name: str) -> None:
        """Called by the Trainer before each pass of :meth:`training_phases` (in train mode):
        the model may reset per-pass state and choose what its forward and loss compute."""

    def start_message(self, *, with_adapters: bool = False) -> str | None:
        """A note printed once before training (e.g. which ablation a setting amounts to)."""
        return None

    def plot_representations(self) -> dict[str, str]:
        """{representation key: title}: what ``msakit plot tsne`` draws; empty = every
        representation the model returns, titled by its key."""
        return {}

    def reads_padding(self) -> bool:
        """Whether outputs depend on padded positions (e.g. CLGSI with the authors' unmasked
        encoders); if so, batches keep the file's full padded lengths instead of being trimmed
        to their longest valid sequence."""
        return False

    def optimizer_settings(self, config: Any) -> dict[str, tuple[float, float]]:
        """(learning rate, weight decay) of every parameter group: the RunConfig's ``lr`` and
        ``weight_decay`` per group; models with groups of their own add them."""
        return {g: (config.lr[g], config.weight_decay[g]) for g in config.lr}

    # ------------------------------------------------ optional: stateful losses (Trainer)
    # A model whose loss keeps state across steps and epochs (e.g. Self-MM's unimodal labels,
    # kept per training sample and indexed by ``batch.index``) overrides these; the defaults
    # do nothing. ``compute_loss`` in training mode may update such state from the batch (its
    # forward outputs, detached); in eval mode it must not.

    def on_train_start(self, train: Any) -> None:
        """Called once by the Trainer before the first epoch with the training split
        (:class:`msakit.data.mmsa.SplitData`; ``batch.index`` indexes it), before a resume
        restores :meth:`training_state`."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the Trainer before each training epoch (``epoch`` counts from 0)."""

    def training_state(self) -> dict[str, torch.Tensor]:
        """State outside ``state_dict`` that a resumed run needs (saved in ``last.pt``, not in
        ``best.pt``: inference never reads it)."""
        return {}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`training_state` returned."""

    def trains_text_encoder(self) -> bool:
        """Whether the text encoder's weights are trained (if not, its outputs can be cached)."""
        encoder = getattr(self, "text_encoder", None)
        return encoder is None or any(p.requires_grad for p in encoder.parameters())

    def text_features(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``forward`` needs from the text encoder for a (B, 3, Lt) ``text`` batch.

        Keys starting with ``seq_`` are (B, Lt, ...) sequences (trimmed with the batch), the
        others (B, ...) vectors. When the text encoder is frozen the Trainer computes these once
        per sample (frozen encoders run in eval mode, so the cache is exact) and passes them in
        the batch's ``text_cache``. Optional: only models with a text encoder implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} reads no text encoder")

    def cached_text_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The batch's cached text features, or the text encoder's outputs computed now."""
        return dict(batch.text_cache) if batch.text_cache else self.text_features(batch.text)

    def add_standardizer(self, dims: Dims, stats: Any = None) -> None:
        """Standardise the audio and vision of every batch before :meth:`forward` (run setting
        ``standardize``): a :class:`FeatureStandardizer` for ``dims``' widths, holding
        ``stats`` (:class:`msakit.data.standardize.FeatureStats`), or NaN until a checkpoint's
        state dict is loaded. Generic: models read ``batch.audio`` as always."""
        if getattr(self, STANDARDIZER, None) is None:
            setattr(self, STANDARDIZER, FeatureStandardizer(dims.audio, dims.vision))
            self.register_forward_pre_hook(_standardize_inputs)
        if stats is not None:
            getattr(self, STANDARDIZER).set_stats(stats)

    def train(self, mode: bool = True) -> MSAModel:
        """Train mode everywhere except a frozen text encoder, which stays in eval mode."""
        super().train(mode)
        encoder = getattr(self, "text_encoder", None)
        if mode and encoder is not None and not self.trains_text_encoder():
            encoder.eval()
        return self


def first_non_finite(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``tensors`` (a state dict) that holds a
    NaN or an infinity, or None: a model with such a weight predicts NaN (or nothing sensible),
    which no metric may report as a result."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                return name
    return None


def groups_by_prefix(
    model: nn.Module, prefixes: dict[str, tuple[str, ...]]
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Parameter groups by name prefix: ``{"text": ("text_encoder.",), ...}``, the first group
    (in ``prefixes``' order) with a prefix of the name wins; a parameter whose name matches no
    prefix is in ``other``. ``text``, ``audio``, ``vision``, ``other`` and every group named in
    ``prefixes`` exist, empty or not (a model's own group, such as ConKI's ``adapters``)."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {
        "text": [], "audio": [], "vision": [], "other": []
    }
    for group in prefixes:
        groups.setdefault(group, [])
    for name, param in model.named_parameters():
        group = next((g for g, p in prefixes.items() if name.startswith(p)), "other")
        groups[group].append((name, param))
    return groups


class L1Regression(MSAModel):
    """A model whose whole loss is the mean absolute error of its prediction (MMSA's
    ``L1Loss``, the loss of its regression baselines TFN, LMF and MulT)."""

    def compute_loss(
        self, output: ModelOutput, batch: Batch, ctx: LossContext = LOCAL
    ) -> LossOutput:
        task = l1_task(output, batch, ctx)
        return LossOutput(task, task)
