"""``msakit merge``: join the parts written by ``msakit extract --shard i/n`` into one file.

Parts must carry the same extractor settings (else the features would not mean the same thing:
refused). Samples are put back in the CSV's row order in every split and sequences re-padded to
the longest clip over all parts, so the result is the file one unsharded run would have written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from msakit.data.mmsa import SPLITS
from msakit.data.safe_format import is_zip
from msakit.errors import MsakitError
from msakit.extract.settings import METADATA_KEY, describe, read_metadata

_SEQUENCES = {"audio": "audio_lengths", "vision": "vision_lengths"}


def merge(parts: list[str | os.PathLike[str]], out: str | os.PathLike[str]) -> dict[str, int]:
    """Write the union of ``parts`` to ``out``; returns the number of samples per split."""
    from msakit.extract.corpus import write_failures, write_features

    if not parts:
        raise MsakitError("merge needs at least one part")
    out = Path(out)
    if any(Path(p).resolve() == out.resolve() for p in parts):
        raise MsakitError(f"{out}: the output would overwrite one of the parts")
    if not out.parent.resolve().is_dir():
        raise MsakitError(f"{out}: folder {out.parent} does not exist")
    records, contents = _read_parts(parts)
    _check_compatible(parts, records)
    _check_unique_ids(parts, contents)
    merged, rows = _join(contents, records)
    row_of = {str(i): row for s in SPLITS for i, row in zip(merged[s]["id"], rows[s], strict=True)}
    record = {
        **records[0],
        "shard": None,
        "rows": rows,
        "asr": sorted({i for r in records for i in r["asr"]}, key=row_of.__getitem__),
        "failures": sum(int(r["failures"]) for r in records),
    }
    write_features(out, merged, record)
    write_failures(out, _failures_of(parts))
    return {s: len(merged[s]["id"]) for s in SPLITS}


def _read_parts(parts: list[str | os.PathLike[str]]) -> tuple[list[dict], list[dict]]:
    """Each part's extractor record and content; a part msakit extract did not write is
    refused."""
    from msakit.data.safe_format import read_npz

    records, contents = [], []
    for part in parts:
        path = Path(part)
        if not path.is_file():
            raise MsakitError(f"{path}: no such file")
        with open(path, "rb") as f:
            if not is_zip(f.read(8)):
                raise MsakitError(f"{path}: not a file written by msakit extract (not an npz)")
        record = read_metadata(path)
        if record is None:
            raise MsakitError(
                f"{path}: has no '{METADATA_KEY}' record; only files written by msakit extract "
                "can be merged"
            )
        with open(path, "rb") as f:
            contents.append(read_npz(f, str(path), mmap=False))
        records.append(record)
    return records, contents


def _check_compatible(parts: list[str | os.PathLike[str]], records: list[dict]) -> None:
    """Same extractor settings, same source CSV, no shard twice."""
    first = records[0]["settings"]
    for path, record in zip(parts[1:], records[1:], strict=True):
        if record["settings"] != first:
            raise MsakitError(
                f"{path}: extracted with other settings ({describe(record['settings'])}) than "
                f"{parts[0]} ({describe(first)}); features of different extractors cannot be "
                "merged"
            )
        if record["source"] != records[0]["source"]:
            raise MsakitError(
                f"{path}: extracted from {record['source']}, {parts[0]} from "
                f"{records[0]['source']}"
            )
    shards = [r["shard"] for r in records]
    for k, shard in enumerate(shards):
        if shard is not None and shards.index(shard) != k:
            raise MsakitError(f"{parts[k]}: shard {shard} is also {parts[shards.index(shard)]}")


def _check_unique_ids(parts: list[str | os.PathLike[str]], contents: list[dict]) -> None:
    seen: dict[str, str] = {}
    for part, content in zip(parts, contents, strict=True):
        for split in SPLITS:
            for clip_id in content.get(split, {}).get("id", []):
                if str(clip_id) in seen:
                    raise MsakitError(f"{part}: clip '{clip_id}' is also in {seen[str(clip_id)]}")
                seen[str(clip_id)] = str(part)


def _join(
    contents: list[dict], records: list[dict]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[int]]]:
    """Every split of all parts in the CSV's row order, sequences padded to the longest over
    all parts and splits; and each split's CSV rows."""
    longest = {key: max(c[s][key].shape[1] for c in contents for s in SPLITS if s in c)
               for key in _SEQUENCES}
    merged: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, list[int]] = {}
    for split in SPLITS:
        pieces = [c[split] for c in contents if split in c and len(c[split].get("id", [])) > 0]
        split_rows = [row for r in records for row in r["rows"][split]]
        if not pieces:
            raise MsakitError(f"the parts have no clip in split '{split}'")
        order = np.argsort(np.array(split_rows), kind="stable")
        joined = {}
        for key in pieces[0]:
            arrays = [p[key] for p in pieces]
            if key in _SEQUENCES:
                length = longest[key]
                arrays = [np.pad(a, ((0, 0), (0, length - a.shape[1]), (0, 0))) for a in arrays]
            joined[key] = np.concatenate(arrays)[order]
        merged[split] = joined
        rows[split] = sorted(split_rows)
    return merged, rows


def _failures_of(parts: list[str | os.PathLike[str]]) -> list[tuple[str, ...]]:
    """The rows of every part's failures CSV (id, video, reason)."""
    from msakit.data.tables import read_csv
    from msakit.extract.corpus import failures_path

    failures = []
    for part in parts:
        path = failures_path(Path(part))
        if path.is_file():
            failures += [tuple(r) for r in read_csv(path)[1:] if r]
    return failures
