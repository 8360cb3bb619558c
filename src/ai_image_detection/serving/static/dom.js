/* DOM building, number formatting and screen-reader announcements, shared by the page's modules.
 *
 * Nothing here touches the network. Text from the service is only ever set as text (el's "text"
 * property, plain string children), never parsed as HTML.
 */

/**
 * The first element matching a selector.
 * @param {string} selector CSS selector.
 * @param {ParentNode} [root=document] Where to look.
 * @returns {Element|null}
 */
export const $ = (selector, root = document) => root.querySelector(selector);

/**
 * Create an element: el("p", {className: "x", text: "hi"}, child, ...).
 *
 * Props: "text" sets textContent, "className" the class, "dataset" the data-* attributes; a
 * non-string value of a DOM property (hidden, disabled, width...) is assigned as a property;
 * anything else becomes an attribute (true: an empty one). null, undefined and false are skipped,
 * in props and in children. Children are nodes or strings (appended as text).
 * @param {string} tag Tag name.
 * @param {Object<string, *>} [props={}] Properties and attributes.
 * @param {...(Node|string|null|undefined|false)} children Child nodes or text.
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, ...children) {
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

/**
 * A probability as a percentage: formatPercent(0.1234) is "12.3%".
 * @param {number} probability In [0, 1].
 * @param {number} [digits=1] Decimals.
 * @returns {string}
 */
export function formatPercent(probability, digits = 1) {
  return `${(probability * 100).toFixed(digits)}%`;
}

/**
 * A size in bytes for people: "950 B", "12 kB", "3.4 MB" ("?" when not a number).
 * @param {number} bytes
 * @returns {string}
 */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "?";
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(bytes < 1e4 ? 1 : 0)} kB`;
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;
}

/**
 * An ISO 8601 time in the browser's locale (the input unchanged when it is not a date).
 * @param {string} iso
 * @returns {string}
 */
export function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

let announceTimer = 0;

/**
 * Tell screen-reader users something, politely (through the page's #announcer live region).
 * @param {string} message
 */
export function announce(message) {
  const announcer = document.getElementById("announcer");
  if (!announcer) return;
  announcer.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    announcer.textContent = message;
  }, 60);
}

/**
 * Save a Blob as a file through a temporary blob URL.
 * @param {Blob} blob
 * @param {string} filename The suggested file name.
 */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}
