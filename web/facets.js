// The catalog's facets (GET /v1/facets) build the filter controls, the example queries, the demo
// model notice and the upload size limit; the footer says how many items are indexed.

import { state, ui } from "./app-state.js";
import { $, el, show } from "./dom.js";
import { api } from "./http.js";
import { applyControls, renderChips } from "./results-view.js";
import { DEFAULTS, searchHash } from "./url-state.js";

export async function loadFacets() {
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
    state.pictureField.setLimit(facets.max_upload_bytes);
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
