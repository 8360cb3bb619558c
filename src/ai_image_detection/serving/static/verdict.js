/* The words of a verdict and its band: shared by the result card, the history and the footer. */

import { formatPercent } from "./dom.js";

/** The labels a verdict can have. */
export const LABELS = ["human", "inconclusive", "ai"];

/** A verdict's label in words. */
export const VERDICT_TEXT = {
  ai: "Likely AI-generated",
  human: "Likely human-made (camera)",
  inconclusive: "Inconclusive",
};

/** The words of an "ai" verdict that the image's own provenance decided (decided_by "provenance"). */
export const DECLARED_TEXT = "AI (declared)";

/** A verdict's icon (decorative: the words say the same). */
export const VERDICT_ICON = { ai: "⚠", human: "✓", inconclusive: "?" };

/**
 * Whether a verdict was decided by the image's declared provenance rather than by its pixels.
 * @param {{label?: string, decided_by?: string}} verdict A verdict or a history entry.
 * @returns {boolean}
 */
export function isDeclared(verdict) {
  return !!verdict && verdict.label === "ai" && verdict.decided_by === "provenance";
}

/**
 * A verdict (or history entry) in words: "AI (declared)" when provenance decided, else by label.
 * @param {{label: string, decided_by?: string}} verdict
 * @returns {string}
 */
export function verdictText(verdict) {
  return isDeclared(verdict) ? DECLARED_TEXT : VERDICT_TEXT[verdict.label];
}

function sameValue(a, b) {
  return Math.abs(a - b) < 1e-9;
}

/**
 * Whether thresholds are an inconclusive band {human, ai} (two finite numbers).
 * @param {*} thresholds
 * @returns {boolean}
 */
export function isBand(thresholds) {
  return !!thresholds && Number.isFinite(thresholds.human) && Number.isFinite(thresholds.ai);
}

/**
 * The band {human, ai} a verdict was given by: its own thresholds, else the model's from /info,
 * else its single threshold (a service from before the inconclusive band), else 0.5.
 * @param {Object} verdict The /predict answer.
 * @param {Object|null} info What /info said (null when it has not answered).
 * @returns {{human: number, ai: number}} Equal edges for a single threshold.
 */
export function bandOf(verdict, info) {
  if (isBand(verdict.thresholds)) return { human: verdict.thresholds.human, ai: verdict.thresholds.ai };
  if (info && isBand(info.thresholds)) {
    return { human: info.thresholds.human, ai: info.thresholds.ai };
  }
  const single = Number.isFinite(verdict.threshold)
    ? verdict.threshold
    : info && Number.isFinite(info.threshold)
      ? info.threshold
      : 0.5;
  return { human: single, ai: single };
}

/**
 * The rule in words: "human below 40.0%, AI from 60.0%, inconclusive in between" (or the single
 * threshold); an edge no probability reaches is "never human" or "never AI".
 * @param {{human: number, ai: number}} band
 * @returns {string}
 */
export function bandText(band) {
  return sameValue(band.human, band.ai)
    ? `threshold ${formatPercent(band.ai)}`
    : `${humanEdgeText(band)}, ${aiEdgeText(band)}, inconclusive in between`;
}

/**
 * Whether the band's AI edge lies above every probability: the model never answers AI (its band
 * found no cut that kept false accusations within target).
 * @param {{human: number, ai: number}} band
 * @returns {boolean}
 */
export function neverAI(band) {
  return band.ai > 1;
}

/**
 * Whether the band's human edge is 0: the model never answers human.
 * @param {{human: number, ai: number}} band
 * @returns {boolean}
 */
export function neverHuman(band) {
  return band.human <= 0;
}

/** The band's lower edge in words: "human below 40.0%", or "never human". */
export function humanEdgeText(band) {
  return neverHuman(band) ? "never human" : `human below ${formatPercent(band.human)}`;
}

/** The band's upper edge in words: "AI from 60.0%", or "never AI". */
export function aiEdgeText(band) {
  return neverAI(band) ? "never AI" : `AI from ${formatPercent(band.ai)}`;
}
