"""An upload becomes crops, facts and provenance; unusable ones are client errors with their status."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photo, settings_from
from PIL import Image

from ai_image_detection.serving import examination
from ai_image_detection.serving.examination import Examiner
from ai_image_detection.serving.http_guard import ClientError
from ai_image_detection.tiling import tile_crops
from tests.serving.provenance_fixtures import png_with_parameters


def _upload(folder: Path, data: bytes) -> Path:
    upload = folder / "upload"
    upload.write_bytes(data)
    return upload


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_upload_is_tiled_as_evaluation_tiles_it(tmp_path: Path) -> None:
    upload = _upload(tmp_path, _png(photo(300, 200)))

    decoded, examined = asyncio.run(Examiner(settings_from({})).examine(upload, "image", 96, 9))

    np.testing.assert_array_equal(examined.crops, tile_crops(np.asarray(decoded.pixels), 96, 9))
    assert (examined.facts.width, examined.facts.height, examined.facts.format) == (300, 200, "PNG")
    assert examined.size_bytes == upload.stat().st_size
    assert len(examined.image_sha256) == 64
    assert not examined.provenance.found


def test_provenance_is_read_before_scoring(tmp_path: Path) -> None:
    upload = _upload(tmp_path, png_with_parameters())

    _, examined = asyncio.run(Examiner(settings_from({})).examine(upload, "image", 96, 9))

    assert examined.provenance.declares_ai, "a generator's text chunk declares AI"


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [(b"", "empty", 400), (b"not an image at all", "not_an_image", 415), (None, "too_small", 422)],
)
def test_an_unusable_upload_is_a_client_error_naming_the_file(
    tmp_path: Path, data: bytes | None, code: str, status: int
) -> None:
    upload = _upload(tmp_path, _png(photo(8, 8)) if data is None else data)

    with pytest.raises(ClientError) as refused:
        asyncio.run(Examiner(settings_from({})).examine(upload, "file #3", 96, 9))

    assert (refused.value.code, refused.value.status) == (code, status)
    assert refused.value.message.startswith("file #3: ")


def test_provenance_that_takes_too_long_is_reported_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_reader(*_: object) -> None:
        time.sleep(1.0)

    monkeypatch.setattr(examination, "read_provenance", slow_reader)
    upload = _upload(tmp_path, _png(photo(120, 120)))
    settings = settings_from({"AIID_PROVENANCE_TIMEOUT_S": "0.1"})

    _, examined = asyncio.run(Examiner(settings).examine(upload, "image", 96, 9))

    assert not examined.provenance.found
    assert examined.provenance.errors == ["not read within 0.1 s"]
