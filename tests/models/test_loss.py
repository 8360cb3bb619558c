"""The BCE + prior-penalty loss: values, identity at alpha = 0, gradients, behaviour."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ai_image_detection.models.loss import BCEWithPriorPenalty, MaskedSparseCategoricalCrossentropy

Y_TRUE = np.array([[1.0], [0.0], [1.0], [0.0]], dtype=np.float32)
Y_PRED = np.array([[0.9], [0.2], [0.6], [0.4]], dtype=np.float32)


def test_hand_computed_value() -> None:
    bce = -np.mean([math.log(0.9), math.log(0.8), math.log(0.6), math.log(0.6)])
    penalty = 2.0 * (np.mean([0.9, 0.2, 0.6, 0.4]) - 0.3) ** 2
    loss = BCEWithPriorPenalty(alpha=2.0, beta=0.3)(Y_TRUE, Y_PRED)
    assert float(loss) == pytest.approx(bce + penalty, rel=1e-5)


def test_alpha_zero_is_keras_binary_crossentropy_exactly() -> None:
    ours = BCEWithPriorPenalty(alpha=0.0, beta=0.9)(Y_TRUE, Y_PRED)
    keras_bce = keras.losses.BinaryCrossentropy()(Y_TRUE, Y_PRED)
    assert float(ours) == float(keras_bce)


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_gradients_are_finite_at_saturated_probabilities(edge: float) -> None:
    y_pred = tf.Variable(np.full((4, 1), edge, dtype=np.float32))
    with tf.GradientTape() as tape:
        loss = BCEWithPriorPenalty(alpha=5.0, beta=0.5)(Y_TRUE, y_pred)
    gradient = tape.gradient(loss, y_pred)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(gradient.numpy()))


def test_round_trips_through_keras_serialisation() -> None:
    loss = BCEWithPriorPenalty(alpha=1.5, beta=0.25)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, BCEWithPriorPenalty)
    assert (restored.alpha, restored.beta) == (1.5, 0.25)


def test_invalid_parameters_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        BCEWithPriorPenalty(alpha=-1.0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        BCEWithPriorPenalty(beta=1.5)


def _mean_prediction_after_training(alpha: float) -> float:
    """Fit a logistic regression on a 10 %-positive toy problem; return its mean p."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = (rng.random(512) < 0.1).astype(np.float32)
    features = (rng.normal(size=(512, 4)) + labels[:, None] * 0.5).astype(np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=BCEWithPriorPenalty(alpha=alpha, beta=0.5))
    model.fit(features, labels, batch_size=128, epochs=40, verbose=0)
    return float(model.predict(features, verbose=0).mean())


def test_a_larger_alpha_moves_the_mean_prediction_towards_beta() -> None:
    plain, penalised = _mean_prediction_after_training(0.0), _mean_prediction_after_training(20.0)
    assert abs(penalised - 0.5) < abs(plain - 0.5) - 0.1, (plain, penalised)


def test_the_attribution_loss_ignores_targets_without_a_family() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=np.float32)
    loss = MaskedSparseCategoricalCrossentropy()
    counted = float(loss(np.array([0, 1, -1]), probabilities))
    assert counted == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2, rel=1e-5), (
        "mean over the two that count"
    )
    assert float(loss(np.array([-1, -1, -1]), probabilities)) == 0.0
