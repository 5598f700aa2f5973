"""The indexer killed with SIGKILL at random moments while it writes to PostgreSQL + pgvector.

With pgvector the vectors are rows written in the item's own transaction, so there is no index
file to catch up: after every kill, the vector rows must be exactly the indexed items' rows, no
more and no less, and a re-run must resume without re-embedding what was committed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from test_indexer_crash import _check_consistent, _cli, _env

from imagesets import write_broken_images, write_valid_images

KILLS = 20


@pytest.fixture
def pg_catalog(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    with engine.begin() as connection:  # an empty database: the run creates and migrates it
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


def _settled(engine: Engine) -> int:
    """Items the indexer has committed so far (0 before its first migration created the table)."""
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM items WHERE status IN ('indexed', 'failed')"
            return int(connection.execute(text(query)).scalar_one())
    except SQLAlchemyError:
        return 0


def _rows_match_items(engine: Engine) -> None:
    with engine.connect() as connection:
        indexed = set(
            connection.execute(
                text("SELECT id FROM items WHERE status = 'indexed' AND embedding IS NOT NULL")
            ).scalars()
        )
        vectors = set(connection.execute(text("SELECT item_id FROM item_vectors")).scalars())
        texts = set(
            connection.execute(
                text(
                    "SELECT item_id * 16 + slot FROM item_texts t JOIN items i ON i.id = t.item_id "
                    "WHERE i.status = 'indexed' AND t.embedding IS NOT NULL"
                )
            ).scalars()
        )
        text_vectors = set(connection.execute(text("SELECT vector_id FROM text_vectors")).scalars())
    assert vectors == indexed, {"no_vector": sorted(indexed - vectors), "stray": sorted(vectors - indexed)}
    assert text_vectors == texts


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, tiny_checkpoints, pg_catalog: str) -> None:
    """Each kill lands after this run committed an item of its own and before the last one; the
    process is frozen (SIGSTOP) before the count, so the count is exactly what the kill leaves."""
    root = tmp_path / "photos"
    valid = len(write_valid_images(root, KILLS + 8, seed=21))
    broken = len(write_broken_images(root / "z-broken"))
    data_dir = tmp_path / "data"
    env = {**_env(data_dir, tiny_checkpoints, None, pg_catalog), "BLIPSEARCH_INDEX_CHUNK_ITEMS": "1"}
    engine = create_engine(pg_catalog)
    rng = random.Random(29)
    settled = 0
    try:
        for kill in range(KILLS):
            process = subprocess.Popen(
                [sys.executable, "-m", "blipsearch", "index", str(root), "--no-progress"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 240
            while _settled(engine) <= settled:
                assert process.poll() is None, f"kill {kill}: ended before committing anything new"
                assert time.monotonic() < deadline, f"kill {kill}: no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            process.send_signal(signal.SIGSTOP)
            now = _settled(engine)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL, f"kill {kill}: had already finished"
            assert settled < now < valid + broken, f"kill {kill}: {settled} -> {now} of {valid + broken}"
            _rows_match_items(engine)
            settled = now
        rerun = _cli("index", str(root), "--no-progress", "--json", env=env)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        report = json.loads(rerun.stdout)
        assert report["unchanged"] >= settled - broken, report  # nothing committed is embedded again
        assert report["embedded"] <= valid + broken - settled
        _rows_match_items(engine)
        _check_consistent(data_dir, env, valid, broken, pg_catalog)
        assert not (data_dir / "indexes").exists(), "a pgvector run writes no index files"
    finally:
        engine.dispose()
