"""Pictures back: the explanation crops and heatmap, and the annotated image with its verdict.

Crops are cut as for scoring (:mod:`ai_image_detection.tiling`, shared with evaluation): no
resampling, native resolution, zero padding for a side shorter than the model input.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ai_image_detection.contract import Verdict
from ai_image_detection.tiling import fit_crop, tile_crops

NEUTRAL = 0.5
"""The heatmap's clear point: a cell scored 0.5 leans neither way."""
VERDICT_COLOURS: dict[Verdict, tuple[int, int, int]] = {
    "ai": (220, 50, 47),
    "human": (38, 139, 210),
    "inconclusive": (235, 160, 0),
}
"""Red, blue, and amber for the answer that names no class."""
DECLARING_SOURCES = {
    "c2pa": "C2PA Content Credentials",
    "xmp": "IPTC/XMP metadata",
    "png_text": "generator metadata",
    "exif": "EXIF",
}
"""How the banner names the provenance that declared an image AI-generated."""
VERDICT_NAMES: dict[Verdict, str] = {
    "ai": "AI-generated",
    "human": "Human-made",
    "inconclusive": "Inconclusive",
}


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


def _percent(probability: float) -> str:
    """``0.4`` as ``40%``, ``0.398`` as ``39.8%``."""
    return f"{probability:.1%}".replace(".0%", "%")


def annotate(
    image: Image.Image,
    label: Verdict,
    probability_ai: float,
    confidence: float | None,
    band: tuple[float, float],
    declared_by: str | None = None,
) -> bytes:
    """The image with its verdict drawn on a banner at the top, as JPEG.

    The banner names the verdict in its colour (red AI-generated, blue human-made, amber
    inconclusive) with P(AI) and the confidence, which an inconclusive verdict does not claim.
    When the image's provenance decided (``declared_by``), it says "AI-generated (declared)", which
    evidence declared it, and the pixels' P(AI) alone.
    A bar along the banner's bottom edge fills up to P(AI); the inconclusive band on it is
    shaded, with a white tick at each of its edges (one tick for a model without a band).

    Args:
        image: The RGB image as scored.
        label: ``"human"``, ``"inconclusive"`` or ``"ai"``.
        probability_ai: The calibrated score.
        confidence: Probability of the stated class; None when inconclusive.
        band: The thresholds ``(human, ai)``: human below the first, ai at or above the second.
        declared_by: The provenance source that decided (``"c2pa"``, ``"xmp"``, ...), or None
            when the pixels decided.

    Returns:
        JPEG bytes (quality 92).
    """
    annotated = image.convert("RGB")
    width, height = annotated.size
    banner = max(24, round(min(width, height) * 0.1))
    strip = max(4, banner // 5)
    font = ImageFont.load_default(size=max(10, round(banner * 0.45)))
    human, ai = band
    colour = VERDICT_COLOURS[label]
    score = f" · P(AI) {_percent(probability_ai)}"
    name = VERDICT_NAMES[label]
    if declared_by is not None:
        name = f"{name} (declared)"
        source = DECLARING_SOURCES.get(declared_by, declared_by)
        detail = f" by {source} · pixels alone: P(AI) {_percent(probability_ai)}"
    elif label == "inconclusive" or confidence is None:
        detail = f"{score} · no verdict: unreliable from {_percent(human)} to {_percent(ai)}"
    else:
        if human == ai:
            rule = f"threshold {_percent(ai)}"
        else:
            rule = f"AI from {_percent(ai)}" if label == "ai" else f"human below {_percent(human)}"
        detail = f"{score} · confidence {_percent(confidence)} ({rule})"
    draw = ImageDraw.Draw(annotated, "RGBA")
    draw.rectangle((0, 0, width, banner), fill=(0, 0, 0, 170))
    top = banner - strip
    draw.rectangle((0, top, round(width * probability_ai), banner), fill=(*colour, 255))
    left, right = round(width * human), round(width * ai)
    if right > left:
        draw.rectangle((left, top, right, banner), fill=(255, 255, 255, 80))
    for tick in sorted({left, right}):
        draw.rectangle((tick - 1, top - strip // 2, tick + 1, banner), fill=(255, 255, 255, 255))
    x, y = max(4, banner // 4), banner * 0.1
    draw.text((x, y), name, fill=(*colour, 255), font=font)
    draw.text((x + draw.textlength(name, font=font), y), detail, fill=(255, 255, 255, 255), font=font)
    buffer = io.BytesIO()
    annotated.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
