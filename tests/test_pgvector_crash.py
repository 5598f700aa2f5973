"""The indexer killed with SIGKILL at random moments while it writes to PostgreSQL + pgvector.

With pgvector the vectors are rows written in the item's own transaction, so there is no index
file to catch up: after every kill, the vector rows must be exactly the indexed items' rows, no
more and no less, and a re-run must resume without re-embedding what was committed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from test_indexer_crash import _check_consistent, _cli, _env, kill_mid_run
from vector_rows import assert_vector_rows_match

from imagesets import write_broken_images, write_valid_images

KILLS = 20


def _settled(engine: Engine) -> int:
    """Items the indexer has committed so far (0 before its first migration created the table)."""
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM items WHERE status IN ('indexed', 'failed')"
            return int(connection.execute(text(query)).scalar_one())
    except SQLAlchemyError:
        return 0


def test_sigkill_at_random_moments_loses_nothing(
    tmp_path: Path, tiny_checkpoints, empty_postgres_url: str
) -> None:
    """Each kill lands after this run committed an item of its own and before the last one; the
    process is frozen (SIGSTOP) before the count, so the count is exactly what the kill leaves."""
    root = tmp_path / "photos"
    valid = len(write_valid_images(root, 3 * KILLS, seed=21))  # a kill may land after several commits
    broken = len(write_broken_images(root / "z-broken"))
    data_dir = tmp_path / "data"
    env = {**_env(data_dir, tiny_checkpoints, None, empty_postgres_url), "BLIPSEARCH_INDEX_CHUNK_ITEMS": "1"}
    engine = create_engine(empty_postgres_url)
    rng = random.Random(29)
    settled = 0
    try:
        for kill in range(KILLS):
            settled = kill_mid_run(root, env, lambda: _settled(engine), settled, valid + broken, rng, kill)
            assert_vector_rows_match(engine)
        rerun = _cli("index", str(root), "--no-progress", "--json", env=env)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        report = json.loads(rerun.stdout)
        assert report["unchanged"] >= settled - broken, report  # nothing committed is embedded again
        assert report["embedded"] <= valid + broken - settled
        assert_vector_rows_match(engine)
        _check_consistent(data_dir, env, valid, broken, empty_postgres_url)
        assert not (data_dir / "indexes").exists(), "a pgvector run writes no index files"
    finally:
        engine.dispose()
