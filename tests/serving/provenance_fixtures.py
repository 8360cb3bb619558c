"""Images that carry provenance, made in the tests: nothing here comes from the internet.

- a throwaway certificate chain (a test CA and an end-entity ES256 certificate with the key usage and
  extended key usage the C2PA library requires) and :func:`sign_c2pa`, which embeds a C2PA manifest
  whose ``c2pa.created`` action names a digital source type;
- :func:`signed_ai_jpeg` (trainedAlgorithmicMedia) and :func:`signed_capture_jpeg` (digitalCapture);
- :func:`png_with_parameters` (AUTOMATIC1111), :func:`png_with_comfyui_prompt`;
- :func:`jpeg_with_camera_exif` (Make/Model), :func:`jpeg_with_xmp` (IPTC DigitalSourceType).

The service's end-to-end test imports these from ``tests.serving.provenance_fixtures``.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import zlib
from dataclasses import dataclass

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, PngImagePlugin

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = IPTC + "trainedAlgorithmicMedia"
CAPTURE = IPTC + "digitalCapture"
SIGNER_NAME = "Provenance Test Signer"
SIGNER_ORG = "AIID Test Org"
GENERATOR = "aiid-test-generator"

A1111_PARAMETERS = (
    "a lighthouse at dusk, oil painting, highly detailed\n"
    "Negative prompt: blurry, low quality\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 64x48, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.7.0"
)


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and the end-entity certificate it issued, PEM-encoded."""

    ca_pem: bytes
    chain_pem: bytes  # end-entity certificate first, then the CA
    key_pem: bytes  # the end-entity's private key (PKCS#8)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIGNER_ORG),
        ]
    )


def _key_usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not sign,
        crl_sign=not sign,
        encipher_only=False,
        decipher_only=False,
    )


@functools.cache
def throwaway_pki() -> Pki:
    """A CA and an end-entity certificate valid from yesterday for 30 days (made once per process).

    C2PA wants, on the signing certificate: X.509 v3, not self-signed, ``digitalSignature`` key usage,
    an extended key usage from its list (``emailProtection`` here), and ECDSA P-256 for ES256.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("AIID Test CA"))
        .issuer_name(_name("AIID Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(SIGNER_NAME))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Pki(
        ca_pem=ca.public_bytes(pem),
        chain_pem=leaf.public_bytes(pem) + ca.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def plain_image(image_format: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small gradient-free image with no metadata at all."""
    return _encode(Image.new("RGB", size, (120, 30, 200)), image_format)


def sign_c2pa(
    data: bytes,
    mime_type: str = "image/jpeg",
    digital_source_type: str = TRAINED,
    action: str = "c2pa.created",
) -> bytes:
    """``data`` with an embedded C2PA manifest signed by :func:`throwaway_pki`'s end-entity certificate.

    The manifest holds one ``c2pa.actions`` assertion whose ``action`` names ``digital_source_type``;
    the claim generator is :data:`GENERATOR`. No thumbnail, no timestamp authority, no network.
    """
    pki = throwaway_pki()
    manifest = {
        "claim_generator_info": [{"name": GENERATOR, "version": "1.0"}],
        "title": "fixture",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": action, "digitalSourceType": digital_source_type}]},
            }
        ],
    }
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, pki.chain_pem, pki.key_pem, None)
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest, context=context) as builder:
        signed = io.BytesIO()
        builder.sign(signer, mime_type, io.BytesIO(data), signed)
    context.close()
    return signed.getvalue()


@functools.cache
def signed_ai_jpeg() -> bytes:
    """A JPEG whose valid (untrusted) C2PA manifest declares ``trainedAlgorithmicMedia``."""
    return sign_c2pa(plain_image("JPEG"), "image/jpeg", TRAINED)


@functools.cache
def signed_capture_jpeg() -> bytes:
    """A JPEG whose valid (untrusted) C2PA manifest declares ``digitalCapture``."""
    return sign_c2pa(plain_image("JPEG"), "image/jpeg", CAPTURE)


def tampered_pixels(signed_jpeg: bytes) -> bytes:
    """The signed JPEG with one byte of its entropy-coded data flipped: the data hash no longer matches."""
    altered = bytearray(signed_jpeg)
    altered[-20] ^= 0xFF  # inside the scan, before the EOI marker
    return bytes(altered)


def truncated_manifest(signed_jpeg: bytes, keep: int = 200) -> bytes:
    """The signed JPEG with its first APP11 (JUMBF) segment cut to ``keep`` bytes."""
    start = signed_jpeg.index(b"\xff\xeb")
    length = int.from_bytes(signed_jpeg[start + 2 : start + 4], "big")
    body = signed_jpeg[start + 4 : start + 4 + keep - 2]
    return (
        signed_jpeg[:start] + b"\xff\xeb" + keep.to_bytes(2, "big") + body + signed_jpeg[start + 2 + length :]
    )


def png_with_text(chunks: dict[str, str], size: tuple[int, int] = (64, 48), compress: bool = False) -> bytes:
    """A PNG with text chunks (keyword -> text): ``tEXt`` (``zTXt`` if compressed), ``iTXt`` if not ASCII."""
    info = PngImagePlugin.PngInfo()
    for keyword, text in chunks.items():
        if text.isascii():
            info.add_text(keyword, text, zip=compress)
        else:
            info.add_itxt(keyword, text, zip=compress)
    return _encode(Image.new("RGB", size, (10, 90, 160)), "PNG", pnginfo=info)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def with_chunk_before_end(png: bytes, chunk: bytes) -> bytes:
    """``png`` with ``chunk`` inserted after the image data, just before ``IEND``."""
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


def png_with_parameters(parameters: str = A1111_PARAMETERS) -> bytes:
    """A PNG as AUTOMATIC1111 writes it: the prompt and settings in a ``parameters`` text chunk."""
    return png_with_text({"parameters": parameters})


def png_with_comfyui_prompt() -> bytes:
    """A PNG as ComfyUI writes it: its API graph in ``prompt`` and its editor graph in ``workflow``."""
    prompt = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 8, "model": ["4", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in snow", "clip": ["4", 1]}},
    }
    workflow = {"last_node_id": 9, "nodes": [{"id": i, "type": "Note"} for i in range(50)]}
    return png_with_text({"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)})


def jpeg_with_camera_exif(
    make: str = "Canon", model: str = "Canon EOS R5", software: str = "", image_format: str = "JPEG"
) -> bytes:
    """A JPEG (or ``image_format``) whose EXIF names a camera (Make, Model) and optionally a ``Software``."""
    exif = Image.Exif()
    for tag, value in ((0x010F, make), (0x0110, model), (0x0131, software)):
        if value:
            exif[tag] = value
    return _encode(Image.new("RGB", (64, 48), (200, 180, 20)), image_format, exif=exif.tobytes())


def xmp_packet(digital_source_type: str = TRAINED, creator_tool: str = "") -> bytes:
    """An XMP packet with ``Iptc4xmpExt:DigitalSourceType`` (and ``xmp:CreatorTool`` if given)."""
    tool = f' xmp:CreatorTool="{creator_tool}"' if creator_tool else ""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'xmlns:xmp="http://ns.adobe.com/xap/1.0/"{tool}>'
        f"<Iptc4xmpExt:DigitalSourceType>{digital_source_type}</Iptc4xmpExt:DigitalSourceType>"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def jpeg_with_xmp(
    digital_source_type: str = TRAINED, creator_tool: str = "", packet: bytes | None = None
) -> bytes:
    """A JPEG with an XMP packet (APP1): :func:`xmp_packet` of the arguments, or ``packet`` as given."""
    packet = xmp_packet(digital_source_type, creator_tool) if packet is None else packet
    return _encode(Image.new("RGB", (64, 48), (30, 160, 90)), "JPEG", xmp=packet)


def jpeg_with_a1111_user_comment(parameters: str = A1111_PARAMETERS) -> bytes:
    """A JPEG as AUTOMATIC1111 saves it: its parameters in EXIF ``UserComment`` (UCS-2, big-endian)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + parameters.encode("utf-16-be")
    return _encode(Image.new("RGB", (64, 48), (90, 90, 90)), "JPEG", exif=exif.tobytes())


def remote_manifest_jpeg(url: str) -> bytes:
    """A JPEG whose C2PA manifest is not embedded but referenced at ``url`` (XMP ``dcterms:provenance``)."""
    pki = throwaway_pki()
    manifest = {
        "claim_generator_info": [{"name": GENERATOR, "version": "1.0"}],
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": TRAINED}]},
            }
        ],
    }
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, pki.chain_pem, pki.key_pem, None)
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest, context=context) as builder:
        builder.set_no_embed()
        builder.set_remote_url(url)
        signed = io.BytesIO()
        builder.sign(signer, "image/jpeg", io.BytesIO(plain_image("JPEG")), signed)
    context.close()
    return signed.getvalue()
