"""Score image files exactly as the service does: Pillow decoding, the same tiles, the mean.

Evaluation (thresholds, calibration, every reported figure) and the leave-one-family-out folds
score through :func:`score_files`, so that a threshold chosen here means the same thing for the
service's answer: the same decoder (:func:`ai_image_detection.image_io.decode_image`), the same
tiles (:func:`ai_image_detection.tiling.tile_crops`), the mean of the tiles' P(AI).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from ai_image_detection.image_io import ImageLimits, decode_image
from ai_image_detection.tiling import tile_crops

if TYPE_CHECKING:  # Keras is not needed to score with an ONNX model (the registry does)
    import keras

CropScorer = Callable[[np.ndarray], np.ndarray]
"""What a model makes of crops ``[N, S, S, 3]`` (raw 0–255 RGB, float32): P(AI) ``[N]``, or one
row per crop (``[N, K]``: attribution, features)."""
Transform = Callable[[np.ndarray], np.ndarray]
"""A change to a decoded uint8 ``[H, W, 3]`` image before tiling (e.g. a robustness perturbation)."""

Reader = Callable[[str], bytes]
"""The bytes of the image a key names (by default the key is a file path)."""

_DECODING_LIMITS = ImageLimits(min_side=1)


def read_file(path: str) -> bytes:
    """The default :data:`Reader`: the bytes of the file at ``path``."""
    return Path(path).read_bytes()


def probability_output(outputs: Any) -> Any:
    """The ``probability_ai`` part of a detector's outputs (a list when it also attributes)."""
    return outputs[0] if isinstance(outputs, list | tuple) else outputs


def keras_scorer(model: keras.Model) -> CropScorer:
    """The :data:`CropScorer` of a Keras detector: its raw P(AI) ``[N]``, one call per batch."""

    def score(crops: np.ndarray) -> np.ndarray:
        return np.asarray(probability_output(model.predict_on_batch(crops)), dtype=np.float64)[:, 0]

    return score


def keras_outputs(model: keras.Model) -> CropScorer:
    """Every output of a Keras detector side by side: ``[N, 1 + K]``, P(AI) first, then the families."""

    def score(crops: np.ndarray) -> np.ndarray:
        outputs = model.predict_on_batch(crops)
        parts = outputs if isinstance(outputs, list | tuple) else [outputs]
        return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts], axis=1)

    return score


def keras_features(model: keras.Model) -> CropScorer:
    """The :data:`CropScorer` of a feature extractor: its float32 features ``[N, D]``."""

    def score(crops: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(crops), dtype=np.float32)

    return score


def file_tiles(
    path: str, size: int, max_tiles: int, transform: Transform | None = None, read: Reader = read_file
) -> np.ndarray:
    """The tiles of one image file, as the service cuts them from an upload of that file.

    Args:
        path: Image file (or the key ``read`` knows the image by).
        size: The model's input side.
        max_tiles: Most tiles (the model's ``max_tiles``).
        transform: Applied to the decoded pixels before tiling.
        read: Where the file's bytes come from.

    Returns:
        ``[N, size, size, 3]`` uint8 tiles.
    """
    pixels = np.asarray(decode_image(read(path), _DECODING_LIMITS).pixels)
    if transform is not None:
        pixels = transform(pixels)
    return tile_crops(pixels, size, max_tiles)


def score_files(
    score_crops: CropScorer,
    paths: Sequence[str],
    size: int,
    max_tiles: int,
    batch_size: int,
    transform: Transform | None = None,
    description: str = "scoring images",
    read: Reader = read_file,
) -> list[np.ndarray]:
    """What ``score_crops`` makes of every tile of every file, the tiles of several files batched together.

    Args:
        score_crops: The model, on a batch of crops.
        paths: Image files.
        size: The model's input side.
        max_tiles: Most tiles per image.
        batch_size: Crops per model call.
        transform: Applied to each decoded image before tiling.
        description: Label of the progress bar.
        read: Where each file's bytes come from (``paths`` are then its keys).

    Returns:
        One array per file, in ``paths`` order, one entry (or row) per tile: an image's score
        is the mean of its tiles' scores.
    """
    counts: list[int] = []
    pending: list[np.ndarray] = []
    scores: list[np.ndarray] = []

    def flush() -> None:
        crops = np.concatenate(pending)
        scores.append(np.asarray(score_crops(crops.astype(np.float32))))
        pending.clear()

    for path in tqdm(paths, desc=description, unit="image", leave=False):
        tiles = file_tiles(path, size, max_tiles, transform, read)
        counts.append(len(tiles))
        pending.append(tiles)
        if sum(len(t) for t in pending) >= batch_size:
            flush()
    if pending:
        flush()
    if not counts:
        return []
    return np.split(np.concatenate(scores), np.cumsum(counts)[:-1])
