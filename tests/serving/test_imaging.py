"""Explanation crops, the heatmap and the annotated image (tiling itself: ``tests/test_tiling.py``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

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


BAND = (0.4, 0.6)


def annotated_pixels(
    label: str, probability_ai: float, confidence: float | None, band=BAND, declared_by: str | None = None
) -> np.ndarray:
    """A 400x240 grey image annotated: its banner is 24 px high, the bar its bottom 4 rows."""
    image = Image.fromarray(np.full((240, 400, 3), 128, dtype=np.uint8))
    annotated = Image.open(io.BytesIO(annotate(image, label, probability_ai, confidence, band, declared_by)))
    assert (annotated.format, annotated.size) == ("JPEG", (400, 240))
    return np.asarray(annotated).astype(int)


def coloured(pixels: np.ndarray, colour: str) -> int:
    """How many pixels are clearly amber, red or blue."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    masks = {
        "amber": (red > 150) & (green > 90) & (green < 200) & (blue < 90),
        "red": (red > 150) & (green < 90) & (blue < 90),
        "blue": (blue > 150) & (red < 100),
    }
    return int(masks[colour].sum())


def test_annotation_keeps_the_size_and_draws_a_banner() -> None:
    annotated = annotated_pixels("ai", 0.9, 0.9)
    banner, body = annotated[:5].mean(), annotated[-20:].mean()
    assert banner < body - 30, "the banner is darker than the image"


@pytest.mark.parametrize(
    ("label", "probability_ai", "confidence", "colour"),
    [("inconclusive", 0.5, None, "amber"), ("ai", 0.9, 0.9, "red"), ("human", 0.1, 0.9, "blue")],
)
def test_each_verdict_has_its_own_colour(
    label: str, probability_ai: float, confidence: float | None, colour: str
) -> None:
    annotated = annotated_pixels(label, probability_ai, confidence)
    text, bar = annotated[2:18], annotated[22]
    assert coloured(text, colour) > 10, f"the word for {label} is drawn in {colour}"
    others = {"amber", "red", "blue"} - {colour}
    assert all(coloured(text, other) == 0 for other in others)
    assert coloured(bar[:16], colour) == 16, f"the bar fills towards P(AI) in {colour}"


def test_a_declared_answer_is_red_and_says_so_instead_of_claiming_no_verdict() -> None:
    """Provenance decided: no confidence, yet not "inconclusive" (amber) either."""
    declared = annotated_pixels("ai", 0.2, None, declared_by="c2pa")
    inconclusive_wording = annotated_pixels("ai", 0.2, None)
    assert coloured(declared[2:18], "red") > 10 and coloured(declared[2:18], "amber") == 0
    assert not np.array_equal(declared[2:18], inconclusive_wording[2:18]), "the declared wording differs"


def test_the_bar_shows_the_band_between_two_ticks() -> None:
    bar = annotated_pixels("inconclusive", 0.5, None)[22]
    ticks = bar[[160, 240]]  # at 40 % and 60 % of 400 px
    assert (ticks > 220).all(), "a white tick at each edge of the band"
    assert bar[200].sum() > bar[100].sum() + 60, "the band is shaded lighter than the fill outside it"
    assert bar[300].sum() < bar[220].sum() - 60, "beyond the band the empty bar is darker again"
    legacy = annotated_pixels("ai", 0.7, 0.7, band=(0.5, 0.5))[22]
    assert (legacy[200] > 220).all() and not (legacy[[160, 240]] > 220).all(axis=1).any(), "one tick only"
