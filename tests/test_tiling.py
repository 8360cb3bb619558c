"""Tiles match evaluation's centre crop; large images get an odd grid of native-resolution crops."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ai_image_detection.input_pipeline import fit_to_size
from ai_image_detection.tiling import fit_crop, tile_crops


def pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("height", "width"), [(96, 96), (200, 130), (41, 300), (20, 25), (97, 96)])
def test_the_first_tile_of_one_is_evaluations_centre_crop(height: int, width: int) -> None:
    image = pixels(height, width)
    expected = fit_to_size(tf.constant(image), 96, training=False, resize=False).numpy()
    np.testing.assert_array_equal(tile_crops(image, 96, max_tiles=1)[0], expected)


def test_large_images_get_an_odd_grid_whose_middle_is_the_centre_crop() -> None:
    image = pixels(400, 300)
    crops = tile_crops(image, 96, max_tiles=9)
    assert crops.shape == (9, 96, 96, 3)
    np.testing.assert_array_equal(crops[4], tile_crops(image, 96, max_tiles=1)[0])
    np.testing.assert_array_equal(crops[0], image[:96, :96])
    np.testing.assert_array_equal(crops[-1], image[-96:, -96:])
    assert tile_crops(pixels(150, 1000), 96, max_tiles=9).shape[0] == 9, "one row: up to max_tiles along it"
    assert tile_crops(pixels(150, 150), 96, max_tiles=9).shape[0] == 1, "under twice the input: centre only"


@pytest.mark.parametrize(
    ("max_tiles", "expected"), [(1, 1), (2, 1), (3, 3), (4, 3), (8, 5), (9, 9), (25, 25)]
)
def test_the_grid_never_exceeds_max_tiles_and_stays_odd(max_tiles: int, expected: int) -> None:
    assert tile_crops(pixels(500, 500), 96, max_tiles=max_tiles).shape[0] == expected


def test_a_short_side_is_zero_padded_and_centred_never_resampled() -> None:
    image = pixels(20, 50)
    crop = fit_crop(image, 32, top=0, left=9)
    assert crop.shape == (32, 32, 3)
    np.testing.assert_array_equal(crop[6:26], image[:, 9:41])
    assert not crop[:6].any() and not crop[26:].any()
