"""A small shop for the browse, sort and total tests: every price, date and relevance is planted.

Ten indexed items (plus one still pending, which nothing may list): the ITC embeddings fall in
similarity to QUERY with the index, two items have no price, two share a price, the creation
times are in an order unrelated to the ids, and two brands hold characters of the filter grammar
(a comma, an operator). Import it as `from shop_catalog import ...` (see `imagesets.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
from sqlalchemy import update

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemMetadata, ItemWrite
from blipsearch.storage.schema import Item, ItemStatus

from imagesets import write_valid_images

QUERY = "a red dress with white dots"
PRICES: list[Decimal | None] = [
    Decimal(30),
    None,
    Decimal(10),
    Decimal(30),
    Decimal(20),
    None,
    Decimal(5),
    Decimal(40),
    Decimal(10),
    Decimal(25),
]
HOURS = [3, 7, 0, 9, 1, 5, 2, 8, 4, 6]
"""Creation time of item i, in hours after BASE_TIME."""
BASE_TIME = datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
COMMA_BRAND = "Acme, Inc."
OPERATOR_BRAND = "<=50 Labs"


@dataclass
class Shop:
    ids: list[int]
    """Catalog ids of items 0..9, in index order."""
    embeddings: np.ndarray
    query_vector: np.ndarray

    def index_of(self, item_id: int) -> int:
        return self.ids.index(item_id)

    def relevance(self, among: list[int] | None = None) -> list[int]:
        """Ids by cosine to the query (best first), by brute force."""
        scores = self.embeddings @ self.query_vector
        order = sorted(range(len(self.ids)), key=lambda i: (-float(scores[i]), self.ids[i]))
        ranked = [self.ids[i] for i in order]
        return [item_id for item_id in ranked if among is None or item_id in among]

    def category(self, name: str) -> list[int]:
        return [item_id for index, item_id in enumerate(self.ids) if _category(index) == name]


def _category(index: int) -> str:
    return "shoes" if index % 2 == 0 else "bags"


def _brand(index: int) -> str:
    return {3: COMMA_BRAND, 4: OPERATOR_BRAND}.get(index, "plain")


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def write_shop(catalog: Catalog, retrieval: RetrievalModel, photos: Path) -> Shop:
    paths = write_valid_images(photos, len(PRICES) + 1, seed=77)
    query_vector = retrieval.embed_texts([QUERY])[0]
    rng = np.random.default_rng(11)
    embeddings = np.stack(
        [
            _unit(
                (1.0 - 0.09 * index) * query_vector
                + 0.09 * index * _unit(rng.normal(size=query_vector.shape))
            )
            for index in range(len(paths))
        ]
    )
    writes = [
        ItemWrite(
            source=str(path),
            origin=str(path.parent),
            status=ItemStatus.INDEXED if index < len(PRICES) else ItemStatus.PENDING,
            file=FileFacts(f"{index:064x}", path.stat().st_size, path.stat().st_mtime, "PNG", 32, 32),
            embedding=embeddings[index] if index < len(PRICES) else None,
            model_fingerprint=retrieval.fingerprint if index < len(PRICES) else None,
            metadata=ItemMetadata(
                external_id=f"SHOP-{index}",
                title=f"shop item {index}",
                brand=_brand(index),
                category=_category(index),
                price=PRICES[index] if index < len(PRICES) else Decimal(1),
            ),
        )
        for index, path in enumerate(paths)
    ]
    ids = catalog.write(writes)
    with catalog.sessions() as session, session.begin():
        for index, item_id in enumerate(ids[: len(PRICES)]):
            session.execute(
                update(Item)
                .where(Item.id == item_id)
                .values(created_at=BASE_TIME + timedelta(hours=HOURS[index]))
            )
    return Shop(ids=ids[: len(PRICES)], embeddings=embeddings[: len(PRICES)], query_vector=query_vector)


def expected_order(shop: Shop, ranked: list[int], sort: str) -> list[int]:
    """The sort rule written out: price with missing prices last, or newest; ties keep `ranked`'s order."""
    position = {item_id: rank for rank, item_id in enumerate(ranked)}

    def key(item_id: int) -> tuple[object, ...]:
        index = shop.index_of(item_id)
        if sort == "newest":
            return (-HOURS[index], position[item_id])
        price = PRICES[index]
        signed = (price if sort == "price_asc" else -price) if price is not None else Decimal(0)
        return (price is None, signed, position[item_id])

    return sorted(ranked, key=key)
