// Result cards: a thumbnail, the name, brand, category and price, the scores (shown with the
// details), and an "Exact match" badge. The results view and the item page's "More like this" use them.

import { state } from "./app-state.js";
import { el, formatPrice, formatScore, itemName, thumbnailUrl } from "./dom.js";
import { markUpscaled } from "./lightbox.js";

export function renderHits(list, hits, { showScores, showCaptions = true }) {
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
