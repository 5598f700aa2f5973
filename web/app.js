// blipsearch web UI: one ES module, no build step, no dependencies. Talks to the API over HTTP only.
//
// Routes (client side, in the URL hash):
//   #/                 the home page: search box, example queries, filters
//   #/?q=TEXT&...      a search; every filter, the sort, the mode and `like=ID` (more like an item)
//                      live in the address (url-state.js), so reload, links and Back/Forward work
//   #/item/ID          one item: large picture (zoom), metadata, "More like this"
//   #/upload           add an item (needs the API key)

import { createLightbox, markUpscaled } from "./lightbox.js";
import { createPictureField, fileProblem } from "./upload-form.js";
import {
  DEFAULTS,
  filterStrings,
  hasQuery,
  parseSearchState,
  priceProblem,
  searchHash,
  structuredFilters,
} from "./url-state.js";

const PAGE_SIZE = 20;
const SIMILAR_SIZE = 12;
const KEY_STORAGE = "blipsearch.apiKey";
const DETAILS_STORAGE = "blipsearch.details";
const ITEM_ID = /^[1-9][0-9]{0,18}$/;

const $ = (selector, root = document) => root.querySelector(selector);
const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

// ---------------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(message, { status = 0, code = "network" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function storeKey(value) {
  try {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled: the key lives in the field only */
  }
}

/** fetch + JSON, turning the API's `{"error": {...}}` bodies and network failures into ApiError. */
async function api(path, { method = "GET", body, json, signal, key } = {}) {
  const headers = { Accept: "application/json" };
  const apiKey = key ?? storedKey();
  if (apiKey) headers["X-API-Key"] = apiKey;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, body, headers, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("Could not reach the server. Check your connection and try again.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = data && typeof data === "object" ? data.error : null;
    const message =
      (error && (error.message || error.code)) ||
      (data && typeof data.detail === "string" ? data.detail : null) ||
      `The server answered ${response.status} ${response.statusText || ""}`.trim();
    throw new ApiError(message, { status: response.status, code: error?.code || "http_error" });
  }
  return data;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of params) {
    if (value !== undefined && value !== null && value !== "") search.append(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(node, visible = true) {
  node.hidden = !visible;
}

function setStatus(node, busy, text) {
  show(node, busy);
  if (text) $(".status-text", node).textContent = text;
}

function setError(node, error) {
  if (!error) {
    node.textContent = "";
    show(node, false);
    return;
  }
  node.textContent = error instanceof Error ? error.message : String(error);
  show(node, true);
}

function formatScore(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "–";
}

function formatPrice(price, currency) {
  if (price === null || price === undefined || price === "") return "";
  const amount = Number(price);
  if (currency && Number.isFinite(amount)) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(amount);
    } catch {
      /* unknown currency code: fall through */
    }
  }
  return currency ? `${price} ${currency}` : String(price);
}

function itemName(item) {
  return item.title || item.sku || `Item ${item.item_id}`;
}

function thumbnailUrl(item) {
  return item.thumbnail_url || `/v1/items/${encodeURIComponent(item.item_id)}/thumbnail?size=256`;
}

/** The thumbnail endpoint at another size (it serves 64, 128, 256 and 512 px JPEGs). */
function sizedThumbnailUrl(item, size) {
  const url = new URL(thumbnailUrl(item), location.href);
  url.searchParams.set("size", String(size));
  return url.href;
}

function imageUrl(item) {
  return item.image_url || `/v1/items/${encodeURIComponent(item.item_id)}/image`;
}

// ---------------------------------------------------------------------------------------------
// State

const state = {
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
};

const ui = {};

function collectUi() {
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

// ---------------------------------------------------------------------------------------------
// Facets: the filter controls are built from the catalog

async function loadFacets() {
  try {
    const facets = await api("/v1/facets");
    state.facets = facets;
    fillSelect(ui["filter-category"], facets.categories || [], "Any category");
    fillSelect(ui["filter-brand"], facets.brands || [], "Any brand");
    fillDatalist($("#category-options"), facets.categories || []);
    fillDatalist($("#brand-options"), facets.brands || []);
    const price = facets.price || {};
    ui["filter-price-min"].placeholder = price.min ?? "min";
    ui["filter-price-max"].placeholder = price.max ?? "max";
    if (state.search && state.search.kind !== "image") {
      // the URL may name a category the select did not hold before the facets came
      applyControls(state.search.state);
      renderChips(state.search.state);
    }
    show(ui["ask-form"], Boolean(facets.vqa) && state.itemId !== null);
    renderExamples(facets.examples || [], facets.categories || []);
    const model = facets.model || {};
    ui["demo-notice"].textContent = model.demo ? model.note || "Demo model: it knows emoji only." : "";
    show(ui["demo-notice"], Boolean(model.demo));
    pictureField.setLimit(facets.max_upload_bytes);
    document.documentElement.dataset.facets = "loaded";
    updateFooter();
  } catch (error) {
    document.documentElement.dataset.facets = "failed";
    ui["footer-info"].textContent = `Filters unavailable: ${error.message}`;
  }
}

/** Example queries from the catalog: a category browses it, anything else is searched for. */
function renderExamples(examples, categories) {
  const list = ui.examples;
  list.replaceChildren();
  for (const example of examples) {
    const isCategory = categories.includes(example);
    const target = isCategory ? { ...DEFAULTS, category: example } : { ...DEFAULTS, q: example };
    list.append(
      el("li", {},
        el("a", { class: "example", href: searchHash(target), "data-testid": "example",
          "data-kind": isCategory ? "category" : "query" },
          isCategory ? el("span", { class: "example-kind", text: "Browse " }) : null, example)),
    );
  }
  show(ui["examples-box"], examples.length > 0);
}

function fillSelect(select, values, anyLabel) {
  const current = select.value;
  select.replaceChildren(el("option", { value: "", text: anyLabel }));
  for (const value of values) select.append(el("option", { value, text: value }));
  select.value = values.includes(current) ? current : "";
}

function fillDatalist(list, values) {
  list.replaceChildren(...values.map((value) => el("option", { value })));
}

async function updateFooter() {
  const parts = [];
  if (state.facets && typeof state.facets.items === "number") {
    parts.push(`${state.facets.items} item${state.facets.items === 1 ? "" : "s"} indexed`);
  }
  try {
    const ready = await api("/readyz");
    if (ready && ready.model) parts.push(`model ${ready.model}`);
    if (ready && ready.ready === false) parts.push("index warming up");
  } catch (error) {
    if (error.status === 503) parts.push("index warming up");
  }
  ui["footer-info"].textContent = parts.join(" · ");
}

// ---------------------------------------------------------------------------------------------
// Search

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

/** The search the controls describe; `like` (more like an item) is kept from the search on screen. */
function controlsState() {
  const keepLike = state.search && state.search.kind === "like" ? state.search.state.like : "";
  return {
    q: ui["search-input"].value.trim(),
    like: keepLike,
    category: ui["filter-category"].value,
    brand: ui["filter-brand"].value,
    min: ui["filter-price-min"].value.trim(),
    max: ui["filter-price-max"].value.trim(),
    sort: ui.sort.value,
    mode: ui["option-mode"].value,
    rerank: ui["option-rerank"].checked,
    caption: ui["option-caption"].checked,
  };
}

function selectValue(select, value) {
  if (value && ![...select.options].some((option) => option.value === value)) {
    select.append(el("option", { value, text: value }));
  }
  select.value = value;
}

/** Puts a search state into the controls (after a reload, a shared link, Back/Forward). */
function applyControls(search) {
  ui["search-input"].value = search.q;
  selectValue(ui["filter-category"], search.category);
  selectValue(ui["filter-brand"], search.brand);
  ui["filter-price-min"].value = search.min;
  ui["filter-price-max"].value = search.max;
  ui.sort.value = search.sort;
  ui["option-mode"].value = search.mode;
  ui["option-rerank"].checked = search.rerank;
  ui["option-caption"].checked = search.caption;
}

function kindOf(search) {
  if (search.like) return "like";
  return search.q ? "text" : "browse";
}

function sameSearch(a, b) {
  return searchHash(a) === searchHash(b);
}

async function textRequest(search, offset, signal) {
  const base = [["k", PAGE_SIZE], ["offset", offset], ["sort", search.sort]];
  if (state.structured !== false) {
    const body = { k: PAGE_SIZE, offset, sort: search.sort, mode: search.mode, rerank: search.rerank,
      filters: structuredFilters(search) };
    if (search.q) body.q = search.q;
    try {
      const page = await api("/v1/search/query", { method: "POST", json: body, signal });
      state.structured = true;
      return page;
    } catch (error) {
      // a server from before structured filters: the string grammar does the same
      if (!(error instanceof ApiError) || ![404, 405].includes(error.status)) throw error;
      state.structured = false;
    }
  }
  const params = [["q", search.q], ...base, ["rerank", search.rerank], ["mode", search.mode],
    ...filterStrings(search).map((filter) => ["filter", filter])];
  return api(`/v1/search${query(params)}`, { signal });
}

function searchRequest(search, offset, signal) {
  const filters = filterStrings(search.state).map((filter) => ["filter", filter]);
  const common = [["k", PAGE_SIZE], ["offset", offset], ...filters];
  if (search.kind === "image") {
    const body = new FormData();
    body.append("file", search.file, search.file.name || "image");
    return api(`/v1/search/image${query(common)}`, { method: "POST", body, signal });
  }
  if (search.kind === "like") {
    return api(`/v1/items/${encodeURIComponent(search.state.like)}/similar${query(common)}`, { signal });
  }
  return textRequest(search.state, offset, signal);
}

/** Runs a new search (offset 0) or appends the next page of the current one. */
async function runSearch(search, { append = false } = {}) {
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  if (!append) {
    state.search = search;
    state.nextOffset = null;
  }
  const offset = append ? state.nextOffset ?? 0 : 0;
  setError(ui.error, null);
  show(ui["empty-state"], false);
  ui["results-heading"].textContent = "Results";
  // the sort applies to words and to browsing, not to "more like this" or a picture
  show(ui["sort-field"], search.kind === "text" || search.kind === "browse");
  renderChips(search.state);
  const problem = priceProblem(search.state, (state.facets && state.facets.price) || {});
  renderHint(problem);
  if (!append && problem && problem.kind === "inverted") {
    // nothing can match: say why instead of asking the server
    state.controller = null;
    ui.results.replaceChildren();
    show(ui["more-results"], false);
    ui.summary.textContent = "No results: fix the price range.";
    return;
  }
  setStatus(ui.status, true, append ? "Loading more results…" : "Searching…");
  ui.results.setAttribute("aria-busy", "true");
  ui["more-results"].disabled = true;
  if (!append) ui.summary.textContent = "";
  try {
    const page = await searchRequest(search, offset, controller.signal);
    if (state.controller !== controller) return;
    if (!append) ui.results.replaceChildren();
    renderHits(ui.results, page.hits || [], { showScores: true, showCaptions: search.state.caption });
    state.nextOffset = page.next_offset ?? null;
    show(ui["more-results"], state.nextOffset !== null && (page.hits || []).length > 0);
    describePage(search, page, ui.results.children.length);
    if (!ui.results.children.length) {
      ui.summary.textContent = problem
        ? "No results in this price range."
        : "No results. Try other words, fewer filters, or another picture.";
    }
  } catch (error) {
    if (error.name === "AbortError") return;
    if (state.controller !== controller) return;
    setError(ui.error, error);
    if (!append) {
      ui.results.replaceChildren();
      show(ui["more-results"], false);
    }
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setStatus(ui.status, false);
      ui.results.removeAttribute("aria-busy");
      ui["more-results"].disabled = false;
    }
  }
}

/** "123 items" when the total is exact, "40+ results" when it is a lower bound. */
function totalText(total, shown) {
  if (total && typeof total.value === "number") {
    if (total.exact) return `${total.value} item${total.value === 1 ? "" : "s"}`;
    return `${total.value}+ results`;
  }
  return `${shown} shown`;
}

function describePage(search, page, shown) {
  const what = {
    image: () => ` like ${search.file.name || "your picture"}`,
    like: () => ` like item ${search.state.like}`,
    text: () => ` for “${search.state.q}”`,
    browse: () => "",
  }[search.kind]();
  const details = [];
  if (page.reranked) details.push("re-ranked by ITM");
  if (page.rerank_deadline_hit) details.push(`re-ranking stopped early (${page.reranked_count} scored)`);
  if (page.mode && search.kind === "text") details.push(`${page.mode} search`);
  const timings = page.timings_ms || {};
  const total =
    typeof timings.total === "number"
      ? timings.total
      : Object.values(timings).reduce((sum, value) => (typeof value === "number" ? sum + value : sum), 0);
  if (total > 0) details.push(`${Math.round(total)} ms`);
  ui.summary.replaceChildren(
    el("strong", { "data-testid": "total", text: totalText(page.total, shown) }),
    what,
    details.length ? el("span", { class: "details-only", "data-testid": "summary-details", text: ` · ${details.join(" · ")}` }) : null,
  );
}

const PRICE_LABEL = { min: "Price from", max: "Price up to" };

/** One removable chip per active filter (and for "more like item N"). */
function renderChips(search) {
  const chips = [];
  if (search.like) chips.push(["like", `More like item ${search.like}`]);
  if (search.category) chips.push(["category", `Category: ${search.category}`]);
  if (search.brand) chips.push(["brand", `Brand: ${search.brand}`]);
  if (search.min !== "") chips.push(["min", `${PRICE_LABEL.min} ${search.min}`]);
  if (search.max !== "") chips.push(["max", `${PRICE_LABEL.max} ${search.max}`]);
  ui.chips.replaceChildren(
    ...chips.map(([field, label]) =>
      el("li", { class: "chip", "data-testid": "chip", "data-field": field },
        el("span", { text: label }),
        el("button", { type: "button", class: "chip-remove", "data-testid": "chip-remove",
          "aria-label": `Remove filter ${label}`, onclick: () => removeFilter(field) }, "×"))),
  );
  if (chips.length > 1) {
    ui.chips.append(el("li", {}, el("button", { type: "button", class: "btn btn-ghost btn-small",
      "data-testid": "chips-clear", onclick: () => removeFilter("all") }, "Clear all")));
  }
  show(ui.chips, chips.length > 0);
  if (state.focusChips) {
    state.focusChips = false;
    (ui.chips.querySelector("[data-testid=chip-remove]") || ui["search-input"]).focus();
  }
}

function renderHint(problem) {
  ui["filter-hint"].replaceChildren();
  if (problem) {
    ui["filter-hint"].append(el("span", { text: problem.text }));
    if (problem.kind === "inverted") {
      ui["filter-hint"].append(" ", el("button", { type: "button", class: "btn btn-small",
        "data-testid": "price-swap", onclick: swapPrices }, "Swap them"));
    }
  }
  show(ui["filter-hint"], Boolean(problem));
}

function swapPrices() {
  const min = ui["filter-price-min"].value;
  ui["filter-price-min"].value = ui["filter-price-max"].value;
  ui["filter-price-max"].value = min;
  refreshSearch();
}

function removeFilter(field) {
  if (!state.search) return;
  const next = { ...state.search.state };
  if (field === "all") Object.assign(next, { like: "", category: "", brand: "", min: "", max: "" });
  else next[field] = "";
  state.focusChips = true; // the chips are drawn again: keep the keyboard on them
  if (state.search.kind === "image") {
    applyControls({ ...next, q: "" });
    runSearch({ ...state.search, state: next });
  } else {
    navigateTo(next);
  }
}

function renderHits(list, hits, { showScores, showCaptions = true }) {
  const fragment = document.createDocumentFragment();
  const before = list.children.length;
  // the first dozen cards load at once, the rest as they scroll into view
  hits.forEach((hit, index) => fragment.append(resultCard(hit, { showScores, showCaptions, lazy: before + index >= 12 })));
  list.append(fragment);
}

function resultCard(hit, { showScores, showCaptions, lazy }) {
  const name = itemName(hit);
  const image = el("img", {
    class: "card-thumb",
    src: thumbnailUrl(hit),
    alt: hit.caption ? `${name}: ${hit.caption}` : name,
    loading: lazy ? "lazy" : "eager",
    decoding: "async",
    width: 256,
    height: 256,
    "data-testid": "result-thumb",
  });
  image.addEventListener("error", () => image.classList.add("broken"), { once: true });
  markUpscaled(image);

  const scores = el("p", { class: "card-scores details-only", "data-testid": "result-scores" });
  if (showScores) {
    scores.append(
      el("span", { class: "score", title: "Image-text contrastive similarity (cosine)", "data-testid": "score-itc" },
        "ITC ", el("strong", { text: formatScore(hit.itc_score ?? hit.score) })),
    );
    if (hit.itm_score !== null && hit.itm_score !== undefined) {
      scores.append(
        el("span", { class: "score score-itm", title: "Image-text match probability", "data-testid": "score-itm" },
          "ITM ", el("strong", { text: formatScore(hit.itm_score) })),
      );
    }
    if (typeof hit.keyword_score === "number" && hit.keyword_score > 0) {
      scores.append(
        el("span", { class: "score score-kw", title: "Keyword match score (BM25; higher is better)", "data-testid": "score-keyword" },
          "KW ", el("strong", { text: hit.keyword_score < 0.01 ? "<0.01" : hit.keyword_score.toFixed(2) })),
      );
    }
  }

  const price = formatPrice(hit.price, hit.currency);
  const link = el(
    "a",
    {
      class: "card-link",
      href: `#/item/${encodeURIComponent(hit.item_id)}`,
      "data-testid": "result-link",
      "data-item-id": hit.item_id,
    },
    el("span", { class: "card-media" }, image),
    el(
      "span",
      { class: "card-body" },
      hit.exact === true ? el("span", { class: "badge-exact", "data-testid": "exact-badge", text: "Exact match" }) : null,
      el("span", { class: "card-title", "data-testid": "result-title", text: name }),
      el("span", { class: "card-sub" },
        [hit.brand, hit.category].filter(Boolean).join(" · "),
        price ? el("span", { class: "card-price", text: price }) : null),
      showCaptions && hit.caption ? el("span", { class: "card-caption", "data-testid": "result-caption", text: hit.caption }) : null,
    ),
  );
  link.addEventListener("click", () => {
    state.lastCardId = String(hit.item_id);
  });
  const data = {
    "data-item-id": hit.item_id, "data-sku": hit.sku, "data-category": hit.category, "data-brand": hit.brand,
    "data-price": hit.price, "data-created": hit.created_at, "data-exact": hit.exact === true ? "true" : null,
  };
  return el("li", { class: "card", "data-testid": "result-card", ...data }, link, scores);
}

/**
 * Shows `search` by its address: a new address adds a history entry and the hashchange runs it;
 * the same address (a repeated search) runs it again at once.
 */
function navigateTo(search) {
  const hash = searchHash(search);
  if (location.hash === hash || (hash === "#/" && ["", "#", "#/"].includes(location.hash))) {
    showSearch(search, { force: true });
  } else {
    location.hash = hash;
  }
}

function startTextSearch() {
  const next = { ...controlsState(), like: "" };
  if (!hasQuery(next)) {
    setError(ui.error, "Type something to search for, choose a filter, or search by image.");
    ui["search-input"].focus();
    return;
  }
  clearImageQuery({ keepResults: true });
  navigateTo(next);
}

function startImageSearch(file) {
  if (!file) return;
  const problem = fileProblem(file, pictureField.limit);
  if (problem) {
    goToSearchView();
    setError(ui.error, problem);
    return;
  }
  showImageQuery(file);
  const search = { ...controlsState(), q: "", like: "" };
  ui["search-input"].value = "";
  goToSearchView();
  runSearch({ kind: "image", file, state: search });
}

let imageQueryUrl = null;

function showImageQuery(file) {
  if (imageQueryUrl) URL.revokeObjectURL(imageQueryUrl);
  imageQueryUrl = URL.createObjectURL(file);
  ui["image-query-thumb"].src = imageQueryUrl;
  ui["image-query-name"].textContent = `Searching by image: ${file.name || "pasted image"}`;
  show(ui["image-query"], true);
}

function clearImageQuery({ keepResults = false } = {}) {
  if (imageQueryUrl) URL.revokeObjectURL(imageQueryUrl);
  imageQueryUrl = null;
  ui["image-query-thumb"].removeAttribute("src");
  show(ui["image-query"], false);
  ui["image-input"].value = "";
  if (!keepResults && state.search && state.search.kind === "image") {
    if (state.controller) state.controller.abort();
    showHome();
  }
}

/** The home page: no search, the examples and the tips. */
function showHome() {
  if (state.controller) state.controller.abort();
  state.search = null;
  ui.results.replaceChildren();
  ui.summary.textContent = "";
  show(ui["more-results"], false);
  show(ui["empty-state"], true);
  show(ui["sort-field"], false);
  ui["results-heading"].textContent = "Search your collection";
  renderChips({ ...DEFAULTS });
  renderHint(null);
  setError(ui.error, null);
}

/** Re-runs the search on screen with the current filters and options. */
function refreshSearch() {
  const next = controlsState();
  if (state.search && state.search.kind === "image") {
    const search = { ...next, q: "", like: "" };
    // Enter in a price box fires "change" and then "submit": run that search once
    if (state.controller && sameSearch(search, state.search.state)) return;
    runSearch({ ...state.search, state: search });
    return;
  }
  // Enter in a price box fires "change" and then "submit": run that search once
  if (state.search && state.controller && sameSearch(next, state.search.state)) return;
  navigateTo(next);
}

// ---------------------------------------------------------------------------------------------
// Item view

async function openItem(id) {
  if (state.itemController) state.itemController.abort();
  const controller = new AbortController();
  state.itemController = controller;
  state.itemId = id;
  state.similarOffset = null;

  show(ui.item, false);
  show(ui["similar-section"], false);
  setError(ui["item-error"], null);
  setStatus(ui["item-status"], true, "Loading…");
  ui["ask-answer"].textContent = "";
  ui["ask-input"].value = "";
  ui["item-texts"].replaceChildren();
  ui["item-texts-box"].open = false;
  ui["similar-results"].replaceChildren();

  if (!ITEM_ID.test(id)) {
    setStatus(ui["item-status"], false);
    document.title = "No such item · blipsearch";
    showItemProblem(`“${id}” is not an item number: item addresses look like #/item/123.`);
    return;
  }
  try {
    const item = await api(`/v1/items/${encodeURIComponent(id)}`, { signal: controller.signal });
    if (state.itemController !== controller) return;
    renderItem(item);
    show(ui.item, true);
    ui["item-title"].focus({ preventScroll: false });
    loadSimilar(id, controller, { append: false });
  } catch (error) {
    if (error.name === "AbortError" || state.itemController !== controller) return;
    if (error.status === 404) {
      document.title = "No such item · blipsearch";
      showItemProblem(`There is no item ${id}. It may have been removed.`);
    } else {
      setError(ui["item-error"], error);
    }
  } finally {
    if (state.itemController === controller) setStatus(ui["item-status"], false);
  }
}

/** A message a person can act on, with a way back to searching. */
function showItemProblem(text) {
  const node = ui["item-error"];
  node.replaceChildren(el("span", { text }), " ", el("a", { href: "#/", "data-testid": "item-error-home", text: "Search the catalog" }));
  show(node, true);
  node.focus?.();
}

const BROWSER_FORMATS = new Set(["PNG", "JPEG", "GIF", "WEBP"]);

/** The original when it is small and a format browsers show, else a 512 px JPEG rendition. */
function itemPictureUrl(item) {
  const small = item.width && item.height && Math.max(item.width, item.height) <= 512;
  return small && BROWSER_FORMATS.has(String(item.format || "").toUpperCase()) ? imageUrl(item) : sizedThumbnailUrl(item, 512);
}

function renderItem(item) {
  const name = itemName(item);
  ui.item.dataset.itemId = String(item.item_id);
  document.title = `${name} · blipsearch`;
  ui["item-title"].textContent = name;
  // drawn at the column's width whatever its pixels (CSS); a tiny picture is drawn crisp, not blurred
  ui["item-image"].src = itemPictureUrl(item);
  ui["item-image"].alt = item.caption ? `${name}: ${item.caption}` : name;
  ui["item-zoom"].dataset.src = itemPictureUrl(item);
  if (item.width && item.height) {
    ui["item-image"].width = item.width;
    ui["item-image"].height = item.height;
  } else {
    ui["item-image"].removeAttribute("width");
    ui["item-image"].removeAttribute("height");
  }
  ui["item-price"].textContent = formatPrice(item.price, item.currency);
  ui["item-caption"].textContent = item.caption ? `“${item.caption}”` : "";
  show(ui["item-caption"], Boolean(item.caption));
  ui["item-description"].textContent = item.description || "";
  show(ui["item-description"], Boolean(item.description));

  const rows = [
    ["SKU", item.sku],
    ["Brand", item.brand],
    ["Category", item.category],
    ["Price", formatPrice(item.price, item.currency)],
    ["Tags", (item.tags || []).join(", ")],
    ["Size", item.width && item.height ? `${item.width} × ${item.height} px` : ""],
    ["Format", item.format, true],
    ["Status", item.status, true],
    ["Item id", item.item_id, true],
    ["Added", formatDate(item.created_at)],
    ["Updated", formatDate(item.updated_at)],
  ];
  for (const [name, value] of Object.entries(item.attributes || {})) {
    rows.push([name, typeof value === "object" ? JSON.stringify(value) : value]);
  }
  const meta = ui["item-meta"];
  meta.replaceChildren();
  for (const [label, value, technical] of rows) {
    if (value === null || value === undefined || value === "") continue;
    meta.append(el("div", { class: technical ? "meta-row details-only" : "meta-row" },
      el("dt", { text: label }), el("dd", { text: String(value) })));
  }
  const like = el("a", { href: searchHash({ ...DEFAULTS, like: String(item.item_id) }), "data-testid": "item-like",
    text: "Search for more like this" });
  meta.append(el("div", { class: "meta-row" }, el("dt", { text: "Similar" }), el("dd", {}, like)));
  const link = el("a", { href: imageUrl(item), target: "_blank", rel: "noopener", text: "Open the original" });
  meta.append(el("div", { class: "meta-row" }, el("dt", { text: "Image" }), el("dd", {}, link)));

  show(ui["ask-form"], Boolean(state.facets && state.facets.vqa));
}

function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

async function loadSimilar(id, controller, { append }) {
  show(ui["similar-section"], true);
  setError(ui["similar-error"], null);
  setStatus(ui["similar-status"], true);
  ui["similar-more"].disabled = true;
  const offset = append ? state.similarOffset ?? 0 : 0;
  try {
    const page = await api(
      `/v1/items/${encodeURIComponent(id)}/similar${query([["k", SIMILAR_SIZE], ["offset", offset]])}`,
      { signal: controller.signal },
    );
    if (state.itemController !== controller) return;
    if (!append) ui["similar-results"].replaceChildren();
    renderHits(ui["similar-results"], page.hits || [], { showScores: true });
    state.similarOffset = page.next_offset ?? null;
    show(ui["similar-more"], state.similarOffset !== null && (page.hits || []).length > 0);
    if (!ui["similar-results"].children.length) {
      setError(ui["similar-error"], "No other pictures in the collection yet.");
    }
  } catch (error) {
    if (error.name === "AbortError" || state.itemController !== controller) return;
    setError(ui["similar-error"], error);
  } finally {
    if (state.itemController === controller) {
      setStatus(ui["similar-status"], false);
      ui["similar-more"].disabled = false;
    }
  }
}

async function loadItemTexts() {
  const id = state.itemId;
  const list = ui["item-texts"];
  if (id === null || list.dataset.loadedFor === String(id)) return;
  list.dataset.loadedFor = String(id);
  list.replaceChildren(el("li", { class: "muted", text: "Loading…" }));
  try {
    const page = await api(`/v1/items/${encodeURIComponent(id)}/texts${query([["k", 5]])}`);
    if (state.itemId !== id) return;
    list.replaceChildren();
    const scoreOf = (hit) => hit.itm_score ?? hit.itc_score ?? hit.score ?? -Infinity;
    const hits = [...(page.hits || [])].sort((a, b) => scoreOf(b) - scoreOf(a));
    for (const hit of hits) {
      list.append(
        el("li", { "data-testid": "item-text", "data-score": scoreOf(hit) },
          el("a", { href: `#/item/${encodeURIComponent(hit.item_id)}`, text: hit.text || itemName(hit) }),
          el("span", { class: "muted details-only", text: ` ${hit.kind || ""} · ${formatScore(scoreOf(hit))}` })),
      );
    }
    if (!list.children.length) list.append(el("li", { class: "muted", text: "No catalog texts yet." }));
  } catch (error) {
    delete list.dataset.loadedFor;
    list.replaceChildren(el("li", { class: "error-inline", text: error.message }));
  }
}

async function ask(event) {
  event.preventDefault();
  const question = ui["ask-input"].value.trim();
  const id = state.itemId;
  if (!question || id === null) {
    ui["ask-answer"].textContent = "Type a question first.";
    ui["ask-input"].focus();
    return;
  }
  ui["ask-submit"].disabled = true;
  ui["ask-answer"].classList.remove("error-inline");
  ui["ask-answer"].textContent = "Thinking…";
  try {
    const result = await api(`/v1/items/${encodeURIComponent(id)}/ask`, { method: "POST", json: { question } });
    if (state.itemId !== id) return;
    ui["ask-answer"].replaceChildren(el("span", { class: "muted", text: "Answer: " }),
      el("strong", { "data-testid": "ask-answer-text", text: result.answer ?? "" }));
  } catch (error) {
    ui["ask-answer"].classList.add("error-inline");
    ui["ask-answer"].textContent = error.message;
    if (error.code === "vqa_unavailable") show(ui["ask-form"], false);
  } finally {
    ui["ask-submit"].disabled = false;
  }
}

function closeItem() {
  if (state.navigated && history.length > 1) history.back();
  else location.hash = "#/";
}

// ---------------------------------------------------------------------------------------------
// Upload

async function upload(event) {
  event.preventDefault();
  const form = ui["upload-form"];
  setError(ui["upload-error"], null);
  show(ui["upload-result"], false);
  const file = ui["upload-file"].files[0];
  const key = ui["upload-key"].value.trim();
  if (!file) {
    setError(ui["upload-error"], "Choose a picture to add.");
    ui["upload-file"].focus();
    return;
  }
  const problem = fileProblem(file, pictureField.limit);
  if (problem) {
    setError(ui["upload-error"], problem);
    return;
  }
  if (!key) {
    setError(ui["upload-error"], "Enter the API key: adding items needs it.");
    ui["upload-key"].focus();
    return;
  }
  storeKey(key);
  const body = new FormData();
  body.append("file", file, file.name || "image");
  for (const name of ["sku", "title", "description", "category", "brand", "price", "currency", "tags"]) {
    const value = String(form.elements[name].value || "").trim();
    if (value) body.append(name, name === "currency" ? value.toUpperCase() : value);
  }
  ui["upload-submit"].disabled = true;
  setStatus(ui["upload-status"], true);
  try {
    const item = await api("/v1/items", { method: "POST", body, key });
    const link = el("a", { href: `#/item/${encodeURIComponent(item.item_id)}`, "data-testid": "upload-item-link",
      text: itemName(item) });
    ui["upload-result"].replaceChildren(`Added item ${item.item_id}: `, link, ". It is searchable now.");
    show(ui["upload-result"], true);
    for (const name of ["sku", "title", "description", "price", "tags"]) form.elements[name].value = "";
    pictureField.reset();
    loadFacets();
  } catch (error) {
    let message = error.message;
    if (error.code === "unauthorized") message = `${message} Check the API key.`;
    setError(ui["upload-error"], message);
    if (error.status === 401) storeKey("");
  } finally {
    ui["upload-submit"].disabled = false;
    setStatus(ui["upload-status"], false);
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

let currentView = null;

function showView(name) {
  show(ui["search-view"], name === "search");
  show(ui["item-view"], name === "item");
  show(ui["upload-view"], name === "upload");
  currentView = name;
}

function route({ initial = false } = {}) {
  const next = parseRoute();
  const previous = currentView;
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

/** Shows the search an address stands for; runs it unless it is already on screen. */
function showSearch(search, { force = false } = {}) {
  applyControls(search);
  if (!hasQuery(search)) {
    if (state.search && state.search.kind === "image" && !force) return false;
    clearImageQuery({ keepResults: true });
    showHome();
    return false;
  }
  if (!force && state.search && state.search.kind !== "image" && sameSearch(state.search.state, search)) return false;
  clearImageQuery({ keepResults: true });
  runSearch({ kind: kindOf(search), state: search });
  return true;
}

/**
 * Shows the search view for an image search (a file cannot live in the address). From another view
 * this adds a history entry (so Back returns there); on the search view it rewrites the address.
 */
function goToSearchView() {
  const hash = "#/";
  if (currentView !== "search") {
    showView("search"); // before the hashchange, so route() sees nothing to do
    state.itemId = null;
    document.title = "blipsearch";
    history.pushState(null, "", hash);
  } else if (location.hash !== hash) {
    history.replaceState(null, "", hash);
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
    if (!hasFiles(event) || currentView === "upload") return;
    event.preventDefault();
    dragDepth += 1;
    show(ui["drop-overlay"], true);
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    if (currentView === "upload" && !ui["upload-drop"].contains(event.target)) event.dataTransfer.dropEffect = "none";
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
    if (currentView === "upload") return;
    const file = firstImageFile(event.dataTransfer.files);
    if (file) startImageSearch(file);
    else setError(ui.error, "Drop an image file (JPEG, PNG, WebP, GIF…).");
  });

  // Paste an image from the clipboard (not while typing in the upload form).
  document.addEventListener("paste", (event) => {
    if (currentView === "upload") return;
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
    const target = currentView === "item" ? ui["item-title"] : currentView === "upload" ? $("#upload-heading") : ui["results-heading"];
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
    if (currentView === "item") {
      event.preventDefault();
      closeItem();
    } else if (currentView === "upload") {
      event.preventDefault();
      location.hash = "#/";
    }
  });

  window.addEventListener("hashchange", () => route());
}

let pictureField = null;

function start() {
  collectUi();
  applyDetails(storedDetails());
  pictureField = createPictureField({
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
