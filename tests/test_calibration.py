"""Platt scaling: it undoes a known miscalibration, keeps the ranking, and lives inside the graph."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from ai_image_detection.calibration import EPSILON, PlattScaling, fit_platt
from ai_image_detection.metrics import expected_calibration_error
from ai_image_detection.models import DetectorSpec, PlattCalibration, build_detector, calibrated_detector

IMAGES = 20_000


def one_tile_each(scores: np.ndarray) -> list[np.ndarray]:
    return [np.array([score]) for score in scores]


@pytest.fixture(scope="module")
def latent() -> tuple[np.ndarray, np.ndarray]:
    """A latent evidence ``z`` per image, labels drawn with P(AI) = sigmoid(z): sigmoid(z) is calibrated."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.0, IMAGES)
    labels = (rng.random(IMAGES) < expit(z)).astype(int)
    return z, labels


def test_platt_recovers_a_known_overconfidence(latent: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = latent
    overconfident = expit(3 * z)  # logit three times too large
    scaling = fit_platt(one_tile_each(overconfident), labels)

    assert scaling.slope == pytest.approx(1 / 3, rel=0.08)
    assert scaling.intercept == pytest.approx(0.0, abs=0.05)
    before = expected_calibration_error(labels, overconfident)
    after = expected_calibration_error(labels, scaling(overconfident))
    assert before > 0.1, "the raw scores are far from calibrated"
    assert after < before / 4


def test_the_fit_scales_exactly_with_the_logit(latent: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = latent
    calibrated = fit_platt(one_tile_each(expit(z)), labels)
    overconfident = fit_platt(one_tile_each(expit(3 * z)), labels)
    # logit(sigmoid(3z)) = 3 logit(sigmoid(z)): the same optimum, the slope divided by 3.
    assert overconfident.slope == pytest.approx(calibrated.slope / 3, rel=1e-3)
    assert overconfident.intercept == pytest.approx(calibrated.intercept, abs=1e-3)


def test_calibrated_scores_are_left_nearly_alone(latent: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = latent
    scaling = fit_platt(one_tile_each(expit(z)), labels)
    assert scaling.slope == pytest.approx(1.0, abs=0.08)
    assert scaling.intercept == pytest.approx(0.0, abs=0.05)
    assert np.max(np.abs(scaling(expit(z)) - expit(z))) < 0.05


def test_the_ranking_and_so_auroc_are_kept(latent: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = latent
    overconfident = expit(3 * z)
    calibrated = fit_platt(one_tile_each(overconfident), labels)(overconfident)
    assert roc_auc_score(labels, calibrated) == roc_auc_score(labels, overconfident)
    order = np.argsort(overconfident)
    assert np.all(np.diff(calibrated[order]) >= 0), "a positive slope is monotone"


def test_the_identity_and_the_clipping() -> None:
    identity = PlattScaling()
    scores = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(identity(scores), np.clip(scores, EPSILON, 1 - EPSILON), rtol=1e-9)
    assert np.isfinite(PlattScaling(slope=2.0, intercept=-1.0)(scores)).all()


def test_an_image_score_is_the_mean_of_its_calibrated_tiles() -> None:
    scaling = PlattScaling(slope=0.5, intercept=0.2)
    tiles = [np.array([0.2, 0.9, 0.6]), np.array([0.4])]
    expected = [np.mean(expit(0.5 * np.log(t / (1 - t)) + 0.2)) for t in tiles]
    np.testing.assert_allclose(scaling.image_scores(tiles), expected, rtol=1e-12)


def test_the_fit_weighs_images_not_tiles(latent: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = latent
    scores, labels = expit(3 * z[:2000]), labels[:2000]
    once = fit_platt(one_tile_each(scores), labels)
    # AI images cut into five identical tiles: a tile-level fit would see five times as many AI
    # examples and shift the intercept; the image-level fit sees the same images.
    tiled = fit_platt(
        [np.repeat(s, 5 if label else 1) for s, label in zip(scores, labels, strict=True)], labels
    )
    assert tiled.slope == pytest.approx(once.slope, rel=1e-4)
    assert tiled.intercept == pytest.approx(once.intercept, abs=1e-4)


def test_the_smoothed_targets_keep_a_separable_set_from_running_away() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    scaling = fit_platt(one_tile_each(scores), [0, 0, 0, 1, 1, 1])
    # Targets 1 and 0 would push the slope to infinity; Platt's 4/5 and 1/5 keep it near 1.
    assert 0.5 < scaling.slope < 1.5
    assert scaling.intercept == pytest.approx(0.0, abs=1e-3), "a symmetric set gets no shift"
    assert 0.05 < scaling(scores).min() and scaling(scores).max() < 0.95, "no certainty from six images"


@pytest.mark.parametrize(
    ("tiles", "labels", "message"),
    [
        ([np.array([0.2]), np.array([0.7])], [1, 1], "both classes, got labels .*1"),
        ([np.array([0.2]), np.array([0.7])], [0, 0], "both classes, got labels .*0"),
        ([np.array([0.2]), np.array([0.7])], [0, 1, 1], "2 images but 3 labels"),
    ],
)
def test_bad_inputs_are_clear_errors(tiles: list[np.ndarray], labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_platt(tiles, labels)


def test_the_keras_layer_equals_the_numpy_scaling() -> None:
    scaling = PlattScaling(slope=0.37, intercept=-0.8)
    probabilities = np.array([[0.0], [1e-9], [0.01], [0.3], [0.5], [0.77], [0.999]], dtype=np.float32)
    layer = PlattCalibration(scaling.slope, scaling.intercept)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(probabilities)), scaling(probabilities), rtol=1e-5, atol=1e-6
    )


def test_a_saturated_tile_is_calibrated_the_same_in_the_graph_and_in_evaluation() -> None:
    scaling = PlattScaling(slope=0.37, intercept=-0.8)
    saturated = np.array([[1.0]], dtype=np.float32)  # what a float32 sigmoid returns for a logit > ~17
    layer = PlattCalibration(scaling.slope, scaling.intercept)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(saturated)), scaling(saturated), rtol=1e-5, atol=1e-6
    )


def test_the_calibrated_detector_survives_saving_and_loading(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4]))
    scaling = PlattScaling(slope=0.4, intercept=0.3)
    calibrated = calibrated_detector(model, scaling)
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)

    raw = model.predict_on_batch(images)
    np.testing.assert_allclose(calibrated.predict_on_batch(images), scaling(raw), rtol=1e-5, atol=1e-6)
    assert calibrated.input_shape == model.input_shape

    path = tmp_path / "calibrated.keras"
    calibrated.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("calibrated")
    assert isinstance(layer, PlattCalibration)
    assert (layer.slope, layer.intercept) == (0.4, 0.3)
    np.testing.assert_allclose(
        loaded.predict_on_batch(images), calibrated.predict_on_batch(images), rtol=1e-6, atol=1e-7
    )
