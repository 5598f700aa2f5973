"""Item images served by two real servers over loopback: separate data directories, one SQLite
catalog and one shared image store. An upload through one is served by the other from the store,
never from a replica's disk; a source that would reach outside the store is refused."""

from __future__ import annotations

import functools
import io
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from blipsearch.settings import Settings

from imagesets import noise_png

KEY = "replica-key"


@dataclass
class Replicas:
    first: httpx.Client
    second: httpx.Client
    shared: Path
    catalog: Path
    data_dirs: tuple[Path, Path]

    def files_in_store(self) -> list[Path]:
        return sorted(p for p in self.shared.rglob("*") if p.is_file())

    def set_row(self, item_id: int, **columns: str) -> None:
        with sqlite3.connect(self.catalog) as connection:
            for column, value in columns.items():
                connection.execute(f"UPDATE items SET {column} = ? WHERE id = ?", (value, item_id))


@pytest.fixture
def replicas(tmp_path: Path, indexer_settings: Callable[..., Settings], api_server: Any) -> Any:
    shared = tmp_path / "shared-images"
    made = [
        indexer_settings(None, data_dir=tmp_path / name, image_store=str(shared), api_key=KEY)
        for name in ("replica-a", "replica-b")
    ]
    urls = [api_server(settings) for settings in made]
    with (
        httpx.Client(base_url=urls[0], timeout=60) as first,
        httpx.Client(base_url=urls[1], timeout=60) as second,
    ):
        yield Replicas(
            first,
            second,
            shared,
            tmp_path / "catalog.sqlite3",
            (made[0].data_dir, made[1].data_dir),
        )


_png = functools.partial(noise_png, size=(80, 96))


def _upload(client: httpx.Client, data: bytes, filename: str = "photo.png") -> int:
    created = client.post(
        "/v1/items", files={"file": (filename, data, "image/png")}, headers={"X-API-Key": KEY}
    )
    assert created.status_code == 201, created.text
    return int(created.json()["item_id"])


def _refused(response: httpx.Response, *secrets: str) -> None:
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"]["code"] == "image_unavailable", body
    assert not any(secret in response.text for secret in secrets), response.text


def test_an_upload_through_one_replica_is_served_by_the_other(replicas: Replicas) -> None:
    data = _png(1)
    item_id = _upload(replicas.first, data, filename="../../../etc/evil.png")

    (stored,) = replicas.files_in_store()
    assert stored.read_bytes() == data and "evil" not in str(stored), "a client's file name is never used"
    for data_dir in replicas.data_dirs:
        assert not [p for p in data_dir.rglob("*") if p.is_file() and "uploads" in p.parts]

    original = replicas.second.get(f"/v1/items/{item_id}/image")
    assert original.status_code == 200, original.text
    assert original.content == data and original.headers["content-type"] == "image/png"
    thumbnail = replicas.second.get(f"/v1/items/{item_id}/thumbnail", params={"size": 64})
    assert thumbnail.status_code == 200, thumbnail.text
    with Image.open(io.BytesIO(thumbnail.content)) as small:
        assert small.format == "JPEG" and small.size == (64, 53)
    item = replicas.second.get(f"/v1/items/{item_id}").json()
    assert "source" not in item and str(replicas.shared) not in str(item)

    stored.rename(stored.with_name("aside"))
    gone = replicas.second.get(f"/v1/items/{item_id}/thumbnail", params={"size": 64})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_missing", (
        "no thumbnail outlives its image"
    )
    stored.with_name("aside").rename(stored)

    deleted = replicas.second.delete(f"/v1/items/{item_id}", headers={"X-API-Key": KEY})
    assert deleted.status_code == 204, deleted.text
    assert replicas.files_in_store() == [], "the delete through one replica removed the shared bytes"
    assert replicas.first.get(f"/v1/items/{item_id}/image").status_code == 404


def test_a_source_that_would_leave_the_store_is_refused(replicas: Replicas, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(99))
    item_id = _upload(replicas.first, _png(2))
    assert replicas.second.get(f"/v1/items/{item_id}/thumbnail", params={"size": 64}).status_code == 200
    (stored,) = replicas.files_in_store()
    key = stored.relative_to(replicas.shared).as_posix()

    for source in (
        f"upload:../{secret.name}",
        f"upload:{secret}",
        "upload:../../../etc/passwd",
        f"upload:file://{secret}",
        str(secret),
        f"{tmp_path}/uploads/../secret.png",
    ):
        replicas.set_row(item_id, source=source)
        for route in ("image", "thumbnail"):
            _refused(replicas.second.get(f"/v1/items/{item_id}/{route}"), "secret", "passwd", str(tmp_path))

    replicas.set_row(item_id, source=f"upload:{key}", origin=str(tmp_path))
    _refused(replicas.second.get(f"/v1/items/{item_id}/image"), str(tmp_path))

    replicas.set_row(item_id, origin="api:uploads")
    assert replicas.second.get(f"/v1/items/{item_id}/image").status_code == 200
    stored.unlink()
    stored.symlink_to(secret)  # a link put in the store in place of the upload
    for route in ("image", "thumbnail"):
        _refused(replicas.second.get(f"/v1/items/{item_id}/{route}"), "secret", str(tmp_path))
