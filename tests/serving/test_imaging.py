"""Crops match training's preprocessing; the heatmap and the annotation are what the page shows."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ai_image_detection.input_pipeline import fit_to_size
from ai_image_detection.serving.imaging import (
    annotate,
    explanation_crops,
    heatmap_png,
    occlusion_crops,
    occlusion_shading,
)
from ai_image_detection.tiling import tile_crops


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


def test_explanation_crops_cover_a_grid_of_cells() -> None:
    crops, rows, cols = explanation_crops(pixels(64, 256), 32, max_cells=6)
    assert (rows, cols) == (4, 6)
    assert crops.shape == (24, 32, 32, 3)
    _, rows, cols = explanation_crops(pixels(32, 256), 32, max_cells=6)
    assert (rows, cols) == (1, 6), "a side no longer than the input has one cell, not copies of it"


def test_occlusion_hides_one_cell_per_copy_of_the_scored_crop() -> None:
    image = pixels(24, 32, seed=3)
    crops, rows, cols = occlusion_crops(image, 32, max_cells=4)
    assert (rows, cols) == (4, 4)
    assert crops.shape == (1 + 16, 32, 32, 3)
    np.testing.assert_array_equal(crops[0], tile_crops(image, 32, max_tiles=1)[0])
    mean = image.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    top = (32 - 24) // 2  # the 24-px side is zero-padded, centred
    first_cell = crops[1][top : top + 6, 0:8]
    assert (first_cell == mean).all(), "the first copy hides the top-left cell with the mean colour"
    np.testing.assert_array_equal(crops[1][top + 6 :], crops[0][top + 6 :])
    assert [int((crop != crops[0]).any(axis=-1).sum() > 0) for crop in crops[1:]] == [1] * 16


def test_occlusion_shading_saturates_the_strongest_cell_and_keeps_noise_faint() -> None:
    shading = occlusion_shading(np.array([[0.2, -0.1, 0.0]]))
    np.testing.assert_allclose(shading, [[1.0, 0.25, 0.5]])
    np.testing.assert_allclose(occlusion_shading(np.array([[0.001, -0.001]])), [[0.525, 0.475]])


def test_heatmap_is_red_for_ai_blue_for_human_and_clear_at_the_middle() -> None:
    grid = np.array([[1.0, 0.5, 0.0]])
    overlay = np.asarray(Image.open(io.BytesIO(heatmap_png(grid, 300, 100))))
    assert overlay.shape == (100, 300, 4)
    left, middle, right = overlay[50, 10], overlay[50, 150], overlay[50, 290]
    assert left[0] > left[2] and left[3] > 100
    assert right[2] > right[0] and right[3] > 100
    assert middle[3] < 40


def test_annotation_keeps_the_size_and_draws_a_banner() -> None:
    image = Image.fromarray(np.full((120, 200, 3), 128, dtype=np.uint8))
    annotated = Image.open(io.BytesIO(annotate(image, "ai", 0.9, 0.5)))
    assert (annotated.format, annotated.size) == ("JPEG", (200, 120))
    banner, body = np.asarray(annotated)[:5].mean(), np.asarray(annotated)[-20:].mean()
    assert banner < body - 30, "the banner is darker than the image"
