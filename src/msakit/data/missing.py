"""MMSA's missing-modality protocol (its ``missingTask``, TFR-Net's data): random positions of
each modality dropped at a given rate, the same positions in every run.

MMSA's ``MMDataset.generate_m`` (``data_loader.py``), per split and modality, with the modality's
seed: ``np.random.seed(seed)``, one uniform draw per padded position, a valid position kept
where its draw exceeds the rate. Text keeps its first token ([CLS]) and the last valid one
([SEP]); a dropped token becomes [UNK] (id 100 in both BERT vocabularies MMSA uses); a dropped
audio or vision frame becomes zeros. Audio and vision validity comes from their lengths (an
aligned file's: the text's). MMSA re-seeds for every split, so train, valid and test draw from
the same stream.

:func:`kept_positions` computes the kept masks of a whole split once (small (N, L) arrays);
:func:`with_missing` applies them to a collated batch of that split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


def with_missing(batch: Batch, kept: dict[str, np.ndarray],
                 indices: np.ndarray) -> dict[str, torch.Tensor]:
    """The tensors of ``batch`` (:meth:`Batch.as_dict`), the samples ``indices`` of the split
    whose masks ``kept`` holds, with ``{m}_kept`` (B, L) float (1 = present), ``text_missing``
    (B, 3, L) with the dropped tokens' ids set to [UNK], ``audio_missing`` / ``vision_missing``
    with the dropped frames zeroed. The masks are cut to the batch's (possibly trimmed)
    lengths."""
    out = batch.as_dict()
    for m in MODALITIES:
        length = batch.text.size(2) if m == "text" else batch.sequence(m).size(1)
        out[f"{m}_kept"] = torch.from_numpy(kept[m][indices, :length]).to(torch.float32)
    text = batch.text.clone()
    valid = text[:, 1].to(torch.float32)
    keep = out["text_kept"]
    # MMSA's formula: kept ids, UNK where a valid token was dropped.
    text[:, 0] = (keep * text[:, 0] + UNK * (valid - keep)).to(text.dtype)
    out["text_missing"] = text
    for m in MODALITIES[1:]:
        x = batch.sequence(m)
        out[f"{m}_missing"] = x * out[f"{m}_kept"].to(x.dtype).unsqueeze(-1)
    return out
