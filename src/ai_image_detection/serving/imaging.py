"""Pictures back: the explanation crops and heatmap, and the annotated image.

Crops are cut as for scoring (:mod:`ai_image_detection.tiling`, shared with evaluation): no
resampling, native resolution, zero padding for a side shorter than the model input.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ai_image_detection.tiling import fit_crop, tile_crops

NEUTRAL = 0.5
"""The heatmap's clear point: a cell scored 0.5 leans neither way."""


def explanation_crops(pixels: np.ndarray, size: int, max_cells: int) -> tuple[np.ndarray, int, int]:
    """One model-size crop centred on each cell of a grid over the image (patch-wise scoring).

    Along a side no longer than ``size`` every crop would be the same, so that side has one cell;
    an image no larger than ``size`` on both sides is explained by :func:`occlusion_crops` instead.

    Args:
        pixels: RGB ``[H, W, 3]`` uint8.
        size: The model's input side.
        max_cells: Most cells per side.

    Returns:
        ``[rows * cols, size, size, 3]`` crops in row-major order, and ``rows``, ``cols``.
    """
    height, width = pixels.shape[:2]
    rows = 1 if height <= size else int(np.clip(math.ceil(2 * height / size), 2, max_cells))
    cols = 1 if width <= size else int(np.clip(math.ceil(2 * width / size), 2, max_cells))
    crops = []
    for row in range(rows):
        for col in range(cols):
            centre_y, centre_x = (row + 0.5) * height / rows, (col + 0.5) * width / cols
            top = int(np.clip(round(centre_y - size / 2), 0, max(height - size, 0)))
            left = int(np.clip(round(centre_x - size / 2), 0, max(width - size, 0)))
            crops.append(fit_crop(pixels, size, top, left))
    return np.stack(crops), rows, cols


def occlusion_crops(pixels: np.ndarray, size: int, max_cells: int) -> tuple[np.ndarray, int, int]:
    """The image as scored, then one copy per grid cell with that cell hidden (occlusion).

    For an image no larger than the model input (one crop, nothing to scan): the score's drop
    when a cell is filled with the image's mean colour is how much that cell pushed towards AI.

    Args:
        pixels: RGB ``[H, W, 3]`` uint8, ``H`` and ``W`` at most ``size``.
        size: The model's input side.
        max_cells: Most cells per side (cells are at least 4 pixels).

    Returns:
        ``[1 + rows * cols, size, size, 3]``: the unoccluded crop, then the occluded ones in
        row-major order; and ``rows``, ``cols``.
    """
    height, width = pixels.shape[:2]
    rows = int(np.clip(height // 4, 1, max_cells))
    cols = int(np.clip(width // 4, 1, max_cells))
    mean = pixels.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    crops = [tile_crops(pixels, size, 1)[0]]
    for row in range(rows):
        for col in range(cols):
            hidden = pixels.copy()
            hidden[
                row * height // rows : (row + 1) * height // rows,
                col * width // cols : (col + 1) * width // cols,
            ] = mean
            crops.append(tile_crops(hidden, size, 1)[0])
    return np.stack(crops), rows, cols


def occlusion_shading(change: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """Map occlusion's changes in P(AI) to :func:`heatmap_png`'s scale, the strongest cell saturated.

    Args:
        change: ``P(AI) of the image - P(AI) with the cell hidden`` per cell (positive: towards AI).
        floor: Changes are scaled by at least this, so that noise on a flat map stays faint.

    Returns:
        Values in [0, 1], 0.5 where hiding the cell changes nothing.
    """
    scale = max(float(np.abs(change).max(initial=0.0)), floor)
    return np.clip(NEUTRAL + NEUTRAL * change / scale, 0.0, 1.0)


def heatmap_png(grid: np.ndarray, width: int, height: int, max_side: int = 512) -> bytes:
    """The grid of P(AI) as a translucent overlay: red towards AI, blue towards human, clear at 0.5.

    Args:
        grid: ``[rows, cols]`` probabilities.
        width: Width of the image it overlays.
        height: Its height.
        max_side: Longest side of the PNG (the overlay is stretched over the image anyway).

    Returns:
        An RGBA PNG with the image's aspect ratio.
    """
    strength = np.clip(np.abs(grid - NEUTRAL) * 2, 0, 1)
    rgba = np.zeros((*grid.shape, 4), dtype=np.uint8)
    towards_ai = grid >= NEUTRAL
    rgba[..., 0] = np.where(towards_ai, 220, 30)
    rgba[..., 1] = 40
    rgba[..., 2] = np.where(towards_ai, 40, 220)
    rgba[..., 3] = np.round(strength * 170).astype(np.uint8)
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    overlay = Image.fromarray(rgba, mode="RGBA").resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    overlay.save(buffer, format="PNG")
    return buffer.getvalue()


def annotate(image: Image.Image, label: str, probability_ai: float, threshold: float) -> bytes:
    """The image with its verdict and confidence drawn on a banner at the top, as JPEG.

    Args:
        image: The RGB image as scored.
        label: ``"ai"`` or ``"human"``.
        probability_ai: The score.
        threshold: The decision threshold.

    Returns:
        JPEG bytes (quality 92).
    """
    annotated = image.convert("RGB")
    width, height = annotated.size
    band = max(24, round(min(width, height) * 0.1))
    font = ImageFont.load_default(size=max(10, round(band * 0.45)))
    verdict = "AI-generated" if label == "ai" else "Human-made"
    confidence = probability_ai if label == "ai" else 1 - probability_ai
    text = f"{verdict} · P(AI) {probability_ai:.0%} · confidence {confidence:.0%} (threshold {threshold:.2f})"
    draw = ImageDraw.Draw(annotated, "RGBA")
    draw.rectangle((0, 0, width, band), fill=(0, 0, 0, 170))
    colour = (220, 50, 47, 255) if label == "ai" else (38, 139, 210, 255)
    bar = round(width * probability_ai)
    draw.rectangle((0, band - max(3, band // 8), bar, band), fill=colour)
    draw.text((max(4, band // 4), band * 0.15), text, fill=(255, 255, 255, 255), font=font)
    buffer = io.BytesIO()
    annotated.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
