"""Simulated generators: correct layers, determinism, sharpness matching."""

from __future__ import annotations

import numpy as np
import pytest

from ai_image_detection.sample_data.decoders import (
    DecoderSpec,
    downsample,
    match_sharpness,
    mean_gradient_magnitude,
    simulate_generator,
    transposed_conv_stride2,
    upsample_bilinear,
)


def reference_transposed_conv(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Textbook scatter form: out[2i + k - 1] += x[i] * w[k] (kernel 4, stride 2, padding 1)."""
    height, width, _ = image.shape
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    full = np.zeros((2 * height + 6, 2 * width + 6, weights.shape[3]))
    for i in range(height + 2):
        for j in range(width + 2):
            for ky in range(4):
                for kx in range(4):
                    full[2 * i + ky, 2 * j + kx] += padded[i, j] @ weights[ky, kx]
    # Input index i of the padded image is original index i - 1; output o = 2(i-1) + k - 1.
    return full[3 : 3 + 2 * height, 3 : 3 + 2 * width]


def test_transposed_conv_matches_the_textbook_definition() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 6, 3)).astype(np.float32)
    weights = rng.normal(size=(4, 4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(
        transposed_conv_stride2(image, weights),
        reference_transposed_conv(image, weights),
        rtol=1e-4,
        atol=1e-4,
    )


def test_bilinear_upsampling_keeps_constants_and_ramps() -> None:
    constant = np.full((4, 4, 3), 7.0, dtype=np.float32)
    np.testing.assert_allclose(upsample_bilinear(constant), 7.0)
    ramp = np.tile(np.arange(8, dtype=np.float32)[None, :, None], (4, 1, 3))
    up = upsample_bilinear(ramp)
    np.testing.assert_allclose(up[0, 2:-2, 0], np.arange(0.75, 6.5, 0.5))


def test_downsample_averages_blocks() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    np.testing.assert_allclose(downsample(image, 2)[..., 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.fixture
def crop() -> np.ndarray:
    rng = np.random.default_rng(1)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(64, 64, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 200 + 20
    return (smooth + rng.normal(0, 4, smooth.shape)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("family", ["transposed_conv", "nearest_conv"])
@pytest.mark.parametrize("factor", [2, 4])
def test_generator_is_deterministic_and_sharpness_matched(crop: np.ndarray, family: str, factor: int) -> None:
    spec = DecoderSpec(family, factor, hidden_channels=4, residual_strength=1.5, seed=3)  # type: ignore[arg-type]
    out = simulate_generator(crop, spec)
    assert out.shape == crop.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, simulate_generator(crop, spec))
    assert not np.array_equal(out, simulate_generator(crop, DecoderSpec(family, factor, 4, 1.5, seed=4)))  # type: ignore[arg-type]
    real, fake = (
        mean_gradient_magnitude(crop.astype(np.float32)),
        mean_gradient_magnitude(out.astype(np.float32)),
    )
    assert abs(fake - real) / real < 0.25
    assert abs(float(out.mean()) - float(crop.mean())) < 3.0, "colour statistics are kept"


def test_match_sharpness_reaches_the_target() -> None:
    rng = np.random.default_rng(2)
    blurry = upsample_bilinear(rng.uniform(0, 255, (32, 32, 3)).astype(np.float32))
    target = mean_gradient_magnitude(blurry) * 1.5
    assert mean_gradient_magnitude(match_sharpness(blurry, target)) == pytest.approx(target, rel=0.01)


def test_bad_factor_or_size_is_a_clear_error(crop: np.ndarray) -> None:
    with pytest.raises(ValueError, match="factor must be"):
        simulate_generator(crop, DecoderSpec("nearest_conv", 3, 4, 1.0, 0))
    with pytest.raises(ValueError, match="not divisible"):
        simulate_generator(crop[:62], DecoderSpec("nearest_conv", 4, 4, 1.0, 0))
