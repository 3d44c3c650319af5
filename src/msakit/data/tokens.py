"""Token ids and the tokenizer they come from: a vocabulary check and ``msakit retokenize``.

MMSA's ``text_bert`` holds token ids written by one tokenizer (bert-base-uncased for MOSI/MOSEI,
bert-base-chinese for SIMS). An encoder with another vocabulary reads the same ids as other word
pieces, and nothing fails: the ids merely mean something else. Two tools guard against that:

* :func:`check_vocabulary` re-tokenises a few ``raw_text`` entries with the encoder's tokenizer and
  compares the word pieces with the file's (the ids where the attention mask is 1, special tokens
  left out, as multisets, so a rare tokenizer-version difference in one word does not count as
  another vocabulary). Training refuses a file whose pieces mostly disagree, unless
  ``allow_vocab_mismatch`` is set. Files without ``raw_text`` cannot be checked (msakit's
  synthetic files have none: their ids are random draws, not a tokenised sentence).
* :func:`retokenize` writes a copy of a feature file whose ``text_bert`` is a given tokenizer
  applied to ``raw_text``, or to the texts of a CSV ``id,text`` (e.g. English translations of
  SIMS), in MMSA's layout: ids, mask, segment ids, ``[CLS] ... [SEP]``, padded to the file's text
  length or ``max_length``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.safety import check_distinct_output
from msakit.data.mmsa import METADATA_KEYS, SPLITS, FeatureFile, _read, _validate
from msakit.data.safe_format import save_npz, split_to_mmsa
from msakit.data.tables import read_csv

__all__ = ["check_vocabulary", "piece_agreement", "retokenize", "read_texts_csv", "tokenize"]

CHECKED_SAMPLES = 16
"""``raw_text`` entries re-tokenised by :func:`check_vocabulary` (spread over the train split)."""
MIN_AGREEMENT = 0.5
"""Below this mean share of agreeing word pieces the file's ids come from another vocabulary
(the same tokenizer gives 1.0 up to version differences; another vocabulary gives near 0)."""


def tokenize(tokenizer: Any, texts: list[str], length: int) -> np.ndarray:
    """(N, 3, length) int64 in MMSA's ``text_bert`` layout: token ids, attention mask, segment
    ids of ``[CLS] text [SEP]``, truncated and padded (with 0, mask 0) to ``length``."""
    encoded = tokenizer(
        list(texts), max_length=length, truncation=True, padding="max_length",
        return_attention_mask=True, return_token_type_ids=True,
    )
    return np.stack(
        [
            np.asarray(encoded["input_ids"], dtype=np.int64),
            np.asarray(encoded["attention_mask"], dtype=np.int64),
            np.asarray(encoded["token_type_ids"], dtype=np.int64),
        ],
        axis=1,
    )


def piece_agreement(file_ids: np.ndarray, own_ids: np.ndarray, special: set[int]) -> float:
    """Share of word pieces two id sequences have in common (multisets, special ids left out):
    ``|A ∩ B| / max(|A|, |B|)``, 1.0 when both are empty."""
    a = Counter(int(i) for i in file_ids if int(i) not in special)
    b = Counter(int(i) for i in own_ids if int(i) not in special)
    size = max(sum(a.values()), sum(b.values()))
    return 1.0 if size == 0 else sum((a & b).values()) / size


def check_vocabulary(
    features: FeatureFile, tokenizer: Any, encoder_name: str, *, samples: int = CHECKED_SAMPLES
) -> float | None:
    """Raise :class:`MsakitError` (one line) when ``features``' token ids do not come from
    ``tokenizer``; return the mean agreement, or None when the file has no ``raw_text``.

    The first split with ``raw_text`` is checked: ``samples`` non-empty entries spread evenly
    over it are re-tokenised (truncated to the file's text length) and their word pieces compared
    with the file's (:func:`piece_agreement`).
    """
    for name in SPLITS:
        split = features.splits.get(name)
        if split is None or split.raw_text is None:
            continue
        filled = np.flatnonzero(np.char.str_len(split.raw_text.astype(str)) > 0)
        if len(filled) == 0:
            continue
        chosen = filled[np.unique(np.linspace(0, len(filled) - 1, min(samples, len(filled)))
                                  .round().astype(int))]
        own = tokenize(tokenizer, [str(split.raw_text[i]) for i in chosen], features.text_len)
        special = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
        scores = []
        for row, i in enumerate(chosen):
            mine = split.text_bert[i, 0][split.text_bert[i, 1] == 1]
            theirs = own[row, 0][own[row, 1] == 1]
            scores.append(piece_agreement(mine, theirs, special))
        mean = float(np.mean(scores))
        if mean < MIN_AGREEMENT:
            worst = int(chosen[int(np.argmin(scores))])
            raise MsakitError(
                f"{features.path}: the token ids of split '{name}' do not come from the "
                f"tokenizer of text encoder {encoder_name!r}: re-tokenising {len(chosen)} "
                f"raw_text entries gives {mean:.0%} of the same word pieces (sample {worst}, id "
                f"'{split.ids[worst]}'); pass the encoder whose tokenizer wrote the file "
                "(--text-encoder NAME|DIR; MMSA's: bert-base-uncased for MOSI/MOSEI, "
                "bert-base-chinese for SIMS), rewrite the ids with 'msakit retokenize' (e.g. "
                "--texts with English translations of SIMS, ConKI's route), or --set "
                "allow_vocab_mismatch=true"
            )
        return mean
    return None


# --------------------------------------------------------------------------- retokenize
def read_texts_csv(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{id: text}`` from a CSV with columns ``id`` and ``text`` (header line first).

    Raises :class:`MsakitError` (one line, with the CSV line number) on a missing file or
    column, a duplicate id or an empty text.
    """
    p = Path(path)
    rows = read_csv(p)
    columns = rows[0] if rows else []
    if "id" not in columns or "text" not in columns:
        found = ", ".join(columns) or "none"
        raise MsakitError(f"{p}: expected columns 'id' and 'text' (found: {found})")
    at = {name: columns.index(name) for name in ("id", "text")}
    texts: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):  # the line of the row (a text on one line)
        if not row:
            continue
        key, text = (row[at[k]] if at[k] < len(row) else None for k in ("id", "text"))
        if key is None or text is None:
            raise MsakitError(f"{p}: line {line}: missing 'id' or 'text' value")
        key = key.strip()
        if not key:
            raise MsakitError(f"{p}: line {line}: empty id")
        if key in texts:
            raise MsakitError(f"{p}: line {line}: duplicate id '{key}'")
        if not text.strip():
            raise MsakitError(f"{p}: line {line}: empty text for id '{key}'")
        texts[key] = text
    if not texts:
        raise MsakitError(f"{p}: no rows")
    return texts


def retokenize(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tokenizer: Any,
    *,
    texts_csv: str | os.PathLike[str] | None = None,
    max_length: int | None = None,
    positions: int | None = None,
) -> dict[str, Any]:
    """Write ``out`` (code-free npz): ``src`` with ``text_bert`` rewritten by ``tokenizer``.

    The texts are the file's ``raw_text``, or those of ``texts_csv`` (``id,text``: one row for
    every sample of the file, matched by ``id``), which then also become the output's
    ``raw_text`` so that the vocabulary check reads the text the ids come from. The text length
    is the file's (``Lt``) unless ``max_length`` is given. Like ``msakit convert``, the output
    keeps no ``text`` (frozen BERT features of the old tokens; msakit never uses them).
    The length is at most ``positions``, the number of tokens the text encoder reads (by
    default the tokenizer's ``model_max_length``, or :data:`MAX_TEXT_LENGTH` when it names
    none). Everything is checked before anything is written. Returns a summary (samples,
    length, truncated samples).
    """
    p, o = os.fspath(src), os.fspath(out)
    check_distinct_output(o, [p, texts_csv])
    positions = positions or _tokenizer_positions(tokenizer)
    _check_length(max_length, positions, "--max-length")
    raw = _read(p)
    features = _validate(raw, p, None)
    length = int(max_length) if max_length is not None else features.text_len
    _check_length(length, positions, f"{p}: text length (give --max-length {positions} or less)")
    by_id = read_texts_csv(texts_csv) if texts_csv is not None else None
    if by_id is not None:
        assert texts_csv is not None  # by_id was read from it
        _check_ids(features, by_id, Path(texts_csv))

    content: dict[str, dict[str, Any]] = {}
    truncated = total = 0
    for name, split in features.splits.items():
        if by_id is not None:
            texts = [by_id[str(i)] for i in split.ids]
        elif split.raw_text is None:
            raise MsakitError(f"{p}: split '{name}' has no raw_text; give the texts with --texts "
                              "CSV (columns id,text)")
        else:
            texts = [str(t) for t in split.raw_text]
            empty = [i for i, t in enumerate(texts) if not t.strip()]
            if empty:
                raise MsakitError(f"{p}: split '{name}', key 'raw_text': empty text at sample "
                                  f"{empty[0]} (id '{split.ids[empty[0]]}')")
        full = tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
        truncated += sum(len(ids) > length for ids in full)
        total += len(texts)
        extra = {k: raw[name][k] for k in METADATA_KEYS[1:] if k in raw[name]}
        content[name] = {**split_to_mmsa(split), **extra, "text_bert": tokenize(tokenizer, texts,
                                                                                length)}
        content[name]["raw_text"] = np.array(texts, dtype=str)
    save_npz(content, o)
    return {"samples": total, "length": length, "truncated": truncated}


MAX_TEXT_LENGTH = 1 << 14
"""The longest token sequence ``retokenize`` writes for an encoder that names no limit."""


def _check_length(length: int | None, positions: int, what: str) -> None:
    if length is not None and not 3 <= length <= positions:
        raise MsakitError(f"{what} must be at least 3 ([CLS], a token, [SEP]) and at most "
                          f"{positions} (the positions of the text encoder), got {length}")


def _tokenizer_positions(tokenizer: Any) -> int:
    """The tokenizer's ``model_max_length`` where it names one (Hugging Face writes 1e30 for
    "none"), else :data:`MAX_TEXT_LENGTH`."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and 3 <= limit <= MAX_TEXT_LENGTH:
        return limit
    return MAX_TEXT_LENGTH


def _check_ids(features: FeatureFile, by_id: dict[str, str], csv_path: Path) -> None:
    seen: dict[str, str] = {}
    for name, split in features.splits.items():
        for i, key in enumerate(split.ids):
            key = str(key)
            if key in seen:
                raise MsakitError(
                    f"{features.path}: id '{key}' names two samples (split '{seen[key]}' and "
                    f"split '{name}'), so --texts cannot say which text is whose"
                )
            seen[key] = name
            if key not in by_id:
                raise MsakitError(
                    f"{csv_path}: no text for id '{key}' (split '{name}', sample {i} of "
                    f"{features.path})"
                )
    unknown = [key for key in by_id if key not in seen]
    if unknown:
        raise MsakitError(
            f"{csv_path}: id '{unknown[0]}' is not in {features.path} ({len(unknown)} such ids)"
        )
