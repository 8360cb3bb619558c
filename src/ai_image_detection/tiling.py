"""Tiling: how an image of any size becomes the crops whose mean score is its score.

One module for evaluation and serving, so that the threshold chosen in evaluation applies to
exactly the score the service computes. Crops are cut at native resolution (never resampled,
which would add an up-sampling trace), placed as ``tf.image.resize_with_crop_or_pad`` places
them, and zero-padded where a side is shorter than the model input.
"""

from __future__ import annotations

import math

import numpy as np


def _offsets(length: int, size: int, count: int) -> list[int]:
    """``count`` crop starts spread evenly over ``length``; for an odd count the middle is the centre."""
    if count == 1 or length <= size:
        return [(length - size) // 2]
    return [i * (length - size) // (count - 1) for i in range(count)]


def _odd_count(length: int, size: int, most: int) -> int:
    """Crops along one side: enough to cover it, odd (so the centre crop is one of them), at most ``most``."""
    count = max(1, min(math.ceil(length / size), most))
    return count if count % 2 else count - 1


def fit_crop(pixels: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    """The ``size`` x ``size`` window at (top, left); sides shorter than ``size`` are zero-padded, centred."""
    height, width = pixels.shape[:2]
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    rows, cols = min(size, height), min(size, width)
    source_top, source_left = max(top, 0), max(left, 0)
    target_top, target_left = max((size - height) // 2, 0), max((size - width) // 2, 0)
    canvas[target_top : target_top + rows, target_left : target_left + cols] = pixels[
        source_top : source_top + rows, source_left : source_left + cols
    ]
    return canvas


def tile_crops(pixels: np.ndarray, size: int, max_tiles: int) -> np.ndarray:
    """Crops whose mean score is the image's score.

    An image no larger than the model input gives one crop (the centre crop, zero-padded where
    a side is short: never up-scaled, which would add an up-sampling trace). A larger image
    gives an odd grid of native-resolution crops spread evenly over it (at most ``max_tiles``),
    whose middle crop is the centre crop that evaluation uses.

    Args:
        pixels: RGB ``[H, W, 3]`` uint8.
        size: The model's input side.
        max_tiles: Most crops.

    Returns:
        ``[N, size, size, 3]`` uint8, N odd.
    """
    height, width = pixels.shape[:2]
    rows = _odd_count(height, size, math.isqrt(max_tiles))
    cols = _odd_count(width, size, max_tiles // rows)
    return np.stack(
        [
            fit_crop(pixels, size, top, left)
            for top in _offsets(height, size, rows)
            for left in _offsets(width, size, cols)
        ]
    )


LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma of an RGB pixel (0–255)."""


def crop_luma(crops: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the luma over every pixel of the scored crops (padding included).

    The service logs these two figures for each upload and the export pipeline records them for
    each validation image (the monitoring reference), both through this function, so that the
    monitoring compares like with like.

    Args:
        crops: ``[N, S, S, 3]`` RGB 0–255 (the output of :func:`tile_crops`).

    Returns:
        ``(mean, std)`` on the 0–255 scale.
    """
    luma = np.asarray(crops, dtype=np.float32) @ LUMA_WEIGHTS
    return float(luma.mean()), float(luma.std())
