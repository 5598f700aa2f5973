"""The paraphrase queries: they name real catalog emoji without the emoji's own names, and the hit
rate counts what a person would accept."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from blipsearch.train.paraphrases import PARAPHRASE_QUERIES, paraphrase_hit_rate

CATALOG = Path(__file__).resolve().parents[1] / "demo" / "catalog" / "catalog.csv"


def test_every_accepted_emoji_is_in_the_demo_catalog_and_no_query_quotes_its_names() -> None:
    with open(CATALOG, encoding="utf-8", newline="") as handle:
        names = {row["title"].rsplit(" (", 1)[0].lower() for row in csv.DictReader(handle)}
    assert len(PARAPHRASE_QUERIES) >= 50
    assert len({query for query, _ in PARAPHRASE_QUERIES}) == len(PARAPHRASE_QUERIES)
    for query, accepted in PARAPHRASE_QUERIES:
        assert accepted and accepted <= names, (query, accepted - names)
        words = set(query.split())
        assert not any(set(name.split()) <= words for name in accepted), query


def test_hit_rate_counts_an_accepted_emoji_within_the_top_k_only() -> None:
    queries = len(PARAPHRASE_QUERIES)
    names = ["filler"] * 10 + [next(iter(PARAPHRASE_QUERIES[0][1]))]
    images = np.eye(11, dtype=np.float32)
    vectors = np.zeros((queries, 11), dtype=np.float32)
    vectors[:, :10] = np.linspace(1.0, 0.5, 10)  # ten distractors ahead of everything else
    vectors[0, 10] = 0.8  # the first query's emoji is 5th among its images
    assert paraphrase_hit_rate(vectors, images, names, k=5) == 1 / queries
    assert paraphrase_hit_rate(vectors, images, names, k=4) == 0.0
