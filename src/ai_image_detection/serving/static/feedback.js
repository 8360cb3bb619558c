/* "Is this verdict wrong?": a small form on each result that tells the service the image's true
 * label. POST /feedback (multipart): prediction_id, label ("ai" | "human"), note (optional, at most
 * 1000 characters), consent ("true" | "false") and, only with consent, the very File that was
 * predicted (field "image"). Without consent only the numbers are kept, never the image.
 * The service answers {feedback_id, stored_image, message}; its message, or its error, is shown in
 * a live region. A form is sent once: its controls are disabled while sending and after success.
 */

import { el } from "./dom.js";
import { API, postJson } from "./api.js";

/** The longest note the service keeps. */
export const NOTE_MAX = 1000;

const PRIVACY =
  "Without your consent only the numbers are kept (the score, the verdict, your label and note), never the image.";

/**
 * Whether the service can take feedback on this verdict (an older service answers no prediction_id).
 * @param {Object} verdict The /predict answer.
 * @returns {boolean}
 */
export function canTakeFeedback(verdict) {
  return !!verdict && typeof verdict.prediction_id === "string" && verdict.prediction_id.length > 0;
}

/**
 * The multipart body of a feedback: the image only with consent.
 * @param {{predictionId: string, label: string, note: string, consent: boolean, file: File}} feedback
 * @returns {FormData}
 */
export function feedbackForm({ predictionId, label, note, consent, file }) {
  const form = new FormData();
  form.append("prediction_id", predictionId);
  form.append("label", label);
  if (note) form.append("note", note);
  form.append("consent", consent ? "true" : "false");
  if (consent) form.append("image", file, file.name || "image");
  return form;
}

function radio(id, name, value, text, checked) {
  const input = el("input", { type: "radio", id, name, value, checked, required: true });
  return el("div", { className: "feedback-choice" }, input, el("label", { for: id, text }));
}

/**
 * The feedback controls of one result: a toggle button (for the card's action row) and the form it
 * opens. The true label is preset to the opposite of an "ai" or "human" verdict (none for
 * "inconclusive"); consent is unchecked.
 * @param {{id: string, file: File, name: string, card: HTMLElement}} context The card: its id
 *   (prefix of the form's ids), the File that was predicted, its name.
 * @param {Object} verdict The /predict answer (its prediction_id and label).
 * @returns {{button: HTMLButtonElement, form: HTMLFormElement}|null} Null when the verdict has no
 *   prediction_id.
 */
export function feedbackControls(context, verdict) {
  if (!canTakeFeedback(verdict)) return null;
  const base = `${context.id}-feedback`;
  const preset = { ai: "human", human: "ai" }[verdict.label] || "";

  const button = el("button", {
    type: "button",
    className: "button small feedback-toggle",
    "aria-expanded": "false",
    "aria-controls": base,
    text: "Is this verdict wrong?",
  });
  const note = el("textarea", {
    id: `${base}-note`,
    className: "feedback-note",
    name: "note",
    rows: 2,
    maxLength: NOTE_MAX,
    "aria-describedby": `${base}-count`,
  });
  const count = el("p", { id: `${base}-count`, className: "feedback-count muted", text: `0 / ${NOTE_MAX} characters` });
  const consent = el("input", { type: "checkbox", id: `${base}-consent`, name: "consent", "aria-describedby": `${base}-privacy` });
  const submit = el("button", { type: "submit", className: "button small primary feedback-submit", text: "Send feedback" });
  const cancel = el("button", { type: "button", className: "button small ghost feedback-cancel", text: "Cancel" });
  const result = el("p", { className: "feedback-result", role: "status", "aria-live": "polite", tabindex: "-1" });
  const fields = el(
    "fieldset",
    { className: "feedback-fields" },
    el("legend", { className: "feedback-title", text: "Feedback on this verdict" }),
    el(
      "fieldset",
      { className: "feedback-choices" },
      el("legend", { text: "The true label of this image" }),
      radio(`${base}-ai`, `${base}-label`, "ai", "AI-generated", preset === "ai"),
      radio(`${base}-human`, `${base}-label`, "human", "Human-made (camera)", preset === "human"),
    ),
    el("label", { for: note.id, className: "feedback-note-label", text: "Note (optional)" }),
    note,
    count,
    el("div", { className: "feedback-consent" }, consent, el("label", { for: consent.id, text: "Keep this image to improve the detector" })),
    el("p", { id: `${base}-privacy`, className: "feedback-privacy muted", text: PRIVACY }),
    el("div", { className: "card-actions" }, submit, cancel),
  );
  const form = el("form", { className: "feedback-form", id: base, hidden: true, noValidate: true }, fields, result);

  let sending = false;
  let sent = false;

  const show = (message, isError) => {
    result.textContent = message;
    result.classList.toggle("is-error", !!isError);
  };
  const open = (opened) => {
    form.hidden = !opened;
    button.setAttribute("aria-expanded", String(opened));
    if (opened && !sent) {
      const chosen = form.querySelector("input[type=radio]:checked") || form.querySelector("input[type=radio]");
      chosen.focus();
    }
  };

  button.addEventListener("click", () => open(form.hidden));
  cancel.addEventListener("click", () => {
    open(false);
    button.focus();
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !sending) {
      event.preventDefault();
      open(false);
      button.focus();
    }
  });
  note.addEventListener("input", () => {
    count.textContent = `${note.value.length} / ${NOTE_MAX} characters`;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (sending || sent) return;
    const chosen = form.querySelector("input[type=radio]:checked");
    if (!chosen) {
      show("Choose the true label first.", true);
      form.querySelector("input[type=radio]").focus();
      return;
    }
    sending = true;
    fields.disabled = true;
    form.setAttribute("aria-busy", "true");
    submit.textContent = "Sending…";
    show("", false);
    try {
      const answer = await postJson(
        API.feedback,
        feedbackForm({
          predictionId: verdict.prediction_id,
          label: chosen.value,
          note: note.value.trim(),
          consent: consent.checked,
          file: context.file,
        }),
      );
      sent = true;
      submit.textContent = "Sent";
      button.textContent = "Feedback sent";
      context.card.dataset.feedback = "sent";
      const message = answer && typeof answer.message === "string" && answer.message ? answer.message : "Thank you: your feedback was received.";
      show(message, false);
      result.focus();
    } catch (error) {
      fields.disabled = false;
      submit.textContent = "Send feedback";
      const status = error.status ? ` (HTTP ${error.status}${error.code ? `, ${error.code}` : ""})` : "";
      show(`Could not send the feedback: ${error.message}${status}`, true);
      result.focus();
    } finally {
      sending = false;
      form.removeAttribute("aria-busy");
    }
  });

  return { button, form };
}
