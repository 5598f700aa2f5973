"""The vision-token store: byte bound, LRU order, content hashes, torn entries, a second process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from blipsearch.storage.vision_cache import VisionTokenCache

SHAPE = (17, 32)
ENTRY = int(np.prod(SHAPE)) * 2 + 128  # float16 values plus the .npy header


def _cache(directory: Path, entries: float) -> VisionTokenCache:
    return VisionTokenCache(directory, int(ENTRY * entries), torch.device("cpu"), torch.float16)


def _tokens(value: float) -> torch.Tensor:
    return torch.full(SHAPE, value, dtype=torch.float16)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_written_tokens_read_back_in_the_model_dtype(tmp_path: Path) -> None:
    cache = VisionTokenCache(tmp_path, ENTRY * 4, torch.device("cpu"), torch.float32)
    assert cache.write(1, "ab" * 32, _tokens(1.5)) == ENTRY
    read = cache.read(1, "ab" * 32)
    assert read is not None and read.dtype == torch.float32 and torch.equal(read, torch.full(SHAPE, 1.5))
    assert cache.read(2, "ab" * 32) is None


def test_a_changed_content_hash_misses(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 4)
    cache.write(7, "aa" * 32, _tokens(1))
    assert cache.read(7, "bb" * 32) is None
    assert cache.read(7, None) is None
    cache.write(7, None, _tokens(2))
    assert torch.equal(cache.read(7, None), _tokens(2))  # type: ignore[arg-type]


def test_eviction_keeps_the_byte_bound(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 10.5)
    for item_id in range(40):
        cache.write(item_id, "cd" * 32, _tokens(item_id))
        cache.evict()
        on_disk = sum(path.stat().st_size for path in tmp_path.glob("*.npy"))
        assert on_disk <= cache.max_bytes
    assert cache.size_bytes() == sum(path.stat().st_size for path in tmp_path.glob("*.npy"))
    assert len(list(tmp_path.glob("*.npy"))) >= int(10.5 * VisionTokenCache.LOW_WATER)
    assert cache.room_bytes() == cache.max_bytes - cache.size_bytes()


def test_eviction_drops_the_least_recently_used_first(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 3.5)
    for item_id in (1, 2, 3):
        cache.write(item_id, None, _tokens(item_id))
    assert cache.read(1, None) is not None
    cache.write(4, None, _tokens(4))
    cache.evict()
    kept = sorted(int(path.name.split("-")[0]) for path in tmp_path.glob("*.npy"))
    assert kept == [1, 4] or kept == [1, 3, 4]
    assert 2 not in kept, "item 2 was the least recently used"


def test_recency_from_another_process_survives_a_fresh_index(tmp_path: Path) -> None:
    writer = _cache(tmp_path, 3.5)
    for item_id in (1, 2, 3):
        writer.write(item_id, None, _tokens(item_id))
        _age(writer.path(item_id, None), 100 - item_id)
    assert writer.read(1, None) is not None  # touches the file: now the most recent
    writer.write(4, None, _tokens(4))
    fresh = _cache(tmp_path, 3.5)  # another process: knows only what a scan shows
    fresh.evict()
    assert not fresh.path(2, None).exists() and fresh.path(1, None).exists()


def test_a_torn_or_foreign_entry_is_deleted_and_missed(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 8)
    cache.write(1, None, _tokens(1))
    whole = cache.path(1, None).read_bytes()
    cache.path(1, None).write_bytes(whole[: len(whole) - 100])  # truncated data
    cache.path(2, None).write_bytes(whole[:50])  # truncated header
    cache.path(3, None).write_bytes(b"")
    np.save(cache.path(4, None), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for item_id in (1, 2, 3, 4):
        assert cache.read(item_id, None) is None
        assert not cache.path(item_id, None).exists()
    cache.write(1, None, _tokens(1))
    assert torch.equal(cache.read(1, None), _tokens(1))  # type: ignore[arg-type]


def test_a_half_written_entry_is_never_read_and_is_cleaned_once_stale(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 8)
    cache.write(1, None, _tokens(1))
    whole = cache.path(1, None).read_bytes()
    fresh = tmp_path / f".{cache.path(2, None).name}.4242.1.tmp"
    stale = tmp_path / f".{cache.path(3, None).name}.4243.1.tmp"
    fresh.write_bytes(whole[:200])
    stale.write_bytes(whole[:200])
    _age(stale, VisionTokenCache.STALE_TEMPORARY_SECONDS + 60)
    assert cache.read(2, None) is None and cache.read(3, None) is None
    assert cache.size_bytes() == ENTRY, "temporary files are not entries"
    assert fresh.exists(), "a writer may still be busy with it"
    assert not stale.exists()


def test_an_old_or_foreign_directory_does_not_crash(tmp_path: Path) -> None:
    (tmp_path / "subfolder.npy").mkdir()
    (tmp_path / "notes.txt").write_text("not an entry")
    os.symlink(tmp_path / "missing", tmp_path / "dangling.npy")
    cache = _cache(tmp_path, 2)
    cache.evict()
    assert cache.read(1, None) is None
    cache.write(1, None, _tokens(1))
    assert cache.read(1, None) is not None
    missing = _cache(tmp_path / "never-created", 2)
    assert missing.size_bytes() == 0 and missing.read(1, None) is None
    missing.evict()


def test_a_zero_bound_stores_nothing(tmp_path: Path) -> None:
    cache = _cache(tmp_path / "cache", 0)
    assert cache.write(1, None, _tokens(1)) == 0
    assert not (tmp_path / "cache").exists()


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from blipsearch.storage.vision_cache import VisionTokenCache
    cache = VisionTokenCache(Path(sys.argv[1]), 1 << 40, torch.device("cpu"), torch.float16)
    rounds = int(sys.argv[2])
    print("ready", flush=True)
    round = 0
    while rounds < 0 or round < rounds:
        for item_id in range(20):
            cache.write(item_id, None, torch.full((17, 32), float(item_id * 100 + round % 100)))
        round += 1
    """
)


def _writer(directory: Path, rounds: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), str(rounds)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _assert_whole(tokens: torch.Tensor | None, item_id: int) -> None:
    if tokens is not None:
        values = set(tokens.flatten().tolist())
        assert len(values) == 1, f"entry {item_id} mixes two writes: {sorted(values)[:4]}"
        assert int(values.pop()) // 100 == item_id


def test_a_reader_never_sees_a_partial_entry_while_another_process_writes_or_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _writer(tmp_path, -1)
    reader = _cache(tmp_path, 1000)
    seen = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline or seen == 0:
        for item_id in range(20):
            tokens = reader.read(item_id, None)
            _assert_whole(tokens, item_id)
            seen += tokens is not None
    writer.send_signal(signal.SIGKILL)  # most likely mid-write: it does nothing else
    writer.wait()
    for item_id in range(20):
        _assert_whole(reader.read(item_id, None), item_id)
    assert "unreadable" not in caplog.text, "a torn entry was visible under its name"
    reader.evict()
    assert reader.size_bytes() == 20 * ENTRY, "the other process's entries are counted once scanned"
    for leftover in tmp_path.glob(".*.tmp"):
        _age(leftover, VisionTokenCache.STALE_TEMPORARY_SECONDS + 60)
    reader.size_bytes()
    assert not list(tmp_path.glob(".*.tmp")), "a scan deletes what a dead writer left"


def test_eviction_counts_another_processes_writes_once_it_rescans(tmp_path: Path) -> None:
    server = _cache(tmp_path, 5.5)
    server.write(100, None, _tokens(1))
    server.evict()  # the first scan: one entry
    assert _writer(tmp_path, 1).wait() == 0  # twenty more, unknown to the server's index
    server.RESCAN_SECONDS = 0.0
    server.evict()
    assert 0 < server.size_bytes() <= server.max_bytes
    assert len(list(tmp_path.glob("*.npy"))) == int(5.5 * VisionTokenCache.LOW_WATER)
