// The results view: the search the controls describe, its requests (words, browsing, a picture,
// "more like" an item), the page of result cards with paging and totals, the filter chips and the
// price hint, and the home page shown when there is no search.

import { showView, state, ui } from "./app-state.js";
import { el, setError, setStatus, show } from "./dom.js";
import { ApiError, api, query } from "./http.js";
import { renderHits } from "./result-cards.js";
import { fileProblem } from "./upload-form.js";
import {
  DEFAULTS,
  filterStrings,
  hasQuery,
  priceProblem,
  searchHash,
  structuredFilters,
} from "./url-state.js";

const PAGE_SIZE = 20;

/** The search the controls describe; `like` (more like an item) is kept from the search on screen. */
export function controlsState() {
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
export function applyControls(search) {
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
export async function runSearch(search, { append = false } = {}) {
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
  if (page.rerank_shed) details.push(`busy: re-ranked ${page.reranked_count} instead of all`);
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
export function renderChips(search) {
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

/**
 * Shows `search` by its address: a new address adds a history entry and the hashchange runs it;
 * the same address (a repeated search) runs it again at once.
 */
export function navigateTo(search) {
  const hash = searchHash(search);
  if (location.hash === hash || (hash === "#/" && ["", "#", "#/"].includes(location.hash))) {
    showSearch(search, { force: true });
  } else {
    location.hash = hash;
  }
}

export function startTextSearch() {
  const next = { ...controlsState(), like: "" };
  if (!hasQuery(next)) {
    setError(ui.error, "Type something to search for, choose a filter, or search by image.");
    ui["search-input"].focus();
    return;
  }
  clearImageQuery({ keepResults: true });
  navigateTo(next);
}

export function startImageSearch(file) {
  if (!file) return;
  const problem = fileProblem(file, state.pictureField.limit);
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

export function clearImageQuery({ keepResults = false } = {}) {
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
export function refreshSearch() {
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

/** Shows the search an address stands for; runs it unless it is already on screen. */
export function showSearch(search, { force = false } = {}) {
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
export function goToSearchView() {
  const hash = "#/";
  if (state.view !== "search") {
    showView("search"); // before the hashchange, so route() sees nothing to do
    state.itemId = null;
    document.title = "blipsearch";
    history.pushState(null, "", hash);
  } else if (location.hash !== hash) {
    history.replaceState(null, "", hash);
  }
}
