"""Structure-aware mutations of the fuzz targets' files.

A mutation takes a file (bytes) and a ``random.Random`` and returns another file. Each format
has its own mutations that keep most of the structure, so that inputs get past the first checks
and reach the deep ones, plus the byte-level ones every format gets:

* ``pickle``: opcode-level edits (the ``FRAME`` opcodes dropped first, so lengths stay
  consistent): an opcode deleted, duplicated or moved, an integer, string or bytes argument
  replaced (dtype codes, shapes, key names, sizes); and value-level edits of a freshly generated
  MMSA file (``msakit.data.synthetic``): arrays of another dtype or shape, NaN, huge values,
  missing keys, foreign types, shared or deeply nested containers, in every pickle protocol;
* ``npz``: ``.npy`` headers of members rewritten (``descr``, ``shape``, ``fortran_order``),
  members dropped, renamed, duplicated, compressed; value-level edits as for pickles;
* ``yaml``, ``json``, ``csv``: documents parsed (YAML: only the trusted seeds, an untrusted
  document may be an alias bomb) and edited as trees or rows (a value replaced by a nasty one,
  a key deleted or added, deep nesting), re-serialised; plus text snippets (aliases, tags, deep
  brackets, quotes, NUL, a huge field, a BOM, invalid UTF-8);
* ``torch``: value-level edits of the trusted seed checkpoint (configuration, dims, weights:
  shapes, dtypes, NaN, missing or extra keys, huge sizes), saved with ``torch.save``; and opcode
  edits of the ``data.pkl`` inside the checkpoint's zip;
* ``safetensors``: a seed folder's ``model.safetensors`` with its header edited (the header
  length, a tensor's dtype, shape or offsets, entries dropped or renamed, the metadata strings)
  or its tensor bytes cut.

Nothing here unpickles an input (the corpus holds hostile pickles): value-level edits start from
content generated here or from the seeds ``make_seeds.py`` wrote.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import pickle
import pickletools
import random
import re
import struct
import zipfile
from collections.abc import Callable
from typing import Any

INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 8, 255, 256, -129, 2**15, 2**16, 2**31 - 1, -2**31,
                    2**32, 2**40, 2**62, 2**63 - 1, -2**63, 2**64, 10**30)
NASTY_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**63, -10**30, 10**40, 0.0, -0.0,
    1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan, "", " ", "x" * 70000, "\x00", "nan",
    "inf", "1e999", "-3", "../../../etc/passwd", "~", "é中文", "a\nb", "'", '"', [], {}, [None],
    {"": None}, [[[[[]]]]], "0x10", "1_000", "yes", "off", "null",
)
NASTY_STRINGS = ("", "<f4", "<f8", "<f2", "|O", "O", "<i8", "<i4", "|u1", "|b1", "V8", "<U4",
                 "|S4", "<c8", "M8[s]", ">f4", "numpy", "ndarray", "dtype", "_reconstruct",
                 "bytearray", "train", "valid", "test", "audio", "vision", "text", "text_bert",
                 "audio_lengths", "vision_lengths", "regression_labels", "id", "raw_text",
                 "b", "C", "F", "latin1", "bytes", "x" * 300)


# --------------------------------------------------------------------------- bytes
def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    b = bytearray(data)
    i = rng.randrange(len(b))
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _interesting_int(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    fmt = rng.choice(("<b", "<h", "<i", "<q", ">i"))
    size = struct.calcsize(fmt)
    if len(b) < size:
        return data
    value = rng.choice((0, -1, 1, 2**7 - 1, -(2**7))) if size == 1 else rng.choice(
        (0, -1, 1, 2**(8 * size - 1) - 1, -(2**(8 * size - 1)), 4096, 2**(4 * size)))
    i = rng.randrange(len(b) - size + 1)
    b[i:i + size] = struct.pack(fmt, value)
    return bytes(b)


def _slice_edit(data: bytes, rng: random.Random) -> bytes:
    n = len(data)
    i = rng.randrange(n + 1)
    j = min(n, i + rng.choice((1, 2, 4, 8, 64, 1024)))
    op = rng.randrange(4)
    if op == 0:  # delete
        return data[:i] + data[j:]
    if op == 1:  # duplicate
        return data[:j] + data[i:j] + data[j:]
    if op == 2:  # insert random bytes
        return data[:i] + rng.randbytes(rng.choice((1, 4, 16))) + data[i:]
    return data[:i]  # truncate


def byte_mutation(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """A libFuzzer-like edit: a bit, an interesting integer, a slice, or a splice with another
    seed."""
    op = rng.randrange(4)
    if op == 0:
        return _flip(data, rng)
    if op == 1:
        return _interesting_int(data, rng)
    if op == 2 or not others:
        return _slice_edit(data, rng)
    other = rng.choice(others)
    return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


# --------------------------------------------------------------------------- trees
def _nodes(tree: Any, depth: int = 0) -> list[tuple[Any, Any]]:
    """(container, key) of every value in ``tree`` (dicts and lists), shared ones once."""
    out: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    stack = [(tree, 0)]
    while stack and len(out) < 5000:
        node, d = stack.pop()
        if id(node) in seen or d > 40:
            continue
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, value in items:
            out.append((node, key))
            stack.append((value, d + 1))
    return out


def nested(rng: random.Random) -> Any:
    value: Any = rng.choice((1, "x", None))
    for _ in range(rng.choice((30, 200, 1200))):
        value = [value] if rng.random() < 0.7 else {"k": value}
    return value


def tree_mutation(tree: Any, rng: random.Random, values: tuple[Any, ...] = NASTY_VALUES) -> Any:
    """``tree`` (dicts, lists, scalars) with one node edited in place; returns the new root."""
    nodes = _nodes(tree)
    if not nodes or rng.random() < 0.03:
        return rng.choice(values) if rng.random() < 0.7 else nested(rng)
    parent, key = rng.choice(nodes)
    op = rng.randrange(8)
    if op <= 2:
        parent[key] = copy.deepcopy(rng.choice(values))
    elif op == 3:
        del parent[key]
    elif op == 4:
        parent[key] = nested(rng)
    elif op == 5 and isinstance(parent, dict):
        parent[rng.choice(("unknown", "model", "seeds", "dataset", "epoch", str(key) + "_"))] = \
            parent[key]
    elif op == 6:
        parent[key] = [parent[key]] if rng.random() < 0.5 else {"value": parent[key]}
    else:
        parent[key] = _scaled(parent[key], rng)
    return tree


def _scaled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        try:
            as_float = float(value)
        except OverflowError:  # an int beyond float's range (grown by earlier mutations)
            as_float = math.inf
        return rng.choice((value * 10**rng.randrange(1, 30), -value, value + 1, value - 1,
                           as_float, math.nan))
    if isinstance(value, str):
        return rng.choice((value * 50, value[::-1], value.upper(), value + "\x00", ""))
    if isinstance(value, list) and value:
        return value * rng.choice((0, 2, 100))
    return value


# --------------------------------------------------------------------------- text formats
YAML_SNIPPETS = (
    "&a [1, 2]\n", "*a\n", "x: &b {p: 1}\ny: *b\n", "!!python/object/apply:os.system [ls]\n",
    "!!binary aGVsbG8=\n", "? [1, 2]\n: 3\n", "<<: {a: 1}\n", "---\n", "...\n", "\t", "%YAML 1.1\n",
    "[" * 3000, "{" * 3000, "- " * 2000 + "1\n", "key: 'unclosed\n", "key: \"\\uD800\"\n",
    "a: 1\na: 2\n", "\ufeff", "!!float nan\n", "!!int 1e99999\n", "2001-12-14t21:59:43.10-05:00\n",
    "b: 0o777\n", "c: .inf\n", "d: 1e400\n", "e: ~\n", "model: null\n", "seeds: [1e30]\n",
    "lr: {text: -1}\n",
    # a billion-laughs document (its nodes are shared: safe_load makes the graph, walking or
    # dumping it expands it)
    "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,"
    "*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,"
    "*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nmodel_name: *g\ndataset: *g\n",
)
JSON_SNIPPETS = ("[" * 100000, "{\"a\":" * 50000, "NaN", "Infinity", "-Infinity", "1e999", "null",
                 "\"\\ud800\"", "\ufeff", "[1,]", "{\"epoch\": 1, \"epoch\": 2}", "[{}]", "[[]]",
                 "[{\"epoch\": null}]", "[{\"epoch\": \"1\", \"valid_MAE\": \"x\"}]", "\x00")
CSV_SNIPPETS = ("\x00", "\"unclosed", "\"a\"\"b\"", "\r", "\r\n", ",,,,,,", "\ufeff", "\xff\xfe",
                "x" * 140000, "\"" + "y" * 140000 + "\"", "nan", "inf", "-inf", "1e400", "seed",
                "mean", "std", "id,id,id", "\u2028", ";", "\t")


def text_mutation(data: bytes, rng: random.Random, snippets: tuple[str, ...]) -> bytes:
    """Line-level edits (delete, duplicate, swap) and snippets inserted at a line or a random
    offset."""
    lines = data.split(b"\n")
    op = rng.randrange(5)
    i = rng.randrange(len(lines))
    if op == 0 and len(lines) > 1:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[i])
    elif op == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3:
        lines.insert(i, rng.choice(snippets).encode("utf-8", "surrogatepass"))
    else:
        k = rng.randrange(len(data) + 1)
        return data[:k] + rng.choice(snippets).encode("utf-8", "surrogatepass") + data[k:]
    return b"\n".join(lines)


def _yaml_dump(tree: Any, rng: random.Random) -> bytes:
    import yaml

    try:
        return yaml.safe_dump(tree, default_flow_style=rng.random() < 0.3,
                              allow_unicode=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, RecursionError, ValueError):
        return b"{}"


def yaml_mutation(data: bytes, rng: random.Random, trusted: list[Any]) -> bytes:
    if trusted and rng.random() < 0.6:
        return _yaml_dump(tree_mutation(copy.deepcopy(rng.choice(trusted)), rng), rng)
    return text_mutation(data, rng, YAML_SNIPPETS)


def json_mutation(data: bytes, rng: random.Random, trusted: list[Any]) -> bytes:
    if rng.random() < 0.6:
        try:
            tree = json.loads(data)
        except (ValueError, RecursionError):
            tree = copy.deepcopy(rng.choice(trusted)) if trusted else []
        tree = tree_mutation(tree, rng)
        try:
            return json.dumps(tree, indent=rng.choice((None, 1))).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return data
    return text_mutation(data, rng, JSON_SNIPPETS)


def csv_mutation(data: bytes, rng: random.Random, trusted: list[Any]) -> bytes:
    if rng.random() < 0.4:
        return text_mutation(data, rng, CSV_SNIPPETS)
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error):
        rows = copy.deepcopy(rng.choice(trusted)) if trusted else []
    rows = [r for r in rows if r] or [["id"]]
    i = rng.randrange(len(rows))
    row = rows[i]
    op = rng.randrange(6)
    if op <= 2 and row:
        row[rng.randrange(len(row))] = rng.choice(
            (*CSV_SNIPPETS, *(str(v) for v in NASTY_VALUES if not isinstance(v, (list, dict)))))
    elif op == 3:
        rows.insert(i, list(row))
    elif op == 4 and row:
        del row[rng.randrange(len(row))]
    else:
        row.append(rng.choice(("extra", "", "1")))
    buf = io.StringIO()
    csv.writer(buf, lineterminator=rng.choice(("\n", "\r\n"))).writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- pickles
def _ops(data: bytes) -> list[tuple[pickletools.OpcodeInfo, Any, int, int]] | None:
    """(opcode, argument, start, end) of each opcode of a well-formed pickle, else None."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a well-formed opcode stream
        return None
    out = []
    for k, (op, arg, pos) in enumerate(ops):
        end = ops[k + 1][2] if k + 1 < len(ops) else len(data)
        out.append((op, arg, pos, end))
    return out


def unframed(data: bytes) -> bytes:
    """``data`` without its FRAME opcodes (protocol 4+), which hold byte counts."""
    ops = _ops(data)
    if ops is None:
        return data
    return b"".join(data[s:e] for op, _, s, e in ops if op.name != "FRAME")


def _encode(name: str, value: Any) -> bytes | None:
    """One opcode with a new argument, for the argument kinds worth editing."""
    if name in ("SHORT_BINUNICODE", "BINUNICODE", "SHORT_BINSTRING", "BINSTRING"):
        raw = str(value).encode("utf-8", "surrogatepass")
        return (b"\x8c" + struct.pack("<B", len(raw)) if len(raw) < 256 else
                b"X" + struct.pack("<I", len(raw))) + raw
    if name in ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"):
        raw = value if isinstance(value, bytes) else str(value).encode()
        return (b"C" + struct.pack("<B", len(raw)) if len(raw) < 256 else
                b"B" + struct.pack("<I", len(raw))) + raw
    if name in ("BININT1", "BININT2", "BININT", "LONG1", "BINFLOAT"):
        v = int(value)
        if 0 <= v < 256:
            return b"K" + struct.pack("<B", v)
        if -2**31 <= v < 2**31:
            return b"J" + struct.pack("<i", v)
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + struct.pack("<B", len(raw)) + raw
    return None


def _new_argument(name: str, arg: Any, rng: random.Random) -> Any:
    if name.startswith(("BININT", "LONG")) or name == "BINFLOAT":
        return rng.choice((*INTERESTING_INTS, (arg or 0) * 2, (arg or 0) + 1))
    if "BYTES" in name:
        size = len(arg or b"")
        return rng.choice((b"", b"\x00" * max(0, size - rng.choice((1, 4, 8))),
                           (arg or b"") * 2, rng.randbytes(min(size, 64)), b"\x41" * 16))
    return rng.choice(NASTY_STRINGS)


def opcode_mutation(data: bytes, rng: random.Random) -> bytes:
    """An edit of one opcode of the pickle ``data`` (byte-level when it does not parse)."""
    data = unframed(data)
    ops = _ops(data)
    if not ops or len(ops) < 3:
        return byte_mutation(data, rng, [])
    spans = [data[s:e] for _, _, s, e in ops]
    k = rng.randrange(1, len(ops) - 1)  # keep PROTO and STOP
    op = rng.randrange(5)
    if op == 0:
        del spans[k]
    elif op == 1:
        spans.insert(k, spans[k])
    elif op == 2:
        spans.insert(rng.randrange(1, len(spans) - 1), spans.pop(k))
    else:
        editable = [i for i, (o, _, _, _) in enumerate(ops) if _encode(o.name, 0 if "INT" in
                    o.name or "LONG" in o.name or o.name == "BINFLOAT" else "") is not None]
        if editable:
            k = rng.choice(editable)
            name, arg = ops[k][0].name, ops[k][1]
            new = _encode(name, _new_argument(name, arg, rng))
            spans[k] = new if new is not None else spans[k]
    return b"".join(spans)


def _array_mutation(value: Any, rng: random.Random) -> Any:
    import numpy as np

    a = np.asarray(value)
    op = rng.randrange(9)
    if op == 0:
        dtype = rng.choice(("int8", "int64", "uint8", "float16", "float64", "bool", "complex64",
                            "<U3", "|S2", "datetime64[s]", "object", "V4", [("a", "<f4")]))
        try:
            return a.astype(dtype) if a.size else np.zeros(a.shape, dtype)
        except (TypeError, ValueError):
            return np.zeros(a.shape, dtype)
    if op == 1:
        return a.reshape(-1) if a.ndim > 1 else a[..., None]
    if op == 2:
        return a[: rng.choice((0, 1, max(0, len(a) - 1)))] if a.ndim else a
    if op == 3 and a.size and a.dtype.kind == "f":
        b = a.copy()
        b.flat[rng.randrange(b.size)] = rng.choice((np.nan, np.inf, -np.inf, 1e38, -1e38))
        return b
    if op == 4 and a.size and a.dtype.kind in "iu":
        b = a.astype(np.int64)
        b.flat[rng.randrange(b.size)] = rng.choice((-1, 2**31, 2**62, 30522, -2**63))
        return b
    if op == 5:
        return a.tolist() if a.dtype.kind != "V" else a
    if op == 6:
        return np.asfortranarray(a.T) if a.ndim > 1 else a
    if op == 7:
        return np.concatenate([a, a]) if a.ndim else a
    return rng.choice(NASTY_VALUES)


def content_mutation(content: dict, rng: random.Random) -> dict:
    """A generated MMSA file's content with one array, key or container edited."""
    import numpy as np

    splits = [s for s in content if isinstance(content[s], dict)]
    if not splits or rng.random() < 0.05:
        return tree_mutation(content, rng)
    split = content[rng.choice(splits)]
    keys = list(split)
    op = rng.randrange(6)
    key = rng.choice(keys) if keys else "audio"
    if op <= 2 and keys:
        split[key] = _array_mutation(split[key], rng)
    elif op == 3 and keys:
        del split[key]
    elif op == 4:
        other = rng.choice(splits)
        content[rng.choice(splits)] = content[other]  # shared split
    else:
        split[rng.choice(("extra", "text", "regression_labels_T", key))] = np.zeros(
            rng.choice(((0,), (3,), (3, 2, 2), (2**16,))), dtype=np.float32)
    return content


def pickle_mutation(data: bytes, rng: random.Random, generate: Callable[[int], dict]) -> bytes:
    r = rng.random()
    if r < 0.35:
        content = content_mutation(generate(rng.randrange(1000)), rng)
        try:
            return pickle.dumps(content, protocol=rng.randrange(6))
        except (pickle.PicklingError, TypeError, ValueError, RecursionError):
            return data
    if r < 0.85:
        return opcode_mutation(data, rng)
    return byte_mutation(data, rng, [])


# --------------------------------------------------------------------------- zips
def _members(data: bytes) -> list[tuple[str, bytes]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if len(infos) > 200 or sum(i.file_size for i in infos) > 50 << 20:
                return None
            return [(i.filename, z.read(i)) for i in infos]
    except Exception:  # noqa: BLE001 - not a readable zip: byte-level edits only
        return None


def _zip(members: list[tuple[str, bytes]], rng: random.Random) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if rng.random() < 0.1 else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, raw in members:
            z.writestr(name, raw)
    return buf.getvalue()


_HEADER = re.compile(rb"\{'descr': (?P<descr>'[^']*'|\[.*?\]), 'fortran_order': (?P<fo>\w+), "
                     rb"'shape': \((?P<shape>[^)]*)\), \}")


def npy_header_mutation(raw: bytes, rng: random.Random) -> bytes:
    """A ``.npy`` member with its header's dtype, shape or order changed (the data kept)."""
    m = _HEADER.search(raw[:4096])
    if m is None or not raw.startswith(b"\x93NUMPY"):
        return _flip(raw, rng)
    descr, fo, shape = m.group("descr"), m.group("fo"), m.group("shape")
    op = rng.randrange(3)
    if op == 0:
        descr = repr(rng.choice(NASTY_STRINGS[:16])).encode()
    elif op == 1:
        fo = b"True" if fo == b"False" else b"False"
    else:
        dims = [d for d in shape.replace(b" ", b"").split(b",") if d]
        try:
            new = [int(d) for d in dims] or [1]
        except ValueError:  # a shape the corpus holds malformed on purpose ("(---1,)")
            return _flip(raw, rng)
        i = rng.randrange(len(new))
        new[i] = rng.choice((0, 1, new[i] + 1, new[i] * 1000, 2**31, 2**40))
        if rng.random() < 0.2:
            new.append(rng.choice((1, 2)))
        shape = b", ".join(str(d).encode() for d in new) + (b"," if len(new) == 1 else b"")
    header = b"{'descr': %s, 'fortran_order': %s, 'shape': (%s), }" % (descr, fo, shape)
    version = raw[6]
    prefix = 10 if version == 1 else 12
    total = len(header) + 1 + prefix
    header += b" " * ((64 - total % 64) % 64) + b"\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    old = struct.unpack("<H", raw[8:10])[0] if version == 1 else struct.unpack("<I", raw[8:12])[0]
    return raw[:8] + size + header + raw[prefix + old:]


def zip_mutation(data: bytes, rng: random.Random, member: Callable[[str, bytes], bytes]) -> bytes:
    """A zip with one member edited by ``member(name, raw)``, dropped, duplicated or renamed."""
    members = _members(data)
    if not members:
        return byte_mutation(data, rng, [])
    k = rng.randrange(len(members))
    name, raw = members[k]
    op = rng.randrange(8)
    if op == 0:
        del members[k]
    elif op == 1:
        members.append((name, raw))
    elif op == 2:
        members[k] = (rng.choice(("x", "train/", "/abs", "../up", "train/audio/x", name + "x",
                                  "msakit_format", "a" * 300)), raw)
    else:
        members[k] = (name, member(name, raw))
    return _zip(members, rng)


def npz_mutation(data: bytes, rng: random.Random, generate: Callable[[int], dict]) -> bytes:
    import numpy as np

    r = rng.random()
    if r < 0.3:
        content = content_mutation(generate(rng.randrange(1000)), rng)
        if not isinstance(content, dict):  # the edit replaced the whole content
            return data
        arrays = {f"{s}/{k}": v for s, d in content.items() if isinstance(d, dict)
                  for k, v in d.items()}
        arrays["msakit_format"] = np.array("msakit-features-1")
        buf = io.BytesIO()
        try:
            np.savez(buf, **arrays)
        except Exception:  # noqa: BLE001 - an edit numpy cannot store
            return data
        return buf.getvalue()
    if r < 0.85:
        return zip_mutation(data, rng, lambda name, raw: npy_header_mutation(raw, rng)
                            if rng.random() < 0.7 else byte_mutation(raw, rng, []))
    return byte_mutation(data, rng, [])


# --------------------------------------------------------------------------- checkpoints
def _tensor_values() -> tuple[Any, ...]:
    import torch

    return (torch.zeros(0), torch.full((3,), math.nan), torch.zeros(2, 2, dtype=torch.int64),
            torch.ones(1, 1, 1, 1), torch.tensor(1e38), torch.zeros(3, dtype=torch.bool),
            torch.zeros(2, dtype=torch.complex64), *NASTY_VALUES)


def checkpoint_value_mutation(state: Any, rng: random.Random) -> Any:
    """The seed checkpoint's content with one node edited: a setting, a dim, a weight."""
    import torch

    nodes = _nodes(state)
    tensors = [(p, k) for p, k in nodes if isinstance(p[k], torch.Tensor)]
    if tensors and rng.random() < 0.4:
        parent, key = rng.choice(tensors)
        t = parent[key]
        op = rng.randrange(4)
        if op == 0:
            parent[key] = t.reshape(-1) if t.dim() != 1 else t[: max(0, t.numel() - 1)]
        elif op == 1 and t.numel():
            t = t.clone().float()
            t.view(-1)[rng.randrange(t.numel())] = rng.choice((math.nan, math.inf, 1e30))
            parent[key] = t
        elif op == 2:
            parent[key] = t.to(rng.choice((torch.float16, torch.int64, torch.bool, torch.uint8)))
        else:
            parent[key] = torch.zeros([d + 1 for d in t.shape])
        return state
    return tree_mutation(state, rng, _tensor_values())


def torch_mutation(data: bytes, rng: random.Random, trusted: Callable[[], Any]) -> bytes:
    import torch

    r = rng.random()
    if r < 0.5:
        state = checkpoint_value_mutation(copy.deepcopy(trusted()), rng)
        buf = io.BytesIO()
        try:
            torch.save(state, buf)
        except Exception:  # noqa: BLE001 - an edit torch cannot store
            return data
        return buf.getvalue()
    if r < 0.9:
        return zip_mutation(data, rng, lambda name, raw: opcode_mutation(raw, rng)
                            if name.endswith(".pkl") else byte_mutation(raw, rng, []))
    return byte_mutation(data, rng, [])


# --------------------------------------------------------------------------- safetensors
SAFETENSORS_DTYPES = ("F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32",
                      "U64", "BOOL", "F8_E4M3", "F8_E5M2", "F4", "C64", "", "f32", "X" * 300)


def _safetensors_parts(data: bytes) -> tuple[dict, bytes] | None:
    """(header, tensor bytes) of a well-formed file, or None."""
    if len(data) < 8:
        return None
    size = struct.unpack("<Q", data[:8])[0]
    if size > len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + size])
    except (ValueError, RecursionError):
        return None
    return (header, data[8 + size:]) if isinstance(header, dict) else None


def _safetensors_file(header: Any, body: bytes) -> bytes:
    try:
        text = json.dumps(header, separators=(",", ":")).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        text = b"{}"
    text += b" " * (-len(text) % 8)  # safetensors aligns the tensor bytes to 8
    return struct.pack("<Q", len(text)) + text + body


def _tensor_entry_mutation(entry: dict, header: dict, body: bytes, rng: random.Random) -> None:
    """One field of a tensor's header entry edited: its dtype, a dimension, its offsets."""
    op = rng.randrange(3)
    if op == 0:
        entry["dtype"] = rng.choice((*SAFETENSORS_DTYPES, 3, None, ["F32"]))
    elif op == 1:
        shape = entry.get("shape")
        shape = list(shape) if isinstance(shape, list) else []
        edit = rng.randrange(4)
        if edit == 0 and shape:
            shape[rng.randrange(len(shape))] = rng.choice((0, 1, -1, 2**31, 2**63, 2**64, 1.5,
                                                           "2", None))
        elif edit == 1:
            shape.append(rng.choice((1, 2, 0)))
        elif edit == 2 and shape:
            shape.pop()
        else:
            shape = rng.choice(([], [0], "shape", None, [[1]], [2**32, 2**32]))
        entry["shape"] = shape
    else:
        offsets = entry.get("data_offsets")
        begin, end = offsets if isinstance(offsets, list) and len(offsets) == 2 else (0, 0)
        others = [e.get("data_offsets") for e in header.values()
                  if isinstance(e, dict) and e is not entry and e.get("data_offsets")]
        entry["data_offsets"] = rng.choice((
            [end, begin], [begin, end + 1], [begin, max(0, end - 1)], [begin + 1, end + 1],
            [len(body), len(body) + 4], [0, 2**63], [-1, end], [begin], [begin, end, end],
            [0, 0], rng.choice(others) if others else [0, len(body)], "0:4", None,
        ))


_SAME_BYTES = {"I32": 1, "U32": 1, "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "U8": 4, "I8": 4,
               "BOOL": 4, "F8_E4M3": 4, "F8_E5M2": 4, "F64": 0.5, "I64": 0.5, "C64": 0.5}
"""A float32 tensor's bytes read as another dtype: how many elements they then hold per float."""


def _consistent_mutation(header: dict, rng: random.Random) -> None:
    """A float32 tensor's entry rewritten so that safetensors still accepts the file: another
    dtype over the same bytes (with as many elements as they hold), or another shape of the
    same size. msakit's own checks must then decide."""
    floats = [e for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)
              and e.get("dtype") == "F32" and isinstance(e.get("shape"), list)
              and all(isinstance(d, int) for d in e["shape"])]
    if not floats:
        return
    entry = rng.choice(floats)
    count = math.prod(entry["shape"])
    if rng.random() < 0.5:
        dtype = rng.choice(sorted(_SAME_BYTES))
        elements = count * _SAME_BYTES[dtype]
        if elements == int(elements):
            entry["dtype"], entry["shape"] = dtype, [int(elements)]
    else:
        entry["shape"] = rng.choice(([count], [1, count], [count, 1],
                                     list(reversed(entry["shape"]))))


def _repacked(header: dict, body: bytes) -> tuple[dict, bytes]:
    """The tensors' bytes laid out again one after the other in header order, offsets
    rewritten (after an entry was dropped or copied, safetensors still accepts the file)."""
    out, parts, at = {}, [], 0
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if name == "__metadata__" or not (isinstance(offsets, list) and len(offsets) == 2):
            out[name] = entry
            continue
        raw = body[offsets[0]:offsets[1]]
        out[name] = {**entry, "data_offsets": [at, at + len(raw)]}
        parts.append(raw)
        at += len(raw)
    return out, b"".join(parts)


def safetensors_mutation(data: bytes, rng: random.Random) -> bytes:
    """A ``.safetensors`` file with its header edited: the 8-byte header length, a tensor's dtype,
    shape or offsets, an entry dropped, duplicated or renamed, the ``__metadata__`` strings (a
    value of another type, malformed JSON in ``valid``), the header as a JSON tree, a float32
    tensor given another dtype or shape that safetensors accepts (msakit's checks must decide);
    or the tensor bytes cut or extended."""
    parts = _safetensors_parts(data)
    if parts is None:
        return byte_mutation(data, rng, [])
    header, body = parts
    size = struct.unpack("<Q", data[:8])[0]
    op = rng.randrange(11)
    if op == 0:  # the header length, the rest kept
        length = rng.choice((0, 1, 2, max(0, size - 1), size + 1, size + 8, len(data),
                             len(data) - 8, 2**31, 2**32, 100_000_001, 2**63, 2**64 - 1))
        return struct.pack("<Q", length) + data[8:]
    tensors = [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if op <= 2 and tensors:
        _tensor_entry_mutation(header[rng.choice(tensors)], header, body, rng)
    elif op == 3 and tensors:
        name = rng.choice(tensors)
        edit = rng.randrange(3)
        if edit == 0:
            del header[name]
        elif edit == 1:
            header[name + rng.choice(("_", ".x", ""))] = dict(header[name])
        else:
            header[rng.choice(("", "__metadata__", "x" * 300, "text_encoder.w", name.upper()))] = \
                header.pop(name)
        if rng.random() < 0.7:  # offsets made contiguous again: past safetensors' checks
            header, body = _repacked(header, body)
    elif op == 4:
        meta = header.setdefault("__metadata__", {})
        if not isinstance(meta, dict):
            meta = header["__metadata__"] = {}
        key = rng.choice(("format", "epoch", "seed", "valid", "extra"))
        meta[key] = rng.choice(("", "x", "-1", "1e999", "nan", "[]", "{}", "null", '{"MAE": "x"}',
                                '{"MAE": NaN}', "[" * 5000, 1, None, ["x"], {"a": "b"},
                                "msakit-pretrained-0", "9" * 5000))
        if rng.random() < 0.2:
            del meta[key]
    elif op == 5:
        header = tree_mutation(header, rng)
    elif op in (6, 9, 10):
        _consistent_mutation(header, rng)
    elif op == 7:
        body = body[:rng.randrange(len(body) + 1)] if rng.random() < 0.5 else \
            body + rng.randbytes(rng.choice((1, 8, 4096)))
    else:
        return byte_mutation(data, rng, [])
    return _safetensors_file(header, body)
