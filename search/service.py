"""The query service: one object that answers every query mode, used by the CLI and the API.

Two-stage retrieval, as BLIP intends it:

1. **Candidates.** Text queries: ITC vectors (cosine over the image index), keywords (full-text over
   titles, descriptions, captions, SKUs, brands, tags) or both fused by reciprocal rank
   (`mode=hybrid`, the default). Image queries: ITC image-to-image or image-to-text. A metadata
   filter restricts the candidates exactly (the vector index answers over the matching ids only).
   Keyword and hybrid modes drop candidates below the relevance floors and put exact hits (SKU,
   title or brand equal to the query) first: search/ranking_rules.py.
2. **Re-ranking.** The first `rerank_k` candidates of a text query (a depth fixed per deployment:
   search/rerank_depth.py) after the exact hits are scored by the ITM head
   (the text cross-attending into each image's vision tokens) and ordered by that probability
   alone; everything after the shortlist keeps its first-stage order. ITM and ITC are not summed:
   ITM is a calibrated match probability, ITC a cosine on another scale, and ITM is the better
   judge wherever it runs. The shortlist is the same for every page of a query, so pages never
   overlap or skip. Image-to-text lookups are re-ranked the same way (the query image against
   each candidate text); image-to-image has no ITM (it needs a text) and is ITC only.

Every hit carries its ITC score (also for keyword-only hits, computed from the index), its ITM
score when re-ranked, its keyword score when matched, the final rank, and its stored caption.
Equal scores are ordered by item id, so a query always returns the same order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from sqlalchemy import select, tuple_

from blipsearch.errors import InvalidInputError
from blipsearch.images import decode_image
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel, validate_texts
from blipsearch.search.batching import current_ticket
from blipsearch.search.browse import browse_page
from blipsearch.search.captioning import CaptionWriter
from blipsearch.search.filters import matching_item_ids
from blipsearch.search.fusion import reciprocal_rank_fusion
from blipsearch.search.keyword import KeywordSearch
from blipsearch.search.model_work import ModelWork, QueryImage
from blipsearch.search.ordering import sort_ranked
from blipsearch.search.query_cache import LruCache
from blipsearch.search.ranking_rules import exact_order, keyword_above_floor, pin_first, vector_above_floor
from blipsearch.search.rerank import ItmReranker
from blipsearch.search.results import (
    SORT_KEYS,
    ImageHit,
    QueryMode,
    SearchOptions,
    SearchPage,
    TextHit,
    Total,
    item_summary,
)
from blipsearch.search.vision import FileVisionTokens, vision_token_source
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.index_content import text_vector_ids
from blipsearch.storage.match_keys import ExactKind
from blipsearch.storage.schema import TEXT_SLOTS, ItemText
from blipsearch.storage.store_choice import open_vector_store
from blipsearch.storage.vector_store import VectorStore

log = logging.getLogger(__name__)

EXACT_LIMIT = 1000
"""Most exact hits one query pins first (a brand may cover the whole catalog); the rest of them
follow in their first-stage order."""


@dataclass
class _Ranked:
    """First-stage order: ids best first with whatever scores produced them."""

    ids: list[int]
    itc: dict[int, float] = field(default_factory=dict)
    keyword: dict[int, float] = field(default_factory=dict)
    fused: dict[int, float] = field(default_factory=dict)
    capped: bool = False
    """A depth limit, not the candidates running out, ended a list: more may match."""
    exact: dict[int, ExactKind] = field(default_factory=dict)
    """Exact hits (SKU, title or brand equal to the query); they lead `ids` and are never re-ranked."""


class SearchService:
    """Answers queries from the last committed index generation, caught up with the catalog."""

    def __init__(
        self,
        settings: Settings,
        model: RetrievalModel,
        catalog: Catalog,
        *,
        captioner: Captioner | None = None,
        vision: FileVisionTokens | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` (seconds) paces the generation check, times the re-rank depth's calibration and
        the re-rank safety deadline: a test that must not depend on the machine's speed passes one
        it advances itself."""
        self.settings = settings
        self.clock = clock
        self.model = model
        self.catalog = catalog
        self.captions = CaptionWriter(settings, model, catalog, captioner)
        self.work = ModelWork(settings, model, lambda: self.captions.captioner)
        """Query-time forwards, shared by concurrent requests (search/batching.py)."""
        self.captions.work = self.work
        self._decode_slots = threading.BoundedSemaphore(settings.max_concurrent_decodes)
        """Query decodes at once: each may hold up to max_query_pixels of RGB in memory."""
        self.vision = vision or vision_token_source(model, settings)
        self.keyword = KeywordSearch(catalog, stopwords=settings.keyword_stopwords)
        self.store: VectorStore = open_vector_store(
            settings,
            catalog,
            fingerprint=model.fingerprint,
            dim=model.embedding_dim,
            writer=False,
            clock=clock,
        )
        self.query_vectors: LruCache[np.ndarray] = LruCache(settings.query_cache_entries)
        self.reranker = ItmReranker(settings, model, catalog, self.vision, self.work, clock=clock)
        self.itm_cache = self.reranker.itm_cache

    @classmethod
    def open(cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> SearchService:
        """Load the retrieval model and catalog the settings name (the captioner loads on first use)."""
        model = RetrievalModel.load(settings.retrieval_model, settings)
        return cls(settings, model, Catalog.open(settings), clock=clock)

    def close(self) -> None:
        self.work.close()
        self.catalog.close()

    def refresh(self) -> int:
        """Apply catalog changes made since the last query (new, changed, deleted items)."""
        return self.store.refresh()

    def checkpoint(self) -> bool:
        """Persist what searches see, so a restart need not replay the API's own writes.

        The API's uploads, edits and deletes reach a FAISS store only in memory until then; a
        pgvector store has nothing to persist (its vectors were written with the rows).
        """
        return self.store.checkpoint()

    # Query modes -------------------------------------------------------------------------

    def text_to_images(self, text: str, options: SearchOptions | None = None) -> SearchPage:
        options = options or SearchOptions()
        query = validate_texts([text])[0]
        self._check_page(options)
        mode: QueryMode = options.mode or self.settings.search_mode
        timings: dict[str, float] = {}
        # Model work needs no index state: it runs before the lock, not inside it.
        started = time.perf_counter()
        vector = self._text_vector(query)
        timings["encode"] = time.perf_counter() - started
        with self.store.searching():
            self.store.refresh()
            allowed = self._allowed(options, timings)
            full_k = self.reranker.depth(options)
            rerank_k = _shed(full_k)
            depth = max(options.offset + options.k + 1, full_k, self._sort_depth(options))
            ranked = self._first_stage(query, vector, mode, depth, allowed, timings)
        pinned = len(ranked.exact)  # exact hits lead; ITM orders only what follows them
        # a sorted page's tie order is the re-ranked order on every page, so all pages re-rank
        reranked = (
            bool(rerank_k)
            and (options.offset < pinned + rerank_k or options.sort != "relevance")
            and len(ranked.ids) > pinned
        )
        itm: dict[int, float] = {}
        deadline_hit = False
        if reranked:
            started = time.perf_counter()
            outcome = self.reranker.images_for_text(query, ranked.ids[pinned:], rerank_k, ranked.itc)
            ranked.ids = ranked.ids[:pinned] + outcome.ids
            itm, deadline_hit = outcome.itm, outcome.deadline_hit
            timings["rerank"] = time.perf_counter() - started
        total = self._sort(ranked, options)
        page = self._image_page(mode, ranked, itm, options, reranked, timings)
        page.reranked_count = len(itm)
        page.rerank_deadline_hit = deadline_hit
        page.rerank_shed = rerank_k < full_k
        page.sort, page.total = options.sort, total
        return page

    def browse(self, options: SearchOptions | None = None) -> SearchPage:
        """No query: the indexed items the filters match, in `options.sort` order, exactly counted."""
        options = options or SearchOptions()
        self._check_page(options)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        page = browse_page(
            self.catalog, options, caption_missing=self.captions.caption_missing, timings=timings
        )
        timings["browse"] = time.perf_counter() - started
        return page

    def _sort_depth(self, options: SearchOptions) -> int:
        return 0 if options.sort == "relevance" else self.settings.sort_candidates

    def _sort(self, ranked: _Ranked, options: SearchOptions) -> Total:
        """Re-order the relevant candidates by the sort key (search/ordering.py); their count."""
        if options.sort == "relevance":
            return Total(len(ranked.ids), exact=not ranked.capped)
        cut = self.settings.sort_candidates
        capped = ranked.capped or len(ranked.ids) > cut
        ranked.ids = sort_ranked(self.catalog, ranked.ids[:cut], options.sort)
        return Total(len(ranked.ids), exact=not capped)

    def _text_vector(self, query: str) -> np.ndarray:
        cached = self.query_vectors.get(query)
        if cached is not None:
            return cached
        vector = self.work.embed_texts([query])[0].copy()
        vector.setflags(write=False)
        self.query_vectors.put(query, vector)
        return vector

    def image_to_images(
        self,
        image: Image.Image | bytes | None = None,
        *,
        item_id: int | None = None,
        options: SearchOptions | None = None,
    ) -> SearchPage:
        """Images like an uploaded image, or like an item already in the catalog ("more like this")."""
        options = options or SearchOptions()
        self._check_page(options)
        timings: dict[str, float] = {}
        vector = self._image_query_vector(image, item_id, timings)
        with self.store.searching():
            self.store.refresh()
            allowed = self._allowed(options, timings)
            depth = options.offset + options.k + 1
            itself = int(item_id is not None)  # the item is not a result of "more like this"
            started = time.perf_counter()
            scores, ids = self.store.images.search(vector[None, :], depth + itself, allowed_ids=allowed)
            timings["vector"] = time.perf_counter() - started
        order, itc = _ordered(scores[0], ids[0])
        if item_id is not None:
            order = [found for found in order if found != item_id][:depth]
        page = self._image_page("vector", _Ranked(ids=order, itc=itc), {}, options, False, timings)
        page.total = Total(len(order), exact=len(order) < depth)
        return page

    def image_to_texts(
        self,
        image: Image.Image | bytes | None = None,
        *,
        item_id: int | None = None,
        options: SearchOptions | None = None,
    ) -> SearchPage:
        """The catalog's texts (titles, descriptions, captions) closest to an image."""
        options = options or SearchOptions()
        self._check_page(options)
        timings: dict[str, float] = {}
        decoded = self._decode_query(image) if image is not None else None
        query_image = self._image_query(decoded, item_id, timings)
        vector = query_image.vector if isinstance(query_image, QueryImage) else query_image
        with self.store.searching():
            self.store.refresh()
            allowed_items = self._allowed(options, timings)
            allowed = text_vector_ids(allowed_items) if allowed_items is not None else None
            full_k = self.reranker.depth(options)
            rerank_k = _shed(full_k)
            noisy = set() if options.include_noisy else self.catalog.noisy_text_ids()
            # noisy texts stay in the index (originals are never dropped), so fetch past them
            depth = max(options.offset + options.k + 1, full_k) + len(noisy)
            started = time.perf_counter()
            scores, ids = self.store.texts.search(vector[None, :], depth, allowed_ids=allowed)
            timings["vector"] = time.perf_counter() - started
        order, itc = _ordered(scores[0], ids[0])
        order = [vector_id for vector_id in order if vector_id not in noisy]
        rows = self._text_rows(order)
        order = [vector_id for vector_id in order if vector_id in rows]
        itm: dict[int, float] = {}
        reranked = bool(rerank_k) and options.offset < rerank_k and bool(order)
        if reranked:
            started = time.perf_counter()
            tokens = query_image.tokens if isinstance(query_image, QueryImage) else None
            order, itm = self.reranker.texts_for_image(tokens, item_id, order, rows, rerank_k, itc)
            timings["rerank"] = time.perf_counter() - started
        page_ids = order[options.offset : options.offset + options.k]
        shed = rerank_k < full_k
        items = {
            item.id: item for item in self.catalog.items_by_ids(sorted({i // TEXT_SLOTS for i in page_ids}))
        }
        hits = [
            TextHit(
                item_id=vector_id // TEXT_SLOTS,
                kind=rows[vector_id].kind,
                text=rows[vector_id].text,
                rank=options.offset + position + 1,
                score=itm.get(vector_id, itc[vector_id]),
                itc_score=itc[vector_id],
                itm_score=itm.get(vector_id),
                item=item_summary(items.get(vector_id // TEXT_SLOTS)),
            )
            for position, vector_id in enumerate(page_ids)
        ]
        more = len(order) > options.offset + options.k
        # the fetch went past the noisy texts: it was cut only if it came back full
        complete = len(scores[0][ids[0] >= 0]) < depth
        return SearchPage(
            "vector",
            hits,
            options.k,
            options.offset,
            options.offset + options.k if more else None,
            reranked,
            timings,
            reranked_count=len(itm),
            rerank_shed=shed,
            total=Total(len(order), exact=complete),
        )

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Captions of images outside the catalog (`blipsearch describe`), never stored."""
        return self.captions.caption(images)

    # Stages ------------------------------------------------------------------------------

    def _check_page(self, options: SearchOptions) -> None:
        if not 1 <= options.k <= self.settings.max_k:
            raise InvalidInputError(f"k must be between 1 and {self.settings.max_k}, not {options.k}.")
        if not 0 <= options.offset <= self.settings.max_offset:
            raise InvalidInputError(
                f"offset must be between 0 and {self.settings.max_offset}, not {options.offset}."
            )
        if options.rerank_k is not None and not 1 <= options.rerank_k <= 1000:
            raise InvalidInputError(f"rerank_k must be between 1 and 1000, not {options.rerank_k}.")
        if options.mode is not None and options.mode not in ("vector", "keyword", "hybrid"):
            raise InvalidInputError(f"mode must be vector, keyword or hybrid, not {options.mode!r}.")
        if options.sort not in SORT_KEYS:
            raise InvalidInputError(f"sort must be one of {', '.join(SORT_KEYS)}, not {options.sort!r}.")

    def _allowed(self, options: SearchOptions, timings: dict[str, float]) -> np.ndarray | None:
        if not options.filters:
            return None
        started = time.perf_counter()
        allowed = matching_item_ids(self.catalog, options.filters)
        timings["filter"] = time.perf_counter() - started
        return allowed

    def _first_stage(
        self,
        query: str,
        vector: np.ndarray,
        mode: QueryMode,
        depth: int,
        allowed: np.ndarray | None,
        timings: dict[str, float],
    ) -> _Ranked:
        if allowed is not None and not len(allowed):
            return _Ranked(ids=[])
        ranked = _Ranked(ids=[])
        vector_ids: list[int] = []
        keyword_ids: list[int] = []
        side_depth = max(depth, self.settings.hybrid_candidates) if mode == "hybrid" else depth
        allowed_list = allowed.tolist() if allowed is not None else None
        vector_capped = keyword_capped = False
        if mode in ("keyword", "hybrid"):
            started = time.perf_counter()
            ranked.exact = dict(self.catalog.exact_matches(query, EXACT_LIMIT, allowed_ids=allowed_list))
            matched = self.keyword.search(query, side_depth, allowed_ids=allowed_list)
            found = keyword_above_floor(matched, self.settings.keyword_floor)
            timings["keyword"] = time.perf_counter() - started
            keyword_ids = [item_id for item_id, _ in found]
            ranked.keyword = dict(found)
            keyword_capped = len(matched) >= side_depth and len(found) == len(matched)
        # A product code: the image side has no notion of one, and the vectors nearest to the
        # code's text are noise a shopper would scroll past.
        product_code = mode == "hybrid" and "sku" in ranked.exact.values()
        if mode in ("vector", "hybrid") and not product_code:
            started = time.perf_counter()
            scores, ids = self.store.images.search(vector[None, :], side_depth, allowed_ids=allowed)
            timings["vector"] = time.perf_counter() - started
            vector_ids, ranked.itc = _ordered(scores[0], ids[0])
            vector_capped = len(vector_ids) >= side_depth
            if mode == "hybrid":
                kept = vector_above_floor(vector_ids, ranked.itc, self.settings.vector_floor)
                # a cut inside the fetched list ends it: everything not fetched scores lower still
                vector_capped = vector_capped and len(kept) == len(vector_ids)
                vector_ids = kept
        ranked.capped = vector_capped or keyword_capped
        if mode == "vector":
            ranked.ids = vector_ids
        elif mode == "keyword":
            ranked.ids = keyword_ids
        else:
            fused = reciprocal_rank_fusion([vector_ids, keyword_ids])
            ranked.ids = [item_id for item_id, _ in fused]
            ranked.fused = dict(fused)
        for item_id in [*ranked.ids, *ranked.exact]:
            if item_id not in ranked.itc:
                try:
                    ranked.itc[item_id] = float(self.store.images.vector(item_id) @ vector)
                except KeyError:
                    continue
        if ranked.exact:
            ranked.ids = pin_first(exact_order(ranked.exact, ranked.itc), ranked.ids)
        return ranked

    def _decode_query(self, image: Image.Image | bytes) -> Image.Image:
        if isinstance(image, Image.Image):
            return image
        side = self.model.image_size
        with self._decode_slots:
            return decode_image(
                image,
                max_pixels=self.settings.max_image_pixels,
                name="the query image",
                at_least=(side, side),
                max_decoded_pixels=self.settings.max_query_pixels,
            ).image

    def _image_query_vector(
        self, image: Image.Image | bytes | None, item_id: int | None, timings: dict[str, float]
    ) -> np.ndarray:
        query = self._image_query(image, item_id, timings)
        return query.vector if isinstance(query, QueryImage) else query

    def _image_query(
        self, image: Image.Image | bytes | None, item_id: int | None, timings: dict[str, float]
    ) -> np.ndarray | QueryImage:
        """A catalog item's stored vector, or an uploaded image's vector and vision tokens (one
        vision pass serves both the ITC search and the ITM re-rank)."""
        if (image is None) == (item_id is None):
            raise InvalidInputError("Give either a query image or the id of an item, not both or neither.")
        started = time.perf_counter()
        if item_id is not None:
            ids, vectors, _, _ = self.catalog.vectors_for_items([item_id], self.model.fingerprint)
            if not len(ids):
                raise InvalidInputError(f"Item {item_id} is not an indexed item of this catalog.")
            timings["encode"] = time.perf_counter() - started
            return vectors[0]
        assert image is not None
        query = self.work.query_images([self._decode_query(image)])[0]
        timings["encode"] = time.perf_counter() - started
        return query

    def _text_rows(self, vector_ids: list[int]) -> dict[int, ItemText]:
        if not vector_ids:
            return {}
        keys = [(i // TEXT_SLOTS, i % TEXT_SLOTS) for i in vector_ids]
        with self.catalog.sessions() as session:
            rows = session.scalars(
                select(ItemText).where(tuple_(ItemText.item_id, ItemText.slot).in_(keys))
            ).all()
            session.expunge_all()
        return {row.item_id * TEXT_SLOTS + row.slot: row for row in rows}

    def _image_page(
        self,
        mode: str,
        ranked: _Ranked,
        itm: dict[int, float],
        options: SearchOptions,
        reranked: bool,
        timings: dict[str, float],
    ) -> SearchPage:
        page_ids = ranked.ids[options.offset : options.offset + options.k]
        started = time.perf_counter()
        items = {item.id: item for item in self.catalog.items_by_ids(page_ids)}
        page_ids = [item_id for item_id in page_ids if item_id in items]
        captions = (
            self.captions.caption_missing([items[i] for i in page_ids]) if options.generate_captions else {}
        )
        timings["fetch"] = time.perf_counter() - started
        hits = []
        for position, item_id in enumerate(page_ids):
            itc = ranked.itc.get(item_id)
            base = ranked.fused.get(item_id, ranked.keyword.get(item_id) if mode == "keyword" else itc)
            hits.append(
                ImageHit(
                    item_id=item_id,
                    rank=options.offset + position + 1,
                    score=float(itm.get(item_id, base if base is not None else 0.0)),
                    itc_score=itc,
                    itm_score=itm.get(item_id),
                    keyword_score=ranked.keyword.get(item_id),
                    exact=item_id in ranked.exact,
                    caption=captions.get(item_id, items[item_id].caption),
                    item=item_summary(items[item_id]),
                )
            )
        more = len(ranked.ids) > options.offset + options.k
        next_offset = options.offset + options.k if more else None
        return SearchPage(mode, hits, options.k, options.offset, next_offset, reranked, timings)


def _shed(depth: int) -> int:
    """The re-ranking depth this request may use: all of it unless admission shed some under load."""
    ticket = current_ticket()
    return ticket.shed_depth(depth) if ticket is not None and depth else depth


def _ordered(scores: np.ndarray, ids: np.ndarray) -> tuple[list[int], dict[int, float]]:
    """Valid hits best first, equal scores by id: the same query always gives the same order."""
    pairs = sorted(
        (
            (float(score), int(vector_id))
            for score, vector_id in zip(scores, ids, strict=True)
            if vector_id >= 0
        ),
        key=lambda pair: (-pair[0], pair[1]),
    )
    return [vector_id for _, vector_id in pairs], {vector_id: score for score, vector_id in pairs}
