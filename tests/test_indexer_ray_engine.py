"""`--engine ray` on a real local Ray cluster (`ray_cluster`): the same catalog as the local indexer.

The runs here read and embed on the session's cluster and commit in this process; each is
compared with a local run of the same files and model. They share one connection (`ray_job`), so
that Ray reuses its warm worker processes across runs; the engine's own join (`ray_address`) runs
in the CLI runs here and in test_indexer_ray_crash.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray
from sqlalchemy import create_engine, text
from vector_rows import assert_vector_rows_match

from blipsearch.errors import ConfigError, InvalidInputError
from blipsearch.indexer.maintenance import verify
from blipsearch.indexer.pipeline import Indexer, IndexOptions, IndexReport
from blipsearch.indexer.ray_engine import RayEngine, WorkerPlan
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog

from clirun import blipsearch
from imagesets import write_valid_images
from index_runs import assert_same_vectors, catalog_vectors

IMAGES = 12
_SMALL = {"index_chunk_items": 4, "index_checkpoint_items": 8, "ray_block_items": 4}
"""Several chunks, read tasks and embedding batches (`image_batch_size` 4: batches of 8) per run."""


@pytest.fixture(scope="module")
def ray_job(ray_cluster: str) -> Iterator[None]:
    ray.init(address=ray_cluster, log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def ray_settings(indexer_settings, ray_cluster: str, ray_job: None) -> Callable[..., Settings]:
    def make(database_url: str | None = None, **changes: object) -> Settings:
        return indexer_settings(database_url, ray_address=ray_cluster, **{**_SMALL, **changes})

    return make


@pytest.fixture
def local_vectors(tmp_path: Path, indexer_settings, retrieval: RetrievalModel):
    """The local indexer's vectors for a source, in a data directory and catalog of their own."""

    def run(source: Path, name: str = "local") -> dict:
        url = f"sqlite:///{tmp_path / f'{name}.sqlite3'}"
        settings = indexer_settings(url, data_dir=tmp_path / name, **_SMALL)
        indexer = Indexer(settings, model=retrieval)
        try:
            indexer.run(source)
        finally:
            indexer.catalog.close()
        return catalog_vectors(url)

    return run


def _ray_run(
    settings: Settings, model: RetrievalModel, source: Path, options: IndexOptions | None = None
) -> IndexReport:
    with RayEngine(settings, model) as engine:
        indexer = Indexer(settings, model=model, engine=engine)
        try:
            return indexer.run(source, options)
        finally:
            indexer.catalog.close()


def _assert_verified(settings: Settings) -> None:
    catalog = Catalog.open(settings)
    try:
        report = verify(settings, catalog)
    finally:
        catalog.close()
    assert report.ok, report.problems


def _manifest(tmp_path: Path, count: int) -> Path:
    images = write_valid_images(tmp_path / "img", count, seed=21)
    lines = ["image,sku,title,description"]
    for n, path in enumerate(images):
        description = f"A plain photo number {n}" if n % 3 else ""
        lines.append(f"{path.relative_to(tmp_path)},SKU-{n},Picture {n},{description}")
    manifest = tmp_path / "catalog.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_vectors_equal_the_local_indexers_on_each_catalog_and_verify_passes(
    tmp_path: Path, database_url: str, ray_settings, retrieval: RetrievalModel, local_vectors
) -> None:
    manifest = _manifest(tmp_path, IMAGES)
    settings = ray_settings(database_url)
    report = _ray_run(settings, retrieval, manifest)

    assert report.engine == "ray" and report.embedded == IMAGES and report.failed == 0
    vectors = catalog_vectors(settings.database_url)
    assert {kind for _, kind in vectors} == {"image", "title", "description"}
    assert_same_vectors(vectors, local_vectors(manifest))
    _assert_verified(settings)
    if database_url.startswith("postgresql"):
        engine = create_engine(database_url)
        try:
            assert_vector_rows_match(engine)
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT count(*) FROM item_vectors")).scalar_one()
        finally:
            engine.dispose()
        assert rows == IMAGES, "pgvector is the store on PostgreSQL: every image has its row"
    else:
        assert any((settings.data_dir / "indexes").iterdir()), "FAISS files on SQLite"


def test_rerun_embeds_nothing_a_changed_file_is_reembedded_a_removed_one_goes_missing(
    tmp_path: Path, ray_settings, retrieval: RetrievalModel, local_vectors
) -> None:
    folder = tmp_path / "photos"
    paths = write_valid_images(folder, IMAGES, seed=22)
    settings = ray_settings()
    assert _ray_run(settings, retrieval, folder).embedded == IMAGES

    again = _ray_run(settings, retrieval, folder)
    assert (again.embedded, again.unchanged, again.missing) == (0, IMAGES, 0)

    write_valid_images(tmp_path / "other", 1, seed=99)[0].replace(paths[0])  # new bytes, same name
    paths[1].unlink()
    changed = _ray_run(settings, retrieval, folder)
    assert (changed.embedded, changed.unchanged, changed.missing) == (1, IMAGES - 2, 1)
    assert_same_vectors(catalog_vectors(settings.database_url), local_vectors(folder))
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            status = connection.execute(
                text("SELECT status FROM items WHERE source = :source"), {"source": str(paths[1])}
            ).scalar_one()
    finally:
        engine.dispose()
    assert status == "missing"
    _assert_verified(settings)


def test_an_embedding_actor_killed_mid_batch_is_restarted_and_its_batch_retried(
    tmp_path: Path, ray_settings, retrieval: RetrievalModel, local_vectors
) -> None:
    """Each actor SIGKILLs itself on its second batch (a restarted one re-arms): three batches of
    eight need two restarts, and the vectors still equal a local run's."""
    folder = tmp_path / "photos"
    write_valid_images(folder, 20, seed=23)
    settings = ray_settings(fault_injection="ray.embed_first_life:2", ray_worker_restarts=4, ray_workers=1)
    report = _ray_run(settings, retrieval, folder)
    assert report.embedded == 20 and report.failed == 0
    assert_same_vectors(catalog_vectors(settings.database_url), local_vectors(folder))
    _assert_verified(settings)


def test_actors_dying_past_their_restarts_fail_clearly_and_keep_committed_work(
    tmp_path: Path, ray_settings, retrieval: RetrievalModel, local_vectors
) -> None:
    """An actor that dies on every batch outlives its one restart: `blipsearch index` ends with
    one sentence (a `BlipsearchError`: "error:", not "internal error:") and no Ray traceback. What
    earlier chunks committed (here a first run's) stays, and the next run embeds exactly the rest."""
    folder = tmp_path / "photos"
    write_valid_images(folder, 8, seed=24)
    settings = ray_settings()
    first = Indexer(settings, model=retrieval)
    try:
        assert first.run(folder).embedded == 8
    finally:
        first.catalog.close()
    kept = catalog_vectors(settings.database_url)
    write_valid_images(folder / "later", 12, seed=25)
    reference = local_vectors(folder)

    env = {
        "BLIPSEARCH_DATA_DIR": str(settings.data_dir),
        "BLIPSEARCH_DATABASE_URL": settings.database_url,
        "BLIPSEARCH_RETRIEVAL_MODEL": settings.retrieval_model,
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_DTYPE": "float32",
        "BLIPSEARCH_OFFLINE": "1",
        "BLIPSEARCH_INDEX_CHUNK_ITEMS": "4",
        "BLIPSEARCH_FAULT_INJECTION": "ray.embed:1",
        "BLIPSEARCH_RAY_WORKER_RESTARTS": "1",
    }
    ray_args = ("--engine", "ray", "--ray-address", str(settings.ray_address), "--ray-workers", "1")
    failed = blipsearch("index", str(folder), "--no-progress", *ray_args, env=env)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert (
        "error: The Ray workers failed: an embedding actor died 2 times (ray_worker_restarts allows 1 "
        "restart); committed work is kept, re-run to resume." in " ".join(failed.stderr.split())
    ), failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr and "internal error" not in failed.stderr, failed.stderr[-3000:]
    assert_same_vectors(catalog_vectors(settings.database_url), kept)
    _assert_verified(settings)

    # The resuming run loses an actor too, and recovers; Ray reports the death on the driver's
    # stdout, which the CLI sends to stderr, so --json stays one JSON document.
    env.update(
        {"BLIPSEARCH_FAULT_INJECTION": "ray.embed_first_life:2", "BLIPSEARCH_RAY_WORKER_RESTARTS": "2"}
    )
    resumed = blipsearch("index", str(folder), "--json", *ray_args, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads(resumed.stdout)
    assert (report["embedded"], report["unchanged"]) == (12, 8)
    assert_same_vectors(catalog_vectors(settings.database_url), reference)
    _assert_verified(settings)


def test_should_stop_after_the_first_chunk_cancels_keeps_it_and_marks_nothing_missing(
    tmp_path: Path, ray_settings, retrieval: RetrievalModel, local_vectors
) -> None:
    folder = tmp_path / "photos"
    old = write_valid_images(folder, 6, seed=26)
    settings = ray_settings()
    first = Indexer(settings, model=retrieval)
    try:
        first.run(folder)
    finally:
        first.catalog.close()
    old[0].unlink()
    write_valid_images(folder / "new", 10, seed=27)
    asked: list[bool] = []

    def stop_after_first_chunk() -> bool:
        asked.append(True)
        return True

    report = _ray_run(settings, retrieval, folder, IndexOptions(should_stop=stop_after_first_chunk))
    assert report.cancelled and len(asked) == 1
    assert report.embedded + report.unchanged == _SMALL["index_chunk_items"], report.as_dict()
    assert report.missing == 0
    vectors = catalog_vectors(settings.database_url)
    assert (old[0].name, "image") in vectors, "a cancelled run marks nothing missing"
    assert len([key for key in vectors if key[1] == "image"]) == 6 + report.embedded
    _assert_verified(settings)

    rest = _ray_run(settings, retrieval, folder)
    assert (rest.embedded, rest.missing) == (10 - report.embedded, 1)
    assert_same_vectors(catalog_vectors(settings.database_url), local_vectors(folder))


def test_the_engine_leaves_a_connection_it_did_not_open(
    tmp_path: Path, ray_settings, retrieval: RetrievalModel
) -> None:
    with RayEngine(ray_settings(), retrieval) as engine:
        assert engine.plan is not None and engine.plan.workers == 1, "two CPUs: one actor"
    assert ray.is_initialized(), "close() shuts down only what start() began"


def test_captions_are_refused_before_any_work(
    tmp_path: Path, indexer_settings, retrieval: RetrievalModel
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 2, seed=28)
    settings = indexer_settings()
    indexer = Indexer(settings, model=retrieval, engine=RayEngine(settings, retrieval))
    try:
        with pytest.raises(InvalidInputError, match="--captions runs on the local engine only"):
            indexer.run(folder, IndexOptions(captions=True))
        assert sum(indexer.catalog.status_counts().values()) == 0
    finally:
        indexer.catalog.close()


@pytest.mark.parametrize(
    ("changes", "resources", "expected"),
    [
        ({}, {"CPU": 8.0}, (4, 0.5, 0.0)),
        ({}, {"CPU": 1.0}, (1, 0.5, 0.0)),
        ({"ray_workers": 3}, {"CPU": 8.0}, (3, 0.5, 0.0)),
        ({"ray_gpus_per_worker": 0.5}, {"CPU": 8.0, "GPU": 2.0}, (4, 0.5, 0.5)),
        ({"ray_gpus_per_worker": 1.0, "ray_workers": 1}, {"CPU": 8.0, "GPU": 4.0}, (1, 0.5, 1.0)),
        ({"ray_cpus_per_worker": 2.0}, {"CPU": 4.0}, (2, 2.0, 0.0)),
    ],
)
def test_worker_plan_sizes_the_pool_by_the_cluster(
    cpu_settings: Settings, changes: dict, resources: dict[str, float], expected: tuple
) -> None:
    plan = WorkerPlan.for_cluster(cpu_settings.model_copy(update=changes), resources)
    assert (plan.workers, plan.cpus_per_worker, plan.gpus_per_worker) == expected


@pytest.mark.parametrize(
    ("changes", "resources", "message"),
    [
        ({"ray_gpus_per_worker": 1.0}, {"CPU": 8.0}, "--gpus-per-worker 1: the Ray cluster has 0 GPUs"),
        ({"ray_gpus_per_worker": 1.0}, {"CPU": 8.0, "GPU": 0.5}, "the Ray cluster has 0.5 GPUs"),
        ({}, {"CPU": 0.5}, "The Ray cluster has 0.5 CPUs: too few"),
        ({"ray_cpus_per_worker": 4.0}, {"CPU": 4.0}, "The Ray cluster has 4 CPUs: too few"),
    ],
)
def test_worker_plan_refuses_a_cluster_that_cannot_hold_one_actor(
    cpu_settings: Settings, changes: dict, resources: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerPlan.for_cluster(cpu_settings.model_copy(update=changes), resources)
