// What the views share: the state of the page (the search and the item on screen, their requests
// in flight) and the page's controls, found once by their test ids.

import { byTestId, show } from "./dom.js";

export const state = {
  facets: null,
  // the search on screen: {kind: "text" | "browse" | "like" | "image", state (url-state.js), file}
  search: null,
  // whether POST /v1/search/query (structured filters) exists: null until the first answer
  structured: null,
  nextOffset: null,
  controller: null,
  // item view
  itemId: null,
  itemController: null,
  similarOffset: null,
  lastCardId: null,
  // whether the app navigated at least once (so Escape can go back in history)
  navigated: false,
  // the view on screen: "search" | "item" | "upload" (null before the first route)
  view: null,
  // the upload form's picture field (upload-form.js); its size limit applies to image searches too
  pictureField: null,
  // whether the next drawing of the chips takes the keyboard focus (a chip was just removed)
  focusChips: false,
};

export const ui = {};

export function collectUi() {
  for (const id of [
    "search-form", "search-input", "image-input", "drop-zone", "image-query", "image-query-thumb",
    "image-query-name", "image-clear", "drop-overlay", "filters-form", "filter-category",
    "filter-brand", "filter-price-min", "filter-price-max", "option-mode", "option-rerank",
    "option-caption", "search-view", "results-heading", "summary", "status", "error", "empty-state",
    "results", "more-results", "item-view", "item-close", "item-status", "item-error", "item",
    "item-image", "item-title", "item-price", "item-caption", "item-description", "item-meta",
    "ask-form", "ask-input", "ask-submit", "ask-answer", "item-texts-box", "item-texts",
    "similar-section", "similar-status", "similar-error", "similar-results", "similar-more",
    "upload-view", "upload-form", "upload-file", "upload-key", "upload-key-forget", "upload-submit",
    "upload-status", "upload-error", "upload-result", "footer-info",
    "sort", "chips", "filter-hint", "demo-notice", "examples-box", "examples", "option-details",
    "item-details-toggle", "item-zoom", "lightbox", "skip-link", "upload-drop", "upload-preview",
    "upload-limit", "sort-field",
  ]) {
    ui[id] = byTestId(id);
  }
}

/** Shows one view and hides the others; the hash routes (app.js) and an image search call it. */
export function showView(name) {
  show(ui["search-view"], name === "search");
  show(ui["item-view"], name === "item");
  show(ui["upload-view"], name === "upload");
  state.view = name;
}
