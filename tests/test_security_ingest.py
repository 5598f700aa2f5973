"""Reading files the server should not: jobs, symlinks, manifests, `..` and swapped files, over HTTP.

Each test runs the real app under uvicorn on loopback with its job runner, on SQLite and
PostgreSQL, and tries what an attacker with the write key (or none) would: index `/`, `/etc` or
`/proc/self/root`, plant `pw.png -> /etc/passwd` in an ingest root, name `/etc/passwd` in a
manifest, swap an indexed image for a link after indexing. Nothing of `/etc/passwd` may come back.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert, select, text, update

from alembic import command
from blipsearch.api.item_files import IMAGE_TYPES
from blipsearch.errors import ConfigError
from blipsearch.images import ALLOWED_FORMATS
from blipsearch.indexer.pipeline import Indexer, IndexOptions
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings, load_settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import _alembic_config, ensure_schema
from blipsearch.storage.schema import Item

from imagesets import TEST_MAX_PIXELS, write_valid_images

KEY = "ingest-key"
AUTH = {"X-API-Key": KEY}
PASSWD = Path("/etc/passwd")
SERVED = {
    "JPEG": ("image/jpeg", "jpg", "inline"),
    "PNG": ("image/png", "png", "inline"),
    "WEBP": ("image/webp", "webp", "inline"),
    "GIF": ("image/gif", "gif", "inline"),
    "BMP": ("image/bmp", "bmp", "inline"),
    "TIFF": ("image/tiff", "tif", "attachment"),  # not shown by most browsers: downloaded
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path, root: Path, database_url: str, tiny_checkpoints) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        retrieval_model=str(tiny_checkpoints.retrieval),
        caption_model=str(tiny_checkpoints.caption),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
        index_chunk_items=2,
        api_key=KEY,
        ingest_roots=[root],
    )


@pytest.fixture
def client(settings: Settings, api_server: Callable[..., str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server(settings), timeout=60) as session:
        yield session


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    return error


def _run_job(client: httpx.Client, path: str | Path, timeout: float = 120) -> dict[str, Any]:
    created = client.post("/v1/jobs", json={"path": str(path)}, headers=AUTH)
    assert created.status_code == 202, created.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{created.json()['id']}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job["error"]
            return job
        time.sleep(0.1)
    raise AssertionError(f"job on {path} did not finish")


def _items(settings: Settings) -> list[Item]:
    catalog = Catalog.open(settings)
    try:
        with catalog.sessions() as session:
            return list(session.scalars(select(Item).order_by(Item.id)))
    finally:
        catalog.close()


def _never_passwd(client: httpx.Client, item_ids: range) -> None:
    secret = PASSWD.read_bytes()
    for item_id in item_ids:
        for route in ("image", "thumbnail"):
            response = client.get(f"/v1/items/{item_id}/{route}")
            assert secret not in response.content and b"root:" not in response.content


def test_jobs_outside_the_roots_are_refused(root: Path, client: httpx.Client) -> None:
    (root / "etc").symlink_to("/etc", target_is_directory=True)
    (root / "photos").mkdir()
    attempts = [
        "/",
        "/etc",
        "/root",
        "/proc/self/root",
        "/proc/self/root/etc",
        str(PASSWD),
        str(root / "etc"),  # a link inside the root that leads out of it
        str(root / "photos" / ".." / ".."),
        str(root.parent),
    ]
    for path in attempts:
        error = _error(client.post("/v1/jobs", json={"path": path}, headers=AUTH), 403, "path_not_allowed")
        assert path not in error["message"] and "/etc" not in error["message"]
    # Refused on the path alone: an existing and a missing path outside the roots look the same.
    missing = client.post("/v1/jobs", json={"path": "/no/such/folder"}, headers=AUTH)
    assert _error(missing, 403, "path_not_allowed")["message"] == error["message"]
    _error(client.post("/v1/jobs", json={"path": "/etc"}), 401, "unauthorized")
    assert client.get("/v1/jobs").json() == {"jobs": []}


def test_nul_bytes_and_absurd_lengths_are_400_in_the_error_shape(root: Path, client: httpx.Client) -> None:
    bodies = [
        json.dumps({"path": path})
        for path in (f"{root}/a\x00b", "\x00", "/" + "a" * 100_000, f"{root}/{'b' * 300}", f"{root}/\ud800")
    ]
    for body in bodies:
        response = client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
        error = _error(response, 400, "invalid_path")
        assert str(root) not in error["message"] and len(error["message"]) < 200
    assert client.get("/v1/jobs").json() == {"jobs": []}


def test_ingest_is_off_without_roots(
    tmp_path: Path, settings: Settings, api_server: Callable[..., str]
) -> None:
    closed = settings.model_copy(update={"ingest_roots": []})
    with httpx.Client(base_url=api_server(closed), timeout=60) as client:
        for path in (str(tmp_path), "/"):
            _error(client.post("/v1/jobs", json={"path": path}, headers=AUTH), 403, "ingest_disabled")
        _error(client.post("/v1/jobs", json={"path": "/a\x00"}, headers=AUTH), 400, "invalid_path")
        assert client.get("/v1/jobs").json() == {"jobs": []}


def test_links_out_of_the_root_are_refused_and_failed_items_never_served(
    tmp_path: Path, root: Path, settings: Settings, client: httpx.Client
) -> None:
    photos = root / "photos"
    real = write_valid_images(photos, 6, seed=41)  # one of each allowed format
    outside = write_valid_images(tmp_path / "private", 1, seed=42)[0]
    (photos / "pw.png").symlink_to(PASSWD)
    (photos / "secret.png").symlink_to(outside)
    (photos / "notes.png").write_text("<html><script>alert(1)</script></html>")

    job = _run_job(client, photos)
    refused = job["counts"]["rejected_rows"]
    assert sorted(Path(row.split(":")[0]).name for row in refused) == ["pw.png", "secret.png"]
    assert all("outside the server's ingest roots" in row for row in refused)
    assert not any("/etc" in row or "private" in row for row in refused)
    assert job["counts"]["embedded"] == 6 and job["counts"]["failed"] == 1

    items = {Path(item.source).name: item for item in _items(settings)}
    assert sorted(items) == sorted([path.name for path in real] + ["notes.png"])
    assert all(Path(item.source).resolve() == Path(item.source) for item in items.values())
    _never_passwd(client, range(1, len(items) + 3))

    failed = items["notes.png"]
    assert failed.status == "failed"
    _error(client.get(f"/v1/items/{failed.id}/image"), 404, "image_unavailable")
    _error(client.get(f"/v1/items/{failed.id}/thumbnail"), 404, "image_unavailable")

    for path in real:
        item = items[path.name]
        served = client.get(f"/v1/items/{item.id}/image")
        assert served.status_code == 200 and served.content == path.read_bytes()
        media_type, extension, disposition = SERVED[str(item.format)]
        assert served.headers["content-type"] == media_type
        assert served.headers["x-content-type-options"] == "nosniff"
        assert (
            served.headers["content-disposition"] == f'{disposition}; filename="item-{item.id}.{extension}"'
        )
        thumb = client.get(f"/v1/items/{item.id}/thumbnail", params={"size": 64})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.headers["x-content-type-options"] == "nosniff"
        assert thumb.headers["content-disposition"] == f'inline; filename="item-{item.id}-64.jpg"'


def test_a_file_swapped_after_indexing_is_not_served(
    tmp_path: Path, root: Path, settings: Settings, client: httpx.Client
) -> None:
    photos = root / "photos"
    real = write_valid_images(photos, 3, seed=43)
    outside = write_valid_images(tmp_path / "private", 1, seed=44)[0]
    _run_job(client, photos)
    items = {Path(item.source).name: item.id for item in _items(settings)}
    for path in real:
        assert client.get(f"/v1/items/{items[path.name]}/image").status_code == 200
        assert client.get(f"/v1/items/{items[path.name]}/thumbnail", params={"size": 128}).status_code == 200

    real[0].unlink()
    real[0].symlink_to(PASSWD)  # a link to a file that is no image
    real[1].unlink()
    real[1].symlink_to(outside)  # a link to a real image outside the roots
    real[2].write_text("root:x:0:0:root:/root:/bin/bash\n")  # the same name, other bytes
    for path in real:
        response = client.get(f"/v1/items/{items[path.name]}/image")
        _error(response, 404, "image_unavailable")
        assert b"root:" not in response.content
        _error(
            client.get(f"/v1/items/{items[path.name]}/thumbnail", params={"size": 128}),
            404,
            "image_unavailable",
        )
    assert client.get(f"/v1/items/{items[real[1].name]}/image").content != outside.read_bytes()


def test_manifest_rows_outside_the_roots_are_refused_with_reasons(
    root: Path, settings: Settings, client: httpx.Client
) -> None:
    shop = root / "shop"
    image = write_valid_images(shop, 1, seed=45)[0]
    climb = "../" * (len(shop.parts) - 1) + "etc/passwd"
    rows = [
        {"image": image.name, "sku": "A", "title": "kept"},
        {"image": str(PASSWD), "sku": "B"},
        {"image": "../../etc/passwd", "sku": "C"},
        {"image": climb, "sku": "D"},
        {"image": f"/proc/self/root{PASSWD}", "sku": "E"},
    ]
    manifest = shop / "products.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows))

    job = _run_job(client, manifest)
    refused = job["counts"]["rejected_rows"]
    assert [row.split(":")[0] for row in refused] == [f"products.jsonl line {n}" for n in (2, 3, 4, 5)]
    assert all("outside the server's ingest roots" in row and "passwd" not in row for row in refused)
    assert job["counts"]["rejected"] == 4 and job["counts"]["embedded"] == 1

    items = _items(settings)
    assert [(item.source, item.external_id, item.status) for item in items] == [(str(image), "A", "indexed")]
    _never_passwd(client, range(1, 4))


def test_two_paths_to_one_file_are_one_item(root: Path, settings: Settings, client: httpx.Client) -> None:
    photos = root / "photos"
    write_valid_images(photos, 2, seed=46)
    (root / "alias").symlink_to(photos, target_is_directory=True)

    first = _run_job(client, photos)
    assert first["counts"]["embedded"] == 2
    for path in (f"/proc/self/root{photos}", str(root / "alias"), f"{root}/alias/../photos"):
        again = _run_job(client, path)
        assert again["path"] == str(photos)
        assert again["counts"]["embedded"] == 0 and again["counts"]["unchanged"] == 2
    assert len(_items(settings)) == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_item_routes_do_not_block_the_event_loop(
    settings: Settings, client: httpx.Client, tiny_checkpoints
) -> None:  # type: ignore[no-untyped-def]
    """While the catalog is locked, an item read waits in a worker thread; the loop still answers.

    PostgreSQL only: it needs a lock that blocks readers (LOCK TABLE), which SQLite's WAL has not."""
    assert settings.effective_database_url.startswith("postgresql")
    image = write_valid_images(settings.data_dir.parent / "upload", 1, seed=47)[0]
    added = client.post("/v1/items", files={"file": (image.name, image.read_bytes())}, headers=AUTH)
    assert added.status_code == 201, added.text
    item_id = added.json()["item_id"]

    engine = create_engine(settings.effective_database_url)
    results: dict[str, httpx.Response] = {}
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))

            def read(route: str) -> None:
                results[route] = client.get(f"/v1/items/{item_id}{route}")

            readers = [threading.Thread(target=read, args=(route,)) for route in ("", "/image", "/thumbnail")]
            for reader in readers:
                reader.start()
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'items'::regclass"
            deadline = time.monotonic() + 60
            while not connection.execute(text(waiting)).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.05)  # until a read waits for the lock
            with httpx.Client(base_url=str(client.base_url), timeout=30) as probe:
                assert probe.get("/healthz").status_code == 200
            assert not results  # the reads are still waiting: the lock, not luck, let /healthz through
            transaction.rollback()
        for reader in readers:
            reader.join(60)
    finally:
        engine.dispose()
    assert [results[route].status_code for route in ("", "/image", "/thumbnail")] == [200, 200, 200]


def test_catalogs_keyed_by_unresolved_paths_are_migrated(
    tmp_path: Path, database_url: str, indexer_settings, retrieval: RetrievalModel
) -> None:  # type: ignore[no-untyped-def]
    """A catalog written before canonical identity re-keys once: a re-index adds no second item.

    Where the old catalog already held one file twice (through a link and directly), the row with
    the canonical name keeps it and the other ends `missing` at the next run.
    """
    photos = tmp_path / "photos"
    write_valid_images(photos, 3, seed=48)
    (tmp_path / "via").symlink_to(photos, target_is_directory=True)
    (photos / "alias.jpg").symlink_to(photos / "photo-48-000.jpg")
    settings = indexer_settings(database_url)
    assert Indexer(settings, model=retrieval).run(tmp_path / "via").embedded == 3

    # Make it what the old indexer wrote: paths as found through the links, at revision 0005.
    via = tmp_path / "via"
    engine = create_engine(settings.effective_database_url)
    with engine.begin() as connection:
        config = _alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    with engine.begin() as connection:
        target = str(photos / "photo-48-000.jpg")
        canonical = connection.execute(select(Item.id, Item.source).order_by(Item.source != target)).all()
        for item_id, source in canonical[1:]:
            old = str(via / Path(source).relative_to(photos))
            connection.execute(update(Item).where(Item.id == item_id).values(source=old, origin=str(via)))
        kept = canonical[0][1]  # already canonical; the old walk also listed it through alias.jpg:
        connection.execute(update(Item).where(Item.id == canonical[0][0]).values(origin=str(via)))
        connection.execute(
            insert(Item).values(source=str(via / "alias.jpg"), origin=str(via), status="indexed")
        )
    ensure_schema(engine)
    with engine.connect() as connection:
        rows = connection.execute(select(Item.source, Item.origin)).all()
    engine.dispose()
    assert kept == str(photos / "photo-48-000.jpg")
    assert sorted(source for source, _ in rows) == sorted(
        [*(s for _, s in canonical), str(via / "alias.jpg")]
    )
    assert all(source.startswith(f"{photos}/") for _, source in canonical)
    assert {origin for _, origin in rows} == {str(photos)}

    again = Indexer(settings, model=retrieval).run(via, IndexOptions())
    assert (again.embedded, again.unchanged, again.missing) == (0, 3, 1)
    statuses = {item.source: item.status for item in _items(settings)}
    assert statuses.pop(str(via / "alias.jpg")) == "missing"
    assert statuses == {source: "indexed" for _, source in canonical}
    assert os.path.realpath(via) == str(photos)


def test_ingest_roots_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ingest_roots == []  # off unless configured
    monkeypatch.setenv("BLIPSEARCH_INGEST_ROOTS", '["/srv/photos", "/srv/shop"]')
    assert load_settings().ingest_roots == [Path("/srv/photos"), Path("/srv/shop")]
    with pytest.raises(ConfigError, match="ingest roots must be absolute"):
        load_settings(ingest_roots=["photos"])


def test_every_format_the_decoder_accepts_has_a_served_type() -> None:
    """The serving table and the decoder's allowlist are two lists: a format added to one only
    would be indexed but never served (or served without having been decodable)."""
    assert frozenset(IMAGE_TYPES) == ALLOWED_FORMATS
