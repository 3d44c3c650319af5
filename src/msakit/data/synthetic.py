"""Synthetic feature files in exactly the MMSA format, with a learnable sentiment signal.

The real data sets cannot be downloaded on the project's machines, so everything is tested on
files made here. Each sample has a latent sentiment ``s ~ U(-1, 1)`` (exactly 0 for about 5% of
the samples) that every modality carries:

* text: ``round(4·|s|)`` sentiment words whose polarity follows ``sign(s)`` (each word flipped
  with probability 0.1) among random filler tokens, between ``[CLS]`` and ``[SEP]``;
* audio and vision: feature 0 of every valid frame is ``s + u`` plus frame noise (σ = 0.5),
  where ``u ~ N(0, 0.3)`` is drawn once per sample and modality, so no single modality
  determines the label and fusing them helps; the other features are noise. With
  ``shared_latent=True`` these features are instead drawn in a ``LATENT_DIM``-wide latent space
  (latent 0 carries ``s + u``) and mapped to the data set's width by a fixed random matrix
  (:func:`latent_mixing`, the same for every file of that shape, different across shapes),
  plus a little isotropic noise: files of different shapes then share a label-relevant factor
  that reaches them through different input widths (the cross-dataset setting of ConKI's
  stage 2, docs/readings.md);
* label: ``H · clip(s + ε, -1, 1)`` with ε ~ N(0, 0.05), rounded to multiples of 0.2 like the
  real annotations (H = 3 for MOSI/MOSEI, 1 for SIMS); SIMS also gets unimodal labels
  ``regression_labels_T/A/V`` from ``s`` plus larger, per-modality noise.

Like the real files: ``text_bert`` is float64, features and labels float32, lengths python
lists, ``id``/``annotations`` object arrays; frames past a sample's length are
zeros, about 3% of the vision lengths are 0, a few lengths equal the padded length, and about
10% of the samples hold a few ``-inf`` in the last audio feature of valid frames (as COVAREP
features do; the reader sets them to 0, and the signal in feature 0 is untouched).

Token ids: MOSI/MOSEI use the bert-base-uncased vocabulary (size 30522; the sentiment words are
its real ids, e.g. good = 2204, bad = 2919; filler ids are drawn from its word-piece range
[1996, 29612)). SIMS uses the bert-base-chinese vocabulary size (21128) with ids drawn from
its single-character range [671, 7992); the SIMS sentiment ids are fixed arbitrary picks in that
range, not checked words (no Chinese vocabulary ships with the project). ``[CLS]`` = 101,
``[SEP]`` = 102 and padding 0 (mask 0) in both; segment ids are 0.

Unlike the real files, there is no ``raw_text``: the ids are random draws, not a tokenised
sentence, so no text could be re-tokenised into them, and a made-up transcript would rightly fail
msakit's vocabulary check (:func:`msakit.data.tokens.check_vocabulary`), which skips files without
``raw_text``. ``msakit retokenize --texts CSV`` gives a synthetic file real text and matching ids.

With ``text_features=True`` the file also holds ``text`` (N, Lt, 768) float32, the stand-in for
MMSA's frozen BERT features that TFN, LMF and MulT read: each token id's fixed random vector
(N(0, 1/4), drawn from a seed of the id alone, so every file agrees), whose feature 0 is moved by
+1 for the positive sentiment words and -1 for the negative ones (:func:`token_features`). It
is off by default: at 150 KB a sample it would dominate the file.

The output is deterministic for a seed, and each split depends only on the seed and its own
size.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from msakit.config.datasets import DATASETS, DatasetSpec, FileShape, synthetic_names
from msakit.core.errors import MsakitError
from msakit.core.files import write_atomic
from msakit.data.mmsa import SPLITS

PAD_ID, CLS_ID, SEP_ID = 0, 101, 102  # the same in bert-base-uncased and bert-base-chinese

# Real bert-base-uncased ids (checked against the vocabulary in tests/test_data.py).
ENGLISH_POSITIVE = {
    "good": 2204,
    "great": 2307,
    "love": 2293,
    "best": 2190,
    "happy": 3407,
    "beautiful": 3376,
    "perfect": 3819,
    "nice": 3835,
    "amazing": 6429,
    "excellent": 6581,
}
ENGLISH_NEGATIVE = {
    "bad": 2919,
    "poor": 3532,
    "hate": 5223,
    "worst": 5409,
    "sad": 6517,
    "terrible": 6659,
    "horrible": 9202,
    "awful": 9643,
    "boring": 11771,
    "disappointing": 15640,
}
# SIMS: arbitrary fixed ids in bert-base-chinese's single-character range (see module docstring).
CHINESE_POSITIVE_IDS = (1300, 1900, 2500, 3100, 3700, 4300, 4900, 5500, 6100, 6700)
CHINESE_NEGATIVE_IDS = (1600, 2200, 2800, 3400, 4000, 4600, 5200, 5800, 6400, 7000)
# Filler ids per language: bert-base-uncased's word pieces, bert-base-chinese's characters.
_FILLER_RANGES = {"en": (1996, 29612), "zh": (671, 7992)}

LABEL_STEP = 0.2  # labels are multiples of this, like the averaged human annotations
_LABEL_NOISE = 0.05
_UNIMODAL_NOISE = 0.2
_FEATURE_NOISE = 0.5  # per frame
_MODALITY_NOISE = 0.3  # per sample and modality
_WORDS_PER_UNIT = 4  # round(4·|s|) sentiment words
_WORD_FLIP = 0.1
_ZERO_SENTIMENT = 0.05
_ZERO_VISION = 0.03
_FULL_LENGTH = 0.02
# Clip durations ~ Beta(1.6, 4) (mean 0.29 of the longest clip), stretched so the longest
# clips reach the padded length.
_DURATION_SHAPE = (1.6, 4.0)
_DURATION_SCALE = 1.6
_NEG_INF_SAMPLES = 0.1
_MIN_TEXT_LEN = 8


def make_synthetic(
    like: str,
    n_train: int,
    n_valid: int,
    n_test: int,
    *,
    seed: int = 0,
    shared_latent: bool = False,
    text_features: bool = False,
) -> dict[str, dict[str, Any]]:
    """A feature-file dict shaped like the standard file of the named data set ``like``
    (any data set of :data:`msakit.config.datasets.DATASETS` with a standard file).

    Returns ``{"train": split, "valid": split, "test": split}`` in exactly the MMSA pickle
    format (see the module docstring for the planted signal, ``shared_latent``, the token
    ids and ``text_features``).
    """
    spec = _spec(like)
    sizes = (n_train, n_valid, n_test)
    for split, n in zip(SPLITS, sizes, strict=True):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise MsakitError(f"synthetic {like}: split '{split}' needs at least 1 sample, got {n}")
    seeds = np.random.SeedSequence(seed).spawn(len(SPLITS))
    mixing = (
        {m: latent_mixing(like, m) for m in ("audio", "vision")} if shared_latent else None
    )
    data = {
        split: _make_split(spec, split, n=int(n), rng=np.random.default_rng(child), mixing=mixing)
        for split, n, child in zip(SPLITS, sizes, seeds, strict=True)
    }
    if text_features:
        for arrays in data.values():
            arrays["text"] = token_features(arrays["text_bert"][:, 0],
                                            english=spec.language == "en")
    return data


TEXT_FEATURE_DIM = 768
"""Width of the ``text`` features (MMSA's frozen BERT-base outputs)."""
_TEXT_FEATURE_SEED = 20170907
_TEXT_FEATURE_SCALE = 0.5


def token_features(token_ids: np.ndarray, *, english: bool) -> np.ndarray:
    """(N, Lt) token ids -> (N, Lt, TEXT_FEATURE_DIM) float32 features (module docstring)."""
    positive = set(ENGLISH_POSITIVE.values()) if english else set(CHINESE_POSITIVE_IDS)
    negative = set(ENGLISH_NEGATIVE.values()) if english else set(CHINESE_NEGATIVE_IDS)
    unique, inverse = np.unique(token_ids.astype(np.int64), return_inverse=True)
    table = np.empty((len(unique), TEXT_FEATURE_DIM), dtype=np.float32)
    for row, token in enumerate(unique.tolist()):
        rng = np.random.default_rng([_TEXT_FEATURE_SEED, token])
        table[row] = _TEXT_FEATURE_SCALE * rng.standard_normal(TEXT_FEATURE_DIM)
        table[row, 0] += 1.0 if token in positive else -1.0 if token in negative else 0.0
    return table[inverse.reshape(token_ids.shape)]


LATENT_DIM = 4
"""Width of the shared audio/vision latent space of ``shared_latent`` files."""
_LATENT_OUTPUT_NOISE = 0.1
_MIXING_SEED = 20230709


def latent_mixing(like: str, modality: str) -> np.ndarray:
    """The fixed (LATENT_DIM, width) float32 matrix mapping the shared latent to the raw
    ``modality`` ("audio" or "vision") features of ``like``-shaped files: entries N(0, 1/K),
    drawn from a seed derived from the shape's name and the modality only."""
    shape = _file_shape(_spec(like))
    width = shape.audio_dim if modality == "audio" else shape.vision_dim
    key = [_MIXING_SEED, *like.lower().encode(), *modality.encode()]
    rng = np.random.default_rng(key)
    return (rng.standard_normal((LATENT_DIM, width)) / np.sqrt(LATENT_DIM)).astype(np.float32)


def write_synthetic(
    path: str | os.PathLike[str],
    like: str,
    sizes: tuple[int, int, int] | list[int],
    *,
    seed: int = 0,
    shared_latent: bool = False,
    frames: dict[str, int] | None = None,
    text_features: bool = False,
) -> Path:
    """Write :func:`make_synthetic`'s output (``sizes``: train, valid and test samples) to
    ``path`` as an MMSA pickle; returns the path.

    ``frames`` (e.g. ``{"audio": 40, "vision": 30}``) cuts audio/vision to that many frames:
    the real feature sizes and data contract at a fraction of the cost (the planted signal sits
    in every valid frame, so it survives the cut).
    """
    data = make_synthetic(like, *sizes, seed=seed, shared_latent=shared_latent,
                          text_features=text_features)
    for split in data.values():
        for m, count in (frames or {}).items():
            split[m] = split[m][:, :count]
            split[f"{m}_lengths"] = [min(int(x), count) for x in split[f"{m}_lengths"]]
    return write_atomic(path, lambda f: pickle.dump(data, f, protocol=4))


def _spec(like: str) -> DatasetSpec:
    spec = DATASETS.get(like.lower()) if isinstance(like, str) else None
    if spec is None or spec.shape is None:
        raise MsakitError(f"unknown dataset {like!r}; choose one of {', '.join(synthetic_names())}")
    return spec


def _file_shape(spec: DatasetSpec) -> FileShape:
    assert spec.shape is not None  # _spec admits only data sets with a standard file
    return spec.shape


def _on_grid(values: np.ndarray, bound: float) -> np.ndarray:
    """Round to multiples of LABEL_STEP inside [-bound, bound], with no -0.0."""
    grid = np.round(np.clip(values, -bound, bound) / LABEL_STEP) * LABEL_STEP
    return (np.round(grid, 1) + 0.0).astype(np.float32)


def _durations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Each clip's duration as a share of the longest, right-skewed like real utterances."""
    return rng.beta(_DURATION_SHAPE[0], _DURATION_SHAPE[1], n)


def _lengths(
    rng: np.random.Generator, share: np.ndarray, size: int, zero_fraction: float
) -> np.ndarray:
    """Valid lengths in [1, size] that follow the clip durations (a few exactly ``size``,
    some 0 if asked): audio and vision frames grow with the clip, as in the real files."""
    n = len(share)
    jitter = rng.uniform(0.85, 1.15, n)
    lengths = np.clip(np.ceil(share * jitter * size * _DURATION_SCALE), 1, size).astype(np.int64)
    lengths[rng.random(n) < _FULL_LENGTH] = size
    if zero_fraction:
        lengths[rng.random(n) < zero_fraction] = 0
    return lengths


def _features(
    rng: np.random.Generator,
    sentiment: np.ndarray,
    lengths: np.ndarray,
    *,
    size: int,
    dim: int,
    mixing: np.ndarray | None = None,
) -> np.ndarray:
    """(N, size, dim) float32: noise, feature 0 shifted by the sentiment, zeros past lengths.

    With ``mixing`` (K, dim), that is done in the K-wide latent space, which ``mixing`` maps to
    the ``dim`` features, and a little isotropic noise is added.
    """
    shift = sentiment + rng.normal(0.0, _MODALITY_NOISE, len(sentiment))
    width = dim if mixing is None else mixing.shape[0]
    out = rng.standard_normal((len(sentiment), size, width), dtype=np.float32)
    out *= _FEATURE_NOISE
    out[:, :, 0] += shift[:, None].astype(np.float32)
    if mixing is not None:
        out = out @ mixing
        out += _LATENT_OUTPUT_NOISE * rng.standard_normal(out.shape, dtype=np.float32)
    out *= (np.arange(size)[None, :] < lengths[:, None])[:, :, None]
    return out


def _labels(
    spec: DatasetSpec, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The latent sentiment s of n samples and their labels on the data set's grid."""
    sentiment = rng.uniform(-1.0, 1.0, n)
    sentiment[rng.random(n) < _ZERO_SENTIMENT] = 0.0
    bound = spec.label_scale
    labels = _on_grid(bound * (sentiment + rng.normal(0.0, _LABEL_NOISE, n)), bound)
    labels[sentiment == 0.0] = 0.0
    return sentiment, labels


def _text_bert(
    spec: DatasetSpec, rng: np.random.Generator, sentiment: np.ndarray, share: np.ndarray
) -> np.ndarray:
    """(N, 3, Lt) float64 MMSA text rows: sentiment words among filler ids, [CLS] ... [SEP]."""
    english = spec.language == "en"
    positive = np.array(list(ENGLISH_POSITIVE.values()) if english else CHINESE_POSITIVE_IDS)
    negative = np.array(list(ENGLISH_NEGATIVE.values()) if english else CHINESE_NEGATIVE_IDS)
    low, high = _FILLER_RANGES[spec.language]
    filler = np.setdiff1d(np.arange(low, high), np.concatenate([positive, negative]))
    n, lt = len(sentiment), _file_shape(spec).text_len
    text_bert = np.zeros((n, 3, lt), dtype=np.float64)
    low_text = min(_MIN_TEXT_LEN, lt)
    text_lengths = np.clip(
        np.round(low_text + share * _DURATION_SCALE * (lt - low_text)), low_text, lt
    ).astype(np.int64)
    for i in range(n):
        length = int(text_lengths[i])
        content = rng.choice(filler, length - 2)
        count = min(int(round(_WORDS_PER_UNIT * abs(sentiment[i]))), length - 2)
        is_positive = (rng.random(count) >= _WORD_FLIP) == (sentiment[i] > 0)
        chosen = np.where(is_positive, rng.choice(positive, count), rng.choice(negative, count))
        content[rng.choice(length - 2, count, replace=False)] = chosen
        text_bert[i, 0, :length] = [CLS_ID, *content, SEP_ID]
        text_bert[i, 1, :length] = 1
    return text_bert


def _audio_vision(
    shape: FileShape,
    rng: np.random.Generator,
    *,
    sentiment: np.ndarray,
    share: np.ndarray,
    mixing: dict[str, np.ndarray],
) -> dict[str, Any]:
    """audio, vision and their lengths (lists), with COVAREP-like -inf in some audio frames."""
    audio_lengths = _lengths(rng, share, shape.audio_len, 0.0)
    vision_lengths = _lengths(rng, share, shape.vision_len, _ZERO_VISION)
    audio = _features(rng, sentiment, audio_lengths, size=shape.audio_len, dim=shape.audio_dim,
                      mixing=mixing.get("audio"))
    vision = _features(rng, sentiment, vision_lengths, size=shape.vision_len,
                       dim=shape.vision_dim, mixing=mixing.get("vision"))
    if shape.audio_dim > 1:
        for i in np.flatnonzero(rng.random(len(sentiment)) < _NEG_INF_SAMPLES):
            frames = rng.choice(audio_lengths[i], min(3, audio_lengths[i]), replace=False)
            audio[i, frames, -1] = -np.inf
    return {"audio": audio, "vision": vision, "audio_lengths": audio_lengths.tolist(),
            "vision_lengths": vision_lengths.tolist()}


def _make_split(
    spec: DatasetSpec,
    split: str,
    *,
    n: int,
    rng: np.random.Generator,
    mixing: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """One split of ``spec``'s shapes: ``n`` samples drawn from ``rng`` (see the module
    docstring)."""
    sentiment, labels = _labels(spec, rng, n)
    share = _durations(rng, n)
    text_bert = _text_bert(spec, rng, sentiment, share)
    ids = np.array([f"{split}{i // 4:04d}$_{i % 4 + 1}" for i in range(n)], dtype=object)
    features = _audio_vision(_file_shape(spec), rng, sentiment=sentiment, share=share,
                             mixing=mixing or {})
    polarity = np.sign(labels)
    data: dict[str, Any] = {
        "id": ids,
        "text_bert": text_bert,
        **features,
        "annotations": np.array(
            [{1.0: "Positive", -1.0: "Negative"}.get(float(p), "Neutral") for p in polarity],
            dtype=object,
        ),
        "classification_labels": (polarity + 1).astype(np.float32),
        "regression_labels": labels,
    }
    if spec.unimodal_labels:
        for modality in ("T", "A", "V"):
            noisy = sentiment + rng.normal(0.0, _UNIMODAL_NOISE, n)
            data[f"regression_labels_{modality}"] = _on_grid(spec.label_scale * noisy,
                                                             spec.label_scale)
    return data
