"""C2PA Content Credentials, read and verified offline with ``c2pa-python``.

The manifest store's JSON (``Reader.json()``) gives the signer (``signature_info``), the claim
generator, the actions with their IPTC ``digitalSourceType``, and the verdict of validation:
``validation_state`` is ``Trusted`` (signature and hashes verify, the signer chains to a trust
anchor), ``Valid`` (they verify; the signer is only untrusted, ``signingCredential.untrusted``) or
``Invalid`` (a hash or the signature fails: the manifest proves nothing).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

import c2pa

from ai_image_detection.serving.provenance.model import (
    CLAIM_WORDS,
    Claim,
    Evidence,
    ProvenanceLimits,
    clip,
    make_evidence,
    source_type_claim,
)

UNTRUSTED = "signingCredential.untrusted"
BEGINNINGS = ("c2pa.created", "c2pa.opened")

READ_SETTINGS: dict[str, Any] = {
    # reading never reaches the network: no remote manifest (the SDK fetches them by default), no
    # OCSP, and no host allowed should a later version add a fetch
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    "core": {"allowed_network_hosts": []},
}


def read_credentials(
    data: bytes, mime_type: str, limits: ProvenanceLimits, trust_anchors: str | None = None
) -> tuple[list[Evidence], list[str]]:
    """The C2PA manifest store of ``data`` as evidence; nothing when the file has none.

    Args:
        data: The file.
        mime_type: Its type (the SDK trusts the bytes over it when they disagree).
        limits: What to keep.
        trust_anchors: PEM root certificates whose signers are trusted; None for none.

    Returns:
        One evidence (valid, invalid, or unreadable) and the errors: a manifest that cannot be read
        is an invalid ``unknown`` evidence and an error; a remote manifest is only an error.
    """
    settings = dict(READ_SETTINGS)
    if trust_anchors:
        settings["trust"] = {"user_anchors": trust_anchors}
    try:
        with c2pa.Context.from_dict(settings) as context:
            reader = c2pa.Reader.try_create(mime_type, io.BytesIO(data), None, context)
            if reader is None:
                return [], []
            with reader:
                store = json.loads(reader.json())
    except c2pa.C2paError as error:
        message = clip(error, limits.max_field_chars)
        # the SDK names the error "Remote: ...", which c2pa-python 0.38 does not map to RemoteManifest
        if isinstance(error, c2pa.C2paError.RemoteManifest) or message.startswith("Remote"):
            return [], [f"c2pa: the manifest is stored remotely and was not fetched ({message})"]
        detail = "A C2PA manifest is present but could not be read or verified, so it proves nothing."
        broken = make_evidence("c2pa", "unknown", detail, {"error": message}, limits, valid=False)
        return [broken], [f"c2pa: the manifest could not be read ({message})"]
    return [credentials_evidence(store, limits)], []


def _actions(manifest: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The actions of a manifest's ``c2pa.actions`` (and ``c2pa.actions.v2``) assertions."""
    for assertion in manifest.get("assertions") or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            yield from (assertion.get("data") or {}).get("actions") or []


def _agent(agent: object) -> str:
    """A software agent: ``{"name": ...}`` in C2PA 2, a string in C2PA 1."""
    return str(agent.get("name", "")) if isinstance(agent, Mapping) else str(agent or "")


def _declaration(store: Mapping[str, Any], limits: ProvenanceLimits) -> tuple[Claim, dict[str, str]]:
    """What the image is declared to be, and by which action.

    An AI source type anywhere in the store decides (an edit of a generated image is still
    generated); else the active manifest's ``c2pa.created``/``c2pa.opened`` action says.
    """
    manifests: Mapping[str, Any] = store.get("manifests") or {}
    active = str(store.get("active_manifest") or "")
    labels = [active, *sorted(label for label in manifests if label != active)][: limits.max_manifests]
    declared: list[tuple[Claim, dict[str, str]]] = []
    for label in labels:
        for action in _actions(manifests.get(label) or {}):
            if action.get("digitalSourceType"):
                name, claim = source_type_claim(str(action["digitalSourceType"]))
                declared.append(
                    (
                        claim,
                        {
                            "digital_source_type": name,
                            "action": str(action.get("action", "")),
                            "declared_in": "active manifest" if label == active else "ingredient manifest",
                            "software_agent": _agent(action.get("softwareAgent")),
                        },
                    )
                )
    ai = next((item for item in declared if item[0] == "ai"), None)
    beginning = next(
        (
            item
            for item in declared
            if item[1]["action"] in BEGINNINGS and item[1]["declared_in"] == "active manifest"
        ),
        None,
    )
    return ai or beginning or ("unknown", {})


def credentials_evidence(store: Mapping[str, Any], limits: ProvenanceLimits) -> Evidence:
    """Evidence from a manifest store as ``Reader.json()`` returns it.

    Args:
        store: The parsed JSON.
        limits: What to keep.

    Returns:
        Its claim, validity, signer, and the fields read.
    """
    claim, declaration = _declaration(store, limits)
    manifest = (store.get("manifests") or {}).get(store.get("active_manifest")) or {}
    signature = manifest.get("signature_info") or {}
    signed_by = signature.get("common_name") or signature.get("issuer")
    generator = manifest.get("claim_generator") or ", ".join(
        " ".join(str(info.get(key, "")) for key in ("name", "version")).strip()
        for info in manifest.get("claim_generator_info") or []
    )
    state = store.get("validation_state")
    statuses = store.get("validation_status") or []
    failures = [str(status.get("code")) for status in statuses if status.get("code") != UNTRUSTED]
    valid = state in ("Valid", "Trusted") if state else not failures
    trusted = valid and state == "Trusted"

    name = declaration.get("digital_source_type")
    what = f"declares {CLAIM_WORDS[claim]} ({name})" if name else "declares no digital source type"
    if not valid:
        verdict = f", but it fails validation ({', '.join(failures) or state}), so it proves nothing"
    elif trusted:
        verdict = "; its signature and hashes verify and its signer is on the trust list"
    else:
        verdict = "; its signature and hashes verify, but its signer is not on the trust list"
    signer = f" signed by {clip(signed_by, 80)}" if signed_by else ""
    fields = {
        **declaration,
        "claim_generator": generator,
        "issuer": signature.get("issuer"),
        "common_name": signature.get("common_name"),
        "signed_at": signature.get("time"),
        "validation_state": state,
        "trusted": str(trusted).lower(),
        "failures": ", ".join(failures),
    }
    detail = f"A C2PA manifest{signer} {what}{verdict}."
    return make_evidence("c2pa", claim, detail, fields, limits, valid=valid, signed_by=signed_by)
