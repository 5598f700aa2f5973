"""Manifests whose rows name images by URL, end to end: index, resume, refetch, serve, refuse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from image_server import ImageServer, image_server

from blipsearch.errors import InvalidInputError
from blipsearch.indexer.pipeline import Indexer, IndexOptions
from blipsearch.indexer.sources import ManifestSource
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.models.tiny import TinyCheckpoints
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_images import ItemImages, is_remote
from blipsearch.storage.schema import ItemStatus

from imagesets import noise_png

LOOPBACK = ["127.0.0.1/32"]


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server({f"/p/{n}.png": noise_png(n) for n in range(4)}) as running:
        yield running


def _manifest(tmp_path: Path, server: ImageServer, paths: list[str]) -> Path:
    manifest = tmp_path / "catalog.jsonl"
    rows = [{"sku": f"S-{n}", "title": f"product {n}", "image": server.url(p)} for n, p in enumerate(paths)]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


@pytest.fixture
def settings(tmp_path: Path, cpu_settings: Settings, tiny_checkpoints: TinyCheckpoints) -> Settings:
    return cpu_settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "retrieval_model": str(tiny_checkpoints.retrieval),
            "remote_allow_networks": LOOPBACK,
            "remote_backoff_seconds": 0.0,
        }
    )


def _run(settings: Settings, model: RetrievalModel, manifest: Path, **options: Any) -> dict[str, Any]:
    indexer = Indexer(settings, model=model)
    try:
        return indexer.run(manifest, IndexOptions(**options)).as_dict()
    finally:
        indexer.catalog.close()


def test_url_rows_are_fetched_embedded_and_equal_to_the_same_files_on_disk(
    tmp_path: Path, server: ImageServer, settings: Settings, retrieval: RetrievalModel
) -> None:
    paths = sorted(server.files)
    report = _run(settings, retrieval, _manifest(tmp_path, server, paths))
    assert report["embedded"] == 4 and report["failed"] == 0
    assert sorted(server.requests) == paths

    catalog = Catalog.open(settings)
    try:
        items = catalog.items_by_sources([server.url(p) for p in paths])
        for path in paths:
            item = items[server.url(path)]
            assert item.status == ItemStatus.INDEXED.value and is_remote(item)
            expected = retrieval.embed_images(retrieval.pixel_values([_decoded(server.files[path])])).vectors[
                0
            ]
            np.testing.assert_allclose(np.frombuffer(item.embedding or b"", np.float32), expected, atol=1e-5)
            assert ItemImages(settings).read(item, max_bytes=10**6) == server.files[path]
    finally:
        catalog.close()


def _decoded(data: bytes) -> object:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def test_a_rerun_asks_no_host_and_refetch_embeds_only_changed_bytes(
    tmp_path: Path, server: ImageServer, settings: Settings, retrieval: RetrievalModel
) -> None:
    paths = sorted(server.files)
    manifest = _manifest(tmp_path, server, paths)
    _run(settings, retrieval, manifest)
    server.requests.clear()

    again = _run(settings, retrieval, manifest)
    assert again["embedded"] == 0 and again["unchanged"] == 4
    assert server.requests == []

    server.files[paths[1]] = noise_png(99)
    refetched = _run(settings, retrieval, manifest, refetch_remote=True)
    assert sorted(server.requests) == paths
    assert refetched["embedded"] == 1 and refetched["unchanged"] == 3


def test_a_changed_image_is_not_served_and_a_gone_one_fails_without_retry(
    tmp_path: Path, server: ImageServer, settings: Settings, retrieval: RetrievalModel
) -> None:
    paths = [*sorted(server.files), "/p/absent.png"]
    report = _run(settings, retrieval, _manifest(tmp_path, server, paths))
    assert report["embedded"] == 4 and report["failed"] == 1
    assert server.requests.count("/p/absent.png") == 1  # a 404 is final: not retried

    server.files[paths[0]] = noise_png(77)
    catalog = Catalog.open(settings)
    try:
        item = catalog.items_by_sources([server.url(paths[0])])[server.url(paths[0])]
        with pytest.raises(InvalidInputError, match="no longer the one indexed"):
            ItemImages(settings).read(item, max_bytes=10**6)
    finally:
        catalog.close()


def test_loopback_urls_are_refused_without_the_allowlist(
    tmp_path: Path, server: ImageServer, settings: Settings, retrieval: RetrievalModel
) -> None:
    settings = settings.model_copy(update={"remote_allow_networks": []})
    report = _run(settings, retrieval, _manifest(tmp_path, server, sorted(server.files)))
    assert report["embedded"] == 0 and report["failed"] == 4
    assert server.requests == []
    assert all("refused" in reason for reason in report["failures"]), report["failures"]


def test_url_identity_is_canonical_and_urls_are_refused_where_not_allowed(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("sku,image\nA,HTTPS://CDN.Example.com:443/a.jpg#frag\nB,ftp://x/y.jpg\n")
    source = ManifestSource(manifest, url_identity=lambda url: _canonical(url))
    records = list(source.records())
    assert [r.source for r in records] == ["https://cdn.example.com/a.jpg"]
    assert records[0].path is None and records[0].name == "a.jpg"
    assert any("line 3" in row for row in source.issues.rejected_rows)

    closed = ManifestSource(manifest)
    assert list(closed.records()) == []
    assert all("URL" in row for row in closed.issues.rejected_rows)


def _canonical(url: str) -> str:
    from blipsearch.remote_fetch import canonical_url

    return canonical_url(url, Settings())


def test_ray_read_tasks_fetch_urls_through_the_same_guard(
    tmp_path: Path, server: ImageServer, settings: Settings, retrieval: RetrievalModel, ray_cluster: str
) -> None:
    from blipsearch.indexer.ray_engine import RayEngine

    paths = sorted(server.files)
    manifest = _manifest(tmp_path, server, [*paths, "/p/absent.png"])
    local = _run(settings.model_copy(update={"data_dir": tmp_path / "local"}), retrieval, manifest)
    server.requests.clear()

    on_ray = settings.model_copy(update={"data_dir": tmp_path / "ray", "ray_address": ray_cluster})
    indexer = Indexer(on_ray, model=retrieval)
    indexer.engine = engine = RayEngine(on_ray, retrieval)
    try:
        report = indexer.run(manifest)
        assert sorted(server.requests) == sorted([*paths, "/p/absent.png"])
        server.requests.clear()
        again = indexer.run(manifest)
    finally:
        engine.close()
        indexer.catalog.close()
    assert (report.embedded, report.failed) == (local["embedded"], local["failed"]) == (4, 1)
    assert again.embedded == 0 and server.requests == []

    ours, theirs = (
        Catalog.open(on_ray),
        Catalog.open(settings.model_copy(update={"data_dir": tmp_path / "local"})),
    )
    try:
        urls = [server.url(p) for p in paths]
        for url, item in ours.items_by_sources(urls).items():
            reference = theirs.items_by_sources([url])[url]
            assert item.content_hash == reference.content_hash
            np.testing.assert_allclose(
                np.frombuffer(item.embedding or b"", np.float32),
                np.frombuffer(reference.embedding or b"", np.float32),
                atol=1e-5,
            )
    finally:
        ours.close()
        theirs.close()
