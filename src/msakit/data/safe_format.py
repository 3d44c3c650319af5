"""A feature-file format that runs no code when loaded.

An MMSA feature file is a pickle, and unpickling can run arbitrary code: loading a file from an
untrusted source is a security risk. This module stores the same content in one ``.npz`` archive
(a zip of ``.npy`` arrays) that :func:`numpy.load` reads with ``allow_pickle=False``:

* one entry per array, named ``"<split>/<key>"``, e.g. ``"train/audio"``;
* strings (``id``, ``raw_text``, ``annotations``) as fixed-width unicode arrays;
* python lists (MMSA's ``audio_lengths``) as plain numeric arrays;
* floating arrays as float32 (what the reader produces anyway; halves float64 files);
* no object arrays, ever: a value that cannot be stored without pickle is an error;
* one extra entry, ``"msakit_format"``, names the format version;
* members stored uncompressed (``ZIP_STORED``, what :func:`numpy.savez` writes), so that
  :func:`read_npz` maps the numeric arrays from the file instead of reading them into memory.

Memory mapping: :func:`numpy.load` does not map npz members, but a stored member is the plain
bytes of a ``.npy`` file inside the zip. :func:`read_npz` finds where its array data starts (the
zip local header at the member's offset: 30 bytes, the name and the extra field; then the
``.npy`` header) and opens it as a read-only :class:`numpy.memmap`: a process holds only the
pages it reads (the samples of its batches), and processes on one machine share them through
the page cache. The zip CRC of a mapped member is not checked (that would read all of it);
compressed members (:func:`numpy.savez_compressed`) and text arrays are read into memory.
:func:`msakit.data.load_feature_file` recognises the archive by its magic bytes, not its name.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.files import write_atomic

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
    # numpy's stub reads **arrays as its allow_pickle keyword
    write_atomic(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    return path


def read_npz(
    fileobj: IO[bytes], path: str, *, mmap: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Read an archive written by :func:`save_npz` into ``{split: {key: array}}``.

    With ``mmap`` (the default), numeric arrays of uncompressed members are read-only
    :class:`numpy.memmap` views of the file (see the module docstring); the rest is read into
    memory. Nothing is validated here beyond what reading needs; ``load_feature_file`` does the
    rest. Entries whose name has no ``"/"`` (the format tag) are skipped.
    """
    mapped = _mapped_members(fileobj, path) if mmap else {}
    archive = _open_archive(fileobj, path)
    out: dict[str, dict[str, np.ndarray]] = {}
    with archive:
        for name in archive.files:
            split, sep, key = name.partition("/")
            if not sep:
                continue
            if name in mapped:
                out.setdefault(split, {})[key] = mapped[name]
                continue
            try:
                out.setdefault(split, {})[key] = archive[name]
            except Exception as e:  # object arrays, CRC errors, truncated members, ...
                raise MsakitError(
                    f"{path}: split '{split}', key '{key}': cannot read the array "
                    f"({type(e).__name__}: {e})"
                ) from None
    return out


def read_extra(
    path: str | os.PathLike[str], name: str, fileobj: IO[bytes] | None = None
) -> np.ndarray | None:
    """The extra entry ``name`` (see :func:`save_npz`) of the archive ``path`` (read from
    ``fileobj`` when given), or None if it has none. An archive or an entry that cannot be read
    (a corrupt directory, a member whose data fails its CRC or does not inflate) is one
    ``MsakitError`` naming the file and the entry."""
    with _open_archive(path if fileobj is None else fileobj, str(path)) as archive:
        if name not in archive.files:
            return None
        try:
            return archive[name]
        except Exception as e:  # noqa: BLE001 - numpy and zipfile reading the file's bytes:
            # BadZipFile (CRC), zlib.error, NotImplementedError (a compression), EOFError...
            raise MsakitError(f"{path}: entry '{name[:100]}': cannot read the array "
                              f"({_reason(e)})") from None


def _open_archive(source: str | os.PathLike[str] | IO[bytes], path: str) -> Any:
    """``np.load(source)`` of an npz archive without pickles; one ``MsakitError`` naming
    ``path`` if it is not one."""
    try:
        return np.load(source, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - zipfile.BadZipFile, OSError, ValueError, ...
        raise MsakitError(
            f"{path}: not a readable npz archive, truncated or corrupt ({_reason(e)})"
        ) from None


def _mapped_members(fileobj: IO[bytes], path: str) -> dict[str, np.memmap]:
    """``{entry name: read-only memmap}`` for the numeric arrays stored uncompressed in the zip.

    The zip's directory and every stored ``.npy`` member's header are parsed here, before
    anything is read: a malformed one is one ``MsakitError`` naming the file (and the member).
    A member that is well formed but not mappable (compressed, text, object or Fortran-order
    array, ``.npy`` version 3, data past the end of the file) is left out: :func:`read_npz`
    then reads it the ordinary way, which also reports a corrupt member's data.
    """
    out: dict[str, np.memmap] = {}
    st = os.fstat(fileobj.fileno())
    try:
        for info in _zip_members(fileobj, path):
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                continue
            header = _npy_header(fileobj, info, path)
            if header is None:
                continue
            start, offset, shape, dtype = header
            if _unmappable(dtype, shape):
                continue
            assert shape is not None  # None (Fortran order) is unmappable
            nbytes = math.prod(shape) * dtype.itemsize  # python ints: no overflow
            if offset - start + nbytes != info.file_size or offset + nbytes > st.st_size:
                continue
            arr = _map(path, st, dtype=dtype, offset=offset, shape=shape)
            if arr is None:  # the path now names another file
                return {}
            out[info.filename[: -len(".npy")]] = arr
    except OSError:
        return {}  # the ordinary read reports what is wrong
    finally:
        fileobj.seek(0)
    return out


def _unmappable(dtype: np.dtype, shape: tuple[int, ...] | None) -> bool:
    """Whether an array cannot be mapped: Fortran order (``shape`` None), objects, a kind
    other than bool/int/uint/float, or no elements."""
    return shape is None or dtype.hasobject or dtype.kind not in "biuf" or 0 in shape


def _zip_members(fileobj: IO[bytes], path: str) -> list[zipfile.ZipInfo]:
    """The members of the zip's central directory; one ``MsakitError`` if it is malformed."""
    try:
        with zipfile.ZipFile(fileobj) as archive:
            return archive.infolist()
    except Exception as e:  # noqa: BLE001 - zipfile's parser of the file's bytes: BadZipFile,
        # NotImplementedError (an unknown zip version), UnicodeDecodeError (a name), EOFError...
        raise MsakitError(f"{path}: not a readable npz archive, truncated or corrupt "
                          f"({_reason(e)})") from None


def _npy_header(
    fileobj: IO[bytes], info: zipfile.ZipInfo, path: str
) -> tuple[int, int, tuple[int, ...] | None, np.dtype] | None:
    """``(start, data offset, shape, dtype)`` of a stored ``.npy`` member (shape None for a
    Fortran-order array); None if its local zip header is not where the directory says (the
    ordinary read reports it) or its ``.npy`` version is not 1 or 2 (read the ordinary way).
    A header numpy cannot parse is one ``MsakitError`` naming the file and the member."""
    fileobj.seek(info.header_offset)
    local = fileobj.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    fileobj.seek(start)
    try:
        version = np.lib.format.read_magic(fileobj)
        if version not in ((1, 0), (2, 0)):
            return None
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(fileobj)
    except Exception as e:  # noqa: BLE001 - numpy's parser of the file's header text: ValueError,
        # tokenize.TokenError (its Python 2 filter), RecursionError, MemoryError (the compiler)...
        raise MsakitError(f"{path}: member {_name(info)}: not a readable .npy header "
                          f"({_reason(e)})") from None
    if any(d < 0 for d in shape):
        raise MsakitError(f"{path}: member {_name(info)}: a negative dimension in the .npy "
                          f"header's shape {str(shape)[:100]}")
    return start, fileobj.tell(), None if fortran else tuple(shape), dtype


def _name(info: zipfile.ZipInfo, limit: int = 100) -> str:
    """A member's name for an error line, quoted and cut to ``limit`` characters."""
    return repr(info.filename[:limit]) + ("..." if len(info.filename) > limit else "")


def _reason(e: BaseException, limit: int = 200) -> str:
    """``Type: message`` of a library's exception, cut to ``limit`` characters (a message may
    quote the file's bytes)."""
    text = " ".join(str(e).split())
    kind = type(e).__qualname__ if type(e).__module__ == "builtins" else (
        f"{type(e).__module__}.{type(e).__qualname__}")  # zlib.error, not "error"
    return f"{kind}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _map(
    path: str, st: os.stat_result, *, dtype: np.dtype, offset: int, shape: tuple[int, ...]
) -> np.memmap | None:
    """A read-only map of ``path`` with its own file handle, used by :func:`take` and
    :func:`read_rows` (so a file replaced while in use, e.g. a new conversion renamed over it,
    is never read by mistake) and closed with the array. None if ``path`` is not ``st``'s file.
    """
    handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed with the array)
    try:
        here = os.fstat(handle.fileno())
        if (here.st_dev, here.st_ino) != (st.st_dev, st.st_ino):
            handle.close()
            return None
        arr = np.memmap(handle, dtype=dtype, mode="r", offset=offset, shape=shape)
    except BaseException:
        handle.close()
        raise
    arr._msakit_file = handle  # type: ignore[attr-defined]
    weakref.finalize(arr, handle.close)
    return arr


def _read_at(arr: np.memmap, buffer: np.ndarray, offset: int) -> None:
    """Fill ``buffer`` with the bytes of ``arr``'s file at ``offset`` (a plain file read)."""
    handle = arr._msakit_file  # type: ignore[attr-defined]
    view = memoryview(buffer).cast("B")  # type: ignore[arg-type]  # an ndarray is a buffer
    got = 0
    while got < len(view):
        n = _read_into(handle, view[got:], offset + got)
        if not n:
            raise MsakitError(f"{arr.filename}: the file is truncated")
        got += n


_SEEK_LOCK = threading.Lock()


def _read_into(handle: IO[bytes], view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` of ``handle``'s file; the bytes read. A positional
    read (``os.preadv``) that leaves the handle's file position alone, so threads may read one
    mapped array side by side (prediction collates each thread's clips in that thread); where
    the platform has no ``preadv``, a seek and a read under one lock."""
    if hasattr(os, "preadv"):
        return os.preadv(handle.fileno(), [view], offset)
    with _SEEK_LOCK:
        handle.seek(offset)
        return handle.readinto(view)  # type: ignore[attr-defined]  # a raw binary file


def take(arr: np.ndarray, indices: np.ndarray, length: int) -> np.ndarray:
    """``arr[indices, :length]`` as a new in-memory array.

    For a whole array mapped by :func:`read_npz`, each sample's first ``length`` rows (a
    contiguous run of bytes) are read with plain file reads instead of through the map: the
    kernel maps whole page-cache folios on a fault (measured here: reading 8 MOSEI-shaped
    samples, 1.2 MB, through the map made 2 MB of the file resident), so random batches read
    through the map would keep most of a file resident; read this way, the process holds only
    its batches, and the pages stay shared in the page cache.
    """
    if not (is_mapped(arr) and arr.ndim >= 2):
        return np.asarray(arr[indices, :length])
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    inner = arr.shape[2:]
    out = np.empty((idx.size, length, *inner), dtype=arr.dtype)
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
    for k, i in enumerate(idx):
        if i < 0:
            i += arr.shape[0]
        if not 0 <= i < arr.shape[0]:
            raise IndexError(f"index {i} is out of bounds for {arr.shape[0]} samples")
        _read_at(arr, out[k], arr.offset + int(i) * row_bytes)
    return out


def is_mapped(arr: np.ndarray) -> TypeGuard[np.memmap]:
    """Whether ``arr`` is a whole read-only array from :func:`read_npz` (its ``offset`` is where
    its data start in ``filename``)."""
    return (
        isinstance(arr, np.memmap)
        and arr.filename is not None
        and not arr.flags.writeable
        and arr.flags.c_contiguous
        and getattr(arr, "_msakit_file", None) is not None
        and arr.base is not None
        and not isinstance(arr.base, np.ndarray)
    )


def in_memory(arr: np.ndarray) -> np.ndarray:
    """``arr`` as an ordinary in-memory array; a memmap from :func:`read_npz` is read with plain
    file reads, so its pages never count in this process's resident memory."""
    if is_mapped(arr):
        return read_rows(arr, 0, arr.shape[0])
    return np.array(arr)


def read_rows(arr: np.memmap, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of a whole mapped array from :func:`read_npz`, read from its file
    (a copy; not through the map)."""
    stop = min(stop, arr.shape[0])
    out = np.empty((max(0, stop - start), *arr.shape[1:]), dtype=arr.dtype)
    per_row = int(np.prod(arr.shape[1:], dtype=np.int64))
    _read_at(arr, out, arr.offset + start * per_row * arr.dtype.itemsize)
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
        "id": split.ids,
    }
    if split.labelled:
        out["regression_labels"] = split.labels
    for modality, labels in split.unimodal_labels.items():
        out[f"regression_labels_{modality}"] = labels
    if split.raw_text is not None:
        out["raw_text"] = split.raw_text
    if split.text_features is not None:
        out["text"] = split.text_features
    return out
