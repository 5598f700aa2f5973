"""What the indexer and the API hand the catalog to write: an item's new state, field by field.

Plain values, not ORM rows: a batch is assembled while files are decoded and embedded, without a
session open, and `Catalog.write` applies it in one transaction with its change-log entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from blipsearch.storage.schema import SLOT_OF_KIND, Item, ItemStatus, TextKind


@dataclass(frozen=True)
class FileFacts:
    content_hash: str
    size_bytes: int
    file_mtime: float
    format: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class ItemMetadata:
    """The catalog fields a manifest row can carry; None means the field is absent."""

    external_id: str | None = None
    title: str | None = None
    description: str | None = None
    category: str | None = None
    brand: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, item: Item) -> ItemMetadata:
        """What the catalog holds for an item (tags and texts loaded)."""
        return cls(
            external_id=item.external_id,
            title=item.title,
            description=item.description,
            category=item.category,
            brand=item.brand,
            price=item.price,
            currency=item.currency,
            tags=tuple(tag.tag for tag in item.tags),
            attributes=dict(item.attributes or {}),
        )

    def differs_from(self, item: Item) -> bool:
        return (
            self.external_id != item.external_id
            or self.title != item.title
            or self.description != item.description
            or self.category != item.category
            or self.brand != item.brand
            or self.price != item.price
            or self.currency != item.currency
            or tuple(sorted(set(self.tags))) != tuple(tag.tag for tag in item.tags)
            or (self.attributes or None) != (item.attributes or None)
        )


@dataclass(frozen=True)
class TextVector:
    slot: int
    kind: str
    text: str
    vector: np.ndarray


@dataclass
class ItemWrite:
    """One item's new state; fields left None keep what the catalog has."""

    source: str
    origin: str | None
    status: ItemStatus
    item_id: int | None = None
    error: str | None = None
    file: FileFacts | None = None
    embedding: np.ndarray | None = None
    model_fingerprint: str | None = None
    """The model that made `embedding` and `texts`; required with either."""
    metadata: ItemMetadata | None = None
    caption: str | None = None
    caption_fingerprint: str | None = None
    texts: list[TextVector] | None = None
    """None keeps the item's texts; a list (possibly empty) replaces them all, except that CapFilt's
    synthetic texts stay when the list holds only fixed kinds and the image bytes are unchanged
    (they describe the picture, not the metadata); a new image drops them."""


def own_texts(metadata: ItemMetadata | None, caption: str | None) -> list[tuple[int, str, str]]:
    """(slot, kind, text) of the texts an item's metadata and caption give it, in slot order.

    The indexer and the API both derive an item's texts from this, so they agree on which texts
    an item has and never fight over its slots.
    """
    given = (
        (TextKind.TITLE, metadata.title if metadata else None),
        (TextKind.DESCRIPTION, metadata.description if metadata else None),
        (TextKind.CAPTION, caption),
    )
    return [(SLOT_OF_KIND[kind], kind.value, text) for kind, text in given if text]
