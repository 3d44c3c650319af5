"""``msakit plot``: PNG figures of runs and checkpoints (matplotlib, Agg backend: no display).

* :func:`plot_curves`: training and validation curves of a run folder, one line per seed, from
  ``seed-S/history.json``.
* :func:`plot_tsne`: t-SNE of a checkpoint's learned representations on one split, as in ConKI's
  Figure 5. All representations of the chosen samples are embedded together, so the distances
  between modalities (and, for ConKI, between the pan-knowledge O_m and knowledge-specific A_m
  representations) show; the colour is the sample's sentiment interval (its rounded label, the
  Acc-7 classes on MOSI/MOSEI, the Acc-5 classes on SIMS) and the marker the representation.
  Each vector is L2-normalised first: both papers' contrastive losses compare representations
  by cosine similarity.
* :func:`plot_model_figure`: a figure a model declares in its ``ModelSpec.plots`` (e.g. a
  loss's weight function), drawn by the model's own code.
* :func:`plot_scatter`: a checkpoint's predictions against the true labels, with the y = x line.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from msakit.config.datasets import DatasetSpec, dataset_spec
from msakit.core.errors import MsakitError
from msakit.core.files import atomic_write
from msakit.core.safety import check_distinct_output
from msakit.evaluation.metrics import compute_metrics
from msakit.models.registry import model_plots, model_spec
from msakit.training.checkpoints import load_checkpoint, split_for

DPI = 150
# Filled shapes for one family of representations, other shapes for the second.
MARKERS = ("o", "s", "^", "*", "P", "D")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _out_path(out: str | os.PathLike) -> Path:
    """``out`` as a Path; an error before any work when it cannot be written (its missing
    folders are made when it is written)."""
    out = Path(out)
    check_distinct_output(out, [])  # a regular file or a new name, not a run's file
    return out


def _save(fig, out: str | os.PathLike, extra: list | None = None) -> Path:
    """Write ``fig`` as PNG (to a temporary name, then renamed); ``extra``: artists outside the
    axes (legends) that the tight bounding box must include."""
    out = _out_path(out)
    try:
        with atomic_write(out) as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", bbox_extra_artists=extra,
                        format="png")
    finally:
        _pyplot().close(fig)
    return out


# --------------------------------------------------------------------------- sentiment intervals
def sentiment_intervals(
    labels: np.ndarray, dataset: str | DatasetSpec
) -> tuple[np.ndarray, list[str]]:
    """Each label's interval index and the intervals' names, low to high: the interval rule of
    the data set's spec (:meth:`msakit.config.datasets.DatasetSpec.intervals`)."""
    return dataset_spec(dataset).intervals(labels)


def _interval_colours(n: int) -> list:
    """A diverging palette (negative red, positive blue) whose middle stays visible on white."""
    plt = _pyplot()
    cmap = plt.get_cmap("RdYlBu")
    positions = np.linspace(0.0, 1.0, n)
    # The palette's centre is pale yellow: darken it slightly so neutral points stay visible.
    colours = [np.array(cmap(p)) for p in positions]
    for c in colours:
        c[:3] *= 0.9 if abs(float(c[:3].mean()) - 0.85) < 0.1 else 1.0
    return colours


# --------------------------------------------------------------------------- curves
def _histories(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{"seed S": history} of a run folder, or of a single seed-S folder."""
    if (run_dir / "history.json").is_file():
        files = [run_dir / "history.json"]
    else:
        files = sorted(run_dir.glob("seed-*/history.json"),
                       key=lambda p: (len(p.parent.name), p.parent.name))
    if not files:
        raise MsakitError(f"{run_dir}: no seed-*/history.json (has a seed finished training?)")
    out = {}
    for f in files:
        try:
            history = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MsakitError(f"{f}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise MsakitError(f"{f}: not a history.json (nested too deeply)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MsakitError(f"{f}: cannot read it ({type(exc).__name__})") from None
        if not isinstance(history, list) or not history:
            raise MsakitError(f"{f}: no epochs recorded")
        out[f.parent.name.replace("seed-", "seed ")] = [_epoch(f, i, r) for i, r in
                                                        enumerate(history, 1)]
    return out


# The fields of a history record the curves read, besides the training loss parts
# (``train_<part>_loss``, _PART_KEY); every other field is left out.
_CURVE_KEYS = ("train_task_loss", "valid_loss", "valid_MAE",
               "valid_Corr", "valid_Has0_acc_2", "valid_Non0_acc_2", "valid_Mult_acc_2",
               "valid_Mult_acc_5", "valid_Mult_acc_7")
_PART_KEY = re.compile(r"train_([A-Za-z0-9_]{1,40})_loss")
"""A model's loss part in a history (``train_contrastive_loss``, ``train_text_loss``; older
runs of every model have ``train_contrastive_loss``); ``train_task_loss`` is the task loss."""
_LINE_STYLES = ("-", "--", ":", "-.")


def _part(key: str) -> str | None:
    """The loss part a history key holds, or None."""
    match = _PART_KEY.fullmatch(key)
    return match.group(1) if match and match.group(1) != "task" else None
_MAX_EPOCH = 10**9
_MAX_CURVE_VALUE = 1e30
"""Beyond this a loss or metric is no training's (a diverged run stops with NaN first), and
matplotlib cannot place ticks on an axis that wide (-1e308 raised in its ticker: fuzzing)."""


def _epoch(f: Path, index: int, record: Any) -> dict[str, Any]:
    """Entry ``index`` (from 1) of the history ``f``, checked: a mapping whose ``epoch`` is a
    positive integer and whose curve values are numbers (``null``, an undefined metric, is a
    gap: NaN)."""
    where = f"{f}: entry {index}"
    if not isinstance(record, dict):
        raise MsakitError(f"{where} is a {type(record).__name__}, not an epoch's record")
    epoch = record.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 < epoch <= _MAX_EPOCH:
        raise MsakitError(f"{where}: 'epoch' is {_short(epoch)}, not an epoch number")
    clean: dict[str, Any] = {"epoch": epoch}
    keys = [*_CURVE_KEYS, *(k for k in record if isinstance(k, str) and _part(k))]
    for key in (k for k in keys if k in record):  # a missing curve is drawn as a gap
        value = record[key]
        if value is None:
            clean[key] = float("nan")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MsakitError(f"{where}: {key!r} is {_short(value)}, not a number")
        try:
            number = float(value)
        except OverflowError:
            raise MsakitError(f"{where}: {key!r} is too large a number") from None
        if math.isnan(number):  # JSON's NaN: a gap, as null
            clean[key] = number
            continue
        if not abs(number) <= _MAX_CURVE_VALUE:  # also JSON's Infinity
            raise MsakitError(f"{where}: {key!r} is {_short(value)}, not a value a training "
                              f"history holds (|x| <= {_MAX_CURVE_VALUE:g})")
        clean[key] = number
    return clean


def _short(value: Any) -> str:
    """``repr(value)``, cut to a length an error line can hold."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class _CurvePanels:
    """The accuracy panels of a run's metric family (told from its history's metric names)."""

    acc2: tuple[tuple[str, str, str], ...]  # (history key, line style, legend)
    fine: tuple[str, str]  # (history key, title)
    parts: tuple[str, ...] = ()  # the training loss parts of any seed, first seen first

    @classmethod
    def of(cls, record: dict[str, Any]) -> _CurvePanels:
        if "valid_Mult_acc_2" in record:  # MMSA's SIMS metrics
            return cls((("valid_Mult_acc_2", "-", "Acc-2"),),
                       ("valid_Mult_acc_5", "Validation Acc-5"))
        return cls((("valid_Has0_acc_2", "-", "negative / non-negative"),
                    ("valid_Non0_acc_2", "--", "negative / positive")),
                   ("valid_Mult_acc_7", "Validation Acc-7"))


def plot_curves(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Six panels per epoch, one colour per seed: task loss (training solid, validation dashed),
    the model's other training losses by name (``train_<part>_loss``: CLGSI's contrastive
    loss, Self-MM's unimodal losses, ...; one line style each; an earlier training phase's
    loss, as MMIM's mmilb pass, too), and the validation MAE (the
    best epoch, the one ``best.pt`` holds, starred), Corr, Acc-2 and Acc-7 (SIMS metrics:
    Acc-5)."""
    _out_path(out)
    plt = _pyplot()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MsakitError(f"{run_dir}: no such run folder")
    histories = _histories(run_dir)
    panels = _CurvePanels.of(next(iter(histories.values()))[0])
    parts = dict.fromkeys(p for h in histories.values() for r in h for k in r if (p := _part(k)))
    panels = replace(panels, parts=tuple(parts))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    colours = plt.get_cmap("tab10")
    seed_handles = [
        _plot_seed(axes, history, colour=colours(i % 10), name=name, panels=panels)
        for i, (name, history) in enumerate(histories.items())
    ]
    _label_curve_axes(axes, panels)
    fig.suptitle(f"Training curves: {run_dir.resolve().name}")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles=seed_handles, loc="lower center", ncol=min(len(seed_handles), 10),
               fontsize=9, frameon=False)
    return _save(fig, out)


def _plot_seed(axes, history: list[dict[str, Any]], *, colour, name: str, panels: _CurvePanels):
    """One seed's lines on the six panels; returns its legend handle."""
    from matplotlib.lines import Line2D

    (ax_task, ax_cl, ax_mae), (ax_corr, ax_acc, ax_fine) = axes
    epochs = [r["epoch"] for r in history]

    def col(key: str) -> np.ndarray:
        return np.array([float(r.get(key, np.nan)) for r in history])

    line = {"color": colour, "markersize": 3}
    ax_task.plot(epochs, col("train_task_loss"), "-o", **line)
    ax_task.plot(epochs, col("valid_loss"), "--o", **line)
    for i, part in enumerate(panels.parts):
        ax_cl.plot(epochs, col(f"train_{part}_loss"), _LINE_STYLES[i % len(_LINE_STYLES)],
                   marker="o", **line)
    mae = col("valid_MAE")
    ax_mae.plot(epochs, mae, "-o", **line)
    if np.isfinite(mae).any():
        best = int(np.nanargmin(mae))
        ax_mae.plot(epochs[best], mae[best], "*", color=colour, markersize=15,
                    markeredgecolor="black", zorder=3)
    ax_corr.plot(epochs, col("valid_Corr"), "-o", **line)
    for key, style, _ in panels.acc2:
        ax_acc.plot(epochs, 100 * col(key), style, marker="o", **line)
    ax_fine.plot(epochs, 100 * col(panels.fine[0]), "-o", **line)
    return Line2D([], [], color=colour, marker="o", markersize=4, label=name)


def _label_curve_axes(axes, panels: _CurvePanels) -> None:
    from matplotlib.lines import Line2D

    def styles(entries: list[tuple[str, str]]) -> list[Line2D]:
        # matplotlib types linestyle as its literal names; these are such names ("-", "--")
        return [Line2D([], [], color="0.3", linestyle=s, label=t)  # type: ignore[arg-type]
                for s, t in entries]

    (ax_task, ax_cl, ax_mae), (ax_corr, ax_acc, ax_fine) = axes
    ax_task.legend(handles=styles([("-", "training"), ("--", "validation")]), fontsize=8)
    if len(panels.acc2) > 1:
        ax_acc.legend(handles=styles([(s, t) for _, s, t in panels.acc2]), fontsize=8)
    if panels.parts:
        ax_cl.legend(handles=styles([(_LINE_STYLES[i % len(_LINE_STYLES)], p)
                                     for i, p in enumerate(panels.parts)]), fontsize=8)
    ax_task.set(title="Task loss", ylabel="loss")
    ax_cl.set(title="Other training losses" if panels.parts else "No other training loss",
              ylabel="loss")
    ax_mae.set(title="Validation MAE (★ best epoch)", ylabel="MAE")
    ax_corr.set(title="Validation Corr", ylabel="Pearson r")
    ax_acc.set(title="Validation Acc-2", ylabel="%")
    ax_fine.set(title=panels.fine[1], ylabel="%")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)


# --------------------------------------------------------------------------- checkpoints
@dataclass
class _Outputs:
    spec: DatasetSpec
    model_name: str
    predictions: np.ndarray
    labels: np.ndarray
    representations: dict[str, np.ndarray]
    plot_names: dict[str, str]  # the model's plot_representations()


def _run_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str,
                    keep_representations: bool) -> _Outputs:
    """Predictions (and representations) of a checkpoint on one split, in split order."""
    ckpt = load_checkpoint(checkpoint)
    part = split_for(ckpt, data, split)
    model, config = ckpt.model, ckpt.config
    reps: dict[str, list[np.ndarray]] = {}

    def keep(output) -> None:
        for key, value in output.representations.items():
            reps.setdefault(key, []).append(value.float().numpy())

    predictions = ckpt.predictions(part, keep=keep if keep_representations else None)
    return _Outputs(
        spec=config.spec,
        model_name=config.model_name,
        predictions=predictions,
        labels=np.asarray(part.labels, dtype=np.float32),
        representations={k: np.concatenate(v) for k, v in reps.items()},
        plot_names=dict(model.plot_representations()),
    )


def _representation_names(outputs: _Outputs) -> dict[str, str]:
    """{key: title} of the representations to plot: the model's ``plot_representations()``
    that its checkpoint returns (every returned one, titled by its key, when it names none)."""
    available = outputs.representations
    names = outputs.plot_names or {k: k for k in available}
    chosen = {k: v for k, v in names.items() if k in available}
    if not chosen:
        raise MsakitError(f"the {outputs.model_name} checkpoint exposes no representations to plot")
    return chosen


def plot_tsne(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "test",
    intervals: list[str] | None = None,
    max_samples: int = 500,
    perplexity: float = 30.0,
    seed: int = 0,
) -> Path:
    """t-SNE of a checkpoint's representations on ``split`` (see the module docstring).

    ``intervals`` keeps the samples of those intervals only (names as in the legend: "-3" ...
    "+3" on MOSI/MOSEI; ConKI's Figure 5 shows two); ``max_samples`` draws at most that many
    samples at random (seed ``seed``), each contributing one point per representation.
    """
    if not (math.isfinite(perplexity) and perplexity > 0):
        raise MsakitError(f"--perplexity must be a number above 0, got {perplexity}")
    if max_samples < 3:
        raise MsakitError(f"--max-samples must be at least 3 (t-SNE needs 3 samples), got "
                          f"{max_samples}")
    _out_path(out)
    outputs = _run_checkpoint(checkpoint, data, split, keep_representations=True)
    names = _representation_names(outputs)
    classes, interval_names = outputs.spec.intervals(outputs.labels)
    chosen = _choose_samples(classes, interval_names, intervals=intervals,
                             max_samples=max_samples, seed=seed)
    points = [outputs.representations[key][chosen] for key in names]
    xy = _embed(points, perplexity=perplexity, seed=seed)
    group = np.repeat(np.arange(len(names)), len(chosen))
    colour_of = np.tile(classes[chosen], len(names))
    fig, ax, legends = _tsne_figure(xy, group, colour_of, names=list(names.values()),
                                    interval_names=interval_names)
    ax.set_title(f"{outputs.model_name.upper()} representations, {outputs.spec.title} "
                 f"{split} split ({len(chosen)} samples)")
    return _save(fig, out, extra=legends)


def _choose_samples(
    classes: np.ndarray, interval_names: list[str], *, intervals: list[str] | None,
    max_samples: int, seed: int,
) -> np.ndarray:
    """Indices of the samples in ``intervals`` (all when None), at most ``max_samples``."""
    chosen = np.arange(len(classes))
    if intervals:
        lookup = {n.lstrip("+"): i for i, n in enumerate(interval_names)}
        wanted = []
        for name in intervals:
            key = name.strip().lstrip("+")
            key = "0" if key in ("-0", "0.0") else key
            if key not in lookup:
                raise MsakitError(
                    f"unknown interval {name!r}; intervals are {', '.join(interval_names)}"
                )
            wanted.append(lookup[key])
        chosen = chosen[np.isin(classes, wanted)]
    if len(chosen) > max_samples:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, max_samples, replace=False))
    if len(chosen) < 3:
        raise MsakitError(f"t-SNE needs at least 3 samples, the selection has {len(chosen)}")
    return chosen


def _embed(vectors: list[np.ndarray], *, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE of all representations together, each L2-normalised (cosine geometry);
    representations of different widths are zero-padded to one width."""
    from sklearn.manifold import TSNE

    normed = []
    for v in vectors:
        x = v.astype(np.float64)
        normed.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    width = max(v.shape[1] for v in normed)
    points = np.concatenate([np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in normed])
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(points) - 1) / 3), init="pca",
                random_state=seed)
    return tsne.fit_transform(points)


def _tsne_figure(
    xy: np.ndarray, group: np.ndarray, colour_of: np.ndarray, *, names: list[str],
    interval_names: list[str],
):
    """The scatter (marker: representation, colour: interval) and its two legends."""
    from matplotlib.lines import Line2D

    colours = _interval_colours(len(interval_names))
    fig, ax = _pyplot().subplots(figsize=(8.5, 6.5))
    for k in range(len(names)):
        for c in np.unique(colour_of[group == k]):
            sel = (group == k) & (colour_of == c)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=28 if MARKERS[k] != "*" else 55,
                       marker=MARKERS[k], color=colours[c], edgecolors="black",
                       linewidths=0.3, alpha=0.85)
    interval_handles = [
        Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=colours[c],
               markeredgecolor="black", markeredgewidth=0.3, label=interval_names[c])
        for c in sorted(set(colour_of.tolist()))
    ]
    marker_handles = [
        Line2D([], [], marker=MARKERS[k], linestyle="", markersize=8, markerfacecolor="0.6",
               markeredgecolor="black", markeredgewidth=0.4, label=label)
        for k, label in enumerate(names)
    ]
    first = ax.legend(handles=interval_handles, title="sentiment interval", loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=9)
    ax.add_artist(first)
    second = ax.legend(handles=marker_handles, title="representation", loc="lower left",
                       bbox_to_anchor=(1.01, 0.0), fontsize=8, title_fontsize=9)
    ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    return fig, ax, [first, second]


def plot_model_figure(
    figure: str,
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    options: dict[str, Any] | None = None,
) -> Path:
    """A figure a model declares in its ``ModelSpec.plots`` (``msakit plot NAME``), for the
    settings of ``checkpoint``'s model or the model's defaults, with ``options`` (given values
    win); a checkpoint of a model without the figure is one error line."""
    _out_path(out)
    declared = model_plots()
    if figure not in declared:
        raise MsakitError(f"no model draws a {figure!r} figure; choose {', '.join(declared)}")
    spec, plot = declared[figure]
    config = None
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        spec = model_spec(ckpt.config.model_name)
        if figure not in spec.plots:
            owners = [s.title or s.name for s, _ in [declared[figure]]]
            raise MsakitError(
                f"{checkpoint}: a {ckpt.config.model_name} checkpoint, whose model has no "
                f"{figure!r} figure ({', '.join(owners)}'s)"
            )
        plot = spec.plots[figure]
        config = spec.config.from_dict(ckpt.config.model)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=plot.size)
    title = plot.draw(ax, config, **(options or {}))
    ax.set_title(title, fontsize=10)
    return _save(fig, out)


def plot_scatter(
    checkpoint: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
    split: str = "test",
) -> Path:
    """Predicted against true sentiment, the y = x line, and the split's MAE and Corr."""
    _out_path(out)
    plt = _pyplot()
    outputs = _run_checkpoint(checkpoint, data, split, keep_representations=False)
    metrics = compute_metrics(outputs.predictions, outputs.labels, outputs.spec)
    low, high = outputs.spec.label_range
    low = min(low, float(outputs.predictions.min()), float(outputs.labels.min()))
    high = max(high, float(outputs.predictions.max()), float(outputs.labels.max()))
    pad = 0.05 * (high - low)
    lim = (low - pad, high + pad)
    fig, ax = plt.subplots(figsize=(5.6, 5.4))
    ax.plot(lim, lim, "--", color="0.4", lw=1, label="y = x")
    ax.scatter(outputs.labels, outputs.predictions, s=14, alpha=0.6, color="tab:blue",
               edgecolors="none", label=f"{len(outputs.labels)} samples")
    ax.set(xlim=lim, ylim=lim, xlabel="true sentiment", ylabel="predicted sentiment",
           aspect="equal")
    ax.text(0.03, 0.97, f"MAE {metrics['MAE']:.3f}\nCorr {metrics['Corr']:.3f}",
            transform=ax.transAxes, va="top", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{outputs.model_name.upper()} on {outputs.spec.title} {split} split")
    return _save(fig, out)
