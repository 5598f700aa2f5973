"""The demo-serve benchmark's report: each variant beside the baseline of the same run, and the
captions of both compared. Timings are not asserted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench import demo_serve


def _row(seconds: float) -> dict[str, object]:
    return {
        "seconds_to_serve": seconds,
        "progress_lines": 3,
        "indexed": "indexed 10 products and 3 broken files (failed with a reason)",
        "load_average_before": 0.5,
        "load_average_after": 1.5,
    }


def test_report_sets_each_variant_beside_the_baseline() -> None:
    report = {
        "machine": {"cpu": "Some CPU", "cores": 2, "gpu": None},
        "when": "2026-12-07T00:00:00Z",
        "limit": None,
        "variants": {"baseline: caption batch 8": _row(300.0), "as shipped": _row(120.0)},
        "same_captions": {"same": 9, "of": 10},
    }
    text = demo_serve.markdown(report)
    assert "| baseline: caption batch 8 | 300.0 | 1.00x |" in text
    assert "| as shipped | 120.0 | 2.50x |" in text
    assert "9 of 10 products" in text and "the whole catalog" in text


def test_captions_are_read_for_captioned_products_only(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "catalog.sqlite3") as connection:
        connection.execute("CREATE TABLE items (source TEXT, caption TEXT)")
        connection.executemany(
            "INSERT INTO items VALUES (?, ?)", [("a.png", "a red apple"), ("broken.png", None)]
        )
    assert demo_serve.captions(tmp_path) == {"a.png": "a red apple"}
