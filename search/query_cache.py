"""Memory the query service keeps between queries: recent query embeddings, ITM scores, re-rank pace.

Search traffic repeats itself (popular queries, the next page of the same query), and on a CPU a
query embedding costs milliseconds and an ITM score far more; both are pure functions of the
model and their inputs, so a bounded LRU answers repeats without changing a result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class LruCache(Generic[Value]):
    """A thread-safe least-recently-used map bounded by entry count; capacity 0 stores nothing.

    The server's request threads share it. `cachetools.LRUCache` is the same ordered-dict
    algorithm without the lock or the hit counters (and refuses capacity 0); bench/caches.py
    measures both, and this one was no slower where it counts (hits, evicting puts).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Value) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RerankPace:
    """How many ITM candidates fit in the time left, learned from the queries before.

    Seconds per candidate (vision tokens plus cross-attention) is an exponential moving average;
    with no history a query probes with one candidate. A query with no score yet always gets one
    candidate scored, so a re-ranked query never comes back unscored and the estimate keeps up
    when the machine gets faster again.
    """

    SMOOTHING = 0.3

    def __init__(self) -> None:
        self.seconds_per_candidate: float | None = None
        self._lock = threading.Lock()

    def affordable(self, seconds_left: float, pending: int, *, scored: int) -> int:
        if pending <= 0:
            return 0
        estimate = self.seconds_per_candidate
        if estimate is None:
            return 1
        fit = int(seconds_left / estimate) if estimate > 0 else pending
        return min(pending, max(fit, 1 if scored == 0 else 0))

    def observe(self, candidates: int, seconds: float) -> None:
        if candidates <= 0:
            return
        sample = seconds / candidates
        with self._lock:
            previous = self.seconds_per_candidate
            self.seconds_per_candidate = (
                sample if previous is None else (1 - self.SMOOTHING) * previous + self.SMOOTHING * sample
            )
