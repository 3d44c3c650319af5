"""MMSA's missing-modality protocol (its ``missingTask``, TFR-Net's data): random positions of
each modality dropped at a given rate, the same positions in every run.

MMSA's ``MMDataset.generate_m`` (``data_loader.py``), per split and modality, with the modality's
seed: ``np.random.seed(seed)``, one uniform draw per padded position, a valid position kept
where its draw exceeds the rate. Text keeps its first token ([CLS]) and the last valid one
([SEP]); a dropped token becomes [UNK] (id 100 in both BERT vocabularies MMSA uses); a dropped
audio or vision frame becomes zeros. Audio and vision validity comes from their lengths (an
aligned file's: the text's). MMSA re-seeds for every split, so train, valid and test draw from
the same stream.

msakit applies it in the data path, for every model: :func:`with_missing_split` gives a split
its masks (:func:`kept_positions`, computed once per split and rate, (N, L) booleans), and
:func:`msakit.data.batching.collate` removes the dropped positions from every batch of such a
split (:func:`with_missing`), which also carries the masks (``batch.kept``) and the complete
inputs (``batch.complete``, TFR-Net's reconstruction targets). A model reads ``batch.text``,
``batch.audio`` and ``batch.vision`` as always. The file's precomputed text features (models
without a text encoder) lose the dropped tokens' vectors (zeros), as audio and vision frames.

Where it applies: a run's training, validation and test splits (run settings ``missing_rate``
and ``missing_seed``, :func:`run_rates`) and ``msakit evaluate`` (the checkpoint's settings, or
``--missing-rates``); never ``predict``, which reads a file as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from msakit.data.mmsa import FeatureFile, SplitData

if TYPE_CHECKING:  # batching imports this module (collate applies the masks)
    from msakit.data.batching import Batch

UNK = 100
"""[UNK] in bert-base-uncased's and bert-base-chinese's vocabularies (MMSA's constant)."""
MODALITIES = ("text", "audio", "vision")


@dataclass(frozen=True)
class MissingRates:
    """The share of valid positions dropped per modality and the seed of each draw (MMSA's
    ``missing_rate`` and ``missing_seed``; its default: 0.2 and 1111 for each)."""

    text: float = 0.2
    audio: float = 0.2
    vision: float = 0.2
    seeds: tuple[int, int, int] = (1111, 1111, 1111)

    @classmethod
    def of(cls, rates: Mapping[str, float], seed: int) -> MissingRates:
        """The rates of a mapping {modality: rate} (a run's ``missing_rate``), every modality
        drawn with ``seed`` (MMSA's configurations give each the same seed)."""
        return cls(**{m: float(rates[m]) for m in MODALITIES}, seeds=(seed, seed, seed))

    @property
    def drops(self) -> bool:
        """Whether any modality loses positions (a rate above 0)."""
        return any(getattr(self, m) > 0 for m in MODALITIES)


def run_rates(config: Any) -> MissingRates:
    """The missing-modality rates of a run (a :class:`msakit.config.RunConfig`: its
    ``missing_rate`` and ``missing_seed``)."""
    return MissingRates.of(config.missing_rate, config.missing_seed)


def _draw(valid: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """MMSA's draw: 1 where a valid position (of the 0/1 ``valid``) is kept, as float64."""
    return (np.random.RandomState(seed).uniform(size=valid.shape) > rate) * valid


def kept_positions(split, rates: MissingRates) -> dict[str, np.ndarray]:
    """{"text" | "audio" | "vision": (N, L) float64 0/1} for a split
    (:class:`msakit.data.mmsa.SplitData`): the positions that stay, as MMSA's ``generate_m``.

    A text row without padding keeps its last position as the [SEP] (MMSA's ``argmin`` of the
    mask is 0 there, and position -1 the last)."""
    text_valid = split.text_bert[:, 1].astype(np.float64)
    text = _draw(text_valid, rates.text, rates.seeds[0])
    rows = np.arange(len(text))
    text[rows, 0] = 1.0
    text[rows, np.argmin(text_valid, axis=1) - 1] = 1.0
    kept = {"text": text}
    for i, m in enumerate(MODALITIES[1:], start=1):
        frames = np.arange(getattr(split, m).shape[1])
        valid = (frames[None, :] < getattr(split, f"{m}_lengths")[:, None]).astype(np.float64)
        kept[m] = _draw(valid, getattr(rates, m), rates.seeds[i])
    return kept


def with_missing_split(split: SplitData, rates: MissingRates) -> SplitData:
    """``split`` (arrays shared, not copied) with the masks of ``rates`` (as booleans), which
    :func:`msakit.data.batching.collate` applies to every batch; without a rate above 0, the
    split without masks."""
    if not rates.drops:
        return dataclasses.replace(split, kept=None)
    kept = kept_positions(split, rates)
    return dataclasses.replace(split, kept={m: kept[m] > 0 for m in MODALITIES})


def with_missing_file(features: FeatureFile, rates: MissingRates) -> FeatureFile:
    """Every split of ``features`` with the masks of ``rates`` (:func:`with_missing_split`)."""
    return dataclasses.replace(features, splits={
        name: with_missing_split(split, rates) for name, split in features.splits.items()})


def with_missing(batch: Batch, kept: dict[str, np.ndarray]) -> Batch:
    """``batch``, samples ``batch.index`` of the split whose masks ``kept`` holds, with the
    dropped positions removed: a dropped token's id [UNK] (MMSA's formula: kept ids, UNK where
    a valid token was dropped), a dropped frame (and a dropped token's precomputed text
    features) zeros; ``kept`` holds the (B, L) float masks, cut to the batch's (possibly
    trimmed) lengths, and ``complete`` the inputs before anything was dropped."""
    rows = batch.index.numpy()
    lengths = {"text": batch.text.size(2), "audio": batch.audio.size(1),
               "vision": batch.vision.size(1)}
    masks = {m: torch.from_numpy(np.ascontiguousarray(kept[m][rows, :lengths[m]]))
             .to(torch.float32) for m in MODALITIES}
    dropped = (batch.text[:, 1] != 0) & (masks["text"] == 0)
    text = batch.text.clone()
    text[:, 0] = torch.where(dropped, torch.full_like(text[:, 0], UNK), text[:, 0])
    changes: dict[str, Any] = {"text": text}
    for m in MODALITIES[1:]:
        x = batch.sequence(m)
        changes[m] = x * masks[m].to(x.dtype).unsqueeze(-1)
    complete = {"text": batch.text, "audio": batch.audio, "vision": batch.vision}
    if batch.text_features is not None:
        complete["text_features"] = batch.text_features
        changes["text_features"] = batch.text_features * masks["text"].to(
            batch.text_features.dtype).unsqueeze(-1)
    return batch.replace(**changes, kept=masks, complete=complete)
