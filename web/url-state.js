// The search on screen as a URL: `#/?q=...&category=...&sort=...`, so that a reload, a shared link
// and Back/Forward give the same results. Only values that differ from the defaults are written,
// always in the same order, so that the same search always has the same address.

export const SORTS = ["relevance", "price_asc", "price_desc", "newest"];
export const MODES = ["hybrid", "vector", "keyword"];

export const DEFAULTS = Object.freeze({
  q: "",
  like: "",
  category: "",
  brand: "",
  min: "",
  max: "",
  sort: "relevance",
  mode: "hybrid",
  rerank: true,
  caption: true,
});

const ORDER = ["q", "like", "category", "brand", "min", "max", "sort", "mode", "rerank", "caption"];
const ITEM_ID = /^[1-9][0-9]{0,18}$/;
const PRICE = /^\d+(\.\d+)?$/;

/** A search state from URL parameters; unknown or malformed values fall back to the defaults. */
export function parseSearchState(params) {
  const text = (name) => (params.get(name) || "").trim();
  const state = { ...DEFAULTS };
  state.q = text("q");
  state.like = ITEM_ID.test(text("like")) ? text("like") : "";
  state.category = text("category");
  state.brand = text("brand");
  state.min = PRICE.test(text("min")) ? text("min") : "";
  state.max = PRICE.test(text("max")) ? text("max") : "";
  state.sort = SORTS.includes(text("sort")) ? text("sort") : DEFAULTS.sort;
  state.mode = MODES.includes(text("mode")) ? text("mode") : DEFAULTS.mode;
  state.rerank = text("rerank") !== "0";
  state.caption = text("caption") !== "0";
  return state;
}

/** The hash (`#/?...`, or `#/` for the empty search) that stands for `state`. */
export function searchHash(state) {
  const params = new URLSearchParams();
  for (const name of ORDER) {
    const value = state[name];
    if (value === DEFAULTS[name] || value === undefined || value === null) continue;
    if (typeof value === "boolean") params.set(name, value ? "1" : "0");
    else params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `#/?${text}` : "#/";
}

/** Whether the state asks for results: words, an item to find more like, or a filter (browse). */
export function hasQuery(state) {
  return Boolean(state.q || state.like || hasFilters(state));
}

export function hasFilters(state) {
  return Boolean(state.category || state.brand || state.min !== "" || state.max !== "");
}

/** The filters in the API's string grammar (`filter=` query parameters). */
export function filterStrings(state) {
  const filters = [];
  if (state.category) filters.push(`category=${state.category}`);
  if (state.brand) filters.push(`brand=${state.brand}`);
  if (state.min !== "") filters.push(`price>=${state.min}`);
  if (state.max !== "") filters.push(`price<=${state.max}`);
  return filters;
}

/** The filters as structured conditions (POST /v1/search/query): a value is never parsed as grammar. */
export function structuredFilters(state) {
  const filters = [];
  if (state.category) filters.push({ field: "category", op: "eq", value: state.category });
  if (state.brand) filters.push({ field: "brand", op: "eq", value: state.brand });
  if (state.min !== "") filters.push({ field: "price", op: "ge", value: state.min });
  if (state.max !== "") filters.push({ field: "price", op: "le", value: state.max });
  return filters;
}

/** Why the price range can match nothing, or null. `catalog` is the facets' {min, max}. */
export function priceProblem(state, catalog = {}) {
  const min = state.min === "" ? null : Number(state.min);
  const max = state.max === "" ? null : Number(state.max);
  if (min !== null && max !== null && min > max) {
    return { kind: "inverted", text: `The minimum price (${state.min}) is above the maximum (${state.max}): no item can match.` };
  }
  const low = catalog.min === null || catalog.min === undefined ? null : Number(catalog.min);
  const high = catalog.max === null || catalog.max === undefined ? null : Number(catalog.max);
  if (min !== null && high !== null && min > high) {
    return { kind: "empty", text: `No item costs ${state.min} or more: the highest price is ${catalog.max}.` };
  }
  if (max !== null && low !== null && max < low) {
    return { kind: "empty", text: `No item costs ${state.max} or less: the lowest price is ${catalog.min}.` };
  }
  return null;
}
