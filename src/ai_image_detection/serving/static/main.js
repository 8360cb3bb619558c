/* AI image detector: the web page of the service (served at /ui/).
 *
 * Native ES modules, no build step, no network resources besides the service's own API (api.js):
 *   dom.js          element building, formatting, announcements
 *   api.js          fetch wrappers, the error shape, the request limiter
 *   verdict.js      a verdict's words and its inconclusive band
 *   info.js         /info: model and limits in the footer, the "not ready" banner
 *   upload.js       file picker, drop zone, drag-and-drop, paste, limits
 *   result-card.js  one card per file: verdict, band bar, closest family, details
 *   explain.js      heatmap overlay and annotated download
 *   provenance.js   what the image's metadata declares, and which evidence decided
 *   feedback.js     "Is this verdict wrong?": POST /feedback
 *   history.js      past checks in localStorage
 * This module only wires them to the page's elements.
 */

import { $, announce } from "./dom.js";
import { initHistory } from "./history.js";
import { initInfo } from "./info.js";
import { addFile, initResults } from "./result-card.js";
import { initUpload, showLimits } from "./upload.js";

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
};

initUpload(els, (files) => {
  announce(`Checking ${files.length} file${files.length === 1 ? "" : "s"}…`);
  for (const file of files) addFile(file);
});
initHistory(els);
initResults(els);
initInfo(els, (info) => showLimits(els.dropLimits, info));
