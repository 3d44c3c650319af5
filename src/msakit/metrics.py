"""The field's regression metrics, numerically identical to MMSA's ``MetricsTop``.

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
* F1 is scikit-learn's weighted F1; every value is rounded with ``round(x, 4)``.

A metric that does not exist on the data (:data:`UNDEFINED_WHEN`: Corr of fewer than two
samples or of constant labels or predictions, the Non0 scores when every label is 0; MMSA
raises or prints NaN there) is NaN in the returned mapping. Where msakit writes metrics it is
``null`` in JSON (:func:`metrics_json`), blank in CSV and named in a ``warning:`` line
(:func:`undefined_warning`): never a number, never the invalid JSON token ``NaN``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
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


def _multiclass_acc(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sum(np.round(pred) == np.round(true)) / float(len(true)))


def _corr(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson's r (MMSA's ``np.corrcoef``); NaN where it does not exist (see
    :data:`UNDEFINED_WHEN`), without NumPy's warnings."""
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(pred, true)[0][1])


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


def _mosi(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    non_zero = true != 0
    if non_zero.any():
        nz_true, nz_pred = true[non_zero] > 0, pred[non_zero] > 0
        non0_acc = accuracy_score(nz_true, nz_pred)
        non0_f1 = f1_score(nz_true, nz_pred, average="weighted")
    else:  # MMSA raises here; an all-zero label set has no Non0 score.
        non0_acc = non0_f1 = float("nan")
    has0_true, has0_pred = true >= 0, pred >= 0
    values = {
        "Has0_acc_2": accuracy_score(has0_true, has0_pred),
        "Has0_F1_score": f1_score(has0_true, has0_pred, average="weighted"),
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": _multiclass_acc(np.clip(pred, -2.0, 2.0), np.clip(true, -2.0, 2.0)),
        "Mult_acc_7": _multiclass_acc(np.clip(pred, -3.0, 3.0), np.clip(true, -3.0, 3.0)),
        "MAE": np.mean(np.absolute(pred - true)).astype(np.float64),
        "Corr": _corr(pred, true),
    }
    return values


def _sims_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    pred, true = np.clip(pred, -1.0, 1.0), np.clip(true, -1.0, 1.0)
    b_pred = {k: bin_index(pred, e) for k, e in SIMS_EDGES.items()}
    b_true = {k: bin_index(true, e) for k, e in SIMS_EDGES.items()}
    return {
        "Mult_acc_2": _multiclass_acc(b_pred[2], b_true[2]),
        "Mult_acc_3": _multiclass_acc(b_pred[3], b_true[3]),
        "Mult_acc_5": _multiclass_acc(b_pred[5], b_true[5]),
        "F1_score": f1_score(b_true[2], b_pred[2], average="weighted"),
        "MAE": np.mean(np.absolute(pred - true)).astype(np.float64),
        "Corr": _corr(pred, true),
    }


def compute_metrics(
    predictions: Sequence[float] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
    dataset: str | DatasetSpec,
) -> dict[str, float]:
    """MMSA's regression metrics for ``dataset``: a named data set (``mosi``, ``mosei``,
    ``sims``, ``simsv2``) or a :class:`~msakit.config.datasets.DatasetSpec`, scored with its
    metric family (MOSI/MOSEI's or SIMS's, as MMSA's ``MetricsTop`` maps them).

    A pure function of predictions and labels (arrays, lists or tensors of the same length);
    returns ``{name: value}`` with MMSA's names, order and ``round(value, 4)``.
    """
    sims = _sims(dataset)
    pred, true = _flat32(predictions), _flat32(labels)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {true.shape[0]} labels")
    if pred.size == 0:
        raise ValueError("no predictions to score")
    values = _sims_metrics(pred, true) if sims else _mosi(pred, true)
    return {k: round(float(v), 4) for k, v in values.items()}
