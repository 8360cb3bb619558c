"""Detector metrics: the numbers the field reports, computed from labels and probabilities.

Pure NumPy/scikit-learn functions of ``y_true`` (0 = human, 1 = AI) and ``p`` (probability of
AI); no I/O. Threshold-free metrics (ROC AUC, average precision, TPR at a fixed FPR,
calibration) say how well the scores rank and how honest they are; thresholded ones depend on
the decision threshold, which is chosen on validation data (:func:`choose_threshold`).
"""

from __future__ import annotations

from collections.abc import Sequence
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

from ai_image_detection.contract import NEVER_CUT, VERDICTS

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


def choose_band(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    threshold: float,
    max_fpr: float,
    min_human_precision: float,
    max_miss_rate: float,
    also_on: Sequence[tuple[ArrayLike, ArrayLike]] = (),
) -> tuple[float, float]:
    """The inconclusive band ``[threshold_human, threshold_ai)`` chosen on (validation) data.

    ``threshold_ai`` is the lowest cut whose false-positive rate (human images answered ``ai``)
    is at most ``max_fpr``; ``threshold_human`` the highest cut below which at least
    ``min_human_precision`` of the images are human and at most ``max_miss_rate`` of the AI
    images fall (the precision alone depends on the set's share of AI images: a set with few of
    them lets a large share of them be answered ``human``). Each set of ``also_on`` (labels and
    scores of images the model never trained on, e.g. generator families held out of training)
    must meet the targets too, so the band is the widest of the sets' own. The band always holds
    ``threshold``, so that a committed answer never contradicts the forced choice (no "ai" below
    the cut, no "human" above it). When one cut meets every target there is no band: both edges
    are ``threshold`` moved into the range that meets them.

    Args:
        y_true: Labels (1 = AI).
        probabilities: Calibrated image scores.
        threshold: The single best cut (:func:`choose_threshold`).
        max_fpr: Largest accepted share of human images answered ``ai``.
        min_human_precision: Smallest accepted share of human images among ``human`` answers.
        max_miss_rate: Largest accepted share of AI images answered ``human``.
        also_on: Further ``(labels, scores)`` sets the targets must hold on.

    Returns:
        ``(threshold_human, threshold_ai)`` with ``threshold_human <= threshold_ai``. An edge may
        be 0 (no cut above the lowest score meets the ``human`` targets: never ``human``) or
        :data:`~ai_image_detection.contract.NEVER_CUT` (none below the highest meets ``max_fpr``:
        never ``ai``). A set of one class only constrains one edge (a set of AI images alone
        lets ``ai`` start at 0; of humans alone, ``human`` reach above 1), so ``y_true`` should hold
        both.
    """
    edges = [
        _band_edges(*_validated(labels, scores), max_fpr, min_human_precision, max_miss_rate)
        for labels, scores in [(y_true, probabilities), *also_on]
    ]
    threshold_human = min(human for human, _ in edges)
    threshold_ai = max(ai for _, ai in edges)
    if threshold_human >= threshold_ai:
        cut = float(np.clip(threshold, threshold_ai, threshold_human))
        return cut, cut
    return min(threshold_human, threshold), max(threshold_ai, threshold)


def _band_edges(
    labels: np.ndarray, scores: np.ndarray, max_fpr: float, min_human_precision: float, max_miss_rate: float
) -> tuple[float, float]:
    """One set's tightest ``(threshold_human, threshold_ai)``, crossed when one cut meets every target."""
    distinct = np.unique(scores)
    candidates = np.unique(np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2, [NEVER_CUT]]))
    humans = scores[labels == 0]
    fpr = np.array([np.mean(humans >= t) if humans.size else 0.0 for t in candidates])
    threshold_ai = float(candidates[np.flatnonzero(fpr <= max_fpr)[0]])
    below = np.array([(scores < t).sum() for t in candidates])
    human_below = np.array([((scores < t) & (labels == 0)).sum() for t in candidates])
    precision = np.where(below > 0, human_below / np.maximum(below, 1), 1.0)
    ai_images = max(int((labels == 1).sum()), 1)
    miss_rate = (below - human_below) / ai_images
    meets = (precision >= min_human_precision) & (miss_rate <= max_miss_rate)
    threshold_human = float(candidates[np.flatnonzero(meets)[-1]])
    return threshold_human, threshold_ai


def answer_shares(probabilities: ArrayLike, threshold_human: float, threshold_ai: float) -> dict[str, float]:
    """Share of ``human``, ``inconclusive`` and ``ai`` answers for these scores.

    Args:
        probabilities: Calibrated image scores.
        threshold_human: Lower edge of the band.
        threshold_ai: Upper edge.

    Returns:
        ``{"human": …, "inconclusive": …, "ai": …}`` (NaN each when there are no scores).
    """
    scores = np.asarray(probabilities, dtype=np.float64).ravel()
    if not scores.size:
        return dict.fromkeys(VERDICTS, float("nan"))
    ai = scores >= threshold_ai
    human = scores < threshold_human
    return {
        "human": float(human.mean()),
        "inconclusive": float((~ai & ~human).mean()),
        "ai": float(ai.mean()),
    }


def answers_by_class(
    labels: ArrayLike, probabilities: ArrayLike, band: tuple[float, float]
) -> dict[str, dict[str, float]]:
    """The answers (:func:`answer_shares`) on the AI images and on the human images apart.

    Args:
        labels: 1 for AI, 0 for human, per image.
        probabilities: Calibrated image scores.
        band: ``(threshold_human, threshold_ai)``.

    Returns:
        ``{"ai_images": shares, "human_images": shares}``: a human image answered ``ai`` is a
        false accusation, an AI image answered ``human`` a miss.
    """
    truth = np.asarray(labels).ravel().astype(int)
    scores = np.asarray(probabilities, dtype=np.float64).ravel()
    classes = {"ai_images": 1, "human_images": 0}
    return {kind: answer_shares(scores[truth == label], *band) for kind, label in classes.items()}
