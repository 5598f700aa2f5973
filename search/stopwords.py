"""English stopwords: words that say nothing about which product is meant, left out of keyword search.

Nearly every catalog text contains "a", "the" or "with", so a keyword match on them alone lists most
of the catalog with scores near zero ("a puppy" found "Negative squared latin capital letter a"),
and hybrid fusion counts such a match like any other. The list is short on purpose: articles,
pronouns, prepositions, conjunctions and auxiliaries, nothing a product name needs. A query made
only of stopwords keeps them ("the" still finds "The Who"), and exact matches on a SKU, title or
brand are looked up on the whole query, so no product becomes unfindable.
"""

from __future__ import annotations

from collections.abc import Sequence

_WORDS = """
a an the and or but nor of to in on at by for with without from into onto over under about
as is are was were be been being am do does did has have had it its this that these those
i me my we our you your he him his she her they them their who whom which what
if then than so not no yes very just there here some any all each
"""
STOPWORDS: frozenset[str] = frozenset(_WORDS.split())
"""Compared case-folded with whole query terms; a term with punctuation ("a-1") is never one."""


def is_stopword(term: str) -> bool:
    return term.casefold() in STOPWORDS


def content_terms(terms: Sequence[str]) -> list[str]:
    """`terms` without stopwords, in order; all of them when every term is a stopword."""
    kept = [term for term in terms if not is_stopword(term)]
    return kept if kept else list(terms)
