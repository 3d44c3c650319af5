"""``msakit report``: several run folders side by side, laid out like the papers' tables.

Each run folder holds ``results.csv`` (one row per seed, then ``mean`` and ``std`` rows, as
``msakit train`` writes it) and ``config.yaml``. The report reads the per-seed rows only and
computes mean ± std itself (``np.std``, ddof 0, like the ``std`` row of ``results.csv``; one
seed: the mean alone), so a folder whose run is still going shows the seeds finished so far.

Columns follow CLGSI's Tables 1 and 2 (and ConKI's Tables 1 and 2):

* MOSI / MOSEI: Acc-2, F1, Acc-7, MAE, Corr. Acc-2 and F1 are slash pairs, left
  "negative / non-negative" (MMSA's ``Has0_*``), right "negative / positive", zero labels
  excluded (``Non0_*``).
* SIMS: Acc-2, F1, Acc-5, MAE, Corr.

Accuracies and F1 are printed ×100 with two decimals ("84.37 ± 0.52"), MAE and Corr with three
("0.703 ± 0.012"). ``all_metrics=True`` adds MOSI/MOSEI's Acc-5 and SIMS's Acc-3. Runs on
different data sets get one column block each (MOSI | MOSEI | SIMS, as in Table 1). The best
mean of each column is set in bold when at least two rows share it.

Row labels: the run folder's name, or its distinguishing ``--set`` values (the resolved
configuration's differences from the named preset of its model and data set that are not the
same in every run, e.g. ``contrastive=false``) and its preset where runs differ by preset
(``preset=authors``). ``label="auto"`` takes folder names when they are
unique and the runs share one data set, the ``--set`` values otherwise (so runs on several
data sets share a row per setting).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml

from msakit.config.datasets import (
    DATASETS,
    MOSI_FAMILY,
    SIMS_FAMILY,
    DatasetSpec,
    dataset_spec,
    resolve_spec,
)
from msakit.core.errors import MsakitError
from msakit.core.safe_yaml import problem, read_yaml
from msakit.data.tables import as_records, read_csv
from msakit.evaluation.metrics import LOWER_IS_BETTER, MOSI_METRICS, SIMS_METRICS, undefined_warning
from msakit.models.registry import preset

FORMATS = ("markdown", "latex", "csv", "json")
LABELS = ("auto", "folder", "config")
PERCENT_DIGITS = 2  # accuracies and F1, printed ×100
PLAIN_DIGITS = 3  # MAE and Corr


@dataclass(frozen=True)
class Column:
    """A table column: a title and one metric, or a slash pair of two (left / right)."""

    title: str
    metrics: tuple[str, ...]

    @property
    def percent(self) -> bool:
        return not set(self.metrics) & {"MAE", "Corr"}

    @property
    def lower_is_better(self) -> bool:
        return self.metrics[0] in LOWER_IS_BETTER


MOSI_COLUMNS = (
    Column("Acc-2", ("Has0_acc_2", "Non0_acc_2")),
    Column("F1", ("Has0_F1_score", "Non0_F1_score")),
    Column("Acc-7", ("Mult_acc_7",)),
    Column("MAE", ("MAE",)),
    Column("Corr", ("Corr",)),
)
SIMS_COLUMNS = (
    Column("Acc-2", ("Mult_acc_2",)),
    Column("F1", ("F1_score",)),
    Column("Acc-5", ("Mult_acc_5",)),
    Column("MAE", ("MAE",)),
    Column("Corr", ("Corr",)),
)
# Per metric family: the papers' columns, the extra accuracy of --all-metrics, the metrics.
FAMILY_COLUMNS = {MOSI_FAMILY: MOSI_COLUMNS, SIMS_FAMILY: SIMS_COLUMNS}
EXTRA_COLUMNS = {
    MOSI_FAMILY: Column("Acc-5", ("Mult_acc_5",)), SIMS_FAMILY: Column("Acc-3", ("Mult_acc_3",))
}
FAMILY_METRICS = {MOSI_FAMILY: MOSI_METRICS, SIMS_FAMILY: SIMS_METRICS}


def columns_for(dataset: str | DatasetSpec, all_metrics: bool = False) -> tuple[Column, ...]:
    """The paper's columns for ``dataset`` (a name or a spec): those of its metric family."""
    family = dataset_spec(dataset).metric_family
    cols: tuple[Column, ...] = FAMILY_COLUMNS[family]
    if all_metrics:  # the extra accuracy joins the multi-class ones, fewer classes first
        cols = (*cols[:2], EXTRA_COLUMNS[family], *cols[2:])
    return cols


@dataclass
class Run:
    """One run folder: its per-seed test metrics and (if present) its configuration."""

    path: Path
    spec: DatasetSpec
    seeds: list[str]
    values: dict[str, np.ndarray]  # metric -> (seeds,)
    config: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def dataset(self) -> str:
        """The column block the run belongs to: its data set's title."""
        return self.spec.title

    def mean(self, metric: str) -> float:
        return float(self.values[metric].mean())

    def std(self, metric: str) -> float:
        """The deviation over the seeds (ddof 0); NaN for one seed, which has none: the tables
        then show the mean alone (a blank in CSV, null in JSON), as ``results.csv`` does."""
        values = self.values[metric]
        return float(values.std()) if len(values) > 1 else math.nan


# --------------------------------------------------------------------------- reading
def read_run(path: str | os.PathLike) -> Run:
    """Per-seed rows of ``path/results.csv`` and ``path/config.yaml``."""
    folder = Path(path)
    results = folder / "results.csv"
    if not folder.is_dir():
        raise MsakitError(f"{folder}: no such run folder")
    if not results.is_file():
        raise MsakitError(f"{folder}: no results.csv (has the run finished a seed yet?)")
    rows = as_records(read_csv(results))
    if rows and "seed" not in rows[0]:
        raise MsakitError(f"{results}: not an msakit results file (no 'seed' column)")
    rows = [r for r in rows if r["seed"] not in ("mean", "std")]
    if not rows:
        raise MsakitError(f"{results}: no per-seed rows")
    if any(r["seed"] is None for r in rows):
        raise MsakitError(f"{results}: a row ends before its 'seed' column")
    config: dict[str, Any] = {}
    if (folder / "config.yaml").is_file():
        try:
            config = read_yaml(folder / "config.yaml") or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise MsakitError(
                f"{folder / 'config.yaml'}: cannot read it ({problem(exc)})"
            ) from None
        _check_config(folder / "config.yaml", config)
    spec = _run_spec(results, config, set(rows[0]))
    values = {}
    for name in FAMILY_METRICS[spec.metric_family]:
        try:  # a blank cell: a metric undefined on the data (metrics.UNDEFINED_WHEN)
            values[name] = np.array([float(r[name] or "nan") for r in rows], dtype=np.float64)
        except (TypeError, ValueError):
            raise MsakitError(f"{results}: column {name!r} holds a non-number") from None
    seeds = [cast(str, r["seed"]) for r in rows]  # None was refused above
    return Run(folder, spec, seeds, values, config)


def _check_config(path: Path, config: Any) -> None:
    """The shape of a run's config.yaml that the table reads: a mapping; the run's names
    strings; ``model``, ``lr`` and ``weight_decay`` mappings."""
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise MsakitError(f"{path}: not an msakit config.yaml")
    for key in ("model_name", "dataset", "preset"):
        if key in config and not isinstance(config[key], str):
            raise MsakitError(f"{path}: {key} is a {type(config[key]).__name__}, not a name")
    for key in ("model", "lr", "weight_decay"):
        value = config.get(key)
        if value is not None and not (isinstance(value, dict)
                                      and all(isinstance(k, str) for k in value)):
            raise MsakitError(f"{path}: {key} is a {type(value).__name__}, not a mapping of "
                              "names to values")


def _run_spec(results: Path, config: dict[str, Any], columns: set[str]) -> DatasetSpec:
    """The run's data set from its config.yaml (without one: the first named data set of the
    metric family its columns show), checked against the columns."""
    family = next((f for f, names in FAMILY_METRICS.items() if set(names) <= columns), None)
    if family is None:
        raise MsakitError(f"{results}: not an msakit results file (no MMSA metric columns)")
    if "dataset" not in config:
        return next(s for s in DATASETS.values() if s.metric_family == family)
    try:
        spec = resolve_spec(str(config["dataset"]), config.get("dataset_spec"))
    except MsakitError as exc:
        raise MsakitError(f"{results.parent / 'config.yaml'}: {exc}") from None
    if spec.metric_family != family:
        raise MsakitError(f"{results}: metric columns do not fit data set {spec.name!r}")
    return spec


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration as ``--set`` keys: top-level fields, ``lr.G`` / ``weight_decay.G``, and
    the model's hyperparameters by their own names."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("model", "seeds", "model_name", "dataset", "dataset_spec", "data"):
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    flat.update(config.get("model") or {})
    return flat


def _overrides(run: Run) -> dict[str, Any]:
    """The run's values that differ from its (model, data set) named preset: its ``--set``
    values (runs written before named presets existed started from ``paper``)."""
    flat = _flat_config({"preset": "paper", **run.config})
    try:
        name = str(run.config.get("preset", "paper"))
        base = _flat_config(preset(run.config["model_name"], run.spec, name).to_dict())
    except (KeyError, MsakitError):
        return flat
    return {k: v for k, v in flat.items() if k not in base or base[k] != v}


def _text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def config_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's distinguishing ``--set`` values, e.g. ``fusion=add`` (model name first when the
    runs use different models); the model name when nothing distinguishes it."""
    models = {r.config.get("model_name", "?") for r in runs}
    changed = [_overrides(r) for r in runs]
    # A run's named preset distinguishes it too (``preset=authors``), though no --set changed it.
    keys = sorted({k for c in changed for k in c} | {"preset"})
    flats = [_flat_config({"preset": "paper", **r.config}) for r in runs]
    by_dataset: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        by_dataset.setdefault(r.dataset, []).append(i)
    # A key distinguishes when two runs on the same data set disagree on it.
    keys = [
        k for k in keys
        if any(len({_text(flats[i].get(k)) for i in group}) > 1 for group in by_dataset.values())
    ]
    labels = []
    for run, flat, own in zip(runs, flats, changed, strict=True):
        group = by_dataset[run.dataset]
        # Shown: what sets the run apart on its data set, and its own --set values among those.
        shown = [
            k for k in keys
            if k in flat and (k in own or len({_text(flats[i].get(k)) for i in group}) > 1)
        ]
        parts = [str(run.config.get("model_name", run.path.name))] if len(models) > 1 else []
        parts += [f"{k}={_text(flat.get(k))}" for k in shown]
        labels.append(" ".join(parts) or str(run.config.get("model_name", run.path.name)))
    return labels


def assign_labels(runs: Sequence[Run], label: str = "auto") -> None:
    """Set ``run.label`` for every run; see the module docstring."""
    if label not in LABELS:
        raise MsakitError(f"--label must be one of {', '.join(LABELS)}, got {label!r}")
    folders = [r.path.resolve().name for r in runs]
    from_config = config_labels(runs) if label != "folder" else folders

    def unique(names: list[str]) -> bool:
        return len(set(zip(names, (r.dataset for r in runs), strict=True))) == len(runs)

    if label == "auto":
        # Runs on several data sets share rows by their settings (CLGSI's Table 1 layout).
        several = len({r.dataset for r in runs}) > 1
        label = "config" if (several or not unique(folders)) and unique(from_config) else "folder"
    chosen = folders if label == "folder" else from_config
    seen: dict[tuple[str, str], int] = {}
    for run, name in zip(runs, chosen, strict=True):
        key = (name, run.dataset)
        seen[key] = seen.get(key, 0) + 1
    for run, name in zip(runs, chosen, strict=True):
        # Two runs that would share a cell keep apart by their paths.
        run.label = str(run.path) if seen[(name, run.dataset)] > 1 else name


# --------------------------------------------------------------------------- table
@dataclass
class Table:
    datasets: list[str]  # the column blocks: data set titles
    columns: dict[str, tuple[Column, ...]]
    labels: list[str]
    cells: dict[tuple[str, str], Run]  # (label, dataset) -> run

    def best(self, dataset: str, column: Column, side: int) -> float | None:
        """The best mean of one metric of a column block, if at least two rows compete."""
        runs = [self.cells[(label, dataset)] for label in self.labels
                if (label, dataset) in self.cells]
        if len(runs) < 2:
            return None
        means = [_rounded(r.mean(column.metrics[side]), column) for r in runs]
        means = [m for m in means if math.isfinite(m)]  # undefined metrics compete for nothing
        if len(means) < 2 or len(set(means)) == 1:  # a tie of every row marks nothing
            return None
        return min(means) if column.lower_is_better else max(means)


def _rounded(value: float, column: Column) -> float:
    return round(value * 100, PERCENT_DIGITS) if column.percent else round(value, PLAIN_DIGITS)


def build_table(runs: Sequence[Run], all_metrics: bool = False) -> Table:
    """Column blocks in registry order (MOSI, MOSEI, SIMS, SIMS v2), then custom data sets."""
    order = [s.title for s in DATASETS.values()]
    datasets = sorted({r.dataset for r in runs},
                      key=lambda t: (order.index(t) if t in order else len(order), t))
    specs = {r.dataset: r.spec for r in runs}
    labels: list[str] = []
    cells: dict[tuple[str, str], Run] = {}
    for run in runs:
        if run.label not in labels:
            labels.append(run.label)
        cells[(run.label, run.dataset)] = run
    columns = {d: columns_for(specs[d], all_metrics) for d in datasets}
    return Table(datasets, columns, labels, cells)


def format_cell(mean: float, std: float, column: Column, plus_minus: str = " ± ") -> str:
    """``84.37 ± 0.52`` for accuracies and F1 (×100), ``0.703 ± 0.012`` for MAE and Corr;
    the mean alone without a deviation (one seed: ``std`` NaN); ``n/a`` for a metric undefined
    on the data."""
    if not math.isfinite(mean):
        return "n/a"
    scale, digits = (100, PERCENT_DIGITS) if column.percent else (1, PLAIN_DIGITS)
    text = f"{mean * scale:.{digits}f}"
    return f"{text}{plus_minus}{std * scale:.{digits}f}" if math.isfinite(std) else text


def _cell(
    table: Table, label: str, dataset: str, *, column: Column, bold, plus_minus: str
) -> str:
    run = table.cells.get((label, dataset))
    if run is None:
        return "–"
    parts = []
    for side, metric in enumerate(column.metrics):
        text = format_cell(run.mean(metric), run.std(metric), column, plus_minus)
        best = table.best(dataset, column, side)
        if best is not None and _rounded(run.mean(metric), column) == best:
            text = bold(text)
        parts.append(text)
    return " / ".join(parts)


def _seeds(table: Table, label: str) -> str:
    counts = [len(table.cells[(label, d)].seeds) for d in table.datasets
              if (label, d) in table.cells]
    return "/".join(map(str, counts))


def _note(table: Table) -> str:
    text = "Mean ± std over seeds; Acc and F1 in %."
    if any(table.columns[d][0] == MOSI_COLUMNS[0] for d in table.datasets):
        text += (" MOSI/MOSEI Acc-2 and F1: negative/non-negative (left) and negative/positive,"
                 " zero labels excluded (right).")
    return text


def to_markdown(table: Table) -> str:
    multi = len(table.datasets) > 1
    header = ["Run"]
    for d in table.datasets:
        prefix = f"{d} " if multi else ""
        header += [prefix + c.title for c in table.columns[d]]
    header.append("Seeds")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
    for label in table.labels:
        row = [label.replace("|", "\\|")]
        for d in table.datasets:
            row += [_cell(table, label, d, column=c, bold=lambda s: f"**{s}**", plus_minus=" ± ")
                    for c in table.columns[d]]
        row.append(_seeds(table, label))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([*lines, "", _note(table)]) + "\n"


_LATEX_ESCAPES = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    widths = [len(table.columns[d]) for d in table.datasets]
    spec = "l" + "".join("c" * w for w in widths) + "c"
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    if len(table.datasets) > 1:
        groups, rules, start = [""], [], 2
        for d, w in zip(table.datasets, widths, strict=True):
            groups.append(f"\\multicolumn{{{w}}}{{c}}{{{latex_escape(d)}}}")
            rules.append(f"\\cmidrule(lr){{{start}-{start + w - 1}}}")
            start += w
        lines += [" & ".join([*groups, ""]) + " \\\\", " ".join(rules)]
    header = ["Run", *(c.title for d in table.datasets for c in table.columns[d]), "Seeds"]
    lines += [" & ".join(header) + " \\\\", "\\midrule"]
    for label in table.labels:
        row = [latex_escape(label)]
        for d in table.datasets:
            row += [_cell(table, label, d, column=c, bold=lambda s: f"\\textbf{{{s}}}",
                          plus_minus=" $\\pm$ ")
                    for c in table.columns[d]]
        row.append(_seeds(table, label))
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "% " + _note(table)]
    return "\n".join(lines) + "\n"


def to_csv(runs: Sequence[Run]) -> str:
    """One row per run: every MMSA metric's mean and std (MMSA's scale, not ×100)."""
    metrics = list(dict.fromkeys(m for r in runs for m in r.values))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "path", "dataset", "seeds",
                     *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    for r in runs:
        stats = []
        for m in metrics:
            stats += [_num(r.mean(m)), _num(r.std(m))] if m in r.values else ["", ""]
        writer.writerow([r.label, str(r.path), r.spec.name, len(r.seeds), *stats])
    return buf.getvalue()


def to_json(runs: Sequence[Run]) -> str:
    """One object per run: its label, path, data set, seeds and each metric's mean and std
    (MMSA's scale; an undefined value is null)."""

    def number(x: float) -> float | None:
        return round(float(x), 6) if math.isfinite(x) else None

    return json.dumps([
        {"run": r.label, "path": str(r.path), "dataset": r.spec.name, "seeds": len(r.seeds),
         "metrics": {m: {"mean": number(r.mean(m)), "std": number(r.std(m))} for m in r.values}}
        for r in runs
    ], indent=2) + "\n"


def _num(x: float) -> str:
    return repr(round(x, 6)) if math.isfinite(x) else ""  # undefined: blank, as results.csv


# --------------------------------------------------------------------------- entry point
def report(
    dirs: Sequence[str | os.PathLike],
    fmt: str = "markdown",
    label: str = "auto",
    all_metrics: bool = False,
) -> str:
    """The table of the run folders ``dirs`` in ``fmt`` (markdown, latex, csv or json)."""
    if fmt not in FORMATS:
        raise MsakitError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not dirs:
        raise MsakitError("no run folders given")
    runs = [read_run(d) for d in dirs]
    for run in runs:
        line = undefined_warning({m: run.mean(m) for m in run.values},
                                 str(run.path / "results.csv"))
        if line is not None:
            print(line, file=sys.stderr)
    assign_labels(runs, label)
    if fmt in ("csv", "json"):
        return to_csv(runs) if fmt == "csv" else to_json(runs)
    table = build_table(runs, all_metrics)
    return to_markdown(table) if fmt == "markdown" else to_latex(table)
