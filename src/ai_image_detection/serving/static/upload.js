/* Getting images in: the file picker, the drop zone (keyboard and mouse), drag-and-drop anywhere
 * on the page, paste; and the limits checked before an upload (the service checks them anyway).
 */

import { ApiError } from "./api.js";
import { formatBytes } from "./dom.js";

const SEVERAL = "Several files at once are fine; each is checked on its own.";

/**
 * Say under the drop zone which formats and sizes the service accepts (from /info).
 * @param {HTMLElement} limitsEl The drop zone's description.
 * @param {Object} info What /info said.
 */
export function showLimits(limitsEl, info) {
  const formats = Array.isArray(info.formats) ? info.formats.filter((f) => typeof f === "string") : [];
  const parts = [];
  if (formats.length) parts.push(`Accepted formats: ${formats.join(", ")}`);
  if (Number.isFinite(info.max_bytes)) parts.push(`up to ${formatBytes(info.max_bytes)} per image`);
  limitsEl.textContent = parts.length ? `${parts.join(", ")}. ${SEVERAL}` : SEVERAL;
}

/**
 * Why a file is not uploaded at all (empty, or larger than the service takes), or null when it may be.
 * @param {File} file
 * @param {Object|null} info What /info said (null: the size limit is unknown).
 * @returns {ApiError|null}
 */
export function limitError(file, info) {
  const maxBytes = info && Number.isFinite(info.max_bytes) ? info.max_bytes : null;
  if (file.size === 0) return new ApiError("the file is empty (0 bytes)");
  if (maxBytes !== null && file.size > maxBytes) {
    return new ApiError(
      `the file has ${formatBytes(file.size)}; the limit is ${formatBytes(maxBytes)} per image. It was not uploaded.`,
    );
  }
  return null;
}

const isSpace = (event) => event.key === " " || event.key === "Spacebar";
const hasFiles = (event) => !!event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");

/**
 * Wire the picker, the drop zone, page-wide drag-and-drop and paste to one handler.
 * @param {{fileInput: HTMLInputElement, dropZone: HTMLElement}} els
 * @param {function(File[]): void} onFiles Called with the files chosen, dropped or pasted (never empty).
 */
export function initUpload({ fileInput, dropZone }, onFiles) {
  const addFiles = (fileList) => {
    const files = Array.from(fileList || []);
    if (files.length) onFiles(files);
  };

  fileInput.addEventListener("change", () => {
    addFiles(fileInput.files);
    fileInput.value = ""; // choosing the same file again fires "change" again
  });

  // Like a native button: Enter opens the picker on keydown, Space on keyup.
  dropZone.addEventListener("keydown", (event) => {
    if (event.target !== dropZone) return; // the inner controls handle their own keys
    if (event.key === "Enter" && !event.repeat) {
      event.preventDefault();
      fileInput.click();
    } else if (isSpace(event)) {
      event.preventDefault(); // no page scroll
    }
  });
  dropZone.addEventListener("keyup", (event) => {
    if (event.target !== dropZone || !isSpace(event)) return;
    event.preventDefault();
    fileInput.click();
  });

  dropZone.addEventListener("click", (event) => {
    // A click on the zone's empty space opens the picker too (the label and input do it themselves).
    if (event.target.closest("label, input, button, a")) return;
    fileInput.click();
  });

  // The whole page accepts dropped files (so a near miss does not open the file in the tab);
  // the drop zone lights up while files are dragged over the window.
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    dropZone.classList.add("is-dragover");
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropZone.classList.remove("is-dragover");
  });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer) return;
    event.preventDefault();
    dragDepth = 0;
    dropZone.classList.remove("is-dragover");
    addFiles(event.dataTransfer.files);
  });

  document.addEventListener("paste", (event) => {
    const target = event.target;
    const typing =
      target && (target.isContentEditable || (/^(input|textarea)$/i.test(target.tagName) && target.type !== "file"));
    if (typing) return;
    const files = event.clipboardData ? Array.from(event.clipboardData.files || []) : [];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
}
