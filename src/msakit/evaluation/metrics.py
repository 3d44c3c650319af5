"""The field's regression metrics, numerically identical to MMSA's ``MetricsTop``.

One small public function per metric (as torchmetrics' functional API), each a pure function of
predictions and labels (arrays, lists or tensors of the same length):

* MOSI/MOSEI (:data:`MOSI_FAMILY_METRICS`): :func:`acc2_has0`, :func:`f1_has0`,
  :func:`acc2_non0`, :func:`f1_non0`, :func:`acc5`, :func:`acc7`, :func:`mae`, :func:`corr`;
* SIMS/SIMS v2 (:data:`SIMS_FAMILY_METRICS`): :func:`sims_acc2`, :func:`sims_acc3`,
  :func:`sims_acc5`, :func:`sims_f1`, :func:`sims_mae`, :func:`sims_corr`.

:func:`metric_values` composes a data set's family, unrounded (what training compares:
early stopping, model selection, pruning); :func:`compute_metrics` is the same rounded to
MMSA's 4 decimals (:func:`rounded`), the table MMSA prints. msakit rounds only where a table is
printed or written (``results.csv``, ``msakit evaluate``'s line, reports, plots' captions).

MMSA (thuiar/MMSA, ``src/MMSA/utils/metricsTop.py``) defines the numbers every MSA paper
reports. We follow it exactly:

* predictions and labels are flattened and kept in **float32** (MMSA never casts to float64;
  this matters for SIMS labels that sit exactly on a bin edge such as -0.1),
* ``np.round`` rounds half to even (2.5 -> 2), as in MMSA's ``multiclass_acc``,
* MOSI/MOSEI: ``Has0`` is negative vs non-negative (``>= 0``), ``Non0`` drops the samples whose
  *label* is 0 and compares ``> 0``; Acc-7/Acc-5 clip both sides to [-3, 3] / [-2, 2];
  MAE and Corr use the unclipped values,
* SIMS: both sides are clipped to [-1, 1] first and every metric uses the clipped values;
  classes are left-open, right-closed bins, so 0 counts as negative for ``Mult_acc_2``,
* F1 is scikit-learn's weighted F1; MMSA rounds every value with ``round(x, 4)`` at the source
  (msakit where it prints, :func:`rounded`).

A metric that does not exist on the data (:data:`UNDEFINED_WHEN`: Corr of fewer than two
samples or of constant labels or predictions, the Non0 scores when every label is 0; MMSA
raises or prints NaN there) is NaN in the returned mapping. Where msakit writes metrics it is
``null`` in JSON (:func:`metrics_json`), blank in CSV and named in a ``warning:`` line
(:func:`undefined_warning`): never a number, never the invalid JSON token ``NaN``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from msakit.config.datasets import SIMS_EDGES, SIMS_FAMILY, DatasetSpec, bin_index, dataset_spec

MOSI_METRICS = (
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
)
SIMS_METRICS = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")
# Which metric is "better when lower"; used for early stopping and model selection.
LOWER_IS_BETTER = frozenset({"MAE", "Loss"})
DIGITS = 4
"""Decimals of a metric where a table is printed or written (MMSA's ``round(x, 4)``)."""
ArrayLike = Sequence[float] | np.ndarray | Any
"""Predictions or labels: a list, a NumPy array or a torch tensor, of any shape."""


def metric_names(dataset: str | DatasetSpec) -> tuple[str, ...]:
    """MMSA's metric names for ``dataset`` (a name or a spec), in MMSA's order."""
    return SIMS_METRICS if _sims(dataset) else MOSI_METRICS


def _sims(dataset: str | DatasetSpec) -> bool:
    """Whether ``dataset`` is scored with MMSA's SIMS metrics (its spec's metric family)."""
    return dataset_spec(dataset).metric_family == SIMS_FAMILY


def _flat32(x: Sequence[float] | np.ndarray) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32).reshape(-1)


UNDEFINED_WHEN = {
    "Corr": "Pearson's r needs two or more samples whose labels vary and whose predictions vary",
    "Non0_acc_2": "every label is 0, so no sample is scored",
    "Non0_F1_score": "every label is 0, so no sample is scored",
}
"""The metrics that may not exist on a data set, and when."""


def undefined(metrics: Mapping[str, Any]) -> list[str]:
    """The names of the metrics in ``metrics`` that do not exist (NaN), in their order."""
    return [k for k, v in metrics.items()
            if isinstance(v, float) and not isinstance(v, bool) and math.isnan(v)]


def undefined_warning(metrics: Mapping[str, Any], where: str) -> str | None:
    """One ``warning:`` line naming the undefined metrics of ``metrics`` (``where``: the data
    or file they belong to) and why, or None when every metric exists."""
    names = undefined(metrics)
    if not names:
        return None
    reasons = list(dict.fromkeys(UNDEFINED_WHEN.get(n, "not a number on this data")
                                 for n in names))
    return (f"warning: {where}: {', '.join(names)} undefined ({'; '.join(reasons)}): null in "
            "JSON, blank in CSV")


def without_nan(obj: Any) -> Any:
    """``obj`` (dicts, lists, numbers) with every NaN or infinite float replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: without_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_nan(v) for v in obj]
    return obj


def metrics_json(obj: Any, **kwargs: Any) -> str:
    """Valid JSON of ``obj``: an undefined metric is ``null`` (never ``NaN``)."""
    return json.dumps(without_nan(obj), allow_nan=False, **kwargs)


# --------------------------------------------------------------------------- the metrics
def _pair(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both sides flat in float32 (MMSA's dtype); a ``ValueError`` unless they pair up."""
    pred, true = _flat32(predictions), _flat32(labels)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {true.shape[0]} labels")
    if pred.size == 0:
        raise ValueError("no predictions to score")
    return pred, true


def _multiclass_acc(pred: np.ndarray, true: np.ndarray) -> float:
    """MMSA's ``multiclass_acc``: the share of equal ``np.round`` (half to even) values."""
    return float(np.sum(np.round(pred) == np.round(true)) / float(len(true)))


def mae(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Mean absolute error, in float32 as MMSA computes it (MOSI/MOSEI: unclipped).

    >>> mae([0.5, -1.0, 2.0], [1.0, -1.0, 1.0])
    0.5
    """
    pred, true = _pair(predictions, labels)
    return float(np.mean(np.absolute(pred - true)).astype(np.float64))


def corr(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson's r (MMSA's ``np.corrcoef``); NaN where it does not exist (see
    :data:`UNDEFINED_WHEN`), without NumPy's warnings.

    >>> round(corr([0.0, 0.5, 0.0, -0.5, 1.5, -1.0], [0.0, 1.0, -1.0, 0.0, 2.0, -2.0]), 6)
    0.903178
    >>> corr([1.0, 2.0], [0.5, 0.5])  # constant labels
    nan
    """
    pred, true = _pair(predictions, labels)
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(pred, true)[0][1])


def acc2_has0(predictions: ArrayLike, labels: ArrayLike) -> float:
    """``Has0_acc_2``: negative (< 0) vs non-negative (>= 0), every sample scored.

    >>> acc2_has0([0.0, 0.5, 0.0, -0.5], [0.0, 1.0, -1.0, 0.0])
    0.5
    """
    pred, true = _pair(predictions, labels)
    return float(accuracy_score(true >= 0, pred >= 0))


def f1_has0(predictions: ArrayLike, labels: ArrayLike) -> float:
    """``Has0_F1_score``: scikit-learn's weighted F1 of :func:`acc2_has0`'s classes.

    >>> f1_has0([0.0, 0.5, 0.0, -0.5, 1.5, -1.0], [0.0, 1.0, -1.0, 0.0, 2.0, -2.0])
    0.6666666666666666
    """
    pred, true = _pair(predictions, labels)
    return float(f1_score(true >= 0, pred >= 0, average="weighted"))


def _non_zero(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """Negative vs positive (> 0) of the samples whose label is not 0; None when every label
    is 0 (MMSA raises there)."""
    pred, true = _pair(predictions, labels)
    kept = true != 0
    return (true[kept] > 0, pred[kept] > 0) if kept.any() else None


def acc2_non0(predictions: ArrayLike, labels: ArrayLike) -> float:
    """``Non0_acc_2``: negative vs positive (> 0) on the samples whose label is not 0; NaN
    when every label is 0.

    >>> acc2_non0([0.0, 0.5, 0.0, -0.5], [0.0, 1.0, -1.0, 0.0])  # samples 1 and 2 scored
    1.0
    >>> acc2_non0([0.3], [0.0])
    nan
    """
    classes = _non_zero(predictions, labels)
    return float("nan") if classes is None else float(accuracy_score(*classes))


def f1_non0(predictions: ArrayLike, labels: ArrayLike) -> float:
    """``Non0_F1_score``: weighted F1 of :func:`acc2_non0`'s classes; NaN when every label
    is 0.

    >>> f1_non0([1.0, -1.0, 0.5, 0.0], [1.0, -1.0, -2.0, 2.0])
    0.5
    """
    classes = _non_zero(predictions, labels)
    return float("nan") if classes is None else float(f1_score(*classes, average="weighted"))


def acc5(predictions: ArrayLike, labels: ArrayLike) -> float:
    """``Mult_acc_5`` (MOSI/MOSEI): both sides clipped to [-2, 2], rounded half to even.

    >>> acc5([2.6, -0.5, 1.5], [2.0, 0.0, 1.0])  # 2 = 2, -0 = 0, 2 != 1
    0.6666666666666666
    """
    pred, true = _pair(predictions, labels)
    return _multiclass_acc(np.clip(pred, -2.0, 2.0), np.clip(true, -2.0, 2.0))


def acc7(predictions: ArrayLike, labels: ArrayLike) -> float:
    """``Mult_acc_7`` (MOSI/MOSEI): both sides clipped to [-3, 3], rounded half to even.

    >>> acc7([4.2, 2.5, -0.5], [3.0, 2.0, -1.0])  # 3 = 3, 2 = 2, -0 != -1
    0.6666666666666666
    """
    pred, true = _pair(predictions, labels)
    return _multiclass_acc(np.clip(pred, -3.0, 3.0), np.clip(true, -3.0, 3.0))


def _sims_bins(predictions: ArrayLike, labels: ArrayLike, classes: int) -> tuple[np.ndarray, ...]:
    """SIMS classes of both sides, clipped to [-1, 1]: left-open, right-closed bins
    (:data:`~msakit.config.datasets.SIMS_EDGES`)."""
    pred, true = _pair(predictions, labels)
    edges = SIMS_EDGES[classes]
    return bin_index(np.clip(pred, -1.0, 1.0), edges), bin_index(np.clip(true, -1.0, 1.0), edges)


def sims_acc2(predictions: ArrayLike, labels: ArrayLike) -> float:
    """SIMS ``Mult_acc_2``: [-1, 0] vs (0, 1] (0 is negative).

    >>> sims_acc2([0.0, 0.2, -0.4], [-0.2, 0.0, -1.0])
    0.6666666666666666
    """
    return _multiclass_acc(*_sims_bins(predictions, labels, 2))


def sims_acc3(predictions: ArrayLike, labels: ArrayLike) -> float:
    """SIMS ``Mult_acc_3``: [-1, -0.1], (-0.1, 0.1], (0.1, 1].

    >>> sims_acc3([-0.1, 0.1, 0.5], [-0.2, 0.0, 1.5])  # the label 1.5 is clipped to 1
    1.0
    """
    return _multiclass_acc(*_sims_bins(predictions, labels, 3))


def sims_acc5(predictions: ArrayLike, labels: ArrayLike) -> float:
    """SIMS ``Mult_acc_5``: [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1].

    >>> sims_acc5([-0.7, 0.7, 0.8], [-0.8, 0.6, 0.6])
    0.6666666666666666
    """
    return _multiclass_acc(*_sims_bins(predictions, labels, 5))


def sims_f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """SIMS ``F1_score``: weighted F1 of :func:`sims_acc2`'s classes.

    >>> sims_f1([0.5, -0.5, 0.5, 0.0], [0.4, -0.6, -0.2, 0.8])
    0.5
    """
    pred, true = _sims_bins(predictions, labels, 2)
    return float(f1_score(true, pred, average="weighted"))


def sims_mae(predictions: ArrayLike, labels: ArrayLike) -> float:
    """SIMS ``MAE``: :func:`mae` of both sides clipped to [-1, 1].

    >>> sims_mae([1.5, 0.0], [1.0, -0.5])
    0.25
    """
    pred, true = _pair(predictions, labels)
    return mae(np.clip(pred, -1.0, 1.0), np.clip(true, -1.0, 1.0))


def sims_corr(predictions: ArrayLike, labels: ArrayLike) -> float:
    """SIMS ``Corr``: :func:`corr` of both sides clipped to [-1, 1].

    >>> sims_corr([3.0, 0.0, -1.0], [1.0, 0.0, -1.0])  # 3 clipped to 1: a perfect line
    1.0
    """
    pred, true = _pair(predictions, labels)
    return corr(np.clip(pred, -1.0, 1.0), np.clip(true, -1.0, 1.0))


MOSI_FAMILY_METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "Has0_acc_2": acc2_has0,
    "Has0_F1_score": f1_has0,
    "Non0_acc_2": acc2_non0,
    "Non0_F1_score": f1_non0,
    "Mult_acc_5": acc5,
    "Mult_acc_7": acc7,
    "MAE": mae,
    "Corr": corr,
}
"""MOSI and MOSEI's metrics by MMSA's name, in MMSA's order."""
SIMS_FAMILY_METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "Mult_acc_2": sims_acc2,
    "Mult_acc_3": sims_acc3,
    "Mult_acc_5": sims_acc5,
    "F1_score": sims_f1,
    "MAE": sims_mae,
    "Corr": sims_corr,
}
"""SIMS and SIMS v2's metrics by MMSA's name, in MMSA's order."""


def metric_values(
    predictions: ArrayLike, labels: ArrayLike, dataset: str | DatasetSpec
) -> dict[str, float]:
    """MMSA's regression metrics for ``dataset`` (a name or a
    :class:`~msakit.config.datasets.DatasetSpec`, scored with its metric family), unrounded:
    ``{name: value}`` with MMSA's names and order.

    >>> metric_values([0.5, -1.0, 2.0], [1.0, -1.0, 1.0], "mosi")["MAE"]
    0.5
    """
    pred, true = _pair(predictions, labels)
    family = SIMS_FAMILY_METRICS if _sims(dataset) else MOSI_FAMILY_METRICS
    return {name: metric(pred, true) for name, metric in family.items()}


def rounded(metrics: Mapping[str, float], digits: int = DIGITS) -> dict[str, float]:
    """``metrics`` as a table prints them: each value ``round(value, digits)`` (MMSA's 4);
    an undefined (NaN) value stays NaN.

    >>> rounded({"MAE": 0.58333333, "Corr": float("nan")})
    {'MAE': 0.5833, 'Corr': nan}
    """
    return {k: round(float(v), digits) for k, v in metrics.items()}


def compute_metrics(
    predictions: ArrayLike, labels: ArrayLike, dataset: str | DatasetSpec
) -> dict[str, float]:
    """MMSA's ``MetricsTop`` table for ``dataset``: :func:`metric_values` rounded to 4
    decimals (:func:`rounded`), as MMSA returns them.

    >>> compute_metrics([0.0, 0.5, 0.0, -0.5, 1.5, -1.0], [0.0, 1.0, -1.0, 0.0, 2.0, -2.0],
    ...                 "mosi")  # doctest: +NORMALIZE_WHITESPACE
    {'Has0_acc_2': 0.6667, 'Has0_F1_score': 0.6667, 'Non0_acc_2': 1.0, 'Non0_F1_score': 1.0,
     'Mult_acc_5': 0.5, 'Mult_acc_7': 0.5, 'MAE': 0.5833, 'Corr': 0.9032}
    """
    return rounded(metric_values(predictions, labels, dataset))
