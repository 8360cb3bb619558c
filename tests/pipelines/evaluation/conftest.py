"""Fixtures of the evaluation tests: published generated images the tests write themselves."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ai_image_detection.sample_data.photo_sources import SourcePhoto

PUBLISHED_BRIGHTNESS = {"dark_t2i-1": 60.0, "grey_t2i-1": 126.0, "bright_t2i-1": 190.0, "bright_t2i-2": 200.0}
"""Mean pixel of each published image (the brightness detectors of the tests score by it)."""


def published_generated(brightness_of: dict[str, float] | None = None, side: int = 40) -> list[SourcePhoto]:
    """Lossy WebP previews, as the workflow-template package ships them: one per file stem, of its brightness.

    Args:
        brightness_of: Mean pixel by file stem; :data:`PUBLISHED_BRIGHTNESS` by default.
        side: Width of every image; the n-th is ``side + 40 n`` pixels high.
    """
    rng = np.random.default_rng(7)
    photos = []
    for index, (stem, brightness) in enumerate((brightness_of or PUBLISHED_BRIGHTNESS).items()):
        pixels = np.clip(rng.normal(brightness, 3.0, (side + 40 * index, side, 3)), 0, 255).astype(np.uint8)
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="WEBP", quality=80)
        photos.append(
            SourcePhoto(
                photo_id=stem,
                registry="pypi",
                package="templates-media",
                version="1.0",
                member=f"templates_media/templates/{stem}.webp",
                licence="MIT",
                licence_file="templates_media-1.0.dist-info/METADATA",
                data=encoded.getvalue(),
            )
        )
    return photos


@pytest.fixture(scope="session")
def published() -> list[SourcePhoto]:
    """:func:`published_generated` at its default size."""
    return published_generated()
