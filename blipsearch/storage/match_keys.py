"""Exact-match keys: an item's SKU, title and brand in one normal form, stored and indexed.

A shopper who types a product code, a product's full title or a brand expects that product first
(`blipsearch.search.exact`). "Equal" has to ignore case, surrounding and repeated whitespace and
Unicode composition, and must answer the same on SQLite and PostgreSQL. Neither database can do
that alike in SQL (SQLite's `lower` folds ASCII only, neither collapses whitespace the same way),
so the normal form is computed here, in Python, once per write, and stored beside the field
(`items.sku_key`, `title_key`, `brand_key`, each under a plain B-tree index). A lookup then is
three indexed equality tests, identical on both databases (`Catalog.exact_matches`). Migration
0008 adds the columns and fills them for existing rows with a frozen copy of this function.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

MAX_KEY_CHARS = 300
"""Longer normalised fields get no key: nobody types a 300-character title to find it exactly."""

ExactKind = Literal["sku", "title", "brand"]
KIND_ORDER: tuple[ExactKind, ...] = ("sku", "title", "brand")
"""How exact hits of different kinds order among themselves: the most specific first."""


def match_key(text: str | None) -> str | None:
    """NFC, case-folded, whitespace collapsed and trimmed; None for nothing or an over-long text."""
    if not text:
        return None
    key = " ".join(unicodedata.normalize("NFC", text).casefold().split())
    key = unicodedata.normalize("NFC", key)  # casefold can decompose ("ß" stays, "İ" splits)
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    return key
