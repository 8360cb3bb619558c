/* A result's explanation (the /explain heatmap laid over the preview, with its legend) and its
 * annotated image (/annotate, downloaded as "<name>.verdict.jpg").
 */

import { $, announce, el, saveBlob } from "./dom.js";
import { API, ApiError, imageForm, post, postJson } from "./api.js";

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
    $(".legend-text", legend).textContent =
      answer.method === "occlusion"
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

/**
 * The explanation and download controls of one result, wired to its file.
 * @param {{file: File, name: string, previewBox: HTMLElement, explain: ?Promise}} context The card's
 *   state (context.explain caches the /explain answer).
 * @returns {{buttons: HTMLButtonElement[], legend: HTMLElement, message: HTMLElement}} The two buttons
 *   (for the card's action row), the heatmap's legend and the actions' error line (both hidden).
 */
export function explainControls(context) {
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
  const message = el("p", { className: "action-error", role: "alert", hidden: true });
  const legend = el(
    "div",
    { className: "legend", hidden: true },
    el("span", { className: "legend-swatch", "aria-hidden": "true" }),
    el("span", { className: "legend-text", text: "Red = regions that push towards AI; blue = towards human-made." }),
  );
  explainButton.addEventListener("click", () => toggleExplanation(context, explainButton, legend, message));
  downloadButton.addEventListener("click", () => downloadAnnotated(context, downloadButton, message));
  return { buttons: [explainButton, downloadButton], legend, message };
}
