"""Memory the query service keeps between queries: recent query embeddings and ITM scores.

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
