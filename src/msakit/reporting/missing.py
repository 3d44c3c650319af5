"""``msakit evaluate --missing-rates``: runs evaluated at several missing rates, one table.

MMSA's missing-modality protocol (:mod:`msakit.data.missing`) drops a share r of every
modality's valid positions of the evaluated split (text tokens become [UNK], audio and vision
frames zeros), with the run's ``missing_seed`` (MMSA's 1111 unless set), whatever rate the run
trained with. Each checkpoint given (a run folder: every seed; a seed folder or a checkpoint
file: that one) is evaluated at each rate; a row of the table is one run at one rate, its
metrics the mean ± std over the run's seeds (``np.std``, ddof 0, as ``msakit report``; one seed:
the value alone), in the papers' columns (:func:`msakit.reporting.report.columns_for`).
``--out`` writes every metric's mean and std (MMSA's scale) as CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msakit.config.datasets import DatasetSpec
from msakit.core.errors import MsakitError
from msakit.data.missing import MODALITIES, MissingRates, with_missing_split
from msakit.evaluation.metrics import metric_names, metric_values, undefined_warning
from msakit.reporting.report import PERCENT_DIGITS, PLAIN_DIGITS, Column, columns_for
from msakit.training.checkpoints import load_checkpoint, run_seed_checkpoints, split_for

FORMATS = ("markdown", "csv", "json")


@dataclass
class RateRow:
    """One run at one missing rate: each metric's value per seed."""

    label: str
    path: Path
    model: str
    rate: float
    seeds: list[str]
    values: dict[str, np.ndarray]  # metric -> (seeds,)


def check_rates(rates: Sequence[float]) -> list[float]:
    """The rates as floats, each in [0, 1), or one :class:`MsakitError` naming the first that
    is not."""
    if not rates:
        raise MsakitError("--missing-rates: give at least one rate in [0, 1)")
    for rate in rates:
        if not (isinstance(rate, (int, float)) and 0.0 <= float(rate) < 1.0):
            raise MsakitError(f"--missing-rates: {rate} is not a rate in [0, 1) (the share of "
                              "each modality's positions dropped)")
    return [float(r) for r in rates]


def _labels(checkpoints: Sequence[str | os.PathLike]) -> list[str]:
    """How the table names each checkpoint: its run folder's name (``RUN/seed-S`` for a seed),
    its path where two would share a name."""
    names = []
    for given in checkpoints:
        path = Path(given)
        folder = path.parent if path.is_file() else path
        name = folder.resolve().name
        names.append(f"{folder.resolve().parent.name}/{name}" if name.startswith("seed-")
                     else name)
    return [str(c) if names.count(n) > 1 else n
            for c, n in zip(checkpoints, names, strict=True)]


def _seed_checkpoints(given: str | os.PathLike) -> list[tuple[str, Path]]:
    """(seed label, checkpoint path) of every seed of a run folder, or the one checkpoint."""
    seeds = run_seed_checkpoints(given)
    return [(str(s), p) for s, p in seeds] if seeds else [("-", Path(given))]


def _evaluate_run(given: str | os.PathLike, data: str | os.PathLike, *, rates: list[float],
                  split: str) -> tuple[str, DatasetSpec, list[str],
                                       list[dict[float, dict[str, float]]]]:
    """(model name, data set, seed labels, per seed {rate: metrics}) of one checkpoint
    argument."""
    model = ""
    spec: DatasetSpec | None = None
    per_seed: list[dict[float, dict[str, float]]] = []
    seeds = _seed_checkpoints(given)
    for _, path in seeds:
        ckpt = load_checkpoint(path)
        part = split_for(ckpt, data, split)
        model, spec = ckpt.config.model_name, spec or ckpt.config.spec
        results = {}
        for rate in rates:
            dropped = with_missing_split(part, MissingRates.of(
                dict.fromkeys(MODALITIES, rate), ckpt.config.missing_seed))
            results[rate] = metric_values(ckpt.predictions(dropped), part.labels,
                                          ckpt.config.spec)
        per_seed.append(results)
    assert spec is not None  # every checkpoint argument holds at least one checkpoint
    return model, spec, [label for label, _ in seeds], per_seed


def missing_rate_rows(
    checkpoints: Sequence[str | os.PathLike], data: str | os.PathLike, rates: Sequence[float],
    *, split: str = "test",
) -> tuple[DatasetSpec, list[RateRow]]:
    """Every checkpoint evaluated on ``split`` of ``data`` at every rate (module docstring):
    the data set whose metrics they share, and the rows, checkpoint by checkpoint, rate by
    rate."""
    checked = check_rates(rates)
    labels = _labels(checkpoints)
    rows: list[RateRow] = []
    first: DatasetSpec | None = None
    for given, label in zip(checkpoints, labels, strict=True):
        model, spec, seeds, per_seed = _evaluate_run(given, data, rates=checked, split=split)
        if first is not None and metric_names(spec) != metric_names(first):
            raise MsakitError(f"{given}: trained on {spec.title}, the first checkpoint on "
                              f"{first.title}; one table holds one data set's metrics")
        first = first or spec
        for rate in checked:
            values = {m: np.array([r[rate][m] for r in per_seed], dtype=np.float64)
                      for m in metric_names(spec)}
            line = undefined_warning({m: float(v.mean()) for m, v in values.items()},
                                     f"{label} at missing rate {rate:g}")
            if line is not None:
                print(line, file=sys.stderr)
            rows.append(RateRow(label, Path(given), model, rate, seeds, values))
    assert first is not None
    return first, rows


def _cell(values: np.ndarray, column: Column) -> str:
    """``84.37 ± 0.52`` (accuracies, F1: x100) or ``0.703 ± 0.012``; one seed: the value;
    ``n/a`` for a metric undefined on the data."""
    mean = float(values.mean())
    if not math.isfinite(mean):
        return "n/a"
    scale, digits = (100, PERCENT_DIGITS) if column.percent else (1, PLAIN_DIGITS)
    text = f"{mean * scale:.{digits}f}"
    if len(values) > 1:
        text += f" ± {float(values.std()) * scale:.{digits}f}"
    return text


def to_markdown(spec: DatasetSpec, rows: Sequence[RateRow]) -> str:
    """Rows = (run, rate), columns = the papers' metrics of ``spec``."""
    columns = columns_for(spec)
    header = ["Run", "Model", "Missing rate", *(c.title for c in columns), "Seeds"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", ":---", *["---:"] * (len(header) - 2)]) + "|"]
    for row in rows:
        cells = [" / ".join(_cell(row.values[m], c) for m in c.metrics) for c in columns]
        lines.append("| " + " | ".join([row.label.replace("|", "\\|"), row.model,
                                          f"{row.rate:g}", *cells, str(len(row.seeds))]) + " |")
    note = ("Mean ± std over seeds; Acc and F1 in %. Missing rate: the share of each "
            "modality's valid positions dropped from the evaluated split (MMSA's protocol, "
            "the run's missing_seed).")
    return "\n".join([*lines, "", note]) + "\n"


def _number(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def to_csv(spec: DatasetSpec, rows: Sequence[RateRow]) -> str:
    """One line per (run, rate): every MMSA metric's mean and std (MMSA's scale)."""
    names = metric_names(spec)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "path", "model", "missing_rate", "seeds",
                     *(f"{m}_{s}" for m in names for s in ("mean", "std"))])
    for row in rows:
        stats = [_number(float(f(row.values[m]))) for m in names for f in (np.mean, np.std)]
        writer.writerow([row.label, str(row.path), row.model, row.rate, len(row.seeds),
                         *("" if v is None else v for v in stats)])
    return buf.getvalue()


def to_json(spec: DatasetSpec, rows: Sequence[RateRow]) -> str:
    """One object per (run, rate): its label, path, model, rate, seeds and each metric's mean
    and std (MMSA's scale; an undefined value is null)."""
    return json.dumps([
        {"run": r.label, "path": str(r.path), "model": r.model, "missing_rate": r.rate,
         "seeds": len(r.seeds),
         "metrics": {m: {"mean": _number(float(np.mean(v))), "std": _number(float(np.std(v)))}
                     for m, v in r.values.items()}}
        for r in rows
    ], indent=2) + "\n"


def missing_rate_table(
    checkpoints: Sequence[str | os.PathLike], data: str | os.PathLike, rates: Sequence[float],
    *, split: str = "test", fmt: str = "markdown",
) -> str:
    """The table of :func:`missing_rate_rows` in ``fmt`` (markdown, csv or json)."""
    if fmt not in FORMATS:
        raise MsakitError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    spec, rows = missing_rate_rows(checkpoints, data, rates, split=split)
    writer = {"markdown": to_markdown, "csv": to_csv, "json": to_json}[fmt]
    return writer(spec, rows)
