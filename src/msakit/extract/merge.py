"""``msakit merge``: join the parts written by ``msakit extract --shard i/n`` into one file.

The parts must be the shards 1..n of one extraction, each once: the same extractor settings
(else the features would not mean the same thing), the same clips CSV (its name and content, as
each part's extractor record keeps them, and the same split rule), shard numbers ``i/n`` of one
``n`` that together cover 1..n. Anything else is refused with one line (a part written before
msakit recorded the CSV's content gets a ``warning:`` line that it could not be checked).
Samples are put back in the CSV's row order in every split and sequences re-padded to the
longest clip over all parts, so the result is the file one unsharded run would have written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.safety import check_distinct_output
from msakit.data.mmsa import SPLITS
from msakit.data.safe_format import is_zip, read_npz
from msakit.data.tables import read_csv
from msakit.extract.corpus import failures_path, parse_shard, write_failures, write_features
from msakit.extract.settings import METADATA_KEY, describe, read_metadata

_SEQUENCES = {"audio": "audio_lengths", "vision": "vision_lengths"}


def merge(parts: list[str | os.PathLike[str]], out: str | os.PathLike[str]) -> dict[str, int]:
    """Write the union of ``parts`` to ``out``; returns the number of samples per split."""
    if not parts:
        raise MsakitError("merge needs at least one part")
    out = Path(out)
    read = [*parts, *(failures_path(Path(p)) for p in parts)]
    check_distinct_output(out, read)  # nor a link to one, a FIFO, a run's file
    check_distinct_output(failures_path(out), read, "--out (its failures CSV)")
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
    """Same extractor settings, same source CSV, then the shards 1..n (see the module
    docstring)."""
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
    _check_one_corpus(parts, records)
    _check_shards(parts, records)


def _check_one_corpus(parts: list[str | os.PathLike[str]], records: list[dict]) -> None:
    """The clips CSV's content and split rule are the same in every part (parts written before
    msakit recorded them: a warning line)."""
    import sys

    unrecorded = [p for p, r in zip(parts, records, strict=True) if "source_blake2b" not in r]
    if unrecorded:
        print(f"warning: {unrecorded[0]} records no content hash of its clips CSV (extracted "
              "before msakit recorded one): not checked that the parts come from one corpus",
              file=sys.stderr)
    known = [(p, r) for p, r in zip(parts, records, strict=True) if p not in unrecorded]
    for (path, record), (first, first_record) in zip(known[1:], known, strict=False):
        if record["source_blake2b"] != first_record["source_blake2b"]:
            raise MsakitError(
                f"{path}: extracted from another {record['source']} than {first} (the two CSVs' "
                "contents differ): parts of different corpora cannot be merged")
        if record.get("splits") != first_record.get("splits"):
            raise MsakitError(
                f"{path}: its clips got their splits by {record.get('splits')}, those of {first} "
                f"by {first_record.get('splits')} (--split-ratio / --seed): extract every shard "
                "with the same options")


def _check_shards(parts: list[str | os.PathLike[str]], records: list[dict]) -> None:
    """Every part a shard i/n of the same n, no shard twice, all of 1..n given."""
    shards = []
    for path, record in zip(parts, records, strict=True):
        if record["shard"] is None:
            raise MsakitError(f"{path}: a whole corpus (extracted without --shard); merge joins "
                              "the parts of one 'msakit extract --shard i/n'")
        try:
            shards.append(parse_shard(record["shard"]))
        except MsakitError:
            raise MsakitError(f"{path}: its record's shard {record['shard'][:20]!r} is not "
                              "i/n") from None
    for k, (index, count) in enumerate(shards):
        if count != shards[0][1]:
            raise MsakitError(f"{parts[k]}: shard {index}/{count}, {parts[0]}: shard "
                              f"{shards[0][0]}/{shards[0][1]}: parts of different --shard counts")
        if shards.index((index, count)) != k:
            raise MsakitError(f"{parts[k]}: shard {index}/{count} is also "
                              f"{parts[shards.index((index, count))]}")
    count = shards[0][1]
    missing = sorted(set(range(1, count + 1)) - {i for i, _ in shards})
    if missing:
        raise MsakitError(
            f"shard {missing[0]}/{count} of {records[0]['source']} is missing: the "
            f"{len(parts)} part(s) given cover {len(shards)} of {count}; merge needs all of them")


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


def _failures_of(parts: list[str | os.PathLike[str]]) -> list[tuple[str, str, str]]:
    """The rows of every part's failures CSV (id, video, reason)."""
    failures: list[tuple[str, ...]] = []
    for part in parts:
        path = failures_path(Path(part))
        if path.is_file():
            failures += [tuple(r) for r in read_csv(path)[1:] if r]
    return cast("list[tuple[str, str, str]]", failures)  # the CSV's three columns
