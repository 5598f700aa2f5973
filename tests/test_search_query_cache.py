"""The bounded LRU and the re-rank pace that the query service keeps between queries."""

from __future__ import annotations

import threading

from blipsearch.search.query_cache import LruCache, RerankPace


def test_lru_evicts_the_least_recently_used() -> None:
    cache: LruCache[int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2 and cache.hits == 3 and cache.misses == 1


def test_zero_capacity_stores_nothing() -> None:
    cache: LruCache[int] = LruCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0


def test_lru_stays_bounded_under_threads() -> None:
    cache: LruCache[int] = LruCache(50)

    def work(offset: int) -> None:
        for index in range(500):
            cache.put((offset, index), index)
            cache.get((offset, index // 2))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


def test_pace_probes_then_fits_the_budget() -> None:
    pace = RerankPace()
    assert pace.affordable(1.0, 10, scored=0) == 1, "no history: probe with one candidate"
    pace.observe(1, 0.1)
    assert pace.affordable(0.55, 10, scored=1) == 5
    assert pace.affordable(5.0, 3, scored=1) == 3
    assert pace.affordable(0.01, 3, scored=1) == 0
    assert pace.affordable(0.01, 3, scored=0) == 1, "always at least one candidate per query"
    pace.observe(2, 0.4)  # 0.2 s each now: the average moves towards it
    assert 0.1 < (pace.seconds_per_candidate or 0) < 0.2
