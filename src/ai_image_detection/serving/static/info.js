/* The service's /info: the model and its limits, shown in the footer; a banner while the service is
 * not ready, retried with a growing delay (5 s doubling up to 60 s) and on "Retry now".
 */

import { API, ApiError, postJson } from "./api.js";
import { $, formatBytes, formatPercent } from "./dom.js";
import { bandText, isBand } from "./verdict.js";

/** What /info said (null until it answers). */
let serviceInfo = null;
/** Resolves (to the info or null) once the first /info attempt is over. */
let firstAttempt = Promise.resolve(null);

let elements = null;
let onInfo = () => {};
let retryTimer = 0;
let retryDelay = 5000;

/**
 * What /info said, or null while it has not answered.
 * @returns {Object|null}
 */
export function currentInfo() {
  return serviceInfo;
}

/**
 * The info once the first /info attempt is over: the info, or null if that attempt failed.
 * @returns {Promise<Object|null>}
 */
export function firstInfoAttempt() {
  return firstAttempt;
}

function setBanner(message) {
  const { status } = elements;
  if (!message) {
    status.hidden = true;
    status.classList.remove("is-visible");
    return;
  }
  $(".banner-text", status).textContent = message;
  status.hidden = false;
  status.classList.add("is-visible");
}

function showInfo(info) {
  const parts = [`Model: ${info.model_name ?? "unknown"} version ${info.model_version ?? "?"}`];
  if (isBand(info.thresholds)) parts.push(`P(AI): ${bandText(info.thresholds)}`);
  else if (Number.isFinite(info.threshold)) parts.push(`decision threshold ${formatPercent(info.threshold)} P(AI)`);
  if (info.calibration && typeof info.calibration.method === "string") {
    parts.push(`calibrated (${info.calibration.method})`);
  }
  if (Number.isFinite(info.input_size)) {
    const tiles = Number.isFinite(info.max_tiles) ? `, up to ${info.max_tiles} per image` : "";
    parts.push(`input ${info.input_size} px crops${tiles}`);
  }
  elements.modelInfo.textContent = `${parts.join(" · ")}.`;
}

async function loadInfo() {
  clearTimeout(retryTimer);
  try {
    const info = await postJson(API.info, "{}", { "Content-Type": "application/json" });
    if (!info || typeof info !== "object" || Array.isArray(info)) {
      throw new ApiError("unexpected answer from /info");
    }
    serviceInfo = info;
    onInfo(info);
    showInfo(info);
    setBanner("");
    retryDelay = 5000;
    return info;
  } catch (error) {
    setBanner(
      `Service not ready: ${error.message}${error.status ? ` (HTTP ${error.status})` : ""}. ` +
        `You can still try to check images; the page retries automatically.`,
    );
    elements.status.dataset.state = "not-ready";
    elements.modelInfo.textContent = "Model: unknown (service not ready).";
    retryTimer = setTimeout(loadInfo, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 60000);
    return null;
  }
}

/**
 * Ask /info now (and again until it answers), and wire the banner's "Retry now".
 * @param {{status: HTMLElement, modelInfo: HTMLElement}} els The banner and the footer's model line.
 * @param {function(Object): void} [whenInfo] Called with each successful answer (e.g. to show limits).
 */
export function initInfo(els, whenInfo = () => {}) {
  elements = els;
  onInfo = whenInfo;
  $(".banner-retry", els.status).addEventListener("click", () => {
    retryDelay = 5000;
    loadInfo();
  });
  firstAttempt = loadInfo();
}
