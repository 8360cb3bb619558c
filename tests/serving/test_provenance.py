"""Provenance read from images the tests make: C2PA signed with a throwaway CA, XMP, PNG chunks, EXIF.

What is checked: a valid AI declaration decides, an invalid one is shown and does not, a camera
claim never decides, nothing raises on a corrupted file, nothing reaches the network, and what is
kept stays within the limits.
"""

from __future__ import annotations

import http.server
import json
import threading
import zlib
from collections.abc import Iterator

import pytest

from ai_image_detection.serving.provenance import (
    NOTE,
    Evidence,
    Provenance,
    ProvenanceLimits,
    decide,
    read_provenance,
    unread_provenance,
)
from tests.serving import provenance_fixtures as fx

LIMITS = ProvenanceLimits()


def only(provenance: Provenance) -> Evidence:
    assert len(provenance.evidence) == 1, provenance.evidence
    return provenance.evidence[0]


def within(provenance: Provenance, limits: ProvenanceLimits) -> bool:
    return all(
        len(item.fields) <= limits.max_fields
        and all(len(v) <= limits.max_field_chars for v in item.fields.values())
        for item in provenance.evidence
    )


# ---------- C2PA ----------


def test_a_valid_signed_ai_declaration_decides() -> None:
    provenance = read_provenance(fx.signed_ai_jpeg(), "JPEG", LIMITS)
    evidence = only(provenance)
    assert (provenance.found, provenance.declares_ai, provenance.decisive) == (True, True, "c2pa")
    assert (evidence.source, evidence.claim, evidence.valid) == ("c2pa", "ai", True)
    assert evidence.signed_by == fx.SIGNER_NAME
    assert evidence.fields["digital_source_type"] == "trainedAlgorithmicMedia"
    assert evidence.fields["action"] == "c2pa.created"
    assert evidence.fields["issuer"] == fx.SIGNER_ORG
    assert evidence.fields["claim_generator"].startswith(fx.GENERATOR)
    assert evidence.fields["trusted"] == "false"  # intact, but our CA is on no trust list
    assert "not on the trust list" in evidence.detail
    assert provenance.errors == []


def test_a_trust_anchor_makes_the_signer_trusted() -> None:
    anchors = fx.throwaway_pki().ca_pem.decode()
    evidence = only(read_provenance(fx.signed_ai_jpeg(), "JPEG", LIMITS, trust_anchors=anchors))
    assert (evidence.valid, evidence.fields["trusted"], evidence.fields["validation_state"]) == (
        True,
        "true",
        "Trusted",
    )


def test_pixels_altered_after_signing_invalidate_the_declaration() -> None:
    provenance = read_provenance(fx.tampered_pixels(fx.signed_ai_jpeg()), "JPEG", LIMITS)
    evidence = only(provenance)
    assert (evidence.claim, evidence.valid) == ("ai", False)  # shown ...
    assert "assertion.dataHash.mismatch" in evidence.fields["failures"]
    assert "proves nothing" in evidence.detail
    assert (provenance.declares_ai, provenance.decisive) == (False, None)  # ... and does not count


def flipped_manifest_byte(signed: bytes) -> bytes:
    altered = bytearray(signed)
    altered[signed.index(b"\xff\xeb") + 200] ^= 0xFF
    return bytes(altered)


@pytest.mark.parametrize("corrupt", [fx.truncated_manifest, flipped_manifest_byte])
def test_a_corrupted_manifest_is_an_error_not_an_exception(corrupt) -> None:
    provenance = read_provenance(corrupt(fx.signed_ai_jpeg()), "JPEG", LIMITS)
    assert not provenance.declares_ai
    assert provenance.errors or all(item.valid is False for item in provenance.evidence)
    assert [item.valid for item in provenance.evidence if item.source == "c2pa"] == [False]


def test_a_signed_capture_claim_is_shown_but_never_declares_ai() -> None:
    provenance = read_provenance(fx.signed_capture_jpeg(), "JPEG", LIMITS)
    evidence = only(provenance)
    assert (evidence.claim, evidence.valid, evidence.fields["digital_source_type"]) == (
        "capture",
        True,
        "digitalCapture",
    )
    assert (provenance.claims_capture, provenance.declares_ai, provenance.decisive) == (True, False, None)


@pytest.mark.parametrize(("image_format", "mime_type"), [("PNG", "image/png"), ("GIF", "image/gif")])
def test_manifests_in_other_formats_are_read(image_format: str, mime_type: str) -> None:
    signed = fx.sign_c2pa(fx.plain_image(image_format), mime_type)
    provenance = read_provenance(signed, image_format, LIMITS)
    assert (provenance.decisive, only(provenance).valid) == ("c2pa", True)


@pytest.fixture
def http_requests() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server's URL and the paths requested from it."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/manifest.c2pa", requests
    server.shutdown()
    server.server_close()


def test_a_remote_manifest_is_never_fetched(http_requests: tuple[str, list[str]]) -> None:
    url, requests = http_requests
    provenance = read_provenance(fx.remote_manifest_jpeg(url), "JPEG", LIMITS)
    assert requests == []  # the SDK's default would have fetched it
    assert not provenance.declares_ai
    assert any("remotely" in error for error in provenance.errors)


# ---------- PNG generator chunks ----------


def test_a1111_parameters_declare_ai_with_excerpts() -> None:
    provenance = read_provenance(fx.png_with_parameters(), "PNG", LIMITS)
    evidence = only(provenance)
    assert (provenance.declares_ai, provenance.decisive) == (True, "png_text")
    assert (evidence.claim, evidence.valid, evidence.signed_by) == ("ai", None, None)
    assert evidence.fields["prompt"] == "a lighthouse at dusk, oil painting, highly detailed"
    assert evidence.fields["negative_prompt"] == "blurry, low quality"
    assert {key: evidence.fields[key] for key in ("steps", "sampler", "model", "seed")} == {
        "steps": "20",
        "sampler": "DPM++ 2M Karras",
        "model": "v1-5-pruned-emaonly",
        "seed": "1234",
    }


def test_compressed_chunks_and_chunks_after_the_image_data_are_read() -> None:
    compressed = fx.png_with_text({"parameters": fx.A1111_PARAMETERS}, compress=True)
    late_body = b"parameters\x00" + fx.A1111_PARAMETERS.encode()
    late = fx.with_chunk_before_end(fx.plain_image("PNG"), fx.png_chunk(b"tEXt", late_body))
    for png in (compressed, late):
        assert read_provenance(png, "PNG", LIMITS).decisive == "png_text"


def test_a_comfyui_graph_declares_ai_without_keeping_the_workflow() -> None:
    evidence = only(read_provenance(fx.png_with_comfyui_prompt(), "PNG", LIMITS))
    assert evidence.claim == "ai"
    assert evidence.fields["checkpoint"] == "sd_xl_base_1.0.safetensors"
    assert evidence.fields["prompt"] == "a red fox in snow"
    assert evidence.fields["node_types"] == "KSampler, CheckpointLoaderSimple, CLIPTextEncode"
    assert evidence.fields["workflow_nodes"] == "50"
    assert "workflow" not in evidence.fields


def test_novelai_and_invokeai_metadata_declare_ai() -> None:
    novelai = fx.png_with_text(
        {
            "Software": "NovelAI",
            "Description": "a cat",
            "Comment": json.dumps({"steps": 28, "sampler": "k_euler"}),
        }
    )
    invokeai = fx.png_with_text(
        {"invokeai_metadata": json.dumps({"positive_prompt": "a dog", "model": {"name": "juggernaut"}})}
    )
    novelai_evidence = only(read_provenance(novelai, "PNG", LIMITS))
    invokeai_evidence = only(read_provenance(invokeai, "PNG", LIMITS))
    assert (novelai_evidence.claim, novelai_evidence.fields["prompt"], novelai_evidence.fields["steps"]) == (
        "ai",
        "a cat",
        "28",
    )
    assert (invokeai_evidence.claim, invokeai_evidence.fields["model"]) == ("ai", "juggernaut")


@pytest.mark.parametrize(
    "chunks", [{"parameters": "just a caption"}, {"prompt": "not json"}, {"Software": "GIMP 2.10"}]
)
def test_text_that_is_not_a_generator_s_declares_nothing(chunks: dict[str, str]) -> None:
    provenance = read_provenance(fx.png_with_text(chunks), "PNG", LIMITS)
    assert only(provenance).claim in ("unknown", "edited")
    assert not provenance.declares_ai


# ---------- EXIF and XMP ----------


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_camera_exif_claims_capture_and_never_decides(image_format: str) -> None:
    image = fx.jpeg_with_camera_exif(image_format=image_format)
    provenance = read_provenance(image, image_format, LIMITS)
    evidence = only(provenance)
    assert (evidence.source, evidence.claim, evidence.valid) == ("exif", "capture", None)
    assert (evidence.fields["make"], evidence.fields["model"]) == ("Canon", "Canon EOS R5")
    assert "Canon EOS R5" in evidence.detail
    assert (provenance.claims_capture, provenance.declares_ai) == (True, False)


@pytest.mark.parametrize(
    ("make", "software", "claim"),
    [
        ("", "Midjourney v6", "ai"),
        ("", "Adobe Photoshop 25.0 (Windows)", "edited"),
        ("Nikon", "Ver.1.00", "capture"),
    ],
)
def test_exif_software_names_a_generator_or_an_editor(make: str, software: str, claim: str) -> None:
    jpeg = fx.jpeg_with_camera_exif(make=make, model="", software=software)
    provenance = read_provenance(jpeg, "JPEG", LIMITS)
    assert only(provenance).claim == claim
    assert provenance.declares_ai is (claim == "ai")


def test_a1111_parameters_in_the_exif_user_comment_declare_ai() -> None:
    provenance = read_provenance(fx.jpeg_with_a1111_user_comment(), "JPEG", LIMITS)
    assert provenance.decisive == "exif"
    assert only(provenance).fields["model"] == "v1-5-pruned-emaonly"


@pytest.mark.parametrize(
    ("jpeg", "claim"),
    [
        (fx.jpeg_with_xmp(fx.TRAINED), "ai"),
        (fx.jpeg_with_xmp(fx.IPTC + "compositeWithTrainedAlgorithmicMedia"), "ai"),
        (fx.jpeg_with_xmp(fx.CAPTURE), "capture"),
        (fx.jpeg_with_xmp(fx.IPTC + "screenCapture"), "unknown"),
        (fx.jpeg_with_xmp("", creator_tool="Adobe Firefly"), "ai"),
        (fx.jpeg_with_xmp("", creator_tool="GIMP 2.10"), "edited"),
    ],
)
def test_xmp_digital_source_type_and_creator_tool(jpeg: bytes, claim: str) -> None:
    provenance = read_provenance(jpeg, "JPEG", LIMITS)
    assert (only(provenance).source, only(provenance).claim) == ("xmp", claim)
    assert provenance.declares_ai is (claim == "ai")


def test_xmp_as_an_rdf_resource_and_in_a_png_is_read() -> None:
    packet = fx.xmp_packet("").replace(
        b"<Iptc4xmpExt:DigitalSourceType></Iptc4xmpExt:DigitalSourceType>",
        f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{fx.TRAINED}"/>'.encode(),
    )
    png = fx.png_with_text({"XML:com.adobe.xmp": packet.decode()})
    assert read_provenance(png, "PNG", LIMITS).decisive == "xmp"


def test_xmp_with_entities_is_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><x>&a;</x>'
    provenance = read_provenance(fx.jpeg_with_xmp(packet=bomb), "JPEG", LIMITS)
    assert (provenance.found, provenance.errors) == (
        False,
        ["xmp: packet declares a DTD or entities and was not read"],
    )


# ---------- nothing found, limits, decision rule ----------


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_a_plain_image_has_no_provenance_and_says_absence_proves_nothing(image_format: str) -> None:
    provenance = read_provenance(fx.plain_image(image_format), image_format, LIMITS)
    assert (provenance.found, provenance.declares_ai, provenance.evidence, provenance.errors) == (
        False,
        False,
        [],
        [],
    )
    assert provenance.note == NOTE
    assert all(word in NOTE for word in ("forge", "strip", "proves nothing"))


def test_bytes_that_are_no_image_are_errors_not_exceptions() -> None:
    provenance = read_provenance(b"\xff\xd8\xff\xe1\x00\x10garbage" * 4, "JPEG", LIMITS)
    assert not provenance.declares_ai
    assert provenance.errors


def test_oversized_metadata_is_cut_to_the_limits() -> None:
    huge_prompt = "a very long prompt " * 2000 + "\nSteps: 20, Sampler: Euler, Model: m"
    workflow = json.dumps({"nodes": [{"id": i, "widgets_values": ["x" * 100]} for i in range(5000)]})
    png = fx.png_with_text({"parameters": huge_prompt, "workflow": workflow, "Software": "S" * 5000})
    provenance = read_provenance(png, "PNG", LIMITS)
    assert within(provenance, LIMITS)
    assert len(provenance.evidence) == 3
    assert provenance.evidence[0].fields["prompt"].endswith("…")

    tight = ProvenanceLimits(max_fields=3, max_field_chars=40)
    assert within(read_provenance(png, "PNG", tight), tight)
    assert within(read_provenance(fx.signed_ai_jpeg(), "JPEG", tight), tight)


def test_files_chunks_and_packets_over_the_limits_are_not_read() -> None:
    big = read_provenance(fx.signed_ai_jpeg(), "JPEG", ProvenanceLimits(max_bytes=1000))
    assert (big.found, len(big.errors)) == (False, 1)
    assert "over the limit of 1000" in big.errors[0]

    many = fx.png_with_text({f"k{i}": "v" for i in range(10)} | {"parameters": fx.A1111_PARAMETERS})
    limited = read_provenance(many, "PNG", ProvenanceLimits(max_text_chunks=5))
    assert (limited.found, limited.errors) == (
        False,
        ["png_text: over 5 text chunks; the rest were not read"],
    )

    packet = read_provenance(fx.jpeg_with_xmp(), "JPEG", ProvenanceLimits(max_text_bytes=100))
    assert packet.found is False
    assert "xmp: packet of" in packet.errors[0]


def test_a_compressed_text_bomb_is_inflated_only_up_to_the_limit() -> None:
    body = b"parameters\x00\x00" + zlib.compress(b"a" * 8_000_000 + b"\nSteps: 1", 1)
    png = fx.with_chunk_before_end(fx.plain_image("PNG"), fx.png_chunk(b"zTXt", body))
    provenance = read_provenance(png, "PNG", ProvenanceLimits(max_text_bytes=10_000))
    assert only(provenance).claim == "unknown"  # its settings line lies beyond the limit


def evidence(source: str, claim: str, valid: bool | None) -> Evidence:
    return Evidence.model_validate(
        {"source": source, "claim": claim, "valid": valid, "signed_by": None, "detail": "", "fields": {}}
    )


@pytest.mark.parametrize(
    ("found", "declares_ai", "decisive", "claims_capture"),
    [
        ([("exif", "ai", None), ("c2pa", "ai", True)], True, "c2pa", False),  # C2PA first
        ([("c2pa", "ai", False), ("xmp", "ai", None)], True, "xmp", False),  # an invalid one does not count
        ([("c2pa", "ai", False)], False, None, False),
        ([("c2pa", "capture", False), ("exif", "capture", None)], False, None, True),
        ([("c2pa", "capture", True), ("png_text", "ai", None)], True, "png_text", True),
        ([("exif", "edited", None)], False, None, False),
    ],
)
def test_the_decision_rule(
    found: list, declares_ai: bool, decisive: str | None, claims_capture: bool
) -> None:
    provenance = decide([evidence(*item) for item in found], [])
    assert (provenance.declares_ai, provenance.decisive, provenance.claims_capture) == (
        declares_ai,
        decisive,
        claims_capture,
    )
    assert provenance.evidence[0].source == (
        "c2pa" if any(item[0] == "c2pa" for item in found) else found[0][0]
    )


def test_unread_provenance_lets_the_pixels_decide() -> None:
    provenance = unread_provenance("not read within 2 s")
    assert (provenance.found, provenance.declares_ai, provenance.errors) == (
        False,
        False,
        ["not read within 2 s"],
    )


def test_the_schema_describes_every_field_and_says_null_the_openapi_3_0_way() -> None:
    for model in (Provenance, Evidence):
        properties = model.model_json_schema()["properties"]
        assert all(schema.get("description") for schema in properties.values()), model
    nullable = {"valid", "signed_by"}
    assert {
        name for name, s in Evidence.model_json_schema()["properties"].items() if s.get("nullable")
    } == nullable
    assert Provenance.model_json_schema()["properties"]["decisive"]["nullable"] is True


def test_a_settings_line_without_separators_is_parsed_in_linear_time() -> None:
    line = "Steps: 20, " + "a" * 1_000_000
    png = fx.png_with_text({"parameters": "prompt\n" + line})
    assert only(read_provenance(png, "PNG", LIMITS)).fields["steps"] == "20"
