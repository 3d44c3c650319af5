"""Batches: global batch plans reproducible from the seed, trimmed to the real lengths.

A *plan* is the list of global batches of one epoch (arrays of sample indices). It depends only on
(seed, epoch, sampler, batch size), never on the number of processes: under DDP every rank builds
the same plan and takes its slice of each global batch (:func:`shard`), so "which samples form
each step's global batch" is the same on 1 or N ranks.

``sampler="random"`` (the default) shuffles the split (what both papers' code does).
``sampler="bucket"`` (an opt-in speed setting; it changes which samples meet in a batch, hence
CLGSI's contrastive pairs and BatchNorm statistics) sorts samples by their longest audio/vision
sequence, with a random jitter of one bucket's width (1/8 of the padded length), cuts the order
into full batches and shuffles the batch order, so a batch's padding, and with trimming its
cost, follows the real lengths.
:func:`collate` trims audio and vision to the batch's longest valid sequence and returns a
:class:`Batch`, the typed object every model reads.

A training epoch keeps every batch of the plan, the short last one included, as MMSA's
``DataLoader`` (``drop_last=False``) does, so ``batch_size=1`` is one step per sample; only a
batch that a model cannot train on is joined to the one before (:func:`join_small_batches`):
one sample where the model has BatchNorm (which cannot normalise a batch of one: MMSA raises
there), fewer samples than DDP ranks (each rank needs one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from msakit.data.missing import with_missing
from msakit.data.mmsa import SplitData
from msakit.data.safe_format import take

MODALITIES = ("audio", "vision")
"""The sequence modalities of a batch with lengths of their own (text has its mask row)."""
TENSOR_MAPS = ("text_cache", "kept", "complete")
"""The fields of a :class:`Batch` that map names to tensors."""


@dataclass
class Batch:
    """What reaches a model: one batch of samples (:func:`collate` builds it), every field a
    tensor whose first dimension is the batch.

    Models read attributes (``batch.audio``); :meth:`to` moves every tensor to a device;
    :meth:`from_dict` builds one from a mapping of the same names (tests, reference code).
    """

    text: torch.Tensor
    """(B, 3, Lt) MMSA ``text_bert`` rows: token ids, attention mask, segment ids."""
    audio: torch.Tensor
    """(B, La, Da) audio features, trimmed to the batch's longest valid sequence."""
    audio_lengths: torch.Tensor
    """(B,) valid audio frames."""
    vision: torch.Tensor
    """(B, Lv, Dv) vision features."""
    vision_lengths: torch.Tensor
    """(B,) valid vision frames."""
    labels: torch.Tensor
    """(B,) regression labels (NaN in a file without labels)."""
    index: torch.Tensor
    """(B,) int64 positions of the samples in their split (per-sample state, error lines)."""
    text_features: torch.Tensor | None = None
    """(B, Lt, Dt) the file's precomputed text features, for models without a text encoder."""
    text_cache: dict[str, torch.Tensor] = field(default_factory=dict)
    """A frozen text encoder's outputs, computed once per sample by the Trainer
    (:meth:`msakit.models.base.MSAModel.text_features`); empty: compute them now."""
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    """Under the missing-modality protocol (run setting ``missing_rate``,
    :mod:`msakit.data.missing`): per modality (``text``, ``audio``, ``vision``) a (B, L) float
    mask, 1 where the position is present, 0 where it was dropped from ``text`` / ``audio`` /
    ``vision`` (and ``text_features``); empty: nothing was dropped."""
    complete: dict[str, torch.Tensor] = field(default_factory=dict)
    """Under the protocol, the inputs before anything was dropped (``text``, ``audio``,
    ``vision``, and ``text_features`` where the batch has them), for a model that reconstructs
    them (TFR-Net); empty: the batch's inputs are complete."""

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self, modality: str) -> torch.Tensor:
        """The valid lengths of ``audio`` or ``vision``."""
        if modality not in MODALITIES:
            raise KeyError(f"no lengths for {modality!r}; choose {', '.join(MODALITIES)}")
        return getattr(self, f"{modality}_lengths")

    def sequence(self, modality: str) -> torch.Tensor:
        """The features of ``audio`` or ``vision``."""
        if modality not in MODALITIES:
            raise KeyError(f"no sequence {modality!r}; choose {', '.join(MODALITIES)}")
        return getattr(self, modality)

    def replace(self, **changes: Any) -> Batch:
        """A copy with some fields replaced (the tensors are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Every tensor on ``device``."""
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=non_blocking)

        changes: dict[str, Any] = {
            f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        for name in TENSOR_MAPS:
            changes[name] = {k: move(v) for k, v in getattr(self, name).items()}
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Batch:
        """A batch from a mapping of field names to tensors (``index`` defaults to 0..B-1;
        keys ``text_cache.KEY`` fill :attr:`text_cache`, ``kept.KEY`` :attr:`kept`,
        ``complete.KEY`` :attr:`complete`); an unknown key is a ``KeyError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        maps: dict[str, dict[str, Any]] = {}
        plain: dict[str, Any] = {}
        for key, value in values.items():
            head, _, tail = key.partition(".")
            if tail and head in TENSOR_MAPS:
                maps.setdefault(head, {})[tail] = value
            else:
                plain[key] = value
        unknown = sorted(set(plain) - names)
        if unknown:
            raise KeyError(f"not a batch field: {', '.join(unknown)}")
        if "index" not in plain and "labels" in plain:
            plain["index"] = torch.arange(len(plain["labels"]))
        for name in TENSOR_MAPS:
            plain[name] = {**plain.get(name, {}), **maps.get(name, {})}
        return cls(**plain)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The batch's tensors by field name (``text_cache.KEY``, ``kept.KEY``,
        ``complete.KEY`` for the mappings; reference code and tests)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)}
        for name in TENSOR_MAPS:
            out.update({f"{name}.{k}": v for k, v in getattr(self, name).items()})
        return out


def epoch_plan(
    split: SplitData,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    sampler: str = "random",
    buckets: int = 8,
) -> list[np.ndarray]:
    """The global batches of one epoch, as arrays of indices into ``split``."""
    n = len(split)
    if not shuffle:
        order = np.arange(n)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    if sampler == "bucket":
        # Sort by the longer of a sample's audio and vision sequence (as a share of the padded
        # length) plus a jitter of one bucket's width, cut into full batches, shuffle the batch
        # order: batches hold samples of similar length, and differ from epoch to epoch.
        audio = split.audio_lengths / max(1, split.audio.shape[1])
        vision = split.vision_lengths / max(1, split.vision.shape[1])
        key = np.maximum(audio, vision) + rng.uniform(0.0, 1.0 / buckets, n)
        order = np.argsort(key, kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        return [batches[k] for k in rng.permutation(len(batches))]
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def join_small_batches(plan: list[np.ndarray], smallest: int) -> list[np.ndarray]:
    """``plan`` with every batch of fewer than ``smallest`` samples joined to the batch before
    it (the first batch: to the next one); ``smallest=1`` keeps the plan as it is. With the
    random sampler only the last batch can be that small."""
    joined: list[np.ndarray] = []
    for batch in plan:
        if joined and (len(batch) < smallest or len(joined[-1]) < smallest):
            joined[-1] = np.concatenate([joined[-1], batch])
        else:
            joined.append(batch)
    return joined


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of one global batch."""
    return np.array_split(indices, world_size)[rank]


def collate(split: SplitData, indices: np.ndarray, trim: bool = True) -> Batch:
    """Tensors of the samples ``indices``, text/audio/vision cut to their longest valid length
    (``trim=False``: the file's full padded lengths, for models that read padded positions).
    A split loaded with its precomputed text features adds them as ``text_features``; a split
    with missing-modality masks (``split.kept``) has its dropped positions removed
    (:func:`msakit.data.missing.with_missing`)."""
    a_len = split.audio_lengths[indices]
    v_len = split.vision_lengths[indices]
    t_len = split.text_lengths[indices]
    if trim:
        a_max = max(1, int(a_len.max(initial=0)))
        v_max = max(1, int(v_len.max(initial=0)))
        t_max = max(1, int(t_len.max(initial=0)))
    else:
        a_max, v_max, t_max = split.audio.shape[1], split.vision.shape[1], split.text_bert.shape[2]
    # Just these samples are read from a memory-mapped file (safe_format.take); audio -inf (MMSA's
    # silence) becomes 0 here when the split is a read-only map (see SplitData).
    audio = take(split.audio, indices, a_max)
    if not split.audio.flags.writeable:
        audio[np.isneginf(audio)] = 0
    text_features = None
    if split.text_features is not None:  # (B, Lt, Dt): the file's precomputed text features
        text_features = torch.from_numpy(take(split.text_features, indices, t_max))
    batch = Batch(
        text=torch.from_numpy(split.text_bert[indices, :, :t_max]),
        audio=torch.from_numpy(audio),
        audio_lengths=torch.from_numpy(a_len),
        vision=torch.from_numpy(take(split.vision, indices, v_max)),
        vision_lengths=torch.from_numpy(v_len),
        labels=torch.from_numpy(split.labels[indices]),
        index=torch.from_numpy(np.asarray(indices, dtype=np.int64)),
        text_features=text_features,
    )
    return batch if split.kept is None else with_missing(batch, split.kept)


def iterate(
    split: SplitData, plan: list[np.ndarray], *, rank: int = 0, world_size: int = 1,
    trim: bool = True,
) -> Iterator[Batch]:
    """Yield this rank's batch of every global batch in ``plan`` (see :func:`collate`)."""
    for indices in plan:
        yield collate(split, shard(indices, rank, world_size), trim)
