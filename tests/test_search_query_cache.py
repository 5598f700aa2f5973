"""The bounded LRU that the query service keeps between queries."""

from __future__ import annotations

import threading

from blipsearch.search.query_cache import LruCache


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
