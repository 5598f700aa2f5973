// The upload view (#/upload): sends a new item with its picture and fields, with the API key.

import { state, ui } from "./app-state.js";
import { el, itemName, setError, setStatus, show } from "./dom.js";
import { loadFacets } from "./facets.js";
import { api, storeKey } from "./http.js";
import { fileProblem } from "./upload-form.js";

export async function upload(event) {
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
  const problem = fileProblem(file, state.pictureField.limit);
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
    state.pictureField.reset();
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
