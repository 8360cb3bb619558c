"""Unsigned metadata: the XMP packet, EXIF, and a PNG's text chunks, found without decoding pixels.

Pillow's ``Image.open`` reads only headers (JPEG markers up to the scan, WebP/AVIF/HEIF boxes), so
its ``info["xmp"]`` and ``info["exif"]`` cost no decoding. A PNG's text chunks may follow the image
data, where Pillow reads them only on ``load()`` (a full decode), so PNG chunks are walked here.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.etree import ElementTree

from PIL import Image

from ai_image_detection.serving.provenance.generators import (
    GENERATOR_SOFTWARE,
    Finding,
    exif_user_comment,
    generator_findings,
    parameters_finding,
)
from ai_image_detection.serving.provenance.model import (
    CLAIM_WORDS,
    Claim,
    Evidence,
    ProvenanceLimits,
    Source,
    clip,
    make_evidence,
    source_type_claim,
)

IPTC_NS = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}"
XMP_NS = "{http://ns.adobe.com/xap/1.0/}"
RDF_RESOURCE = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"
EXIF_MAKE, EXIF_MODEL, EXIF_SOFTWARE = 0x010F, 0x0110, 0x0131
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_XMP_KEYWORD = "XML:com.adobe.xmp"
NAME_CHARS = 80


@dataclass
class Metadata:
    """The raw metadata of one file: its XMP packet, its EXIF block, its PNG text chunks."""

    xmp: bytes = b""
    exif: bytes = b""
    texts: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def find_metadata(data: bytes, image_format: str, limits: ProvenanceLimits) -> Metadata:
    """The XMP packet, the EXIF block and (for PNG) the text chunks of a file, from its headers.

    Args:
        data: The file.
        image_format: Pillow's name of its format.
        limits: ``max_text_chunks`` and ``max_text_bytes``.

    Returns:
        What was found; a header that cannot be read raises (Pillow's or ``struct``'s error).
    """
    if image_format == "PNG":
        return _png_chunks(data, limits)
    with Image.open(io.BytesIO(data)) as image:  # headers only: pixels are decoded by load()
        xmp = image.info.get("xmp") or b""
        exif = image.info.get("exif") or b""
        if not exif and (tags := image.getexif()):  # TIFF: the EXIF tags are the file's own IFD
            exif = tags.tobytes()
    return Metadata(xmp=xmp.encode() if isinstance(xmp, str) else bytes(xmp), exif=bytes(exif))


def _png_chunks(data: bytes, limits: ProvenanceLimits) -> Metadata:
    """Walk a PNG's chunks: ``tEXt``, ``zTXt``, ``iTXt`` (XMP among them) and ``eXIf``."""
    found = Metadata()
    position, seen = len(PNG_SIGNATURE), 0
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IEND":
            break
        if kind == b"eXIf":
            found.exif = found.exif or body
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        seen += 1
        if seen > limits.max_text_chunks:
            found.errors.append(
                f"png_text: over {limits.max_text_chunks} text chunks; the rest were not read"
            )
            break
        keyword, text = _png_text(kind, body, limits.max_text_bytes)
        if keyword == PNG_XMP_KEYWORD:
            found.xmp = found.xmp or text.encode()
        elif keyword:
            found.texts.setdefault(keyword, text)
    return found


def _png_text(kind: bytes, body: bytes, max_bytes: int) -> tuple[str, str]:
    """A text chunk's keyword and text (at most ``max_bytes`` of it); ``("", "")`` if malformed."""
    keyword_bytes, _, rest = body.partition(b"\x00")
    keyword = keyword_bytes.decode("latin-1")
    try:
        if kind == b"tEXt":
            return keyword, rest[:max_bytes].decode("latin-1")
        if kind == b"zTXt":
            return keyword, _inflate(rest[1:], max_bytes).decode("latin-1")
        compressed, rest = rest[:1] == b"\x01", rest[2:]  # iTXt: flag, method, language, translation
        rest = rest.split(b"\x00", 2)[-1]
        text = _inflate(rest, max_bytes) if compressed else rest[:max_bytes]
        return keyword, text.decode("utf-8", errors="replace")
    except zlib.error:
        return "", ""


def _inflate(compressed: bytes, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of zlib data, decompressed: a zip bomb stops there."""
    return zlib.decompressobj().decompress(compressed, max_bytes)


def _from_finding(source: Source, finding: Finding, limits: ProvenanceLimits) -> Evidence:
    return make_evidence(source, finding.claim, finding.detail, finding.fields, limits)


def read_png_text(texts: Mapping[str, str], limits: ProvenanceLimits) -> tuple[list[Evidence], list[str]]:
    """Evidence from the text chunks generators write (:mod:`.generators`)."""
    findings = generator_findings(texts, limits.max_text_bytes)
    return [_from_finding("png_text", finding, limits) for finding in findings], []


def _xmp_values(root: ElementTree.Element, key: str) -> list[str]:
    """An XMP property's values, written as an attribute, as an element's text or ``rdf:resource``."""
    values = []
    for element in root.iter():
        if key in element.attrib:
            values.append(element.attrib[key])
        if element.tag == key:
            values.append((element.text or "").strip() or element.attrib.get(RDF_RESOURCE, ""))
    return [value.strip() for value in values if value.strip()]


def read_xmp(packet: bytes, limits: ProvenanceLimits) -> tuple[list[Evidence], list[str]]:
    """Evidence from an XMP packet: its IPTC DigitalSourceType, else its CreatorTool.

    Args:
        packet: The XMP packet.
        limits: ``max_text_bytes`` bounds the packet parsed.

    Returns:
        At most one evidence, and the errors (a packet too large, not XML, or with a DTD).
    """
    if len(packet) > limits.max_text_bytes:
        return [], [f"xmp: packet of {len(packet)} bytes not read: over the limit of {limits.max_text_bytes}"]
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:  # XMP has no DTD: no entity is ever expanded
        return [], ["xmp: packet declares a DTD or entities and was not read"]
    try:
        root = ElementTree.fromstring(packet.strip(b"\x00 \t\r\n"))  # noqa: S314 (no DTD, size-capped)
    except ElementTree.ParseError as error:
        return [], [f"xmp: packet is not well-formed XML ({error})"]
    source_types = _xmp_values(root, IPTC_NS + "DigitalSourceType")
    tools = _xmp_values(root, XMP_NS + "CreatorTool")
    tool = tools[0] if tools else ""
    claim: Claim
    if source_types:
        name, claim = source_type_claim(source_types[0])
        detail = f"The XMP metadata (unsigned) declares {CLAIM_WORDS[claim]} ({clip(name, NAME_CHARS)})."
    elif tool:
        name, claim = "", "ai" if GENERATOR_SOFTWARE.search(tool) else "edited"
        detail = f"The XMP metadata (unsigned) names the creating software {clip(tool, NAME_CHARS)}."
    else:
        return [], []
    fields = {"digital_source_type": name, "creator_tool": tool}
    return [make_evidence("xmp", claim, detail, fields, limits)], []


def read_exif(raw: bytes, limits: ProvenanceLimits) -> tuple[list[Evidence], list[str]]:
    r"""Evidence from EXIF: a generator's parameters or name, else a camera, else editing software.

    Args:
        raw: The EXIF block (with or without its ``Exif\\0\\0`` header).
        limits: What to keep.

    Returns:
        Up to two evidence (AUTOMATIC1111's ``UserComment``; Make/Model/Software), and no error.
    """
    exif = Image.Exif()
    exif.load(raw)
    make, model, software = (
        str(exif.get(tag, "")).strip("\x00 ") for tag in (EXIF_MAKE, EXIF_MODEL, EXIF_SOFTWARE)
    )
    found = []
    parameters = parameters_finding(exif_user_comment(exif)[: limits.max_text_bytes])
    if parameters is not None:  # AUTOMATIC1111 writes its parameters there in JPEG and WebP
        found.append(_from_finding("exif", parameters, limits))
    if software and GENERATOR_SOFTWARE.search(software):
        claim, detail = (
            "ai",
            f"The EXIF metadata (unsigned) names the generator {clip(software, NAME_CHARS)}.",
        )
    elif make or model:
        camera = model if make.lower() in model.lower() else f"{make} {model}".strip()
        claim, detail = (
            "capture",
            f"The EXIF metadata (unsigned) names the camera {clip(camera, NAME_CHARS)}.",
        )
    elif software:
        claim, detail = (
            "edited",
            f"The EXIF metadata (unsigned) names the software {clip(software, NAME_CHARS)}.",
        )
    else:
        return found, []
    fields = {"make": make, "model": model, "software": software}
    return [*found, make_evidence("exif", claim, detail, fields, limits)], []
