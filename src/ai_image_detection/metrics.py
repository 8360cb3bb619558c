"""Detector metrics: the numbers the field reports, computed from labels and probabilities.

Pure NumPy/scikit-learn functions of ``y_true`` (0 = human, 1 = AI) and ``p`` (probability of
AI); no I/O. Threshold-free metrics (ROC AUC, average precision, TPR at a fixed FPR,
calibration) say how well the scores rank and how honest they are; thresholded ones depend on
the decision threshold, which is chosen on validation data (:func:`choose_threshold`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

ThresholdObjective = Literal["f1", "balanced_accuracy"]


def _validated(y_true: ArrayLike, probabilities: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true).astype(int).ravel()
    scores = np.asarray(probabilities, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} probabilities")
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(np.unique(labels)))}")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise ValueError(f"probabilities must lie in [0, 1], got [{scores.min()}, {scores.max()}]")
    return labels, scores


def expected_calibration_error(y_true: ArrayLike, probabilities: ArrayLike, bins: int = 15) -> float:
    """Expected calibration error over equal-width probability bins.

    The weighted mean, over bins, of ``|fraction of AI images − mean predicted probability|``
    (the probability of the predicted class is not used: this is the binary, "positive
    class" form, which matches a reliability diagram of P(AI)).

    Args:
        y_true: Labels (1 = AI).
        probabilities: Predicted probabilities of AI.
        bins: Number of equal-width bins on [0, 1].

    Returns:
        The ECE, in [0, 1].
    """
    labels, scores = _validated(y_true, probabilities)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(labels[members].mean() - scores[members].mean())
    return float(error)


def tpr_at_fpr(y_true: ArrayLike, probabilities: ArrayLike, max_fpr: float) -> float:
    """Highest true-positive rate reachable with a false-positive rate of at most ``max_fpr``.

    Args:
        y_true: Labels (1 = AI).
        probabilities: Predicted probabilities of AI.
        max_fpr: The false-positive budget, e.g. 0.01 (1 % of human images flagged).

    Returns:
        The TPR at that operating point (0 when no threshold fits the budget).
    """
    labels, scores = _validated(y_true, probabilities)
    fpr, tpr, _ = roc_curve(labels, scores)
    allowed = fpr <= max_fpr
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def choose_threshold(
    y_true: ArrayLike, probabilities: ArrayLike, objective: ThresholdObjective = "f1"
) -> float:
    """The decision threshold that maximises ``objective`` on these (validation) data.

    Candidates are the midpoints between neighbouring distinct probabilities (and 0.5); ties
    go to the threshold closest to 0.5, so an uninformative choice stays at the conventional
    value.

    Args:
        y_true: Labels (1 = AI).
        probabilities: Predicted probabilities of AI.
        objective: ``"f1"`` or ``"balanced_accuracy"``.

    Returns:
        The threshold ``t``: predict AI when ``p >= t``.
    """
    labels, scores = _validated(y_true, probabilities)
    distinct = np.unique(scores)
    # Midpoints between neighbouring scores: a threshold equal to a score would flip that image
    # on the tiniest numeric difference (e.g. Keras vs ONNX Runtime).
    candidates = np.unique(np.concatenate([(distinct[:-1] + distinct[1:]) / 2, [0.5]]))
    values = np.array([_objective(labels, (scores >= t).astype(int), objective) for t in candidates])
    best = np.flatnonzero(np.isclose(values, values.max()))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def _objective(labels: np.ndarray, predicted: np.ndarray, objective: ThresholdObjective) -> float:
    if objective == "f1":
        return float(f1_score(labels, predicted, zero_division=0))
    return float(balanced_accuracy_score(labels, predicted))


def binary_metrics(y_true: ArrayLike, probabilities: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Every metric the evaluation reports, at one decision threshold.

    Args:
        y_true: Labels (1 = AI).
        probabilities: Predicted probabilities of AI.
        threshold: Predict AI when ``p >= threshold``.

    Returns:
        ``accuracy, precision, recall, f1, balanced_accuracy, roc_auc, average_precision,
        ece, tpr_at_fpr_1pct, tpr_at_fpr_5pct`` (threshold-free ones are NaN when only one
        class is present).
    """
    labels, scores = _validated(y_true, probabilities)
    predicted = (scores >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2  # noqa: PLR2004
    nan = float("nan")
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)) if both_classes else nan,
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else nan,
        "average_precision": float(average_precision_score(labels, scores)) if both_classes else nan,
        "ece": expected_calibration_error(labels, scores),
        "tpr_at_fpr_1pct": tpr_at_fpr(labels, scores, 0.01) if both_classes else nan,
        "tpr_at_fpr_5pct": tpr_at_fpr(labels, scores, 0.05) if both_classes else nan,
    }
