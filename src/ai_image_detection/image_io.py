"""Turn untrusted image bytes into RGB pixels, or say exactly why not.

This is the one place where the project decodes an image it did not make itself: ingestion
uses it for every raw file and the service for every upload, so both accept and reject the
same things. Pixels are never resampled here: a detector needs the generator's fingerprint.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

ImageFile.LOAD_TRUNCATED_IMAGES = False
register_heif_opener()  # HEIC/HEIF (what phones save) through pillow-heif; Pillow reads AVIF itself

SUPPORTED_FORMATS: Final = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "HEIF", "AVIF"})
"""Formats accepted by content (Pillow's sniffing), whatever the file name says."""

PLAIN_FORMATS: Final = frozenset({"JPEG", "PNG"})
"""Formats that TensorFlow decodes to the same RGB pixels Pillow does (given mode RGB)."""

EXIF_ORIENTATION_TAG: Final = 0x0112


class ImageRejectedError(ValueError):
    """An input that is not a usable image; ``reason`` is a stable, machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        """Create the error.

        Args:
            reason: Short code such as ``"empty"``, ``"not_an_image"`` or ``"too_many_pixels"``.
            message: What is wrong, with the offending value and what would be accepted.
        """
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable image looks like before its pixels are decoded.

    Attributes:
        min_side: Smallest accepted width or height, in pixels.
        max_pixels: Largest accepted width x height; larger files are refused from their
            header alone, so a decompression bomb is never allocated.
    """

    min_side: int = 32
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image with EXIF orientation applied, and what it was before.

    Attributes:
        pixels: The RGB image.
        format: The container format found in the bytes (``"JPEG"``, ``"PNG"``, ...).
        original_mode: Pillow mode of the stored pixels (``"RGB"``, ``"CMYK"``, ``"I;16"``, ...).
        exif_rotated: Whether an EXIF orientation other than "normal" was applied.
        frames: Number of frames; only the first of an animation is used.
    """

    pixels: Image.Image
    format: str
    original_mode: str
    exif_rotated: bool
    frames: int

    @property
    def needs_normalisation(self) -> bool:
        """Whether a plain JPEG/PNG decoder would see other pixels than ``pixels``."""
        return (
            self.format not in PLAIN_FORMATS
            or self.original_mode != "RGB"
            or self.exif_rotated
            or self.frames > 1
        )


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """Decode image bytes fully into RGB, refusing anything unusable.

    Checks run from cheapest to dearest: empty input, format sniffed from the content,
    pixel count and size from the header, then a full decode (which catches truncation).

    Args:
        data: The raw bytes of the file or upload.
        limits: Size limits to enforce.

    Returns:
        The decoded RGB image with its provenance.

    Raises:
        ImageRejectedError: With a reason code and a message naming the problem.
    """
    if not data:
        raise ImageRejectedError("empty", "the file is empty (0 bytes)")
    image = _open(data)
    fmt = image.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageRejectedError(
            "unsupported_format",
            f"image format {fmt} is not supported; accepted: {', '.join(sorted(SUPPORTED_FORMATS))}",
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageRejectedError(
            "too_many_pixels",
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{limits.max_pixels:,} (decompression-bomb guard); the pixels were not decoded",
        )
    if min(width, height) < limits.min_side:
        raise ImageRejectedError(
            "too_small",
            f"{width}x{height} is smaller than the minimum side of {limits.min_side} pixels",
        )
    # Pillow raises many exception types on hostile files (struct.error, KeyError, TypeError...):
    # whatever a decoder or the EXIF reader throws is the file's fault, never the service's.
    try:
        image.load()
        frames = getattr(image, "n_frames", 1)
    except Exception as error:
        raise ImageRejectedError("corrupt", f"the {fmt} data cannot be decoded fully: {error}") from error
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
        oriented = ImageOps.exif_transpose(image)
    except Exception as error:
        raise ImageRejectedError("corrupt", f"the {fmt} EXIF metadata cannot be read: {error}") from error
    original_mode = image.mode
    try:
        pixels = to_rgb(oriented)
    except ImageRejectedError:
        raise
    except Exception as error:
        raise ImageRejectedError(
            "unsupported_mode", f"{fmt} images in mode {original_mode} cannot be converted to RGB: {error}"
        ) from error
    return DecodedImage(
        pixels=pixels,
        format=fmt,
        original_mode=original_mode,
        exif_rotated=orientation not in (1, None),
        frames=frames,
    )


def _open(data: bytes) -> Image.Image:
    """Open the header of image bytes, mapping Pillow's errors to rejections."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejectedError("too_many_pixels", f"decompression-bomb guard: {error}") from error
    except UnidentifiedImageError as error:
        raise ImageRejectedError(
            "not_an_image", "the content is not a recognised image format (checked by content, not name)"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejectedError("corrupt", f"the image header cannot be read: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparency is composited over white (what a viewer shows); integer images (Pillow's
    ``I;16*`` and ``I`` modes, which is how 16-bit files decode) are scaled by 255/65535;
    CMYK and palette images use Pillow's conversion.

    Args:
        image: An image in any mode Pillow decodes.

    Returns:
        The image in mode ``RGB``.

    Raises:
        ImageRejectedError: For floating-point images, whose range is undefined.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "F":
        raise ImageRejectedError("unsupported_mode", "32-bit floating-point images are not supported")
    if mode.startswith("I"):
        wide = np.asarray(image, dtype=np.float64)
        scaled = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
