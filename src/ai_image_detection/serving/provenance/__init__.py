"""Evidence beyond pixels: what an image's own metadata says about where it came from.

Four kinds of evidence are read, each bounded in size and work (:class:`ProvenanceLimits`), and
none over the network:

- ``c2pa`` (:mod:`.credentials`): C2PA Content Credentials: the signer, whether the signature and
  the image's hashes verify, the claim generator, and the IPTC digital source type of its actions;
- ``xmp`` (:mod:`.metadata`): the XMP packet's ``Iptc4xmpExt:DigitalSourceType``, or its
  ``xmp:CreatorTool``;
- ``png_text`` (:mod:`.generators`): the text chunks generators write into PNG: ``parameters``
  (AUTOMATIC1111, Forge, SD.Next), ``prompt``/``workflow`` (ComfyUI), NovelAI's and InvokeAI's;
- ``exif``: ``Make``, ``Model`` and ``Software``, and the ``UserComment`` in which AUTOMATIC1111
  writes its parameters into JPEG and WebP.

Decision rule (:func:`~.model.decide`): the image *declares AI* when some evidence claims ``ai`` and
is not invalid. A C2PA manifest counts only when its signature and hashes verify (``valid`` true;
an intact manifest from a signer outside the trust list counts too, and ``fields["trusted"]`` says
which); unsigned generator metadata (XMP DigitalSourceType, PNG generator chunks, a generator named
in EXIF) cannot be verified (``valid`` null) but is a generator's own declaration, and counts; an AI
claim in a C2PA manifest that fails validation (``valid`` false) is shown and does not count. A
claim of camera capture is shown (``claims_capture``) but never decides: metadata is easy to forge
and to strip, and its absence proves nothing. ``decisive`` names the source that decided, C2PA first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ai_image_detection.serving.provenance.credentials import read_credentials
from ai_image_detection.serving.provenance.metadata import find_metadata, read_exif, read_png_text, read_xmp
from ai_image_detection.serving.provenance.model import (
    NOTE,
    Evidence,
    Provenance,
    ProvenanceLimits,
    Source,
    decide,
    unread_provenance,
)

__all__ = [
    "MIME_TYPES",
    "NOTE",
    "Evidence",
    "Provenance",
    "ProvenanceLimits",
    "decide",
    "read_provenance",
    "unread_provenance",
]

logger = logging.getLogger(__name__)

MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
    "HEIF": "image/heif",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}
"""The formats a C2PA manifest can be embedded in, by Pillow's format name; BMP cannot."""

Reading = Callable[[], tuple[list[Evidence], list[str]]]


def read_provenance(
    data: bytes, image_format: str, limits: ProvenanceLimits, trust_anchors: str | None = None
) -> Provenance:
    """Read an image's provenance: C2PA, XMP, PNG generator chunks and EXIF, then decide.

    Never raises for what is in the file: a corrupted or unreadable part is an entry of
    ``errors``. Bounded by ``limits`` and the file's size: no pixels are decoded, nothing is fetched.

    Args:
        data: The uploaded file, unchanged.
        image_format: The format Pillow found in it (``"JPEG"``, ``"PNG"``, ``"WEBP"``, ...).
        limits: How much may be examined and kept.
        trust_anchors: PEM root certificates whose C2PA signers are trusted (``fields["trusted"]``);
            None to trust none: a manifest that verifies is then valid but untrusted.

    Returns:
        What was found, and whether it declares the image AI-generated.
    """
    if len(data) > limits.max_bytes:
        return decide([], [f"file of {len(data)} bytes not examined: over the limit of {limits.max_bytes}"])
    image_format = image_format.upper()
    evidence: list[Evidence] = []
    errors: list[str] = []
    mime_type = MIME_TYPES.get(image_format)
    if mime_type is not None:
        _run("c2pa", lambda: read_credentials(data, mime_type, limits, trust_anchors), evidence, errors)
    try:
        metadata = find_metadata(data, image_format, limits)
    except Exception as error:  # a header that Pillow cannot read again: the pixels still decide
        logger.warning("metadata of a %s upload not read: %s", image_format, error)
        errors.append(f"metadata not read ({type(error).__name__}: {error})")
        return decide(evidence, errors)
    errors.extend(metadata.errors)
    if metadata.xmp:
        _run("xmp", lambda: read_xmp(metadata.xmp, limits), evidence, errors)
    if metadata.texts:
        _run("png_text", lambda: read_png_text(metadata.texts, limits), evidence, errors)
    if metadata.exif:
        _run("exif", lambda: read_exif(metadata.exif, limits), evidence, errors)
    return decide(evidence, errors)


def _run(source: Source, reading: Reading, evidence: list[Evidence], errors: list[str]) -> None:
    """Run one reader: an unexpected failure becomes an entry of ``errors``, never an exception."""
    try:
        found, problems = reading()
    except Exception as error:
        logger.warning("%s provenance not read", source, exc_info=True)
        found, problems = [], [f"{source}: not read ({type(error).__name__}: {error})"]
    evidence.extend(found)
    errors.extend(problems)
