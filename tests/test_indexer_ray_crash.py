"""The `--engine ray` driver SIGKILLed at random moments; the catalog never holds a half-written item.

The driver (`blipsearch index SOURCE --engine ray --ray-address ...`, as a user runs it) commits
what the session's Ray cluster (`ray_cluster`) embeds. It is killed from outside, frozen first so
that the count of committed items is exactly what the kill leaves (`kill_mid_run`). After each
kill every indexed item has the vector a local run gives; the next run goes on from there, and
the last one embeds exactly what no run had committed before it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from blipsearch.indexer.pipeline import Indexer
from blipsearch.models.retrieval import RetrievalModel

from imagesets import TEST_MAX_PIXELS, write_valid_images
from index_runs import (
    assert_same_vectors,
    assert_vectors_within,
    catalog_vectors,
    kill_mid_run,
    settled_items,
)

IMAGES = 72
KILLS = 10
CHUNK = 2
"""Two items a transaction: many commit points per run, so each kill lands inside the work."""


def _env(data_dir: Path, tiny_checkpoints) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    env.update(
        HF_HUB_OFFLINE="1",
        BLIPSEARCH_DATA_DIR=str(data_dir),
        BLIPSEARCH_RETRIEVAL_MODEL=str(tiny_checkpoints.retrieval),
        BLIPSEARCH_DEVICE="cpu",
        BLIPSEARCH_DTYPE="float32",  # as the local reference: `auto` is bfloat16 on a CPU with AVX512-BF16
        BLIPSEARCH_OFFLINE="1",
        BLIPSEARCH_IMAGE_BATCH_SIZE="2",
        BLIPSEARCH_INDEX_CHUNK_ITEMS=str(CHUNK),
        BLIPSEARCH_INDEX_CHECKPOINT_ITEMS="8",
        BLIPSEARCH_MAX_IMAGE_PIXELS=str(TEST_MAX_PIXELS),
        # One read task a run: each task is a fresh Ray worker importing torch, the run's start-up.
        BLIPSEARCH_RAY_BLOCK_ITEMS="256",
    )
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blipsearch", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_driver_sigkilled_at_random_moments_loses_nothing_and_resumes(
    tmp_path: Path, tiny_checkpoints, indexer_settings, retrieval: RetrievalModel, ray_cluster: str
) -> None:
    root = tmp_path / "photos"
    write_valid_images(root, IMAGES, seed=31)
    reference_url = f"sqlite:///{tmp_path / 'reference.sqlite3'}"
    local = Indexer(indexer_settings(reference_url, data_dir=tmp_path / "reference"), model=retrieval)
    try:
        local.run(root)
    finally:
        local.catalog.close()
    reference = catalog_vectors(reference_url)

    data_dir = tmp_path / "data"
    database = data_dir / "catalog.sqlite3"
    url = f"sqlite:///{database}"
    env = _env(data_dir, tiny_checkpoints)
    ray_args = ("--engine", "ray", "--ray-address", ray_cluster)
    rng = random.Random(7)
    settled = 0
    for kill in range(KILLS):
        settled = kill_mid_run(
            root, env, lambda: settled_items(database), settled, IMAGES, rng, kill, args=ray_args
        )
        committed = catalog_vectors(url)
        assert len([key for key in committed if key[1] == "image"]) == settled, f"kill {kill}"
        assert_vectors_within(committed, reference)

    final = _cli("index", str(root), "--no-progress", "--json", *ray_args, env=env)
    assert final.returncode == 0, final.stderr[-2000:]
    report = json.loads(final.stdout)
    assert (report["embedded"], report["unchanged"]) == (IMAGES - settled, settled), report
    verified = _cli("index", "verify", "--json", env=env)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout[-2000:]
    assert_same_vectors(catalog_vectors(url), reference)
