// Small DOM helpers and formatters shared by the views: building elements, showing and hiding,
// status and error lines, prices, scores, dates, and the picture addresses of an item.

export const $ = (selector, root = document) => root.querySelector(selector);
export const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

export function el(tag, attributes = {}, ...children) {
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

export function show(node, visible = true) {
  node.hidden = !visible;
}

export function setStatus(node, busy, text) {
  show(node, busy);
  if (text) $(".status-text", node).textContent = text;
}

export function setError(node, error) {
  if (!error) {
    node.textContent = "";
    show(node, false);
    return;
  }
  node.textContent = error instanceof Error ? error.message : String(error);
  show(node, true);
}

export function formatScore(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "–";
}

export function formatPrice(price, currency) {
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

export function itemName(item) {
  return item.title || item.sku || `Item ${item.item_id}`;
}

export function thumbnailUrl(item) {
  return item.thumbnail_url || `/v1/items/${encodeURIComponent(item.item_id)}/thumbnail?size=256`;
}

/** The thumbnail endpoint at another size (it serves 64, 128, 256 and 512 px JPEGs). */
export function sizedThumbnailUrl(item, size) {
  const url = new URL(thumbnailUrl(item), location.href);
  url.searchParams.set("size", String(size));
  return url.href;
}

export function imageUrl(item) {
  return item.image_url || `/v1/items/${encodeURIComponent(item.item_id)}/image`;
}

export function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}
