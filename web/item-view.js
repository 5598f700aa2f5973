// The item view (#/item/ID): the picture, its metadata, "More like this", the catalog texts that
// describe it, and questions about the picture (when the server has a VQA model).

import { state, ui } from "./app-state.js";
import {
  el, formatDate, formatPrice, formatScore, imageUrl, itemName, setError, setStatus, show, sizedThumbnailUrl,
} from "./dom.js";
import { api, query } from "./http.js";
import { renderHits } from "./result-cards.js";
import { DEFAULTS, searchHash } from "./url-state.js";

const SIMILAR_SIZE = 12;
const ITEM_ID = /^[1-9][0-9]{0,18}$/;

export async function openItem(id) {
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

export async function loadSimilar(id, controller, { append }) {
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

export async function loadItemTexts() {
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

export async function ask(event) {
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

export function closeItem() {
  if (state.navigated && history.length > 1) history.back();
  else location.hash = "#/";
}
