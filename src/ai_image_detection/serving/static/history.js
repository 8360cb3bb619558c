/* Past checks, kept only in this browser: localStorage "aiid.history.v1", newest first, at most 200
 * entries (the oldest dropped when storage is full; kept in memory when storage is unavailable);
 * each with a small JPEG thumbnail. Delete one, clear all, export as JSON.
 */

import { announce, el, formatPercent, formatTime, saveBlob } from "./dom.js";
import { LABELS, verdictText } from "./verdict.js";

const HISTORY_KEY = "aiid.history.v1";
const HISTORY_MAX = 200;
const THUMB_MAX_SIDE = 96;

let elements = null;
let storageWarning = "";
let memoryHistory = []; // used when localStorage is unavailable

/**
 * A small JPEG data URL of the image (max 96 px side, flattened on white), or null if the browser
 * cannot decode it.
 * @param {string} objectUrl A blob URL of the image.
 * @returns {Promise<string|null>}
 */
export function makeThumbnail(objectUrl) {
  return new Promise((resolve) => {
    const image = new Image();
    image.onload = () => {
      try {
        const scale = Math.min(1, THUMB_MAX_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
        const width = Math.max(1, Math.round(image.naturalWidth * scale));
        const height = Math.max(1, Math.round(image.naturalHeight * scale));
        const canvas = document.createElement("canvas");
        canvas.width = width;
        canvas.height = height;
        const context = canvas.getContext("2d");
        context.fillStyle = "#ffffff"; // JPEG has no alpha: flatten on white
        context.fillRect(0, 0, width, height);
        context.imageSmoothingQuality = "high";
        context.drawImage(image, 0, 0, width, height);
        resolve(canvas.toDataURL("image/jpeg", 0.7));
      } catch (_) {
        resolve(null);
      }
    };
    image.onerror = () => resolve(null);
    image.src = objectUrl;
  });
}

function storage() {
  try {
    return window.localStorage;
  } catch (_) {
    return null;
  }
}

function isValidEntry(entry) {
  return (
    entry &&
    typeof entry === "object" &&
    typeof entry.filename === "string" &&
    LABELS.includes(entry.label) &&
    Number.isFinite(entry.probability_ai)
  );
}

function loadHistory() {
  const store = storage();
  if (!store) {
    storageWarning = "This browser does not allow local storage here: the history is kept only until you leave the page.";
    return memoryHistory.slice();
  }
  let raw = null;
  try {
    raw = store.getItem(HISTORY_KEY);
  } catch (_) {
    storageWarning = "Local storage is unavailable: the history is kept only until you leave the page.";
    return memoryHistory.slice();
  }
  if (!raw) return [];
  try {
    const parsed = JSON.parse(raw);
    return Array.isArray(parsed) ? parsed.filter(isValidEntry).slice(0, HISTORY_MAX) : [];
  } catch (_) {
    storageWarning = "The stored history was unreadable and has been ignored.";
    return [];
  }
}

function isQuotaError(error) {
  return (
    error instanceof DOMException &&
    (error.name === "QuotaExceededError" || error.name === "NS_ERROR_DOM_QUOTA_REACHED" || error.code === 22)
  );
}

/** Store the history (newest first). Returns what could be stored; drops the oldest entries if full. */
function saveHistory(entries) {
  let kept = entries.slice(0, HISTORY_MAX);
  memoryHistory = kept.slice();
  const store = storage();
  if (!store) {
    storageWarning = "This browser does not allow local storage here: the history is kept only until you leave the page.";
    return kept;
  }
  for (;;) {
    try {
      if (kept.length === 0) store.removeItem(HISTORY_KEY);
      else store.setItem(HISTORY_KEY, JSON.stringify(kept));
      if (kept.length < Math.min(entries.length, HISTORY_MAX)) {
        const dropped = Math.min(entries.length, HISTORY_MAX) - kept.length;
        storageWarning = `Browser storage is full: the ${dropped} oldest histor${dropped === 1 ? "y entry was" : "y entries were"} removed.`;
      }
      return kept;
    } catch (error) {
      if (isQuotaError(error) && kept.length > 1) {
        kept = kept.slice(0, Math.max(1, Math.floor(kept.length * 0.75)));
        continue;
      }
      storageWarning = isQuotaError(error)
        ? "Browser storage is full: this check could not be saved to the history."
        : `The history could not be saved (${error && error.message ? error.message : "storage unavailable"}).`;
      return entries.slice(0, HISTORY_MAX);
    }
  }
}

function showHistoryMessage() {
  elements.historyMessage.textContent = storageWarning;
  elements.historyMessage.hidden = !storageWarning;
}

function renderHistory() {
  const entries = loadHistory();
  elements.history.replaceChildren(...entries.map(historyItem));
  elements.historyEmpty.hidden = entries.length > 0;
  elements.historyClear.disabled = entries.length === 0;
  elements.historyExport.disabled = entries.length === 0;
  showHistoryMessage();
}

function deleteEntry(entry) {
  const remaining = loadHistory().filter((item) => item.id !== entry.id);
  storageWarning = "";
  saveHistory(remaining);
  const index = Array.from(elements.history.children).findIndex((li) => li.dataset.id === entry.id);
  renderHistory();
  // Keep keyboard focus in the list after the item is gone.
  const items = elements.history.querySelectorAll("button.history-delete");
  const target = items[Math.min(index, items.length - 1)] || elements.historyExport;
  if (target && !target.disabled) target.focus();
  else elements.fileInput.focus();
  announce(`Deleted ${entry.filename} from the history.`);
}

function historyItem(entry) {
  const thumb =
    typeof entry.thumbnail === "string" && entry.thumbnail.startsWith("data:image/")
      ? el("img", {
          className: "history-thumb",
          src: entry.thumbnail,
          alt: `Thumbnail of ${entry.filename}`,
          width: 48,
          height: 48,
          loading: "lazy",
        })
      : el("span", { className: "history-thumb placeholder", role: "img", "aria-label": "No thumbnail" }, "?");
  const remove = el("button", {
    type: "button",
    className: "button small ghost history-delete",
    "aria-label": `Delete ${entry.filename} from the history`,
    title: "Delete from history",
    text: "Delete",
  });
  remove.addEventListener("click", () => deleteEntry(entry));
  return el(
    "li",
    { className: "history-item", dataset: { filename: entry.filename, id: entry.id, label: entry.label } },
    thumb,
    el(
      "div",
      { className: "history-body" },
      el("p", { className: "history-name", title: entry.filename, text: entry.filename }),
      el(
        "p",
        { className: "history-meta" },
        el("span", { className: `history-verdict verdict-${entry.label}`, text: verdictText(entry) }),
        " · ",
        el("span", { className: "history-probability", text: `${formatPercent(entry.probability_ai)} P(AI)` }),
      ),
      el(
        "p",
        { className: "history-meta muted" },
        el("time", { dateTime: entry.time, text: formatTime(entry.time) }),
        entry.model_version ? ` · model ${entry.model_version}` : "",
      ),
    ),
    remove,
  );
}

/**
 * Add a check at the top of the history (replacing an entry with the same id) and show the list.
 * @param {Object} entry {id, filename, label, probability_ai, time, thumbnail, ...} (see result-card.js).
 * @returns {string} A warning about storage for people ("" when all went well).
 */
export function addToHistory(entry) {
  storageWarning = "";
  const entries = [entry, ...loadHistory().filter((item) => item.id !== entry.id)];
  saveHistory(entries);
  renderHistory();
  return storageWarning;
}

function clearAll() {
  if (!window.confirm("Delete all past checks from this browser's history?")) return;
  storageWarning = "";
  memoryHistory = [];
  const store = storage();
  try {
    if (store) store.removeItem(HISTORY_KEY);
  } catch (_) {
    storageWarning = "Local storage is unavailable.";
  }
  renderHistory();
  announce("History cleared.");
}

function exportAll() {
  const entries = loadHistory();
  const blob = new Blob([JSON.stringify(entries, null, 2)], { type: "application/json" });
  saveBlob(blob, "ai-image-detector-history.json");
  announce(`Exported ${entries.length} histor${entries.length === 1 ? "y entry" : "y entries"}.`);
}

/**
 * Show the stored history and wire its buttons (and other tabs' changes to it).
 * @param {{history: HTMLElement, historyEmpty: HTMLElement, historyMessage: HTMLElement,
 *          historyClear: HTMLButtonElement, historyExport: HTMLButtonElement,
 *          fileInput: HTMLElement}} els The history section's elements; fileInput takes the focus
 *          when the list is left empty.
 */
export function initHistory(els) {
  elements = els;
  els.historyClear.addEventListener("click", clearAll);
  els.historyExport.addEventListener("click", exportAll);
  window.addEventListener("storage", (event) => {
    if (event.key === HISTORY_KEY || event.key === null) renderHistory();
  });
  renderHistory();
}
