"""Scoring files as the service does: Pillow decoding, the shared tiles, batches that keep files apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ai_image_detection.scoring import file_tiles, score_files
from ai_image_detection.tiling import tile_crops

SIZE = 16
MAX_TILES = 9


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """JPEG and PNG files of several shapes: 9, 5 and 1 tiles (one smaller than the model input)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    made = []
    for index, (height, width, fmt, mode) in enumerate(
        [
            (10, 12, "PNG", "RGB"),
            (30, 70, "JPEG", "RGB"),
            (12, 14, "JPEG", "RGB"),
            (40, 50, "PNG", "RGB"),
            (20, 20, "PNG", "L"),
            (48, 48, "JPEG", "RGB"),
        ]
    ):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        path = folder / f"{index}.{'jpg' if fmt == 'JPEG' else 'png'}"
        image.save(path, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
        made.append(str(path))
    return made


def mean_pixel(crops: np.ndarray) -> np.ndarray:
    """A stand-in model: each crop's mean pixel, which tells crops (and so files) apart."""
    assert crops.dtype == np.float32
    assert crops.shape[1:] == (SIZE, SIZE, 3)
    return crops.mean(axis=(1, 2, 3))


def reference(path: str) -> np.ndarray:
    """The tile scores of one file, decoded by Pillow and tiled directly."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return tile_crops(pixels, SIZE, MAX_TILES).astype(np.float32).mean(axis=(1, 2, 3))


def test_the_tiles_are_those_of_the_pillow_decoded_image(files: list[str]) -> None:
    for path in files:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(file_tiles(path, SIZE, MAX_TILES), tile_crops(pixels, SIZE, MAX_TILES))
    assert [len(file_tiles(path, SIZE, MAX_TILES)) for path in files] == [1, 5, 1, 9, 1, 9]


@pytest.mark.parametrize("batch_size", [1, 3, 8, 1000])
def test_each_file_gets_its_own_tile_scores_whatever_the_batching(files: list[str], batch_size: int) -> None:
    scores = score_files(mean_pixel, files, SIZE, MAX_TILES, batch_size)
    assert len(scores) == len(files)
    for path, tiles in zip(files, scores, strict=True):
        np.testing.assert_allclose(tiles, reference(path), rtol=1e-6)


def test_several_files_share_a_model_call(files: list[str]) -> None:
    calls: list[int] = []

    def counting(crops: np.ndarray) -> np.ndarray:
        calls.append(len(crops))
        return mean_pixel(crops)

    scores = score_files(counting, files, SIZE, MAX_TILES, batch_size=8)
    assert len(calls) < len(files), "the tiles of several files were batched together"
    assert sum(calls) == sum(len(tiles) for tiles in scores) == 26
    assert calls == [16, 10], "files 1-4 (1+5+1+9 tiles), then files 5-6 (1+9)"


def test_a_model_answering_a_row_per_crop_keeps_its_rows(files: list[str]) -> None:
    """Attribution and features: each tile's row stays whole, the rows of each file together."""
    scores = score_files(
        lambda crops: np.stack([mean_pixel(crops), -mean_pixel(crops)], axis=1), files, SIZE, MAX_TILES, 4
    )
    assert [s.shape for s in scores] == [(len(reference(f)), 2) for f in files]
    np.testing.assert_allclose(scores[3][:, 0], reference(files[3]), rtol=1e-6)
    np.testing.assert_allclose(scores[3][:, 1], -reference(files[3]), rtol=1e-6)


def test_the_transform_applies_to_the_decoded_pixels_before_tiling(files: list[str]) -> None:
    inverted = score_files(mean_pixel, files[3:4], SIZE, MAX_TILES, 4, transform=lambda pixels: 255 - pixels)
    np.testing.assert_allclose(inverted[0], 255 - reference(files[3]), rtol=1e-6)


def test_no_files_no_scores() -> None:
    assert score_files(mean_pixel, [], SIZE, MAX_TILES, 4) == []


def test_a_file_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="not a recognised image format"):
        score_files(mean_pixel, [str(path)], SIZE, MAX_TILES, 4)


def test_images_held_in_memory_are_scored_through_a_reader(files: list[str]) -> None:
    held = {f"package/member-{index}.png": Path(path).read_bytes() for index, path in enumerate(files)}
    scores = score_files(mean_pixel, list(held), SIZE, MAX_TILES, 4, read=held.__getitem__)
    for tiles, path in zip(scores, files, strict=True):
        np.testing.assert_allclose(tiles, reference(path), rtol=1e-6)
