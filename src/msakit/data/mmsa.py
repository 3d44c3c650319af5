"""Reader and validator for MMSA feature files.

An MMSA feature file (``unaligned_50.pkl`` for MOSI/MOSEI, ``unaligned_39.pkl`` for SIMS) is a
pickle of ``{"train": split, "valid": split, "test": split}``; each split is a dict of arrays
sharing the first dimension N:

=========================  ==============  ================================================
key                        shape           notes
=========================  ==============  ================================================
``text_bert``              (N, 3, Lt)      token ids, attention mask, segment ids (floats)
``text``                   (N, Lt, Dt)     frozen BERT features; optional, kept when asked
``audio``                  (N, La, Da)     may hold ``-inf`` (set to 0, as MMSA does)
``vision``                 (N, Lv, Dv)
``audio_lengths``          (N,)            valid frames [0, length); list or array; 0 is ok
``vision_lengths``         (N,)
``regression_labels``      (N,) or (N, 1)  MOSI/MOSEI in [-3, 3], SIMS in [-1, 1]
``regression_labels_T/A/V`` (N,)           SIMS unimodal labels, optional
``id``, ``raw_text``, ...  (N,)            object arrays or lists; ``id``, ``raw_text`` kept
=========================  ==============  ================================================

:func:`load_feature_file` reads msakit's npz (:mod:`msakit.data.safe_format`) as a memory map:
the audio and vision arrays stay in the file (read-only :class:`numpy.memmap`), the small arrays
are read into memory, and every check runs over the mapped arrays in chunks read from the file,
so memory does not grow with the data. A pickle (told from an npz by its magic bytes, read by
msakit's own pickle reader, :mod:`msakit.data.safe_pickle`, which rebuilds arrays itself and
hands nothing of the file to NumPy) is read into memory once, converting features to float32
and token ids to int64 key by key (a float64 MOSEI audio array alone is 4.8 GB), validated, and
written as an npz to :func:`cache_dir`, which later loads map while the pickle holds the same
bytes (:func:`_load_pickle`). Everything is validated before returning. Every
problem is a :class:`MsakitError` with one line naming the file, split, key and the
first bad sample, e.g. ``data.pkl: split 'valid', key 'audio': NaN at sample 17 (id 'abc$_3')``.

``text`` holds precomputed text features (MMSA's frozen BERT outputs, 768 wide in the standard
files), which the models without a text encoder read (``ModelSpec(text_input="features")``:
TFN, LMF, MulT, as MMSA feeds them). ``load_feature_file(..., text_features=True)`` requires
the key and keeps it (:attr:`SplitData.text_features`, memory-mapped from an npz); otherwise a
``text`` array is checked when it is in memory and dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from msakit.config.datasets import DATASETS, DatasetSpec, dataset_spec
from msakit.core.errors import MsakitError
from msakit.core.safety import check_distinct_output, open_readable
from msakit.data.identity import content_digest
from msakit.data.safe_format import (
    in_memory,
    is_mapped,
    is_zip,
    read_extra,
    read_npz,
    read_rows,
    save_npz,
    split_to_mmsa,
)
from msakit.data.safe_pickle import restricted_load

SPLITS = ("train", "valid", "test")
REQUIRED_KEYS = (
    "text_bert",
    "audio",
    "vision",
    "audio_lengths",
    "vision_lengths",
    "regression_labels",
)
UNIMODAL_KEYS = {"T": "regression_labels_T", "A": "regression_labels_A", "V": "regression_labels_V"}
# Carried by MMSA files; only their count is checked. ``convert_to_npz`` keeps them.
METADATA_KEYS = ("id", "raw_text", "annotations", "classification_labels")
_LABEL_KEYS = frozenset({"regression_labels", *UNIMODAL_KEYS.values(), "classification_labels"})
_FEATURE_KEYS = ("text_bert", "text", "audio", "vision")  # 3-D, compared across splits
_NUMERIC_KEYS = (*REQUIRED_KEYS, "text", *UNIMODAL_KEYS.values())
_TEXT_BERT_ROWS = ("token id", "attention mask", "segment id")
# Arrays of an npz that stay memory-mapped; everything else is read into memory.
_MAPPED_KEYS = frozenset({"audio", "vision", "text"})
# Finiteness is checked this many elements at a time, to keep temporaries small.
_CHUNK_ELEMENTS = 1 << 20


@dataclass(eq=False)
class SplitData:
    """One split of a feature file, validated, in the dtypes the models use.

    Valid frames of sample i are positions ``[0, audio_lengths[i])`` / ``[0, vision_lengths[i])``
    (MMSA pads at the end); a length of 0 is allowed (no face found, no audio).

    ``audio`` and ``vision`` of an npz file are read-only :class:`numpy.memmap` views of the
    file (see :mod:`msakit.data.safe_format`); the small arrays are in memory. Audio ``-inf``
    (MMSA's value for silence) is set to 0 in place when the array is in memory; a mapped array
    cannot be written, so :func:`msakit.data.batching.collate` sets it to 0 in each batch (files
    msakit writes hold none: they are written from validated, in-memory arrays).
    """

    text_bert: np.ndarray  # (N, 3, Lt) int64: token ids, attention mask, segment ids
    audio: np.ndarray  # (N, La, Da) float32; may be a read-only map holding -inf (see below)
    vision: np.ndarray  # (N, Lv, Dv) float32, in memory or a read-only np.memmap
    audio_lengths: np.ndarray  # (N,) int64, 0 <= len <= La
    vision_lengths: np.ndarray  # (N,) int64, 0 <= len <= Lv
    labels: np.ndarray  # (N,) float32, MMSA's regression_labels
    ids: np.ndarray  # (N,) str; MMSA 'id' if present, else f"{split}-{i}"
    unimodal_labels: dict[str, np.ndarray] = field(default_factory=dict)  # {"T","A","V"} (SIMS)
    raw_text: np.ndarray | None = None  # (N,) str: MMSA 'raw_text' if present (the transcripts)
    labelled: bool = True  # False: a file to predict on had no labels (``labels`` is all NaN)
    text_features: np.ndarray | None = None  # (N, Lt, Dt) float32: the file's 'text', when asked
    kept: dict[str, np.ndarray] | None = None
    """The missing-modality protocol's masks ((N, L) bool per modality, True: present), set by
    :func:`msakit.data.missing.with_missing_split`; :func:`msakit.data.batching.collate` drops
    the other positions from every batch. None: nothing is dropped."""

    def __len__(self) -> int:
        return int(self.text_bert.shape[0])

    @property
    def text_lengths(self) -> np.ndarray:
        """(N,) int64: number of attended tokens, the attention-mask row sum."""
        return self.text_bert[:, 1].sum(axis=1)


@dataclass(eq=False)
class FeatureFile:
    """A validated feature file: its path and its three splits (same dims in every split)."""

    path: str
    splits: dict[str, SplitData]

    @property
    def _train(self) -> SplitData:
        """The train split (the first split of a file to predict on, which may lack it)."""
        return self.splits.get(SPLITS[0]) or next(iter(self.splits.values()))

    @property
    def text_len(self) -> int:
        """Lt, the padded number of tokens."""
        return int(self._train.text_bert.shape[2])

    @property
    def audio_len(self) -> int:
        """La, the padded number of audio frames."""
        return int(self._train.audio.shape[1])

    @property
    def audio_dim(self) -> int:
        """Da, the audio feature size."""
        return int(self._train.audio.shape[2])

    @property
    def vision_len(self) -> int:
        """Lv, the padded number of vision frames."""
        return int(self._train.vision.shape[1])

    @property
    def vision_dim(self) -> int:
        """Dv, the vision feature size."""
        return int(self._train.vision.shape[2])

    @property
    def text_dim(self) -> int | None:
        """Dt, the width of the precomputed text features (None when they were not loaded)."""
        text = self._train.text_features
        return None if text is None else int(text.shape[2])


def load_feature_file(
    path: str | os.PathLike[str],
    *,
    vocab_size: int | None = None,
    prediction: bool = False,
    text_features: bool = False,
) -> FeatureFile:
    """Read and validate an MMSA feature file (pickle) or its code-free npz conversion.

    ``prediction=True`` reads a file to predict on: it may hold any of the three splits (at
    least one) and its labels are optional (a split without ``regression_labels`` has
    ``labelled=False``); everything else is checked as always.

    The format is told from the file's first bytes (zip = npz, anything else = pickle), not its
    name. Pickles are read by :mod:`msakit.data.safe_pickle`, which rebuilds only containers,
    strings, numbers and NumPy arrays, itself: reading a file runs no code.
    ``vocab_size``, when given, bounds the token ids (``0 <= id < vocab_size``).
    ``text_features``: the file's ``text`` key is required and kept (models that read
    precomputed text features).

    Raises :class:`MsakitError` (one line: file, split, key, first bad sample and its id) on a
    missing or unreadable file and on any content that breaks the data contract.
    """
    p = os.fspath(path)
    _check_vocab_size(vocab_size)
    if not _is_npz(p):
        return _load_pickle(p, vocab_size, prediction=prediction, text_features=text_features)
    raw = _read(p)
    return _validate(raw, p, vocab_size, prediction=prediction, text_features=text_features)


def convert_to_npz(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    vocab_size: int | None = None,
) -> FeatureFile:
    """Validate the feature file ``src`` and write it to ``out`` in the code-free npz format.

    The npz holds the validated arrays (float32 features with audio ``-inf`` set to 0, int64
    token ids, int64 lengths, float32 labels) plus ``raw_text``, ``annotations``,
    ``classification_labels`` and the precomputed ``text`` features when present.
    Returns the loaded FeatureFile.
    """
    p, o = os.fspath(src), os.fspath(out)
    _check_vocab_size(vocab_size)
    check_distinct_output(o, [p])
    raw = _read(p, mmap=False)
    ff = _validate(raw, p, vocab_size, text_features=_has_text(raw))
    content: dict[str, dict[str, Any]] = {}
    for name, split in ff.splits.items():
        extra = {k: raw[name][k] for k in METADATA_KEYS[1:] if k in raw[name]}
        content[name] = {**split_to_mmsa(split), **extra}
    save_npz(content, o)
    return ff


# ---------------------------------------------------------------------------------------------
# the data set a file holds

def _signature(spec: DatasetSpec) -> str:
    low, high = spec.label_range
    widths = f"audio {spec.shape.audio_dim}, vision {spec.shape.vision_dim}, " if spec.shape else ""
    return f"{widths}labels in [{_num(low)}, {_num(high)}]"


def check_dataset(ff: FeatureFile, dataset: str | DatasetSpec, flag: str | None = None) -> None:
    """Raise unless ``ff`` fits ``dataset`` (a name or a spec): labels inside its label range
    and, for a named data set, a file whose feature widths are those of another named data
    set's standard file is refused by name.

    Feature widths that no standard file has (your own features) are accepted. ``flag`` names
    where ``dataset`` came from in the message (default ``--dataset NAME``).
    """
    spec = dataset_spec(dataset)
    flag = flag or f"--dataset {spec.name}"
    dims = (ff.audio_dim, ff.vision_dim)
    looks = [s for s in DATASETS.values()
             if s.shape is not None and (s.shape.audio_dim, s.shape.vision_dim) == dims]
    lo = min(float(s.labels.min()) for s in ff.splits.values())
    hi = max(float(s.labels.max()) for s in ff.splits.values())
    if looks and not spec.is_custom and spec not in looks:
        raise MsakitError(
            f"{ff.path}: this file looks like {looks[0].title} (audio {dims[0]}, vision "
            f"{dims[1]}, labels in [{_num(round(lo, 4))}, {_num(round(hi, 4))}]); {flag} "
            f"expects {_signature(spec)}"
        )
    _check_label_range(ff, spec, flag, (lo, hi))


def _check_label_range(
    ff: FeatureFile, spec: DatasetSpec, flag: str, seen: tuple[float, float]
) -> None:
    tolerance = 1e-4
    low, high = spec.label_range
    for name, split in ff.splits.items():
        bad = (split.labels < low - tolerance) | (split.labels > high + tolerance)
        if not bad.any():
            continue
        i = int(bad.argmax())
        fits = [s.title for s in DATASETS.values() if s.label_range[0] - tolerance <= seen[0]
                and seen[1] <= s.label_range[1] + tolerance]
        hint = ""
        if fits:
            a, b = next(s.label_range for s in DATASETS.values() if s.title == fits[0])
            hint = f" (labels in [{_num(a)}, {_num(b)}]: a {' or '.join(fits)} file?)"
        raise MsakitError(
            f"{ff.path}: split '{name}', key 'regression_labels': label "
            f"{_num(round(float(split.labels[i]), 4))} at sample {i} (id '{split.ids[i]}') is "
            f"outside [{_num(low)}, {_num(high)}], the range of {flag}{hint}"
        )


# ---------------------------------------------------------------------------------------------
# reading


def _check_vocab_size(vocab_size: int | None) -> None:
    if vocab_size is not None and (
        isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1
    ):
        raise MsakitError(f"vocab_size must be a positive integer, got {vocab_size!r}")


CACHE_ENV = "MSAKIT_CACHE_DIR"
_SOURCE_KEY = "msakit_source"


def cache_dir() -> str:
    """Where converted copies of pickles go: ``$MSAKIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/msakit/features``, else ``~/.cache/msakit/features``."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "msakit", "features")


def converted_path(path: str) -> str:
    """The converted copy of the pickle ``path`` in :func:`cache_dir` (one per absolute path)."""
    real = os.path.realpath(path)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(real))[0] or "features"
    return os.path.join(cache_dir(), f"{stem}-{digest}.npz")


_HASH_CHUNK = 1 << 20


def _new_digest() -> Any:
    """The content hash of the cache: BLAKE2b, 256 bits (hashlib; no dependency)."""
    return hashlib.blake2b(digest_size=32)


class _Digesting:
    """A binary file whose bytes also go into ``digest`` as they are read."""

    def __init__(self, f: Any, digest: Any) -> None:
        self.f, self.digest = f, digest

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self.f.readline(limit)
        self.digest.update(data)
        return data


def _digest_rest(source: _Digesting, path: str) -> None:
    """Hash what follows the pickle (pickle ignores it; the content is the whole file)."""
    try:
        while source.read(_HASH_CHUNK):
            pass
    except OSError as e:
        raise MsakitError(f"{path}: cannot read: {e.strerror or e}") from None


def _size_of(f: Any, path: str) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except OSError as e:
        raise MsakitError(f"{path}: cannot read: {e.strerror or e}") from None


def _source_stamp(digest: str, text_features: bool) -> str:
    """What a converted copy records of its pickle: the content's hash (not its path, size or
    modification time, which a replaced file can share) and whether it holds ``text``."""
    return json.dumps({"blake2b": digest, "text": text_features}, sort_keys=True)


def _has_text(raw: Any) -> bool:
    """Whether every split of a file's content holds a ``text`` key."""
    return isinstance(raw, dict) and all(
        isinstance(raw.get(s), dict) and "text" in raw[s] for s in SPLITS
    )


def _is_npz(path: str) -> bool:
    """Whether ``path`` starts with a zip signature (a file that cannot be opened is one
    ``MsakitError`` line)."""
    with open_readable(path, "rb") as f:  # a FIFO: one line at once, never a hang
        return is_zip(f.read(8))


def _load_pickle(path: str, vocab_size: int | None, *, prediction: bool = False,
                 text_features: bool = False) -> FeatureFile:
    """A pickle, through its converted (memory-mappable) npz copy in :func:`cache_dir`.

    The copy records the BLAKE2b hash of the pickle's bytes (:func:`content_digest`, hashed as
    they are converted); it is reused while the pickle's content hashes the same and rewritten
    otherwise, so a file replaced by another of the same size and modification time is read
    anew. Converting reads the whole pickle into memory once (validated as always, so errors
    name the pickle); later loads hash the pickle and map the copy. When no copy can be written
    (the cache folder is not writable), the pickle is loaded into memory as before. The copy
    holds the ``text`` features only when they were asked for (they are large: 3.5 GB for
    MOSEI); a copy with them also serves loads that do not ask.
    """
    try:
        digest = content_digest(path)[1]
    except MsakitError:
        return _validate(_read(path), path, vocab_size, prediction=prediction,
                         text_features=text_features)  # _read reports the problem
    copy = converted_path(path)
    try:
        recorded = read_extra(copy, _SOURCE_KEY) if os.path.isfile(copy) else None
    except Exception:  # an unreadable copy is rewritten
        recorded = None
    usable = {_source_stamp(digest, text_features), _source_stamp(digest, True)}
    if recorded is None or str(recorded) not in usable:
        hashed = _new_digest()
        raw = _read(path, digest=hashed)
        ff = _validate(raw, path, vocab_size, prediction=prediction, text_features=text_features)
        content = {}
        for name, split in ff.splits.items():
            extra = {k: raw[name][k] for k in METADATA_KEYS[1:] if k in raw[name]}
            content[name] = {**split_to_mmsa(split), **extra}
        del raw
        stamp = _source_stamp(hashed.hexdigest(), text_features)
        if not _write_copy(content, copy, path, stamp):
            return ff
        del ff, content
    return _validate(_read(copy), path, vocab_size, prediction=prediction,
                     text_features=text_features)  # messages name the pickle


def _write_copy(content: dict[str, Any], copy: str, path: str, stamp: str) -> bool:
    """Write the converted copy (one ``note:`` line); False, with a note, if it cannot be."""
    try:
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        save_npz(content, copy, extra={_SOURCE_KEY: np.array(stamp)})
    except (OSError, MsakitError) as e:
        print(
            f"note: could not write a memory-mappable copy of {path} to {copy} "
            f"({e}); the data stay in memory (set {CACHE_ENV} to a writable folder)",
            file=sys.stderr,
        )
        return False
    print(
        f"note: converted {path} once to {copy} (memory-mapped from now on; reused while "
        f"{os.path.basename(path)} holds the same bytes; set {CACHE_ENV} to move it)",
        file=sys.stderr,
    )
    return True


def _read(path: str, *, mmap: bool = True, digest: Any = None) -> Any:
    """The file's content: a dict for npz (numeric arrays memory-mapped unless ``mmap`` is
    False), whatever the pickle holds otherwise (read by :func:`restricted_load`, the one
    pickle reader of every route: ``load_feature_file``, ``convert_to_npz``, the cache,
    ``retokenize``). ``digest``: a hashlib object that receives every byte of a pickle read,
    so that the cache records the content it converted."""
    f = open_readable(path, "rb")  # a FIFO or a device: one line, never a hang
    with f:
        try:
            head = f.read(8)
            f.seek(0)
        except OSError as e:
            raise MsakitError(f"{path}: cannot read: {e.strerror or e}") from None
        if not head:
            raise MsakitError(f"{path}: the file is empty")
        if is_zip(head):
            return read_npz(f, path, mmap=mmap)
        digesting = None if digest is None else _Digesting(f, digest)
        data = restricted_load(digesting or f, path, size=_size_of(f, path))
        if digesting is not None:
            _digest_rest(digesting, path)
    return data


# ---------------------------------------------------------------------------------------------
# validation


class _Where:
    """Builds the one-line error messages of one split."""

    def __init__(self, path: str, split: str | None) -> None:
        self.path = path
        self.split = split  # None: arrays in memory, not a file's split
        self.ids: np.ndarray | None = None  # the file's ids, once known

    def fail(self, key: str, message: str, index: int | None = None) -> NoReturn:
        split = f"split '{self.split}', " if self.split is not None else ""
        text = f"{self.path}: {split}key '{key}': {message}"
        if index is not None:
            text += f" at sample {index}"
            if self.ids is not None and 0 <= index < len(self.ids):
                text += f" (id '{self.ids[index]}')"
        raise MsakitError(text)


def _validate(
    raw: Any, path: str, vocab_size: int | None, *, prediction: bool = False,
    text_features: bool = False,
) -> FeatureFile:
    if not isinstance(raw, dict):
        raise MsakitError(
            f"{path}: the file holds a {type(raw).__name__}, expected a dict with keys "
            f"'train', 'valid', 'test'"
        )
    names = _prediction_splits(raw, path) if prediction else SPLITS
    required = _PREDICTION_KEYS if prediction else REQUIRED_KEYS
    for split in names:
        if split not in raw:
            found = ", ".join(repr(k) for k in list(raw)[:10]) or "none"
            raise MsakitError(f"{path}: split '{split}' is missing (top-level keys: {found})")
        if not isinstance(raw[split], dict):
            raise MsakitError(
                f"{path}: split '{split}' is a {type(raw[split]).__name__}, "
                f"expected a dict of arrays"
            )
    # Conversion pops keys from the split dicts; a dict shared by two splits (valid is test)
    # must not lose them, so such a split gets its own shallow copy.
    seen: set[int] = set()
    for split in names:
        if id(raw[split]) in seen:
            raw[split] = dict(raw[split])
        seen.add(id(raw[split]))
    # Structure of every split first (cheap), so a bad test split fails before any big work.
    reference: dict[str, tuple[tuple[int, ...], str | None]] = {}
    for split in names:
        _check_structure(raw[split], _Where(path, split), reference, required)
    splits = {
        split: _convert_split(raw[split], _Where(path, split), vocab_size, text_features)
        for split in names
    }
    return FeatureFile(path=path, splits=splits)


# A file to predict on needs no labels.
_PREDICTION_KEYS = tuple(k for k in REQUIRED_KEYS if k != "regression_labels")


def validate_arrays(
    arrays: dict[str, Any], source: str, *, vocab_size: int | None = None
) -> SplitData:
    """One split held in memory (``msakit.predict`` on clips), checked as a file's split is,
    labels optional (``id`` too: the ids are then ``0, 1, ...``).

    Messages name ``source`` instead of a file and split: ``arrays: key 'audio': NaN at sample
    0 (id 'clip1')``. ``arrays`` itself is not changed.
    """
    _check_vocab_size(vocab_size)
    d = dict(arrays)
    where = _Where(source, None)
    _check_structure(d, where, {}, _PREDICTION_KEYS)
    return _convert_split(d, where, vocab_size)


def _prediction_splits(raw: dict[Any, Any], path: str) -> tuple[str, ...]:
    """The standard splits a file to predict on holds (at least one)."""
    names = tuple(s for s in SPLITS if s in raw)
    if not names:
        found = ", ".join(repr(k) for k in list(raw)[:10]) or "none"
        raise MsakitError(
            f"{path}: no split to predict on: expected a dict with at least one of 'train', "
            f"'valid', 'test' (top-level keys: {found})"
        )
    return names


def _check_structure(
    d: dict[str, Any],
    where: _Where,
    reference: dict[str, tuple[tuple[int, ...], str | None]],
    required: tuple[str, ...] = REQUIRED_KEYS,
) -> None:
    """Keys, dtypes, ndims, sample counts and dims (against the first split seen).

    Numeric values that are not arrays yet (lists) are turned into arrays in ``d``; mapped
    arrays other than the big features are read into memory (they are small).
    """
    _as_arrays(d, where, required)
    _check_aligned(d, where)
    _check_counts(d, where)
    _check_dims(d, where, reference)


_SHAPE_DOC = {
    "text_bert": "(N, 3, Lt)", "text": "(N, Lt, D)", "audio": "(N, La, Da)", "vision": "(N, Lv, Dv)"
}
_DIM_NAMES = {
    "text_bert": ("text length",),
    "text": ("text length", "feature dim"),
    "audio": ("sequence length", "feature dim"),
    "vision": ("sequence length", "feature dim"),
}
_LENGTH_KEYS = ("audio_lengths", "vision_lengths")


def _as_arrays(d: dict[str, Any], where: _Where, required: tuple[str, ...]) -> None:
    """Required keys present (lengths aside: see :func:`_check_aligned`), numeric values as
    arrays of the expected number of dimensions."""
    for key, value in d.items():
        if isinstance(value, np.memmap) and key not in _MAPPED_KEYS:
            d[key] = in_memory(value)
    for key in required:
        if key not in d and key not in _LENGTH_KEYS:
            where.fail(key, "required key is missing")
    for key in _NUMERIC_KEYS:
        if key in d:
            d[key] = _numeric_array(d[key], where, key)
    for key, doc in _SHAPE_DOC.items():
        if key in d and d[key].ndim != 3:
            where.fail(key, f"expected a 3-D array {doc}, got shape {d[key].shape}")
    for key in (*_LENGTH_KEYS, *UNIMODAL_KEYS.values(), "regression_labels"):
        if key not in d:
            continue
        arr = d[key]
        if key in _LABEL_KEYS and arr.ndim == 2 and arr.shape[1] == 1:
            d[key] = arr = arr.reshape(-1)
        if arr.ndim != 1:
            where.fail(key, f"expected a 1-D array (N,), got shape {arr.shape}")


def _check_aligned(d: dict[str, Any], where: _Where) -> None:
    """A split without ``audio_lengths`` and ``vision_lengths`` is an aligned file (one audio
    and one vision frame per token): its lengths are taken from the text mask later
    (:func:`_convert_split`), as MMSA does for aligned data. One of the two alone is an error."""
    missing = [k for k in _LENGTH_KEYS if k not in d]
    if not missing:
        return
    if len(missing) == 1:
        other = _LENGTH_KEYS[1 - _LENGTH_KEYS.index(missing[0])]
        where.fail(missing[0], f"required key is missing ('{other}' is there; an aligned "
                   "file has neither)")
    text_len = d["text_bert"].shape[2]
    for key in ("audio", "vision"):
        if d[key].shape[1] != text_len:
            where.fail(f"{key}_lengths", f"required key is missing (the file has no lengths, "
                       f"as aligned files, but {d[key].shape[1]} {key} frames for "
                       f"{text_len} tokens; aligned files have one frame per token)")


def _check_counts(d: dict[str, Any], where: _Where) -> None:
    n = d["text_bert"].shape[0]
    if n == 0:
        where.fail("text_bert", "the split has no samples")
    for key in (*_NUMERIC_KEYS, *METADATA_KEYS):
        if key not in d or key == "text_bert":
            continue
        count = _count(d[key], where, key)
        if count != n:
            what = "label count mismatch" if key in _LABEL_KEYS else "sample count mismatch"
            where.fail(key, f"{what}: {count} entries, but 'text_bert' has {n} samples")


def _check_dims(
    d: dict[str, Any], where: _Where, reference: dict[str, tuple[tuple[int, ...], str | None]]
) -> None:
    tb = d["text_bert"]
    if tb.shape[1] != 3:
        where.fail(
            "text_bert",
            f"expected 3 rows (token ids, attention mask, segment ids) in dimension 1, "
            f"got shape {tb.shape}",
        )
    if "text" in d and d["text"].shape[1] != tb.shape[2]:
        where.fail(
            "text", f"text length {d['text'].shape[1]} differs from text_bert's {tb.shape[2]}"
        )
    for key in _FEATURE_KEYS:
        if key not in d:
            continue
        shape = d[key].shape
        if 0 in shape[1:]:
            where.fail(key, f"empty dimension in shape {shape}")
        dims = shape[1:] if key != "text_bert" else shape[2:]
        if key not in reference:
            reference[key] = (dims, where.split)
            continue
        ref_dims, ref_split = reference[key]
        for name, got, want in zip(_DIM_NAMES[key], dims, ref_dims, strict=True):
            if got != want:
                where.fail(key, f"{name} {got} differs from split '{ref_split}' ({want})")


def _numeric_array(value: Any, where: _Where, key: str) -> np.ndarray:
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype.kind == "O":
            arr = arr.astype(np.float64)
    except (ValueError, TypeError, OverflowError) as e:
        where.fail(key, f"not a numeric array (ragged or non-numeric values: {e})")
    if arr.dtype.kind not in "biuf":
        where.fail(key, f"expected numbers, got values of dtype {arr.dtype}")
    return arr


def _count(value: Any, where: _Where, key: str) -> int:
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            where.fail(key, "expected one entry per sample, got a scalar")
        return int(value.shape[0])
    try:
        return len(value)
    except TypeError:
        where.fail(key, f"expected one entry per sample, got a {type(value).__name__}")


def _convert_split(
    d: dict[str, Any], where: _Where, vocab_size: int | None, text_features: bool = False
) -> SplitData:
    """Convert and check the content of one split, popping the big arrays as it goes."""
    n = d["text_bert"].shape[0]
    if "id" in d:
        try:
            ids = _text_array(d["id"], where, "id")
        except (TypeError, ValueError) as e:
            where.fail("id", f"ids are not strings ({e})")
        where.ids = ids
    else:
        prefix = f"{where.split}-" if where.split is not None else ""
        ids = np.array([f"{prefix}{i}" for i in range(n)], dtype=str)
    raw_text = None
    if "raw_text" in d:  # kept to check the token ids against a tokenizer (msakit.data.tokens)
        try:
            raw_text = _text_array(d["raw_text"], where, "raw_text")
        except (TypeError, ValueError) as e:
            where.fail("raw_text", f"texts are not strings ({e})")

    text_bert = _convert_text_bert(d.pop("text_bert"), where, vocab_size)
    text = _text_features(d, where, text_features)

    audio = _float32(d.pop("audio"))
    _check_finite(audio, where, "audio", zero_neg_inf=True)
    vision = _float32(d.pop("vision"))
    _check_finite(vision, where, "vision", zero_neg_inf=False)
    if "audio_lengths" not in d:  # an aligned file: every modality has the text's lengths
        d["audio_lengths"] = d["vision_lengths"] = text_bert[:, 1].sum(axis=1)
    audio_lengths = _lengths(d.pop("audio_lengths"), audio.shape[1], where, "audio_lengths")
    vision_lengths = _lengths(d.pop("vision_lengths"), vision.shape[1], where, "vision_lengths")

    labelled = "regression_labels" in d  # optional only in a file to predict on
    labels = (_labels(d.pop("regression_labels"), where, "regression_labels") if labelled
              else np.full(n, np.nan, dtype=np.float32))
    unimodal = {m: _labels(d.pop(key), where, key) for m, key in UNIMODAL_KEYS.items() if key in d}
    return SplitData(
        text_bert=text_bert,
        audio=audio,
        vision=vision,
        audio_lengths=audio_lengths,
        vision_lengths=vision_lengths,
        labels=labels,
        ids=ids,
        unimodal_labels=unimodal,
        raw_text=raw_text,
        labelled=labelled,
        text_features=text,
    )


def _text_features(d: dict[str, Any], where: _Where, wanted: bool) -> np.ndarray | None:
    """The split's precomputed ``text`` features as float32 when ``wanted`` (then required);
    otherwise None, after checking an in-memory array (a mapped one that nothing reads is left
    unread)."""
    if "text" not in d:
        if wanted:
            where.fail("text", "required key is missing: the model reads the file's precomputed "
                               "text features (MMSA's 'text', (N, Lt, 768))")
        return None
    text = d.pop("text")
    if not wanted and is_mapped(text):
        return None
    text = _float32(text)
    _check_finite(text, where, "text", zero_neg_inf=False)
    return text if wanted else None


# A fixed-width text array may hold at most this many times the characters of its texts, plus
# the allowance (one 10^6-character id among 10^6 short ones would otherwise take 4 TB).
_TEXT_WASTE = 16
_TEXT_ALLOWANCE = 1 << 24


def _text_array(values: Any, where: _Where, key: str) -> np.ndarray:
    """``values`` as a NumPy unicode array (fixed width: the longest text's)."""
    texts = [_as_text(x) for x in values]
    width = max(map(len, texts), default=0)
    if len(texts) * width > _TEXT_WASTE * sum(map(len, texts)) + _TEXT_ALLOWANCE:
        where.fail(key, f"a text of {width:,} characters among {len(texts):,} short ones: as a "
                        f"fixed-width array they would take {4 * len(texts) * width:,} bytes")
    return np.array(texts, dtype=str)


def _as_text(x: Any) -> str:
    """One id or text as a string: a string, bytes (UTF-8), a number, or an array of one of
    them (ids stored as (N, 1) arrays); anything else (a list, a nested structure, an object)
    is a ``TypeError`` naming its type."""
    if isinstance(x, np.ndarray) and x.size == 1:  # one level only: no nesting
        x = x.reshape(-1)[0]
    if isinstance(x, (bytes, np.bytes_)):
        return bytes(x).decode("utf-8", "replace")
    if isinstance(x, (str, np.str_, int, float, np.number)) and not isinstance(x, bool):
        return str(x)
    raise TypeError(f"one is a {type(x).__name__}")


def _float32(arr: np.ndarray) -> np.ndarray:
    """A float32 version of ``arr``: the same object when it already is one and is writable or
    a read-only map of a file (kept mapped), otherwise a writable copy."""
    if arr.dtype == np.float32:
        return arr if arr.flags.writeable or is_mapped(arr) else arr.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(np.float32)


def _first_sample(bad: np.ndarray) -> int | None:
    """Index of the first sample (dimension 0) with any True in ``bad``, or None."""
    rows = bad.reshape(bad.shape[0], -1).any(axis=1)
    return int(rows.argmax()) if rows.any() else None


def _num(value: Any) -> str:
    """A number as a user wrote it: 3, 3.5, -1 (no numpy reprs, no exponent for ids)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _describe(value: float) -> str:
    return "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")


def _check_finite(arr: np.ndarray, where: _Where, key: str, *, zero_neg_inf: bool) -> None:
    """Fail on the first NaN/inf, sample by sample; with ``zero_neg_inf``, -inf is allowed and,
    in an in-memory array, set to 0 (a mapped array is read-only: batches get the 0, see
    :class:`SplitData`).

    Works in chunks of samples so the temporaries stay small on MOSEI-sized arrays; a mapped
    array is read chunk by chunk with plain file reads, not through the map, so validating it
    leaves none of it resident in this process.
    """
    if arr.dtype.kind not in "fc" or arr.shape[0] == 0:
        return
    mapped = is_mapped(arr)
    per_sample = max(1, int(np.prod(arr.shape[1:])))
    step = max(1, _CHUNK_ELEMENTS // per_sample)
    for start in range(0, arr.shape[0], step):
        chunk = read_rows(arr, start, start + step) if is_mapped(arr) else arr[start : start + step]
        if zero_neg_inf:
            neg_inf = np.isneginf(chunk)
            if mapped:
                chunk = np.where(neg_inf, 0, chunk)
            else:
                chunk[neg_inf] = 0  # writes through the view
        finite = np.isfinite(chunk)
        if finite.all():
            continue
        bad = ~finite
        i = _first_sample(bad)
        assert i is not None
        value = chunk[i][bad[i]].reshape(-1)[0]
        where.fail(key, _describe(value), start + i)


def _convert_text_bert(arr: np.ndarray, where: _Where, vocab_size: int | None) -> np.ndarray:
    key = "text_bert"
    _check_finite(arr, where, key, zero_neg_inf=False)
    if arr.dtype.kind == "f":
        for row, name in enumerate(_TEXT_BERT_ROWS):
            values = arr[:, row]
            i = _first_sample(values != np.floor(values))
            if i is not None:
                bad = values[i][values[i] != np.floor(values[i])][0]
                where.fail(key, f"{name} {_num(bad)} is not an integer", i)
    tokens = arr[:, 0]
    i = _first_sample(tokens < 0)
    if i is not None:
        where.fail(key, f"negative token id {_num(tokens[i].min())}", i)
    limit = vocab_size if vocab_size is not None else np.iinfo(np.int64).max // 2
    i = _first_sample(tokens >= limit)
    if i is not None:
        detail = f"the vocabulary size {vocab_size}" if vocab_size is not None else "int64"
        where.fail(key, f"token id {_num(tokens[i].max())} does not fit {detail}", i)
    for row in (1, 2):
        values = arr[:, row]
        i = _first_sample((values != 0) & (values != 1))
        if i is not None:
            bad = values[i][(values[i] != 0) & (values[i] != 1)][0]
            where.fail(key, f"{_TEXT_BERT_ROWS[row]} {_num(bad)} is not 0 or 1", i)
    return arr.astype(np.int64)


def _lengths(arr: np.ndarray, seq_len: int, where: _Where, key: str) -> np.ndarray:
    _check_finite(arr, where, key, zero_neg_inf=False)
    if arr.dtype.kind == "f":
        i = _first_sample(arr != np.floor(arr))
        if i is not None:
            where.fail(key, f"length {_num(arr[i])} is not an integer", i)
    i = _first_sample(arr < 0)
    if i is not None:
        where.fail(key, f"negative length {_num(arr[i])}", i)
    i = _first_sample(arr > seq_len)
    if i is not None:
        where.fail(key, f"length {_num(arr[i])} exceeds the sequence length {seq_len}", i)
    return arr.astype(np.int64)


def _labels(arr: np.ndarray, where: _Where, key: str) -> np.ndarray:
    out = _float32(arr)
    _check_finite(out, where, key, zero_neg_inf=False)
    return out
