"""Shrink an input that breaks a target's contract to a small reproducer for the corpus.

The failure's signature (the signal that killed the process, or the exception type and the
msakit line it came from) must stay the same while parts of the input are removed: pickle
opcodes (FRAME opcodes dropped first), then lines, then byte chunks (delta debugging). Each try
runs in a forked child, so an input that crashes the process is tried safely and quickly.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import mutators
import targets


def signature(target: targets.Target, data: bytes, ws: targets.Workspace) -> str | None:
    """How ``data`` fails (``signal 11``, ``KeyError @ extract/merge.py:112``), None if it does
    not."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the input, report the first failure, exit at once
        os.close(read)
        failures = targets.check(target, data, ws)
        os.write(write, (failures[0] if failures else "").encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        text = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    if not text:
        return None
    match = re.match(r"[^:]+: [^:]+: (\w+):.*(@ \S+)", text)
    return f"{match.group(1)} {match.group(2)}" if match else text.split(":")[2]


def ddmin(units: list, fails: Callable[[list], bool]) -> list:
    """Zeller's delta debugging over ``units`` (their concatenation is the input)."""
    n = 2
    while len(units) >= 2:
        chunk = max(1, len(units) // n)
        for start in range(0, len(units), chunk):
            rest = units[:start] + units[start + chunk:]
            if rest and fails(rest):
                units, n = rest, max(n - 1, 2)
                break
        else:
            if chunk == 1:
                break
            n = min(len(units), 2 * n)
    return units


def _units(data: bytes, how: str) -> tuple[list, Callable[[list], bytes]] | None:
    """The parts of ``data`` to remove one by one, and how to build a file from some of them."""
    join = b"".join
    if how == "members":
        members = mutators._members(data)
        return None if not members else (members, lambda m: mutators._zip(m, _Stored()))
    parts = _parts(data, how)
    return None if parts is None else (parts, join)


class _Stored:
    """A stand-in for the random source of mutators._zip: members stored, never compressed."""

    def random(self) -> float:
        return 1.0


def _parts(data: bytes, how: str) -> list[bytes] | None:
    if how == "opcodes":
        ops = mutators._ops(mutators.unframed(data))
        if ops is None:
            return None
        plain = mutators.unframed(data)
        return [plain[s:e] for _, _, s, e in ops]
    if how == "lines":
        return data.splitlines(keepends=True) if b"\n" in data else None
    size = max(1, len(data) // 64)
    return [data[i:i + size] for i in range(0, len(data), size)]


def main(name: str, file: Path, out: Path) -> int:
    target = targets.TARGETS[name]
    root = Path(tempfile.mkdtemp(prefix="msakit-minimize-"))
    try:
        ws = targets.Workspace(root)
        data = file.read_bytes()
        wanted = signature(target, data, ws)
        if wanted is None:
            print(f"{file}: keeps the contract, nothing to minimise")
            return 1
        print(f"failure: {wanted}; {len(data)} bytes")
        for how in ("members", "opcodes", "lines", "bytes", "bytes"):
            found = _units(data, how)
            if found is None or signature(target, found[1](found[0]), ws) != wanted:
                continue
            units, build = found
            data = build(ddmin(units, lambda u, b=build: signature(target, b(u), ws) == wanted))
            print(f"after {how}: {len(data)} bytes")
        out.write_bytes(data)
        print(f"wrote {out} ({len(data)} bytes)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
