"""What the indexer crash and engine tests share: reading a catalog's vectors, killing a run mid-way.

Import it as `from index_runs import ...` (see `imagesets.py` for why not `tests.index_runs`).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

from blipsearch.storage.vector_codec import decode_vectors, value_width


def catalog_vectors(database_url: str) -> dict[tuple[str, str], np.ndarray]:
    """Every stored vector, keyed by (file name, "image" or the text's kind), as float32.

    Keyed by file name, not source, so that catalogs of the same files in different folders compare.
    """
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            images = connection.execute(
                text("SELECT source, 'image', embedding, embedding_dtype FROM items WHERE status = 'indexed'")
            ).all()
            texts = connection.execute(
                text(
                    "SELECT i.source, t.kind, t.embedding, t.embedding_dtype FROM item_texts t "
                    "JOIN items i ON i.id = t.item_id WHERE i.status = 'indexed'"
                )
            ).all()
    finally:
        engine.dispose()
    vectors: dict[tuple[str, str], np.ndarray] = {}
    for source, kind, blob, dtype in [*images, *texts]:
        vectors[(Path(source).name, kind)] = decode_vectors([blob], dtype, len(blob) // value_width(dtype))[0]
    return vectors


def assert_same_vectors(
    got: dict[tuple[str, str], np.ndarray], want: dict[tuple[str, str], np.ndarray], atol: float = 1e-5
) -> None:
    assert set(got) == set(want), {
        "extra": sorted(set(got) - set(want)),
        "lacking": sorted(set(want) - set(got)),
    }
    differ = [key for key in want if not np.allclose(got[key], want[key], atol=atol)]
    assert not differ, differ


def assert_vectors_within(
    got: dict[tuple[str, str], np.ndarray], want: dict[tuple[str, str], np.ndarray], atol: float = 1e-5
) -> None:
    """Every vector `got` holds is the one `want` holds (`got` may hold fewer: a run cut short)."""
    assert set(got) <= set(want), sorted(set(got) - set(want))
    differ = [key for key in got if not np.allclose(got[key], want[key], atol=atol)]
    assert not differ, differ


def kill_mid_run(
    root: Path,
    env: dict[str, str],
    count: Callable[[], int],
    settled: int,
    total: int,
    rng: random.Random,
    kill: int,
    args: Sequence[str] = (),
) -> int:
    """Run `blipsearch index` (with `args`) until it has committed more than `settled` items, let it
    go on for a random moment, freeze it (SIGSTOP), count, and kill it: however fast the machine,
    the count is exactly what the kill leaves. `count()` reads the committed items; returns that count."""
    process = subprocess.Popen(
        [sys.executable, "-m", "blipsearch", "index", str(root), "--no-progress", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while count() <= settled:
        assert process.poll() is None, f"kill {kill}: the indexer ended before committing anything new"
        assert time.monotonic() < deadline, f"kill {kill}: no progress"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.02))
    process.send_signal(signal.SIGSTOP)
    now = count()
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, f"kill {kill}: the indexer had already finished"
    assert settled < now < total, f"kill {kill}: {settled} -> {now} of {total} items"
    return now


def settled_items(database: Path) -> int:
    """Items the indexer has committed so far (0 before its first transaction created the table).

    Plain sqlite3, so a poll costs about a millisecond and the kill follows a commit closely.
    """
    try:
        connection = sqlite3.connect(database, timeout=30)
    except sqlite3.OperationalError:
        return 0
    try:
        query = "SELECT count(*) FROM items WHERE status IN ('indexed', 'failed')"
        return int(connection.execute(query).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        connection.close()
