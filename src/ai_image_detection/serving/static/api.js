/* The service's HTTP API: fetch wrappers, the error shape, and a concurrency limiter.
 *
 *   POST /info      JSON {}                        -> model and limits
 *   POST /predict   multipart field "image"        -> verdict JSON: label "human" | "inconclusive" | "ai",
 *                                                     probability_ai, thresholds {human, ai}, confidence
 *                                                     (null when inconclusive or declared), summary,
 *                                                     notes, closest_family + closest_family_probability
 *                                                     (null for a model without attribution); from a
 *                                                     service with provenance also prediction_id,
 *                                                     decided_by "pixels" | "provenance", provenance
 *   POST /explain   multipart field "image"        -> verdict + heatmap_png data URL
 *   POST /annotate  multipart field "image"        -> image/jpeg with the verdict drawn on it
 *   POST /feedback  multipart prediction_id, label, note, consent, image (only with consent)
 *                                                  -> {feedback_id, stored_image, message}
 * Errors are {"error": {"code", "message"}} (the service's own) or a framework's validation shape;
 * every failure reaches the caller as an ApiError with a message for people.
 */

/** The endpoints, relative to the page's origin (one line: tests/ops/test_stack.py reads it). */
export const API = { info: "/info", predict: "/predict", explain: "/explain", annotate: "/annotate", feedback: "/feedback" };

/** How long a request may take before the page gives up on it. */
export const REQUEST_TIMEOUT_MS = 120000;

/** A failed request: a message for people, the HTTP status (0 when none) and the service's code. */
export class ApiError extends Error {
  /**
   * @param {string} message What went wrong, for people.
   * @param {{status?: number, code?: string}} [options] HTTP status and the service's error code.
   */
  constructor(message, { status = 0, code = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/**
 * The message of an error body, whichever of the shapes the service answers:
 * {"error": {"code", "message"}} (the service's own), {"error": "...", "detail": [...]}
 * (framework validation) or [{"error": "..."}].
 * @param {*} body The parsed JSON body (or a string).
 * @returns {{message: string, code: string}} Empty strings when the body says nothing usable.
 */
export function messageFromBody(body) {
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

/** What a status means when the body says nothing usable. */
const STATUS_HINTS = {
  404: "the endpoint was not found (is this page served by the detector service?)",
  413: "the file is too large for the service",
  415: "the service does not accept this kind of file",
  429: "too many requests; retry shortly",
  500: "the service failed unexpectedly",
  502: "the service is unreachable behind its proxy",
  503: "the service is not ready or at capacity; retry shortly",
  504: "the service took too long to answer",
};

/**
 * The ApiError of a response that is not OK, with the service's message when it gave one.
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
export async function errorFromResponse(response) {
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
    message = plain || STATUS_HINTS[response.status] || `the request failed (${response.statusText || "error"})`;
  }
  return new ApiError(message, { status: response.status, code });
}

/**
 * POST and return the Response when it is OK; throw an ApiError otherwise (also for network
 * failures and after REQUEST_TIMEOUT_MS without an answer).
 * @param {string} path One of API's paths.
 * @param {BodyInit} body
 * @param {Object<string, string>} [headers={}] Extra headers (Accept defaults to JSON, then JPEG).
 * @returns {Promise<Response>}
 */
export async function post(path, body, headers = {}) {
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

/**
 * POST and return the parsed JSON answer; an ApiError when the request fails or the answer is not JSON.
 * @param {string} path
 * @param {BodyInit} body
 * @param {Object<string, string>} [headers]
 * @returns {Promise<*>}
 */
export async function postJson(path, body, headers) {
  const response = await post(path, body, headers);
  try {
    return await response.json();
  } catch (_) {
    throw new ApiError("the service answered something that is not JSON", { status: response.status });
  }
}

/**
 * The multipart form of one image (field "image", with its file name).
 * @param {File} file
 * @returns {FormData}
 */
export function imageForm(file) {
  const form = new FormData();
  form.append("image", file, file.name || "image");
  return form;
}

/**
 * A limiter: the function it returns runs at most `limit` of the async tasks given to it at a time.
 * @param {number} limit
 * @returns {function(function(): *): Promise<*>} Run a task when a slot is free; its result.
 */
export function createLimiter(limit) {
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
