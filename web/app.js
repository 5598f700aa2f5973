// blipsearch web UI: ES modules, no build step, no dependencies. Talks to the API over HTTP only.
// This module starts the app: it routes the address to a view and wires the page's controls.
//
// Routes (client side, in the URL hash):
//   #/                 the home page: search box, example queries, filters
//   #/?q=TEXT&...      a search; every filter, the sort, the mode and `like=ID` (more like an item)
//                      live in the address (url-state.js), so reload, links and Back/Forward work
//   #/item/ID          one item: large picture (zoom), metadata, "More like this"
//   #/upload           add an item (needs the API key)

import { collectUi, showView, state, ui } from "./app-state.js";
import { $, byTestId, setError, show } from "./dom.js";
import { loadFacets } from "./facets.js";
import { storeKey, storedKey } from "./http.js";
import { ask, closeItem, loadItemTexts, loadSimilar, openItem } from "./item-view.js";
import { createLightbox, markUpscaled } from "./lightbox.js";
import {
  clearImageQuery, refreshSearch, runSearch, showSearch, startImageSearch, startTextSearch,
} from "./results-view.js";
import { createPictureField } from "./upload-form.js";
import { upload } from "./upload-view.js";
import { parseSearchState } from "./url-state.js";

const DETAILS_STORAGE = "blipsearch.details";

// ---------------------------------------------------------------------------------------------
// The details preference (scores, timings, technical metadata)

function applyDetails(on) {
  document.documentElement.dataset.details = on ? "on" : "off";
  ui["option-details"].checked = on;
  ui["item-details-toggle"].setAttribute("aria-pressed", on ? "true" : "false");
  ui["item-details-toggle"].textContent = on ? "Hide details" : "Show details";
}

function setDetails(on) {
  try {
    if (on) localStorage.setItem(DETAILS_STORAGE, "1");
    else localStorage.removeItem(DETAILS_STORAGE);
  } catch {
    /* storage disabled: remembered for this page only */
  }
  applyDetails(on);
}

function storedDetails() {
  try {
    return localStorage.getItem(DETAILS_STORAGE) === "1";
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Routing

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  const item = path.match(/^\/item\/([^/]+)\/?$/);
  if (item) return { name: "item", id: decodeURIComponent(item[1]) };
  if (path === "/upload" || path === "/upload/") return { name: "upload" };
  return { name: "search", params: new URLSearchParams(search) };
}

function route({ initial = false } = {}) {
  const next = parseRoute();
  const previous = state.view;
  if (!initial) state.navigated = true;
  if (next.name !== "item" && state.itemController) {
    state.itemController.abort();
    state.itemController = null;
  }
  if (next.name !== "item") state.itemId = null;
  showView(next.name);

  if (next.name === "item") {
    window.scrollTo(0, 0);
    openItem(next.id);
  } else if (next.name === "upload") {
    document.title = "Add an item · blipsearch";
    ui["upload-key"].value = storedKey();
    window.scrollTo(0, 0);
    $("#upload-heading").focus();
  } else {
    document.title = "blipsearch";
    const ran = showSearch(parseSearchState(next.params));
    if (!ran && previous === "item" && state.lastCardId) {
      // back from an item: return focus to the card that opened it
      const card = ui.results.querySelector(`a[data-item-id="${CSS.escape(state.lastCardId)}"]`);
      if (card) card.focus();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function firstImageFile(list) {
  for (const item of list || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file && (!file.type || file.type.startsWith("image/"))) return file;
  }
  return null;
}

function wire() {
  ui["search-form"].addEventListener("submit", (event) => {
    event.preventDefault();
    startTextSearch();
  });

  ui["image-input"].addEventListener("change", () => startImageSearch(ui["image-input"].files[0]));
  ui["image-clear"].addEventListener("click", () => {
    clearImageQuery();
    ui["search-input"].focus();
  });

  // Drag and drop anywhere on the page (an overlay shows while a file is over it).
  let dragDepth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event) || state.view === "upload") return;
    event.preventDefault();
    dragDepth += 1;
    show(ui["drop-overlay"], true);
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    if (state.view === "upload" && !ui["upload-drop"].contains(event.target)) event.dataTransfer.dropEffect = "none";
  });
  document.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) show(ui["drop-overlay"], false);
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    show(ui["drop-overlay"], false);
    if (state.view === "upload") return;
    const file = firstImageFile(event.dataTransfer.files);
    if (file) startImageSearch(file);
    else setError(ui.error, "Drop an image file (JPEG, PNG, WebP, GIF…).");
  });

  // Paste an image from the clipboard (not while typing in the upload form).
  document.addEventListener("paste", (event) => {
    if (state.view === "upload") return;
    const file = firstImageFile(event.clipboardData?.items);
    if (!file) return;
    event.preventDefault();
    const extension = (file.type.split("/")[1] || "png").replace("jpeg", "jpg");
    startImageSearch(new File([file], `pasted-image.${extension}`, { type: file.type }));
  });

  // Filters: selects and checkboxes apply at once, price boxes on Enter/Apply or when they change.
  ui["filters-form"].addEventListener("submit", (event) => {
    event.preventDefault();
    refreshSearch();
  });
  ui["filters-form"].addEventListener("change", (event) => {
    if (event.target === ui["option-details"]) setDetails(ui["option-details"].checked);
    else if (event.target.matches("select, input[type=checkbox], input[type=number]")) refreshSearch();
  });
  ui["filters-form"].addEventListener("reset", () => {
    setTimeout(() => {
      // after the form has reset its controls; the details toggle is a preference, not a filter
      applyDetails(storedDetails());
      refreshSearch();
    }, 0);
  });
  ui.sort.addEventListener("change", refreshSearch);
  ui["item-details-toggle"].addEventListener("click", () => setDetails(document.documentElement.dataset.details !== "on"));

  const lightbox = createLightbox(ui.lightbox);
  markUpscaled(ui["item-image"]);
  markUpscaled(byTestId("lightbox-image"));
  ui["item-zoom"].addEventListener("click", () => {
    lightbox.open(ui["item-zoom"].dataset.src || ui["item-image"].src, ui["item-image"].alt, ui["item-zoom"]);
  });

  // The skip link lands on the results heading without touching the address (the hash is the route).
  ui["skip-link"].addEventListener("click", (event) => {
    event.preventDefault();
    const target = state.view === "item" ? ui["item-title"] : state.view === "upload" ? $("#upload-heading") : ui["results-heading"];
    target.scrollIntoView({ block: "start" });
    target.focus({ preventScroll: true });
  });

  ui["more-results"].addEventListener("click", () => {
    if (state.search && state.nextOffset !== null) runSearch(state.search, { append: true });
  });

  ui["item-close"].addEventListener("click", closeItem);
  ui["ask-form"].addEventListener("submit", ask);
  ui["item-texts-box"].addEventListener("toggle", () => {
    if (ui["item-texts-box"].open) loadItemTexts();
  });
  ui["similar-more"].addEventListener("click", () => {
    if (state.itemId !== null && state.itemController && state.similarOffset !== null) {
      loadSimilar(state.itemId, state.itemController, { append: true });
    }
  });

  ui["upload-form"].addEventListener("submit", upload);
  ui["upload-key-forget"].addEventListener("click", () => {
    storeKey("");
    ui["upload-key"].value = "";
    ui["upload-key"].focus();
  });

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    if (lightbox.isOpen) return; // the dialog closes itself and gives focus back
    if (!ui["drop-overlay"].hidden) {
      show(ui["drop-overlay"], false);
      return;
    }
    if (state.view === "item") {
      event.preventDefault();
      closeItem();
    } else if (state.view === "upload") {
      event.preventDefault();
      location.hash = "#/";
    }
  });

  window.addEventListener("hashchange", () => route());
}

function start() {
  collectUi();
  applyDetails(storedDetails());
  state.pictureField = createPictureField({
    input: ui["upload-file"],
    zone: ui["upload-drop"],
    preview: ui["upload-preview"],
    limitText: ui["upload-limit"],
    onProblem: (problem) => setError(ui["upload-error"], problem),
  });
  // On a phone the filters start folded so that the results come first.
  if (window.matchMedia("(max-width: 899px)").matches) byTestId("filters").open = false;
  wire();
  route({ initial: true });
  loadFacets();
  document.documentElement.dataset.ready = "true";
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
