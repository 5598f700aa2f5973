"""Two real servers on one primary with a hot standby: the consistency header carries read-your-writes.

Server A takes the upload; server B has written nothing, so only the token A returned tells it
what it must see. Replication is paused, so the standby really is behind while B answers. Both
servers run in this test's process, where the record of a process's own writes is kept per
primary URL: B names the primary with its own application_name, as if it ran on another machine.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pg_standby import StreamingPair, catalog_database, standby_sql
from PIL import Image
from sqlalchemy.engine import make_url

from blipsearch.settings import Settings
from blipsearch.storage.read_routing import CONSISTENCY_HEADER

from imagesets import TEST_MAX_PIXELS

KEY = "consistency-test-key"


@pytest.fixture
def replica_urls(streaming_standby: StreamingPair) -> Iterator[tuple[str, str]]:
    with catalog_database(streaming_standby) as urls:
        yield urls


def _settings(tmp_path: Path, name: str, tiny_checkpoints, urls: tuple[str, str]) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        data_dir=tmp_path / name,
        database_url=urls[0],
        database_read_url=urls[1],
        read_replica_wait_seconds=0.2,
        retrieval_model=str(tiny_checkpoints.retrieval),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
        api_key=KEY,
    )


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_token_from_one_server_makes_another_see_the_write(
    tmp_path: Path, tiny_checkpoints, replica_urls: tuple[str, str], api_server: Callable[..., str]
) -> None:
    a = api_server(_settings(tmp_path, "a", tiny_checkpoints, replica_urls))
    elsewhere = make_url(replica_urls[0]).update_query_dict({"application_name": "server-b"})
    b = api_server(
        _settings(
            tmp_path,
            "b",
            tiny_checkpoints,
            (elsewhere.render_as_string(hide_password=False), replica_urls[1]),
        )
    )
    standby_sql(replica_urls[1], "SELECT pg_wal_replay_pause()")
    try:
        with httpx.Client(base_url=a, timeout=60) as to_a, httpx.Client(base_url=b, timeout=60) as to_b:
            created = to_a.post(
                "/v1/items",
                files={"file": ("red.png", _png(), "image/png")},
                data={"title": "paused red square"},
                headers={"X-API-Key": KEY},
            )
            assert created.status_code == 201, created.text
            token = created.headers.get(CONSISTENCY_HEADER)
            assert token and "/" in token
            item = f"/v1/items/{created.json()['item_id']}"

            assert to_a.get(item).status_code == 200  # a server always sees its own writes
            assert to_b.get(item).status_code == 404  # no token: the standby, which is behind
            assert to_b.get(item, headers={CONSISTENCY_HEADER: token}).status_code == 200
            bad = to_b.get(item, headers={CONSISTENCY_HEADER: "not-a-token"})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"

            deleted = to_a.delete(item, headers={"X-API-Key": KEY})
            assert deleted.status_code == 204
            later = deleted.headers.get(CONSISTENCY_HEADER)
            assert later and later != token
            assert to_b.get(item, headers={CONSISTENCY_HEADER: later}).status_code == 404
    finally:
        standby_sql(replica_urls[1], "SELECT pg_wal_replay_resume()")
