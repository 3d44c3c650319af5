"""The one reader of the CSV files a user hands msakit.

Every CSV msakit reads (extract's clips CSV and a part's failures CSV, OpenFace's per-clip
CSVs, a run's ``results.csv``, ``retokenize --texts``) goes through :func:`read_csv`, so that
whatever the file holds, reading it either gives rows of strings or raises one
:class:`~msakit.core.errors.MsakitError` line naming the file: not text in the expected encoding, a
field longer than the csv module's limit (:func:`csv.field_size_limit`, 131072 characters), a
malformed line (the line number is given), a file that cannot be opened. What the rows mean is
the caller's to check.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from msakit.core.errors import MsakitError
from msakit.core.safety import open_readable

__all__ = ["read_csv", "as_records"]


def read_csv(path: str | os.PathLike[str], *, encoding: str = "utf-8") -> list[list[str]]:
    """The rows of the CSV ``path`` (every row, blank ones included, as the csv module reads
    them). ``encoding="utf-8-sig"`` also accepts a byte-order mark."""
    p = Path(path)
    handle = open_readable(p, newline="", encoding=encoding)  # a FIFO: one line, no hang
    with handle:
        reader = csv.reader(handle)
        try:
            return list(reader)
        except UnicodeDecodeError as exc:
            raise MsakitError(f"{p}: not {encoding.upper().removesuffix('-SIG')} text "
                              f"(byte {exc.start}: {exc.reason})") from None
        except csv.Error as exc:
            raise MsakitError(f"{p}: line {reader.line_num + 1}: not a readable CSV "
                              f"({exc})") from None
        except OSError as exc:
            raise MsakitError(f"{p}: cannot read: {exc.strerror or type(exc).__name__}") from None


def as_records(rows: list[list[str]]) -> list[dict[str, str | None]]:
    """Rows below the first as ``{column: cell}``, as :class:`csv.DictReader` gives them: blank
    rows skipped, a short row's missing cells None, cells beyond the header dropped."""
    if not rows:
        return []
    header = rows[0]
    return [{name: row[i] if i < len(row) else None for i, name in enumerate(header)}
            for row in rows[1:] if row]
