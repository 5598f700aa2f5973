"""The indexer killed with SIGKILL at many points; every re-run must end consistent.

Each crash is real: the indexer process (the CLI, as a user runs it) sends itself SIGKILL at a
named point (`BLIPSEARCH_FAULT_INJECTION`), or is killed from outside after a random delay. After
each kill a plain re-run must finish, and `index verify` must report every image either indexed
exactly once or failed with a reason, with no phantom or duplicate ids.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from imagesets import TEST_MAX_PIXELS, write_broken_images, write_valid_images
from index_runs import kill_mid_run, settled_items

# (fault, whether SQL already holds committed items when it fires, so the re-run must resume).
# The first two index writes commit the empty indexes of a fresh data directory; writes 3 and 4
# are the first checkpoint (images, then texts).
CRASH_POINTS = [
    ("index.embedded:2", False),  # embedded a batch, nothing written yet
    ("catalog.before_commit:2", False),  # inside the first item transaction
    ("catalog.after_commit:3", True),  # SQL committed, index not yet told
    ("index_write.temp_written:1", False),  # first index bytes in a temp file
    ("index_write.temp_written:4", True),  # checkpoint: text index bytes in a temp file
    ("index_write.renamed:3", True),  # checkpoint: new file in place, manifest still old
    ("index_write.manifest_committed:3", True),  # new generation committed, old file not yet removed
]


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    root = tmp_path_factory.mktemp("crash-photos")
    valid = write_valid_images(root, 20, seed=11)
    broken = write_broken_images(root / "z-broken")  # walked last: early batches embed real work
    return root, len(valid), len(broken)


def _env(
    data_dir: Path, tiny_checkpoints, fault: str | None = None, database_url: str | None = None
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    env.update(
        BLIPSEARCH_DATA_DIR=str(data_dir),
        BLIPSEARCH_RETRIEVAL_MODEL=str(tiny_checkpoints.retrieval),
        BLIPSEARCH_DEVICE="cpu",
        BLIPSEARCH_OFFLINE="1",
        BLIPSEARCH_IMAGE_BATCH_SIZE="2",
        BLIPSEARCH_INDEX_CHUNK_ITEMS="8",
        BLIPSEARCH_INDEX_CHECKPOINT_ITEMS="4",
        BLIPSEARCH_MAX_IMAGE_PIXELS=str(TEST_MAX_PIXELS),
        BLIPSEARCH_DECODE_WORKERS="2",
    )
    if database_url:
        env["BLIPSEARCH_DATABASE_URL"] = database_url
    if fault:
        env["BLIPSEARCH_FAULT_INJECTION"] = fault
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blipsearch", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _check_consistent(
    data_dir: Path, env: dict[str, str], valid: int, broken: int, database_url: str
) -> None:
    verified = _cli("index", "verify", "--json", env=env)
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["ok"], report
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT source, status, error FROM items")).all()
    engine.dispose()
    assert len(rows) == len({source for source, _, _ in rows}) == valid + broken
    statuses = [status for _, status, _ in rows]
    assert statuses.count("indexed") == valid and statuses.count("failed") == broken
    assert all(error for _, status, error in rows if status == "failed")
    assert report["checked"]["images_vectors"] == valid


def _crash_then_recover(
    tmp_path: Path, collection, tiny_checkpoints, fault: str, database_url: str | None, resumes: bool
) -> None:
    root, valid, broken = collection
    data_dir = tmp_path / "data"
    url = database_url or f"sqlite:///{data_dir / 'catalog.sqlite3'}"
    crashed = _cli("index", str(root), "--no-progress", env=_env(data_dir, tiny_checkpoints, fault, url))
    assert crashed.returncode == -signal.SIGKILL, (fault, crashed.returncode, crashed.stderr[-2000:])
    rerun = _cli(
        "index", str(root), "--no-progress", "--json", env=_env(data_dir, tiny_checkpoints, None, url)
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = json.loads(rerun.stdout)
    if resumes:
        assert resumed["embedded"] < valid and resumed["unchanged"] > 0, resumed
    _check_consistent(data_dir, _env(data_dir, tiny_checkpoints, None, url), valid, broken, url)
    index_dir = data_dir / "indexes"  # none on PostgreSQL with pgvector: the vectors are rows there
    leftovers = [p.name for p in index_dir.iterdir() if ".tmp" in p.name] if index_dir.exists() else []
    assert not leftovers, leftovers


@pytest.mark.parametrize(("fault", "resumes"), CRASH_POINTS)
def test_sigkill_at_a_named_point_then_rerun_is_consistent(
    tmp_path: Path, collection, tiny_checkpoints, fault: str, resumes: bool
) -> None:
    _crash_then_recover(tmp_path, collection, tiny_checkpoints, fault, None, resumes)


def test_sigkill_inside_a_sql_transaction_on_each_database(
    tmp_path: Path, collection, tiny_checkpoints, database_url: str
) -> None:
    _crash_then_recover(
        tmp_path, collection, tiny_checkpoints, "catalog.before_commit:3", database_url, resumes=True
    )


def test_sigkill_from_outside_at_random_moments(tmp_path: Path, collection, tiny_checkpoints) -> None:
    """Each kill lands in the middle of the work: after this run committed items of its own and
    before the last one, at a random moment within a chunk (start-up alone would test nothing).

    The process is frozen (SIGSTOP) before it is counted and killed, so however fast the machine
    runs it on, what the count sees is exactly what the kill leaves.
    """
    root, valid, broken = collection
    data_dir = tmp_path / "data"
    database = data_dir / "catalog.sqlite3"
    url = f"sqlite:///{database}"
    env = {**_env(data_dir, tiny_checkpoints, None, url), "BLIPSEARCH_INDEX_CHUNK_ITEMS": "2"}
    rng = random.Random(5)
    settled = 0
    for kill in range(3):
        settled = kill_mid_run(root, env, lambda: settled_items(database), settled, valid + broken, rng, kill)
    rerun = _cli("index", str(root), "--no-progress", "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout)["unchanged"] >= settled - broken  # what the kills left is kept
    _check_consistent(data_dir, env, valid, broken, url)
