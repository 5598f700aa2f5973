"""The two caches against the libraries that could replace them: `python -m bench.caches`.

Vision tokens (blipsearch/storage/vision_cache.py) against the store it replaced (the same files,
but every eviction globbed and stat'ed the whole directory: the naive baseline, reproduced here)
and against `diskcache` (SQLite index, LRU policy, values as .npy bytes), for float16 entries of
the demo model's token shape and of BLIP-base's 577 x 768, thousands of entries, a byte bound:
get and put latency on hit and miss, a re-rank miss at a full cache (read, write, evict), a reader
while a second process writes, and entries left whole by a writer killed mid-write. The query
cache (search/query_cache.py) against `cachetools.LRUCache` behind the lock the server's threads
need. diskcache and cachetools are optional here (`pip install diskcache cachetools`); absent,
their rows are left out. Writes bench/results/caches-<machine>-<date>.json and .md.

    python -m bench.caches            # ~5 minutes on 2 CPU cores
    python -m bench.caches --quick    # small counts
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from bench.common import machine
from bench.suite import RESULTS, machine_slug
from bench.timing import latency
from blipsearch.search.query_cache import LruCache
from blipsearch.storage.vision_cache import VisionTokenCache

SHAPES = {"demo (17 x 256)": (17, 256), "BLIP-base (577 x 768)": (577, 768)}


class Store(Protocol):
    def get(self, key: int) -> np.ndarray | None: ...
    def put(self, key: int, array: np.ndarray) -> None: ...
    def evict(self) -> None: ...
    def size_bytes(self) -> int: ...


class Ours:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.cache = VisionTokenCache(directory, max_bytes, torch.device("cpu"), torch.float16)

    def get(self, key: int) -> np.ndarray | None:
        tokens = self.cache.read(key, None)
        return None if tokens is None else tokens.numpy()

    def put(self, key: int, array: np.ndarray) -> None:
        self.cache.write(key, None, torch.from_numpy(array))

    def evict(self) -> None:
        self.cache.evict()

    def size_bytes(self) -> int:
        return self.cache.size_bytes()


class GlobPerEviction(Ours):
    """The store before this benchmark: the same files, a glob and a stat of each per eviction."""

    def evict(self) -> None:
        directory, bound = self.cache.directory, self.cache.max_bytes
        entries = []
        for path in directory.glob("*.npy"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= bound:
                break
            path.unlink(missing_ok=True)
            total -= size

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.cache.directory.glob("*.npy"))


class DiskCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        import diskcache

        self.cache = diskcache.Cache(
            str(directory), size_limit=max_bytes, eviction_policy="least-recently-used"
        )

    def get(self, key: int) -> np.ndarray | None:
        data = self.cache.get(key)
        return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)

    def put(self, key: int, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        self.cache.set(key, buffer.getvalue())

    def evict(self) -> None:
        self.cache.cull()

    def size_bytes(self) -> int:
        return int(self.cache.volume())


STORES: dict[str, Callable[[Path, int], Store]] = {
    "glob per eviction (before)": GlobPerEviction,
    "ours: indexed files": Ours,
    "diskcache 5.6 (LRU)": DiskCache,
}


def available_stores() -> dict[str, Callable[[Path, int], Store]]:
    try:
        import diskcache  # noqa: F401
    except ImportError:
        return {name: make for name, make in STORES.items() if make is not DiskCache}
    return STORES


def entry(key: int, shape: tuple[int, int], version: int = 0) -> np.ndarray:
    """An array every element of which names its key and version: a torn read shows up as mixed
    values (float16 holds these integers exactly)."""
    return np.full(shape, (key % 64) * 32 + version % 32, dtype=np.float16)


def whole(array: np.ndarray | None, key: int) -> bool:
    if array is None:
        return True
    first = array.flat[0]
    return bool((array == first).all()) and int(first) // 32 == key % 64


class CountUnreadable(logging.Handler):
    """Our store turns a torn file into a miss (and a warning): count those as torn reads too."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "unreadable" in record.getMessage()


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def single_process(store: Store, shape: tuple[int, int], count: int, misses_per_query: int) -> dict[str, Any]:
    """Fill to the bound, read hits and misses, then re-rank misses at a full cache."""
    puts = [timed(lambda k=key: store.put(k, entry(k, shape))) for key in range(count)]  # type: ignore[misc]
    store.evict()
    keys = np.random.default_rng(0).permutation(count)[: min(count, 500)]
    hits = [timed(lambda k=int(key): store.get(k)) for key in keys]  # type: ignore[misc]
    misses = [timed(lambda k=key: store.get(k)) for key in range(10**7, 10**7 + 500)]  # type: ignore[misc]
    cycles = []
    next_key = count
    for _ in range(max(20, count // (4 * misses_per_query))):

        def rerank_misses(first: int = next_key) -> None:
            for key in range(first, first + misses_per_query):
                if store.get(key) is None:
                    store.put(key, entry(key, shape))
            store.evict()

        cycles.append(timed(rerank_misses))
        next_key += misses_per_query
    return {
        "put_fill": latency(puts),
        "get_hit": latency(hits),
        "get_miss": latency(misses),
        f"{misses_per_query}_misses_at_full_cache": latency(cycles),
        "bytes_after": store.size_bytes(),
    }


def writer(kind: str, directory: Path, max_bytes: int, shape: tuple[int, int], first: int) -> None:
    """The second process: rewrites the keys `first` to 2 x `first` with new versions, evicting,
    until killed."""
    store = STORES[kind](directory, max_bytes)
    print("ready", flush=True)
    for n in range(10**8):
        key = first + n % first
        store.put(key, entry(key, shape, n // first + 1))
        if n % 8 == 0:
            store.evict()


def two_processes(
    kind: str,
    store: Store,
    directory: Path,
    max_bytes: int,
    shape: tuple[int, int],
    count: int,
    seconds: float,
) -> dict[str, Any]:
    """Read while another process rewrites entries; kill it (mid-write: it does nothing else); check."""
    command = [sys.executable, "-m", "bench.caches", "--writer", kind, str(directory), str(max_bytes)]
    command += [str(shape[0]), str(shape[1]), str(count)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    misses, hits, torn = [], [], 0
    unreadable = CountUnreadable()
    logging.getLogger("blipsearch.storage.vision_cache").addHandler(unreadable)
    deadline = time.monotonic() + seconds
    rng = np.random.default_rng(1)
    while time.monotonic() < deadline:
        key = int(rng.integers(count // 2, count * 2))
        started = time.perf_counter()
        array = store.get(key)
        (misses if array is None else hits).append(time.perf_counter() - started)
        torn += not whole(array, key)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store.evict()
    after_kill = [store.get(key) for key in range(count, count * 2)]
    broken = sum(
        not whole(array, key) for key, array in zip(range(count, count * 2), after_kill, strict=True)
    )
    logging.getLogger("blipsearch.storage.vision_cache").removeHandler(unreadable)
    on_disk = store.size_bytes()
    return {
        "reads": len(misses) + len(hits),
        "read_hits": len(hits),
        "hit_while_writing": latency(hits or [0.0]),
        "miss_while_writing": latency(misses or [0.0]),
        "torn_reads": torn + unreadable.count,
        "torn_after_kill": broken,
        "bytes_after_kill_and_evict": on_disk,
        "bound": max_bytes,
        "within_bound": on_disk <= max_bytes,
    }


def query_caches(repeats: int) -> dict[str, Any]:
    """Recent query embeddings: 4096 entries (the default), 256-d vectors, keys like the service's;
    microseconds per operation, the best of `repeats` passes (a loop: one call is below the clock)."""
    capacity = 4096
    makers: dict[str, Callable[[], Any]] = {"ours: OrderedDict + lock": lambda: LruCache(capacity)}
    try:
        import cachetools

        class LockedLru:
            def __init__(self) -> None:
                self.cache: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(capacity)
                self.lock = threading.Lock()

            def get(self, key: Any) -> Any:
                with self.lock:
                    return self.cache.get(key)

            def put(self, key: Any, value: Any) -> None:
                with self.lock:
                    self.cache[key] = value

        makers[f"cachetools {cachetools.__version__} LRUCache + lock"] = LockedLru
    except ImportError:
        pass
    vector = np.zeros(256, dtype=np.float32)
    keys = [("fingerprint", f"a query of some words {n}", 10) for n in range(capacity * 2)]
    rows = {}
    for name, make in makers.items():
        best: dict[str, float] = {}
        for _ in range(repeats):
            cache = make()
            spans = {
                "put": lambda c=cache: [c.put(key, vector) for key in keys[:capacity]],
                "get_hit": lambda c=cache: [c.get(key) for key in keys[:capacity]],
                "get_miss": lambda c=cache: [c.get(key) for key in keys[capacity:]],
                "put_evicting": lambda c=cache: [c.put(key, vector) for key in keys[capacity:]],
            }
            for op, span in spans.items():
                per_op = timed(span) / capacity * 1e6
                best[op] = min(best.get(op, per_op), per_op)
        rows[name] = {f"{op}_us": round(value, 3) for op, value in best.items()}
    return rows


def run(quick: bool, work: Path) -> dict[str, Any]:
    sizes = {"demo (17 x 256)": 600 if quick else 6000, "BLIP-base (577 x 768)": 60 if quick else 800}
    report: dict[str, Any] = {"machine": machine(), "quick": quick, "vision_tokens": {}}
    for shape_name, shape in SHAPES.items():
        count = sizes[shape_name]
        one = entry(0, shape).nbytes + 128
        bound = int(count * 0.8) * one
        section: dict[str, Any] = {"entries_written": count, "entry_bytes": one, "bound_bytes": bound}
        for kind, make in available_stores().items():
            directory = work / f"{kind.split()[0]}-{shape[0]}"
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            print(f"{shape_name}: {kind}", flush=True)
            store = make(directory, bound)
            os.sync()  # each store starts with no other store's writes still being flushed
            row = single_process(store, shape, count, misses_per_query=8)
            os.sync()
            row["two_processes"] = two_processes(
                kind, store, directory, bound, shape, count, 3 if quick else 10
            )
            section[kind] = row
            shutil.rmtree(directory, ignore_errors=True)
        report["vision_tokens"][shape_name] = section
    report["query_cache"] = query_caches(3 if quick else 20)
    return report


def _ms(row: dict[str, Any]) -> str:
    return f"{row['p50_ms']:.3f} / {row['p99_ms']:.3f}"


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    out = [
        f"# Caches: {info['cpu']}, {info['cores']} cores, {report['when']}",
        "",
        "Milliseconds as p50 / p99; ratios are the baseline's p50 over the row's (above 1: faster than the "
        "baseline), the baseline being the first row of each table, from the same run.",
    ]
    for shape_name, section in report["vision_tokens"].items():
        stores = {k: v for k, v in section.items() if isinstance(v, dict)}
        base = next(iter(stores.values()))
        out += [
            "",
            f"## Vision tokens, {shape_name}: {section['entries_written']} entries of "
            f"{section['entry_bytes']:,} bytes, bound {section['bound_bytes']:,} bytes",
            "",
            "| Store | put (filling) | get hit | get miss | 8 misses at a full cache (get, put, evict) "
            "| x baseline (8 misses) | bytes after / bound |",
            "|---|---|---|---|---|---|---|",
        ]
        key = "8_misses_at_full_cache"
        for name, row in stores.items():
            ratio = base[key]["p50_ms"] / row[key]["p50_ms"]
            out.append(
                f"| {name} | {_ms(row['put_fill'])} | {_ms(row['get_hit'])} | {_ms(row['get_miss'])} "
                f"| {_ms(row[key])} | {ratio:.1f}x | {row['bytes_after']:,} / {section['bound_bytes']:,} |"
            )
        out += [
            "",
            "A second process rewrites the newer half of the keys with new versions (evicting every 8) "
            "while this one reads, then is killed; torn = mixed versions or an entry that failed to parse:",
            "",
            "| Store | reads (hits) | hit while writing | miss while writing | torn reads "
            "| torn after the kill "
            "| bytes after kill + evict / bound |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in stores.items():
            two = row["two_processes"]
            out.append(
                f"| {name} | {two['reads']} ({two['read_hits']}) | {_ms(two['hit_while_writing'])} "
                f"| {_ms(two['miss_while_writing'])} "
                f"| {two['torn_reads']} | {two['torn_after_kill']} "
                f"| {two['bytes_after_kill_and_evict']:,} / {two['bound']:,} |"
            )
    rows = report["query_cache"]
    base = next(iter(rows.values()))
    out += [
        "",
        "## Query cache: 4096 entries, 256-d float32 vectors, tuple keys (microseconds per operation)",
        "",
        "| Cache | put | get hit | get miss | put evicting | x baseline (get hit) "
        "| x baseline (put evicting) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        hit = base["get_hit_us"] / row["get_hit_us"]
        evicting = base["put_evicting_us"] / row["put_evicting_us"]
        out.append(
            f"| {name} | {row['put_us']} | {row['get_hit_us']} | {row['get_miss_us']} "
            f"| {row['put_evicting_us']} | {hit:.2f}x | {evicting:.2f}x |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        kind, directory, bound, rows, width, first = sys.argv[2:8]
        writer(kind, Path(directory), int(bound), (int(rows), int(width)), int(first))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.caches",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and markdown go")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="blipsearch-bench-caches-"))
    started = time.time()
    report = run(args.quick, work)
    report["seconds"] = round(time.time() - started, 1)
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stem = f"caches-{machine_slug(report['machine'])}-{time.strftime('%Y-%m-%d')}" + (
        "-quick" if args.quick else ""
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out / stem}.json and .md")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
