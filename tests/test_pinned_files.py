"""Fetching pinned files: a real HTTP server on loopback, no mocks."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_image_detection.pinned_files import (
    NETWORK_ERRORS,
    SIMPLE_INDEX_JSON,
    Checksum,
    IndexedFile,
    check_cached,
    download_verified,
    pip_download_command,
    require_http,
    simple_index_files,
    unreachable_message,
)

UNREACHABLE = "http://127.0.0.1:9"
BODY = b"pinned bytes" * 1000
SHA256 = hashlib.sha256(BODY).hexdigest()


class _Refused(RuntimeError):
    """The caller's own error class, built by ``refuse``."""


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go through a proxy from the environment."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[str]:
    """Serve ``/files/pinned.bin`` and a JSON, an HTML and a broken simple-index page."""
    entry = {"filename": "pinned.bin", "url": "../../files/pinned.bin", "hashes": {"sha256": SHA256}}
    pages = {
        "/files/pinned.bin": (BODY, "application/octet-stream"),
        "/json/project/": (json.dumps({"files": [entry]}).encode(), SIMPLE_INDEX_JSON),
        "/html/project/": (
            b'<a href="../../files/pinned.bin#sha256=' + SHA256.encode() + b'">pinned.bin</a>'
            b'<a href="other.whl">other.whl</a>',
            "text/html",
        ),
        "/broken/project/": (b'{"projects": []}', SIMPLE_INDEX_JSON),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in pages:
                self.send_error(404)
                return
            data, kind = pages[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            """Keep the test output quiet."""

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("form", ["json", "html"])
def test_simple_index_pages_list_absolute_urls_and_hashes(server: str, form: str) -> None:
    files = simple_index_files(f"{server}/{form}/project/", timeout=5)

    assert files["pinned.bin"] == IndexedFile(f"{server}/files/pinned.bin", SHA256)
    if form == "html":
        assert files["other.whl"] == IndexedFile(f"{server}/html/project/other.whl", None)


def test_a_json_page_that_is_not_a_project_page_is_refused(server: str) -> None:
    with pytest.raises(ValueError, match=r"/broken/project/ is not a PEP 691 simple-index page"):
        simple_index_files(f"{server}/broken/project/", timeout=5)


@pytest.mark.parametrize(
    "checksum",
    [
        Checksum("sha256", SHA256),
        Checksum("sha512", "sha512-" + base64.b64encode(hashlib.sha512(BODY).digest()).decode(), sri=True),
    ],
    ids=["hex", "sri"],
)
def test_a_download_with_the_pinned_digest_is_cached(tmp_path: Path, server: str, checksum: Checksum) -> None:
    target = tmp_path / "pinned.bin"
    download_verified(f"{server}/files/pinned.bin", target, checksum, _Refused, timeout=5)

    assert target.read_bytes() == BODY
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["pinned.bin"]
    check_cached(target, checksum, _Refused, delete=True)  # accepted as it is
    assert target.is_file()


def test_a_download_with_another_digest_is_refused_and_not_kept(tmp_path: Path, server: str) -> None:
    with pytest.raises(_Refused, match=f"^{SHA256}$"):
        download_verified(
            f"{server}/files/pinned.bin",
            tmp_path / "pinned.bin",
            Checksum("sha256", "0" * 64),
            _Refused,
            timeout=5,
        )

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delete", [True, False])
def test_a_cached_file_with_another_digest_is_refused(tmp_path: Path, delete: bool) -> None:
    cached = tmp_path / "pinned.bin"
    cached.write_bytes(BODY + b"tampered")

    with pytest.raises(_Refused, match=hashlib.sha256(BODY + b"tampered").hexdigest()):
        check_cached(cached, Checksum("sha256", SHA256), _Refused, delete=delete)
    assert cached.exists() is not delete


def test_an_unreachable_server_fails_with_a_network_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(urllib.error.URLError) as raised:
        download_verified(
            f"{UNREACHABLE}/pinned.bin",
            tmp_path / "pinned.bin",
            Checksum("sha256", SHA256),
            _Refused,
            timeout=5,
        )

    assert isinstance(raised.value, NETWORK_ERRORS)
    assert list(tmp_path.iterdir()) == []
    message = unreachable_message(
        f"{UNREACHABLE}/pinned.bin",
        raised.value,
        name="pinned==1.0",
        target=tmp_path / "pinned.bin",
        checksum=f"sha256 {SHA256}",
        fetch_command=pip_download_command("pinned==1.0", tmp_path),
        pinned_url="https://files.example.org/pinned.bin",
        source="The file comes from a registry",
    )
    assert message.startswith(f"cannot download pinned==1.0 from {UNREACHABLE}/pinned.bin (")
    assert f"python -m pip download pinned==1.0 --no-deps --only-binary=:all: -d {tmp_path}" in message
    assert f"curl -fL -o {tmp_path / 'pinned.bin'} https://files.example.org/pinned.bin" in message
    assert f"sha256 {SHA256}" in message


def test_only_http_urls_are_accepted() -> None:
    require_http("https://pypi.org/simple", "index_url")
    with pytest.raises(ValueError, match=r"index_url must be an http\(s\) URL; got 'file:///simple'"):
        require_http("file:///simple", "index_url")
