"""Reads from a real streaming hot standby: served there when current, from the primary otherwise.

The primary and standby are real PostgreSQL servers (`pg_standby.py`). "Another server" is a
catalog opened on a differently spelled URL of the same primary: this process's own-write record
is per URL, so such a catalog knows only the tokens it is handed, like a second API server.
Replication is paused on the standby (`pg_wal_replay_pause()`) wherever a test needs it behind.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pg_standby import StreamingPair, catalog_database, standby_sql, wait_for_replay
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from blipsearch.errors import ConfigError, InvalidInputError
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import create_catalog_engine
from blipsearch.storage.item_writes import ItemMetadata
from blipsearch.storage.read_routing import (
    CONSISTENCY_HEADER,
    RETRY_AFTER_SECONDS,
    ReadRouter,
    end_of_inserted,
    format_token,
    parse_token,
    replica_reads,
)

from catalog_rows import indexed_write

WAIT = 0.5
"""The read wait budget in the tests' injected seconds."""
LOGGER = "blipsearch.storage.read_routing"


@dataclass
class FakeTime:
    """An injected clock that moves only when the router sleeps; `real` also sleeps for real,
    for the tests that need the standby to make progress meanwhile."""

    real: bool = False
    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept.append(seconds)
        if self.real:
            time.sleep(seconds)


@dataclass
class Urls:
    primary: str
    standby: str

    def other_server(self) -> str:
        """The same primary under another URL: no shared record of this process's writes."""
        return (
            make_url(self.primary)
            .update_query_dict({"application_name": f"other-{uuid.uuid4().hex[:6]}"})
            .render_as_string(hide_password=False)
        )


@pytest.fixture(scope="module")
def urls(streaming_standby: StreamingPair) -> Iterator[Urls]:
    """A fresh catalog database on the primary, migrated, and already replayed by the standby."""
    with catalog_database(streaming_standby) as (primary, standby):
        yield Urls(primary, standby)


def _standby_sql(urls: Urls, statement: str) -> None:
    standby_sql(urls.standby, statement)


@pytest.fixture
def replay_paused(urls: Urls) -> Iterator[None]:
    _standby_sql(urls, "SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        _standby_sql(urls, "SELECT pg_wal_replay_resume()")


def _catalog(primary_url: str, standby_url: str | None, fake: FakeTime) -> Catalog:
    engine = create_catalog_engine(primary_url)
    standby = create_catalog_engine(standby_url) if standby_url is not None else None
    router = ReadRouter(engine, standby, wait_seconds=WAIT, clock=fake.clock, sleep=fake.sleep)
    return Catalog(engine, reads=router)


def _write(catalog: Catalog, name: str) -> int:
    seed = uuid.uuid4().int % 10_000
    return catalog.write(
        [indexed_write(f"/photos/{name}-{seed}.png", seed, metadata=ItemMetadata(title=name))]
    )[0]


def _found(catalog: Catalog, item_id: int) -> bool:
    return [item.id for item in catalog.items_by_ids([item_id])] == [item_id]


def _served_by(catalog: Catalog) -> str:
    with catalog.reading() as session:
        return str(session.get_bind().url.host or session.get_bind().url.query.get("host"))


def _engine_host(engine: Engine) -> str:
    return str(engine.url.host or engine.url.query.get("host"))


# tokens ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "lsn"), [("0/3018AA8", 0x3018AA8), ("1/0", 1 << 32), ("ff/FFFFFFFF", (0xFF << 32) | 0xFFFFFFFF)]
)
def test_tokens_are_postgresql_lsns(token: str, lsn: int) -> None:
    assert parse_token(token) == lsn
    assert parse_token(format_token(lsn)) == lsn


@pytest.mark.parametrize("bad", ["", "0", "0/", "/1", "0/1/2", "g/1", "123456789/0", "0/3018AA8; DROP"])
def test_a_malformed_token_is_a_clear_error(bad: str) -> None:
    with pytest.raises(InvalidInputError, match=CONSISTENCY_HEADER):
        parse_token(bad)
    with pytest.raises(InvalidInputError, match="such as 0/"), replica_reads(bad):
        pass


BLOCK, SEGMENT = 8192, 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("insert_lsn", "end"),
    [
        (5 * SEGMENT + 3 * BLOCK + 24, 5 * SEGMENT + 3 * BLOCK),  # right after a page header
        (5 * SEGMENT + 40, 5 * SEGMENT),  # right after a segment's long header
        (5 * SEGMENT + 3 * BLOCK + 1000, 5 * SEGMENT + 3 * BLOCK + 1000),  # inside a page
        (5 * SEGMENT + 24, 5 * SEGMENT + 24),  # a segment's first page has a long header
    ],
)
def test_a_token_ends_where_the_last_record_ended(insert_lsn: int, end: int) -> None:
    assert end_of_inserted(insert_lsn, BLOCK, SEGMENT) == end


# settings --------------------------------------------------------------------------------------


PRIMARY = "postgresql+psycopg://writer@primary.example/catalog"


def test_read_url_needs_a_postgresql_primary(tmp_path: Path) -> None:
    standby = "postgresql+psycopg://reader@replica.example/catalog"
    with pytest.raises((ConfigError, ValueError), match="database_read_url needs a PostgreSQL database_url"):
        Settings(data_dir=tmp_path, database_read_url=standby)
    with pytest.raises((ConfigError, ValueError), match="not a valid SQLAlchemy URL"):
        Settings(
            data_dir=tmp_path,
            database_url="postgresql+psycopg://w@primary/catalog",
            database_read_url="::nope",
        )
    settings = Settings(data_dir=tmp_path, database_url=PRIMARY, database_read_url=standby)
    assert settings.database_read_url == standby


def test_sqlite_reads_and_writes_without_tokens(tmp_path: Path) -> None:
    catalog = Catalog.open(Settings(data_dir=tmp_path))
    try:
        item_id = _write(catalog, "embedded")
        assert catalog.consistency_token() is None
        with replica_reads(None):
            assert _found(catalog, item_id)
    finally:
        catalog.close()


# a real standby --------------------------------------------------------------------------------


def test_a_write_on_the_primary_is_replayed_by_the_standby(urls: Urls, tmp_path: Path) -> None:
    catalog = Catalog.open(Settings(data_dir=tmp_path, database_url=urls.primary))
    try:
        item_id = _write(catalog, "replicated")
        token = catalog.consistency_token()
    finally:
        catalog.close()
    assert token is not None
    wait_for_replay(urls.standby, parse_token(token))
    engine = create_engine(urls.standby)
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT id FROM items WHERE id = :i"), {"i": item_id}).all()
    finally:
        engine.dispose()
    assert found == [(item_id,)]


def test_settings_wire_the_standby_into_search_reads(urls: Urls, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=urls.primary, database_read_url=urls.standby)
    catalog = Catalog.open(settings)
    try:
        item_id = _write(catalog, "wired")
        with replica_reads(catalog.consistency_token()):
            assert _found(catalog, item_id)
            assert item_id in [found for found, _ in catalog.keyword_search(["wired"], 10)]
        assert catalog.reads.standby is not None
        assert _engine_host(catalog.reads.standby) == _engine_host(create_engine(urls.standby))
    finally:
        catalog.close()


def test_a_token_read_never_misses_the_write_while_replay_is_paused(
    urls: Urls, replay_paused: None, caplog: pytest.LogCaptureFixture
) -> None:
    writer_time, reader_time = FakeTime(), FakeTime()
    writer = _catalog(urls.primary, urls.standby, writer_time)
    reader = _catalog(urls.other_server(), urls.standby, reader_time)
    try:
        item_id = _write(writer, "paused")
        token = writer.consistency_token()
        assert token is not None
        with replica_reads(None):
            # Nothing asks these reads to be current: the standby answers each, without the new item.
            assert not _found(reader, item_id)
            assert reader.exact_matches("paused", 10) == []
            assert item_id not in [found for found, _ in reader.keyword_search(["paused"], 10)]
            assert reader_time.slept == []
        with caplog.at_level(logging.WARNING, logger=LOGGER), replica_reads(token):
            assert _found(reader, item_id)
        # It waited its whole budget for the standby, then read the primary.
        assert sum(reader_time.slept) >= WAIT
        behind = [r for r in caplog.records if "behind" in r.getMessage()]
        assert len(behind) == 1 and behind[0].__dict__["required"] == token

        # Right after, reads that need the write go straight to the primary: no second wait.
        waited = len(reader_time.slept)
        with replica_reads(token):
            assert _found(reader, item_id)
            assert reader.exact_matches("paused", 10) == [(item_id, "title")]
        assert len(reader_time.slept) == waited

        # The writer itself sees its own write without handing a token around.
        with replica_reads(None):
            assert _found(writer, item_id)
        # Reads outside replica_reads() are the primary's, as before.
        assert _found(reader, item_id)
    finally:
        writer.close()
        reader.close()


def test_a_token_read_uses_the_standby_once_it_has_replayed(urls: Urls) -> None:
    writer = _catalog(urls.primary, None, FakeTime())
    fake = FakeTime(real=True)
    reader = _catalog(urls.other_server(), urls.standby, fake)
    reader.reads.wait_seconds = 60.0
    standby_host = _engine_host(create_engine(urls.standby))
    try:
        item_id = _write(writer, "caught-up")
        token = writer.consistency_token()
        with replica_reads(token):
            assert _served_by(reader) == standby_host
            assert _found(reader, item_id)
    finally:
        writer.close()
        reader.close()


def test_a_stopped_standby_sends_reads_to_the_primary(
    urls: Urls, streaming_standby: StreamingPair, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTime()
    reader = _catalog(urls.other_server(), urls.standby, fake)
    writer = _catalog(urls.primary, None, FakeTime())
    primary_host = _engine_host(create_engine(urls.primary))
    streaming_standby.stop_standby()
    try:
        item_id = _write(writer, "unreachable")
        with caplog.at_level(logging.WARNING, logger=LOGGER), replica_reads(None):
            assert _found(reader, item_id)
            assert _served_by(reader) == primary_host
            assert item_id in [found for found, _ in reader.keyword_search(["unreachable"], 10)]
        down = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 1  # once per retry period, not once per read
    finally:
        streaming_standby.start_standby()
        writer.close()
    try:
        # Past the retry period, the same router tries the standby again, and it serves.
        fake.now += RETRY_AFTER_SECONDS + 1
        with replica_reads(None):
            assert _served_by(reader) == _engine_host(create_engine(urls.standby))
    finally:
        reader.close()


def test_a_read_url_that_is_no_standby_reads_the_primary(
    urls: Urls, caplog: pytest.LogCaptureFixture
) -> None:
    other_primary_url = urls.other_server()
    catalog = _catalog(urls.primary, other_primary_url, FakeTime())
    try:
        item_id = _write(catalog, "not-a-standby")
        with caplog.at_level(logging.WARNING, logger=LOGGER), replica_reads(None):
            assert _found(catalog, item_id)
        assert any("not in recovery" in r.getMessage() for r in caplog.records)
    finally:
        catalog.close()
