"""Classical hard negatives: same size, deterministic, softer or sharper as their names say."""

from __future__ import annotations

import numpy as np
import pytest

from ai_image_detection.sample_data.classical import CLASSICAL_OPS, apply_classical, classical_settings
from ai_image_detection.sample_data.decoders import mean_gradient_magnitude


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    rng = np.random.default_rng(4)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(96, 96, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 200 + 20
    return (smooth + rng.normal(0, 6, smooth.shape)).clip(0, 255).astype(np.uint8)


def _sharpness(image: np.ndarray) -> float:
    return mean_gradient_magnitude(image.astype(np.float32))


@pytest.mark.parametrize("op", CLASSICAL_OPS)
def test_every_operation_keeps_size_and_content_and_is_deterministic(crop: np.ndarray, op: str) -> None:
    out = apply_classical(crop, op, 0.5)
    assert out.shape == crop.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, apply_classical(crop, op, 0.5))
    assert not np.array_equal(out, crop)
    assert abs(float(out.mean()) - float(crop.mean())) < 2.0
    assert np.corrcoef(out.ravel(), crop.ravel())[0, 1] > 0.9
    assert classical_settings(op, 0.5)


@pytest.mark.parametrize("op", ["bicubic_x2", "lanczos_x3", "bicubic_x4", "gaussian_blur"])
def test_resampling_and_blur_soften(crop: np.ndarray, op: str) -> None:
    assert _sharpness(apply_classical(crop, op, 0.0)) < 0.95 * _sharpness(crop)


def test_unsharp_mask_sharpens_and_jpeg_quality_follows_strength(crop: np.ndarray) -> None:
    assert _sharpness(apply_classical(crop, "unsharp_mask", 0.5)) > 1.05 * _sharpness(crop)
    assert classical_settings("jpeg_resave", 0.0) == "quality=70"
    assert classical_settings("jpeg_resave", 1.0) == "quality=90"


def test_unknown_operation_is_a_clear_error(crop: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown classical operation 'sepia'; accepted: bicubic_x2"):
        apply_classical(crop, "sepia", 0.5)
