"""The expert head: the product's loss minimised to convergence, and its max-logit join with the main head."""

from pathlib import Path

import keras
import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from ai_image_detection.models.expert_head import ExpertFit, fit_expert, with_experts
from ai_image_detection.models.zoo import probe_head

FEATURES = 6


def _rows(count: int, ai_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows on different scales and offsets, whose first two columns carry the label (noisily)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(count) < ai_share).astype(np.float32)
    features = rng.normal(size=(count, FEATURES))
    features[:, :2] += labels[:, None] * 1.5
    features = features * np.array([1.0, 30.0, 0.01, 5.0, 1.0, 2.0]) + np.array([0, -4, 100, 1, 0, 7])
    return features.astype(np.float32), labels


def _logits(expert: ExpertFit, features: np.ndarray) -> np.ndarray:
    """The expert's logit of each row, in float64: what its layers in the joined head compute."""
    return ((features.astype(np.float64) - expert.mean) / expert.scale) @ expert.weights + expert.bias


def test_without_the_mean_term_it_is_the_l2_logistic_regression() -> None:
    features, labels = _rows(400, 0.5, seed=0)
    l2 = 0.05
    fitted = fit_expert(features, labels, l2=l2, alpha=0.0, beta=0.5)

    standardised = (features - features.mean(axis=0)) / features.std(axis=0)
    reference = LogisticRegression(C=1 / (l2 * len(labels)), tol=1e-10, max_iter=10_000)
    reference.fit(standardised, labels)
    assert fitted.converged
    np.testing.assert_allclose(
        _logits(fitted, features), reference.decision_function(standardised), atol=2e-3
    )


def test_the_mean_term_pulls_the_mean_prediction_towards_beta() -> None:
    features, labels = _rows(400, 0.8, seed=1)
    mean_prediction = {
        alpha: float(expit(_logits(fit, features)).mean())
        for alpha in (0.0, 20.0)
        for fit in [fit_expert(features, labels, l2=0.05, alpha=alpha, beta=0.5)]
    }
    assert mean_prediction[0.0] == pytest.approx(labels.mean(), abs=0.02), "BCE alone matches the base rate"
    assert mean_prediction[20.0] < mean_prediction[0.0] - 0.1, "pulled towards beta = 0.5"


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros((4, 3), np.float32), np.ones(4, np.float32), "needs AI and human rows"),
        (np.zeros((4, 3), np.float32), np.array([0, 1, 0], np.float32), "do not match"),
        (np.zeros(4, np.float32), np.array([0, 1, 0, 1], np.float32), "do not match"),
    ],
)
def test_bad_rows_are_a_clear_error(features: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_expert(features, labels, l2=0.1, alpha=0.0, beta=0.5)


def test_the_joined_head_answers_the_most_confident_head(tmp_path: Path) -> None:
    features, _ = _rows(64, 0.5, seed=2)
    head = probe_head(FEATURES, ["human", "alpha"], 0.5, features.mean(axis=0), features.var(axis=0))
    rng = np.random.default_rng(3)
    for layer in (head.get_layer("probability_ai"), head.get_layer("family_probabilities")):
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    experts = {
        name: ExpertFit(
            mean=features.mean(axis=0),
            scale=features.std(axis=0),
            weights=rng.normal(size=FEATURES).astype(np.float32),
            bias=bias,
            iterations=1,
            converged=True,
            loss=0.0,
        )
        for name, bias in (("as_published", 0.3), ("reshared", -0.2))
    }

    joined = with_experts(head, experts)
    probability, families = joined.predict_on_batch(features)
    main_probability, main_families = head.predict_on_batch(features)
    logits = [np.log(main_probability[:, 0] / (1 - main_probability[:, 0]))]
    logits += [_logits(expert, features) for expert in experts.values()]
    np.testing.assert_allclose(probability[:, 0], expit(np.max(logits, axis=0)), rtol=1e-4, atol=1e-6)
    assert len({int(i) for i in np.argmax(logits, axis=0)}) == len(logits), "each head decides some rows"
    np.testing.assert_allclose(families, main_families, rtol=1e-6)  # attribution stays the main head's
    assert not joined.get_layer("expert_reshared").trainable

    joined.save(tmp_path / "head.keras")
    reloaded = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(reloaded.predict_on_batch(features)[0], probability, rtol=1e-6)


def test_joining_no_expert_is_a_clear_error() -> None:
    head = probe_head(FEATURES, [], 0.5, np.zeros(FEATURES), np.ones(FEATURES))
    with pytest.raises(ValueError, match="at least one expert"):
        with_experts(head, {})


def test_a_widened_expert_reads_its_columns_alone() -> None:
    features, labels = _rows(200, 0.5, seed=4)
    columns = np.array([1, 3, 4])
    narrow = fit_expert(features[:, columns], labels, l2=0.05, alpha=0.5, beta=0.5)
    noise = np.random.default_rng(5).normal(size=(len(features), 9)).astype(np.float32) * 1e3
    wide_features = noise.copy()
    wide_features[:, [2, 5, 8]] = features[:, columns]

    wide = narrow.widened(np.array([2, 5, 8]), 9)
    np.testing.assert_allclose(_logits(wide, wide_features), _logits(narrow, features[:, columns]), rtol=1e-6)
    assert np.count_nonzero(wide.weights) == len(columns)
