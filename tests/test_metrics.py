"""compute_metrics against values computed by hand (MMSA's MetricsTop rules).

Every expected number below was worked out by hand or with plain Python (no numpy, no msakit);
the derivation is in the comment next to it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from msakit.core.errors import MsakitError
from msakit.evaluation.metrics import (
    MOSI_FAMILY_METRICS,
    MOSI_METRICS,
    SIMS_FAMILY_METRICS,
    SIMS_METRICS,
    acc7,
    compute_metrics,
    metric_names,
    metric_values,
    rounded,
    sims_f1,
)

MOSI_KEYS = [
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
]
SIMS_KEYS = ["Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"]

# --------------------------------------------------------------------------- MOSI / MOSEI
# Exact zeros in the labels and an exact-zero prediction.
ZERO_LABELS = [0.0, 1.0, -1.0, 0.0, 2.0, -2.0]
ZERO_PREDS = [0.0, 0.5, 0.0, -0.5, 1.5, -1.0]
ZERO_EXPECTED = {
    # Has0: label >= 0 -> T T F T T F; pred >= 0 -> T T T F T F (pred 0.0 is non-negative).
    # Agree on samples 0, 1, 4, 5 -> 4/6.
    "Has0_acc_2": 0.6667,
    # class True: 4 true, 4 predicted, 3 hits -> P = R = 3/4, F1 = 0.75;
    # class False: 2 true, 2 predicted, 1 hit -> F1 = 0.5; weighted (4*0.75 + 2*0.5)/6 = 2/3.
    "Has0_F1_score": 0.6667,
    # Non0 drops samples 0 and 3 (label 0). Left: labels 1 -1 2 -2, preds 0.5 0.0 1.5 -1.0;
    # > 0: T F T F vs T F T F (pred 0.0 is negative here) -> 4/4.
    "Non0_acc_2": 1.0,
    "Non0_F1_score": 1.0,
    # round (half to even): preds 0 0 0 -0 2 -1, labels 0 1 -1 0 2 -2 -> hits 0, 3, 4 -> 3/6.
    "Mult_acc_5": 0.5,
    "Mult_acc_7": 0.5,
    # |errors| 0 0.5 1 0.5 0.5 1 -> 3.5/6 = 0.58333
    "MAE": 0.5833,
    # Pearson with plain Python: 0.9031779099815561
    "Corr": 0.9032,
}


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_mosi_zero_labels_and_zero_prediction(dataset):
    assert compute_metrics(ZERO_PREDS, ZERO_LABELS, dataset) == ZERO_EXPECTED


def test_mosi_clipping_for_acc7_acc5_but_not_mae_corr():
    labels = [3.0, -3.0, 2.0, -2.0, 1.0]
    preds = [4.2, -5.0, 2.6, -2.4, 1.0]
    expected = {
        # signs all agree, no zero labels
        "Has0_acc_2": 1.0,
        "Has0_F1_score": 1.0,
        "Non0_acc_2": 1.0,
        "Non0_F1_score": 1.0,
        # clip to +-2: preds 2 -2 2 -2 1, labels 2 -2 2 -2 1 -> 5/5
        "Mult_acc_5": 1.0,
        # clip to +-3: preds 3 -3 2.6 -2.4 1 -> round 3 -3 3 -2 1 vs 3 -3 2 -2 1 -> 4/5
        # (unclipped, round(4.2) = 4 and round(-5) = -5 would miss: 2/5)
        "Mult_acc_7": 0.8,
        # unclipped |errors| 1.2 2.0 0.6 0.4 0 -> 4.2/5 = 0.84 (clipped would be 0.2)
        "MAE": 0.84,
        # unclipped Pearson, plain Python: 0.9931825895004036 (clipped: 0.99408...)
        "Corr": 0.9932,
    }
    assert compute_metrics(preds, labels, "mosi") == expected


def test_mosi_bankers_rounding():
    labels = [2.0, 0.0, -2.0, 1.0]
    preds = [2.5, 0.5, -2.5, 1.5]
    result = compute_metrics(preds, labels, "mosi")
    # round half to even: 2.5 -> 2, 0.5 -> 0, -2.5 -> -2, 1.5 -> 2; labels 2 0 -2 1 -> 3/4
    # (round half away from zero would give 3 1 -3 2 -> 0/4)
    assert result["Mult_acc_7"] == 0.75
    # clip to +-2 first: 2 0.5 -2 1.5 -> 2 0 -2 2 -> 3/4
    assert result["Mult_acc_5"] == 0.75
    # every |error| is 0.5
    assert result["MAE"] == 0.5
    # plain Python Pearson: 0.9938586931957764
    assert result["Corr"] == 0.9939
    assert result["Has0_acc_2"] == 1.0
    assert result["Non0_acc_2"] == 1.0


def test_mosi_label_two_point_five_rounds_to_two():
    # label 2.5 -> class 2 (half to even), pred 2.0 -> class 2: a hit; label -0.5 -> -0 = 0,
    # pred 0.4 -> 0: a hit; label 3.5 clips to 3 for Acc-7, pred 3.0 -> 3: a hit -> 3/3.
    result = compute_metrics([2.0, 0.4, 3.0], [2.5, -0.5, 3.5], "mosi")
    assert result["Mult_acc_7"] == 1.0
    # Acc-5 clips to +-2: labels 2 -0.5 2 -> 2 0 2; preds 2 0.4 2 -> 2 0 2 -> 3/3
    assert result["Mult_acc_5"] == 1.0


def test_mosi_all_zero_labels_have_no_non0_score():
    result = compute_metrics([0.5, -0.5], [0.0, 0.0], "mosi")
    assert math.isnan(result["Non0_acc_2"]) and math.isnan(result["Non0_F1_score"])
    # Has0: both labels non-negative; preds T F -> 1/2
    assert result["Has0_acc_2"] == 0.5


# --------------------------------------------------------------------------- SIMS
def test_sims_bin_edges_are_right_closed():
    labels = [-0.7, -0.1, 0.1, 0.7, 0.0]
    preds = [-0.75, -0.5, 0.0, 0.5, -0.05]
    expected = {
        # 2 classes (-1.01, 0], (0, 1.01]: labels 0 0 1 1 0 (0.0 is negative),
        # preds 0 0 0 1 0 (pred 0.0 is negative) -> miss only sample 2 -> 4/5
        "Mult_acc_2": 0.8,
        # 3 classes, edges -0.1, 0.1: labels 0 0 1 2 1; preds 0 0 1 2 1 -> 5/5
        "Mult_acc_3": 1.0,
        # 5 classes, edges -0.7 -0.1 0.1 0.7: labels -0.7 -> 0, -0.1 -> 1, 0.1 -> 2, 0.7 -> 3,
        # 0.0 -> 2; preds -0.75 -> 0, -0.5 -> 1, 0.0 -> 2, 0.5 -> 3, -0.05 -> 2 -> 5/5
        "Mult_acc_5": 1.0,
        # weighted F1 of the 2 classes: true 0 0 1 1 0, pred 0 0 0 1 0;
        # class 0: P 3/4, R 1 -> 6/7; class 1: P 1, R 1/2 -> 2/3;
        # (3 * 6/7 + 2 * 2/3) / 5 = 0.780952...
        "F1_score": 0.781,
        # |errors| 0.05 0.4 0.1 0.2 0.05 -> 0.8/5
        "MAE": 0.16,
        # plain Python Pearson: 0.9555907502501864
        "Corr": 0.9556,
    }
    assert compute_metrics(preds, labels, "sims") == expected


def test_sims_clipping_applies_to_every_metric():
    labels = [-0.7, -0.1, 0.1, 0.7, 0.0, 1.0]
    preds = [-0.69, -0.11, 0.11, 0.71, 0.01, 2.0]
    expected = {
        # 2 classes: labels 0 0 1 1 0 1; preds 0 0 1 1 1 1 (2.0 clips to 1.0) -> 5/6
        "Mult_acc_2": 0.8333,
        # 3 classes: labels 0 0 1 2 1 2; preds 0 0 2 2 1 2 -> 5/6
        "Mult_acc_3": 0.8333,
        # 5 classes: labels 0 1 2 3 2 4; preds 1 1 3 4 2 4 -> 3/6
        "Mult_acc_5": 0.5,
        # class 0: 3 true, 2 predicted, 2 hits -> P 1, R 2/3, F1 0.8;
        # class 1: 3 true, 4 predicted, 3 hits -> P 3/4, R 1, F1 6/7; mean -> 0.828571...
        "F1_score": 0.8286,
        # clipped |errors| 0.01 0.01 0.01 0.01 0.01 0 -> 0.05/6 = 0.008333
        # (unclipped the last error would be 1.0 -> 0.175)
        "MAE": 0.0083,
        # Pearson of the clipped values, plain Python: 0.9999055888966726 (unclipped: 0.9467)
        "Corr": 0.9999,
    }
    assert compute_metrics(preds, labels, "sims") == expected


def test_sims_clips_labels_too():
    # label 1.5 clips to 1.0 = the prediction: MAE 0 and every class a hit
    result = compute_metrics([1.0, -1.0, 0.3], [1.5, -1.2, 0.3], "sims")
    assert result["MAE"] == 0.0
    assert result["Mult_acc_5"] == result["Mult_acc_3"] == result["Mult_acc_2"] == 1.0


# --------------------------------------------------------------------------- format
def test_key_names_and_order_match_mmsa():
    assert list(compute_metrics(ZERO_PREDS, ZERO_LABELS, "mosi")) == MOSI_KEYS
    assert list(compute_metrics(ZERO_PREDS, ZERO_LABELS, "mosei")) == MOSI_KEYS
    assert list(compute_metrics([0.1, -0.2], [0.3, -0.4], "sims")) == SIMS_KEYS
    assert list(metric_names("mosi")) == MOSI_KEYS
    assert list(metric_names("sims")) == SIMS_KEYS


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_values_rounded_to_four_decimals(dataset):
    rng = np.random.default_rng(3)
    labels = np.round(rng.uniform(-1, 1, 37), 1)
    preds = rng.uniform(-1.3, 1.3, 37)
    result = compute_metrics(preds, labels, dataset)
    for name, value in result.items():
        assert type(value) is float, name
        assert value == round(value, 4), name
    # 37 samples: an accuracy is k/37 rounded to 4 decimals (k/37 itself has more digits)
    accuracy = result["Mult_acc_5"]
    assert accuracy in {round(k / 37, 4) for k in range(38)}
    assert 0 < accuracy < 1 and accuracy not in {k / 37 for k in range(1, 37)}


def test_rounding_of_a_long_fraction():
    # MAE 0.5833333... is stored as 0.5833 exactly, not 0.58333
    assert compute_metrics(ZERO_PREDS, ZERO_LABELS, "mosi")["MAE"] == 0.5833


def test_tensors_lists_and_arrays_give_the_same_result():
    expected = compute_metrics(ZERO_PREDS, ZERO_LABELS, "mosi")
    assert expected == ZERO_EXPECTED
    as_tensor = compute_metrics(torch.tensor(ZERO_PREDS), torch.tensor(ZERO_LABELS), "mosi")
    assert as_tensor == expected
    as_double = compute_metrics(
        torch.tensor(ZERO_PREDS, dtype=torch.float64, requires_grad=True),
        torch.tensor(ZERO_LABELS, dtype=torch.float64).view(-1, 1),
        "mosi",
    )
    assert as_double == expected
    as_array = compute_metrics(np.array(ZERO_PREDS), np.array(ZERO_LABELS).reshape(-1, 1), "mosi")
    assert as_array == expected


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        compute_metrics([0.1, 0.2, 0.3], [0.1, 0.2], "mosi")
    with pytest.raises(ValueError):
        compute_metrics(torch.zeros(4), torch.zeros(5), "sims")


def test_unknown_dataset_and_empty_input_raise():
    with pytest.raises(MsakitError, match="unknown dataset 'iemocap'"):
        compute_metrics([0.1], [0.1], "iemocap")
    with pytest.raises(ValueError):
        compute_metrics([], [], "mosi")


# --------------------------------------------------------------------------- the functions
def test_every_metric_function_passes_its_doctest():
    import doctest

    import msakit.evaluation.metrics

    result = doctest.testmod(msakit.evaluation.metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    documented = [f for f in (*MOSI_FAMILY_METRICS.values(), *SIMS_FAMILY_METRICS.values())
                  if ">>> " in (f.__doc__ or "")]
    assert len(documented) == len(MOSI_FAMILY_METRICS) + len(SIMS_FAMILY_METRICS)


def test_the_families_are_mmsas_names_in_mmsas_order():
    assert list(MOSI_FAMILY_METRICS) == MOSI_KEYS == list(MOSI_METRICS)
    assert list(SIMS_FAMILY_METRICS) == SIMS_KEYS == list(SIMS_METRICS)


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_unrounded_values_are_what_the_table_rounds(dataset):
    """Training compares metric_values (unrounded); compute_metrics is MMSA's rounded table of
    the same numbers."""
    rng = np.random.default_rng(5)
    labels = np.round(rng.uniform(-1, 1, 37), 1)
    preds = rng.uniform(-1.3, 1.3, 37)
    values = metric_values(preds, labels, dataset)
    assert compute_metrics(preds, labels, dataset) == rounded(values)
    assert values["MAE"] != round(values["MAE"], 4)  # 37 float32 errors: many more digits
    family = SIMS_FAMILY_METRICS if dataset == "sims" else MOSI_FAMILY_METRICS
    for name, metric in family.items():
        assert same(metric(torch.tensor(preds), list(labels)), values[name]), name


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_each_function_checks_its_inputs():
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        acc7([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no predictions"):
        sims_f1([], [])
