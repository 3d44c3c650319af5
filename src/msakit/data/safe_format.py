"""A feature-file format that runs no code when loaded.

An MMSA feature file is a pickle, and unpickling can run arbitrary code: loading a file from an
untrusted source is a security risk. This module stores the same content in one ``.npz`` archive
(a zip of ``.npy`` arrays) that :func:`numpy.load` reads with ``allow_pickle=False``:

* one entry per array, named ``"<split>/<key>"``, e.g. ``"train/audio"``;
* strings (``id``, ``raw_text``, ``annotations``) as fixed-width unicode arrays;
* python lists (MMSA's ``audio_lengths``) as plain numeric arrays;
* floating arrays as float32 (what the reader produces anyway; halves float64 files);
* no object arrays, ever: a value that cannot be stored without pickle is an error;
* one extra entry, ``"msakit_format"``, names the format version.

:func:`msakit.data.load_feature_file` recognises the archive by its magic bytes, not its name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from msakit.errors import MsakitError

if TYPE_CHECKING:
    from msakit.data.mmsa import FeatureFile, SplitData

FORMAT_KEY = "msakit_format"
FORMAT_VERSION = "msakit-features-1"
# Every zip archive (hence every .npz) starts with one of these signatures.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def is_zip(head: bytes) -> bool:
    """Whether the first bytes of a file are a zip (npz) signature."""
    return any(head.startswith(magic) for magic in ZIP_MAGICS)


def save_npz(
    splits: Mapping[str, Mapping[str, Any]] | FeatureFile,
    path: str | os.PathLike[str],
    *,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write feature-file content to ``path`` as one code-free ``.npz`` archive.

    ``splits`` is either an MMSA-style dict (``{"train": {"audio": ..., ...}, ...}``, e.g. the
    content of an MMSA pickle) or a loaded :class:`~msakit.data.FeatureFile`. Every value is
    stored as a plain array (see the module docstring); the file is written to a temporary name
    first and renamed, so an interrupted write never leaves a half-written ``path``. The name is
    used as given (numpy's habit of appending ``.npz`` is avoided). ``extra`` entries (names
    without ``"/"``, plain arrays such as a JSON string) are stored beside the splits; readers
    skip them (see :mod:`msakit.extract.settings`). Returns the path written.
    """
    path = Path(path)
    if hasattr(splits, "splits") and hasattr(splits, "path"):
        splits = {name: split_to_mmsa(split) for name, split in splits.splits.items()}
    if not isinstance(splits, Mapping):
        raise MsakitError(f"{path}: expected a dict of splits, got {type(splits).__name__}")
    arrays: dict[str, np.ndarray] = {FORMAT_KEY: np.array(FORMAT_VERSION)}
    for name, value in (extra or {}).items():
        if "/" in name or name == FORMAT_KEY:
            raise MsakitError(f"{path}: extra entry name {name!r} cannot be stored")
        arrays[name] = _code_free_array(value, path, "-", name)
    for split, content in splits.items():
        if not isinstance(split, str) or "/" in split or split == FORMAT_KEY:
            raise MsakitError(f"{path}: split name {split!r} cannot be stored")
        if not isinstance(content, Mapping):
            raise MsakitError(
                f"{path}: split '{split}' is a {type(content).__name__}, expected a dict of arrays"
            )
        for key, value in content.items():
            if not isinstance(key, str):
                raise MsakitError(f"{path}: split '{split}': key {key!r} is not a string")
            arrays[f"{split}/{key}"] = _code_free_array(value, path, split, key)
    from msakit.files import write_atomic

    write_atomic(path, lambda f: np.savez(f, **arrays))
    return path


def read_npz(fileobj: IO[bytes], path: str) -> dict[str, dict[str, np.ndarray]]:
    """Read an archive written by :func:`save_npz` into ``{split: {key: array}}``.

    Nothing is validated here beyond what reading needs; ``load_feature_file`` does the rest.
    Entries whose name has no ``"/"`` (the format tag) are skipped.
    """
    try:
        archive = np.load(fileobj, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, ...
        raise MsakitError(
            f"{path}: not a readable npz archive, truncated or corrupt ({type(e).__name__}: {e})"
        ) from None
    out: dict[str, dict[str, np.ndarray]] = {}
    with archive:
        for name in archive.files:
            split, sep, key = name.partition("/")
            if not sep:
                continue
            try:
                out.setdefault(split, {})[key] = archive[name]
            except Exception as e:  # object arrays, CRC errors, truncated members, ...
                raise MsakitError(
                    f"{path}: split '{split}', key '{key}': cannot read the array "
                    f"({type(e).__name__}: {e})"
                ) from None
    return out


def _code_free_array(value: Any, path: Path, split: str, key: str) -> np.ndarray:
    """``value`` as an array numpy can load without pickle (no object dtype)."""
    where = f"{path}: split '{split}', key '{key}'"
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype.kind == "O":
            items = arr.ravel().tolist()
            if all(isinstance(x, (str, bytes, np.str_, np.bytes_)) for x in items):
                texts = [
                    x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in items
                ]
                arr = np.array(texts, dtype=str).reshape(arr.shape)
            else:
                arr = np.array(items).reshape(arr.shape)
    except (ValueError, TypeError) as e:
        raise MsakitError(f"{where}: cannot be stored as a plain array ({e})") from None
    if arr.dtype.kind == "O":
        raise MsakitError(f"{where}: holds python objects, which only pickle can store")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.astype(np.float32)
    return arr


def split_to_mmsa(split: SplitData) -> dict[str, np.ndarray]:
    """A loaded split's arrays under MMSA's key names (``labels`` -> ``regression_labels``)."""
    out = {
        "text_bert": split.text_bert,
        "audio": split.audio,
        "vision": split.vision,
        "audio_lengths": split.audio_lengths,
        "vision_lengths": split.vision_lengths,
        "regression_labels": split.labels,
        "id": split.ids,
    }
    for modality, labels in split.unimodal_labels.items():
        out[f"regression_labels_{modality}"] = labels
    if split.raw_text is not None:
        out["raw_text"] = split.raw_text
    return out
