"""Predictions without labels: clips held in memory, and the predictions CSV.

``msakit.predict(checkpoint, arrays)`` takes one or a few clips as a dict of arrays in MMSA's
layout (see :mod:`msakit.data.mmsa`), the same keys a feature file's split has, labels left
out:

================================  ===========================  ==================================
key                               shape                        notes
================================  ===========================  ==================================
``text_bert`` or ``raw_text``     (N, 3, Lt), or N strings     ``raw_text`` is tokenised with the
                                                               checkpoint's text encoder
``audio``                         (N, La, Da)                  Da: the checkpoint's audio width
``vision``                        (N, Lv, Dv)                  Dv: the checkpoint's vision width
``audio_lengths``, ``vision_lengths``  (N,), optional          default: every frame is valid
``id``                            N strings, optional          default ``0, 1, ...``
``regression_labels``             (N,), optional               carried to the ``label`` column
================================  ===========================  ==================================

One clip may leave out the leading N: ``audio`` (La, Da), ``vision`` (Lv, Dv), ``text_bert``
(3, Lt) or ``raw_text`` one string. Sequences shorter than the checkpoint's padded lengths are
padded with zeros (the frames beyond a length are never read); longer ones are refused only by
models that read padded positions (:meth:`msakit.models.base.MSAModel.reads_padding`). Every
value is checked as a file is (:func:`msakit.data.mmsa.validate_arrays`): one
:class:`~msakit.core.errors.MsakitError` line naming the key and the sample.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.files import write_text_atomic
from msakit.data.mmsa import SplitData, validate_arrays
from msakit.data.tokens import tokenize
from msakit.encoders.text import check_text_length, load_tokenizer
from msakit.training.checkpoints import LoadedCheckpoint

SOURCE = "arrays"
"""How error messages name the in-memory clips."""
ARRAY_KEYS = ("text_bert", "raw_text", "audio", "vision", "audio_lengths", "vision_lengths", "id",
              "regression_labels")
_SEQUENCES = {"text_bert": ("text", 2, 3), "audio": ("audio", 1, 3), "vision": ("vision", 1, 3)}
"""key: (Dims length prefix, axis of the sequence, ndim with N)."""


def split_from_arrays(arrays: Mapping[str, Any], ckpt: LoadedCheckpoint) -> SplitData:
    """The clips of ``arrays`` (see the module docstring) as a validated split that
    ``ckpt``'s model can read."""
    if not isinstance(arrays, Mapping):
        raise MsakitError(f"{SOURCE}: expected a dict of arrays, got {type(arrays).__name__}")
    unknown = [k for k in arrays if k not in ARRAY_KEYS]
    if unknown:
        raise MsakitError(
            f"{SOURCE}: unknown key {unknown[0]!r} (expected text_bert or raw_text, audio, "
            "vision; optionally audio_lengths, vision_lengths, id, regression_labels)"
        )
    for key in ("audio", "vision"):
        if key not in arrays:
            raise MsakitError(f"{SOURCE}: key '{key}' is missing")
    if "text_bert" not in arrays and "raw_text" not in arrays:
        raise MsakitError(f"{SOURCE}: key 'text_bert' is missing (or give the texts as raw_text)")
    d = _batched({k: _as_array(k, v) if k in _SEQUENCES else v for k, v in arrays.items()})
    if "text_bert" not in d:
        d["text_bert"] = _tokenize(d["raw_text"], ckpt)
    n = _count(d)
    for key, axis in (("audio_lengths", "audio"), ("vision_lengths", "vision")):
        d.setdefault(key, np.full(n, np.shape(d[axis])[1], dtype=np.int64))
    _check_widths(d, ckpt)
    vocab = ckpt.state["text_encoder_config"].get("vocab_size")
    vocab = int(vocab) if isinstance(vocab, int) and vocab > 0 else None
    split = validate_arrays(d, SOURCE, vocab_size=vocab)
    check_text_length(split.text_bert.shape[2], ckpt.state["text_encoder_config"], SOURCE,
                      ckpt.config.text_encoder)
    _pad_to_checkpoint(split, ckpt)
    return split


def _as_array(key: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise MsakitError(f"{SOURCE}: key '{key}': not a numeric array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise MsakitError(f"{SOURCE}: key '{key}': expected numbers, got values of dtype "
                          f"{arr.dtype}")
    return arr


def _batched(d: dict[str, Any]) -> dict[str, Any]:
    """One clip without the leading N gets it (a text string, 2-D audio and vision)."""
    if not (isinstance(d.get("raw_text"), str) or np.ndim(d["audio"]) == 2):
        return d
    for key, (_, _, ndim) in _SEQUENCES.items():
        if key in d and np.ndim(d[key]) == ndim - 1:
            d[key] = np.asarray(d[key])[None]
    for key in ("raw_text", "id", "audio_lengths", "vision_lengths", "regression_labels"):
        if key in d and np.ndim(d[key]) == 0:
            d[key] = [d[key]]
    return d


def _count(d: dict[str, Any]) -> int:
    """N, the number of clips (the first dimension of text_bert)."""
    shape = np.shape(d["text_bert"])
    if len(shape) != 3:
        raise MsakitError(f"{SOURCE}: key 'text_bert': expected (N, 3, Lt) token ids, attention "
                          f"mask and segment ids, got shape {shape}")
    if shape[0] == 0:
        raise MsakitError(f"{SOURCE}: no clips (key 'text_bert' has 0 samples)")
    for key in ("audio", "vision"):
        if np.ndim(d[key]) != 3:
            raise MsakitError(f"{SOURCE}: key '{key}': expected a 3-D array (N, frames, "
                              f"features), got shape {np.shape(d[key])}")
    return int(shape[0])


def _tokenize(texts: Any, ckpt: LoadedCheckpoint) -> np.ndarray:
    """(N, 3, Lt) token ids of ``texts`` by the checkpoint's tokenizer, Lt its text length."""
    if isinstance(texts, (str, bytes)) or not all(isinstance(t, str) for t in texts):
        raise MsakitError(f"{SOURCE}: key 'raw_text': expected a list of strings (one per clip)")
    for i, text in enumerate(texts):
        if not text.strip():
            raise MsakitError(f"{SOURCE}: key 'raw_text': empty text at sample {i}")
    tokenizer = load_tokenizer(ckpt.config.text_encoder)
    if tokenizer is None:
        raise MsakitError(
            f"{SOURCE}: key 'raw_text': the checkpoint's text encoder "
            f"{ckpt.config.text_encoder!r} has no tokenizer here; give text_bert (token ids) "
            "instead"
        )
    return tokenize(tokenizer, list(texts), ckpt.dims.text_len)


def _check_widths(d: dict[str, Any], ckpt: LoadedCheckpoint) -> None:
    for key, want in (("audio", ckpt.dims.audio), ("vision", ckpt.dims.vision)):
        got = np.shape(d[key])[2]
        if got != want:
            raise MsakitError(f"{SOURCE}: key '{key}': feature width {got} does not match the "
                              f"checkpoint's {want}")


def _pad_to_checkpoint(split: SplitData, ckpt: LoadedCheckpoint) -> None:
    """Zero-pad text, audio and vision to the checkpoint's padded lengths (when shorter)."""
    reads_padding = ckpt.model.reads_padding()
    for key, (prefix, axis, _) in _SEQUENCES.items():
        arr = getattr(split, key)
        want = getattr(ckpt.dims, f"{prefix}_len")
        have = arr.shape[axis]
        if have > want and reads_padding:
            raise MsakitError(
                f"{SOURCE}: key '{key}': {have} steps, more than the {want} this "
                f"{ckpt.config.model_name} model reads (it reads padded positions); cut the clip"
            )
        if have < want:
            widths = [(0, 0)] * arr.ndim
            widths[axis] = (0, want - have)
            setattr(split, key, np.pad(arr, widths))


# --------------------------------------------------------------------------- the CSV
def prediction_rows(
    split: SplitData, predictions: np.ndarray
) -> list[dict[str, Any]]:
    """``{"id", "prediction"}`` per sample (6 significant digits), with ``"label"`` when the
    split has labels."""
    rows = []
    for i, p in enumerate(predictions):
        row: dict[str, Any] = {"id": str(split.ids[i]), "prediction": float(f"{p:.6g}")}
        if split.labelled:
            row["label"] = float(f"{split.labels[i]:.6g}")
        rows.append(row)
    return rows


def write_predictions(rows: list[dict[str, Any]], out: str | os.PathLike) -> None:
    """``rows`` as CSV: ``id,prediction`` and, when the rows have labels, ``label``."""
    write_text_atomic(out, predictions_text(rows))


def predictions_text(rows: list[dict[str, Any]], fmt: str = "csv") -> str:
    """Prediction rows (one dict per sample or clip, the same keys in each) as CSV (a header of
    the keys; numbers to 6 significant digits) or JSON (a list of objects)."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    columns = list(rows[0]) if rows else ["id", "prediction"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v
                         for v in (row[c] for c in columns)])
    return buf.getvalue()
