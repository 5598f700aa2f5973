// blipsearch web UI: one ES module, no build step, no dependencies. Talks to the API over HTTP only.
//
// Routes (client side, in the URL hash):
//   #/            search (text or image), filters, results
//   #/?q=TEXT     the same, running a text search on load
//   #/item/ID     one item: metadata, caption, question box, "More like this"
//   #/upload      add an item (needs the API key)

const PAGE_SIZE = 20;
const SIMILAR_SIZE = 12;
const KEY_STORAGE = "blipsearch.apiKey";

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
  // the search on screen: {kind: "text", q} or {kind: "image", file}; its options and filters
  search: null,
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
    show(ui["ask-form"], Boolean(facets.vqa) && state.itemId !== null);
    document.documentElement.dataset.facets = "loaded";
    updateFooter();
  } catch (error) {
    document.documentElement.dataset.facets = "failed";
    ui["footer-info"].textContent = `Filters unavailable: ${error.message}`;
  }
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

function currentOptions() {
  const filters = [];
  const category = ui["filter-category"].value;
  const brand = ui["filter-brand"].value;
  const min = ui["filter-price-min"].value.trim();
  const max = ui["filter-price-max"].value.trim();
  if (category) filters.push(`category=${category}`);
  if (brand) filters.push(`brand=${brand}`);
  if (min !== "") filters.push(`price>=${min}`);
  if (max !== "") filters.push(`price<=${max}`);
  return {
    filters,
    mode: ui["option-mode"].value,
    rerank: ui["option-rerank"].checked,
    caption: ui["option-caption"].checked,
  };
}

function searchRequest(search, offset, signal) {
  const options = search.options;
  const common = [
    ["k", PAGE_SIZE],
    ["offset", offset],
    ...options.filters.map((filter) => ["filter", filter]),
  ];
  if (search.kind === "image") {
    const body = new FormData();
    body.append("file", search.file, search.file.name || "image");
    return api(`/v1/search/image${query(common)}`, { method: "POST", body, signal });
  }
  const params = [["q", search.q], ...common, ["rerank", options.rerank], ["mode", options.mode]];
  return api(`/v1/search${query(params)}`, { signal });
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
  setStatus(ui.status, true, append ? "Loading more results…" : "Searching…");
  ui.results.setAttribute("aria-busy", "true");
  ui["more-results"].disabled = true;
  if (!append) ui.summary.textContent = "";
  try {
    const page = await searchRequest(search, offset, controller.signal);
    if (state.controller !== controller) return;
    if (!append) ui.results.replaceChildren();
    renderHits(ui.results, page.hits || [], { showScores: true, showCaptions: search.options.caption });
    state.nextOffset = page.next_offset ?? null;
    show(ui["more-results"], state.nextOffset !== null && (page.hits || []).length > 0);
    ui.summary.textContent = describePage(search, page, ui.results.children.length);
    if (!ui.results.children.length) {
      ui.summary.textContent = "No results. Try other words, fewer filters, or another picture.";
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

function describePage(search, page, shown) {
  const what = search.kind === "image" ? `pictures like ${search.file.name || "your image"}` : `“${search.q}”`;
  const parts = [`${shown} result${shown === 1 ? "" : "s"} for ${what}`];
  if (page.reranked) parts.push("re-ranked by ITM");
  if (page.rerank_deadline_hit) parts.push(`re-ranking stopped early (${page.reranked_count} scored)`);
  if (page.mode && search.kind === "text") parts.push(`${page.mode} search`);
  const timings = page.timings_ms || {};
  const total =
    typeof timings.total === "number"
      ? timings.total
      : Object.values(timings).reduce((sum, value) => (typeof value === "number" ? sum + value : sum), 0);
  if (total > 0) parts.push(`${Math.round(total)} ms`);
  if (search.options.filters.length) parts.push(`filters: ${search.options.filters.join(", ")}`);
  return parts.join(" · ");
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

  const scores = el("p", { class: "card-scores", "data-testid": "result-scores" });
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
  const data = { "data-item-id": hit.item_id, "data-sku": hit.sku, "data-category": hit.category, "data-price": hit.price };
  return el("li", { class: "card", "data-testid": "result-card", ...data }, link, scores);
}

function startTextSearch() {
  const q = ui["search-input"].value.trim();
  if (!q) {
    setError(ui.error, "Type something to search for, or search by image.");
    ui["search-input"].focus();
    return;
  }
  clearImageQuery({ keepResults: true });
  runSearch({ kind: "text", q, options: currentOptions() });
  goToSearchView(q);
}

function startImageSearch(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    goToSearchView();
    setError(ui.error, `“${file.name}” is not an image.`);
    return;
  }
  showImageQuery(file);
  runSearch({ kind: "image", file, options: currentOptions() });
  goToSearchView();
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
    state.search = null;
    ui.results.replaceChildren();
    ui.summary.textContent = "";
    show(ui["more-results"], false);
    show(ui["empty-state"], true);
  }
}

/** Re-runs the search on screen with the current filters and options. */
function refreshSearch() {
  if (!state.search) return;
  const options = currentOptions();
  // Enter in a price box fires "change" and then "submit": run that search once
  if (state.controller && JSON.stringify(options) === JSON.stringify(state.search.options)) return;
  runSearch({ ...state.search, options });
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

  try {
    const item = await api(`/v1/items/${encodeURIComponent(id)}`, { signal: controller.signal });
    if (state.itemController !== controller) return;
    renderItem(item);
    show(ui.item, true);
    ui["item-title"].focus({ preventScroll: false });
    loadSimilar(id, controller, { append: false });
  } catch (error) {
    if (error.name === "AbortError" || state.itemController !== controller) return;
    setError(ui["item-error"], error);
  } finally {
    if (state.itemController === controller) setStatus(ui["item-status"], false);
  }
}

function renderItem(item) {
  const name = itemName(item);
  ui.item.dataset.itemId = String(item.item_id);
  document.title = `${name} · blipsearch`;
  ui["item-title"].textContent = name;
  // a 512 px JPEG rendition: originals may be huge, or in a format browsers do not show (TIFF)
  ui["item-image"].src = sizedThumbnailUrl(item, 512);
  ui["item-image"].alt = item.caption ? `${name}: ${item.caption}` : name;
  if (item.width && item.height) {
    const scale = Math.min(1, 512 / Math.max(item.width, item.height));
    ui["item-image"].width = Math.round(item.width * scale);
    ui["item-image"].height = Math.round(item.height * scale);
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
    ["Format", item.format],
    ["Status", item.status],
    ["Item id", item.item_id],
    ["Added", formatDate(item.created_at)],
    ["Updated", formatDate(item.updated_at)],
  ];
  for (const [name, value] of Object.entries(item.attributes || {})) {
    rows.push([name, typeof value === "object" ? JSON.stringify(value) : value]);
  }
  const meta = ui["item-meta"];
  meta.replaceChildren();
  for (const [label, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    meta.append(el("div", { class: "meta-row" }, el("dt", { text: label }), el("dd", { text: String(value) })));
  }
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
    for (const hit of page.hits || []) {
      const score = hit.itm_score ?? hit.itc_score ?? hit.score;
      list.append(
        el("li", { "data-testid": "item-text" },
          el("a", { href: `#/item/${encodeURIComponent(hit.item_id)}`, text: hit.text || itemName(hit) }),
          el("span", { class: "muted", text: ` ${hit.kind || ""} · ${formatScore(score)}` })),
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
    for (const name of ["file", "sku", "title", "description", "price", "tags"]) form.elements[name].value = "";
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
    const q = next.params.get("q");
    if (q && (!state.search || state.search.kind !== "text" || state.search.q !== q)) {
      ui["search-input"].value = q;
      runSearch({ kind: "text", q, options: currentOptions() });
    } else if (previous === "item" && state.lastCardId) {
      // back from an item: return focus to the card that opened it
      const card = ui.results.querySelector(`a[data-item-id="${CSS.escape(state.lastCardId)}"]`);
      if (card) card.focus();
    }
  }
}

/**
 * Shows the search view for a search that has just started. From another view this adds a history
 * entry (so Back returns to the item); on the search view it only rewrites the address, so that a
 * reload or a shared link repeats a text search.
 */
function goToSearchView(q = null) {
  const hash = q ? `#/?q=${encodeURIComponent(q)}` : "#/";
  if (currentView !== "search") {
    showView("search"); // before the hashchange, so route() sees nothing to do
    state.itemId = null;
    document.title = "blipsearch";
    location.hash = hash;
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
    if (currentView === "upload") event.dataTransfer.dropEffect = "none";
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
    if (event.target.matches("select, input[type=checkbox], input[type=number]")) refreshSearch();
  });
  ui["filters-form"].addEventListener("reset", () => {
    setTimeout(refreshSearch, 0); // after the form has reset its controls
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

function start() {
  collectUi();
  // On a phone the filters start folded so that the results come first.
  if (window.matchMedia("(max-width: 899px)").matches) byTestId("filters").open = false;
  wire();
  route({ initial: true });
  loadFacets();
  document.documentElement.dataset.ready = "true";
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
