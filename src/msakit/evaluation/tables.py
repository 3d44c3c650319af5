"""Result tables: one run's seeds in the terminal, several runs side by side (``report``)."""

from __future__ import annotations

import math
from typing import Any

from msakit.config.datasets import DatasetSpec
from msakit.evaluation.metrics import metric_names


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
