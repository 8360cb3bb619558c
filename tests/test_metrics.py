"""Detector metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ai_image_detection.metrics import (
    binary_metrics,
    choose_threshold,
    expected_calibration_error,
    tpr_at_fpr,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.65, 0.3, 0.7])


def test_thresholded_metrics_by_hand() -> None:
    metrics = binary_metrics(Y, P, threshold=0.5)
    # predicted: 0 0 0 1 | 1 1 0 1 -> TP 3, FP 1, FN 1, TN 3
    assert metrics["accuracy"] == 0.75
    assert metrics["precision"] == 0.75
    assert metrics["recall"] == 0.75
    assert metrics["f1"] == 0.75
    assert metrics["balanced_accuracy"] == 0.75
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(Y, P))


def test_tpr_at_fixed_fpr() -> None:
    # With no false positive allowed the best threshold is above 0.8: only 0.9 is caught.
    assert tpr_at_fpr(Y, P, 0.0) == 0.25
    # One false positive of four (25 %) allows t = 0.65 ... catches 0.9, 0.7, 0.65 (and 0.8 is the FP).
    assert tpr_at_fpr(Y, P, 0.25) == 0.75


def test_expected_calibration_error_by_hand() -> None:
    # Two bins: p = 0.2 (2 images, 1 AI: |0.5 - 0.2| = 0.3) and p = 0.9 (2 images, 2 AI: 0.1).
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9], bins=10) == pytest.approx(0.2)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_threshold_maximises_f1_on_a_constructed_case() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.2, 0.25, 0.3, 0.35])  # perfectly ranked, badly calibrated
    threshold = choose_threshold(y, p)
    assert threshold == pytest.approx(0.225)
    assert f1_score(y, p >= threshold) == 1.0
    assert binary_metrics(y, p, threshold)["f1"] == 1.0
    assert binary_metrics(y, p, 0.5)["f1"] == 0.0


def test_uninformative_scores_keep_the_conventional_threshold() -> None:
    assert choose_threshold([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], objective="balanced_accuracy") == 0.5


def test_one_class_gives_nan_for_ranking_metrics() -> None:
    metrics = binary_metrics([1, 1], [0.7, 0.9])
    assert math.isnan(metrics["roc_auc"])
    assert metrics["recall"] == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1], [0.5], "2 labels but 1 probabilities"),
        ([0, 2], [0.1, 0.2], "labels must be 0 or 1"),
        ([0, 1], [0.1, 1.2], r"must lie in \[0, 1\]"),
    ],
)
def test_bad_inputs_are_clear_errors(labels: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        binary_metrics(labels, scores)
