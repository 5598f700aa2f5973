"""Keyword search: the words a user typed against the catalog's full-text documents.

An image encoder cannot know brand names, model numbers or SKUs; the keyword documents
(`blipsearch.storage.keyword`) can. The user's text is never query syntax here: it is split on
whitespace into terms, and each term is matched as a plain phrase (its words adjacent, in order), so
"AB-1234" finds that SKU, "1234" a part of it, and `title:foo OR *` is just three words to look for.
Items match if they contain any term; more terms, rarer terms and terms in the SKU, title or brand
rank higher. English stopwords ("a", "the", "with": `stopwords.py`) are not searched for unless the
query is made of nothing else.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from blipsearch.errors import InvalidInputError
from blipsearch.search.stopwords import content_terms
from blipsearch.storage.catalog import Catalog

MAX_TERMS = 32
"""Terms beyond this are ignored: a pasted paragraph still searches, with a bounded query."""
MAX_TERM_CHARS = 200
"""Longer terms are cut: no real word is that long, and the databases ignore over-long tokens."""
_WORD_CHAR = re.compile(r"[^\W_]")


def _printable(query: str) -> str:
    """Control characters become spaces; lone surrogates and invisible format characters go.

    Neither database can take a NUL or a lone surrogate, and they are never part of a word.
    """
    kept: list[str] = []
    for char in query:
        category = unicodedata.category(char)
        if category == "Cc":
            kept.append(" ")
        elif category not in ("Cs", "Cf"):
            kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


def query_terms(query: str) -> list[str]:
    """The distinct terms of a user's text, in order; terms without a letter or digit are dropped."""
    terms: list[str] = []
    seen: set[str] = set()
    for raw in _printable(query).split():
        term = raw[:MAX_TERM_CHARS]
        key = term.casefold()
        if key in seen or not _WORD_CHAR.search(term):
            continue
        seen.add(key)
        terms.append(term)
        if len(terms) == MAX_TERMS:
            break
    return terms


class KeywordSearch:
    """Full-text search over one catalog; documents are kept in step by the catalog's own writes."""

    def __init__(self, catalog: Catalog, *, stopwords: bool = True) -> None:
        """`stopwords` False searches for every term, stopwords included (`keyword_stopwords`)."""
        self.catalog = catalog
        self.stopwords = stopwords

    def search(
        self, query: str, limit: int, *, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """(item id, score) best first (higher is better; equal scores by id).

        `allowed_ids` restricts the results to these items (for example those passing a filter);
        an empty sequence allows none. A query of only punctuation finds nothing; an empty one is
        refused, because it is almost always a caller's bug rather than a search.
        """
        if not query or not query.strip():
            raise InvalidInputError("The keyword query is empty; type a word, brand, model number or SKU.")
        if limit < 1:
            raise InvalidInputError(f"The result limit must be at least 1, not {limit}.")
        terms = query_terms(query)
        if self.stopwords:
            terms = content_terms(terms)
        if not terms:
            return []
        return self.catalog.keyword_search(terms, limit, allowed_ids)
