// Talking to the API: fetch + JSON with the API key, and the API's error bodies as ApiError.
// The key lives in sessionStorage, so it is forgotten with the tab.

const KEY_STORAGE = "blipsearch.apiKey";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "network" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function storeKey(value) {
  try {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled: the key lives in the field only */
  }
}

/** fetch + JSON, turning the API's `{"error": {...}}` bodies and network failures into ApiError. */
export async function api(path, { method = "GET", body, json, signal, key } = {}) {
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

/** A query string (`?a=1&b=2`) from [name, value] pairs; empty values are left out. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of params) {
    if (value !== undefined && value !== null && value !== "") search.append(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
