"""Stopwords leave keyword search unless a query has nothing else."""

from __future__ import annotations

from blipsearch.search.stopwords import STOPWORDS, content_terms, is_stopword


def test_stopwords_are_dropped_case_insensitively() -> None:
    assert content_terms(["A", "puppy"]) == ["puppy"]
    assert content_terms(["a", "red", "apple", "With", "the", "dots"]) == ["red", "apple", "dots"]


def test_a_query_of_stopwords_only_keeps_them() -> None:
    assert content_terms(["The", "Who"]) == ["The", "Who"]
    assert content_terms([]) == []


def test_terms_with_punctuation_or_product_words_are_never_stopwords() -> None:
    assert not is_stopword("a-1") and not is_stopword("AB-1234") and not is_stopword("red")
    assert all(word == word.casefold() and word.isalpha() for word in STOPWORDS)
