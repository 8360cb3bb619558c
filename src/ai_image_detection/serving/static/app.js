/* AI image detector: the web page of the service (served at /ui/).
 *
 * Plain ES2020, no build step, no network resources besides the service's own API:
 *   POST /info      JSON {}                        -> model and limits
 *   POST /predict   multipart field "image"        -> verdict JSON: label "human" | "inconclusive" | "ai",
 *                                                     probability_ai, thresholds {human, ai}, confidence
 *                                                     (null when inconclusive), summary, notes,
 *                                                     closest_family + closest_family_probability
 *                                                     (null for a model without attribution)
 *   POST /explain   multipart field "image"        -> verdict + heatmap_png data URL
 *   POST /annotate  multipart field "image"        -> image/jpeg with the verdict drawn on it
 * Each selected file gets its own result card and its own /predict request (4 at a time).
 * Past checks are kept in localStorage ("aiid.history.v1", at most 200 entries).
 */
"use strict";

(() => {
  const API = { info: "/info", predict: "/predict", explain: "/explain", annotate: "/annotate" };
  const HISTORY_KEY = "aiid.history.v1";
  const HISTORY_MAX = 200;
  const CONCURRENCY = 4;
  const REQUEST_TIMEOUT_MS = 120000;
  const THUMB_MAX_SIDE = 96;
  const LABELS = ["human", "inconclusive", "ai"];
  const VERDICT_TEXT = {
    ai: "Likely AI-generated",
    human: "Likely human-made (camera)",
    inconclusive: "Inconclusive",
  };
  const VERDICT_ICON = { ai: "⚠", human: "✓", inconclusive: "?" };
  const FAMILY_CAPTION =
    "Which of the model's training families (human-made, or a generator family it was trained on) " +
    "the image most resembles. It is not a finding of which generator made it: an image from any " +
    "other generator resembles one of these families too.";

  const $ = (selector, root = document) => root.querySelector(selector);

  const els = {
    fileInput: $("#file-input"),
    dropZone: $("#drop-zone"),
    dropLimits: $("#drop-limits"),
    results: $("#results"),
    resultsEmpty: $("#results-empty"),
    resultsClear: $("#results-clear"),
    history: $("#history"),
    historyEmpty: $("#history-empty"),
    historyMessage: $("#history-message"),
    historyClear: $("#history-clear"),
    historyExport: $("#history-export"),
    status: $("#service-status"),
    modelInfo: $("#model-info"),
    announcer: $("#announcer"),
  };

  /** What /info said (null until it answers). */
  let serviceInfo = null;
  /** Resolves (to the info or null) once the first /info attempt is over. */
  let firstInfoAttempt = null;

  // ---------------------------------------------------------------- small helpers

  /** Create an element: el("p", {className: "x", text: "hi"}, child, ...). */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function formatPercent(probability, digits = 1) {
    return `${(probability * 100).toFixed(digits)}%`;
  }

  function formatBytes(bytes) {
    if (!Number.isFinite(bytes)) return "?";
    if (bytes < 1000) return `${bytes} B`;
    if (bytes < 1e6) return `${(bytes / 1e3).toFixed(bytes < 1e4 ? 1 : 0)} kB`;
    return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function sameValue(a, b) {
    return Math.abs(a - b) < 1e-9;
  }

  function isBand(thresholds) {
    return !!thresholds && Number.isFinite(thresholds.human) && Number.isFinite(thresholds.ai);
  }

  /** The band {human, ai} a verdict was given by: its own thresholds, else the model's from /info,
   *  else its single threshold (a service from before the inconclusive band). */
  function bandOf(verdict) {
    if (isBand(verdict.thresholds)) return { human: verdict.thresholds.human, ai: verdict.thresholds.ai };
    if (serviceInfo && isBand(serviceInfo.thresholds)) {
      return { human: serviceInfo.thresholds.human, ai: serviceInfo.thresholds.ai };
    }
    const single = Number.isFinite(verdict.threshold)
      ? verdict.threshold
      : serviceInfo && Number.isFinite(serviceInfo.threshold)
        ? serviceInfo.threshold
        : 0.5;
    return { human: single, ai: single };
  }

  /** The rule in words: "human below 40.0%, AI from 60.0%" (or the single threshold). */
  function bandText(band) {
    return sameValue(band.human, band.ai)
      ? `threshold ${formatPercent(band.ai)}`
      : `human below ${formatPercent(band.human)}, AI from ${formatPercent(band.ai)}, inconclusive in between`;
  }

  /** Tell screen-reader users something, politely. */
  let announceTimer = 0;
  function announce(message) {
    els.announcer.textContent = "";
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => {
      els.announcer.textContent = message;
    }, 60);
  }

  /** Save a Blob as a file through a temporary blob URL. */
  function saveBlob(blob, filename) {
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  }

  /** A limiter: run at most `limit` of the given async functions at a time. */
  function createLimiter(limit) {
    let active = 0;
    const queue = [];
    const next = () => {
      if (active >= limit || queue.length === 0) return;
      active += 1;
      const { task, resolve, reject } = queue.shift();
      Promise.resolve()
        .then(task)
        .then(resolve, reject)
        .finally(() => {
          active -= 1;
          next();
        });
    };
    return (task) =>
      new Promise((resolve, reject) => {
        queue.push({ task, resolve, reject });
        next();
      });
  }
  const limitPredict = createLimiter(CONCURRENCY);

  // ---------------------------------------------------------------- API calls

  class ApiError extends Error {
    constructor(message, { status = 0, code = "" } = {}) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.code = code;
    }
  }

  /** The message of an error body, whichever of the shapes the service answers:
   *  {"error": {"code", "message"}} (the service's own), {"error": "...", "detail": [...]}
   *  (framework validation) or [{"error": "..."}]. */
  function messageFromBody(body) {
    if (body === null || body === undefined) return { message: "", code: "" };
    if (typeof body === "string") return { message: body, code: "" };
    if (Array.isArray(body)) {
      for (const item of body) {
        const found = messageFromBody(item);
        if (found.message) return found;
      }
      return { message: "", code: "" };
    }
    if (typeof body !== "object") return { message: String(body), code: "" };
    let message = "";
    let code = "";
    const { error } = body;
    if (error && typeof error === "object") {
      message = typeof error.message === "string" ? error.message : "";
      code = typeof error.code === "string" ? error.code : "";
    } else if (typeof error === "string") {
      message = error;
    }
    if (!message && typeof body.message === "string") message = body.message;
    const details = Array.isArray(body.detail) ? body.detail : body.detail ? [body.detail] : [];
    const detailText = details
      .map((item) => {
        if (typeof item === "string") return item;
        if (item && typeof item === "object") {
          const where = Array.isArray(item.loc) ? item.loc.join(".") : "";
          const what = item.msg || item.message || "";
          return what ? (where ? `${where}: ${what}` : what) : "";
        }
        return "";
      })
      .filter(Boolean)
      .join("; ");
    if (detailText && !message.includes(detailText)) {
      message = message ? `${message} (${detailText})` : detailText;
    }
    return { message, code };
  }

  async function errorFromResponse(response) {
    let text = "";
    try {
      text = await response.text();
    } catch (_) {
      /* the body could not be read: keep the status */
    }
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    let { message, code } = messageFromBody(body);
    if (!message) {
      const plain = text && !/^\s*</.test(text) && text.length <= 300 ? text.trim() : "";
      const hints = {
        404: "the endpoint was not found (is this page served by the detector service?)",
        413: "the file is too large for the service",
        415: "the service does not accept this kind of file",
        429: "too many requests; retry shortly",
        500: "the service failed unexpectedly",
        502: "the service is unreachable behind its proxy",
        503: "the service is not ready or at capacity; retry shortly",
        504: "the service took too long to answer",
      };
      message = plain || hints[response.status] || `the request failed (${response.statusText || "error"})`;
    }
    return new ApiError(message, { status: response.status, code });
  }

  /** POST and return the Response when it is OK; an ApiError otherwise (also for network failures). */
  async function post(path, body, headers = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        body,
        headers: { Accept: "application/json, image/jpeg;q=0.9, */*;q=0.5", ...headers },
        signal: controller.signal,
        cache: "no-store",
      });
    } catch (error) {
      clearTimeout(timer);
      if (error && error.name === "AbortError") {
        throw new ApiError(`no answer from the service within ${REQUEST_TIMEOUT_MS / 1000} s; try again`);
      }
      throw new ApiError("could not reach the service (network error); check that it is running and try again");
    }
    clearTimeout(timer);
    if (!response.ok) throw await errorFromResponse(response);
    return response;
  }

  async function postJson(path, body, headers) {
    const response = await post(path, body, headers);
    try {
      return await response.json();
    } catch (_) {
      throw new ApiError("the service answered something that is not JSON", { status: response.status });
    }
  }

  function imageForm(file) {
    const form = new FormData();
    form.append("image", file, file.name || "image");
    return form;
  }

  // ---------------------------------------------------------------- service info

  function setBanner(message) {
    if (!message) {
      els.status.hidden = true;
      els.status.classList.remove("is-visible");
      return;
    }
    $(".banner-text", els.status).textContent = message;
    els.status.hidden = false;
    els.status.classList.add("is-visible");
  }

  function showInfo(info) {
    const formats = Array.isArray(info.formats) ? info.formats.filter((f) => typeof f === "string") : [];
    const limitParts = [];
    if (formats.length) limitParts.push(`Accepted formats: ${formats.join(", ")}`);
    if (Number.isFinite(info.max_bytes)) limitParts.push(`up to ${formatBytes(info.max_bytes)} per image`);
    els.dropLimits.textContent = limitParts.length
      ? `${limitParts.join(", ")}. Several files at once are fine; each is checked on its own.`
      : "Several files at once are fine; each is checked on its own.";
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
    els.modelInfo.textContent = `${parts.join(" · ")}.`;
  }

  let infoRetryTimer = 0;
  let infoRetryDelay = 5000;

  async function loadInfo() {
    clearTimeout(infoRetryTimer);
    try {
      const info = await postJson(API.info, "{}", { "Content-Type": "application/json" });
      if (!info || typeof info !== "object" || Array.isArray(info)) {
        throw new ApiError("unexpected answer from /info");
      }
      serviceInfo = info;
      showInfo(info);
      setBanner("");
      infoRetryDelay = 5000;
      return info;
    } catch (error) {
      setBanner(
        `Service not ready: ${error.message}${error.status ? ` (HTTP ${error.status})` : ""}. ` +
          `You can still try to check images; the page retries automatically.`,
      );
      els.status.dataset.state = "not-ready";
      els.modelInfo.textContent = "Model: unknown (service not ready).";
      infoRetryTimer = setTimeout(loadInfo, infoRetryDelay);
      infoRetryDelay = Math.min(infoRetryDelay * 2, 60000);
      return null;
    }
  }

  $(".banner-retry", els.status).addEventListener("click", () => {
    infoRetryDelay = 5000;
    loadInfo();
  });

  // ---------------------------------------------------------------- thumbnails

  /** A small JPEG data URL of the image (max 96 px side), or null if the browser cannot decode it. */
  function makeThumbnail(objectUrl) {
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

  // ---------------------------------------------------------------- history (localStorage)

  let storageWarning = "";
  let memoryHistory = []; // used when localStorage is unavailable

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
    els.historyMessage.textContent = storageWarning;
    els.historyMessage.hidden = !storageWarning;
  }

  function renderHistory() {
    const entries = loadHistory();
    els.history.replaceChildren(...entries.map(historyItem));
    els.historyEmpty.hidden = entries.length > 0;
    els.historyClear.disabled = entries.length === 0;
    els.historyExport.disabled = entries.length === 0;
    showHistoryMessage();
  }

  function historyItem(entry) {
    const verdict = VERDICT_TEXT[entry.label];
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
    remove.addEventListener("click", () => {
      const remaining = loadHistory().filter((item) => item.id !== entry.id);
      storageWarning = "";
      saveHistory(remaining);
      const index = Array.from(els.history.children).findIndex((li) => li.dataset.id === entry.id);
      renderHistory();
      // Keep keyboard focus in the list after the item is gone.
      const items = els.history.querySelectorAll("button.history-delete");
      const target = items[Math.min(index, items.length - 1)] || els.historyExport;
      if (target && !target.disabled) target.focus();
      else els.fileInput.focus();
      announce(`Deleted ${entry.filename} from the history.`);
    });
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
          el("span", { className: `history-verdict verdict-${entry.label}`, text: verdict }),
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

  function addToHistory(entry) {
    storageWarning = "";
    const entries = [entry, ...loadHistory().filter((item) => item.id !== entry.id)];
    saveHistory(entries);
    renderHistory();
  }

  els.historyClear.addEventListener("click", () => {
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
  });

  els.historyExport.addEventListener("click", () => {
    const entries = loadHistory();
    const blob = new Blob([JSON.stringify(entries, null, 2)], { type: "application/json" });
    saveBlob(blob, "ai-image-detector-history.json");
    announce(`Exported ${entries.length} histor${entries.length === 1 ? "y entry" : "y entries"}.`);
  });

  window.addEventListener("storage", (event) => {
    if (event.key === HISTORY_KEY || event.key === null) renderHistory();
  });

  // ---------------------------------------------------------------- result cards

  let cardCounter = 0;

  function updateResultsChrome() {
    const count = els.results.children.length;
    els.resultsEmpty.hidden = count > 0;
    els.resultsClear.hidden = count === 0;
  }

  function removeCard(card) {
    const url = card.dataset.objectUrl;
    if (url) URL.revokeObjectURL(url);
    card.remove();
    updateResultsChrome();
  }

  els.resultsClear.addEventListener("click", () => {
    for (const card of Array.from(els.results.children)) removeCard(card);
    els.fileInput.focus();
  });

  /** Build the card of one file and start its check. */
  function addFile(file) {
    cardCounter += 1;
    const id = `card-${cardCounter}`;
    const name = file.name || "image";
    const objectUrl = URL.createObjectURL(file);

    const preview = el("img", {
      className: "preview-image",
      src: objectUrl,
      alt: `Preview of ${name}`,
      decoding: "async",
    });
    const previewBox = el("div", { className: "preview" }, preview);
    preview.addEventListener("error", () => {
      preview.hidden = true;
      previewBox.classList.add("no-preview");
      previewBox.append(
        el("p", { className: "preview-fallback", text: "No preview: this browser cannot display the file." }),
      );
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
      const focusTarget = next ? $(".card-remove", next) : els.fileInput;
      if (focusTarget) focusTarget.focus();
    });

    const context = { file, name, card, preview, previewBox, status, outcome, meta, objectUrl, thumbnail: null, explain: null };
    context.thumbnail = makeThumbnail(objectUrl);
    els.results.prepend(card);
    updateResultsChrome();
    checkFile(context);
  }

  function setStatus(context, text, busy) {
    const { status } = context;
    status.replaceChildren();
    if (busy) status.append(el("span", { className: "spinner", "aria-hidden": "true" }));
    status.append(text);
    status.hidden = !text;
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
    const info = serviceInfo || (await firstInfoAttempt);
    const maxBytes = info && Number.isFinite(info.max_bytes) ? info.max_bytes : null;
    if (file.size === 0) {
      showError(context, new ApiError("the file is empty (0 bytes)"), { retry: false });
      return;
    }
    if (maxBytes !== null && file.size > maxBytes) {
      showError(
        context,
        new ApiError(`the file has ${formatBytes(file.size)}; the limit is ${formatBytes(maxBytes)} per image. It was not uploaded.`),
        { retry: false },
      );
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
      addToHistory({
        id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
        filename: name,
        label: verdict.label,
        verdict: VERDICT_TEXT[verdict.label],
        probability_ai: verdict.probability_ai,
        confidence: Number.isFinite(verdict.confidence) ? verdict.confidence : null,
        thresholds: bandOf(verdict),
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
      if (storageWarning) announce(storageWarning);
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
    const box = el(
      "div",
      { className: "error" },
      el("strong", { text: "Could not check this file: " }),
      `${message}${status}`,
    );
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

  function showVerdict(context, verdict) {
    const { card, name, outcome, meta } = context;
    const band = bandOf(verdict);
    const hasBand = band.ai > band.human;
    const probability = Math.min(1, Math.max(0, verdict.probability_ai));
    const label = verdict.label;
    card.classList.remove("is-pending", "is-error");
    card.classList.add("is-done", `label-${label}`);
    card.dataset.state = "done";
    card.dataset.label = label;
    card.setAttribute("aria-busy", "false");
    setStatus(context, "", false);

    if (verdict.width && verdict.height) {
      meta.textContent = `${formatBytes(context.file.size)} · ${verdict.format || "image"} · ${verdict.width}×${verdict.height} px`;
    }

    const verdictText = VERDICT_TEXT[label];
    const percent = formatPercent(probability);
    const position = (value) => `left: ${(value * 100).toFixed(2)}%`;
    // The bar: P(AI) filled from the left; the inconclusive band shaded between its two edges.
    const edges = hasBand
      ? [
          ["human", band.human, `Below ${formatPercent(band.human)}: human-made`],
          ["ai", band.ai, `From ${formatPercent(band.ai)}: AI-generated`],
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
            style: `${position(band.human)}; width: ${((band.ai - band.human) * 100).toFixed(2)}%`,
            title: `Inconclusive from ${formatPercent(band.human)} to ${formatPercent(band.ai)}`,
          })
        : null,
      ...edges.map(([edge, value, title]) =>
        el("div", { className: "meter-threshold", dataset: { edge }, style: position(value), title }),
      ),
    );
    const scale = el(
      "div",
      { className: "meter-scale", "aria-hidden": "true" },
      el("span", { text: "0% (camera)" }),
      ...(hasBand
        ? [
            el("span", { className: "meter-scale-threshold edge-human", style: position(band.human), text: `human < ${formatPercent(band.human, 0)}` }),
            el("span", { className: "meter-scale-threshold edge-ai", style: position(band.ai), text: `AI ≥ ${formatPercent(band.ai, 0)}` }),
          ]
        : [el("span", { className: "meter-scale-threshold", style: position(band.ai), text: `threshold ${formatPercent(band.ai, 0)}` })]),
      el("span", { text: "100% (AI)" }),
    );

    let confidenceText = null;
    if (label === "inconclusive") confidenceText = "none: the score lies in the inconclusive band";
    else if (Number.isFinite(verdict.confidence)) {
      confidenceText = formatPercent(verdict.confidence) + (verdict.calibrated === false ? " (uncalibrated)" : "");
    }
    const details = el(
      "dl",
      { className: "details" },
      ...detailRow(hasBand ? "Thresholds" : "Threshold", hasBand ? `human below ${formatPercent(band.human)} · AI from ${formatPercent(band.ai)}` : formatPercent(band.ai)),
      ...(confidenceText ? detailRow("Confidence", confidenceText) : []),
      ...detailRow("Model", `${verdict.model_name || "?"} v${verdict.model_version ?? "?"}`),
      ...(Number.isFinite(verdict.tiles) ? detailRow("Crops scored", String(verdict.tiles)) : []),
    );
    const summary = typeof verdict.summary === "string" && verdict.summary
      ? el("p", { className: "summary", text: verdict.summary })
      : null;

    const notes = Array.isArray(verdict.notes) ? verdict.notes.filter((n) => typeof n === "string" && n) : [];
    const notesList = notes.length
      ? el("ul", { className: "notes", "aria-label": "Notes" }, ...notes.map((note) => el("li", { text: note })))
      : null;

    const explainButton = el("button", {
      type: "button",
      className: "button small explain-toggle",
      "aria-pressed": "false",
      text: "Show explanation",
    });
    const downloadButton = el("button", {
      type: "button",
      className: "button small download-annotated",
      text: "Download annotated image",
    });
    const actionMessage = el("p", { className: "action-error", role: "alert", hidden: true });
    const legend = el(
      "div",
      { className: "legend", hidden: true },
      el("span", { className: "legend-swatch", "aria-hidden": "true" }),
      el("span", { className: "legend-text", text: "Red = regions that push towards AI; blue = towards human-made." }),
    );

    const parts = [
      el(
        "p",
        { className: `verdict verdict-${label}` },
        el("span", { className: "verdict-icon", "aria-hidden": "true", text: VERDICT_ICON[label] }),
        verdictText,
      ),
      closestFamily(verdict),
      el(
        "p",
        { className: "probability-line" },
        el("span", { className: "probability", text: percent }),
        el("span", { className: "probability-label", text: " probability AI-generated" }),
      ),
      meter,
      scale,
      summary,
      details,
      notesList,
      el("div", { className: "card-actions" }, explainButton, downloadButton),
      legend,
      actionMessage,
    ].filter(Boolean);
    outcome.replaceChildren(...parts);

    explainButton.addEventListener("click", () => toggleExplanation(context, explainButton, legend, actionMessage));
    downloadButton.addEventListener("click", () => downloadAnnotated(context, downloadButton, actionMessage));
    announce(`${name}: ${typeof verdict.summary === "string" && verdict.summary ? verdict.summary : `${verdictText}, ${percent} probability AI-generated.`}`);
  }

  function showActionError(messageEl, text) {
    messageEl.textContent = text;
    messageEl.hidden = !text;
  }

  async function toggleExplanation(context, button, legend, messageEl) {
    const { previewBox, name } = context;
    const shown = button.getAttribute("aria-pressed") === "true";
    if (shown) {
      const overlay = $(".heatmap-overlay", previewBox);
      if (overlay) overlay.hidden = true;
      legend.hidden = true;
      button.setAttribute("aria-pressed", "false");
      button.textContent = "Show explanation";
      return;
    }
    showActionError(messageEl, "");
    if (!context.explain) {
      context.explain = postJson(API.explain, imageForm(context.file)).then((answer) => {
        if (!answer || typeof answer.heatmap_png !== "string" || !answer.heatmap_png.startsWith("data:image/")) {
          throw new ApiError("the service answered no heatmap");
        }
        return answer;
      });
      context.explain.catch(() => {
        context.explain = null; // do not cache failures: the next click tries again
      });
    }
    button.disabled = true;
    button.textContent = "Loading explanation…";
    previewBox.classList.add("is-loading");
    try {
      const answer = await context.explain;
      let overlay = $(".heatmap-overlay", previewBox);
      if (!overlay) {
        overlay = el("img", {
          className: "heatmap-overlay",
          alt: `Explanation heatmap for ${name}: red regions push towards AI-generated, blue towards human-made`,
          src: answer.heatmap_png,
        });
        previewBox.append(overlay);
      }
      overlay.hidden = false;
      $(".legend-text", legend).textContent = answer.method === "occlusion"
        ? "Red = regions whose hiding lowers P(AI) (they push towards AI); blue = towards human-made. " +
          "Each region was hidden in turn; a faint map means no region matters much."
        : "Red = regions that push towards AI; blue = towards human-made. Each region was scored on its own.";
      legend.hidden = false;
      button.setAttribute("aria-pressed", "true");
      button.textContent = "Hide explanation";
      announce(`Explanation shown for ${name}.`);
    } catch (error) {
      button.textContent = "Show explanation";
      showActionError(messageEl, `Could not load the explanation: ${error.message}${error.status ? ` (HTTP ${error.status})` : ""}`);
    } finally {
      button.disabled = false;
      previewBox.classList.remove("is-loading");
    }
  }

  async function downloadAnnotated(context, button, messageEl) {
    showActionError(messageEl, "");
    const label = button.textContent;
    button.disabled = true;
    button.textContent = "Preparing download…";
    try {
      const response = await post(API.annotate, imageForm(context.file), { Accept: "image/jpeg" });
      const blob = await response.blob();
      if (!blob.size) throw new ApiError("the service answered an empty image");
      saveBlob(blob.type ? blob : new Blob([blob], { type: "image/jpeg" }), `${context.name}.verdict.jpg`);
      announce(`Downloaded the annotated image of ${context.name}.`);
    } catch (error) {
      showActionError(messageEl, `Could not make the annotated image: ${error.message}${error.status ? ` (HTTP ${error.status})` : ""}`);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    announce(`Checking ${files.length} file${files.length === 1 ? "" : "s"}…`);
    for (const file of files) addFile(file);
  }

  // ---------------------------------------------------------------- upload: picker, drop, paste

  els.fileInput.addEventListener("change", () => {
    addFiles(els.fileInput.files);
    els.fileInput.value = ""; // choosing the same file again fires "change" again
  });

  // Like a native button: Enter opens the picker on keydown, Space on keyup.
  const isSpace = (event) => event.key === " " || event.key === "Spacebar";
  els.dropZone.addEventListener("keydown", (event) => {
    if (event.target !== els.dropZone) return; // the inner controls handle their own keys
    if (event.key === "Enter" && !event.repeat) {
      event.preventDefault();
      els.fileInput.click();
    } else if (isSpace(event)) {
      event.preventDefault(); // no page scroll
    }
  });
  els.dropZone.addEventListener("keyup", (event) => {
    if (event.target !== els.dropZone || !isSpace(event)) return;
    event.preventDefault();
    els.fileInput.click();
  });

  els.dropZone.addEventListener("click", (event) => {
    // A click on the zone's empty space opens the picker too (the label and input do it themselves).
    if (event.target.closest("label, input, button, a")) return;
    els.fileInput.click();
  });

  const hasFiles = (event) =>
    !!event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  let dragDepth = 0;

  // The whole page accepts dropped files (so a near miss does not open the file in the tab);
  // the drop zone lights up while files are dragged over the window.
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    els.dropZone.classList.add("is-dragover");
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) els.dropZone.classList.remove("is-dragover");
  });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer) return;
    event.preventDefault();
    dragDepth = 0;
    els.dropZone.classList.remove("is-dragover");
    addFiles(event.dataTransfer.files);
  });

  document.addEventListener("paste", (event) => {
    const target = event.target;
    if (target && (target.isContentEditable || (/^(input|textarea)$/i.test(target.tagName) && target.type !== "file"))) return;
    const files = event.clipboardData ? Array.from(event.clipboardData.files || []) : [];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });

  // ---------------------------------------------------------------- start

  renderHistory();
  updateResultsChrome();
  firstInfoAttempt = loadInfo();
})();
