"""The hybrid-ranking bench's query classes and report: what it measures is what its report says."""

from __future__ import annotations

from bench.hybrid_ranking import build_queries, emoji_name, render
from blipsearch.storage.schema import Item


def _item(item_id: int, sku: str, title: str, brand: str) -> Item:
    item = Item(source=f"/{item_id}.png", external_id=sku, title=title, brand=brand)
    item.id = item_id
    return item


def test_query_classes_and_their_relevant_items() -> None:
    items = [
        _item(1, "NOTO-1F436", "Dog (Noto)", "Noto"),
        _item(2, "NOTO-1F415", "Dog face (Noto)", "Noto"),
        _item(3, "NOTO-1F34E", "Red apple (Noto)", "Noto"),
    ]
    assert emoji_name("Red apple (Noto)") == "red apple"
    queries = build_queries(items, per_class=2, seed=0)
    by_class: dict[str, list[tuple[str, set[int]]]] = {}
    for kind, query, relevant in queries:
        by_class.setdefault(kind, []).append((query, relevant))
    assert len(by_class["sku"]) == 2 and all(len(rel) == 1 for _, rel in by_class["sku"])
    assert ("Noto", {1, 2, 3}) in by_class["brand"] and ("noto", {1, 2, 3}) in by_class["brand"]
    assert all(query == emoji_name(query) for query, _ in by_class["name"])
    assert ("a puppy", {1, 2}) in by_class["paraphrase"], "'dog' and 'dog face' are accepted for a puppy"
    assert queries == build_queries(items, per_class=2, seed=0), "the sample is seeded"


def test_the_report_names_the_machine_and_every_run() -> None:
    row = {"queries": 2, "mrr": 0.75, "r_at_1": 0.5, "results": 3.0}
    report = {
        "machine": {"cpu": "Test CPU", "cores": 2},
        "k": 50,
        "rerank_k": 8,
        "items": 3,
        "runs": {
            "before": {"code": "/a", "when": "t0", "configs": {"hybrid": {"classes": {"sku": row}}}},
            "after": {"code": "/b", "when": "t1", "configs": {"hybrid": {"classes": {"sku": row}}}},
        },
    }
    text = render(report)
    assert "Test CPU, 2 cores" in text and "## before: /a" in text and "## after: /b" in text
    assert "| hybrid | sku | 2 | 0.750 | 50.0% | 3.0 |" in text
