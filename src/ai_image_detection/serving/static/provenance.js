/* The provenance panel of a result: what the image's own metadata says about its origin (C2PA
 * Content Credentials, IPTC/XMP, a generator's PNG text, EXIF), whether it could be verified, and
 * which evidence decided the verdict: a declaration of AI decides ("AI (declared)", the pixels'
 * P(AI) still shown); a camera claim is shown but never overrides the pixels. Every panel says that
 * metadata is easy to forge and to strip, and that its absence proves nothing.
 *
 * The answer's `provenance` (see serving/provenance/model.py):
 *   {found, declares_ai, claims_capture, decisive: source|null, errors: [str], note: str,
 *    evidence: [{source: "c2pa"|"xmp"|"png_text"|"exif", claim: "ai"|"capture"|"edited"|"unknown",
 *                valid: true|false|null, signed_by: str|null, detail: str, fields: {str: str}}]}
 * A service from before provenance answers none: then there is no panel at all.
 */

import { el, formatPercent } from "./dom.js";
import { DECLARED_TEXT, isDeclared } from "./verdict.js";

/** Shown in every panel, whatever was found. */
export const CAVEAT =
  "Metadata is easy to forge and to strip: what it declares is a claim, not proof, and its absence proves nothing.";

/** Where evidence was read, in words. */
const SOURCE_TEXT = {
  c2pa: "Content Credentials (C2PA)",
  xmp: "IPTC/XMP metadata",
  png_text: "Generator text in the PNG",
  exif: "EXIF",
};

/** What evidence claims, in words. */
const CLAIM_TEXT = {
  ai: "AI-generated",
  capture: "camera capture",
  edited: "edited",
  unknown: "neither AI nor camera",
};

/**
 * Whether a verdict carries a provenance object (a service from before provenance does not).
 * @param {Object} verdict The /predict answer.
 * @returns {boolean}
 */
export function hasProvenance(verdict) {
  const provenance = verdict && verdict.provenance;
  return !!provenance && typeof provenance === "object" && !Array.isArray(provenance);
}

function text(value) {
  return typeof value === "string" ? value : "";
}

function sourceName(source) {
  return SOURCE_TEXT[source] || text(source) || "metadata";
}

/** "valid" | "invalid" | "unverified", from Evidence.valid (true, false, null). */
function validity(evidence) {
  if (evidence.valid === true) return "valid";
  if (evidence.valid === false) return "invalid";
  return "unverified";
}

const VALIDITY_TEXT = {
  valid: "valid: signature and hashes verify",
  invalid: "invalid: the signature or hashes do not verify",
  unverified: "unverified: unsigned metadata",
};

/** One evidence item: source, claim, validity, signer, its sentence, and the fields read. */
function evidenceItem(evidence, decisive) {
  const state = validity(evidence);
  const claim = CLAIM_TEXT[evidence.claim] ? evidence.claim : "unknown";
  const fields = evidence.fields && typeof evidence.fields === "object" ? Object.entries(evidence.fields) : [];
  const trusted = text(fields.find(([key]) => key === "trusted")?.[1]);
  const signer = text(evidence.signed_by);
  const signerText = signer
    ? `Signed by ${signer}${trusted === "true" ? " (trusted signer)" : trusted === "false" ? " (signer not on the trust list)" : ""}`
    : "";
  return el(
    "li",
    {
      className: "evidence",
      dataset: { source: text(evidence.source), claim, validity: state, decisive: decisive ? "true" : "false" },
    },
    el(
      "p",
      { className: "evidence-head" },
      el("strong", { className: "evidence-source", text: sourceName(evidence.source) }),
      el("span", { className: `evidence-claim claim-${claim}`, text: `claims: ${CLAIM_TEXT[claim]}` }),
      el("span", { className: `evidence-validity validity-${state}`, text: VALIDITY_TEXT[state] }),
      decisive ? el("span", { className: "evidence-decisive", text: "decided the verdict" }) : null,
    ),
    signerText ? el("p", { className: "evidence-signer", text: signerText }) : null,
    text(evidence.detail) ? el("p", { className: "evidence-detail", text: evidence.detail }) : null,
    fields.length
      ? el(
          "details",
          { className: "evidence-fields" },
          el("summary", { text: `What was read (${fields.length} field${fields.length === 1 ? "" : "s"})` }),
          el("dl", {}, ...fields.flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: text(value) || String(value) })])),
        )
      : null,
  );
}

/** Which evidence decided, in one sentence (with the pixels' score when the declaration decided). */
function decision(verdict, provenance, evidence) {
  if (isDeclared(verdict)) {
    const decisive = evidence.find((item) => item.source === provenance.decisive);
    const where = decisive ? sourceName(decisive.source) : "the image's metadata";
    return (
      `Decided by the image's provenance (${where}): ${DECLARED_TEXT}. ` +
      `The pixels alone give P(AI) ${formatPercent(Math.min(1, Math.max(0, verdict.probability_ai)))}.`
    );
  }
  if (provenance.claims_capture) {
    return "Decided by the pixels: the metadata claims a camera capture, which is shown but never overrides them.";
  }
  if (provenance.found) return "Decided by the pixels: the metadata declares no AI generation that could count.";
  return "Decided by the pixels.";
}

/**
 * The provenance panel of one verdict, or null when the answer has no provenance (an older service).
 * @param {Object} verdict The /predict answer (label, decided_by, probability_ai, provenance).
 * @param {string} idPrefix A unique prefix for the panel's ids (the card's id).
 * @returns {HTMLElement|null}
 */
export function provenancePanel(verdict, idPrefix) {
  if (!hasProvenance(verdict)) return null;
  const provenance = verdict.provenance;
  const evidence = (Array.isArray(provenance.evidence) ? provenance.evidence : []).filter(
    (item) => item && typeof item === "object",
  );
  const errors = (Array.isArray(provenance.errors) ? provenance.errors : []).filter((item) => typeof item === "string" && item);
  const found = evidence.length > 0;
  const titleId = `${idPrefix}-provenance-title`;
  const decisiveIndex = isDeclared(verdict) ? evidence.findIndex((item) => item.source === provenance.decisive && item.claim === "ai") : -1;
  return el(
    "div",
    {
      className: "provenance",
      role: "group",
      "aria-labelledby": titleId,
      dataset: { found: found ? "true" : "false", decidedBy: isDeclared(verdict) ? "provenance" : "pixels" },
    },
    el("h4", { className: "provenance-title", id: titleId, text: "Provenance" }),
    el("p", {
      className: "provenance-found",
      text: found
        ? `Found ${evidence.length} piece${evidence.length === 1 ? "" : "s"} of metadata about the image's origin.`
        : "Nothing found: no Content Credentials (C2PA), no IPTC/XMP source type, no generator text, no camera EXIF.",
    }),
    el("p", { className: "provenance-decision", text: decision(verdict, provenance, evidence) }),
    found
      ? el("ul", { className: "evidence-list", "aria-label": "Provenance found" }, ...evidence.map((item, index) => evidenceItem(item, index === decisiveIndex)))
      : null,
    errors.length
      ? el(
          "div",
          { className: "provenance-errors" },
          el("p", { text: "Could not be read:" }),
          el("ul", {}, ...errors.map((error) => el("li", { text: error }))),
        )
      : null,
    el("p", { className: "provenance-caveat", text: CAVEAT }),
  );
}
