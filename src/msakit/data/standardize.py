"""Per-feature statistics of a training split, for the run setting ``standardize``.

Features written in their own units (``msakit extract``'s eGeMAPS formant frequencies in Hz,
up to ~4000, beside values below 1, as in MMSA-FET's files) train much more slowly than
standardised ones (docs/readings.md, "Extracted features"). With ``standardize=true`` every
audio and vision dimension is mapped to ``(x - mean) / std`` with the mean and (population)
standard deviation of that dimension over the training split's valid frames
(``[0, length)``; padding is ignored); audio ``-inf`` (MMSA's silence) counts as 0, as batches
read it. A dimension whose deviation is tiny (at most a millionth of its mean's magnitude, the
resolution of float32, or below 1e-12) carries no information and maps to 0.

The statistics are streamed over the split in chunks of samples (a memory-mapped file is read
chunk by chunk with plain file reads, as validation reads it), accumulated in float64 with
Chan's pairwise update of (count, mean, squared deviations), and computed once per run. The
model keeps them in its state (:class:`msakit.models.base.FeatureStandardizer`), so a
checkpoint alone reproduces its predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msakit.data.mmsa import SplitData
from msakit.data.safe_format import is_mapped, read_rows

__all__ = ["FeatureStats", "feature_stats"]

CHUNK_ELEMENTS = 1 << 22
"""Values read at a time (a chunk holds at least one sample)."""
RELATIVE_TINY = 1e-6
ABSOLUTE_TINY = 1e-12


@dataclass(frozen=True)
class FeatureStats:
    """(D,) float64 mean and scale (1 / std, 0 for a constant dimension) of audio and vision."""

    audio_mean: np.ndarray
    audio_scale: np.ndarray
    vision_mean: np.ndarray
    vision_scale: np.ndarray


def feature_stats(split: SplitData) -> FeatureStats:
    """The standardisation of ``split`` (a training split): see the module docstring."""
    audio_mean, audio_std = moments(split.audio, split.audio_lengths, zero_neg_inf=True)
    vision_mean, vision_std = moments(split.vision, split.vision_lengths)
    return FeatureStats(audio_mean, scale_of(audio_mean, audio_std),
                        vision_mean, scale_of(vision_mean, vision_std))


def scale_of(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """1 / std, and 0 where the deviation is tiny (see the module docstring)."""
    tiny = np.maximum(RELATIVE_TINY * np.abs(mean), ABSOLUTE_TINY)
    informative = std > tiny
    return np.where(informative, 1.0 / np.where(informative, std, 1.0), 0.0)


def moments(
    arr: np.ndarray, lengths: np.ndarray, *, zero_neg_inf: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(D,) float64 mean and population standard deviation of ``arr`` (N, L, D) over the valid
    frames ``arr[i, :lengths[i]]``, streamed in chunks of samples; zeros without any frame."""
    n, frames, width = arr.shape
    count, mean, squares = 0, np.zeros(width), np.zeros(width)
    step = max(1, CHUNK_ELEMENTS // max(1, frames * width))
    positions = np.arange(frames)
    for start in range(0, n, step):
        chunk = read_rows(arr, start, start + step) if is_mapped(arr) else arr[start:start + step]
        valid = positions[None, :] < np.asarray(lengths[start:start + len(chunk)])[:, None]
        x = chunk[valid].astype(np.float64)  # (frames in the chunk, D)
        if zero_neg_inf:
            x[np.isneginf(x)] = 0.0
        if len(x) == 0:
            continue
        chunk_mean = x.mean(axis=0)
        chunk_squares = ((x - chunk_mean) ** 2).sum(axis=0)
        total = count + len(x)
        delta = chunk_mean - mean
        mean = mean + delta * (len(x) / total)
        squares = squares + chunk_squares + delta**2 * (count * len(x) / total)
        count = total
    std = np.sqrt(squares / count) if count else np.zeros(width)
    return mean, std
