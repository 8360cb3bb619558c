"""Detector metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ai_image_detection.contract import verdict
from ai_image_detection.metrics import (
    answer_shares,
    answers_by_class,
    binary_metrics,
    choose_band,
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


# Humans 0.1 0.2 0.3 0.6 and AI 0.4 0.7 0.8 0.9: the two classes overlap between 0.4 and 0.6.
BAND_Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
BAND_P = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_the_band_by_hand() -> None:
    # No false positive allowed: the lowest such cut lies above the highest human, between 0.6 and 0.7.
    # All "human" answers right: the highest such cut lies below the lowest AI, between 0.3 and 0.4.
    band = choose_band(
        BAND_Y, BAND_P, threshold=0.5, max_fpr=0.0, min_human_precision=0.99, max_miss_rate=1.0
    )
    assert band == pytest.approx((0.35, 0.65))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("max_fpr", "min_human_precision", "max_miss_rate"),
    [(0.05, 0.95, 1.0), (0.1, 0.9, 1.0), (0.01, 0.99, 1.0), (0.05, 0.95, 0.02), (0.1, 0.8, 0.05)],
)
def test_the_band_meets_every_target_on_the_data(
    seed: int, max_fpr: float, min_human_precision: float, max_miss_rate: float
) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    threshold = choose_threshold(y, p)
    threshold_human, threshold_ai = choose_band(y, p, threshold, max_fpr, min_human_precision, max_miss_rate)

    assert threshold_human < threshold_ai, "the classes overlap: there is a band"
    assert threshold_human <= threshold <= threshold_ai, "no committed answer contradicts the forced choice"
    assert np.mean(p[y == 0] >= threshold_ai) <= max_fpr
    answered_human = p < threshold_human
    if answered_human.any():
        assert np.mean(y[answered_human] == 0) >= min_human_precision
    assert np.mean(p[y == 1] < threshold_human) <= max_miss_rate
    # The edges are the tightest that meet the targets (unless widened to the forced-choice cut): the
    # next score below threshold_ai breaks the false-positive target, the next score at or above
    # threshold_human breaks the precision or the miss-rate target.
    lower = p[p < threshold_ai]
    if lower.size and threshold_ai != threshold:
        assert np.mean(p[y == 0] >= lower.max()) > max_fpr
    higher = p[p >= threshold_human]
    if higher.size and threshold_human != threshold:
        widened = p <= higher.min()
        precision_broken = np.mean(y[widened] == 0) < min_human_precision
        assert precision_broken or np.mean(p[y == 1] <= higher.min()) > max_miss_rate


def test_a_set_with_few_ai_images_cannot_let_a_share_of_them_be_answered_human() -> None:
    # 20 humans between 0.2 and 0.4; one AI image scored below them all, one far above.
    y = np.r_[np.zeros(20), 1, 1].astype(int)
    p = np.r_[np.linspace(0.2, 0.4, 20), 0.15, 0.9]
    by_precision = choose_band(y, p, 0.5, max_fpr=0.0, min_human_precision=0.9, max_miss_rate=0.5)
    assert by_precision == pytest.approx((0.65, 0.65)), "20 of 21 'human' answers right: half the AI missed"
    assert answer_shares(p[y == 1], *by_precision)["human"] == 0.5
    band = choose_band(y, p, 0.5, max_fpr=0.0, min_human_precision=0.9, max_miss_rate=0.02)
    assert band == pytest.approx((0.0, 0.65)), (
        "no cut below the first AI image answers any human: never human"
    )
    assert answer_shares(p[y == 1], *band)["human"] == 0.0


def test_no_band_when_one_cut_meets_both_targets() -> None:
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    # Any cut in [0.15, 0.85] has FPR <= 0.5 and human precision >= 0.6: the best cut stays where it is ...
    assert choose_band(y, p, threshold=0.5, max_fpr=0.5, min_human_precision=0.6, max_miss_rate=1.0) == (
        0.5,
        0.5,
    )
    # ... or moves to the nearest edge of that range.
    for threshold, edge in ((0.95, 0.85), (0.05, 0.15)):
        band = choose_band(y, p, threshold, max_fpr=0.5, min_human_precision=0.6, max_miss_rate=1.0)
        assert band == pytest.approx((edge, edge))


def test_a_separable_set_needs_no_band_even_with_strict_targets() -> None:
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    assert choose_band(y, p, threshold=0.5, max_fpr=0.0, min_human_precision=0.999, max_miss_rate=1.0) == (
        0.5,
        0.5,
    )


def test_answer_shares_by_hand() -> None:
    shares = answer_shares(BAND_P, 0.35, 0.65)
    assert shares == pytest.approx({"human": 3 / 8, "inconclusive": 2 / 8, "ai": 3 / 8})


def test_the_band_edges_belong_to_inconclusive_and_ai() -> None:
    assert answer_shares([0.3, 0.6], 0.3, 0.6) == {"human": 0.0, "inconclusive": 0.5, "ai": 0.5}
    assert answer_shares([0.49, 0.5], 0.5, 0.5) == {"human": 0.5, "inconclusive": 0.0, "ai": 0.5}


def test_answer_shares_of_nothing_are_nan() -> None:
    shares = answer_shares([], 0.3, 0.6)
    assert set(shares) == {"human", "inconclusive", "ai"}
    assert all(math.isnan(value) for value in shares.values())


@pytest.mark.parametrize("band", [(0.35, 0.65), (0.5, 0.5), (0.0, 1.0)])
def test_answer_shares_count_the_services_verdicts(band: tuple[float, float]) -> None:
    scores = np.r_[BAND_P, band, np.linspace(0, 1, 21)]
    answers = [verdict(float(score), *band) for score in scores]
    expected = {answer: answers.count(answer) / len(answers) for answer in ("human", "inconclusive", "ai")}
    assert answer_shares(scores, *band) == pytest.approx(expected)


def test_the_band_holds_on_every_further_set() -> None:
    validation_y, validation_p = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    # A family the model never saw: its AI images score as low as humans, one human scores high.
    unseen_y, unseen_p = np.array([0, 0, 0, 1, 1, 1]), np.array([0.05, 0.3, 0.6, 0.15, 0.35, 0.95])
    alone = choose_band(
        validation_y, validation_p, threshold=0.5, max_fpr=0.0, min_human_precision=0.99, max_miss_rate=1.0
    )
    band = choose_band(
        validation_y,
        validation_p,
        0.5,
        max_fpr=0.0,
        min_human_precision=0.99,
        max_miss_rate=1.0,
        also_on=[(unseen_y, unseen_p)],
    )
    assert alone == (0.5, 0.5), "validation is separable: no band"
    assert band == pytest.approx((0.1, 0.775)), (
        "below the unseen AI images' lowest, above its humans' highest"
    )
    for y, p in ((validation_y, validation_p), (unseen_y, unseen_p)):
        assert np.mean(p[y == 0] >= band[1]) == 0
        assert np.all(y[p < band[0]] == 0)


def test_a_further_set_is_validated_too() -> None:
    with pytest.raises(ValueError, match="labels but"):
        choose_band([0, 1], [0.2, 0.8], 0.5, 0.05, 0.95, 0.02, also_on=[([0, 1, 1], [0.2, 0.8])])


def test_the_band_holds_the_forced_choice_cut() -> None:
    # Alone, no human scores at or above 0.25: "ai" from 0.25 would meet max_fpr 0 ...
    y, p = np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.15, 0.9])
    tight = choose_band(y, p, threshold=0.25, max_fpr=0.0, min_human_precision=0.99, max_miss_rate=1.0)
    assert tight == pytest.approx((0.125, 0.25))
    # ... but with the forced choice at 0.6, a P(AI) of 0.3 is "human" there, so never "ai" here.
    assert choose_band(
        y, p, threshold=0.6, max_fpr=0.0, min_human_precision=0.99, max_miss_rate=1.0
    ) == pytest.approx((0.125, 0.6))
    assert choose_band(
        y, p, threshold=0.05, max_fpr=0.0, min_human_precision=0.99, max_miss_rate=1.0
    ) == pytest.approx((0.05, 0.25))


def test_answers_by_class_splits_the_answers_between_ai_and_human_images() -> None:
    labels = [1, 1, 1, 0, 0]
    scores = [0.9, 0.5, 0.1, 0.6, 0.05]
    answers = answers_by_class(labels, scores, (0.2, 0.55))
    assert answers["ai_images"] == pytest.approx({"human": 1 / 3, "inconclusive": 1 / 3, "ai": 1 / 3})
    assert answers["human_images"] == {"human": 0.5, "inconclusive": 0.0, "ai": 0.5}, "one false accusation"
