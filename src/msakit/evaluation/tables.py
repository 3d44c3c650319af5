"""Result tables: one run's seeds with their mean and std (:func:`with_summary`), as CSV or JSON
(``results.csv``, :func:`results_table_text`) and in the terminal, several runs side by side
(``report``)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from msakit.config.datasets import DatasetSpec
from msakit.core.files import write_text_atomic
from msakit.evaluation.metrics import metric_names, metrics_json, rounded, without_nan


def format_results(rows: list[dict[str, Any]], dataset: str | DatasetSpec | None = None) -> str:
    """A fixed-width table of per-seed rows followed by the mean and std rows; the metrics are
    ``dataset``'s (a name or a spec), or the rows' own when it is None."""
    names = metric_names(dataset) if dataset is not None else [k for k in rows[0] if k != "seed"]
    header = ["seed", *names]
    def cell(value: Any) -> str:  # a blank std (one seed) and an undefined metric are blank
        if isinstance(value, (int, float)):
            return f"{value:.4f}" if math.isfinite(value) else ""
        return str(value)

    body = [[str(row["seed"]), *(cell(row[k]) for k in names)] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    for r in body:
        if r[0] == "mean":
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def print_results(rows: list[dict[str, Any]], dataset: str | DatasetSpec | None = None) -> None:
    print(format_results(rows, dataset))


def with_summary(
    rows: list[dict[str, Any]], dataset: str | DatasetSpec
) -> list[dict[str, Any]]:
    """``rows`` rounded to 4 decimals (:func:`evaluation.metrics.rounded`, as MMSA's tables), then
    the ``mean`` and ``std`` rows of the rounded values; with one seed the std row is blank (a
    spread of one value is not 0, it is unknown)."""
    names = metric_names(dataset)
    rows = [{**row, **rounded({k: row[k] for k in names})} for row in rows]  # a printed table
    values = np.array([[row[k] for k in names] for row in rows], dtype=np.float64)
    mean = dict(zip(names, values.mean(0).round(4).tolist(), strict=True))
    if len(rows) > 1:
        std = dict(zip(names, values.std(0).round(4).tolist(), strict=True))
    else:
        std = dict.fromkeys(names, "")
    return [*rows, {"seed": "mean", **mean}, {"seed": "std", **std}]


def write_results_table(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write a results table's rows (per-seed rows, then ``mean`` and ``std``, as
    :attr:`msakit.api.TrainResult.rows`) to ``path``: JSON for a ``.json`` name (an undefined
    metric is null), else CSV (as ``results.csv``: an undefined metric is a blank cell)."""
    path = Path(path)
    write_text_atomic(path, results_table_text(
        rows, "json" if path.suffix.lower() == ".json" else "csv"))


def results_table_text(rows: list[dict[str, Any]], fmt: str = "csv") -> str:
    """A results table's rows as ``fmt``: ``json`` (an undefined metric is null) or ``csv`` (as
    ``results.csv``: an undefined metric is a blank cell)."""
    if fmt == "json":
        return metrics_json(rows, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in without_nan(row).items()})
    return buf.getvalue()
