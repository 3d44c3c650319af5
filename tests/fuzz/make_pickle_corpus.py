"""Write the seed corpus of the pickle reader: ``tests/fuzz/corpus/pickle/*.pkl``.

    python tests/fuzz/make_pickle_corpus.py [FOLDER]

Two kinds of files, each small:

* ``genuine-*``: MMSA-shaped feature files as NumPy writes them (protocols 0, 2, 4, 5), which
  the reader must load (valid seeds, so that fuzzing starts from the paths real files take);
* ``redteam-*`` and ``hostile-*``: the red-team pickles of issue 19 ("A code-free pickle
  corrupts memory") and pickles aimed at each of the reader's caps, which it must refuse with
  one line. The red-team ones sit inside an MMSA-shaped file, where the old reader (a
  ``pickle.Unpickler`` allowing NumPy's dtype and ``_reconstruct``) reached NumPy with them:

  - ``redteam-a-object-field-flags-0``: a dtype whose object field has its "holds objects"
    flags forced to 0, records from raw bytes ``AAAA...`` (the old reader: SIGSEGV, NumPy
    dereferencing 0x4141414141414141);
  - ``redteam-a2-object-dtype-flags-0``: the same with an allowed type code: an object dtype
    whose flags are 0 (NumPy writes 63), object "pointers" from raw bytes;
  - ``redteam-b-field-offset-past-itemsize``: a dtype field at offset 4096 of an 8-byte item
    (reads out of bounds);
  - ``redteam-c-reconstruct-without-data``: ``_reconstruct`` of a (N, La, Da) float array and
    no ``BUILD``: uninitialised memory as audio features;
  - ``redteam-d-bytearray-2e9``: ``builtins.bytearray(2_000_000_000)`` in a 60-byte pickle;
  - ``redteam-e-shared-references``: raw_text made of lists that share references, a few KB
    expanding to hundreds of MB when walked;
  - ``redteam-f-declared-array-no-data``: vision declared (n, 6000, 1000) float32 with no data
    in every split (960 MB).

The bytes are built here by hand (an opcode assembler) or by :mod:`pickle` with hand-made
pieces spliced in (:class:`Raw`), never by pickling a hostile object, so running this script
runs nothing hostile. ``tests/test_safe_pickle.py`` checks that the committed files are what
this script writes.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus" / "pickle"
MULTIARRAY = "numpy._core.multiarray"


# ----------------------------------------------------------------------------- an assembler
def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def op_bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_call(func: bytes, *args: bytes) -> bytes:
    return func + op_tuple(*args) + b"R"


def op_put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def op_get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


NONE, TRUE, FALSE = b"N", b"\x88", b"\x89"


def op_dtype(code: str, state: bytes) -> bytes:
    """``numpy.dtype(code, False, True)`` and a ``BUILD`` with ``state``, as NumPy writes."""
    return op_call(op_global("numpy", "dtype"), op_str(code), FALSE, TRUE) + state + b"b"


def simple_state(order: str, elsize: int = -1, align: int = -1, flags: int = 0) -> bytes:
    return op_tuple(op_int(3), op_str(order), NONE, NONE, NONE, op_int(elsize), op_int(align),
                    op_int(flags))


OBJECT = op_dtype("O8", simple_state("|", flags=63))
FLOAT64 = op_dtype("f8", simple_state("<"))


def record_dtype(field: bytes, offset: int, itemsize: int, flags: int) -> bytes:
    """A structured dtype with one field ``a`` of dtype ``field`` at ``offset``; its flags as
    given (NumPy's own state for one object field says 27)."""
    fields = b"}" + op_str("a") + op_tuple(field, op_int(offset)) + b"s"
    return op_dtype(f"V{itemsize}", op_tuple(
        op_int(3), op_str("|"), NONE, op_tuple(op_str("a")), fields, op_int(itemsize),
        op_int(1), op_int(flags)))


def reconstruct(shape: tuple[int, ...], typecode: bytes = b"b") -> bytes:
    """``numpy._core.multiarray._reconstruct(ndarray, shape, typecode)`` (NumPy writes shape
    (0,) and b'b', then a BUILD with the real state)."""
    return op_call(op_global(MULTIARRAY, "_reconstruct"), op_global("numpy", "ndarray"),
                   op_tuple(*map(op_int, shape)), op_bytes(typecode))


def array(shape: tuple[int, ...], dtype: bytes, data: bytes) -> bytes:
    state = op_tuple(op_int(1), op_tuple(*map(op_int, shape)), dtype, FALSE, op_bytes(data))
    return reconstruct((0,)) + state + b"b"


def whole(code: bytes) -> bytes:
    """A complete protocol-2 pickle of one value."""
    return b"\x80\x02" + code + b"."


class Raw:
    """Opcodes spliced into a pickle where this object is saved (see :func:`dumps`)."""

    def __init__(self, code: bytes) -> None:
        self.code = code


class _Splicer(pickle._Pickler):  # the pure-Python pickler, whose save() can be extended
    def save(self, obj, save_persistent_id=True):  # noqa: ANN001
        if isinstance(obj, Raw):
            self.write(obj.code)
            return
        super().save(obj, save_persistent_id)


def dumps(obj: object, protocol: int = 3) -> bytes:
    buffer = io.BytesIO()
    _Splicer(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the files
def mmsa(n: tuple[int, int, int] = (4, 2, 2), lt: int = 4, la: int = 3, lv: int = 3) -> dict:
    """A tiny MMSA-shaped feature file (audio and vision 4 wide: no standard data set)."""
    rng = np.random.default_rng(0)

    def split(name: str, count: int) -> dict:
        text_bert = np.zeros((count, 3, lt))
        text_bert[:, 0, :3] = (101, 2023, 102)
        text_bert[:, 1, :3] = 1
        return {
            "raw_text": [f"{name} text {i}" for i in range(count)],
            "audio": rng.random((count, la, 4)),
            "vision": rng.random((count, lv, 4)).astype(np.float32),
            "text_bert": text_bert,
            "audio_lengths": [la] * count,
            "vision_lengths": [lv - 1] * count,
            "id": np.array([f"{name}{i}$_{i}" for i in range(count)], dtype=object),
            "regression_labels": np.linspace(-2, 2, count).astype(np.float32),
            "annotations": np.array(["Positive"] * count, dtype=object),
        }

    names = ("train", "valid", "test")
    return {name: split(name, count) for name, count in zip(names, n, strict=True)}


def _with(changes: dict[tuple[str, str], Callable[[int], Raw]], n=(4, 2, 2)) -> bytes:
    data = mmsa(n)
    for (split, key), make in changes.items():
        data[split][key] = make(len(data[split]["id"]))
    return dumps(data)


def _shared_text(count: int, width: int = 1000, fanout: int = 64) -> Raw:
    """raw_text: ``count`` references to a list of ``fanout`` references to a list of
    ``fanout`` references to one string of ``width`` characters."""
    base = 900_000  # memo indices far from the ones pickle uses for the rest of the file
    code = op_str("x" * width) + op_put(base) + b"0"  # POP: kept in the memo only
    for level in (1, 2):
        code += b"]" + op_put(base + level) + b"(" + op_get(base + level - 1) * fanout + b"e"
        code += b"0"  # POP: the list stays in the memo only
    code += b"]" + b"(" + op_get(base + 2) * count + b"e"
    return Raw(code)


def red_team() -> dict[str, bytes]:
    object_records = record_dtype(OBJECT, 0, 8, flags=0)
    bare_objects = op_dtype("O8", simple_state("|", flags=0))  # NumPy's own flags are 63
    far_field = record_dtype(FLOAT64, 4096, 8, flags=0)
    every = ("train", "valid", "test")
    return {
        "redteam-a-object-field-flags-0": _with(
            {("train", "id"): lambda n: Raw(array((n,), object_records, b"A" * 8 * n))}),
        "redteam-a2-object-dtype-flags-0": _with(
            {("train", "id"): lambda n: Raw(array((n,), bare_objects, b"A" * 8 * n))}),
        "redteam-b-field-offset-past-itemsize": _with(
            {("train", "id"): lambda n: Raw(array((n,), far_field, b"B" * 8 * n))}),
        "redteam-c-reconstruct-without-data": _with(
            {("train", "audio"): lambda n: Raw(reconstruct((n, 3, 4), b"f"))}),
        "redteam-d-bytearray-2e9": whole(
            op_call(op_global("builtins", "bytearray"), op_int(2_000_000_000))),
        "redteam-e-shared-references": _with(
            {("train", "raw_text"): _shared_text}, n=(40, 2, 2)),
        "redteam-f-declared-array-no-data": _with(
            {(s, "vision"): lambda n: Raw(reconstruct((n, 6000, 1000), b"f")) for s in every},
            n=(20, 10, 10)),
    }


def hostile() -> dict[str, bytes]:
    """One pickle per cap or refusal of the reader (small; the fuzzer mutates them)."""
    nested = b"]" * 5000 + b"a" * 4999
    colliding = b"}(" + b"".join(
        b"\x8a\x09" + (k * ((1 << 61) - 1)).to_bytes(9, "little", signed=True) + b"N"
        for k in range(1, 40)) + b"u"
    cycle = b"]" + op_put(0) + op_get(0) + b"a"
    return {
        "hostile-calls-builtins-print": whole(
            op_call(op_global("builtins", "print"), op_str("this pickle called print"))),
        "hostile-deep-nesting": whole(nested),
        "hostile-colliding-int-keys": whole(colliding),
        "hostile-list-containing-itself": whole(cycle),
        "hostile-binbytes8-of-2-40": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xx.",
        "hostile-frame-of-2-40": b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"N.",
        "hostile-long4-of-2-30": b"\x80\x02\x8b" + struct.pack("<i", 1 << 30) + b"\x01.",
        "hostile-dtype-with-metadata": whole(array((1,), op_dtype("f8", op_tuple(
            op_int(4), op_str("<"), NONE, NONE, NONE, op_int(-1), op_int(-1), op_int(0),
            b"}")), bytes(8))),
        "hostile-array-short-data": whole(array((2, 3), FLOAT64, bytes(40))),
        "hostile-unicode-not-characters": whole(array(
            (1,), op_dtype("U1", simple_state("<", 4, 4, 8)), b"\xff\xff\xff\xff")),
        "hostile-build-on-a-dict": whole(b"}" + op_tuple(op_int(1)) + b"b"),
        "hostile-bytearray-of-a-size": whole(
            op_call(op_global("__builtin__", "bytearray"), op_int(100))),
        "hostile-global-newobj": whole(
            op_global("collections", "OrderedDict") + b")\x81"),
        "hostile-text-int-of-5000-digits": b"I" + b"9" * 5000 + b"\n.",
    }


def genuine() -> dict[str, bytes]:
    data = mmsa()
    data["train"]["extra_scalar"] = np.float64(1.5)
    data["train"]["fortran"] = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    data["train"]["flags"] = np.array([True, False])
    return {f"genuine-protocol-{p}": pickle.dumps(data, protocol=p) for p in (0, 2, 4, 5)}


def corpus() -> dict[str, bytes]:
    """Every file of the corpus: name (without ``.pkl``) -> bytes."""
    return {**genuine(), **red_team(), **hostile()}


def main(folder: str | None = None) -> None:
    out = Path(folder) if folder else CORPUS
    out.mkdir(parents=True, exist_ok=True)
    for name, data in corpus().items():
        (out / f"{name}.pkl").write_bytes(data)
    print(f"wrote {len(corpus())} files to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
