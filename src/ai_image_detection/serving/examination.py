"""An upload made ready for scoring: decoded, tiled as evaluation tiled, and its provenance read.

:class:`Examiner` is what the :class:`~ai_image_detection.serving.service.Detector` does with an
upload before the model sees it. Decoding, tiling and hashing run in worker threads, at most
``AIID_MAX_DECODING`` uploads at once; reading provenance is bounded in time by
``AIID_PROVENANCE_TIMEOUT_S``. An unusable upload is a :class:`ClientError` with the status of its
reason, never a 500.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np

from ai_image_detection.serving.answers import ImageFacts
from ai_image_detection.serving.feedback import sha256
from ai_image_detection.serving.http_guard import ClientError
from ai_image_detection.serving.provenance import (
    Provenance,
    ProvenanceLimits,
    read_provenance,
    unread_provenance,
)
from ai_image_detection.serving.settings import ServingSettings

with bentoml.importing():
    from ai_image_detection.image_io import DecodedImage, ImageLimits, ImageRejectedError, decode_image
    from ai_image_detection.tiling import crop_luma, tile_crops

logger = logging.getLogger(__name__)

STATUS_BY_REASON = {
    "empty": 400,
    "not_an_image": 415,
    "unsupported_format": 415,
    "unsupported_mode": 415,
    "corrupt": 422,
    "too_small": 422,
    "too_many_pixels": 413,
}
"""HTTP status for each :class:`ImageRejectedError` reason."""
PROVENANCE_LIMITS = ProvenanceLimits()


@dataclass(frozen=True)
class Examined:
    """An upload made ready for scoring: its crops, what it is, and what its metadata says."""

    crops: np.ndarray
    facts: ImageFacts
    provenance: Provenance
    size_bytes: int
    image_sha256: str
    luma: tuple[float, float]
    started: float


def image_facts(decoded: DecodedImage) -> ImageFacts:
    """What a verdict reports about the image itself."""
    width, height = decoded.pixels.size
    return ImageFacts(
        width=width,
        height=height,
        format=decoded.format,
        frames=decoded.frames,
        exif_rotated=decoded.exif_rotated,
    )


class Examiner:
    """Decodes, tiles and reads the provenance of uploads, a bounded number at a time."""

    def __init__(self, settings: ServingSettings) -> None:
        """Image limits, decoding concurrency and provenance timeout from the service's settings."""
        self.limits = ImageLimits(min_side=settings.min_side, max_pixels=settings.max_pixels)
        self.provenance_timeout_s = settings.provenance_timeout_s
        self._decoding = asyncio.Semaphore(settings.max_decoding)

    async def examine(
        self, upload: Path, name: str, input_size: int, max_tiles: int
    ) -> tuple[DecodedImage, Examined]:
        """Decode and tile one upload as evaluation did, and read its provenance.

        Args:
            upload: The uploaded file.
            name: How error messages name it (``image``, ``file #2``).
            input_size: The model's input side in pixels.
            max_tiles: The model's most crops per image.

        Returns:
            The decoded image (for endpoints that draw on it) and what the verdict needs.

        Raises:
            ClientError: If the upload is not a usable image (the status follows the reason).
        """
        started = time.perf_counter()
        async with self._decoding:
            data = await asyncio.to_thread(upload.read_bytes)
            decoded = await asyncio.to_thread(self._decode, data, name)
            crops = await asyncio.to_thread(tile_crops, np.asarray(decoded.pixels), input_size, max_tiles)
            luma = await asyncio.to_thread(crop_luma, crops)
            digest = await asyncio.to_thread(sha256, data)
        provenance = await self._provenance(data, decoded.format)
        examined = Examined(crops, image_facts(decoded), provenance, len(data), digest, luma, started)
        return decoded, examined

    def _decode(self, data: bytes, name: str) -> DecodedImage:
        try:
            return decode_image(data, self.limits)
        except ImageRejectedError as rejected:
            raise ClientError(
                rejected.reason, f"{name}: {rejected}", STATUS_BY_REASON[rejected.reason]
            ) from None

    async def _provenance(self, data: bytes, image_format: str) -> Provenance:
        """The upload's provenance, or an unread one when reading takes longer than allowed."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(read_provenance, data, image_format, PROVENANCE_LIMITS),
                self.provenance_timeout_s,
            )
        except TimeoutError:
            logger.warning("provenance not read within %.1f s", self.provenance_timeout_s)
            return unread_provenance(f"not read within {self.provenance_timeout_s:g} s")
