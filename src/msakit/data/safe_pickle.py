"""msakit's own pickle reader: it rebuilds data and never hands the file's state to NumPy.

Unpickling calls whatever functions a file names, and even an allowlist of NumPy names is not
enough: ``numpy.dtype.__setstate__`` trusts the state it is given (a dtype whose object field
has its "holds objects" flags cleared makes NumPy read pointers from the file's bytes), and
``numpy.core.multiarray._reconstruct`` accepts an array with no data (uninitialised memory).
So this module does not use :class:`pickle.Unpickler` at all. It is an opcode-level reader: it
interprets the pickle opcodes of protocols 0-5 itself, one at a time, over the file's bytes,
and builds every value with msakit's code:

* containers, strings and numbers from the opcodes, as pickle does (no call);
* a NumPy dtype only from an allowlisted simple type code (``b1``, ``i1``-``i8``,
  ``u1``-``u8``, ``f2``-``f8``, ``U<n>``/``S<n>`` of at most :data:`TEXT_WIDTH_LIMIT`
  characters, ``O8`` for object arrays), and only when the state the file gives is exactly the
  state NumPy itself pickles for that dtype (no fields, names, offsets, forced flags); NumPy's
  ``__setstate__`` is never called;
* an array only from raw bytes of exactly ``prod(shape) * itemsize`` bytes, by
  :func:`numpy.frombuffer` (read-only views of the file's bytes; bools normalised to 0/1,
  unicode checked to hold code points); an object array only from a list of strings and
  numbers, filled in by msakit;
* NumPy scalars the same way (``scalar(dtype, bytes)`` with exactly ``itemsize`` bytes).

The names a file may call (``GLOBAL``/``STACK_GLOBAL`` + ``REDUCE``) resolve to msakit's own
reconstructors, never to the Python or NumPy function of that name: NumPy 1.x's
``numpy.core.multiarray._reconstruct``/``scalar`` and ``numpy.core.numeric._frombuffer``,
NumPy 2.x's ``numpy._core`` spellings, ``numpy.ndarray``/``numpy.dtype``, ``_codecs.encode``
(latin-1 only: protocols 0-2 store bytes that way), ``collections.OrderedDict`` (read as a
dict), ``bytes()``, ``bytearray`` of a given bytes object (never of a size), ``set`` and
``frozenset``. Anything else (``os.system``, ``NEWOBJ``, ``BUILD`` on anything but msakit's
dtype and array, persistent ids, out-of-band buffers) is refused when it is read. Protocol 5's
in-band buffers (``BYTEARRAY8``) are read as the bytes they hold.

Why an opcode reader rather than a ``pickle.Unpickler`` subclass with a ``find_class`` that
returns msakit's callables: the C unpickler allocates what the file declares before reading
it (``BINBYTES8`` of 2**40 bytes, a ``FRAME`` of any size), keeps no count of what shared
references (the memo) expand to, and lets a ``BUILD`` reach objects msakit did not make. Here
every length is checked against the bytes left in the file before anything is allocated, and
every value carries its size, so the caps below hold whatever the bytes are.

Caps, each one :class:`~msakit.core.errors.MsakitError` line naming the file (``refused: ...``):

* decoded bytes <= :data:`EXPANSION` x the file's size + :data:`ALLOWANCE`, where every object
  counts :data:`REFERENCE_BYTES` plus its payload (bytes: their length, strings
  :data:`CHAR_BYTES` per character, arrays their ``nbytes``), and every shared reference
  (``GET``, ``DUP``) counts the whole of what it refers to again, as a consumer that walks the
  result sees it: a small pickle that expands to hundreds of MB through references is refused;
* elements (objects, each shared reference counting all the objects it reaches) <=
  :data:`ELEMENT_EXPANSION` x the file's size + :data:`ELEMENT_ALLOWANCE`;
* containers nested at most :data:`DEPTH_LIMIT` deep (and as many open ``MARK``\\s);
* a container may not change once it is referenced twice (no cycles); dict keys and set items
  are strings, bytes, booleans or integers below 2**61 (no crafted hash collisions);
* numbers written as text (protocol 0) and ``LONG4`` integers at most :data:`NUMBER_LIMIT`
  digits or bytes.

Time is linear in the file's size plus the decoded bytes. Any input either loads or raises
:class:`MsakitError` (fuzzed: ``tests/fuzz``; hostile cases: ``tests/test_safe_pickle.py``).
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import re
import struct
from collections.abc import Callable
from typing import IO, Any, Protocol

import numpy as np

from msakit.core.errors import MsakitError

__all__ = [
    "restricted_load",
    "EXPANSION",
    "ALLOWANCE",
    "ELEMENT_EXPANSION",
    "ELEMENT_ALLOWANCE",
    "DEPTH_LIMIT",
    "REFERENCE_BYTES",
    "CHAR_BYTES",
    "TEXT_WIDTH_LIMIT",
    "NUMBER_LIMIT",
]

EXPANSION = 16
"""Decoded bytes may be at most this many times the file's size (plus :data:`ALLOWANCE`)."""
ALLOWANCE = 64 << 20
"""Decoded bytes any file may have beyond ``EXPANSION * size`` (64 MiB)."""
ELEMENT_EXPANSION = 4
"""Elements may be at most this many per byte of the file (plus :data:`ELEMENT_ALLOWANCE`)."""
ELEMENT_ALLOWANCE = 1 << 20
DEPTH_LIMIT = 32
"""Deepest nesting of containers (an MMSA file nests 4 deep: dict, split, list, item)."""
REFERENCE_BYTES = 8
"""What every object counts besides its payload (the reference that holds it)."""
CHAR_BYTES = 4
"""What a character of a string counts (NumPy's unicode arrays take 4 bytes per character)."""
TEXT_WIDTH_LIMIT = 1 << 20
"""Widest ``U``/``S`` dtype, in characters."""
NUMBER_LIMIT = 1024
"""Most digits of a number written as text, most bytes of a ``LONG4`` integer."""
_MAX_DIMS = 32
_HASH_SAFE = 1 << 61  # integers below this hash to distinct values (no crafted collisions)
_MEMO_LIMIT = 1 << 32  # LONG_BINPUT's range


class _Truncated(Exception):
    """The file ends before the pickle does."""


class _Corrupt(Exception):
    """Not a pickle (message: what is wrong)."""


class _Refused(Exception):
    """A pickle that a feature file never is (message: what it holds)."""


class _Disallowed(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class _Callable:
    """A name the file may call: stands for one of msakit's reconstructors."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_BUILTINS = ("builtins", "__builtin__")
_NAMES: dict[tuple[str, str], str] = {
    **{(m, "_reconstruct"): "reconstruct" for m in _MULTIARRAY},
    **{(m, "scalar"): "scalar" for m in _MULTIARRAY},
    **{(m, "_frombuffer"): "frombuffer" for m in _NUMERIC},
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
    ("collections", "OrderedDict"): "ordereddict",
    **{(b, n): n for b in _BUILTINS for n in ("bytes", "bytearray", "set", "frozenset")},
}
_CALLABLES = {kind: _Callable(kind) for kind in set(_NAMES.values())}
# Simple dtypes, as NumPy's dtype.__reduce__ spells them.
_DTYPE_CODE = re.compile(r"b1|[iu][1248]|f[248]|[US][1-9][0-9]{0,6}|O[48]")


class _Node:
    """A value on the stack or in the memo, with what it costs.

    ``size`` and ``count``: decoded bytes and elements of the value as a walk of it sees them
    (shared references counted each time); ``plain``: data (not a callable, a dtype, or a tuple
    holding one); ``pending``: "dtype" or "array" until its ``BUILD``; ``sealed``: referenced
    twice or inside another value, so it may not change any more.
    """

    __slots__ = ("value", "size", "count", "depth", "plain", "pending", "sealed")

    def __init__(self, value: Any, size: int, *, count: int = 1, depth: int = 0,
                 plain: bool = True, pending: str | None = None) -> None:
        self.value, self.size, self.count, self.depth = value, size, count, depth
        self.plain, self.pending, self.sealed = plain, pending, False


class Readable(Protocol):
    """A binary file as :func:`restricted_load` reads it (``fileno`` and ``tell`` are used
    where it has them)."""

    def read(self, n: int = -1, /) -> bytes: ...


def restricted_load(
    source: Readable | bytes | bytearray | memoryview, path: str = "<pickle>", *,
    size: int | None = None,
) -> Any:
    """The data the pickle ``source`` (a binary file positioned at the pickle, or its bytes)
    holds, rebuilt by msakit (see the module docstring); ``size`` is the number of bytes left
    in the file (default: from ``fstat``), which the caps scale with.

    Raises :class:`MsakitError`, one line naming ``path``, for anything that is not a pickle
    of plain data and arrays, is truncated, or exceeds a cap; never anything else for any bytes.
    """
    f, size = _opened(source, size)
    reader = _Reader(f, size)
    try:
        return reader.run()
    except _Truncated:
        raise MsakitError(f"{path}: the file is truncated (ended inside the pickle)") from None
    except _Disallowed as e:
        raise MsakitError(
            f"{path}: refused: the pickle calls {_short(e.module)}.{_short(e.name)}, which a "
            "feature file never holds (only dicts, lists, tuples, strings, numbers and NumPy "
            "arrays are allowed); nothing was run"
        ) from None
    except _Refused as e:
        raise MsakitError(f"{path}: refused: the pickle holds {e}; nothing was run") from None
    except (_Corrupt, ValueError) as e:  # ValueError: bad text numbers, encodings, escapes
        detail = str(e) if isinstance(e, _Corrupt) else f"{type(e).__name__}: {_short(str(e))}"
        raise MsakitError(
            f"{path}: not an MMSA pickle or msakit npz feature file ({detail}, at byte "
            f"{reader.position})"
        ) from None
    except OSError as e:
        raise MsakitError(f"{path}: cannot read: {e.strerror or e}") from None


def _opened(source: Any, size: int | None) -> tuple[IO[bytes], int]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return io.BytesIO(data), len(data) if size is None else min(size, len(data))
    if size is None:
        try:
            size = os.fstat(source.fileno()).st_size - source.tell()
        except (OSError, AttributeError, io.UnsupportedOperation):
            data = source.read()
            return io.BytesIO(data), len(data)
    return source, max(0, int(size))


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut for an error line (a file chooses it)."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types, all the way down tuples (no NumPy comparison runs)."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _kind(value: Any) -> str:
    """``value``'s type for an error line: 'an int', 'a dict', 'the callable dtype'."""
    if isinstance(value, _Callable):
        return f"the callable {value.kind}"
    if isinstance(value, np.dtype):
        return "a bare dtype"
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


class _Reader:
    """The pickle machine: a stack, marks and a memo of :class:`_Node`\\s, opcodes read one by
    one from ``f`` (at most ``size`` bytes)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.size, self.left = f, size, size
        self.byte_limit = EXPANSION * size + ALLOWANCE
        self.element_limit = ELEMENT_EXPANSION * size + ELEMENT_ALLOWANCE
        self.decoded = self.elements = 0
        self.stack: list[_Node] = []
        self.marks: list[list[_Node]] = []
        self.memo: dict[int, _Node] = {}

    @property
    def position(self) -> int:
        return self.size - self.left

    def run(self) -> Any:
        dispatch = _DISPATCH
        while True:
            code = self.take(1)
            op = dispatch.get(code)
            if op is None:
                raise _Corrupt(f"unknown opcode {code!r}")
            if op is _op_stop:
                return _op_stop(self)
            op(self)

    # -- bytes of the file
    def take(self, n: int) -> bytes:
        if n > self.left:
            raise _Truncated
        data = self.f.read(n)
        if len(data) != n:
            raise _Truncated
        self.left -= n
        return data

    def line(self, limit: int | None = None) -> bytes:
        """One text line without its newline; ``limit``: most characters allowed (numbers)."""
        most = self.left if limit is None else min(self.left, limit + 1)
        data = self.f.readline(most) if most > 0 else b""
        self.left -= len(data)
        if data.endswith(b"\n"):
            return data[:-1]
        if limit is not None and len(data) > limit:
            raise _Refused(f"a number written with more than {limit} characters")
        raise _Truncated

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    # -- accounting
    def charge(self, size: int, count: int) -> None:
        self.decoded += size
        self.elements += count
        if self.decoded > self.byte_limit:
            raise _Refused(
                f"more than {self.byte_limit:,} decoded bytes ({EXPANSION} x the file's "
                f"{self.size:,} bytes + {ALLOWANCE >> 20} MiB; shared references count each "
                "time): a feature file never expands like this"
            )
        if self.elements > self.element_limit:
            raise _Refused(
                f"more than {self.element_limit:,} elements ({ELEMENT_EXPANSION} per byte of "
                f"the file + {ELEMENT_ALLOWANCE:,}; shared references count each time)"
            )

    def new(self, value: Any, payload: int = 0, **kw: Any) -> _Node:
        node = _Node(value, REFERENCE_BYTES + payload, **kw)
        self.charge(node.size, node.count)
        return node

    def push_new(self, value: Any, payload: int = 0) -> None:
        self.stack.append(self.new(value, payload))

    # -- the stack
    def pop(self) -> _Node:
        if not self.stack:
            raise _Corrupt("stack underflow")
        return self.stack.pop()

    def top(self) -> _Node:
        if not self.stack:
            raise _Corrupt("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[_Node]:
        if not self.marks:
            raise _Corrupt("no MARK on the stack")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def reference(self, node: _Node) -> None:
        """Push ``node`` a second time (``GET``, ``DUP``): it counts again, and is sealed."""
        if node.pending:
            raise _Refused(f"a {node.pending} used before it is built")
        self.charge(node.size, node.count)
        node.sealed = True
        self.stack.append(node)

    def adopt(self, parent: _Node, items: list[_Node], *, plain_only: bool = True) -> None:
        """Account for ``items`` becoming part of ``parent`` (sizes, depth; items sealed)."""
        for item in items:
            if item.pending:
                raise _Refused(f"a {item.pending} used before it is built")
            if plain_only and not item.plain:
                raise _Refused(f"{_kind(item.value)} inside a {type(parent.value).__name__}")
            item.sealed = True
            parent.size += item.size
            parent.count += item.count
            parent.depth = max(parent.depth, item.depth + 1)
            parent.plain = parent.plain and item.plain
        if parent.depth > DEPTH_LIMIT:
            raise _Refused(f"containers nested deeper than {DEPTH_LIMIT} levels")

    def mutable(self, kind: type) -> _Node:
        """The container on top of the stack, which the next opcode fills."""
        node = self.top()
        if type(node.value) is not kind or not node.plain:
            raise _Corrupt(f"cannot add items to {_kind(node.value)}")
        if node.sealed:
            raise _Refused(f"a {kind.__name__} changed after it was referenced (a cycle)")
        return node


# ----------------------------------------------------------------------------- opcodes
def _op_stop(r: _Reader) -> Any:
    if len(r.stack) != 1 or r.marks:
        raise _Corrupt("the pickle does not end with one value")
    node = r.stack[0]
    if node.pending or not node.plain:
        raise _Refused(f"{_kind(node.value)} as its content" if not node.pending
                       else f"a {node.pending} that is never built")
    return node.value


def _op_proto(r: _Reader) -> None:
    version = r.take(1)[0]
    if version > pickle.HIGHEST_PROTOCOL:
        raise _Corrupt(f"unsupported pickle protocol {version}")


def _op_frame(r: _Reader) -> None:
    if r.unpack("<Q") > r.left:
        raise _Truncated


def _op_mark(r: _Reader) -> None:
    if len(r.marks) >= DEPTH_LIMIT + 8:
        raise _Refused(f"containers nested deeper than {DEPTH_LIMIT} levels")
    r.marks.append(r.stack)
    r.stack = []


def _op_pop(r: _Reader) -> None:
    if r.stack:
        r.stack.pop()
    else:
        r.pop_mark()


def _op_dup(r: _Reader) -> None:
    r.reference(r.top())


def _memo_index(value: int) -> int:
    if not 0 <= value < _MEMO_LIMIT:
        raise _Corrupt(f"memo index {value} out of range")
    return value


def _op_put(r: _Reader, fmt: str | None) -> None:
    index = int(r.line(NUMBER_LIMIT)) if fmt is None else r.unpack(fmt)
    r.memo[_memo_index(index)] = r.top()


def _op_memoize(r: _Reader) -> None:
    r.memo[len(r.memo)] = r.top()


def _op_get(r: _Reader, fmt: str | None) -> None:
    index = int(r.line(NUMBER_LIMIT)) if fmt is None else r.unpack(fmt)
    node = r.memo.get(_memo_index(index))
    if node is None:
        raise _Corrupt(f"memo index {index} was never stored")
    r.reference(node)


def _op_const(r: _Reader, value: Any) -> None:
    r.push_new(value)


def _op_int_text(r: _Reader) -> None:
    text = r.line(NUMBER_LIMIT)
    r.push_new(False if text == b"00" else True if text == b"01" else int(text))


def _op_long_text(r: _Reader) -> None:
    text = r.line(NUMBER_LIMIT)
    r.push_new(int(text[:-1] if text.endswith(b"L") else text))


def _op_float_text(r: _Reader) -> None:
    r.push_new(float(r.line(NUMBER_LIMIT)))


def _op_fixed(r: _Reader, fmt: str) -> None:
    r.push_new(r.unpack(fmt))


def _op_long_bytes(r: _Reader, fmt: str) -> None:
    n = r.unpack(fmt)
    if n < 0:
        raise _Corrupt("negative byte count")
    if n > NUMBER_LIMIT:
        raise _Refused(f"an integer of {n:,} bytes")
    r.push_new(int.from_bytes(r.take(n), "little", signed=True), n)


def _counted(r: _Reader, fmt: str) -> bytes:
    n = r.unpack(fmt)
    if n < 0:
        raise _Corrupt("negative byte count")
    return r.take(n)  # checked against the bytes left before anything is allocated


def _op_bytes(r: _Reader, fmt: str) -> None:
    data = _counted(r, fmt)
    r.push_new(data, len(data))


def _op_unicode(r: _Reader, fmt: str) -> None:
    text = str(_counted(r, fmt), "utf-8", "surrogatepass")
    r.push_new(text, CHAR_BYTES * len(text))


def _op_unicode_text(r: _Reader) -> None:
    text = str(r.line(), "raw-unicode-escape")
    r.push_new(text, CHAR_BYTES * len(text))


def _op_py2_string(r: _Reader, fmt: str | None) -> None:
    """Python 2 ``str``: decoded as ASCII, as :func:`pickle.load` does by default."""
    if fmt is None:
        data = r.line()
        if len(data) < 2 or data[0] != data[-1] or data[:1] not in (b"'", b'"'):
            raise _Corrupt("the STRING opcode argument must be quoted")
        data = codecs.escape_decode(data[1:-1])[0]
    else:
        data = _counted(r, fmt)
    text = data.decode("ascii")
    r.push_new(text, CHAR_BYTES * len(text))


def _op_empty(r: _Reader, kind: type) -> None:
    r.push_new(kind())


def _op_list(r: _Reader) -> None:
    items = r.pop_mark()
    node = r.new([])
    r.adopt(node, items)
    node.value.extend(item.value for item in items)
    r.stack.append(node)


def _op_dict(r: _Reader) -> None:
    items = r.pop_mark()
    node = r.new({})
    r.stack.append(node)
    _set_items(r, node, items)


def _tuple(r: _Reader, items: list[_Node]) -> None:
    node = r.new(tuple(item.value for item in items))
    r.adopt(node, items, plain_only=False)
    r.stack.append(node)


def _op_tuple(r: _Reader, n: int | None) -> None:
    if n is None:
        items = r.pop_mark()
    else:
        if len(r.stack) < n:
            raise _Corrupt("stack underflow")
        items = r.stack[len(r.stack) - n:]
        del r.stack[len(r.stack) - n:]
    _tuple(r, items)


def _op_append(r: _Reader, many: bool) -> None:
    items = r.pop_mark() if many else [r.pop()]
    node = r.mutable(list)
    r.adopt(node, items)
    node.value.extend(item.value for item in items)


def _op_setitem(r: _Reader, many: bool) -> None:
    items = r.pop_mark() if many else [*reversed([r.pop(), r.pop()])]
    _set_items(r, r.mutable(dict), items)


def _key(value: Any) -> Any:
    """A dict key or set item: strings, bytes, booleans and integers whose hashes cannot be
    made to collide (a file choosing colliding keys would make loading quadratic)."""
    if type(value) in (str, bytes, bool) or (type(value) is int and abs(value) < _HASH_SAFE):
        return value
    if type(value) is int:
        raise _Refused("an integer of 2**61 or more as a dict key or set item (such keys can "
                       "be chosen to collide)")
    raise _Refused(f"{_kind(value)} as a dict key or set item")


def _set_items(r: _Reader, node: _Node, items: list[_Node]) -> None:
    if len(items) % 2:
        raise _Corrupt("odd number of items for a dict")
    r.adopt(node, items)
    for key, value in zip(items[::2], items[1::2], strict=True):
        node.value[_key(key.value)] = value.value


def _op_additems(r: _Reader) -> None:
    items = r.pop_mark()
    node = r.mutable(set)
    r.adopt(node, items)
    node.value.update(_key(item.value) for item in items)


def _op_frozenset(r: _Reader) -> None:
    items = r.pop_mark()
    node = r.new(frozenset(_key(item.value) for item in items))
    r.adopt(node, items)
    r.stack.append(node)


def _op_global(r: _Reader) -> None:
    module = r.line().decode("utf-8")
    name = r.line().decode("utf-8")
    _push_global(r, module, name)


def _op_stack_global(r: _Reader) -> None:
    name, module = r.pop().value, r.pop().value
    if type(module) is not str or type(name) is not str:
        raise _Corrupt("STACK_GLOBAL needs two strings")
    _push_global(r, module, name)


def _push_global(r: _Reader, module: str, name: str) -> None:
    kind = _NAMES.get((module, name))
    if kind is None:
        raise _Disallowed(module, name)
    r.stack.append(r.new(_CALLABLES[kind], plain=False))


def _op_reduce(r: _Reader) -> None:
    args, func = r.pop(), r.pop()
    if type(args.value) is not tuple or not isinstance(func.value, _Callable):
        raise _Refused(f"a call of {_kind(func.value)} with {_kind(args.value)}")
    build = _REDUCERS.get(func.value.kind)
    if build is None:
        raise _Refused(f"a call of numpy.{func.value.kind}")
    r.stack.append(build(r, args))


def _op_build(r: _Reader) -> None:
    state = r.pop()
    node = r.top()
    if node.pending == "dtype":
        _build_dtype(r, node, state.value)
    elif node.pending == "array":
        _build_ndarray(r, node, state)
    else:
        raise _Refused(f"a BUILD (a state set) on {_kind(node.value)}")


def _op_refused(r: _Reader, what: str) -> None:
    raise _Refused(what)


_INSTANCE = "an instance of a class the file names"
_DISPATCH: dict[bytes, Callable[..., Any]] = {}


def _register(code: bytes, op: Callable[..., Any], *args: Any) -> None:
    _DISPATCH[code] = (lambda r: op(r, *args)) if args else op


for _code, _op, *_args in (
    (pickle.STOP, _op_stop), (pickle.PROTO, _op_proto), (pickle.FRAME, _op_frame),
    (pickle.MARK, _op_mark), (pickle.POP, _op_pop), (pickle.POP_MARK, lambda r: r.pop_mark()),
    (pickle.DUP, _op_dup), (pickle.MEMOIZE, _op_memoize),
    (pickle.PUT, _op_put, None), (pickle.BINPUT, _op_put, "<B"),
    (pickle.LONG_BINPUT, _op_put, "<I"), (pickle.GET, _op_get, None),
    (pickle.BINGET, _op_get, "<B"), (pickle.LONG_BINGET, _op_get, "<I"),
    (pickle.NONE, _op_const, None), (pickle.NEWTRUE, _op_const, True),
    (pickle.NEWFALSE, _op_const, False), (pickle.INT, _op_int_text),
    (pickle.LONG, _op_long_text), (pickle.FLOAT, _op_float_text),
    (pickle.BININT, _op_fixed, "<i"), (pickle.BININT1, _op_fixed, "<B"),
    (pickle.BININT2, _op_fixed, "<H"), (pickle.BINFLOAT, _op_fixed, ">d"),
    (pickle.LONG1, _op_long_bytes, "<B"), (pickle.LONG4, _op_long_bytes, "<i"),
    (pickle.BINBYTES, _op_bytes, "<I"), (pickle.SHORT_BINBYTES, _op_bytes, "<B"),
    (pickle.BINBYTES8, _op_bytes, "<Q"), (pickle.BYTEARRAY8, _op_bytes, "<Q"),
    (pickle.BINUNICODE, _op_unicode, "<I"), (pickle.SHORT_BINUNICODE, _op_unicode, "<B"),
    (pickle.BINUNICODE8, _op_unicode, "<Q"), (pickle.UNICODE, _op_unicode_text),
    (pickle.STRING, _op_py2_string, None), (pickle.BINSTRING, _op_py2_string, "<i"),
    (pickle.SHORT_BINSTRING, _op_py2_string, "<B"),
    (pickle.EMPTY_LIST, _op_empty, list), (pickle.EMPTY_DICT, _op_empty, dict),
    (pickle.EMPTY_TUPLE, _op_empty, tuple), (pickle.EMPTY_SET, _op_empty, set),
    (pickle.LIST, _op_list), (pickle.DICT, _op_dict), (pickle.TUPLE, _op_tuple, None),
    (pickle.TUPLE1, _op_tuple, 1), (pickle.TUPLE2, _op_tuple, 2),
    (pickle.TUPLE3, _op_tuple, 3), (pickle.APPEND, _op_append, False),
    (pickle.APPENDS, _op_append, True), (pickle.SETITEM, _op_setitem, False),
    (pickle.SETITEMS, _op_setitem, True), (pickle.ADDITEMS, _op_additems),
    (pickle.FROZENSET, _op_frozenset), (pickle.GLOBAL, _op_global),
    (pickle.STACK_GLOBAL, _op_stack_global), (pickle.REDUCE, _op_reduce),
    (pickle.BUILD, _op_build),
    (pickle.PERSID, _op_refused, "a persistent id"),
    (pickle.BINPERSID, _op_refused, "a persistent id"),
    (pickle.INST, _op_refused, _INSTANCE), (pickle.OBJ, _op_refused, _INSTANCE),
    (pickle.NEWOBJ, _op_refused, _INSTANCE), (pickle.NEWOBJ_EX, _op_refused, _INSTANCE),
    (pickle.EXT1, _op_refused, "an extension-registry object"),
    (pickle.EXT2, _op_refused, "an extension-registry object"),
    (pickle.EXT4, _op_refused, "an extension-registry object"),
    (pickle.NEXT_BUFFER, _op_refused, "an out-of-band buffer"),
    (pickle.READONLY_BUFFER, _op_refused, "an out-of-band buffer"),
):
    _register(_code, _op, *_args)


# ----------------------------------------------------------------------------- reconstructors
def _reduce_reconstruct(r: _Reader, args: _Node) -> _Node:
    """NumPy's ``_reconstruct(ndarray, (0,), b'b')``: an array that its ``BUILD`` makes."""
    a = args.value
    if not (len(a) == 3 and a[0] is _CALLABLES["ndarray"] and _same(a[1:], ((0,), b"b"))):
        raise _Refused("numpy's _reconstruct with arguments other than an ndarray's")
    return r.new(None, plain=False, pending="array")


def _reduce_dtype(r: _Reader, args: _Node) -> _Node:
    """``numpy.dtype(code, False, True)``: a dtype that its ``BUILD`` makes."""
    a = args.value
    if not (len(a) == 3 and type(a[0]) is str and _same(a[1:], (False, True))):
        raise _Refused("numpy.dtype with arguments other than a type code")
    if not _DTYPE_CODE.fullmatch(a[0]) or (a[0][0] in "US" and int(a[0][1:]) > TEXT_WIDTH_LIMIT):
        raise _Refused(f"a dtype of type code {_short(repr(a[0]), 20)} (only booleans, "
                       "integers, floats, strings and object arrays of them)")
    return r.new(a[0], plain=False, pending="dtype")


def _build_dtype(r: _Reader, node: _Node, state: Any) -> None:
    """Resolve a pending dtype: its state must be what NumPy pickles for the simple dtype."""
    code = node.value
    order = state[1] if type(state) is tuple and len(state) > 1 else None
    dtype = None
    if type(order) is str and order in ("<", ">", "|"):
        try:
            dtype = np.dtype(code)
        except TypeError:  # O4 on a 64-bit machine
            dtype = None
    if dtype is not None:
        dtype = dtype.newbyteorder(order) if order != "|" else dtype
        reference = dtype.__reduce__()
        if not _same(reference[1], (code, False, True)) or not _same(state, reference[2]):
            dtype = None
    if dtype is None:
        raise _Refused(f"a dtype {code} whose state is not NumPy's for that type (fields, "
                       "offsets or flags of its own)")
    node.value, node.pending = dtype, None


def _shape_count(shape: Any) -> int:
    if (type(shape) is not tuple or len(shape) > _MAX_DIMS
            or any(type(d) is not int or d < 0 for d in shape)):
        raise _Refused(f"an array shape that is not a tuple of at most {_MAX_DIMS} sizes")
    count = 1
    for d in shape:
        count *= max(d, 1)
    if count >= 1 << 62:
        raise _Refused("an array shape of more than 2**62 elements")
    return count if 0 not in shape else 0


def _checked_values(arr: np.ndarray) -> np.ndarray:
    """Bytes that NumPy would misread made safe: booleans other than 0/1 (normalised), unicode
    code units that are not code points (refused); the machine's byte order (a copy), as
    NumPy's unpickling gives."""
    if arr.dtype.kind == "b":
        return arr.view(np.uint8) != 0
    if arr.dtype.kind == "U" and arr.size:
        units = arr.view(np.dtype("u4").newbyteorder(arr.dtype.byteorder))
        if (units > 0x10FFFF).any():
            raise _Refused("a unicode array holding values that are not characters")
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _numeric_array(dtype: np.dtype, shape: Any, data: Any, fortran: bool) -> np.ndarray:
    count = _shape_count(shape)
    if type(data) not in (bytes, bytearray):
        raise _Refused(f"array data that are {_kind(data)}, not bytes")
    if count * dtype.itemsize != len(data):
        raise _Refused(
            f"an array of shape {shape} and dtype {dtype} ({count * dtype.itemsize:,} bytes) "
            f"with {len(data):,} bytes of data"
        )
    arr = _checked_values(np.frombuffer(data, dtype=dtype))
    return arr.reshape(shape, order="F" if fortran else "C")


def _object_array(shape: Any, data: Any, fortran: bool) -> np.ndarray:
    count = _shape_count(shape)
    if type(data) is not list or len(data) != count:
        raise _Refused(f"an object array of shape {shape} whose data are not a list of "
                       f"{count:,} items")
    for item in data:
        if not (type(item) in (str, bytes, int, float, bool)
                or (isinstance(item, np.generic) and item.dtype.kind != "O")):
            raise _Refused(f"an object array holding {_kind(item)} (only strings and numbers)")
    out = np.empty(count, dtype=object)
    for i, item in enumerate(data):
        out[i] = item
    return out.reshape(shape, order="F" if fortran else "C")


def _build_ndarray(r: _Reader, node: _Node, state: _Node) -> None:
    """Resolve a pending array from its state ``(1, shape, dtype, fortran, data)``."""
    s = state.value
    if not (type(s) is tuple and len(s) == 5 and _same(s[0], 1) and isinstance(s[2], np.dtype)
            and type(s[3]) is bool):
        raise _Refused("an array state other than NumPy's (1, shape, dtype, order, data)")
    _, shape, dtype, fortran, data = s
    if dtype.kind == "O":
        arr = _object_array(shape, data, fortran)
        size, count = REFERENCE_BYTES * (1 + arr.size), 1 + arr.size
        node.size, node.count, node.depth = REFERENCE_BYTES + state.size, state.count, 1
    else:
        arr = _numeric_array(dtype, shape, data, fortran)
        size, count = REFERENCE_BYTES + arr.nbytes, 1
        node.size, node.count = size, count
    r.charge(size, count)
    node.value, node.pending, node.plain = arr, None, True


def _reduce_frombuffer(r: _Reader, args: _Node) -> _Node:
    """NumPy's protocol-5 ``_frombuffer(buffer, dtype, shape, order)``."""
    a = args.value
    if not (len(a) == 4 and isinstance(a[1], np.dtype) and a[1].kind != "O"
            and type(a[3]) is str and a[3] in ("C", "F")):
        raise _Refused("numpy's _frombuffer with arguments other than an array's")
    arr = _numeric_array(a[1], a[2], a[0], a[3] == "F")
    return r.new(arr, arr.nbytes)


def _reduce_scalar(r: _Reader, args: _Node) -> _Node:
    """NumPy's ``scalar(dtype, bytes)``: one value of a simple dtype."""
    a = args.value
    if not (len(a) == 2 and isinstance(a[0], np.dtype) and a[0].kind != "O"
            and type(a[1]) is bytes and len(a[1]) == a[0].itemsize):
        raise _Refused("a NumPy scalar other than one value of a simple dtype")
    value = _checked_values(np.frombuffer(a[1], dtype=a[0]))[0]
    return r.new(value, a[0].itemsize)


def _reduce_encode(r: _Reader, args: _Node) -> _Node:
    """``_codecs.encode(text, 'latin1')``: how protocols 0-2 store bytes."""
    a = args.value
    if not (len(a) == 2 and type(a[0]) is str and type(a[1]) is str
            and a[1] in ("latin1", "latin-1")):
        raise _Refused("_codecs.encode other than to latin-1")
    data = a[0].encode("latin-1")
    return r.new(data, len(data))


def _reduce_bytes(r: _Reader, args: _Node) -> _Node:
    if len(args.value):
        raise _Refused("bytes() with arguments")
    return r.new(b"")


def _reduce_bytearray(r: _Reader, args: _Node) -> _Node:
    """``bytearray(b)`` of a bytes object the file holds; never ``bytearray(size)``."""
    a = args.value
    if not a:
        return r.new(bytearray())
    if len(a) != 1 or type(a[0]) not in (bytes, bytearray):
        raise _Refused(f"bytearray({_kind(a[0])}) (only a copy of bytes the file holds)")
    return r.new(bytearray(a[0]), len(a[0]))


def _reduce_set(r: _Reader, args: _Node, kind: type) -> _Node:
    """``set(items)``/``frozenset(items)`` (protocols 0-3) of a list or tuple."""
    a = args.value
    if not a:
        return r.new(kind())
    if len(a) != 1 or type(a[0]) not in (list, tuple):
        raise _Refused(f"{kind.__name__} of {_kind(a[0])}")
    node = r.new(kind(_key(x) for x in a[0]), REFERENCE_BYTES * len(a[0]))
    node.size, node.count, node.depth = node.size + args.size, node.count + args.count, args.depth
    return node


def _reduce_ordereddict(r: _Reader, args: _Node) -> _Node:
    if len(args.value):
        raise _Refused("collections.OrderedDict with arguments")
    return r.new({})  # filled by SETITEMS; read as a plain dict


_REDUCERS: dict[str, Callable[[_Reader, _Node], _Node]] = {
    "reconstruct": _reduce_reconstruct,
    "dtype": _reduce_dtype,
    "frombuffer": _reduce_frombuffer,
    "scalar": _reduce_scalar,
    "encode": _reduce_encode,
    "bytes": _reduce_bytes,
    "bytearray": _reduce_bytearray,
    "set": lambda r, args: _reduce_set(r, args, set),
    "frozenset": lambda r, args: _reduce_set(r, args, frozenset),
    "ordereddict": _reduce_ordereddict,
}
