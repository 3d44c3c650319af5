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
:func:`collate` trims audio and vision to the batch's longest valid sequence.

A training epoch keeps every batch of the plan, the short last one included, as MMSA's
``DataLoader`` (``drop_last=False``) does, so ``batch_size=1`` is one step per sample; only a
batch that a model cannot train on is joined to the one before (:func:`join_small_batches`):
one sample where the model has BatchNorm (which cannot normalise a batch of one: MMSA raises
there), fewer samples than DDP ranks (each rank needs one).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from msakit.data.mmsa import SplitData
from msakit.data.safe_format import take


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


def collate(split: SplitData, indices: np.ndarray, trim: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of the samples ``indices``, text/audio/vision cut to their longest valid length
    (``trim=False``: the file's full padded lengths, for models that read padded positions).
    A split loaded with its precomputed text features adds them as ``text_features``."""
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
    batch = {
        "text": torch.from_numpy(split.text_bert[indices, :, :t_max]),
        "audio": torch.from_numpy(audio),
        "audio_lengths": torch.from_numpy(a_len),
        "vision": torch.from_numpy(take(split.vision, indices, v_max)),
        "vision_lengths": torch.from_numpy(v_len),
        "labels": torch.from_numpy(split.labels[indices]),
        "index": torch.from_numpy(np.asarray(indices, dtype=np.int64)),
    }
    if split.text_features is not None:  # (B, Lt, Dt): the file's precomputed text features
        batch["text_features"] = torch.from_numpy(take(split.text_features, indices, t_max))
    return batch


def iterate(
    split: SplitData, plan: list[np.ndarray], *, rank: int = 0, world_size: int = 1,
    trim: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield this rank's batch of every global batch in ``plan`` (see :func:`collate`)."""
    for indices in plan:
        yield collate(split, shard(indices, rank, world_size), trim)
