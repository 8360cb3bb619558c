"""Tests of ``image_io``: every acceptance and rejection rule, each with a real file made here."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ai_image_detection.image_io import (
    EXIF_ORIENTATION_TAG,
    DecodedImage,
    ImageLimits,
    ImageRejectedError,
    decode_image,
    to_rgb,
)

LIMITS = ImageLimits(min_side=32, max_pixels=40_000_000)


def _noise(width: int, height: int, seed: int, channels: int = 3) -> np.ndarray:
    """Seeded random 8-bit pixels of shape ``(height, width, channels)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **save_args: Any) -> bytes:
    """The bytes of ``image`` saved in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def _pixels(decoded: DecodedImage) -> np.ndarray:
    """The decoded RGB pixels as an ``int`` array (no uint8 wrap-around in differences)."""
    assert decoded.pixels.mode == "RGB"
    return np.asarray(decoded.pixels).astype(int)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A structurally valid 8-bit RGB PNG whose header declares ``width`` x ``height`` pixels.

    Its IDAT holds only a few bytes, so the file is tiny whatever size it claims.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _reject(data: bytes, limits: ImageLimits = LIMITS) -> ImageRejectedError:
    """Decode ``data`` expecting a rejection, and return it."""
    with pytest.raises(ImageRejectedError) as caught:
        decode_image(data, limits)
    return caught.value


# ---------- rejections ----------


def test_truncated_jpeg_is_corrupt() -> None:
    data = _encode(Image.fromarray(_noise(64, 64, seed=1)), "JPEG", quality=90)
    assert decode_image(data, LIMITS).pixels.size == (64, 64)  # the whole file is fine

    error = _reject(data[: len(data) // 2])

    assert error.reason == "corrupt"
    assert "JPEG" in str(error)


def test_zero_bytes_are_empty() -> None:
    error = _reject(b"")

    assert error.reason == "empty"
    assert "0 bytes" in str(error)


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    path.write_text("this is a shopping list, not a photograph\n", encoding="utf-8")

    error = _reject(path.read_bytes())

    assert error.reason == "not_an_image"
    assert "by content" in str(error)


def test_image_smaller_than_min_side_is_too_small() -> None:
    data = _encode(Image.fromarray(_noise(8, 8, seed=2)), "PNG")

    error = _reject(data, ImageLimits(min_side=32))

    assert error.reason == "too_small"
    assert "8x8" in str(error)
    assert "32" in str(error)


def test_one_short_side_is_enough_to_be_too_small() -> None:
    data = _encode(Image.fromarray(_noise(200, 31, seed=3)), "PNG")

    assert _reject(data, ImageLimits(min_side=32)).reason == "too_small"
    assert decode_image(data, ImageLimits(min_side=31)).pixels.size == (200, 31)


def test_format_outside_the_accepted_list_is_unsupported() -> None:
    data = _encode(Image.fromarray(_noise(40, 40, seed=4)), "PPM")

    error = _reject(data)

    assert error.reason == "unsupported_format"
    assert "PPM" in str(error)
    assert "JPEG" in str(error)  # names what would be accepted


def test_png_declaring_a_huge_size_is_refused_without_allocating_it() -> None:
    data = _png_declaring(50_000, 50_000)  # 2.5 gigapixels, 7.5 GB as RGB
    assert len(data) < 200
    # tracemalloc sees Python-side buffers; Pillow's own pixel allocator is counted by its stats.
    images_before = Image.core.get_stats()["new_count"]
    tracemalloc.start()
    try:
        error = _reject(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert error.reason == "too_many_pixels"
    assert peak < 50 * 2**20
    assert Image.core.get_stats()["new_count"] == images_before


def test_pillow_allocation_counter_sees_a_real_decode() -> None:
    # Positive control of the counter used above: decoding an image does allocate one.
    images_before = Image.core.get_stats()["new_count"]

    decode_image(_encode(Image.fromarray(_noise(40, 40, seed=5)), "PNG"), LIMITS)

    assert Image.core.get_stats()["new_count"] > images_before


def test_declared_size_above_our_limit_is_refused_by_our_own_check() -> None:
    # 50 megapixels: below Pillow's own bomb threshold (~89 Mpx), above ours.
    data = _png_declaring(10_000, 5_000)
    images_before = Image.core.get_stats()["new_count"]

    error = _reject(data, ImageLimits(max_pixels=1_000_000))

    assert error.reason == "too_many_pixels"
    assert "10000x5000" in str(error)
    assert "1,000,000" in str(error)
    assert Image.core.get_stats()["new_count"] == images_before


def test_ten_thousand_square_png_is_refused_with_a_one_megapixel_limit() -> None:
    error = _reject(_png_declaring(10_000, 10_000), ImageLimits(max_pixels=1_000_000))

    assert error.reason == "too_many_pixels"


def test_pixel_limit_is_inclusive() -> None:
    data = _encode(Image.fromarray(_noise(40, 40, seed=6)), "PNG")

    assert decode_image(data, ImageLimits(max_pixels=1600)).pixels.size == (40, 40)
    assert _reject(data, ImageLimits(max_pixels=1599)).reason == "too_many_pixels"


def test_float_mode_is_unsupported() -> None:
    image = Image.fromarray(np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64), mode="F")

    with pytest.raises(ImageRejectedError) as caught:
        to_rgb(image)

    assert caught.value.reason == "unsupported_mode"


# ---------- accepted files ----------


def test_plain_rgb_jpeg_needs_no_normalisation() -> None:
    data = _encode(Image.fromarray(_noise(48, 40, seed=7)), "JPEG", quality=90)

    decoded = decode_image(data, LIMITS)

    assert (decoded.format, decoded.original_mode, decoded.frames) == ("JPEG", "RGB", 1)
    assert decoded.exif_rotated is False
    assert decoded.needs_normalisation is False
    assert decoded.pixels.size == (48, 40)


def test_plain_rgb_png_keeps_every_pixel() -> None:
    pixels = _noise(48, 40, seed=8)

    decoded = decode_image(_encode(Image.fromarray(pixels), "PNG"), LIMITS)

    assert decoded.needs_normalisation is False
    np.testing.assert_array_equal(np.asarray(decoded.pixels), pixels)


def test_png_named_jpg_is_accepted_as_png(tmp_path: Path) -> None:
    pixels = _noise(40, 40, seed=9)
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(pixels).save(path, format="PNG")

    decoded = decode_image(path.read_bytes(), LIMITS)

    assert decoded.format == "PNG"
    np.testing.assert_array_equal(np.asarray(decoded.pixels), pixels)


def test_cmyk_jpeg_decodes_to_sensible_rgb() -> None:
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # pure red: no cyan, full magenta+yellow
    cmyk.paste((255, 0, 255, 0), (32, 0, 64, 64))  # pure green on the right half

    decoded = decode_image(_encode(cmyk, "JPEG", quality=95), LIMITS)

    assert decoded.original_mode == "CMYK"
    assert decoded.needs_normalisation is True
    pixels = _pixels(decoded)
    np.testing.assert_allclose(pixels[32, 10], (255, 0, 0), atol=8)
    np.testing.assert_allclose(pixels[32, 50], (0, 255, 0), atol=8)


def test_sixteen_bit_grayscale_png_is_scaled_from_its_full_range() -> None:
    values = np.array([65535, 32896, 257, 0], dtype=np.uint16)
    wide = np.repeat(np.repeat(values[None, :], 40, axis=0), 10, axis=1)  # 40x40, four bands
    image = Image.fromarray(wide)
    assert image.mode == "I;16"

    decoded = decode_image(_encode(image, "PNG"), LIMITS)

    assert decoded.original_mode == "I;16"
    assert decoded.needs_normalisation is True
    pixels = _pixels(decoded)
    assert [tuple(pixels[0, x]) for x in (0, 10, 20, 30)] == [
        (255, 255, 255),
        (128, 128, 128),
        (1, 1, 1),
        (0, 0, 0),
    ]


def test_rgba_transparency_is_composited_over_white() -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., :3] = _noise(40, 40, seed=10)
    rgba[:, :10, 3] = 0  # invisible: shows white
    rgba[:, 10:20, 3] = 255  # opaque: shows its colour
    rgba[:, 20:, 3] = 128  # half: blend
    rgba[:, 20:, :3] = (200, 0, 100)

    decoded = decode_image(_encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), LIMITS)

    assert decoded.original_mode == "RGBA"
    assert decoded.needs_normalisation is True
    pixels = _pixels(decoded)
    assert (pixels[:, :10] == 255).all()
    np.testing.assert_array_equal(pixels[:, 10:20], rgba[:, 10:20, :3])
    expected = (np.array([200, 0, 100]) * 128 + 255 * 127) / 255
    np.testing.assert_allclose(pixels[5, 30], expected, atol=1.5)


def _palette_image() -> Image.Image:
    """A 40x40 palette image: left half index 1 (green), right half index 0 (red)."""
    image = Image.new("P", (40, 40), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 20, 40))
    return image


def test_palette_png_without_transparency_uses_its_colours() -> None:
    decoded = decode_image(_encode(_palette_image(), "PNG"), LIMITS)

    assert decoded.original_mode == "P"
    assert decoded.needs_normalisation is True
    pixels = _pixels(decoded)
    assert tuple(pixels[10, 5]) == (0, 255, 0)
    assert tuple(pixels[10, 30]) == (255, 0, 0)


def test_palette_png_with_a_transparent_index_shows_white_there() -> None:
    decoded = decode_image(_encode(_palette_image(), "PNG", transparency=1), LIMITS)

    assert decoded.original_mode == "P"
    pixels = _pixels(decoded)
    assert tuple(pixels[10, 5]) == (255, 255, 255)  # index 1 is transparent
    assert tuple(pixels[10, 30]) == (255, 0, 0)


def test_grey_with_alpha_is_composited_over_white() -> None:
    image = Image.new("LA", (40, 40), (60, 0))
    image.paste((90, 255), (0, 0, 20, 40))

    decoded = decode_image(_encode(image, "PNG"), LIMITS)

    assert decoded.original_mode == "LA"
    pixels = _pixels(decoded)
    assert tuple(pixels[10, 5]) == (90, 90, 90)
    assert tuple(pixels[10, 30]) == (255, 255, 255)


def test_greyscale_becomes_three_equal_channels() -> None:
    grey = _noise(40, 40, seed=11, channels=1)[..., 0]

    decoded = decode_image(_encode(Image.fromarray(grey, mode="L"), "PNG"), LIMITS)

    assert decoded.original_mode == "L"
    assert decoded.needs_normalisation is True
    np.testing.assert_array_equal(np.asarray(decoded.pixels), np.repeat(grey[..., None], 3, axis=2))


def test_exif_orientation_is_applied_like_a_viewer() -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # mark the stored top-left corner red
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6  # "rotate 90 degrees clockwise to display"
    data = _encode(stored, "JPEG", quality=95, exif=exif.tobytes())

    decoded = decode_image(data, ImageLimits(min_side=16))

    assert decoded.pixels.size == (20, 40)
    assert decoded.exif_rotated is True
    assert decoded.needs_normalisation is True
    assert decoded.original_mode == "RGB"
    pixels = _pixels(decoded)
    # Turned clockwise, the stored top-left corner is shown at the top right.
    np.testing.assert_allclose(pixels[3, 16], (255, 0, 0), atol=12)
    np.testing.assert_allclose(pixels[3, 3], (0, 0, 255), atol=12)
    np.testing.assert_allclose(pixels[36, 3], (0, 0, 255), atol=12)


def test_normal_exif_orientation_is_not_a_rotation() -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 1
    data = _encode(Image.fromarray(_noise(40, 20, seed=12)), "JPEG", exif=exif.tobytes())

    decoded = decode_image(data, ImageLimits(min_side=16))

    assert decoded.exif_rotated is False
    assert decoded.pixels.size == (40, 20)
    assert decoded.needs_normalisation is False


def test_animated_gif_uses_the_first_frame_only() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (40, 40), colour) for colour in colours]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    decoded = decode_image(data, LIMITS)

    assert decoded.format == "GIF"
    assert decoded.frames == 3
    assert decoded.needs_normalisation is True
    assert (_pixels(decoded) == (255, 0, 0)).all()


def test_lossless_webp_is_accepted_and_marked_for_normalisation() -> None:
    pixels = _noise(40, 40, seed=13)

    decoded = decode_image(_encode(Image.fromarray(pixels), "WEBP", lossless=True), LIMITS)

    assert decoded.format == "WEBP"
    assert decoded.needs_normalisation is True
    np.testing.assert_array_equal(np.asarray(decoded.pixels), pixels)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_and_web_formats_are_accepted_upright(fmt: str) -> None:
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))  # mark the stored top-left corner red
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6  # "rotate 90 degrees clockwise to display"
    data = _encode(stored, fmt, quality=95, exif=exif.tobytes())

    decoded = decode_image(data, ImageLimits(min_side=16))

    assert decoded.format == fmt
    assert decoded.needs_normalisation is True, "ingestion stores them as PNG"
    assert decoded.pixels.size == (32, 64), "turned once, as a viewer shows it"
    pixels = _pixels(decoded)
    np.testing.assert_allclose(pixels[4, 27], (255, 0, 0), atol=40)  # the red corner is top right
    np.testing.assert_allclose(pixels[4, 4], (0, 0, 255), atol=40)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_and_web_formats_obey_the_header_pixel_limit(fmt: str) -> None:
    data = _encode(Image.fromarray(_noise(400, 300, seed=14)), fmt, quality=50)
    images_before = Image.core.get_stats()["new_count"]

    error = _reject(data, ImageLimits(max_pixels=100_000))

    assert error.reason == "too_many_pixels"
    assert "400x300" in str(error)
    assert Image.core.get_stats()["new_count"] == images_before, "refused before any pixel is decoded"


def test_truncated_heif_is_corrupt() -> None:
    data = _encode(Image.fromarray(_noise(64, 64, seed=15)), "HEIF", quality=90)

    assert _reject(data[: len(data) * 2 // 3]).reason == "corrupt"


def test_unreadable_exif_is_corrupt_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def hostile_exif(image: Image.Image) -> Image.Image:
        raise struct.error("unpack requires a buffer of 12 bytes")

    monkeypatch.setattr("ai_image_detection.image_io.ImageOps.exif_transpose", hostile_exif)
    buffer = io.BytesIO()
    Image.fromarray(_noise(64, 48, seed=5)).save(buffer, format="JPEG")
    with pytest.raises(ImageRejectedError) as rejected:
        decode_image(buffer.getvalue(), LIMITS)
    assert rejected.value.reason == "corrupt" and "EXIF" in str(rejected.value)
