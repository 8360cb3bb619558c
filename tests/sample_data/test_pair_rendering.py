"""The up-scaler plumbing: aligned low-resolution inputs, the crop back, sharpening to the twin."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ai_image_detection.sample_data.decoders import mean_gradient_magnitude
from ai_image_detection.sample_data.pair_rendering import centre_crop, low_resolution_input, sharpen_to


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(300, 300, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 200 + 20
    detail = rng.normal(0, 20, (75, 75, 3)).repeat(4, axis=0).repeat(4, axis=1)
    return Image.fromarray((smooth + detail).clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upscaled_low_resolution_input_is_aligned_with_the_crop(photo: Image.Image, factor: int) -> None:
    box = (40.3, 51.7, 40.3 + 180.0, 51.7 + 180.0)
    crop = np.asarray(photo.resize((128, 128), Image.Resampling.LANCZOS, box=box)).astype(float)
    low = low_resolution_input(photo, box, 128, factor, "lanczos")
    assert low.shape == (-(-128 // factor),) * 2 + (3,)
    upscaled = np.asarray(Image.fromarray(low).resize((low.shape[0] * factor,) * 2, Image.Resampling.BICUBIC))
    twin = centre_crop(upscaled, 128).astype(float)
    assert twin.shape == crop.shape

    def correlation(shift: tuple[int, int]) -> float:
        shifted = np.roll(twin, shift, axis=(0, 1))[4:-4, 4:-4]
        return float(np.corrcoef(shifted.ravel(), crop[4:-4, 4:-4].ravel())[0, 1])

    scores = {(dy, dx): correlation((dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert max(scores, key=scores.__getitem__) == (0, 0)
    assert scores[(0, 0)] > 0.85


def test_centre_crop_refuses_a_small_image() -> None:
    with pytest.raises(ValueError, match="smaller than the 64 px crop"):
        centre_crop(np.zeros((60, 66, 3), dtype=np.uint8), 64)


def test_sharpen_to_reaches_the_share_of_the_twins_sharpness(photo: Image.Image) -> None:
    twin = np.asarray(photo.resize((128, 128)))
    soft = np.asarray(Image.fromarray(twin).resize((32, 32)).resize((128, 128), Image.Resampling.BICUBIC))
    target = 0.9 * mean_gradient_magnitude(twin.astype(np.float32))
    sharpened = sharpen_to(soft, twin, 0.9)
    assert mean_gradient_magnitude(sharpened.astype(np.float32)) == pytest.approx(target, rel=0.05)
    np.testing.assert_array_equal(sharpen_to(twin, soft, 1.0), twin)
