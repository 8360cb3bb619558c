/* The result cards: one per file, newest first. A card shows the preview, then the verdict (its
 * words, P(AI), the band bar, the closest training family, the details, the service's notes and
 * the provenance panel) or the error, with the card's actions (explanation, annotated download,
 * "Is this verdict wrong?"). Each file gets its own /predict request, 4 at a time.
 */

import { $, announce, el, formatBytes, formatPercent } from "./dom.js";
import { API, ApiError, createLimiter, imageForm, postJson } from "./api.js";
import { currentInfo, firstInfoAttempt } from "./info.js";
import { limitError } from "./upload.js";
import { addToHistory, makeThumbnail } from "./history.js";
import { explainControls } from "./explain.js";
import { feedbackControls } from "./feedback.js";
import { provenancePanel } from "./provenance.js";
import {
  LABELS,
  VERDICT_ICON,
  aiEdgeText,
  bandOf,
  bandText,
  humanEdgeText,
  isDeclared,
  neverAI,
  neverHuman,
  verdictText,
} from "./verdict.js";

const CONCURRENCY = 4;
const FAMILY_CAPTION =
  "Which of the model's training families (human-made, or a generator family it was trained on) " +
  "the image most resembles. It is not a finding of which generator made it: an image from any " +
  "other generator resembles one of these families too.";

const limitPredict = createLimiter(CONCURRENCY);
let elements = null;
let cardCounter = 0;

function updateResultsChrome() {
  const count = elements.results.children.length;
  elements.resultsEmpty.hidden = count > 0;
  elements.resultsClear.hidden = count === 0;
}

function removeCard(card) {
  const url = card.dataset.objectUrl;
  if (url) URL.revokeObjectURL(url);
  card.remove();
  updateResultsChrome();
}

function setStatus(context, text, busy) {
  const { status } = context;
  status.replaceChildren();
  if (busy) status.append(el("span", { className: "spinner", "aria-hidden": "true" }));
  status.append(text);
  status.hidden = !text;
}

/**
 * Build the card of one file, put it first in the results and start its check.
 * @param {File} file
 */
export function addFile(file) {
  cardCounter += 1;
  const id = `card-${cardCounter}`;
  const name = file.name || "image";
  const objectUrl = URL.createObjectURL(file);

  const preview = el("img", { className: "preview-image", src: objectUrl, alt: `Preview of ${name}`, decoding: "async" });
  const previewBox = el("div", { className: "preview" }, preview);
  preview.addEventListener("error", () => {
    preview.hidden = true;
    previewBox.classList.add("no-preview");
    previewBox.append(el("p", { className: "preview-fallback", text: "No preview: this browser cannot display the file." }));
  });

  const title = el("h3", { className: "file-name", id: `${id}-title`, title: name, text: name });
  const meta = el("p", { className: "file-meta muted", text: `${formatBytes(file.size)}${file.type ? ` · ${file.type}` : ""}` });
  const status = el("p", { className: "card-status" }, el("span", { className: "spinner", "aria-hidden": "true" }), "Waiting…");
  const outcome = el("div", { className: "outcome" });
  const removeButton = el("button", {
    type: "button",
    className: "icon-button card-remove",
    "aria-label": `Remove the result of ${name}`,
    title: "Remove this result",
    text: "×",
  });

  const card = el(
    "article",
    {
      className: "result-card is-pending",
      id,
      "aria-labelledby": `${id}-title`,
      "aria-busy": "true",
      dataset: { filename: name, objectUrl, state: "pending" },
    },
    previewBox,
    el("div", { className: "card-body" }, el("div", { className: "card-title-row" }, title, removeButton), meta, status, outcome),
  );
  removeButton.addEventListener("click", () => {
    const next = card.nextElementSibling || card.previousElementSibling;
    removeCard(card);
    const focusTarget = next ? $(".card-remove", next) : elements.fileInput;
    if (focusTarget) focusTarget.focus();
  });

  const context = { id, file, name, card, preview, previewBox, status, outcome, meta, objectUrl, thumbnail: null, explain: null };
  context.thumbnail = makeThumbnail(objectUrl);
  elements.results.prepend(card);
  updateResultsChrome();
  checkFile(context);
}

async function checkFile(context) {
  const { file, name, card } = context;
  card.classList.add("is-pending");
  card.classList.remove("is-error", "is-done");
  card.dataset.state = "pending";
  card.setAttribute("aria-busy", "true");
  context.outcome.replaceChildren();
  setStatus(context, "Waiting…", true);

  // Wait for the first /info attempt so the size limit is known (the server checks anyway).
  const info = currentInfo() || (await firstInfoAttempt());
  const refused = limitError(file, info);
  if (refused) {
    showError(context, refused, { retry: false });
    return;
  }

  try {
    const verdict = await limitPredict(() => {
      if (!card.isConnected) return null; // removed while waiting
      setStatus(context, "Checking…", true);
      return postJson(API.predict, imageForm(file));
    });
    if (!card.isConnected || verdict === null) return;
    if (!verdict || !LABELS.includes(verdict.label) || !Number.isFinite(verdict.probability_ai)) {
      throw new ApiError("the service answered an unexpected verdict");
    }
    showVerdict(context, verdict);
    const thumbnail = await context.thumbnail;
    const warning = addToHistory({
      id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      filename: name,
      label: verdict.label,
      decided_by: typeof verdict.decided_by === "string" ? verdict.decided_by : null,
      verdict: verdictText(verdict),
      probability_ai: verdict.probability_ai,
      confidence: Number.isFinite(verdict.confidence) ? verdict.confidence : null,
      thresholds: bandOf(verdict, currentInfo()),
      threshold: verdict.threshold,
      summary: typeof verdict.summary === "string" ? verdict.summary : "",
      closest_family: typeof verdict.closest_family === "string" ? verdict.closest_family : null,
      closest_family_probability: Number.isFinite(verdict.closest_family_probability)
        ? verdict.closest_family_probability
        : null,
      model_name: verdict.model_name,
      model_version: verdict.model_version,
      time: new Date().toISOString(),
      thumbnail,
    });
    if (warning) announce(warning);
  } catch (error) {
    if (card.isConnected) showError(context, error, { retry: true });
  }
}

function showError(context, error, { retry }) {
  const { card, name, outcome } = context;
  card.classList.remove("is-pending", "is-done");
  card.classList.add("is-error");
  card.dataset.state = "error";
  card.setAttribute("aria-busy", "false");
  setStatus(context, "", false);
  const message = error && error.message ? error.message : "something went wrong";
  const status = error && error.status ? ` (HTTP ${error.status}${error.code ? `, ${error.code}` : ""})` : "";
  const box = el("div", { className: "error" }, el("strong", { text: "Could not check this file: " }), `${message}${status}`);
  outcome.replaceChildren(box);
  if (retry) {
    const button = el("button", { type: "button", className: "button small retry", text: "Try again" });
    button.addEventListener("click", () => checkFile(context));
    outcome.append(el("div", { className: "card-actions" }, button));
  }
  announce(`${name}: could not be checked. ${message}`);
}

function detailRow(term, value) {
  return [el("dt", { text: term }), el("dd", { text: value })];
}

/** "closest family: gan (61.2%)" with its caption, or null for a model without attribution. */
function closestFamily(verdict) {
  const name = verdict.closest_family;
  const probability = verdict.closest_family_probability;
  if (typeof name !== "string" || !name || !Number.isFinite(probability)) return null;
  return el(
    "div",
    { className: "closest-family", title: FAMILY_CAPTION },
    el(
      "p",
      { className: "closest-family-line" },
      "closest family: ",
      el("strong", { className: "closest-family-name", text: name }),
      ` (${formatPercent(probability)})`,
    ),
    el("p", { className: "closest-family-caption", text: "the training family it most resembles, not proof of which generator made it" }),
  );
}

/** The bar of P(AI), filled from the left, with the inconclusive band shaded between its edges; and its scale. */
function bandBar(probability, band) {
  const hasBand = band.ai > band.human;
  const percent = formatPercent(probability);
  const onBar = (value) => Math.min(1, Math.max(0, value));
  const position = (value) => `left: ${(onBar(value) * 100).toFixed(2)}%`;
  const edges = hasBand
    ? [
        ["human", band.human, neverHuman(band) ? "Never answered human-made" : `Below ${formatPercent(band.human)}: human-made`],
        ["ai", band.ai, neverAI(band) ? "Never answered AI-generated" : `From ${formatPercent(band.ai)}: AI-generated`],
      ]
    : [["single", band.ai, `Threshold ${formatPercent(band.ai)}`]];
  const meter = el(
    "div",
    {
      className: "meter",
      role: "meter",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": (probability * 100).toFixed(1),
      "aria-valuetext": `${percent} probability of being AI-generated; ${bandText(band)}`,
      "aria-label": "Probability AI-generated",
    },
    el("div", { className: "meter-fill", style: `width: ${(probability * 100).toFixed(2)}%` }),
    hasBand
      ? el("div", {
          className: "meter-band",
          style: `${position(band.human)}; width: ${((onBar(band.ai) - onBar(band.human)) * 100).toFixed(2)}%`,
          title: `Inconclusive from ${formatPercent(onBar(band.human))} to ${formatPercent(onBar(band.ai))}`,
        })
      : null,
    ...edges.map(([edge, value, title]) => el("div", { className: "meter-threshold", dataset: { edge }, style: position(value), title })),
  );
  const scale = el(
    "div",
    { className: "meter-scale", "aria-hidden": "true" },
    el("span", { text: "0% (camera)" }),
    ...(hasBand
      ? [
          el("span", { className: "meter-scale-threshold edge-human", style: position(band.human), text: neverHuman(band) ? "never human" : `human < ${formatPercent(band.human, 0)}` }),
          el("span", { className: "meter-scale-threshold edge-ai", style: position(band.ai), text: neverAI(band) ? "never AI" : `AI ≥ ${formatPercent(band.ai, 0)}` }),
        ]
      : [el("span", { className: "meter-scale-threshold", style: position(band.ai), text: `threshold ${formatPercent(band.ai, 0)}` })]),
    el("span", { text: "100% (AI)" }),
  );
  return [meter, scale];
}

/** The details list: thresholds, confidence, model, crops scored. */
function details(verdict, band) {
  const hasBand = band.ai > band.human;
  let confidenceText = null;
  if (verdict.label === "inconclusive") confidenceText = "none: the score lies in the inconclusive band";
  else if (isDeclared(verdict)) confidenceText = "none: the image's provenance decided, not a probability";
  else if (Number.isFinite(verdict.confidence)) {
    confidenceText = formatPercent(verdict.confidence) + (verdict.calibrated === false ? " (uncalibrated)" : "");
  }
  return el(
    "dl",
    { className: "details" },
    ...detailRow(
      hasBand ? "Thresholds" : "Threshold",
      hasBand ? `${humanEdgeText(band)} · ${aiEdgeText(band)}` : formatPercent(band.ai),
    ),
    ...(confidenceText ? detailRow("Confidence", confidenceText) : []),
    ...(typeof verdict.decided_by === "string"
      ? detailRow("Decided by", isDeclared(verdict) ? "the image's provenance (declared)" : "the pixels")
      : []),
    ...detailRow("Model", `${verdict.model_name || "?"} v${verdict.model_version ?? "?"}`),
    ...(Number.isFinite(verdict.tiles) ? detailRow("Crops scored", String(verdict.tiles)) : []),
  );
}

function showVerdict(context, verdict) {
  const { card, name, outcome, meta } = context;
  const band = bandOf(verdict, currentInfo());
  const probability = Math.min(1, Math.max(0, verdict.probability_ai));
  const label = verdict.label;
  card.classList.remove("is-pending", "is-error");
  card.classList.add("is-done", `label-${label}`);
  card.dataset.state = "done";
  card.dataset.label = label;
  if (typeof verdict.decided_by === "string") card.dataset.decidedBy = verdict.decided_by;
  card.setAttribute("aria-busy", "false");
  setStatus(context, "", false);

  if (verdict.width && verdict.height) {
    meta.textContent = `${formatBytes(context.file.size)} · ${verdict.format || "image"} · ${verdict.width}×${verdict.height} px`;
  }

  const words = verdictText(verdict);
  const percent = formatPercent(probability);
  const summary = typeof verdict.summary === "string" && verdict.summary ? el("p", { className: "summary", text: verdict.summary }) : null;
  const notes = Array.isArray(verdict.notes) ? verdict.notes.filter((n) => typeof n === "string" && n) : [];
  const notesList = notes.length
    ? el("ul", { className: "notes", "aria-label": "Notes" }, ...notes.map((note) => el("li", { text: note })))
    : null;
  const explain = explainControls(context);
  const feedback = feedbackControls(context, verdict);

  const parts = [
    el(
      "p",
      { className: `verdict verdict-${label}` },
      el("span", { className: "verdict-icon", "aria-hidden": "true", text: VERDICT_ICON[label] }),
      words,
    ),
    closestFamily(verdict),
    el(
      "p",
      { className: "probability-line" },
      el("span", { className: "probability", text: percent }),
      el("span", {
        className: "probability-label",
        text: isDeclared(verdict) ? " probability AI-generated, from the pixels alone" : " probability AI-generated",
      }),
    ),
    ...bandBar(probability, band),
    summary,
    details(verdict, band),
    notesList,
    provenancePanel(verdict, context.id),
    el("div", { className: "card-actions" }, ...explain.buttons, feedback && feedback.button),
    explain.legend,
    explain.message,
    feedback && feedback.form,
  ].filter(Boolean);
  outcome.replaceChildren(...parts);
  announce(`${name}: ${summary ? verdict.summary : `${words}, ${percent} probability AI-generated.`}`);
}

/**
 * Wire the results section ("Clear results") and remember its elements.
 * @param {{results: HTMLElement, resultsEmpty: HTMLElement, resultsClear: HTMLButtonElement,
 *          fileInput: HTMLElement}} els fileInput takes the focus when the last card goes.
 */
export function initResults(els) {
  elements = els;
  els.resultsClear.addEventListener("click", () => {
    for (const card of Array.from(els.results.children)) removeCard(card);
    els.fileInput.focus();
  });
  updateResultsChrome();
}
