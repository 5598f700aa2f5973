"""The cache benchmark's own code: every store keeps the bound and answers what was stored, and the
report sets each row beside the baseline of the same run. Timings are not asserted."""

from __future__ import annotations

from pathlib import Path

from bench import caches


def test_every_store_answers_what_was_stored_and_keeps_the_bound(tmp_path: Path) -> None:
    shape = (64, 64)  # large enough that diskcache's own database pages fit in the bound
    one = caches.entry(0, shape).nbytes + 128
    for kind, make in caches.available_stores().items():
        store = make(tmp_path / kind.split()[0], 16 * one)
        row = caches.single_process(store, shape, 20, misses_per_query=2)
        assert row["bytes_after"] <= 16 * one, kind
        assert row["get_hit"]["n"] > 0 and row["2_misses_at_full_cache"]["n"] >= 20
        kept = [key for key in range(20, 60) if store.get(key) is not None]
        assert kept and all(caches.whole(store.get(key), key) for key in kept), kind


def test_a_torn_entry_is_told_from_a_whole_one() -> None:
    shape = (4, 8)
    mixed = caches.entry(3, shape, version=1)
    mixed[0, :4] = caches.entry(3, shape, version=2)[0, :4]
    assert caches.whole(caches.entry(3, shape, version=5), 3) and caches.whole(None, 3)
    assert not caches.whole(mixed, 3) and not caches.whole(caches.entry(4, shape), 3)


def test_report_puts_each_row_beside_the_baseline() -> None:
    timing = {"p50_ms": 2.0, "p99_ms": 3.0, "mean_ms": 2.0, "n": 5}
    store = {
        "put_fill": timing,
        "get_hit": timing,
        "get_miss": timing,
        "8_misses_at_full_cache": timing,
        "bytes_after": 10,
        "two_processes": {
            "reads": 3,
            "read_hits": 1,
            "hit_while_writing": timing,
            "miss_while_writing": timing,
            "torn_reads": 0,
            "torn_after_kill": 0,
            "bytes_after_kill_and_evict": 10,
            "bound": 12,
        },
    }
    faster = {**store, "8_misses_at_full_cache": {**timing, "p50_ms": 0.5}}
    report = {
        "machine": {"cpu": "Some CPU", "cores": 2},
        "when": "2026-12-07T00:00:00Z",
        "vision_tokens": {
            "demo": {
                "entries_written": 5,
                "entry_bytes": 2,
                "bound_bytes": 12,
                "glob per eviction (before)": store,
                "ours: indexed files": faster,
            }
        },
        "query_cache": caches.query_caches(1),
    }
    text = caches.markdown(report)
    assert "| glob per eviction (before) |" in text and "| 1.0x |" in text and "| 4.0x |" in text
    assert "Some CPU, 2 cores" in text and "| ours: OrderedDict + lock |" in text
